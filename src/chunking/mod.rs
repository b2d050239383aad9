//! Content-defined chunking: FastCDC (v2020) with a keyed gear seed.

use fastcdc::v2020::{FastCDC, Normalization};

/// Chunk size bounds. 512 KiB / 1 MiB / 4 MiB keeps per-chunk overhead
/// (index entries, AEAD tags, metadata) small while an edit still only
/// rewrites about a megabyte. The minimum is also the start of every
/// chunk that FastCDC skips without hashing: 512 KiB (restic's minimum
/// too) costs the writer ~10% less CPU than 256 KiB (docs/BENCHMARKS.md).
/// Repositories keep the minimum they were made with (`repo::Repo`).
#[derive(Clone, Copy, Debug)]
pub struct ChunkParams {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams { min: 512 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 }
    }
}

#[derive(Clone, Debug)]
pub struct Chunker {
    params: ChunkParams,
    seed: u64,
}

impl Chunker {
    pub fn new(params: ChunkParams, seed: u64) -> Self {
        Chunker { params, seed }
    }

    /// Cut `data` into chunks, returned as `(offset, len)`. The last chunk ends
    /// at the end of `data` whether or not that is a content-defined cut.
    pub fn cut(&self, data: &[u8]) -> Vec<(usize, usize)> {
        self.cuts(data).collect()
    }

    /// [`Self::cut`] as the cuts are found, so that each chunk can be
    /// hashed while the next one is being cut.
    pub fn cuts<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = (usize, usize)> + 'a {
        let p = self.params;
        let whole = (!data.is_empty() && data.len() <= p.min).then_some((0, data.len()));
        let cdc = (data.len() > p.min)
            .then(|| FastCDC::with_level_and_seed(data, p.min, p.avg, p.max, Normalization::Level1, self.seed));
        whole.into_iter().chain(cdc.into_iter().flatten().map(|c| (c.offset, c.length)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_input_and_respect_bounds() {
        let c = Chunker::new(ChunkParams::default(), 42);
        let data = pseudo_random(20 << 20, 7);
        let cuts = c.cut(&data);
        let mut pos = 0;
        for (i, &(off, len)) in cuts.iter().enumerate() {
            assert_eq!(off, pos);
            assert!(len <= 4 << 20);
            if i + 1 < cuts.len() {
                assert!(len >= 256 << 10);
            }
            pos += len;
        }
        assert_eq!(pos, data.len());
    }

    #[test]
    fn insertion_changes_few_chunks() {
        let c = Chunker::new(ChunkParams::default(), 99);
        let data = pseudo_random(100 << 20, 3);
        let mut edited = data[..50 << 20].to_vec();
        edited.extend_from_slice(&[0xAB; 100]);
        edited.extend_from_slice(&data[50 << 20..]);
        let set = |d: &[u8]| {
            c.cut(d).into_iter().map(|(o, l)| blake3::hash(&d[o..o + l])).collect::<std::collections::HashSet<_>>()
        };
        let (a, b) = (set(&data), set(&edited));
        let new = b.difference(&a).count();
        assert!(new <= 3, "inserting 100 bytes created {new} new chunks");
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(16 << 20, 5);
        let a = Chunker::new(ChunkParams::default(), 1).cut(&data);
        let b = Chunker::new(ChunkParams::default(), 2).cut(&data);
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn small_inputs_cover_exactly(len in 0usize..2_000_000, seed in any::<u64>()) {
            let c = Chunker::new(ChunkParams::default(), seed);
            let data = pseudo_random(len, seed);
            let total: usize = c.cut(&data).iter().map(|&(_, l)| l).sum();
            prop_assert_eq!(total, len);
        }
    }
}
