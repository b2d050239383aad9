//! The audit log in the store: the fog node's log file copied in segments
//! (`audit/seg/<first seq>`: the same frames, byte for byte) and, after
//! each, a checkpoint (`audit/checkpoint/<last seq>`) naming the chain's
//! head, signed by the fog node's identity key (Cha–Cheon) or, in a vault
//! without an admin authority, MACed under a key from the root secret.
//! When the fog node gives back the disk space of old records, their small
//! segments become one and the checkpoints inside it but the last go.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use super::log::{self, AuditLog};
use crate::chunk_store::Backend;
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::session::{IdentityKey, MasterPublic, Signature, ibs};

pub const SEGMENT_PREFIX: &str = "audit/seg/";
pub const CHECKPOINT_PREFIX: &str = "audit/checkpoint/";
/// How often new records go to the store (and the log file is fdatasynced).
const TICK: Duration = Duration::from_secs(2);
/// Most bytes of records one trim step gives back (and merges into one segment).
const MAX_TRIM_STEP: u64 = 64 << 20;

pub fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:016x}")
}

pub fn checkpoint_name(last: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{last:016x}")
}

pub fn parse_seq(name: &str, prefix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What a checkpoint vouches for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub repo_id: String,
    /// The segment it closes: records `first..=last`.
    pub first: u64,
    pub last: u64,
    /// Hash of record `last` (hex).
    pub head: String,
    pub time: u64,
}

#[derive(Serialize, Deserialize)]
struct SignedCheckpoint {
    checkpoint: Checkpoint,
    /// "ibs:<fog identity>" or "mac".
    signer: String,
    #[serde(with = "hex::serde")]
    signature: Vec<u8>,
}

/// Who signs checkpoints, and who checks them.
pub enum Signer {
    Ibs { key: Box<IdentityKey>, mpk: MasterPublic },
    Mac(Key32),
}

/// Checks checkpoint signatures (the fog identity's public side, or the MAC key).
pub enum Checker {
    Ibs { mpk: MasterPublic, fog_id: String },
    Mac(Key32),
}

fn canonical(c: &Checkpoint) -> Vec<u8> {
    serde_json::to_vec(c).expect("checkpoint serializes")
}

fn mac(key: &Key32, c: &Checkpoint) -> Vec<u8> {
    blake3::keyed_hash(key.derive("audit checkpoint mac").as_bytes(), &canonical(c)).as_bytes().to_vec()
}

impl Signer {
    fn sign(&self, c: Checkpoint) -> SignedCheckpoint {
        match self {
            Signer::Ibs { key, .. } => SignedCheckpoint {
                signature: ibs::sign(key, &canonical(&c)).to_bytes().to_vec(),
                signer: format!("ibs:{}", key.id),
                checkpoint: c,
            },
            Signer::Mac(k) => SignedCheckpoint { signature: mac(k, &c), signer: "mac".into(), checkpoint: c },
        }
    }
}

impl Checker {
    /// The checkpoint in `raw` if its signature holds.
    pub fn open(&self, raw: &[u8]) -> Result<Checkpoint> {
        let bad = |why: &str| Error::Integrity(format!("audit checkpoint {why}"));
        let s: SignedCheckpoint = serde_json::from_slice(raw).map_err(|_| bad("is malformed"))?;
        let ok = match self {
            Checker::Ibs { mpk, fog_id } => {
                s.signer == format!("ibs:{fog_id}")
                    && Signature::from_bytes(&s.signature)
                        .is_some_and(|sig| ibs::verify(mpk, fog_id, &canonical(&s.checkpoint), &sig))
            }
            Checker::Mac(k) => s.signer == "mac" && s.signature == mac(k, &s.checkpoint),
        };
        if !ok {
            return Err(bad("signature does not verify (forged or altered)"));
        }
        Ok(s.checkpoint)
    }
}

/// How far the store holds the log (nothing before the first upload):
/// records before that point were synced, checked by an earlier mount or
/// written by that daemon, and are in the store, so `AuditLog::open` starts
/// checking there (`audit --verify` compares both copies in full).
pub fn uploaded_point(cache_dir: &Path) -> log::Resume {
    let uploaded = load_point(&state_path(cache_dir));
    let base = local_base(cache_dir);
    // Everything before the base is in the store (a trim, or `start_after`).
    if uploaded.seq < base.seq { base } else { uploaded }
}

/// Where the fog node's copy of the log begins: the frames before it are
/// in the store only (their disk space was given back, see `trim_local`;
/// file offsets stay as they were). Record `seq` is the last one given up
/// and `head` its hash, which pins the store's older part to this copy.
pub fn local_base(cache_dir: &Path) -> log::Resume {
    load_point(&base_path(cache_dir))
}

/// Make a fog node without a log of its own continue the store's chain
/// after record `after.seq` (its file starts empty, at offset 0): the base,
/// which `uploaded_point` also reports as uploaded.
pub fn start_after(cache_dir: &Path, after: &log::Resume) -> Result<()> {
    crate::durable_fs::create_dir_all(&cache_dir.join("audit"))?;
    save_point(&base_path(cache_dir), after)
}

fn state_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("audit").join("uploaded")
}

fn base_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("audit").join("base")
}

fn load_point(path: &Path) -> log::Resume {
    let u: Uploaded = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let head = u.head.as_deref().and_then(|h| hex::decode(h).ok()).and_then(|h| h.try_into().ok());
    log::Resume { offset: u.offset, seq: u.seq, head }
}

/// Replace the point file at `path` atomically and durably.
fn save_point(path: &Path, p: &log::Resume) -> Result<()> {
    let u = Uploaded { seq: p.seq, offset: p.offset, head: p.head.map(hex::encode) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&u).expect("state serializes"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        crate::durable_fs::sync_dir(dir)?;
    }
    Ok(())
}

/// The JSON of a point file (`audit/uploaded`, `audit/base`).
#[derive(Serialize, Deserialize, Default, Clone)]
struct Uploaded {
    /// Last record in the store, and where the next frame starts in the file.
    seq: u64,
    offset: u64,
    /// Hash of record `seq` (hex; absent in state files written before it was kept).
    #[serde(default)]
    head: Option<String>,
}

struct State {
    stop: bool,
}

/// Copies new records to the store every couple of seconds.
pub struct Uploader {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Inner {
    cache_dir: PathBuf,
    log_path: PathBuf,
    state_path: PathBuf,
    /// Bytes of uploaded records the fog node keeps on its own disk.
    keep_local: u64,
    backend: Arc<Backend>,
    signer: Signer,
    repo_id: String,
    log: Arc<AuditLog>,
    state: Mutex<State>,
    wake: Condvar,
    /// Serializes uploads (the thread and a final flush).
    busy: Mutex<()>,
}

impl Uploader {
    pub fn start(
        cache_dir: &Path,
        log: Arc<AuditLog>,
        backend: Arc<Backend>,
        signer: Signer,
        repo_id: &str,
        keep_local: u64,
    ) -> Result<Self> {
        let inner = Arc::new(Inner {
            cache_dir: cache_dir.to_path_buf(),
            log_path: log::log_path(cache_dir),
            state_path: state_path(cache_dir),
            keep_local,
            backend,
            signer,
            repo_id: repo_id.to_string(),
            log,
            state: Mutex::new(State { stop: false }),
            wake: Condvar::new(),
            busy: Mutex::new(()),
        });
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new().name("fogvault-audit".into()).spawn(move || {
            loop {
                {
                    let mut st = worker.state.lock();
                    if st.stop {
                        return;
                    }
                    worker.wake.wait_for(&mut st, TICK);
                    if st.stop {
                        return;
                    }
                }
                if let Err(e) = worker.upload() {
                    tracing::warn!(error = %e, "audit log upload failed; will retry");
                }
            }
        })?;
        Ok(Uploader { inner, thread: Mutex::new(Some(thread)) })
    }

    /// Upload everything recorded so far and stop (clean unmount).
    pub fn shutdown(&self) -> Result<()> {
        self.inner.state.lock().stop = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        self.inner.upload()
    }
}

impl Inner {
    fn upload(&self) -> Result<()> {
        let _one = self.busy.lock();
        // Only what this sync made durable: a segment in the store must never
        // hold a record that a machine crash could still take from the file.
        let end = self.log.sync()?.offset;
        let mut done = uploaded_point(&self.cache_dir);
        // Only the part after what is already in the store.
        if end < done.offset {
            return Err(Error::Integrity("the audit log is shorter than what was uploaded".into()));
        }
        let file = std::fs::File::open(&self.log_path)?;
        let mut bytes = vec![0; (end - done.offset) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, done.offset)?;
        let new = bytes.as_slice();
        let (frames, torn) = log::split_frames(new);
        if frames.is_empty() {
            return self.trim_or_warn(&done);
        }
        let first = done.seq + 1;
        let last = done.seq + frames.len() as u64;
        let complete = &new[..new.len() - torn];
        let head = log::hash(frames.last().expect("frames is not empty"));
        self.put_segment(first, complete)?;
        let cp = Checkpoint {
            repo_id: self.repo_id.clone(),
            first,
            last,
            head: hex::encode(head),
            time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        let signed = serde_json::to_vec(&self.signer.sign(cp)).expect("checkpoint serializes");
        self.backend.put(&checkpoint_name(last), Bytes::from(signed))?;
        done.seq = last;
        done.offset += complete.len() as u64;
        done.head = Some(head);
        save_point(&self.state_path, &done)?;
        self.trim_or_warn(&done)
    }

    /// Store `frames` (records from `first` on) as segment `first`. An
    /// existing segment of that name is replaced only by one that extends
    /// it (a crash between an upload and its state file, or a trim merging
    /// segments): never by another chain's records, e.g. those of a node
    /// that lost its audit state and started again at record 1.
    fn put_segment(&self, first: u64, frames: &[u8]) -> Result<()> {
        let name = segment_name(first);
        // A read, not a conditional put: some S3 servers ignore If-None-Match.
        let existing = self.backend.get(&name)?.unwrap_or_default();
        if !frames.starts_with(&existing) {
            return Err(Error::Integrity(format!(
                "the store's audit segment {name} holds other records than this fog node's log \
                 (another node's trail, or this node lost its audit state); not replacing it: \
                 run `fogvault audit --verify`"
            )));
        }
        self.backend.put(&name, Bytes::copy_from_slice(frames))
    }

    fn trim_or_warn(&self, done: &log::Resume) -> Result<()> {
        if let Err(e) = self.trim_local(done) {
            tracing::warn!(error = %e, "cannot give back the disk space of uploaded audit records");
        }
        Ok(())
    }

    /// Give back the disk space of uploaded records older than the newest
    /// `keep_local` bytes, in steps of at least an eighth of that. The part
    /// given back ends where a store segment ends, and first becomes one
    /// segment in the store: written under the name of its first small
    /// segment (readers skip the others as shorter copies), then the others
    /// and every checkpoint inside the range but its last are deleted. Then
    /// the new base is saved and a hole punched below it (offsets stay). A
    /// crash anywhere in between leaves a readable trail; the next trim
    /// redoes the step.
    fn trim_local(&self, done: &log::Resume) -> Result<()> {
        let base = local_base(&self.cache_dir);
        let upto = done.offset.saturating_sub(self.keep_local);
        if upto < base.offset + (self.keep_local / 8).max(64 << 10) {
            return Ok(());
        }
        // Bounded steps (memory, one PUT per merged segment); the next
        // upload tick takes the next one.
        let upto = upto.min(base.offset + MAX_TRIM_STEP);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&self.log_path)?;
        let mut bytes = vec![0; (upto - base.offset) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, base.offset)?;
        let (frames, _) = log::split_frames(&bytes);
        let first = base.seq + 1;
        // Store segments that start inside what may be given up (or right after it).
        let starts: Vec<u64> = self
            .backend
            .list(SEGMENT_PREFIX)?
            .iter()
            .filter_map(|(name, _)| parse_seq(name, SEGMENT_PREFIX))
            .filter(|&f| f > first && f <= first + frames.len() as u64)
            .collect();
        let Some(&next) = starts.iter().max() else { return Ok(()) };
        let frames = &frames[..(next - first) as usize];
        let last = next - 1;
        let given_up: u64 = frames.iter().map(|f| 4 + f.len() as u64).sum();
        self.put_segment(first, &bytes[..given_up as usize])?;
        for f in starts.iter().filter(|&&f| f < next) {
            self.backend.delete(&segment_name(*f))?;
        }
        for (name, _) in self.backend.list(CHECKPOINT_PREFIX)? {
            if parse_seq(&name, CHECKPOINT_PREFIX).is_some_and(|l| l >= first && l < last) {
                self.backend.delete(&name)?;
            }
        }
        let new = log::Resume {
            offset: base.offset + given_up,
            seq: last,
            head: Some(log::hash(frames.last().expect("at least one frame: next > first"))),
        };
        save_point(&base_path(&self.cache_dir), &new)?;
        // Whole pages below the base only: the page holding the base's first
        // frame (and every later one, mapped for appends) is never touched.
        let hole = new.offset & !4095;
        if hole > 0 {
            use nix::fcntl::{FallocateFlags, fallocate};
            let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            fallocate(&file, punch, 0, hole as i64).map_err(|e| Error::from_io(e.into()))?;
        }
        tracing::info!(records = frames.len(), "gave back the disk space of uploaded audit records");
        Ok(())
    }
}

impl Signer {
    /// The checker that verifies this signer's checkpoints.
    pub fn checker(&self) -> Checker {
        match self {
            Signer::Ibs { key, mpk } => Checker::Ibs { mpk: *mpk, fog_id: key.id.clone() },
            Signer::Mac(k) => Checker::Mac(k.clone()),
        }
    }
}
