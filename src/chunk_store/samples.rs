//! Proof-of-storage samples: when a pack is uploaded, the fog node keeps a
//! 16-byte keyed MAC of every 64 KiB block of the stored object in
//! `<cache>/samples/<pack>`. `verify --sample N` then asks the store for
//! random blocks of random packs and checks them, catching a provider that
//! lost or altered data without downloading everything.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::pack::PackId;
use crate::crypto::Key32;

pub const SAMPLE_BLOCK: u64 = 64 * 1024;
pub const MAC_LEN: usize = 16;

/// MAC of block `index` of `pack`'s stored object.
pub fn block_mac(key: &Key32, pack: &PackId, index: u64, block: &[u8]) -> [u8; MAC_LEN] {
    let mut h = block_hasher(key, &pack.hex(), index);
    h.update(block);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
    out
}

/// MACs of every block of a stored object, concatenated.
pub fn object_macs(key: &Key32, pack: &PackId, object: &[u8]) -> Vec<u8> {
    let mut macs = MacStream::new(key, pack);
    macs.feed(object);
    macs.finish()
}

/// The same MACs, read block by block from a file (no pack-sized buffer).
pub fn file_macs(key: &Key32, pack: &PackId, file: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut macs = MacStream::new(key, pack);
    let mut buf = vec![0u8; SAMPLE_BLOCK as usize];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(macs.finish()),
            Ok(n) => macs.feed(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The same MACs, computed from the object's bytes as they are produced (a
/// pack's envelopes as they are appended, then its header and trailer), so
/// that nobody reads a finished pack back to take them.
#[derive(Clone)]
pub struct MacStream {
    key: Key32,
    pack_hex: String,
    block: blake3::Hasher,
    filled: usize,
    index: u64,
    macs: Vec<u8>,
}

impl MacStream {
    pub fn new(key: &Key32, pack: &PackId) -> Self {
        let pack_hex = pack.hex();
        let block = block_hasher(key, &pack_hex, 0);
        MacStream { key: key.clone(), pack_hex, block, filled: 0, index: 0, macs: Vec::new() }
    }

    /// The object's next bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (SAMPLE_BLOCK as usize - self.filled).min(bytes.len());
            self.block.update(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == SAMPLE_BLOCK as usize {
                self.end_block();
            }
        }
    }

    /// The MACs of every block, the last one possibly short.
    pub fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.end_block();
        }
        self.macs
    }

    fn end_block(&mut self) {
        let next = block_hasher(&self.key, &self.pack_hex, self.index + 1);
        let done = std::mem::replace(&mut self.block, next);
        self.macs.extend_from_slice(&done.finalize().as_bytes()[..MAC_LEN]);
        self.index += 1;
        self.filled = 0;
    }
}

/// The keyed hasher of block `index`, before the block's bytes ([`block_mac`]).
fn block_hasher(key: &Key32, pack_hex: &str, index: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_keyed(key.as_bytes());
    h.update(pack_hex.as_bytes());
    h.update(&index.to_le_bytes());
    h
}

pub fn samples_path(dir: &Path, pack: &PackId) -> PathBuf {
    dir.join(pack.hex())
}

/// Keep the MACs (advisory: a pack without them is simply not sampled).
pub fn write_samples(dir: &Path, pack: &PackId, macs: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{}.tmp", pack.hex()));
    std::fs::write(&tmp, macs)?;
    std::fs::rename(&tmp, samples_path(dir, pack))
}

pub fn read_samples(dir: &Path, pack: &PackId) -> Option<Vec<[u8; MAC_LEN]>> {
    let raw = std::fs::read(samples_path(dir, pack)).ok()?;
    (raw.len() % MAC_LEN == 0).then(|| raw.chunks_exact(MAC_LEN).map(|c| c.try_into().expect("16 bytes")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// The definition `verify --sample` checks against: one MAC per block.
    fn reference(key: &Key32, pack: &PackId, object: &[u8]) -> Vec<u8> {
        object.chunks(SAMPLE_BLOCK as usize).enumerate().flat_map(|(i, b)| block_mac(key, pack, i as u64, b)).collect()
    }

    #[test]
    fn object_and_file_macs_are_one_mac_per_block() {
        let key = Key32::from_bytes([7; 32]);
        let pack = PackId::random();
        let block = SAMPLE_BLOCK as usize;
        for len in [0, 1, block - 1, block, block + 1, 3 * block + 17] {
            let object: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let want = reference(&key, &pack, &object);
            assert_eq!(want.len(), len.div_ceil(block) * MAC_LEN);
            assert_eq!(object_macs(&key, &pack, &object), want, "object of {len} bytes");
            // A reader that returns at most 1000 bytes per call.
            let mut trickle = Trickle(&object);
            assert_eq!(file_macs(&key, &pack, &mut trickle).unwrap(), want, "file of {len} bytes");
        }
    }

    #[test]
    fn macs_fed_piece_by_piece_match_the_whole_object() {
        let key = Key32::from_bytes([9; 32]);
        let pack = PackId::random();
        let block = SAMPLE_BLOCK as usize;
        let object: Vec<u8> = (0..5 * block + 333).map(|i| (i * 7 % 253) as u8).collect();
        // Pieces that end inside blocks, on block boundaries and span several.
        for cuts in [vec![], vec![1], vec![block], vec![block - 1, block + 1], vec![17, 2 * block, 4 * block + 5]] {
            let mut m = MacStream::new(&key, &pack);
            let mut at = 0;
            for c in cuts.iter().copied().chain([object.len()]) {
                m.feed(&object[at..c]);
                at = c;
            }
            assert_eq!(m.finish(), reference(&key, &pack, &object), "cuts {cuts:?}");
        }
        assert!(MacStream::new(&key, &pack).finish().is_empty());
    }
}
