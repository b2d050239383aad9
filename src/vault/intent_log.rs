//! The intent log: a preallocated file in the cache directory that makes a
//! close or fsync durable with one write and one fdatasync, instead of an
//! fdatasync of the staged packs plus LMDB's two (data pages, meta page).
//!
//! A record carries the metadata transactions not yet durable in LMDB and
//! the chunk envelopes not yet durable in their staged packs. A checkpoint
//! (packs synced, the in-memory overlay committed to LMDB and synced, about
//! once a second) makes every record obsolete, and the log starts over at
//! offset 0. The file is written full of zeros once, so an append overwrites
//! allocated blocks and its fdatasync flushes data only (no journal commit).
//!
//! Appends go through `O_DIRECT | O_DSYNC` where the filesystem allows it:
//! the write returns once the device has the bytes, with no page-cache
//! writeback before the flush (44 against 96 µs per append on the test
//! host). Direct I/O wants aligned memory, offsets and lengths, so every
//! frame starts on a 4 KiB boundary and is padded with zeros to one.
//!
//! Frame (little-endian): magic `FVL2` | generation u64 | payload length u32
//! | BLAKE3(generation ‖ payload)[..16] | payload (postcard [`Record`]) |
//! zeros to the next 4 KiB. Each restart at offset 0 takes a fresh random
//! generation: replay reads frames of the generation found at offset 0 and
//! stops at the first frame that is torn, of another generation, or not the
//! next transactions in order. Frames with magic `FVIL` (before direct I/O)
//! are read too; they follow each other without padding.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use memmap2::MmapMut;
use serde::{Deserialize, Serialize};

use crate::chunk_store::StagedBytes;
use crate::crypto;
use crate::metadata::Change;

const MAGIC: &[u8; 4] = b"FVL2";
/// Frames written before direct I/O: unpadded, back to back.
const MAGIC_PACKED: &[u8; 4] = b"FVIL";
const HEADER: usize = 4 + 8 + 4 + 16;
/// Frame alignment: a page, which satisfies direct I/O on every common
/// device (512-byte and 4 KiB sectors).
const ALIGN: usize = 4096;
/// 8,192 appends of small records (a frame takes at least 4 KiB) between
/// checkpoints, which come about once a second; a full log checkpoints early.
pub const CAPACITY: u64 = 32 << 20;
/// Envelopes of at most this many bytes ride in a record; more are synced in
/// their packs instead (one flush either way, and the log stays small).
pub const INLINE_MAX: u64 = 1 << 20;

/// One durable point: transactions (number, changes) in order, and the
/// envelopes they reference that their packs may not hold after a crash.
#[derive(Serialize, Deserialize, Default)]
pub struct Record {
    pub txns: Vec<(u64, Vec<Change>)>,
    pub blobs: Vec<StagedBytes>,
}

pub struct IntentLog {
    /// Set while transactions taken from the index's queue are in no record
    /// (a failed append or read-back): callers checkpoint until one succeeds.
    pub needs_checkpoint: bool,
    file: File,
    /// `file` is opened `O_DIRECT | O_DSYNC`: a write is durable when it
    /// returns. Otherwise each write is followed by an fdatasync.
    direct: bool,
    /// Page-aligned staging for a frame (direct I/O reads user memory).
    frame: MmapMut,
    capacity: u64,
    generation: u64,
    offset: u64,
    /// Newest transaction in the log since the last restart.
    logged_txn: u64,
}

fn checksum(generation: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

fn random_generation() -> u64 {
    let mut b = [0u8; 8];
    crypto::random_bytes(&mut b);
    u64::from_le_bytes(b)
}

impl IntentLog {
    /// The records of the newest generation in the log at `path`, oldest
    /// first (none if there is no log).
    pub fn read(path: &Path) -> io::Result<Vec<Record>> {
        match File::open(path) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(read_records(&f, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Open the log at `path` for appending from offset 0 (everything in it
    /// must be durable elsewhere: replay first), zero-filling it to `capacity`.
    pub fn create(path: &Path, capacity: u64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        if len < capacity {
            // Written, not just allocated: an append into unwritten extents
            // would make every fdatasync commit the filesystem journal.
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < capacity {
                let n = zeros.len().min((capacity - at) as usize);
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                crate::durable_fs::sync_dir(dir)?;
            }
        }
        let direct_file =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(path);
        let (file, direct) = match direct_file {
            Ok(f) => (f, true),
            // EINVAL: this filesystem has no direct I/O; write and fdatasync.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (file, false),
            Err(e) => return Err(e),
        };
        let mut log = IntentLog {
            needs_checkpoint: false,
            file,
            direct,
            frame: MmapMut::map_anon(ALIGN)?,
            capacity,
            generation: random_generation(),
            offset: 0,
            logged_txn: 0,
        };
        log.clear()?;
        Ok(log)
    }

    /// Start over and make the log read as empty (its first frame zeroed):
    /// after replay or a clean unmount, the next mount has nothing to redo.
    pub fn clear(&mut self) -> io::Result<()> {
        self.restart();
        self.frame[..ALIGN].fill(0);
        self.write_frame(ALIGN, 0)
    }

    /// Write the first `len` bytes of the staging buffer at `offset`
    /// (both multiples of [`ALIGN`]) and make them durable.
    fn write_frame(&self, len: usize, offset: u64) -> io::Result<()> {
        self.file.write_all_at(&self.frame[..len], offset)?;
        if !self.direct {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Newest transaction written since the last restart (0: none).
    pub fn logged_txn(&self) -> u64 {
        self.logged_txn
    }

    /// Start over at offset 0: everything in the log is durable elsewhere.
    pub fn restart(&mut self) {
        self.generation = random_generation();
        self.offset = 0;
        self.logged_txn = 0;
    }

    /// Append `rec` and make it durable. `Ok(false)`: it does not fit (the
    /// caller checkpoints and restarts the log instead).
    pub fn append(&mut self, rec: &Record) -> io::Result<bool> {
        let payload = postcard::to_allocvec(rec).map_err(io::Error::other)?;
        let len = HEADER + payload.len();
        let padded = len.next_multiple_of(ALIGN);
        if self.offset + padded as u64 > self.capacity || payload.len() > u32::MAX as usize {
            return Ok(false);
        }
        if self.frame.len() < padded {
            self.frame = MmapMut::map_anon(padded.next_power_of_two())?;
        }
        let f = &mut self.frame[..padded];
        f[..4].copy_from_slice(MAGIC);
        f[4..12].copy_from_slice(&self.generation.to_le_bytes());
        f[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        f[16..HEADER].copy_from_slice(&checksum(self.generation, &payload));
        f[HEADER..len].copy_from_slice(&payload);
        f[len..].fill(0);
        self.write_frame(padded, self.offset)?;
        self.offset += padded as u64;
        if let Some((no, _)) = rec.txns.last() {
            self.logged_txn = self.logged_txn.max(*no);
        }
        Ok(true)
    }
}

/// Frames of the generation at offset 0, up to the first bad one.
fn read_records(file: &File, end: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut generation = None;
    let mut magic = None;
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= end {
        if file.read_exact_at(&mut header, at).is_err() {
            break;
        }
        let this: [u8; 4] = header[..4].try_into().expect("4 bytes");
        if (&this != MAGIC && &this != MAGIC_PACKED) || *magic.get_or_insert(this) != this {
            break;
        }
        let gen_here = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
        if *generation.get_or_insert(gen_here) != gen_here {
            break;
        }
        let len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as u64;
        if at + HEADER as u64 + len > end {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if file.read_exact_at(&mut payload, at + HEADER as u64).is_err()
            || checksum(gen_here, &payload)[..] != header[16..32]
        {
            break;
        }
        match postcard::from_bytes::<Record>(&payload) {
            Ok(rec) => out.push(rec),
            Err(_) => break,
        }
        at += HEADER as u64 + len;
        if &this == MAGIC {
            at = at.next_multiple_of(ALIGN as u64);
        }
    }
    out
}

/// What recovery must apply after an unclean stop.
pub struct Replay {
    /// Transactions after the newest LMDB holds, in order.
    pub txns: Vec<(u64, Vec<Change>)>,
    /// Every envelope the records carry (rewriting one its pack already
    /// holds is harmless).
    pub blobs: Vec<StagedBytes>,
    /// The log skipped a transaction: the ones before the gap are kept.
    pub gap: bool,
}

/// Sort `records` into what to replay over an index whose newest
/// transaction is `stored_txn`.
pub fn to_replay(records: Vec<Record>, stored_txn: u64) -> Replay {
    let mut out = Replay { txns: Vec::new(), blobs: Vec::new(), gap: false };
    let mut expected = stored_txn + 1;
    for rec in records {
        out.blobs.extend(rec.blobs);
        for (no, changes) in rec.txns {
            if out.gap || no < expected {
                continue;
            }
            if no > expected {
                out.gap = true;
                continue;
            }
            out.txns.push((no, changes));
            expected += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_store::PackId;
    use crate::metadata::Table;

    fn change(k: u8) -> Change {
        Change { table: Table::Inodes, key: vec![k], value: Some(vec![k; 3]) }
    }
    fn rec(nos: &[u64]) -> Record {
        Record {
            txns: nos.iter().map(|n| (*n, vec![change(*n as u8)])).collect(),
            blobs: vec![StagedBytes { pack: PackId([nos[0] as u8; 16]), offset: 7, bytes: vec![1, 2, 3] }],
        }
    }
    fn nos(records: &[Record]) -> Vec<u64> {
        records.iter().flat_map(|r| r.txns.iter().map(|t| t.0)).collect()
    }

    #[test]
    fn records_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intent.log");
        assert!(IntentLog::read(&path).unwrap().is_empty());
        let mut log = IntentLog::create(&path, 1 << 20).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        assert!(log.append(&rec(&[1, 2])).unwrap());
        assert!(log.append(&rec(&[3])).unwrap());
        assert_eq!(log.logged_txn(), 3);
        drop(log);
        let found = IntentLog::read(&path).unwrap();
        assert_eq!(nos(&found), vec![1, 2, 3]);
        assert_eq!(found[1].blobs[0].bytes, vec![1, 2, 3]);
    }

    #[test]
    fn a_restart_hides_the_older_generation_and_a_torn_frame_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intent.log");
        let mut log = IntentLog::create(&path, 1 << 20).unwrap();
        for n in 1..=5 {
            assert!(log.append(&rec(&[n])).unwrap());
        }
        // Same-sized frames, so the old generation's frames line up exactly.
        log.restart();
        assert!(log.append(&rec(&[6])).unwrap());
        let end_of_first = log.offset;
        assert!(log.append(&rec(&[7])).unwrap());
        drop(log);
        let found = IntentLog::read(&path).unwrap();
        assert_eq!(nos(&found), vec![6, 7]);
        // Tear the second frame: only the first survives.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff], end_of_first + HEADER as u64 + 2).unwrap();
        let found = IntentLog::read(&path).unwrap();
        assert_eq!(nos(&found), vec![6]);
    }

    #[test]
    fn a_cleared_log_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intent.log");
        let mut log = IntentLog::create(&path, 1 << 20).unwrap();
        assert!(log.append(&rec(&[1])).unwrap());
        drop(log);
        assert_eq!(IntentLog::read(&path).unwrap().len(), 1);
        // Opening for appends clears what replay has applied.
        let mut log = IntentLog::create(&path, 1 << 20).unwrap();
        assert!(IntentLog::read(&path).unwrap().is_empty());
        assert!(log.append(&rec(&[2])).unwrap());
        log.clear().unwrap();
        assert!(IntentLog::read(&path).unwrap().is_empty());
    }

    #[test]
    fn a_full_log_refuses_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IntentLog::create(&dir.path().join("l"), 3 * ALIGN as u64).unwrap();
        assert!(log.append(&rec(&[1])).unwrap());
        let mut big = rec(&[2]);
        big.blobs[0].bytes = vec![9; 2 * ALIGN];
        assert!(!log.append(&big).unwrap());
        log.restart();
        assert!(log.append(&big).unwrap());
        drop(log);
        assert_eq!(IntentLog::read(&dir.path().join("l")).unwrap()[0].blobs[0].bytes, vec![9; 2 * ALIGN]);
    }

    #[test]
    fn frames_are_aligned_and_packed_frames_of_the_old_format_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intent.log");
        let mut log = IntentLog::create(&path, 1 << 20).unwrap();
        assert!(log.append(&rec(&[1])).unwrap());
        assert_eq!(log.offset, ALIGN as u64);
        drop(log);
        // Two unpadded frames as session 9 wrote them.
        let mut old = Vec::new();
        for n in [1u64, 2] {
            let payload = postcard::to_allocvec(&rec(&[n])).unwrap();
            old.extend_from_slice(MAGIC_PACKED);
            old.extend_from_slice(&5u64.to_le_bytes());
            old.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            old.extend_from_slice(&checksum(5, &payload));
            old.extend_from_slice(&payload);
        }
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&old, 0).unwrap();
        assert_eq!(nos(&IntentLog::read(&path).unwrap()), vec![1, 2]);
    }

    #[test]
    fn replay_skips_what_lmdb_holds_and_stops_at_a_gap() {
        let r = to_replay(vec![rec(&[3, 4]), rec(&[5])], 3);
        assert_eq!(r.txns.iter().map(|t| t.0).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(r.blobs.len(), 2);
        assert!(!r.gap);
        let r = to_replay(vec![rec(&[4]), rec(&[6])], 3);
        assert_eq!(r.txns.iter().map(|t| t.0).collect::<Vec<_>>(), vec![4]);
        assert!(r.gap);
        let r = to_replay(vec![rec(&[2, 3])], 9);
        assert!(r.txns.is_empty() && !r.gap);
    }
}
