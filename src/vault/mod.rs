//! Filesystem semantics without FUSE: inodes, directories, open files, write
//! buffers and readers. `fuse_adapter` is a thin translation onto this API,
//! and the tests drive it directly against a reference model.

mod chunks;
mod dirty;
mod file;
mod gate;
mod gc;
mod intent_log;
mod metasync;
mod read_buf;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::chunk_store::{ChunkStore, PackEntry, PackId, restore_staged};
use crate::chunking::{ChunkParams, Chunker};
use crate::crypto::{ChunkId, Key32};
use crate::error::{Error, Result};
use crate::metadata::cloud::MetaKeys;
use crate::metadata::{DirentRecord, DomainKeys, FileKind, InodeRecord, Metadata, ROOT_DOMAIN, Timespec, WriteTx};
use crate::repo::Repo;
use chunks::{ChunkIo, ReadAhead};
pub use dirty::DirtyMap;
use file::{CommitCtx, FileState, Piece};
pub use gate::{Access, AccessGate, Observer, Touch};
pub use gc::GcReport;
use intent_log::IntentLog;
pub use read_buf::ReadBuf;

pub const ROOT_INO: u64 = 1;
pub const MAX_NAME: usize = 255;
/// Largest file size we accept (1 PiB): larger requests get `EFBIG`.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
const MAX_XATTR_NAME: usize = 255;
const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Bound of the inode → domain cache (cleared when full; ~40 bytes an entry).
const DOMAIN_CACHE_ENTRIES: usize = 1 << 20;
/// Tunables; the defaults are what `fogvault mount` uses.
#[derive(Clone, Copy, Debug)]
pub struct VaultOptions {
    pub chunk_params: ChunkParams,
    /// Dirty bytes per file before a commit under memory pressure (bounds RAM per writer).
    pub dirty_limit: usize,
    /// Bound of the local upload journal while the store is unreachable.
    pub journal_limit: u64,
    /// Metadata journal objects between compacted snapshots in the cloud.
    pub snapshot_every: u64,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            chunk_params: ChunkParams::default(),
            dirty_limit: 16 << 20,
            journal_limit: crate::chunk_store::DEFAULT_JOURNAL_LIMIT,
            snapshot_every: metasync::DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

/// Owner, mode and time a planted decoy takes (imitating real records).
#[derive(Clone, Copy, Debug)]
pub struct PlantAttrs {
    pub uid: u32,
    pub gid: u32,
    pub perm: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    /// Also the creation time.
    pub ctime: Timespec,
}

/// Who is asking: owner of newly created inodes.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Attributes as the adapter needs them.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
    /// Key domain (vault folder) of the inode; 0 outside vault folders.
    pub domain: u32,
    /// The root directory of a vault folder.
    pub folder_root: bool,
    /// A planted decoy (for the audit layer; never shown on the mount).
    pub decoy: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum TimeSet {
    Now,
    At(Timespec),
}

#[derive(Default, Clone, Debug)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Timespec>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum XattrMode {
    Any,
    Create,
    Replace,
}

pub struct DirEntry {
    pub offset: u64,
    pub ino: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

pub struct StatFs {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub files: u64,
}

fn attr_of(ino: u64, rec: &InodeRecord, size: u64) -> Attr {
    Attr {
        ino,
        kind: rec.kind,
        size,
        perm: rec.perm,
        nlink: rec.nlink,
        uid: rec.uid,
        gid: rec.gid,
        rdev: rec.rdev,
        atime: rec.atime,
        mtime: rec.mtime,
        ctime: rec.ctime,
        crtime: rec.crtime,
        domain: rec.domain,
        folder_root: rec.folder_root != 0,
        decoy: rec.decoy,
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > MAX_NAME {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::Invalid("bad file name"));
    }
    Ok(())
}

type FileRef = Arc<Mutex<FileState>>;

pub struct Vault {
    meta: Arc<Metadata>,
    chunks: Arc<ChunkIo>,
    chunker: Chunker,
    dirty_limit: usize,
    /// Regular files that are open or hold uncommitted state.
    files: Mutex<HashMap<u64, FileRef>>,
    /// Serializes namespace changes (create, link, unlink, rename, setattr of
    /// non-open inodes). Lock order: `ns` → `files` → a `FileState`.
    ns: Mutex<()>,
    /// Decides access inside vault folders (set when sessions exist).
    gate: parking_lot::RwLock<Option<Arc<dyn AccessGate>>>,
    /// Hears every operation (audit trail, insider detection), when set.
    observer: parking_lot::RwLock<Option<Arc<dyn Observer>>>,
    /// Whether any vault folder exists: without one, `authorize` has nothing to check.
    has_folders: std::sync::atomic::AtomicBool,
    /// ino → (domain, content domain). Fixed for an inode's life (inode
    /// numbers are never reused; only `create_folder` changes one, and it
    /// updates this), so the gate needs no LMDB read on the hot path.
    domains: parking_lot::RwLock<HashMap<u64, (u32, u32)>>,
    /// Ships committed metadata to the cloud's journal.
    metasync: metasync::MetaSync,
    /// One garbage collection at a time.
    gc_running: Mutex<()>,
    /// Makes a close or fsync durable with one flush (`durable`); `None` if
    /// it could not be created (no room): closes then checkpoint.
    intent: Option<Mutex<IntentLog>>,
    _cache_lock: nix::fcntl::Flock<File>,
}

/// Bytes `from..from + len` of chunk `id`; an index that says the chunk is
/// longer than it is gets an integrity error, not a panic.
fn piece_of<'a>(chunk: &'a [u8], id: &ChunkId, from: usize, len: usize) -> Result<&'a [u8]> {
    chunk
        .get(from..from + len)
        .ok_or_else(|| Error::Integrity(format!("chunk {} is shorter than its extent", &id.hex()[..16])))
}

impl Vault {
    /// Open the fog node's state for `repo` in `cache_dir` (created if absent)
    /// and take its exclusive lock. `root_owner` owns a freshly created root.
    pub fn open(repo: &Repo, cache_dir: &Path, root_owner: Caller) -> Result<Self> {
        Self::open_with(repo, cache_dir, root_owner, VaultOptions::default())
    }

    pub fn open_with(repo: &Repo, cache_dir: &Path, root_owner: Caller, opts: VaultOptions) -> Result<Self> {
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| Error::Repo(format!("cannot create cache directory {}: {e}", cache_dir.display())))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cache_dir.join("lock"))
            .map_err(|e| Error::Repo(format!("cache directory {} is not usable: {e}", cache_dir.display())))?;
        let lock_file = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
            Error::Repo(format!("the cache directory {} is in use by another fogvault mount", cache_dir.display()))
        })?;

        let meta = Arc::new(Metadata::open(&cache_dir.join("meta"), &repo.keys)?);
        match meta.read(|tx| tx.meta_bytes("repo_id"))? {
            Some(id) if id == repo.repo_id.as_bytes() => {}
            Some(_) => {
                return Err(Error::Repo(format!(
                    "cache directory {} belongs to a different repository",
                    cache_dir.display()
                )));
            }
            None => {
                if !repo.backend.list("packs")?.is_empty() || !repo.backend.list("meta")?.is_empty() {
                    return Err(Error::Repo(format!(
                        "this repository holds data but the cache directory {} has no index for it; \
                         use the cache directory it was mounted with, or rebuild one from the store with \
                         `fogvault recover --repo REPO --cache DIR`",
                        cache_dir.display()
                    )));
                }
                let mut root = InodeRecord::new(FileKind::Dir, 0o755, root_owner.uid, root_owner.gid);
                root.parent = ROOT_INO;
                meta.write(|tx| {
                    tx.put_inode(ROOT_INO, &root)?;
                    tx.set_meta_bytes("repo_id", repo.repo_id.as_bytes())
                })?;
                meta.sync()?;
            }
        }
        let intent = Self::replay_intents(&meta, cache_dir)?;
        let indexed = |packs: &[PackId]| -> Result<Vec<(PackId, PackEntry)>> {
            let mut out = Vec::new();
            meta.read(|tx| {
                tx.for_each_chunk(|id, e| {
                    if packs.contains(&e.loc.pack) {
                        out.push((e.loc.pack, PackEntry { id, offset: e.loc.offset, len: e.loc.len }));
                    }
                    Ok(())
                })
            })?;
            Ok(out)
        };
        let store = ChunkStore::open(
            Arc::clone(&repo.backend),
            repo.keys.pack.clone(),
            cache_dir.join("staging"),
            opts.journal_limit,
            &indexed,
        )?;
        let params = opts.chunk_params;
        // A remote store (S3, a mirror) needs large reads in flight to hide latency.
        let read_ahead = if repo.backend.local_root().is_some() { ReadAhead::LOCAL } else { ReadAhead::REMOTE };
        let (chunks, prefetch_rx) =
            ChunkIo::new(Arc::clone(&repo.keys), store, Arc::clone(&meta), params.max + 1024, read_ahead);
        let chunks = Arc::new(chunks);
        // Nothing the index commits may reference an envelope its pack has
        // not made durable (a Weak: the chunk I/O holds the index).
        let weak = Arc::downgrade(&chunks);
        meta.set_commit_barrier(Box::new(move || weak.upgrade().map_or(Ok(()), |c| c.store().sync())));
        if intent.is_some() {
            meta.keep_unlogged();
        }
        let meta_keys = MetaKeys::new(&repo.keys.metadata, &repo.repo_id);
        let root = metasync::check_root(&meta, &repo.backend, &meta_keys)?;
        let metasync = metasync::MetaSync::start(
            Arc::clone(&meta),
            Arc::clone(&chunks),
            Arc::clone(&repo.backend),
            meta_keys,
            root,
            opts.snapshot_every,
        )?;
        let prefetch_rx = Arc::new(Mutex::new(prefetch_rx));
        for _ in 0..read_ahead.threads {
            let (weak, rx) = (Arc::downgrade(&chunks), Arc::clone(&prefetch_rx));
            std::thread::Builder::new()
                .name("fogvault-prefetch".into())
                .spawn(move || ChunkIo::run_prefetcher(weak, rx))?;
        }
        let vault = Vault {
            meta,
            chunks,
            chunker: Chunker::new(params, repo.keys.gear_seed),
            dirty_limit: opts.dirty_limit,
            files: Mutex::new(HashMap::new()),
            ns: Mutex::new(()),
            gate: parking_lot::RwLock::new(None),
            observer: parking_lot::RwLock::new(None),
            has_folders: std::sync::atomic::AtomicBool::new(false),
            domains: parking_lot::RwLock::new(HashMap::new()),
            metasync,
            gc_running: Mutex::new(()),
            intent: intent.map(Mutex::new),
            _cache_lock: lock_file,
        };
        let any_folder = vault.meta.read(|tx| tx.any_folder_root())?;
        vault.has_folders.store(any_folder, std::sync::atomic::Ordering::Relaxed);
        vault.purge_orphans()?;
        Ok(vault)
    }

    /// Apply what the intent log holds beyond the index (an unclean stop),
    /// then open it afresh. No log (it cannot be created): `None`.
    fn replay_intents(meta: &Metadata, cache_dir: &Path) -> Result<Option<IntentLog>> {
        let path = cache_dir.join("intent.log");
        let records = IntentLog::read(&path)
            .map_err(|e| Error::Repo(format!("cannot read the intent log {}: {e}", path.display())))?;
        let intent_log::Replay { txns, blobs, gap } = intent_log::to_replay(records, meta.stored_txn()?);
        if gap {
            tracing::error!(
                "the intent log skips transactions after the index's newest; replayed up to the gap, \
                 log kept as intent-gap-<secs>.log"
            );
            // Keep the evidence: the log is cleared below.
            let kept = cache_dir.join(format!("intent-gap-{}.log", Timespec::now().secs));
            if let Err(e) = std::fs::copy(&path, &kept) {
                tracing::error!(error = %e, "cannot keep a copy of the intent log");
            }
        }
        if !txns.is_empty() || !blobs.is_empty() {
            let restored = restore_staged(&cache_dir.join("staging"), &blobs)?;
            meta.replay(&txns)?;
            tracing::info!(transactions = txns.len(), envelopes = restored, "replayed the intent log");
        }
        match IntentLog::create(&path, intent_log::CAPACITY) {
            Ok(log) => Ok(Some(log)),
            Err(e) => {
                tracing::warn!(error = %e, "no intent log: every close will sync the packs and the index");
                Ok(None)
            }
        }
    }

    /// Transactions the intent log in `cache_dir` holds beyond what `meta`
    /// (that cache's index) has: a vault stopped uncleanly, or one mounted
    /// now. The next mount applies them; tools reading the index alone do
    /// not see them.
    pub fn unapplied_intents(meta: &Metadata, cache_dir: &Path) -> Result<u64> {
        let records = IntentLog::read(&cache_dir.join("intent.log")).map_err(Error::from_io)?;
        Ok(intent_log::to_replay(records, meta.stored_txn()?).txns.len() as u64)
    }

    /// Make every change so far durable: one intent-log record holding the
    /// transactions and envelopes not yet durable, with a single fdatasync
    /// (concurrent callers share it). Falls back to a checkpoint.
    fn durable(&self) -> Result<()> {
        let Some(log) = &self.intent else { return self.checkpoint() };
        let target = self.meta.last_txn();
        let mut log = log.lock();
        let done = |log: &IntentLog| target <= log.logged_txn().max(self.meta.synced_txn());
        if done(&log) {
            return Ok(());
        }
        if log.needs_checkpoint {
            return self.checkpoint_locked(&mut log);
        }
        // Transactions first, then envelopes: every envelope a taken
        // transaction references was stored before it, so it is taken too.
        let txns = self.meta.take_unlogged();
        if txns.is_empty() {
            // The metadata-journal upload synced them meanwhile (or a bug
            // lost them: a checkpoint covers both).
            return if done(&log) { Ok(()) } else { self.checkpoint_locked(&mut log) };
        }
        // From here on the taken transactions are in no queue: until a record
        // or a checkpoint holds them, every caller must checkpoint.
        log.needs_checkpoint = true;
        let store = self.chunks.store();
        let blobs = match store.take_unlogged(intent_log::INLINE_MAX) {
            Ok(Some(blobs)) => Some(blobs),
            Ok(None) => store.sync().ok().map(|()| Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read back staged envelopes; checkpointing instead");
                None
            }
        };
        let Some(blobs) = blobs else { return self.checkpoint_locked(&mut log) };
        match log.append(&intent_log::Record { txns, blobs }) {
            Ok(true) => {
                log.needs_checkpoint = false;
                Ok(())
            }
            Ok(false) => self.checkpoint_locked(&mut log),
            Err(e) => {
                tracing::warn!(error = %e, "intent log write failed; checkpointing instead");
                self.checkpoint_locked(&mut log)
            }
        }
    }

    /// Sync the staged packs, commit the in-memory overlay to LMDB and sync
    /// it: every intent-log record is obsolete then, and the log starts over.
    fn checkpoint(&self) -> Result<()> {
        match &self.intent {
            Some(log) => self.checkpoint_locked(&mut log.lock()),
            None => {
                self.chunks.store().sync()?;
                self.meta.sync()
            }
        }
    }

    /// The log restarts only here, with the log locked: after the packs are
    /// synced (the log may be the only durable copy of envelopes a
    /// transaction synced by the metadata upload references) and LMDB is
    /// synced past every transaction the log holds.
    fn checkpoint_locked(&self, log: &mut IntentLog) -> Result<()> {
        log.needs_checkpoint = true;
        self.chunks.store().sync()?;
        self.meta.sync()?;
        if log.logged_txn() <= self.meta.synced_txn() {
            log.restart();
        }
        log.needs_checkpoint = false;
        Ok(())
    }

    fn ctx(&self) -> CommitCtx<'_> {
        CommitCtx { chunks: &self.chunks, chunker: &self.chunker, meta: &self.meta }
    }

    /// Inodes unlinked while open when the last daemon stopped: free them now.
    fn purge_orphans(&self) -> Result<()> {
        for ino in self.meta.read(|tx| tx.orphans())? {
            if self.open_state(ino).is_some() {
                continue; // unlinked while open in this daemon: release frees it
            }
            let r = self.meta.write(|tx| {
                if let Some(rec) = tx.inode(ino)? {
                    self.free_inode_in(tx, ino, &rec)?;
                }
                tx.remove_orphan(ino)
            });
            match r {
                Err(Error::Locked) => {} // in a locked vault folder: freed when it is unlocked
                other => other?,
            }
        }
        Ok(())
    }

    fn free_inode_in(&self, tx: &mut WriteTx<'_>, ino: u64, rec: &InodeRecord) -> Result<()> {
        for e in &rec.extents {
            if let Some(id) = e.chunk {
                self.chunks.adjust_refs(tx, &id, -1)?;
            }
        }
        tx.delete_inode(ino)
    }

    fn load(&self, ino: u64) -> Result<InodeRecord> {
        self.meta.read(|tx| tx.inode(ino))?.ok_or(Error::NotFound)
    }

    fn open_state(&self, ino: u64) -> Option<FileRef> {
        self.files.lock().get(&ino).cloned()
    }

    /// Lock a file's state once no streamed commit is in flight: everything
    /// that changes extents or commits goes through here.
    fn settled(s: &FileRef) -> parking_lot::ArcMutexGuard<parking_lot::RawMutex, FileState> {
        loop {
            let st = s.lock_arc();
            match st.inflight_done() {
                None => return st,
                Some(done) => {
                    drop(st);
                    done.wait();
                }
            }
        }
    }

    /// The state of a regular file, loading it if needed (callers hold `ns` or a handle).
    fn state(&self, ino: u64) -> Result<FileRef> {
        if let Some(s) = self.open_state(ino) {
            return Ok(s);
        }
        let rec = self.load(ino)?;
        if rec.kind != FileKind::File {
            return Err(Error::Invalid("not a regular file"));
        }
        let mut files = self.files.lock();
        Ok(Arc::clone(files.entry(ino).or_insert_with(|| Arc::new(Mutex::new(FileState::new(rec))))))
    }

    /// Drop a file's state if nothing holds it open and nothing is uncommitted.
    fn maybe_evict(&self, ino: u64) {
        let mut files = self.files.lock();
        if let Some(s) = files.get(&ino) {
            // try_lock: a writer may hold the state and be re-checking the map.
            let Some(st) = s.try_lock() else { return };
            if st.opens == 0 && !st.needs_commit() {
                drop(st);
                files.remove(&ino);
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        if let Some(s) = self.open_state(ino) {
            let st = s.lock();
            return Ok(attr_of(ino, &st.rec, st.size));
        }
        let rec = self.load(ino)?;
        Ok(attr_of(ino, &rec, rec.size))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        if name.len() > MAX_NAME {
            return Err(Error::NameTooLong);
        }
        let d = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        self.getattr(d.ino)
    }

    /// Apply `f` to an inode's record and commit it with `extra` in one
    /// transaction, through the open-file state when there is one.
    fn update_inode(
        &self,
        ino: u64,
        f: impl FnOnce(&mut InodeRecord) -> Result<()>,
        extra: impl FnOnce(&mut WriteTx<'_>) -> Result<()>,
    ) -> Result<Attr> {
        if let Some(s) = self.open_state(ino) {
            let mut st = Self::settled(&s);
            f(&mut st.rec)?;
            st.commit(ino, &self.ctx(), false, extra)?;
            return Ok(attr_of(ino, &st.rec, st.size));
        }
        self.meta.write_deferred(|tx| {
            let mut rec = tx.inode(ino)?.ok_or(Error::NotFound)?;
            f(&mut rec)?;
            tx.put_inode(ino, &rec)?;
            extra(tx)?;
            Ok(attr_of(ino, &rec, rec.size))
        })
    }

    fn parent_dir(&self, parent: u64) -> Result<InodeRecord> {
        let rec = self.load(parent)?;
        if rec.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        Ok(rec)
    }

    /// Create any kind of inode under `parent`. The arguments mirror
    /// mknod/mkdir/symlink (`rdev` for devices, `target` for symlinks).
    #[allow(clippy::too_many_arguments)]
    pub fn create_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        target: &[u8],
    ) -> Result<Attr> {
        check_name(name)?;
        let _ns = self.ns.lock();
        let pdir = self.parent_dir(parent)?;
        let mut rec = InodeRecord::new(kind, perm, caller.uid, caller.gid);
        rec.domain = pdir.content_domain();
        rec.rdev = rdev;
        // BSD/SysV group semantics: a setgid directory hands down its group.
        if pdir.perm & 0o2000 != 0 {
            rec.gid = pdir.gid;
            if kind == FileKind::Dir {
                rec.perm |= 0o2000;
            }
        }
        if kind == FileKind::Symlink {
            rec.target = target.to_vec();
            rec.size = target.len() as u64;
        }
        if kind == FileKind::Dir {
            rec.parent = parent;
        }
        let now = rec.ctime;
        let ino = self.meta.write_deferred(|tx| {
            if tx.dirent(parent, name)?.is_some() {
                return Err(Error::Exists);
            }
            let ino = tx.next_ino()?;
            tx.put_inode(ino, &rec)?;
            tx.put_dirent(parent, &DirentRecord { name: name.to_vec(), ino, kind })?;
            let mut p = pdir.clone();
            p.mtime = now;
            p.ctime = now;
            if kind == FileKind::Dir {
                p.nlink += 1;
            }
            tx.put_inode(parent, &p)?;
            Ok(ino)
        })?;
        Ok(attr_of(ino, &rec, rec.size))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let rec = self.load(ino)?;
        if rec.kind != FileKind::Symlink {
            return Err(Error::Invalid("not a symlink"));
        }
        Ok(rec.target)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        let _ns = self.ns.lock();
        let pdir = self.parent_dir(newparent)?;
        let rec = self.load(ino)?;
        if rec.kind == FileKind::Dir {
            return Err(Error::NotPermitted);
        }
        if rec.domain != pdir.content_domain() {
            return Err(Error::CrossDevice);
        }
        if self.meta.read(|tx| tx.dirent(newparent, newname))?.is_some() {
            return Err(Error::Exists);
        }
        let kind = rec.kind;
        let now = Timespec::now();
        self.update_inode(
            ino,
            |r| {
                if r.nlink >= u32::MAX - 1 {
                    return Err(Error::TooManyLinks);
                }
                r.nlink += 1;
                r.ctime = now;
                Ok(())
            },
            |tx| {
                tx.put_dirent(newparent, &DirentRecord { name: newname.to_vec(), ino, kind })?;
                let mut p = pdir;
                p.mtime = now;
                p.ctime = now;
                tx.put_inode(newparent, &p)
            },
        )
    }

    /// Drop one link to `ino` inside `tx`-adjacent logic; frees it when unreferenced.
    fn drop_link(&self, ino: u64, now: Timespec, extra: impl FnOnce(&mut WriteTx<'_>) -> Result<()>) -> Result<()> {
        if let Some(s) = self.open_state(ino) {
            let mut st = Self::settled(&s);
            if st.opens == 0 && st.rec.nlink <= 1 {
                // Last link of a file nobody has open: its uncommitted bytes die
                // with it, so a full store cannot stop the delete.
                drop(st);
                self.files.lock().remove(&ino);
                return self.drop_link(ino, now, extra);
            }
            st.rec.nlink = st.rec.nlink.saturating_sub(1);
            st.rec.ctime = now;
            let orphan = st.rec.nlink == 0;
            // Open files live on (as orphans) until the last close.
            return st.commit(ino, &self.ctx(), false, |tx| {
                extra(tx)?;
                if orphan { tx.add_orphan(ino) } else { Ok(()) }
            });
        }
        self.meta.write_deferred(|tx| {
            let mut rec = tx.inode(ino)?.ok_or(Error::NotFound)?;
            rec.nlink = rec.nlink.saturating_sub(1);
            rec.ctime = now;
            let is_dir = rec.kind == FileKind::Dir;
            if rec.nlink == 0 || is_dir {
                self.free_inode_in(tx, ino, &rec)?;
            } else {
                tx.put_inode(ino, &rec)?;
            }
            extra(tx)
        })
    }

    fn touch_parent(tx: &mut WriteTx<'_>, ino: u64, now: Timespec, nlink_delta: i32) -> Result<()> {
        let mut p = tx.inode(ino)?.ok_or(Error::NotFound)?;
        p.mtime = now;
        p.ctime = now;
        p.nlink = (p.nlink as i64 + nlink_delta as i64).max(1) as u32;
        tx.put_inode(ino, &p)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        let _ns = self.ns.lock();
        self.parent_dir(parent)?;
        let d = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        if d.kind == FileKind::Dir {
            return Err(Error::IsDir);
        }
        let now = Timespec::now();
        self.drop_link(d.ino, now, |tx| {
            tx.delete_dirent(parent, name)?;
            Self::touch_parent(tx, parent, now, 0)
        })?;
        self.maybe_evict(d.ino);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(Error::Invalid("cannot remove ."));
        }
        if name == b".." {
            return Err(Error::NotEmpty);
        }
        let _ns = self.ns.lock();
        self.parent_dir(parent)?;
        let d = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        if d.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        if self.load(d.ino)?.folder_root != 0 {
            // A vault folder's root is the admin's to remove (its key domain lives on).
            return Err(Error::NotPermitted);
        }
        if !self.meta.read(|tx| tx.dir_is_empty(d.ino))? {
            return Err(Error::NotEmpty);
        }
        let now = Timespec::now();
        self.meta.write_deferred(|tx| {
            tx.delete_dirent(parent, name)?;
            tx.delete_inode(d.ino)?;
            Self::touch_parent(tx, parent, now, -1)
        })
    }

    /// Is `ancestor` equal to `ino` or one of its ancestors?
    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> Result<bool> {
        loop {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            ino = self.load(ino)?.parent;
        }
    }

    pub fn rename(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: RenameFlags) -> Result<()> {
        check_name(newname)?;
        let _ns = self.ns.lock();
        let from_dir = self.parent_dir(parent)?;
        let to_dir = self.parent_dir(newparent)?;
        if from_dir.content_domain() != to_dir.content_domain() {
            return Err(Error::CrossDevice); // records cannot change vault folder (key domain)
        }
        let src = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        let dst = self.meta.read(|tx| tx.dirent(newparent, newname))?;
        // A vault folder's root stays where the admin's policy put it.
        for d in [Some(&src), dst.as_ref()].into_iter().flatten() {
            if d.kind == FileKind::Dir && self.load(d.ino)?.folder_root != 0 {
                return Err(Error::NotPermitted);
            }
        }
        let now = Timespec::now();
        if src.kind == FileKind::Dir && self.is_ancestor(src.ino, newparent)? {
            return Err(Error::Invalid("cannot move a directory into itself"));
        }
        if flags.exchange {
            let dst = dst.ok_or(Error::NotFound)?;
            if dst.kind == FileKind::Dir && self.is_ancestor(dst.ino, parent)? {
                return Err(Error::Invalid("cannot move a directory into itself"));
            }
            let dirs_delta = i32::from(src.kind == FileKind::Dir) - i32::from(dst.kind == FileKind::Dir);
            self.meta.write_deferred(|tx| {
                tx.put_dirent(parent, &DirentRecord { name: name.to_vec(), ino: dst.ino, kind: dst.kind })?;
                tx.put_dirent(newparent, &DirentRecord { name: newname.to_vec(), ino: src.ino, kind: src.kind })?;
                for (ino, kind, np) in [(src.ino, src.kind, newparent), (dst.ino, dst.kind, parent)] {
                    if kind == FileKind::Dir {
                        let mut r = tx.inode(ino)?.ok_or(Error::NotFound)?;
                        r.parent = np;
                        r.ctime = now;
                        tx.put_inode(ino, &r)?;
                    }
                }
                if parent != newparent {
                    Self::touch_parent(tx, parent, now, -dirs_delta)?;
                    Self::touch_parent(tx, newparent, now, dirs_delta)
                } else {
                    Self::touch_parent(tx, parent, now, 0)
                }
            })?;
            for (ino, kind) in [(src.ino, src.kind), (dst.ino, dst.kind)] {
                if kind != FileKind::Dir {
                    self.update_inode(
                        ino,
                        |r| {
                            r.ctime = now;
                            Ok(())
                        },
                        |_| Ok(()),
                    )?;
                }
            }
            return Ok(());
        }
        if let Some(dst) = &dst {
            if flags.noreplace {
                return Err(Error::Exists);
            }
            if dst.ino == src.ino {
                return Ok(()); // two links to one inode: POSIX says do nothing
            }
            match (src.kind == FileKind::Dir, dst.kind == FileKind::Dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if !self.meta.read(|tx| tx.dir_is_empty(dst.ino))? => {
                    return Err(Error::NotEmpty);
                }
                _ => {}
            }
        }
        let src_is_dir = src.kind == FileKind::Dir;
        let replaced_dir = dst.as_ref().is_some_and(|d| d.kind == FileKind::Dir);
        // The moved inode's ctime changes in the same transaction unless an
        // open file's state owns its record (then it is updated through it).
        let src_open = self.open_state(src.ino).is_some();
        let moves = |tx: &mut WriteTx<'_>| -> Result<()> {
            tx.delete_dirent(parent, name)?;
            tx.put_dirent(newparent, &DirentRecord { name: newname.to_vec(), ino: src.ino, kind: src.kind })?;
            if !src_is_dir && !src_open {
                let mut r = tx.inode(src.ino)?.ok_or(Error::NotFound)?;
                r.ctime = now;
                tx.put_inode(src.ino, &r)?;
            }
            if src_is_dir {
                let mut r = tx.inode(src.ino)?.ok_or(Error::NotFound)?;
                r.parent = newparent;
                r.ctime = now;
                tx.put_inode(src.ino, &r)?;
            }
            let (out, inn) = (-i32::from(src_is_dir), i32::from(src_is_dir) - i32::from(replaced_dir));
            if parent == newparent {
                Self::touch_parent(tx, parent, now, out + inn)
            } else {
                Self::touch_parent(tx, parent, now, out)?;
                Self::touch_parent(tx, newparent, now, inn)
            }
        };
        match dst {
            Some(d) if d.kind == FileKind::Dir => self.meta.write_deferred(|tx| {
                tx.delete_inode(d.ino)?;
                moves(tx)
            })?,
            Some(d) => {
                self.drop_link(d.ino, now, moves)?;
                self.maybe_evict(d.ino);
            }
            None => self.meta.write_deferred(moves)?,
        }
        if !src_is_dir && src_open {
            self.update_inode(
                src.ino,
                |r| {
                    r.ctime = now;
                    Ok(())
                },
                |_| Ok(()),
            )?;
        }
        Ok(())
    }

    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Attr> {
        let _ns = self.ns.lock();
        let rec = self.load(ino)?;
        if let Some(size) = set.size {
            if rec.kind == FileKind::Dir {
                return Err(Error::IsDir);
            }
            if rec.kind != FileKind::File {
                return Err(Error::Invalid("size of a special file"));
            }
            if size > MAX_FILE_SIZE {
                return Err(Error::TooBig);
            }
        }
        let now = Timespec::now();
        let apply = |r: &mut InodeRecord| -> Result<()> {
            if let Some(m) = set.mode {
                r.perm = m & 0o7777;
            }
            if let Some(u) = set.uid {
                r.uid = u;
            }
            if let Some(g) = set.gid {
                r.gid = g;
            }
            let pick = |t: TimeSet| match t {
                TimeSet::Now => now,
                TimeSet::At(t) => t,
            };
            if let Some(t) = set.atime {
                r.atime = pick(t);
            }
            if let Some(t) = set.mtime {
                r.mtime = pick(t);
            }
            r.ctime = set.ctime.unwrap_or(now);
            Ok(())
        };
        if rec.kind == FileKind::File {
            let s = self.state(ino)?;
            let attr = {
                let mut st = Self::settled(&s);
                // An open file with uncommitted bytes commits on its last close
                // or fsync; the new attributes ride along with those bytes rather
                // than cost an LMDB sync each (tar sets owner, mode and times on
                // every file before closing it). Otherwise commit now.
                let defer = st.opens > 0 && st.needs_commit();
                if let Some(size) = set.size {
                    st.set_size(&self.chunks, size)?;
                }
                apply(&mut st.rec)?;
                if defer {
                    st.attrs_dirty = true;
                } else {
                    st.commit(ino, &self.ctx(), false, |_| Ok(()))?;
                }
                attr_of(ino, &st.rec, st.size)
            };
            self.maybe_evict(ino);
            return Ok(attr);
        }
        self.update_inode(ino, apply, |_| Ok(()))
    }

    // ---- open files ----

    /// Open a regular file; `truncate` for O_TRUNC.
    pub fn open_file(&self, ino: u64, truncate: bool) -> Result<()> {
        let _ns = self.ns.lock();
        let s = self.state(ino)?;
        let mut st = Self::settled(&s);
        st.opens += 1;
        if truncate && st.size > 0 {
            st.set_size(&self.chunks, 0)?;
        }
        Ok(())
    }

    /// Commit a file's pending bytes; `durable` waits for stable storage.
    pub fn flush(&self, ino: u64, durable: bool) -> Result<()> {
        let Some(s) = self.open_state(ino) else {
            return Ok(());
        };
        let mut st = Self::settled(&s);
        if st.needs_commit() {
            st.commit(ino, &self.ctx(), false, |_| Ok(()))?;
        }
        if durable {
            self.sync_file(ino, &mut st)?;
        }
        Ok(())
    }

    /// Make what a file's handles did durable: its commits, and also a
    /// deferred change that touched it alone (its creation by this handle,
    /// a chmod).
    fn sync_file(&self, ino: u64, st: &mut FileState) -> Result<()> {
        // A commit made by another write (not synced) may hold this file's
        // creation or attributes: make that durable too.
        if st.unsynced || self.meta.inode_deferred(ino) || self.meta.commit_unsynced() {
            self.durable()?;
            st.unsynced = false;
        }
        Ok(())
    }

    /// Make everything committed so far durable (fsync on any file).
    pub fn fsync(&self, ino: u64) -> Result<()> {
        self.flush(ino, false)?;
        self.durable()
    }

    /// Last close of a handle: commit, and free the inode if it was unlinked.
    pub fn release(&self, ino: u64) -> Result<()> {
        let Some(s) = self.open_state(ino) else {
            return Ok(());
        };
        let result = {
            let mut st = Self::settled(&s);
            st.opens = st.opens.saturating_sub(1);
            if st.opens == 0 && st.rec.nlink == 0 {
                let rec = st.rec.clone();
                let r = self.meta.write(|tx| {
                    // Free what LMDB holds (the committed extents).
                    let stored = tx.inode(ino)?.unwrap_or(rec);
                    self.free_inode_in(tx, ino, &stored)?;
                    tx.remove_orphan(ino)
                });
                drop(st);
                self.files.lock().remove(&ino);
                return r;
            }
            let r = if st.needs_commit() { st.commit(ino, &self.ctx(), false, |_| Ok(())) } else { Ok(()) };
            r.and_then(|()| self.sync_file(ino, &mut st))
        };
        let _ns = self.ns.lock();
        self.maybe_evict(ino);
        result
    }

    pub fn read(&self, ino: u64, off: u64, len: usize) -> Result<ReadBuf> {
        let s = self.state(ino)?;
        let mut st = s.lock();
        let (plan, overlay) = st.read_plan(off, len);
        // Sequential reader: fetch and decrypt the next chunks on the prefetch
        // threads while this one is copied out.
        if st.last_read_end == off {
            let (from, ra) = (off + len as u64, self.chunks.read_ahead());
            let ahead = st.chunks_ahead(from, ra.window + ra.horizon);
            let near = ahead.iter().take_while(|(_, start)| *start < from + ra.window).count();
            let ids: Vec<ChunkId> = ahead.into_iter().map(|(id, _)| id).collect();
            self.chunks.prefetch(&ids, near);
        }
        st.last_read_end = off + len as u64;
        let guard = if overlay {
            Some(st)
        } else {
            drop(st);
            None
        };
        if let (None, [Piece::Chunk { id, from, len }]) = (&guard, plan.as_slice()) {
            let chunk = self.chunks.fetch(id)?;
            piece_of(&chunk, id, *from, *len)?;
            return Ok(ReadBuf::Shared(chunk, *from..from + len));
        }
        let total: usize = plan
            .iter()
            .map(|p| match p {
                Piece::Zeros(n) => *n,
                Piece::Chunk { len, .. } => *len,
            })
            .sum();
        let mut out = dirty::buffer_for(total);
        for p in plan {
            match p {
                Piece::Zeros(n) => out.resize(out.len() + n, 0),
                Piece::Chunk { id, from, len } => {
                    let data = self.chunks.fetch(&id)?;
                    out.extend_from_slice(piece_of(&data, &id, from, len)?);
                }
            }
        }
        if let Some(st) = guard {
            st.overlay_dirty(off, &mut out);
        }
        Ok(ReadBuf::Owned(out))
    }

    pub fn write(&self, ino: u64, off: u64, data: &[u8]) -> Result<usize> {
        if off.checked_add(data.len() as u64).is_none_or(|end| end > MAX_FILE_SIZE) {
            return Err(Error::TooBig);
        }
        let (s, mut st) = loop {
            let s = self.state(ino)?;
            let st = s.lock_arc();
            // The state may have been evicted between lookup and lock (writes
            // with no open handle, e.g. mmap writeback): retry with the live one.
            if self.files.lock().get(&ino).is_some_and(|cur| Arc::ptr_eq(cur, &s)) {
                break (s, st);
            }
        };
        st.write(off, data);
        if st.dirty.bytes() > self.dirty_limit {
            // A streaming writer hands its buffer to a background commit and
            // carries on; anything else (or a writer more than one buffer
            // ahead of its background commit) commits here.
            if let Some((_, buf)) = st.begin_stream() {
                drop(st);
                self.spawn_stream_commit(ino, s, buf);
            } else {
                if st.inflight_done().is_some() {
                    if st.dirty.bytes() <= 2 * self.dirty_limit {
                        return Ok(data.len());
                    }
                    drop(st);
                    st = Self::settled(&s);
                }
                st.commit(ino, &self.ctx(), true, |_| Ok(()))?;
            }
        }
        Ok(data.len())
    }

    fn spawn_stream_commit(&self, ino: u64, s: FileRef, buf: Arc<Vec<u8>>) {
        let (chunks, meta, chunker) = (Arc::clone(&self.chunks), Arc::clone(&self.meta), self.chunker.clone());
        let state = Arc::clone(&s);
        let job = move || {
            let _gc = chunks.commit_guard();
            let cx = CommitCtx { chunks: &chunks, chunker: &chunker, meta: &meta };
            let result = FileState::chunk_stream(&cx, &buf);
            if let Err(e) = state.lock().finish_stream(ino, &cx, result) {
                // The bytes went back to the dirty map; the next commit retries
                // them and reports a persistent failure to the application.
                tracing::warn!(error = %e, "background commit failed; will retry");
            }
            if let Ok(buf) = Arc::try_unwrap(buf) {
                dirty::recycle(buf);
            }
        };
        if let Err(e) = std::thread::Builder::new().name("fogvault-commit".into()).spawn(job) {
            // No thread: give the bytes back so nothing waits on this stream.
            let _ = s.lock().finish_stream(ino, &self.ctx(), Err(Error::Io(e)));
        }
    }

    /// `fallocate`: mode 0 extends the size; KEEP_SIZE is a no-op (we never
    /// preallocate); other modes are not supported.
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, keep_size: bool) -> Result<()> {
        let end = off.checked_add(len).ok_or(Error::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(Error::TooBig);
        }
        if keep_size {
            return Ok(());
        }
        let s = self.state(ino)?;
        let mut st = Self::settled(&s);
        if end > st.size {
            st.set_size(&self.chunks, end)?;
        }
        Ok(())
    }

    // ---- directories ----

    /// Entries with offset greater than `offset`, including "." and "..".
    pub fn readdir(&self, ino: u64, offset: u64, limit: usize) -> Result<Vec<DirEntry>> {
        let rec = self.load(ino)?;
        if rec.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry { offset: 1, ino, kind: FileKind::Dir, name: b".".to_vec() });
        }
        if offset < 2 {
            out.push(DirEntry { offset: 2, ino: rec.parent.max(1), kind: FileKind::Dir, name: b"..".to_vec() });
        }
        let rest = self.meta.read(|tx| tx.list_dir(ino, offset.max(2), limit))?;
        out.extend(rest.into_iter().map(|(off, d)| DirEntry { offset: off, ino: d.ino, kind: d.kind, name: d.name }));
        Ok(out)
    }

    /// `readdir` plus each entry's attributes, read in one transaction.
    /// Entries that vanished meanwhile are skipped.
    pub fn readdir_plus(&self, ino: u64, offset: u64, limit: usize) -> Result<Vec<(DirEntry, Attr)>> {
        let entries = self.readdir(ino, offset, limit)?;
        let stored: Vec<Option<InodeRecord>> =
            self.meta.read(|tx| entries.iter().map(|d| tx.inode(d.ino)).collect::<Result<_>>())?;
        Ok(entries
            .into_iter()
            .zip(stored)
            .filter_map(|(d, rec)| {
                // Open files may hold newer attributes (size of dirty data).
                let attr = match self.open_state(d.ino) {
                    Some(s) => {
                        let st = s.lock();
                        attr_of(d.ino, &st.rec, st.size)
                    }
                    None => {
                        let rec = rec?;
                        attr_of(d.ino, &rec, rec.size)
                    }
                };
                Some((d, attr))
            })
            .collect())
    }

    // ---- extended attributes ----

    fn xattr_ns_ok(name: &[u8]) -> Result<()> {
        if name.is_empty() || name.len() > MAX_XATTR_NAME {
            return Err(if name.is_empty() { Error::Invalid("empty xattr name") } else { Error::Range });
        }
        for ns in [&b"user."[..], b"trusted.", b"security."] {
            if name.starts_with(ns) {
                return Ok(());
            }
        }
        Err(Error::NotSupported)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], mode: XattrMode) -> Result<()> {
        Self::xattr_ns_ok(name)?;
        if value.len() > MAX_XATTR_VALUE {
            return Err(Error::TooBig);
        }
        let _ns = self.ns.lock();
        let now = Timespec::now();
        self.update_inode(
            ino,
            |r| {
                let pos = r.xattrs.iter().position(|(n, _)| n == name);
                match (pos, mode) {
                    (Some(_), XattrMode::Create) => return Err(Error::Exists),
                    (None, XattrMode::Replace) => return Err(Error::NoAttr),
                    (Some(i), _) => r.xattrs[i].1 = value.to_vec(),
                    (None, _) => r.xattrs.push((name.to_vec(), value.to_vec())),
                }
                r.ctime = now;
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// The inode's record: the open file's working copy if there is one.
    fn current_record(&self, ino: u64) -> Result<InodeRecord> {
        match self.open_state(ino) {
            Some(s) => Ok(s.lock().rec.clone()),
            None => self.load(ino),
        }
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let rec = self.current_record(ino)?;
        rec.xattrs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or(Error::NoAttr)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let rec = self.current_record(ino)?;
        Ok(rec.xattrs.into_iter().map(|(n, _)| n).collect())
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let _ns = self.ns.lock();
        let now = Timespec::now();
        self.update_inode(
            ino,
            |r| {
                let i = r.xattrs.iter().position(|(n, _)| n == name).ok_or(Error::NoAttr)?;
                r.xattrs.remove(i);
                r.ctime = now;
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }

    // ---- vault folders (key domains) ----

    /// Create a decoy file or directory through the normal write path,
    /// then give it `attrs` and the decoy flag (see `audit::decoys`).
    pub fn plant(&self, parent: u64, name: &[u8], kind: FileKind, data: &[u8], attrs: &PlantAttrs) -> Result<u64> {
        let owner = Caller { uid: attrs.uid, gid: attrs.gid };
        let ino = self.create_node(owner, parent, name, kind, attrs.perm, 0, b"")?.ino;
        if kind == FileKind::File && !data.is_empty() {
            self.open_file(ino, false)?;
            let written = self.write(ino, 0, data).and_then(|_| self.flush(ino, true));
            let released = self.release(ino);
            written?;
            released?;
        }
        self.disguise(ino, attrs)?;
        Ok(ino)
    }

    /// Set owner, mode and all times of `ino` and mark it a decoy (all in
    /// one commit; ctime too, which no system call can set).
    pub fn disguise(&self, ino: u64, attrs: &PlantAttrs) -> Result<()> {
        let _ns = self.ns.lock();
        let is_decoy = ino != self.folder_root_of(ino)?;
        self.update_inode(
            ino,
            |r| {
                r.uid = attrs.uid;
                r.gid = attrs.gid;
                r.perm = attrs.perm & 0o7777;
                (r.atime, r.mtime, r.ctime, r.crtime) = (attrs.atime, attrs.mtime, attrs.ctime, attrs.ctime);
                r.decoy |= is_decoy;
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// `ino` itself if it is a vault folder's root, else 0.
    fn folder_root_of(&self, ino: u64) -> Result<u64> {
        Ok(if self.load(ino)?.folder_root != 0 { ino } else { 0 })
    }

    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        *self.observer.write() = Some(observer);
    }

    /// Tell the observer (if any) what `uid` did; its `Err` fails the operation.
    pub fn observe(&self, uid: u32, touch: Touch<'_>) -> Result<()> {
        let observer = self.observer.read().clone();
        match observer {
            Some(o) => o.observe(uid, touch),
            None => Ok(()),
        }
    }

    pub fn set_gate(&self, gate: Arc<dyn AccessGate>) {
        *self.gate.write() = Some(gate);
    }

    /// May `uid` have `access` to inode `ino`? `contents` asks about a
    /// directory's entries (lookup, readdir, create), which at a vault
    /// folder's root belong to the folder while the root itself does not.
    pub fn authorize(&self, uid: u32, ino: u64, access: Access, contents: bool) -> Result<()> {
        if !self.has_folders.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let (domain, content) = self.domains_of(ino)?;
        let d = if contents { content } else { domain };
        if d == ROOT_DOMAIN {
            return Ok(());
        }
        match &*self.gate.read() {
            Some(g) => g.check(uid, d, access),
            None => Err(Error::AccessDenied),
        }
    }

    /// The gate's token for `uid`'s live sessions (see [`AccessGate::session_token`]).
    pub fn session_token(&self, uid: u32) -> Option<u64> {
        self.gate.read().as_ref().and_then(|g| g.session_token(uid))
    }

    /// `(domain, content domain)` of an inode without needing its key: what
    /// the session gate checks before an operation.
    pub fn domains_of(&self, ino: u64) -> Result<(u32, u32)> {
        if let Some(d) = self.domains.read().get(&ino) {
            return Ok(*d);
        }
        let d = self.meta.read(|tx| tx.inode_domains(ino))?.ok_or(Error::NotFound)?;
        let mut cache = self.domains.write();
        if cache.len() >= DOMAIN_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(ino, d);
        Ok(d)
    }

    /// Find the inode of the vault folder `domain`, if it exists here.
    pub fn folder_root(&self, domain: u32) -> Result<Option<u64>> {
        self.meta.read(|tx| tx.folder_root(domain))
    }

    /// Create the root directory of vault folder `domain` at `path` (relative
    /// to the mount root, outside other vault folders). An existing empty
    /// directory is adopted. Idempotent.
    pub fn create_folder(&self, path: &str, domain: u32, owner: Caller) -> Result<u64> {
        if domain == ROOT_DOMAIN {
            return Err(Error::Invalid("folder domain 0 is the root"));
        }
        if let Some(ino) = self.folder_root(domain)?
            && self.meta.read(|tx| tx.inode(ino))?.is_some_and(|r| r.folder_root == domain)
        {
            return Ok(ino);
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(Error::Invalid("a vault folder needs a path below the root"));
        };
        let mut parent = ROOT_INO;
        for p in dirs {
            parent = match self.lookup(parent, p.as_bytes()) {
                Ok(a) if a.kind == FileKind::Dir => a.ino,
                Ok(_) => return Err(Error::NotDir),
                Err(Error::NotFound) => {
                    self.create_node(owner, parent, p.as_bytes(), FileKind::Dir, 0o755, 0, b"")?.ino
                }
                Err(e) => return Err(e),
            };
            if self.load(parent)?.content_domain() != ROOT_DOMAIN {
                return Err(Error::Invalid("vault folders cannot nest"));
            }
        }
        let ino = match self.lookup(parent, last.as_bytes()) {
            Ok(a) if a.kind == FileKind::Dir => a.ino,
            Ok(_) => return Err(Error::NotDir),
            // Open to every Unix user: the vault policy decides who gets in.
            Err(Error::NotFound) => self.create_node(owner, parent, last.as_bytes(), FileKind::Dir, 0o777, 0, b"")?.ino,
            Err(e) => return Err(e),
        };
        let _ns = self.ns.lock();
        // Set before the folder exists, so no operation inside it skips the gate.
        self.has_folders.store(true, std::sync::atomic::Ordering::Relaxed);
        self.meta.write(|tx| {
            let mut rec = tx.inode(ino)?.ok_or(Error::NotFound)?;
            if rec.folder_root == domain {
                return tx.set_folder_root(domain, ino);
            }
            if rec.content_domain() != ROOT_DOMAIN || !tx.dir_is_empty(ino)? {
                return Err(Error::NotEmpty);
            }
            rec.folder_root = domain;
            tx.put_inode(ino, &rec)?;
            tx.set_folder_root(domain, ino)
        })?;
        self.domains.write().insert(ino, (ROOT_DOMAIN, domain));
        self.checkpoint()?;
        Ok(ino)
    }

    /// Make vault folder `domain` readable with the folder keys a session
    /// supplied: `keys` maps key versions to keys and must hold the newest
    /// version and every older one back to the version the records use now.
    /// Records still sealed under an older version are re-sealed under the
    /// newest (key rotation after a revocation).
    pub fn unlock_folder(&self, domain: u32, keys: &[(u32, Key32)]) -> Result<()> {
        let Some((newest, newest_key)) = keys.iter().max_by_key(|(v, _)| *v) else {
            return Err(Error::Invalid("no folder key"));
        };
        self.meta.install_domain(domain, *newest, DomainKeys::from_folder_key(newest_key));
        match self.meta.domain_version(domain)? {
            None => self.meta.write(|tx| tx.set_stored_version(domain, *newest))?,
            Some(v) if v == *newest => {}
            Some(v) if v > *newest => {
                return Err(Error::Integrity("folder key is older than the folder's records".into()));
            }
            Some(v) => {
                let (_, old) = keys.iter().find(|(k, _)| *k == v).ok_or(Error::Locked)?;
                self.meta.install_domain(domain, v, DomainKeys::from_folder_key(old));
                self.meta.rekey_domain(domain, *newest)?;
                self.checkpoint()?;
            }
        }
        // Files unlinked while open in this folder can be freed now.
        self.purge_orphans()
    }

    /// Forget vault folder `domain`'s keys once its pending writes are committed.
    pub fn lock_folder(&self, domain: u32) -> Result<()> {
        self.commit_domain(domain)?;
        self.meta.forget_domain(domain);
        // Drop cached records of closed files too: nothing of the folder stays readable.
        let _ns = self.ns.lock();
        let inos: Vec<u64> = self.files.lock().keys().copied().collect();
        for ino in inos {
            if self.open_state(ino).is_some_and(|s| s.lock().rec.domain == domain) {
                self.maybe_evict(ino);
            }
        }
        Ok(())
    }

    pub fn folder_unlocked(&self, domain: u32) -> bool {
        self.meta.domain_unlocked(domain)
    }

    /// Commit and sync every file of `domain` that holds uncommitted bytes.
    fn commit_domain(&self, domain: u32) -> Result<()> {
        let files: Vec<(u64, FileRef)> = self.files.lock().iter().map(|(k, v)| (*k, Arc::clone(v))).collect();
        for (ino, s) in files {
            let mut st = Self::settled(&s);
            if st.rec.domain == domain && st.needs_commit() {
                st.commit(ino, &self.ctx(), false, |_| Ok(()))?;
            }
        }
        self.checkpoint()
    }

    pub fn statfs(&self) -> StatFs {
        let (total, free) = self.chunks.store().backend().capacity().unwrap_or((1 << 50, 1 << 49));
        StatFs { total_bytes: total, free_bytes: free, files: 0 }
    }

    /// Commit every open file, upload every pack, sync the index (clean unmount).
    pub fn shutdown(&self) -> Result<()> {
        let files: Vec<(u64, FileRef)> = self.files.lock().iter().map(|(k, v)| (*k, Arc::clone(v))).collect();
        let mut first_err = None;
        for (ino, s) in files {
            let mut st = Self::settled(&s);
            if st.needs_commit()
                && let Err(e) = st.commit(ino, &self.ctx(), false, |_| Ok(()))
            {
                first_err.get_or_insert(e);
            }
        }
        self.checkpoint()?;
        if let Some(log) = &self.intent {
            let mut log = log.lock();
            // The checkpoint restarted it (everything is durable in LMDB):
            // clear it, so the next mount has nothing to replay.
            if log.logged_txn() == 0 {
                log.clear().map_err(Error::from_io)?;
            }
        }
        if let Err(e) = self.chunks.store().shutdown() {
            first_err.get_or_insert(e);
        }
        if let Err(e) = self.metasync.shutdown() {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Commit and sync namespace changes deferred for longer than `age`
    /// (mkdir, rename, unlink… nobody fsynced). Called every second by the
    /// mount loop, so they reach stable storage within about two seconds.
    pub fn sync_deferred(&self, age: Duration) -> Result<()> {
        if self.meta.deferred_for(age) {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Commit files that hold uncommitted bytes but no open handle (mmap
    /// writeback after close), and free spare write buffers when no file is
    /// being written. Called periodically by the mount loop.
    pub fn flush_idle(&self) -> Result<()> {
        let idle: Vec<(u64, FileRef)> = self.files.lock().iter().map(|(k, v)| (*k, Arc::clone(v))).collect();
        if idle.iter().all(|(_, s)| s.try_lock().is_some_and(|st| st.dirty.is_empty() && st.inflight_done().is_none()))
        {
            dirty::release_spares(); // nobody is writing
        }
        for (ino, s) in idle {
            {
                let mut st = s.lock();
                if st.opens > 0 || !st.needs_commit() || st.inflight_done().is_some() {
                    continue;
                }
                st.commit(ino, &self.ctx(), false, |_| Ok(()))?;
            }
            let _ns = self.ns.lock();
            self.maybe_evict(ino);
        }
        Ok(())
    }
}
