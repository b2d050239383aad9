//! The audit log: an append-only, hash-chained, encrypted file in the fog
//! node's cache directory (`audit/log`), copied to the store in segments
//! with checkpoints the fog node signs (docs/STORAGE_FORMAT.md).
//!
//! Each record is a frame `len u32 ‖ sealed`, stored into the file's shared
//! memory map (`mapped`) before the operation it describes returns to the
//! application: a `kill -9` cannot lose it (the page cache holds it), and a
//! background thread `fdatasync`s the file every 2 s (with each upload) for
//! machine crashes. `sealed` is XChaCha20-Poly1305
//! under `K_audit` with the repository id and the record's sequence number
//! in the AAD; each record names the BLAKE3 hash of its predecessor's
//! sealed bytes. So a removed, reordered, replayed or altered record breaks
//! the chain, in the fog node's copy or in the store's.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::mapped::MappedAppend;
use crate::crypto::{self, Key32};
use crate::error::{Error, Result};

pub type Hash = [u8; 32];

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Login,
    Logout,
    BreakGlass,
    Open,
    Read,
    Write,
    Create,
    Delete,
    Rename,
    /// chmod, chown, utimens, xattrs: anything that changes who may do what.
    Permission,
    PolicyChange,
    /// An access the policy refused.
    Denied,
    Alert,
    SessionLocked,
    Mount,
    Unmount,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Logout => "logout",
            Op::BreakGlass => "break-glass",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Create => "create",
            Op::Delete => "delete",
            Op::Rename => "rename",
            Op::Permission => "permission",
            Op::PolicyChange => "policy-change",
            Op::Denied => "denied",
            Op::Alert => "alert",
            Op::SessionLocked => "session-locked",
            Op::Mount => "mount",
            Op::Unmount => "unmount",
        }
    }
}

/// One audit record (the plaintext inside a sealed frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Hash of the previous sealed record (zero for the first).
    pub prev: Hash,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub uid: u32,
    /// The session's user identity, if the uid had a session.
    pub user: Option<String>,
    /// First 16 hex digits of the session id.
    pub session: Option<String>,
    pub op: Op,
    pub ino: u64,
    /// Path inside the vault (sealed: it may name a patient).
    pub path: Option<String>,
    /// Rename target, break-glass reason, alert rule, policy version…
    pub detail: Option<String>,
}

/// The same record borrowed from its parts: how `append` serializes it
/// without copying them (postcard encodes `&str` as it encodes `String`).
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    prev: &'a Hash,
    time_ms: u64,
    uid: u32,
    user: Option<&'a str>,
    session: Option<&'a str>,
    op: Op,
    ino: u64,
    path: Option<&'a str>,
    detail: Option<&'a str>,
}

/// What a caller supplies; the log adds sequence, chain and time.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub uid: u32,
    pub user: Option<&'a str>,
    pub session: Option<&'a str>,
    pub op: Op,
    pub ino: u64,
    pub path: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl<'a> Entry<'a> {
    pub fn new(uid: u32, op: Op) -> Self {
        Entry { uid, user: None, session: None, op, ino: 0, path: None, detail: None }
    }
}

pub struct AuditKeys {
    key: Key32,
    repo_id: String,
}

impl AuditKeys {
    pub fn new(audit_key: &Key32, repo_id: &str) -> Self {
        AuditKeys { key: audit_key.clone(), repo_id: repo_id.to_string() }
    }

    fn aad(&self, seq: u64) -> Vec<u8> {
        let mut aad = Vec::new();
        self.aad_into(seq, &mut aad);
        aad
    }

    fn aad_into(&self, seq: u64, out: &mut Vec<u8>) {
        // "fogvault audit <repo id> <seq>", without the formatting machinery
        // (half a microsecond of every record).
        out.clear();
        out.extend_from_slice(b"fogvault audit ");
        out.extend_from_slice(self.repo_id.as_bytes());
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    }

    pub fn seal(&self, rec: &Record) -> Vec<u8> {
        let mut bufs = SealBufs::default();
        self.seal_into(rec.seq, rec, &mut bufs);
        bufs.sealed
    }

    /// Seal record `seq` (a `Record` or its borrowed twin) into `bufs.sealed`,
    /// reusing the buffers' allocations.
    fn seal_into(&self, seq: u64, rec: &impl Serialize, bufs: &mut SealBufs) {
        bufs.plain.clear();
        bufs.plain = postcard::to_extend(rec, std::mem::take(&mut bufs.plain)).expect("audit record serializes");
        self.aad_into(seq, &mut bufs.aad);
        bufs.sealed.clear();
        crypto::seal_append(&self.key, &bufs.aad, &bufs.plain, &mut bufs.sealed);
    }

    pub fn open(&self, seq: u64, sealed: &[u8]) -> Result<Record> {
        let bad = || Error::Integrity(format!("audit record {seq} fails authentication (altered, moved or replaced)"));
        let plain = crypto::open(&self.key, &self.aad(seq), sealed).map_err(|_| bad())?;
        let rec: Record = postcard::from_bytes(&plain).map_err(|_| bad())?;
        if rec.seq != seq {
            return Err(bad());
        }
        Ok(rec)
    }
}

pub fn hash(sealed: &[u8]) -> Hash {
    *blake3::hash(sealed).as_bytes()
}

/// Frames `len u32 LE ‖ sealed` of a byte stream; a torn tail is returned
/// separately (its length) so a writer can cut it off.
pub fn split_frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 4 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        // Zero: the log file's allocated, not yet written tail.
        if len == 0 || bytes.len() - at - 4 < len {
            break;
        }
        out.push(&bytes[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    (out, bytes.len() - at)
}

/// A chain checked from its first record: `(record, sealed hash)` in order.
/// Stops at the first problem and reports it (with what was good before it).
pub fn check_chain(
    keys: &AuditKeys,
    frames: &[&[u8]],
    first_seq: u64,
    mut prev: Hash,
) -> (Vec<(Record, Hash)>, Option<String>) {
    let mut out = Vec::with_capacity(frames.len());
    for (i, sealed) in frames.iter().enumerate() {
        let seq = first_seq + i as u64;
        let rec = match keys.open(seq, sealed) {
            Ok(r) => r,
            Err(_) => {
                // Is it a record from elsewhere in the chain (reordered)?
                return (out, Some(format!("record {seq} is missing, altered or out of order")));
            }
        };
        if rec.prev != prev {
            return (out, Some(format!("record {seq} does not follow record {} (a record was removed)", seq - 1)));
        }
        prev = hash(sealed);
        out.push((rec, prev));
    }
    (out, None)
}

/// How far the store holds the log: the frames before `offset` end with
/// record `seq`, whose sealed bytes hash to `head` (unknown: `None`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Resume {
    pub offset: u64,
    pub seq: u64,
    pub head: Option<Hash>,
}

/// Reused per record: serialized plaintext, AAD, sealed bytes.
#[derive(Default)]
struct SealBufs {
    plain: Vec<u8>,
    aad: Vec<u8>,
    sealed: Vec<u8>,
}

struct Tail {
    out: MappedAppend,
    next_seq: u64,
    prev: Hash,
    bufs: SealBufs,
}

/// The fog node's log file.
pub struct AuditLog {
    keys: AuditKeys,
    path: PathBuf,
    tail: Mutex<Tail>,
}

pub fn log_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("audit").join("log")
}

impl AuditLog {
    /// Open (or create) the log and check the part of its chain that the
    /// store does not hold yet (`from`; the whole chain when the point is
    /// unknown): mounting stays fast however long the log grows, and
    /// `fogvault audit --verify` checks everything. Damage before `from`, or
    /// a log that ends before it, is refused. A broken frame after `from` is
    /// what a machine crash leaves of unsynced records, but it may also be
    /// damage to synced ones (uploads can fail for hours while syncs go on):
    /// the log is cut there so the fog node can serve, the cut bytes are
    /// kept in `audit/cut-<unix seconds>`, and an alert record in the chain
    /// names what was cut.
    pub fn open(cache_dir: &Path, keys: AuditKeys, from: Resume) -> Result<Self> {
        let path = log_path(cache_dir);
        crate::durable_fs::create_dir_all(path.parent().expect("log path has a parent"))?;
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).mode(0o600).open(&path)?;
        let damaged = |p: &str| {
            Error::Integrity(format!("the audit log {} is damaged: {p}; run `fogvault audit --verify`", path.display()))
        };
        let (start, first_seq, start_prev) = match from.head {
            Some(head) => (from.offset, from.seq + 1, head),
            None => (0, 1, [0; 32]),
        };
        if file.metadata()?.len() < from.offset {
            return Err(damaged("it is shorter than what the store holds"));
        }
        let mut bytes = Vec::new();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
        file.read_to_end(&mut bytes)?;
        let (frames, _) = split_frames(&bytes);
        let (good, problem) = check_chain(&keys, &frames, first_seq, start_prev);
        let good_len = frames[..good.len()].iter().map(|f| 4 + f.len()).sum::<usize>();
        let good_end = start + good_len as u64;
        if good_end < from.offset {
            return Err(damaged(problem.as_deref().unwrap_or("its frames end before what the store holds")));
        }
        let (next_seq, prev) = good.last().map_or((first_seq, start_prev), |(r, h)| (r.seq + 1, *h));
        let mut cut = None;
        if good_end < start + bytes.len() as u64 {
            let rest = &bytes[good_len..];
            if rest.iter().any(|&b| b != 0) {
                let kept = path.with_file_name(format!("cut-{}", crate::audit::now_secs()));
                std::fs::write(&kept, rest)?;
                let broken = frames.len() - good.len();
                tracing::warn!(frames = broken, "cut a broken audit log tail (a crash's torn write, or damage)");
                cut = Some(format!(
                    "audit log cut at mount after record {}: {broken} broken frame(s), {} bytes, kept in audit/{}",
                    next_seq - 1,
                    rest.len(),
                    kept.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                ));
            }
            file.set_len(good_end)?;
        }
        let tail = Tail { out: MappedAppend::new(file, good_end)?, next_seq, prev, bufs: SealBufs::default() };
        let log = AuditLog { keys, path, tail: Mutex::new(tail) };
        if let Some(detail) = cut {
            log.append(Entry { detail: Some(&detail), ..Entry::new(0, Op::Alert) })?;
        }
        Ok(log)
    }

    /// Append one record; returns its sequence number. No system call but
    /// the one that grows the file every few megabytes.
    pub fn append(&self, e: Entry<'_>) -> Result<u64> {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut guard = self.tail.lock();
        let t = &mut *guard;
        let seq = t.next_seq;
        let rec = RecordRef {
            seq,
            prev: &t.prev,
            time_ms,
            uid: e.uid,
            user: e.user,
            session: e.session,
            op: e.op,
            ino: e.ino,
            path: e.path,
            detail: e.detail,
        };
        self.keys.seal_into(seq, &rec, &mut t.bufs);
        t.out.append_frame(&t.bufs.sealed)?;
        t.next_seq += 1;
        t.prev = hash(&t.bufs.sealed);
        Ok(seq)
    }

    /// Make every appended record durable against a machine crash; returns
    /// the point up to which the file is now durable.
    pub fn sync(&self) -> Result<Resume> {
        let (f, point) = {
            let t = self.tail.lock();
            (t.out.file().try_clone()?, Resume { offset: t.out.end(), seq: t.next_seq - 1, head: Some(t.prev) })
        };
        f.sync_data().map_err(Error::from_io)?;
        Ok(point)
    }

    /// Cut the file's allocated, unwritten tail (clean unmount; appends may
    /// still follow, they allocate again).
    pub fn trim(&self) -> Result<()> {
        self.tail.lock().out.trim().map_err(Error::from_io)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(next sequence number, hash of the last record)`.
    pub fn head(&self) -> (u64, Hash) {
        let t = self.tail.lock();
        (t.next_seq, t.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AuditKeys {
        AuditKeys::new(&Key32::from_bytes([5; 32]), "test-repo")
    }

    #[test]
    fn record_aad_is_the_documented_string() {
        // STORAGE_FORMAT.md: every record already stored was sealed with it.
        assert_eq!(keys().aad(0), b"fogvault audit test-repo 0");
        assert_eq!(keys().aad(18_446_744_073_709_551_615), b"fogvault audit test-repo 18446744073709551615");
    }

    fn entry(path: &str) -> Entry<'_> {
        Entry { user: Some("alice"), session: Some("0123456789abcdef"), path: Some(path), ..Entry::new(1001, Op::Open) }
    }

    /// A log in `dir` with `n` records, synced: the log and the synced point.
    fn filled(dir: &Path, n: usize) -> (AuditLog, Resume) {
        let log = AuditLog::open(dir, keys(), Resume::default()).unwrap();
        for i in 0..n {
            log.append(entry(&format!("/f{i}"))).unwrap();
        }
        let point = log.sync().unwrap();
        (log, point)
    }

    fn read_chain(dir: &Path) -> Vec<Record> {
        let bytes = std::fs::read(log_path(dir)).unwrap();
        let (frames, torn) = split_frames(&bytes);
        assert_eq!(torn, 0, "a closed log holds whole frames only");
        let (good, problem) = check_chain(&keys(), &frames, 1, [0; 32]);
        assert_eq!(problem, None);
        good.into_iter().map(|(r, _)| r).collect()
    }

    #[test]
    fn borrowed_records_serialize_like_owned_ones() {
        let prev = [9; 32];
        let borrowed = RecordRef {
            seq: 3,
            prev: &prev,
            time_ms: 77,
            uid: 4,
            user: Some("u"),
            session: None,
            op: Op::Rename,
            ino: 8,
            path: Some("/p/a"),
            detail: Some("/p/b"),
        };
        let owned = Record {
            seq: 3,
            prev,
            time_ms: 77,
            uid: 4,
            user: Some("u".into()),
            session: None,
            op: Op::Rename,
            ino: 8,
            path: Some("/p/a".into()),
            detail: Some("/p/b".into()),
        };
        assert_eq!(postcard::to_allocvec(&borrowed).unwrap(), postcard::to_allocvec(&owned).unwrap());
    }

    #[test]
    fn records_chain_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), keys(), Resume::default()).unwrap();
        assert_eq!(log.append(entry("/a")).unwrap(), 1);
        assert_eq!(log.append(entry("/b")).unwrap(), 2);
        let (_, head) = log.head();
        drop(log);
        let log = AuditLog::open(dir.path(), keys(), Resume::default()).unwrap();
        assert_eq!(log.head(), (3, head));
        assert_eq!(log.append(entry("/c")).unwrap(), 3);
        drop(log);
        let recs = read_chain(dir.path());
        let paths: Vec<_> = recs.iter().map(|r| r.path.clone().unwrap()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(recs[2].user.as_deref(), Some("alice"));
    }

    #[test]
    fn a_log_left_by_kill_9_reopens_with_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let (log, point) = filled(dir.path(), 100);
        // What a killed daemon leaves: the frames, then the zeroed allocation.
        let copy = dir.path().join("copy");
        std::fs::create_dir_all(copy.join("audit")).unwrap();
        std::fs::copy(log_path(dir.path()), log_path(&copy)).unwrap();
        assert!(std::fs::metadata(log_path(&copy)).unwrap().len() > point.offset);
        let reopened = AuditLog::open(&copy, keys(), Resume::default()).unwrap();
        assert_eq!(reopened.head(), log.head());
        drop(reopened);
        assert_eq!(read_chain(&copy).len(), 100);
    }

    #[test]
    fn a_torn_last_record_is_cut_only_past_what_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (log, end) = filled(dir.path(), 10);
        drop(log);
        // A crash wrote the last frame's length but not all of its body.
        let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
        let n = bytes.len();
        bytes[n - 5..].fill(0);
        std::fs::write(log_path(dir.path()), &bytes).unwrap();
        // The store holds all ten: that is damage, not a crash.
        let unknown_head = Resume { head: None, ..end };
        assert!(matches!(AuditLog::open(dir.path(), keys(), unknown_head), Err(Error::Integrity(_))));
        // The store holds nine: the tenth is cut, kept aside, and the cut recorded.
        let log = AuditLog::open(dir.path(), keys(), Resume::default()).unwrap();
        assert_eq!(log.head().0, 11);
        drop(log);
        let recs = read_chain(dir.path());
        assert_eq!(recs.len(), 10);
        assert_eq!(recs[9].op, Op::Alert);
        assert!(recs[9].detail.as_deref().unwrap().contains("after record 9"));
        let kept: Vec<_> = std::fs::read_dir(dir.path().join("audit"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("cut-"))
            .collect();
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn an_altered_record_before_the_durable_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, end) = filled(dir.path(), 5);
        drop(log);
        let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
        bytes[30] ^= 1;
        std::fs::write(log_path(dir.path()), &bytes).unwrap();
        assert!(matches!(AuditLog::open(dir.path(), keys(), Resume { head: None, ..end }), Err(Error::Integrity(_))));
        // Shorter than what the store holds: refused whether the head is known or not.
        std::fs::write(log_path(dir.path()), &bytes[..40]).unwrap();
        assert!(matches!(AuditLog::open(dir.path(), keys(), end), Err(Error::Integrity(_))));
    }

    #[test]
    fn a_known_point_continues_the_chain_without_rereading_what_precedes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (log, point) = filled(dir.path(), 5);
        log.append(entry("/after")).unwrap();
        let head = log.head();
        drop(log);
        let log = AuditLog::open(dir.path(), keys(), point).unwrap();
        assert_eq!(log.head(), head);
        log.append(entry("/next")).unwrap();
        drop(log);
        let recs = read_chain(dir.path());
        assert_eq!(recs.len(), 7);
        assert_eq!(recs[6].path.as_deref(), Some("/next"));
        // A broken record after the point is a torn write: cut, the chain continues before it.
        let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        std::fs::write(log_path(dir.path()), &bytes).unwrap();
        let log = AuditLog::open(dir.path(), keys(), point).unwrap();
        assert_eq!(log.head().0, 8, "six records kept, then the alert naming the cut");
    }
}
