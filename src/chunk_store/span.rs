//! Coalesced reads: envelopes that sit close together in one pack are
//! fetched with one ranged read (one GET on S3) and cut apart afterwards.
//! A remote store answers a few large GETs much faster than many small ones
//! (docs/BENCHMARKS.md, issue 5); every envelope is still authenticated on
//! its own by the caller.

use super::pack::PackId;
use super::store::{Location, TARGET_PACK_SIZE};

/// Envelopes at most this far apart share a read: downloading and dropping
/// the bytes between them is cheaper than another request.
pub const MAX_GAP: u64 = 256 * 1024;
/// Largest coalesced read: a whole pack (sealed once past 16 MiB, so at most
/// 16 MiB plus one maximal 4 MiB chunk). Bounds the memory of one read.
pub const MAX_SPAN: u64 = TARGET_PACK_SIZE + (4 << 20) + (64 << 10);

/// One read covering several envelopes of one pack: bytes `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub pack: PackId,
    pub start: u64,
    pub end: u64,
    /// Indices into the planned locations, in offset order.
    pub members: Vec<usize>,
}

impl Span {
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }

    /// The envelope at `loc` (a member) within this span's bytes.
    pub fn envelope<'a>(&self, bytes: &'a [u8], loc: &Location) -> &'a [u8] {
        let from = (loc.offset as u64 - self.start) as usize;
        &bytes[from..from + loc.len as usize]
    }
}

/// How `ChunkStore::read_envelopes` groups `locs` into reads.
pub fn plan_reads(locs: &[Location]) -> Vec<Span> {
    plan_spans(locs, MAX_GAP, MAX_SPAN)
}

/// Group `locs` into reads: envelopes of the same pack whose gap to the
/// previous one is at most `max_gap` share a span, as long as the span stays
/// within `max_len` (a single larger envelope gets a span of its own).
pub fn plan_spans(locs: &[Location], max_gap: u64, max_len: u64) -> Vec<Span> {
    let mut order: Vec<usize> = (0..locs.len()).collect();
    order.sort_by_key(|&i| (locs[i].pack, locs[i].offset));
    let mut spans: Vec<Span> = Vec::new();
    for i in order {
        let loc = &locs[i];
        let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.len as u64);
        match spans.last_mut() {
            Some(s) if s.pack == loc.pack && start <= s.end + max_gap && end.max(s.end) - s.start <= max_len => {
                s.end = s.end.max(end);
                s.members.push(i);
            }
            _ => spans.push(Span { pack: loc.pack, start, end, members: vec![i] }),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pack: u8, offset: u32, len: u32) -> Location {
        Location { pack: PackId([pack; 16]), offset, len }
    }

    fn groups(spans: &[Span]) -> Vec<Vec<usize>> {
        spans.iter().map(|s| s.members.clone()).collect()
    }

    #[test]
    fn adjacent_envelopes_of_one_pack_share_a_read() {
        let locs = [at(1, 0, 100), at(1, 100, 50), at(1, 150, 10)];
        let spans = plan_spans(&locs, MAX_GAP, MAX_SPAN);
        assert_eq!(spans, vec![Span { pack: PackId([1; 16]), start: 0, end: 160, members: vec![0, 1, 2] }]);
        let bytes: Vec<u8> = (0..160).map(|i| i as u8).collect();
        assert_eq!(spans[0].envelope(&bytes, &locs[1]), &bytes[100..150]);
    }

    #[test]
    fn small_gaps_are_bridged_and_large_ones_split() {
        let gap = MAX_GAP as u32;
        // 0..100, then a gap of exactly MAX_GAP (bridged), then one byte more (split).
        let locs = [at(1, 0, 100), at(1, 100 + gap, 100), at(1, 200 + 2 * gap + 1, 100)];
        let spans = plan_spans(&locs, MAX_GAP, MAX_SPAN);
        assert_eq!(groups(&spans), vec![vec![0, 1], vec![2]]);
        assert_eq!((spans[0].start, spans[0].end), (0, 200 + gap as u64));
    }

    #[test]
    fn packs_are_read_separately_in_offset_order() {
        // Out of order, two packs interleaved (as a file's chunks can be).
        let locs = [at(2, 100, 100), at(1, 100, 100), at(2, 0, 100), at(1, 0, 100)];
        assert_eq!(groups(&plan_spans(&locs, MAX_GAP, MAX_SPAN)), vec![vec![3, 1], vec![2, 0]]);
    }

    #[test]
    fn a_span_never_exceeds_the_cap() {
        let mib = 1 << 20;
        let locs: Vec<Location> = (0..40).map(|i| at(1, i * mib, mib)).collect();
        let spans = plan_spans(&locs, MAX_GAP, 16 << 20);
        assert_eq!(spans.iter().map(|s| s.members.len()).collect::<Vec<_>>(), vec![16, 16, 8]);
        assert!(spans.iter().all(|s| s.bytes() <= 16 << 20));
        // A single envelope larger than the cap still gets its own read.
        let big = [at(1, 0, 10), at(1, 10, 100), at(1, 110, 10)];
        assert_eq!(groups(&plan_spans(&big, 0, 50)), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn a_whole_pack_fits_one_span() {
        // A pack sealed just past 16 MiB after a maximal 4 MiB chunk.
        let first = TARGET_PACK_SIZE as u32 - 1;
        let locs = [at(1, 0, first), at(1, first, (4 << 20) + 64)];
        assert_eq!(plan_spans(&locs, MAX_GAP, MAX_SPAN).len(), 1);
    }
}
