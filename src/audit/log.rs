//! The audit log: an append-only, hash-chained, encrypted file in the fog
//! node's cache directory (`audit/log`), copied to the store in segments
//! with checkpoints the fog node signs (docs/STORAGE_FORMAT.md).
//!
//! Each record is one `write(2)` of `len u32 ‖ sealed`, made before the
//! operation it describes returns to the application: a `kill -9` cannot
//! lose it (the kernel holds it), and a background thread `fdatasync`s the
//! file every 2 s (with each upload) for machine crashes. `sealed` is XChaCha20-Poly1305
//! under `K_audit` with the repository id and the record's sequence number
//! in the AAD; each record names the BLAKE3 hash of its predecessor's
//! sealed bytes. So a removed, reordered, replayed or altered record breaks
//! the chain, in the fog node's copy or in the store's.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Key32};
use crate::error::{Error, Result};

pub type Hash = [u8; 32];

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// What a caller supplies; the log adds sequence, chain and time.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub uid: u32,
    pub user: Option<String>,
    pub session: Option<String>,
    pub op: Option<Op>,
    pub ino: u64,
    pub path: Option<String>,
    pub detail: Option<String>,
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
        format!("fogvault audit {} {seq}", self.repo_id).into_bytes()
    }

    pub fn seal(&self, rec: &Record) -> Vec<u8> {
        let plain = postcard::to_allocvec(rec).expect("audit record serializes");
        crypto::seal(&self.key, &self.aad(rec.seq), &plain)
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
        if bytes.len() - at - 4 < len {
            break;
        }
        out.push(&bytes[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    (out, bytes.len() - at)
}

pub fn frame(sealed: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + sealed.len());
    f.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    f.extend_from_slice(sealed);
    f
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

struct Tail {
    file: File,
    next_seq: u64,
    prev: Hash,
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
    /// Open (or create) the log, check its chain, and cut a torn last frame
    /// (a record whose write a machine crash interrupted: never acknowledged).
    pub fn open(cache_dir: &Path, keys: AuditKeys) -> Result<Self> {
        let path = log_path(cache_dir);
        std::fs::create_dir_all(path.parent().expect("log path has a parent"))?;
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (frames, torn) = split_frames(&bytes);
        let (good, problem) = check_chain(&keys, &frames, 1, [0; 32]);
        if let Some(p) = problem {
            return Err(Error::Integrity(format!(
                "the audit log {} is damaged: {p}; run `fogvault audit --verify`",
                path.display()
            )));
        }
        if torn > 0 {
            file.set_len((bytes.len() - torn) as u64)?;
        }
        let (next_seq, prev) = good.last().map_or((1, [0; 32]), |(r, h)| (r.seq + 1, *h));
        Ok(AuditLog { keys, path, tail: Mutex::new(Tail { file, next_seq, prev }) })
    }

    /// Append one record; returns its sequence number. One `write(2)`.
    pub fn append(&self, e: Entry) -> Result<u64> {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut t = self.tail.lock();
        let rec = Record {
            seq: t.next_seq,
            prev: t.prev,
            time_ms,
            uid: e.uid,
            user: e.user,
            session: e.session,
            op: e.op.unwrap_or(Op::Alert),
            ino: e.ino,
            path: e.path,
            detail: e.detail,
        };
        let sealed = self.keys.seal(&rec);
        t.file.write_all(&frame(&sealed))?;
        t.next_seq += 1;
        t.prev = hash(&sealed);
        Ok(rec.seq)
    }

    /// Make every appended record durable against a machine crash.
    pub fn sync(&self) -> Result<()> {
        let f = self.tail.lock().file.try_clone()?;
        f.sync_data().map_err(Error::from_io)
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
