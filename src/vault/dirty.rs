//! Bytes written to a file but not yet chunked: disjoint ranges keyed by offset.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Large write buffers, kept for reuse. glibc serves a streaming writer's
/// multi-MiB buffer from a fresh mmap, which costs a page fault per 4 KiB
/// touched (a quarter of the daemon's CPU in a 1 GiB write); a recycled
/// buffer's pages are already mapped.
static SPARES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// At most this many spares (bounded memory: each holds up to `SPARE_MAX`).
const SPARE_COUNT: usize = 2;
/// Buffers smaller than this are not worth keeping (heap-allocated anyway).
const SPARE_MIN: usize = 1 << 20;
const SPARE_MAX: usize = 64 << 20;

/// Offer a buffer that is no longer needed for reuse.
pub fn recycle(mut buf: Vec<u8>) {
    if (SPARE_MIN..=SPARE_MAX).contains(&buf.capacity()) {
        let mut spares = SPARES.lock();
        if spares.len() < SPARE_COUNT {
            buf.clear();
            spares.push(buf);
        }
    }
}

/// Give the spare buffers back to the OS (an idle vault keeps no write buffers).
pub fn release_spares() {
    SPARES.lock().clear();
}

/// An empty buffer for `len` bytes: a recycled one, with its capacity for
/// more, when it is large.
pub fn buffer_for(len: usize) -> Vec<u8> {
    if len < SPARE_MIN { Vec::with_capacity(len) } else { SPARES.lock().pop().unwrap_or_default() }
}

#[derive(Default, Debug)]
pub struct DirtyMap {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl DirtyMap {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Record `data` at `off`, replacing whatever was dirty there.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        // Fast path for sequential writes: extend the range that ends at `off`.
        let touches_next = self.map.range(off..=end).next().is_some();
        if let Some((&start, buf)) = self.map.range_mut(..=off).next_back()
            && start + buf.len() as u64 == off
            && !touches_next
        {
            buf.extend_from_slice(data);
            self.bytes += data.len();
            return;
        }
        // General case: merge every range that overlaps or touches [off, end).
        let mut new_start = off;
        if let Some((&s, b)) = self.map.range(..off).next_back()
            && s + b.len() as u64 >= off
        {
            new_start = s;
        }
        let keys: Vec<u64> = self.map.range(new_start..=end).map(|(&k, _)| k).collect();
        if keys.is_empty() && new_start == off {
            // A range of its own (the first write of a stream): no zeroing,
            // and a recycled buffer keeps its capacity for the appends to come.
            let mut buf = buffer_for(data.len());
            buf.extend_from_slice(data);
            self.bytes += data.len();
            self.map.insert(off, buf);
            return;
        }
        let mut pieces: Vec<(u64, Vec<u8>)> = Vec::with_capacity(keys.len());
        for k in keys {
            let b = self.map.remove(&k).expect("key just listed");
            self.bytes -= b.len();
            pieces.push((k, b));
        }
        // Ranges are disjoint and never touch, so the merged range has no
        // gap: the head of the first range, `data`, the tail of the last.
        let new_end = pieces.last().map_or(end, |(s, b)| s + b.len() as u64).max(end);
        let mut merged = buffer_for((new_end - new_start) as usize);
        if let Some((s, b)) = pieces.first()
            && *s < off
        {
            merged.extend_from_slice(&b[..(off - s) as usize]);
        }
        merged.extend_from_slice(data);
        if let Some((s, b)) = pieces.last()
            && s + b.len() as u64 > end
        {
            merged.extend_from_slice(&b[(end - s) as usize..]);
        }
        for (_, b) in pieces {
            recycle(b);
        }
        self.bytes += merged.len();
        self.map.insert(new_start, merged);
    }

    /// Copy dirty bytes that fall inside `[start, start + buf.len())` into `buf`.
    pub fn overlay(&self, start: u64, buf: &mut [u8]) {
        let end = start + buf.len() as u64;
        let first = self.map.range(..=start).next_back().map(|(&k, _)| k).unwrap_or(start);
        for (&s, b) in self.map.range(first..end) {
            let e = s + b.len() as u64;
            let lo = s.max(start);
            let hi = e.min(end);
            if lo < hi {
                buf[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&b[(lo - s) as usize..(hi - s) as usize]);
            }
        }
    }

    /// The dirty ranges, in order, as `[start, end)`.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.map.iter().map(|(&s, b)| (s, s + b.len() as u64)).collect()
    }

    /// Whether any dirty byte lies in `[start, end)` (no allocation: read hot path).
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.map.range(..end).next_back().is_some_and(|(&s, b)| s + b.len() as u64 > start)
    }

    /// Remove and return the range `[start, end)` if it is exactly one dirty
    /// buffer (the streaming-writer case: commit it without copying).
    pub fn take_exact(&mut self, start: u64, end: u64) -> Option<Vec<u8>> {
        if self.map.get(&start)?.len() as u64 != end - start {
            return None;
        }
        let b = self.map.remove(&start)?;
        self.bytes -= b.len();
        Some(b)
    }

    /// Forget everything at or beyond `size`.
    pub fn truncate(&mut self, size: u64) {
        let keys: Vec<u64> = self.map.range(..).map(|(&k, _)| k).filter(|&k| k >= size).collect();
        for k in keys {
            let b = self.map.remove(&k).expect("listed");
            self.bytes -= b.len();
            recycle(b);
        }
        if let Some((&s, b)) = self.map.range_mut(..size).next_back()
            && s + b.len() as u64 > size
        {
            let keep = (size - s) as usize;
            self.bytes -= b.len() - keep;
            b.truncate(keep);
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_like_a_byte_array(ops in proptest::collection::vec((0u64..5000, proptest::collection::vec(any::<u8>(), 0..700), any::<bool>()), 1..40)) {
            let mut model = vec![None::<u8>; 6000];
            let mut d = DirtyMap::default();
            for (off, data, trunc) in ops {
                if trunc {
                    d.truncate(off);
                    for b in model.iter_mut().skip(off as usize) { *b = None; }
                } else {
                    d.write(off, &data);
                    for (i, &b) in data.iter().enumerate() { model[off as usize + i] = Some(b); }
                }
                let mut buf = vec![0xEEu8; 6000];
                d.overlay(0, &mut buf);
                for i in 0..6000 {
                    if let Some(b) = model[i] { prop_assert_eq!(buf[i], b); } else { prop_assert_eq!(buf[i], 0xEE); }
                }
                let dirty: usize = model.iter().filter(|b| b.is_some()).count();
                prop_assert_eq!(d.bytes(), dirty);
                for (lo, hi) in [(0u64, 6000u64), (off, off + 1), (off / 2, off + 300), (5999, 6000)] {
                    let want = model[lo as usize..hi as usize].iter().any(|b| b.is_some());
                    prop_assert_eq!(d.overlaps(lo, hi), want, "overlaps({}, {})", lo, hi);
                }
                let rs = d.ranges();
                for w in rs.windows(2) { prop_assert!(w[0].1 < w[1].0, "ranges must be disjoint and not touching"); }
            }
        }
    }
}
