//! Metadata sync: ships the local journal of committed transactions to the
//! cloud's metadata journal, compacts it into snapshots, and keeps the
//! cloud's root current, so a lost fog node can be rebuilt from the cloud
//! alone (`recover`).
//!
//! Ordering (docs/ARCHITECTURE.md): a journal object goes up only after
//! every pack its chunk-index changes point into is in the store; the root
//! goes up after the journal object; the local journal entries are dropped
//! (with the new root remembered) only after the root is written. So the
//! cloud never names data it does not hold, and a crash at any step leaves
//! a state the next start continues from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::chunks::ChunkIo;
use crate::chunk_store::{Backend, PackId};
use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::metadata::cloud::{self, JournalObject, MetaKeys, Root, SnapshotRef};

/// How often the sync thread looks for new commits.
const TICK: Duration = Duration::from_millis(500);
/// Journal bytes per object (a busy second of untar fits comfortably).
const OBJECT_BYTES: usize = 4 << 20;
/// A commit waits at most this long for the small open pack it references
/// to fill before that pack is sealed early so the commit can go up.
const SEAL_AFTER: Duration = Duration::from_secs(3);
/// Journal objects between compacted snapshots, by default.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 256;

/// What one `upload_next` did.
enum Upload {
    /// Nothing was ready.
    Nothing,
    /// An object went up that holds everything that was ready.
    Partial,
    /// An object went up at its size limit: more is waiting.
    Full,
}

struct State {
    root: Root,
    /// When the oldest not-yet-uploaded commit was first seen.
    waiting_since: Option<Instant>,
    stop: bool,
    /// Another writer owns the journal: stop uploading, say so loudly.
    conflict: Option<String>,
}

struct Inner {
    meta: Arc<Metadata>,
    chunks: Arc<ChunkIo>,
    backend: Arc<Backend>,
    keys: MetaKeys,
    snapshot_every: u64,
    state: Mutex<State>,
    wake: Condvar,
}

pub struct MetaSync {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The root the cloud holds now, if any (authenticated).
pub fn read_root(backend: &Backend, keys: &MetaKeys) -> Result<Option<Root>> {
    backend.get_small(cloud::ROOT_OBJECT)?.map(|b| keys.open_root(&b)).transpose()
}

/// Check the cloud's root against what this fog node last wrote: refuse a
/// rolled-back store, and a store another fog node has written since.
/// Returns the root to continue from.
pub fn check_root(meta: &Metadata, backend: &Backend, keys: &MetaKeys) -> Result<Root> {
    let local = meta.cloud_root()?;
    let remote = read_root(backend, keys)?;
    let (commit_seq, _) = meta.journal_position()?;
    match (local, remote) {
        (None, None) => Ok(Root::default()),
        (Some(l), None) if l.generation > 0 => Err(Error::Integrity(format!(
            "the store has lost its metadata root (this fog node wrote generation {}): \
             the store was rolled back or emptied; refusing to continue",
            l.generation
        ))),
        (Some(_), None) => Ok(Root::default()),
        (local, Some(r)) => {
            if let Some(l) = &local
                && r.generation < l.generation
            {
                return Err(Error::Integrity(format!(
                    "the store's metadata root is at generation {} but this fog node wrote generation {}: \
                     the store was rolled back; refusing to continue",
                    r.generation, l.generation
                )));
            }
            // A node rebuilt by `recover` holds the journal objects past the
            // root's head that the lost node uploaded before it could put the
            // root naming them: continue the chain from there.
            if let Some(l) = &local
                && l.generation == r.generation
                && l.snapshot == r.snapshot
                && l.head_seq > r.head_seq
                && l.head_seq <= commit_seq
            {
                return Ok(l.clone());
            }
            if r.head_seq > commit_seq {
                return Err(Error::Repo(format!(
                    "the store's metadata journal (transaction {}) is ahead of this fog node's index \
                     (transaction {commit_seq}): another fog node has written this repository; \
                     rebuild this node's state with `fogvault recover`",
                    r.head_seq
                )));
            }
            Ok(r)
        }
    }
}

impl MetaSync {
    pub fn start(
        meta: Arc<Metadata>,
        chunks: Arc<ChunkIo>,
        backend: Arc<Backend>,
        keys: MetaKeys,
        root: Root,
        snapshot_every: u64,
    ) -> Result<Self> {
        let inner = Arc::new(Inner {
            meta,
            chunks,
            backend,
            keys,
            snapshot_every: snapshot_every.max(1),
            state: Mutex::new(State { root, waiting_since: None, stop: false, conflict: None }),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new().name("fogvault-metasync".into()).spawn(move || worker.run())?;
        Ok(MetaSync { inner, thread: Mutex::new(Some(thread)) })
    }

    /// Upload every committed transaction (all packs must be uploaded
    /// already: clean unmount), then stop the sync thread.
    pub fn shutdown(&self) -> Result<()> {
        {
            let mut st = self.inner.state.lock();
            st.stop = true;
        }
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        let r = self.inner.drain(true);
        if let Some(c) = &self.inner.state.lock().conflict {
            return Err(Error::Repo(c.clone()));
        }
        r
    }
}

impl Drop for MetaSync {
    fn drop(&mut self) {
        self.inner.state.lock().stop = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn run(self: Arc<Self>) {
        let mut backoff = TICK;
        loop {
            {
                let mut st = self.state.lock();
                if st.stop {
                    return;
                }
                self.wake.wait_for(&mut st, backoff);
                if st.stop || st.conflict.is_some() {
                    return;
                }
            }
            match self.drain(false) {
                Ok(()) => backoff = TICK,
                Err(e) => {
                    tracing::warn!(error = %e, "metadata journal upload failed; will retry");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Upload journal objects; `force` (unmount) uploads everything and
    /// seals the open pack at once instead of waiting for it to fill.
    /// Otherwise one object per tick, more only while a backlog fills whole
    /// objects: an object costs about ten syncs (LMDB, the object, the root)
    /// and an LMDB write transaction, which a busy workload's own commits
    /// would otherwise queue behind many times a second.
    fn drain(&self, force: bool) -> Result<()> {
        loop {
            if self.state.lock().conflict.is_some() {
                return Ok(());
            }
            match self.upload_next(force)? {
                Upload::Full => {}
                Upload::Partial if force => {}
                Upload::Partial | Upload::Nothing => return Ok(()),
            }
        }
    }

    /// Upload the next journal object if its packs are in the store.
    fn upload_next(&self, force: bool) -> Result<Upload> {
        let root = self.state.lock().root.clone();
        let batch = self.meta.journal_after(root.head_seq, OBJECT_BYTES)?;
        if batch.is_empty() {
            self.state.lock().waiting_since = None;
            return Ok(Upload::Nothing);
        }
        let batch_bytes: usize = batch.iter().map(|(_, b)| b.len()).sum();
        // The longest prefix whose packs are all in the store.
        let store = self.chunks.store();
        let mut ready = 0;
        let mut blocked_on = Vec::new();
        for (_, bytes) in &batch {
            let packs: Vec<PackId> = cloud::packs_of_entry(bytes)?;
            if store.any_staged(&packs) {
                blocked_on = packs;
                break;
            }
            ready += 1;
        }
        if ready == 0 {
            let since = *self.state.lock().waiting_since.get_or_insert_with(Instant::now);
            if force || since.elapsed() >= SEAL_AFTER {
                store.seal_open_pack()?;
                if force {
                    store.flush_uploads()?;
                    return Ok(if store.any_staged(&blocked_on) { Upload::Nothing } else { Upload::Partial });
                }
            }
            return Ok(Upload::Nothing);
        }
        let full = ready == batch.len() && batch_bytes >= OBJECT_BYTES;
        let mut entries = batch;
        entries.truncate(ready);
        let (first, last) = (entries[0].0, entries[ready - 1].0);
        if first != root.head_seq + 1 {
            return Err(Error::Metadata(format!("the local metadata journal skips from {} to {first}", root.head_seq)));
        }
        let obj = JournalObject { first, last, prev: root.head_hash, entries };
        // The cloud must never hold a transaction a machine crash could
        // still undo here (LMDB defers its meta-page flush).
        self.meta.sync_committed()?;
        let name = cloud::journal_name(first);
        let sealed = self.keys.seal_journal(&obj);
        let (last, hash) = if self.backend.put_if_absent(&name, Bytes::from(sealed.clone()))? {
            (last, cloud::hash(&sealed))
        } else {
            self.adopt_existing(&name, &obj)?
        };
        let next = Root {
            generation: root.generation + 1,
            head_seq: last,
            head_hash: hash,
            snapshot: root.snapshot.clone(),
            objects_since_snapshot: root.objects_since_snapshot + 1,
        };
        self.commit_root(next)?;
        self.state.lock().waiting_since = None;
        if self.state.lock().root.objects_since_snapshot >= self.snapshot_every
            && let Err(e) = self.snapshot()
        {
            tracing::warn!(error = %e, "metadata snapshot failed; will retry later");
        }
        Ok(if full { Upload::Full } else { Upload::Partial })
    }

    /// The object name is taken: either this node uploaded it before a crash
    /// (same transactions: continue after it), or another fog node writes
    /// this repository (stop: never overwrite its journal).
    fn adopt_existing(&self, name: &str, ours: &JournalObject) -> Result<(u64, cloud::Hash)> {
        let raw = self
            .backend
            .get(name)?
            .ok_or_else(|| Error::Store(format!("metadata object {name} vanished while being written")))?;
        let theirs = self.keys.open_journal(name, &raw)?;
        let local = self.meta.journal_after(ours.first - 1, usize::MAX)?;
        let same = theirs.prev == ours.prev
            && theirs.entries.iter().all(|(seq, bytes)| local.iter().any(|(s, b)| s == seq && b == bytes));
        if !same {
            let msg = format!(
                "metadata journal object {name} was written by another fog node: two fog nodes must not \
                 mount one repository read-write; this node stopped uploading metadata (its index is intact)"
            );
            tracing::error!("{msg}");
            self.state.lock().conflict = Some(msg.clone());
            return Err(Error::Repo(msg));
        }
        Ok((theirs.last, cloud::hash(&raw)))
    }

    fn commit_root(&self, next: Root) -> Result<()> {
        self.backend.put(cloud::ROOT_OBJECT, Bytes::from(self.keys.seal_root(&next)))?;
        self.meta.journal_uploaded(next.head_seq, &next)?;
        self.state.lock().root = next;
        Ok(())
    }

    /// Write a compacted snapshot of the whole state at the journal's head,
    /// point the root at it, then delete the journal objects and older
    /// snapshots it replaces.
    fn snapshot(&self) -> Result<()> {
        let root = self.state.lock().root.clone();
        let mut parts = Vec::new();
        let mut buf = Vec::new();
        let upload = |buf: &mut Vec<u8>, parts: &mut Vec<cloud::Hash>, seq: u64| -> Result<()> {
            let name = cloud::snapshot_part_name(seq, parts.len());
            let sealed = self.keys.seal_snapshot_part(&name, buf);
            self.backend.put(&name, Bytes::from(sealed.clone()))?;
            parts.push(cloud::hash(&sealed));
            buf.clear();
            Ok(())
        };
        let seq = root.head_seq;
        let taken = self.meta.snapshot(|t, k, v| {
            cloud::encode_record(&mut buf, t, k, v);
            if buf.len() >= cloud::SNAPSHOT_PART_BYTES {
                upload(&mut buf, &mut parts, seq)?;
            }
            Ok(())
        })?;
        match taken {
            Some(s) if s == seq => {}
            // Commits arrived meanwhile (or the view moved): try after the next object.
            _ => return Ok(()),
        }
        upload(&mut buf, &mut parts, seq)?;
        let next = Root {
            generation: root.generation + 1,
            head_seq: root.head_seq,
            head_hash: root.head_hash,
            snapshot: Some(SnapshotRef { seq, chain: root.head_hash, parts }),
            objects_since_snapshot: 0,
        };
        self.commit_root(next)?;
        // Replaced objects: a failure here only leaves garbage the next snapshot removes.
        for (name, _) in self.backend.list(cloud::JOURNAL_PREFIX)? {
            if cloud::parse_journal_name(&name).is_some_and(|first| first <= seq) {
                self.backend.delete(&name)?;
            }
        }
        let keep = cloud::snapshot_dir(seq);
        for (name, _) in self.backend.list(cloud::SNAPSHOT_PREFIX)? {
            if !name.starts_with(&keep) {
                self.backend.delete(&name)?;
            }
        }
        Ok(())
    }
}
