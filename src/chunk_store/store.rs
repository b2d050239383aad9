//! The chunk store: appends chunk envelopes to a staging pack in the fog
//! node's cache directory (the local upload journal), seals full packs and
//! uploads them in the background.
//!
//! Write ordering (docs/ARCHITECTURE.md): envelope appended to
//! `staging/<pack>.data` and its entry to `staging/<pack>.idx` → made durable
//! either by `sync()` (fdatasync of the staged packs written since their last
//! sync; before every LMDB commit) or by the vault's intent log, which carries
//! the bytes `take_unlogged` reads back → only then may metadata that
//! references the chunk be durable. An uploaded pack is fsynced in the store
//! before its staging files are deleted, so a chunk is always durable in at
//! least one place.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use super::backend::Backend;
use super::file_read;
use super::pack::{PackEntry, PackId, encode_header_and_trailer};
use super::samples;
use super::span::plan_reads;
use crate::crypto::{ChunkId, Key32};
use crate::error::{Error, Result};

/// Packs are sealed at about 16 MiB: big enough for efficient uploads, small
/// enough to bound memory and the dead space a repack has to move.
pub const TARGET_PACK_SIZE: u64 = 16 * 1024 * 1024;
/// Sealed packs waiting for upload before writers are made to wait (while
/// the store is reachable: back-pressure keeps the journal small).
const MAX_QUEUED: usize = 6;
/// Packs uploaded at once to a remote store.
const REMOTE_UPLOADERS: usize = 3;
/// How long a clean unmount keeps retrying uploads the store refuses before
/// it stops and leaves them in the journal (replayed at the next mount).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Default bound of the upload journal while the store is unreachable.
pub const DEFAULT_JOURNAL_LIMIT: u64 = 1 << 30;
const IDX_RECORD: usize = 40;
/// Free space kept back on the journal's and the local store's filesystems:
/// room to upload the open pack and for the metadata index to grow, so that
/// deleting files and committing metadata still work when data writes get ENOSPC.
pub const SPACE_RESERVE: u64 = 2 * TARGET_PACK_SIZE + 8 * 1024 * 1024;

/// Entries the metadata index holds for the given staged packs.
pub type IndexedEntries<'a> = dyn Fn(&[PackId]) -> Result<Vec<(PackId, PackEntry)>> + 'a;

/// Where a chunk's envelope lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub pack: PackId,
    pub offset: u32,
    pub len: u32,
}

struct OpenPack {
    id: PackId,
    data: Arc<File>,
    idx: File,
    len: u64,
    entries: Vec<PackEntry>,
    /// Sample MACs of the bytes appended so far (taken while they are in memory).
    macs: samples::MacStream,
}

struct UploadJob {
    id: PackId,
    entries: Vec<PackEntry>,
    /// The MACs of the pack's data; `None` for a pack found in staging after
    /// a restart (its MACs are then read from the finished object).
    macs: Option<samples::MacStream>,
}

impl UploadJob {
    /// Where the pack's envelopes end in its staging file (bytes past it
    /// are a torn append, not the pack's).
    fn data_end(&self) -> u64 {
        self.entries.iter().map(|e| e.offset as u64 + e.len as u64).max().unwrap_or(0)
    }
}

#[derive(Default)]
struct State {
    current: Option<OpenPack>,
    /// Packs whose bytes are (still) only in staging: readable from there.
    staged: HashMap<PackId, Arc<File>>,
    queued: usize,
    /// Set while uploads fail: writers then fill the journal up to its limit
    /// instead of waiting, and get `ENOSPC` beyond it.
    upload_error: Option<String>,
    upload_error_nospace: bool,
    /// Data bytes of every staged pack (the journal's size).
    staged_bytes: u64,
    /// The store is being closed while uploads fail: the worker stops after
    /// its next failed attempt and leaves the rest in the journal.
    give_up: bool,
    /// Appends so far: orders appends against syncs.
    appends: u64,
    /// Staged packs written since their last fdatasync, with the number of
    /// their newest append (a sync only clears what it covered).
    dirty: HashMap<PackId, u64>,
    /// Envelopes appended since the last `sync` or `take_unlogged`: what an
    /// intent-log record must carry to make them durable without a sync.
    unlogged: Vec<Appended>,
    unlogged_bytes: u64,
    /// An fdatasync of a staged pack failed. Linux marks the pages clean
    /// after a failed writeback and a second fsync reports success, so the
    /// failure is kept: every later sync fails and no pack is uploaded until
    /// the vault is remounted (the intent log is then replayed).
    sync_failed: Option<String>,
}

/// One envelope's place in a staged pack, and the append that put it there.
#[derive(Clone, Copy)]
struct Appended {
    seq: u64,
    pack: PackId,
    offset: u32,
    len: u32,
}

/// Bytes of a staged pack as an intent-log record carries them: written back
/// in place by `restore_staged` after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedBytes {
    pub pack: PackId,
    pub offset: u32,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

struct Shared {
    backend: Arc<Backend>,
    pack_key: Key32,
    /// Keys the proof-of-storage sample MACs (`samples`).
    sample_key: Key32,
    dir: PathBuf,
    journal_limit: u64,
    state: Mutex<State>,
    changed: Condvar,
}

impl State {
    fn check_sync_failed(&self) -> Result<()> {
        match &self.sync_failed {
            None => Ok(()),
            Some(cause) => Err(Error::Io(io::Error::other(format!(
                "a staged pack could not be made durable on the cache disk ({cause}); writes fail until the vault is remounted"
            )))),
        }
    }
}

impl Shared {
    /// Record a failed fdatasync of a staged pack (see `State::sync_failed`)
    /// and return the error for the caller.
    fn sync_failed(&self, e: io::Error) -> Error {
        let mut st = self.state.lock();
        if st.sync_failed.is_none() {
            tracing::error!(error = %e, "fdatasync of a staged pack failed; writes fail until the vault is remounted");
            st.sync_failed = Some(e.to_string());
        }
        Error::from_io(e)
    }
}

pub struct ChunkStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<UploadJob>>>,
    uploaders: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn data_path(dir: &Path, id: &PackId) -> PathBuf {
    dir.join(format!("{}.data", id.hex()))
}
fn idx_path(dir: &Path, id: &PackId) -> PathBuf {
    dir.join(format!("{}.idx", id.hex()))
}

impl ChunkStore {
    /// Open the store and re-queue any packs left in staging by a crash.
    /// `indexed` returns the entries the metadata index holds for the given
    /// staged packs: the `.idx` side file is not synced (one fsync fewer per
    /// close), so the index is the authority for committed chunks.
    /// `journal_limit` bounds the journal while the store is unreachable.
    pub fn open(
        backend: Arc<Backend>,
        pack_key: Key32,
        staging_dir: PathBuf,
        journal_limit: u64,
        indexed: &IndexedEntries<'_>,
    ) -> Result<Self> {
        crate::durable_fs::create_dir_all(&staging_dir).map_err(Error::from_io)?;
        let shared = Arc::new(Shared {
            backend,
            sample_key: pack_key.derive("sample mac"),
            pack_key,
            dir: staging_dir,
            journal_limit,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel::<UploadJob>();
        // A remote store takes several packs at once (each PUT waits on the
        // network); a local one gains nothing from more than one.
        let workers = if shared.backend.local_root().is_some() { 1 } else { REMOTE_UPLOADERS };
        let rx = Arc::new(Mutex::new(rx));
        let mut uploaders = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (worker, rx) = (Arc::clone(&shared), Arc::clone(&rx));
            uploaders.push(
                std::thread::Builder::new().name("fogvault-upload".into()).spawn(move || uploader_loop(worker, &rx))?,
            );
        }
        let store = ChunkStore { shared, tx: Mutex::new(Some(tx)), uploaders: Mutex::new(uploaders) };
        store.recover_staging(indexed)?;
        Ok(store)
    }

    /// Packs left in staging by a crash: keep the entries whose bytes are
    /// fully present (a torn tail was never acknowledged), then upload.
    fn recover_staging(&self, indexed: &IndexedEntries<'_>) -> Result<()> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(&self.shared.dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".data")
                && let Some(id) = PackId::from_hex(hex)
            {
                found.push(id);
            } else if let Some(hex) = name.strip_suffix(".idx")
                && let Some(id) = PackId::from_hex(hex)
                && !data_path(&self.shared.dir, &id).exists()
            {
                // Crash between promoting a pack and removing its side file.
                let _ = std::fs::remove_file(idx_path(&self.shared.dir, &id));
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let mut known: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        for (pack, e) in indexed(&found)? {
            known.entry(pack).or_default().push(e);
        }
        for id in found {
            let data = File::open(data_path(&self.shared.dir, &id))?;
            let data_len = data.metadata()?.len();
            let raw = std::fs::read(idx_path(&self.shared.dir, &id)).unwrap_or_default();
            let mut entries: Vec<PackEntry> = raw
                .chunks_exact(IDX_RECORD)
                .map(|r| PackEntry {
                    id: ChunkId(r[..32].try_into().expect("32 bytes")),
                    offset: u32::from_le_bytes(r[32..36].try_into().expect("4 bytes")),
                    len: u32::from_le_bytes(r[36..40].try_into().expect("4 bytes")),
                })
                .collect();
            // A side-file entry the index does not know may lie in a range the
            // crash never wrote (a hole reads as zeros): keep it only if its
            // envelope's first bytes are there. Envelopes never start with 16 zeros.
            entries.retain(|e| {
                let mut head = [0u8; 16];
                let n = head.len().min(e.len as usize);
                data.read_exact_at(&mut head[..n], e.offset as u64).is_ok() && head[..n].iter().any(|&b| b != 0)
            });
            entries.extend(known.remove(&id).unwrap_or_default());
            entries.retain(|e| e.offset as u64 + e.len as u64 <= data_len);
            entries.sort_by_key(|e| e.offset);
            entries.dedup_by_key(|e| e.offset);
            tracing::info!(pack = %id.hex(), chunks = entries.len(), "re-queueing staged pack after restart");
            {
                let mut st = self.shared.state.lock();
                st.staged.insert(id, Arc::new(data));
                st.staged_bytes += data_len;
            }
            self.enqueue(UploadJob { id, entries, macs: None })?;
        }
        Ok(())
    }

    fn enqueue(&self, job: UploadJob) -> Result<()> {
        self.shared.state.lock().queued += 1;
        let tx = self.tx.lock();
        tx.as_ref()
            .ok_or_else(|| Error::Store("chunk store is shut down".into()))?
            .send(job)
            .map_err(|_| Error::Store("upload worker stopped".into()))
    }

    fn check_space(&self, need: u64) -> Result<()> {
        let avail = |p: &Path| nix::sys::statvfs::statvfs(p).map(|s| s.blocks_available() * s.fragment_size()).ok();
        let store_free = self.shared.backend.capacity().map(|(_, free)| free);
        for free in [avail(&self.shared.dir), store_free].into_iter().flatten() {
            if free < need + SPACE_RESERVE {
                return Err(Error::NoSpace);
            }
        }
        Ok(())
    }

    /// Append one envelope; returns where it lives. Not durable until `sync`.
    pub fn store_chunk(&self, id: ChunkId, envelope: &[u8]) -> Result<Location> {
        self.check_space(envelope.len() as u64)?;
        let mut st = self.shared.state.lock();
        // Back-pressure while the store takes uploads; while it does not, the
        // journal absorbs writes up to its limit (then ENOSPC, never loss).
        loop {
            if st.upload_error.is_some() {
                if st.upload_error_nospace || st.staged_bytes + envelope.len() as u64 > self.shared.journal_limit {
                    return Err(Error::NoSpace);
                }
                break;
            }
            if st.queued < MAX_QUEUED {
                break;
            }
            self.shared.changed.wait_for(&mut st, Duration::from_millis(200));
        }
        if st.current.is_none() {
            let pid = PackId::random();
            // Written at explicit offsets, not O_APPEND: bytes a failed append
            // left behind are overwritten by the next one, whatever the rollback did.
            let data =
                OpenOptions::new().create_new(true).write(true).read(true).open(data_path(&self.shared.dir, &pid))?;
            let idx = OpenOptions::new().create_new(true).write(true).open(idx_path(&self.shared.dir, &pid))?;
            // Make the files' existence durable: an intent-log record may
            // hold this pack's envelopes, and replay finds the pack by name.
            crate::durable_fs::sync_dir(&self.shared.dir).map_err(Error::from_io)?;
            let data = Arc::new(data);
            st.staged.insert(pid, Arc::clone(&data));
            let macs = samples::MacStream::new(&self.shared.sample_key, &pid);
            st.current = Some(OpenPack { id: pid, data, idx, len: 0, entries: Vec::new(), macs });
        }
        let cur = st.current.as_mut().expect("current pack exists");
        let offset = cur.len;
        let entry = PackEntry { id, offset: offset as u32, len: envelope.len() as u32 };
        let mut rec = [0u8; IDX_RECORD];
        rec[..32].copy_from_slice(&id.0);
        rec[32..36].copy_from_slice(&entry.offset.to_le_bytes());
        rec[36..40].copy_from_slice(&entry.len.to_le_bytes());
        let idx_at = (cur.entries.len() * IDX_RECORD) as u64;
        if let Err(e) = cur.data.write_all_at(envelope, offset).and_then(|_| cur.idx.write_all_at(&rec, idx_at)) {
            // Roll the files back to their last good length (best effort: the
            // next append writes at the same offsets anyway).
            let _ = cur.data.set_len(offset);
            let _ = cur.idx.set_len(idx_at);
            return Err(Error::from_io(e));
        }
        cur.len += envelope.len() as u64;
        cur.entries.push(entry);
        cur.macs.feed(envelope);
        let loc = Location { pack: cur.id, offset: entry.offset, len: entry.len };
        let full = cur.len >= TARGET_PACK_SIZE;
        st.appends += 1;
        let seq = st.appends;
        st.dirty.insert(loc.pack, seq);
        st.unlogged.push(Appended { seq, pack: loc.pack, offset: loc.offset, len: loc.len });
        st.unlogged_bytes += loc.len as u64;
        st.staged_bytes += envelope.len() as u64;
        if full {
            let full = st.current.take().expect("current pack exists");
            drop(st);
            self.enqueue(UploadJob { id: full.id, entries: full.entries, macs: Some(full.macs) })?;
        }
        Ok(loc)
    }

    /// Make every chunk stored so far durable: fdatasync of each staged pack
    /// written since its last sync (a clean file costs a device flush too).
    pub fn sync(&self) -> Result<()> {
        let todo: Vec<(PackId, u64, Arc<File>)> = {
            let mut st = self.shared.state.lock();
            st.check_sync_failed()?;
            let State { dirty, staged, .. } = &mut *st;
            // A pack no longer staged was uploaded, and is durable in the store.
            dirty.retain(|p, _| staged.contains_key(p));
            dirty.iter().map(|(p, seq)| (*p, *seq, Arc::clone(&staged[p]))).collect()
        };
        for (_, _, f) in &todo {
            f.sync_data().map_err(|e| self.shared.sync_failed(e))?;
        }
        let mut st = self.shared.state.lock();
        for (pack, seq, _) in &todo {
            if st.dirty.get(pack) == Some(seq) {
                st.dirty.remove(pack);
            }
        }
        let synced: HashMap<PackId, u64> = todo.iter().map(|(p, s, _)| (*p, *s)).collect();
        // Also drop envelopes of packs uploaded meanwhile (durable in the store).
        let State { unlogged, staged, .. } = &mut *st;
        unlogged.retain(|a| staged.contains_key(&a.pack) && synced.get(&a.pack).is_none_or(|s| a.seq > *s));
        st.unlogged_bytes = st.unlogged.iter().map(|a| a.len as u64).sum();
        Ok(())
    }

    /// The envelopes appended since the last `sync` or call, read back for
    /// an intent-log record, if they come to at most `max_bytes`; `None`
    /// (nothing taken) when there are more: a `sync` is cheaper then.
    /// They stay dirty, so the next `sync` still flushes their packs.
    pub fn take_unlogged(&self, max_bytes: u64) -> Result<Option<Vec<StagedBytes>>> {
        let (taken, files) = {
            let mut st = self.shared.state.lock();
            if st.unlogged_bytes > max_bytes {
                return Ok(None);
            }
            st.unlogged_bytes = 0;
            let taken = std::mem::take(&mut st.unlogged);
            let files: HashMap<PackId, Arc<File>> =
                taken.iter().filter_map(|a| st.staged.get(&a.pack).map(|f| (a.pack, Arc::clone(f)))).collect();
            (taken, files)
        };
        let mut out = Vec::with_capacity(taken.len());
        for a in &taken {
            // Not staged any more: uploaded, so durable in the store already.
            let Some(f) = files.get(&a.pack) else { continue };
            let mut bytes = vec![0u8; a.len as usize];
            if let Err(e) = f.read_exact_at(&mut bytes, a.offset as u64) {
                // Put them back: the caller's next record (or sync) needs them.
                let mut st = self.shared.state.lock();
                st.unlogged_bytes += taken.iter().map(|a| a.len as u64).sum::<u64>();
                st.unlogged.splice(0..0, taken);
                return Err(Error::from_io(e));
            }
            out.push(StagedBytes { pack: a.pack, offset: a.offset, bytes });
        }
        Ok(Some(out))
    }

    /// Is any of `packs` still only in the local journal (not in the store)?
    pub fn any_staged(&self, packs: &[PackId]) -> bool {
        let st = self.shared.state.lock();
        packs.iter().any(|p| st.staged.contains_key(p))
    }

    /// Seal the open pack, even if small, and queue it for upload (metadata
    /// that references it is waiting to reach the cloud).
    pub fn seal_open_pack(&self) -> Result<()> {
        let cur = self.shared.state.lock().current.take();
        if let Some(p) = cur {
            if p.entries.is_empty() {
                self.shared.state.lock().staged.remove(&p.id);
                let _ = std::fs::remove_file(data_path(&self.shared.dir, &p.id));
                let _ = std::fs::remove_file(idx_path(&self.shared.dir, &p.id));
            } else {
                self.enqueue(UploadJob { id: p.id, entries: p.entries, macs: Some(p.macs) })?;
            }
        }
        Ok(())
    }

    /// Seal the open pack (even if small) and wait until every pack is in the store.
    pub fn flush_uploads(&self) -> Result<()> {
        self.seal_open_pack()?;
        let mut st = self.shared.state.lock();
        while st.queued > 0 {
            if let Some(e) = &st.upload_error {
                return Err(Error::Store(format!("uploads are failing: {e}")));
            }
            self.shared.changed.wait_for(&mut st, Duration::from_millis(200));
        }
        Ok(())
    }

    /// Read one envelope, from staging if not yet uploaded, else a ranged GET.
    pub fn read_envelope(&self, loc: &Location) -> Result<Vec<u8>> {
        self.with_range(&loc.pack, loc.offset as u64, loc.len as usize, |r| r.map(<[u8]>::to_vec))
    }

    /// `f` gets bytes `start..start+len` of a pack: from staging if not yet
    /// uploaded, from the file of a local-directory store, else one ranged
    /// GET. Local reads land in a per-thread buffer (`file_read`), so `f`
    /// must not read from the store again.
    fn with_range<R>(&self, pack: &PackId, start: u64, len: usize, f: impl FnOnce(Result<&[u8]>) -> R) -> R {
        let staged = self.shared.state.lock().staged.get(pack).cloned();
        if let Some(file) = staged {
            return file_read::read_file(&file, start, len, |r| {
                f(r.map_err(|_| Error::Integrity(format!("staged pack {} is truncated", pack.hex()))))
            });
        }
        let name = pack.object_name();
        if let Some(path) = self.shared.backend.local_object_path(&name) {
            return file_read::read_path(&path, start, len, |r| {
                f(r.map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof => {
                        Error::Integrity(format!("object {name} is missing or shorter than expected"))
                    }
                    _ => Error::from_io(e),
                }))
            });
        }
        match self.shared.backend.get_range(&name, start, len as u64) {
            Ok(bytes) => f(Ok(&bytes)),
            Err(e) => f(Err(e)),
        }
    }

    /// Read the envelopes at `locs` with as few reads as possible: neighbours
    /// in one pack share one ranged read (see `span`). `each(i, envelope)` is
    /// called once per location, as soon as its span has arrived; the bytes
    /// are unauthenticated, the caller opens each envelope itself.
    pub fn read_envelopes(&self, locs: &[Location], mut each: impl FnMut(usize, Result<&[u8]>)) {
        for span in plan_reads(locs) {
            tracing::debug!(pack = %span.pack.hex(), start = span.start, bytes = span.bytes(), envelopes = span.members.len(), "read");
            let failed = self.with_range(&span.pack, span.start, span.bytes() as usize, |r| match r {
                Ok(bytes) => {
                    for &i in &span.members {
                        each(i, Ok(span.envelope(bytes, &locs[i])));
                    }
                    None
                }
                Err(e) => Some(e),
            });
            match failed {
                None => {}
                // Missing or short: read one by one so every envelope gets
                // its own verdict (a mirror may hold some of them elsewhere).
                Some(Error::Integrity(_)) if span.members.len() > 1 => {
                    for &i in &span.members {
                        each(i, self.read_envelope(&locs[i]).as_deref().map_err(clone_err));
                    }
                }
                Some(e) => {
                    for &i in &span.members {
                        each(i, Err(clone_err(&e)));
                    }
                }
            }
        }
    }

    /// Delete an uploaded pack and its sample MACs (garbage collection).
    pub fn delete_pack(&self, id: &PackId) -> Result<()> {
        self.shared.backend.delete(&id.object_name())?;
        let dir = self.shared.dir.with_file_name("samples");
        let _ = std::fs::remove_file(samples::samples_path(&dir, id));
        Ok(())
    }

    pub fn backend(&self) -> &Backend {
        &self.shared.backend
    }

    /// Upload everything and stop the worker (clean unmount). While the
    /// store refuses uploads this gives up after `SHUTDOWN_GRACE`: the packs
    /// stay in the journal, which the next mount replays, instead of the
    /// daemon never exiting.
    pub fn shutdown(&self) -> Result<()> {
        self.seal_open_pack()?;
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut r = Ok(());
        {
            let mut st = self.shared.state.lock();
            while st.queued > 0 {
                if let Some(e) = &st.upload_error
                    && Instant::now() >= deadline
                {
                    r = Err(Error::Store(format!(
                        "uploads are failing: {e}; {} pack(s) stay in the local journal",
                        st.queued
                    )));
                    break;
                }
                self.shared.changed.wait_for(&mut st, Duration::from_millis(200));
            }
        }
        self.stop_uploader();
        r
    }

    /// Stop the upload worker: it finishes the queue while uploads succeed,
    /// and stops at the first failure (the rest stays in the journal).
    fn stop_uploader(&self) {
        self.shared.state.lock().give_up = true;
        self.shared.changed.notify_all();
        self.tx.lock().take();
        for h in self.uploaders.lock().drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        self.stop_uploader();
    }
}

fn upload_one(shared: &Shared, job: &UploadJob) -> Result<()> {
    shared.state.lock().check_sync_failed()?;
    let tail = encode_header_and_trailer(&shared.pack_key, &job.id, &job.entries);
    let staged = data_path(&shared.dir, &job.id);
    let name = job.id.object_name();
    let data_end = job.data_end();
    if let Some(dest) = shared.backend.local_object_path(&name)
        && same_filesystem(&shared.dir, shared.backend.local_root().unwrap_or(&shared.dir))
    {
        // Local store on the same filesystem: the staging file already holds
        // the pack's bytes, so finish it in place and rename it into the
        // store instead of writing every byte a second time.
        let fresh = match finish_in_place(&staged, &dest, data_end, &tail, &|e| shared.sync_failed(e)) {
            // The cache and the store are one file system reached through
            // different mounts (a bind mount): no rename, upload instead.
            Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EXDEV) => return upload_copy(shared, job, &tail),
            r => r?,
        };
        // The pack's pages are clean now and nobody reads them through the
        // page cache (large reads bypass it): hand them back at once, so
        // that the next pack is written into recently used memory rather
        // than into pages the hypervisor has to fault in again.
        if let Ok(f) = File::open(&dest) {
            let _ = nix::fcntl::posix_fadvise(&f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        }
        // A retry after the rename finds the object with an earlier attempt's
        // header (sealed under another nonce): take its MACs from the file.
        let macs = match finish_macs(job, &tail).filter(|_| fresh) {
            Some(macs) => Ok(macs),
            // Streamed: a pack-sized buffer would cost a page fault per 4 KiB.
            None => File::open(&dest).and_then(|mut f| samples::file_macs(&shared.sample_key, &job.id, &mut f)),
        };
        keep_samples(shared, &job.id, macs);
        return Ok(());
    }
    upload_copy(shared, job, &tail)
}

/// Upload a staged pack by writing its bytes to the store (a remote store,
/// or a local one on another file system).
fn upload_copy(shared: &Shared, job: &UploadJob, tail: &[u8]) -> Result<()> {
    let name = job.id.object_name();
    let data_end = job.data_end();
    let mut obj = std::fs::read(data_path(&shared.dir, &job.id))?;
    // A torn tail past the last envelope (a failed append) is not the pack's.
    obj.truncate(data_end as usize);
    obj.extend_from_slice(tail);
    let obj = Bytes::from(obj);
    shared.backend.put(&name, obj.clone())?;
    let macs = finish_macs(job, tail).unwrap_or_else(|| samples::object_macs(&shared.sample_key, &job.id, &obj));
    keep_samples(shared, &job.id, Ok(macs));
    Ok(())
}

/// Finish a staged pack in place (`data_end` bytes of envelopes, then `tail`)
/// and rename it to `dest` in the local store, durably. Returns false when
/// an earlier attempt got as far as the rename (its directory fsync failed):
/// the staging file is gone and `dest` is the whole pack, so only the fsync
/// is repeated rather than retrying a rename that can never succeed.
/// `sync_failed` turns a failed fdatasync into the error to return.
fn finish_in_place(
    staged: &Path,
    dest: &Path,
    data_end: u64,
    tail: &[u8],
    sync_failed: &dyn Fn(io::Error) -> Error,
) -> Result<bool> {
    let parent = dest.parent().expect("object path has a parent");
    let renamed_before = matches!(std::fs::metadata(staged), Err(e) if e.kind() == io::ErrorKind::NotFound)
        && std::fs::metadata(dest).is_ok_and(|m| m.len() == data_end + tail.len() as u64);
    if !renamed_before {
        let f = OpenOptions::new().write(true).open(staged)?;
        // Drop a torn tail (or a header from a failed earlier attempt) first.
        f.set_len(data_end).map_err(Error::from_io)?;
        f.write_all_at(tail, data_end).map_err(Error::from_io)?;
        f.sync_data().map_err(sync_failed)?;
        crate::durable_fs::create_dir_all(parent).map_err(Error::from_io)?;
        std::fs::rename(staged, dest).map_err(Error::from_io)?;
    }
    crate::durable_fs::sync_dir(parent).map_err(Error::from_io)?;
    Ok(!renamed_before)
}

/// The sample MACs of a finished pack from those taken while its data was
/// appended, plus its header and trailer (`tail`).
fn finish_macs(job: &UploadJob, tail: &[u8]) -> Option<Vec<u8>> {
    let mut macs = job.macs.clone()?;
    macs.feed(tail);
    Some(macs.finish())
}

/// Record the proof-of-storage MACs of an uploaded pack (see `samples`).
fn keep_samples(shared: &Shared, id: &PackId, macs: std::io::Result<Vec<u8>>) {
    let dir = shared.dir.with_file_name("samples");
    if let Err(e) = macs.and_then(|m| samples::write_samples(&dir, id, &m)) {
        tracing::warn!(error = %e, "cannot keep the sample MACs of a pack; it will not be sampled");
    }
}

/// A read error shared by several envelopes (`Error` is not `Clone`: it
/// holds `io::Error`); the kind that matters to readers is kept.
fn clone_err(e: &Error) -> Error {
    match e {
        Error::Integrity(m) => Error::Integrity(m.clone()),
        Error::Store(m) => Error::Store(m.clone()),
        Error::NoSpace => Error::NoSpace,
        other => Error::Store(other.to_string()),
    }
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

fn uploader_loop(shared: Arc<Shared>, rx: &Mutex<mpsc::Receiver<UploadJob>>) {
    loop {
        let Ok(job) = rx.lock().recv() else { return };
        let mut delay = Duration::from_millis(100);
        loop {
            match upload_one(&shared, &job) {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(pack = %job.id.hex(), error = %e, "pack upload failed; will retry");
                    let mut st = shared.state.lock();
                    st.upload_error_nospace = matches!(e, Error::NoSpace);
                    st.upload_error = Some(e.to_string());
                    shared.changed.notify_all();
                    if !st.give_up {
                        shared.changed.wait_for(&mut st, delay);
                    }
                    if st.give_up {
                        // Closing: this pack and the queued ones stay staged.
                        return;
                    }
                    drop(st);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let data_len = job.data_end();
        let mut st = shared.state.lock();
        st.staged.remove(&job.id);
        st.staged_bytes = st.staged_bytes.saturating_sub(data_len);
        st.queued -= 1;
        st.upload_error = None;
        st.upload_error_nospace = false;
        drop(st);
        let _ = std::fs::remove_file(data_path(&shared.dir, &job.id));
        let _ = std::fs::remove_file(idx_path(&shared.dir, &job.id));
        shared.changed.notify_all();
    }
}

/// Write envelopes an intent-log record carried back into their staged packs
/// (crash recovery, before `ChunkStore::open`), and make them durable. A pack
/// no longer staged was uploaded, so its bytes are in the store already; a
/// pack that cannot be opened for another reason is an error (the log stays,
/// so the next mount tries again).
pub fn restore_staged(staging_dir: &Path, blobs: &[StagedBytes]) -> Result<usize> {
    let mut files: HashMap<PackId, Option<File>> = HashMap::new();
    let mut restored = 0;
    for b in blobs {
        let slot = match files.entry(b.pack) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match OpenOptions::new().write(true).open(data_path(staging_dir, &b.pack)) {
                    Ok(f) => e.insert(Some(f)),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => e.insert(None),
                    Err(err) => return Err(Error::from_io(err)),
                }
            }
        };
        if let Some(f) = slot {
            f.write_all_at(&b.bytes, b.offset as u64).map_err(Error::from_io)?;
            restored += 1;
        }
    }
    for f in files.values().flatten() {
        f.sync_data().map_err(Error::from_io)?;
    }
    Ok(restored)
}

/// Packs present in a staging directory (not yet uploaded), with their data sizes.
/// Used by `stats` and `verify`, which must not touch a live mount's journal.
pub fn staged_packs(staging_dir: &Path) -> Result<Vec<(PackId, u64)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(staging_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".data").and_then(PackId::from_hex) {
            out.push((id, e.metadata()?.len()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_the_rename_only_repeats_the_directory_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staging/p.data");
        let dest = dir.path().join("store/packs/p");
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        // Envelopes, then a torn append the pack does not own.
        std::fs::write(&staged, b"envelopes+torn").unwrap();
        assert!(finish_in_place(&staged, &dest, 9, b"TAIL", &Error::from_io).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"envelopesTAIL");
        assert!(!staged.exists());
        // The uploader retries (say the directory fsync failed): done, not stuck.
        assert!(!finish_in_place(&staged, &dest, 9, b"tail", &Error::from_io).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"envelopesTAIL");
        // Neither staged nor a whole pack in the store: an error, not success.
        std::fs::write(&dest, b"short").unwrap();
        assert!(finish_in_place(&staged, &dest, 9, b"tail", &Error::from_io).is_err());
    }
}
