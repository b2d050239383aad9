//! Filesystem semantics without FUSE: inodes, directories, open files, write
//! buffers and readers. `fuse_adapter` is a thin translation onto this API,
//! and the tests drive it directly against a reference model.
//!
//! This file holds the `Vault` itself (opening a fog node's state, the
//! open-file table, shutdown); its operations live by concern in
//! `namespace` (entries, attributes, listings), `open_files` (read, write,
//! flush), `xattrs`, `folders` (vault folders, the gate and the observer)
//! and `durability` (intent log, checkpoints). Below them: `file` (one
//! file's extents, dirty bytes and commit), `chunks` (chunk I/O, cache and
//! read-ahead), `dirty`, `read_buf`, `intent_log`, `metasync` and `gc`.

mod chunks;
mod dirty;
mod durability;
mod file;
mod folders;
mod gate;
mod gc;
mod intent_log;
mod metasync;
mod namespace;
mod open_files;
mod read_buf;
mod xattrs;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::chunk_store::{ChunkStore, PackEntry, PackId};
use crate::chunking::{ChunkParams, Chunker};
use crate::error::{Error, Result};
use crate::metadata::cloud::MetaKeys;
use crate::metadata::{FileKind, InodeRecord, Metadata, Timespec, WriteTx};
use crate::repo::Repo;
use chunks::{ChunkIo, ReadAhead};
pub use dirty::DirtyMap;
use file::{CommitCtx, FileState};
pub use gate::{Access, AccessGate, EntryHook, MAX_FOLDER_UIDS, Observer, Touch, Walker, WalkersHook};
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
    /// Cut files with these instead of the repository's parameters (tests).
    pub chunk_params: Option<ChunkParams>,
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
            chunk_params: None,
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

/// What a write clears besides writing, as a local disk's write does (the
/// kernel's `file_remove_privs`, which it leaves to the daemon on direct-I/O
/// handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropPrivs {
    /// `security.capability` goes: any `write(2)`, by anyone (a changed
    /// binary must not keep its capabilities). Not page-cache writeback of a
    /// shared mapping, which a local disk does not treat as such a write.
    pub capabilities: bool,
    /// Set-user-ID goes, and set-group-ID when the group may execute (the
    /// bit without group execute marks mandatory locking): the writer lacks
    /// `CAP_FSETID`.
    pub setid: bool,
}

impl DropPrivs {
    /// A `write(2)` by a writer with `CAP_FSETID`, or through the page cache
    /// (where the kernel has already cleared set-id bits).
    pub const WRITE: DropPrivs = DropPrivs { capabilities: true, setid: false };
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
    observer: std::sync::OnceLock<Arc<dyn Observer>>,
    /// Told of entries the vault changes on its own (see `set_entry_hook`).
    entry_hook: parking_lot::RwLock<Option<EntryHook>>,
    /// Told of folder roots whose walkers changed (see `set_walkers_hook`).
    walkers_hook: parking_lot::RwLock<Option<WalkersHook>>,
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

impl Vault {
    /// Open the fog node's state for `repo` in `cache_dir` (created if absent)
    /// and take its exclusive lock. `root_owner` owns a freshly created root.
    pub fn open(repo: &Repo, cache_dir: &Path, root_owner: Caller) -> Result<Self> {
        Self::open_with(repo, cache_dir, root_owner, VaultOptions::default())
    }

    pub fn open_with(repo: &Repo, cache_dir: &Path, root_owner: Caller, opts: VaultOptions) -> Result<Self> {
        crate::durable_fs::create_dir_all(cache_dir)
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
        let params = opts.chunk_params.unwrap_or(repo.chunk_params);
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
            observer: std::sync::OnceLock::new(),
            entry_hook: parking_lot::RwLock::new(None),
            walkers_hook: parking_lot::RwLock::new(None),
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

    /// `state` for callers that do not hold `ns`: reads, writes and
    /// `fallocate`, which may come with no open handle (a mapping's
    /// writeback or read-ahead after the last close). A state loaded from the
    /// index must not interleave with `update_inode` on a closed file (chmod,
    /// setxattr…), which changes the index directly: the state's next commit
    /// would put the old record back. So a missing state is loaded under `ns`,
    /// as `open_file` does.
    fn state_outside_ns(&self, ino: u64) -> Result<FileRef> {
        if let Some(s) = self.open_state(ino) {
            return Ok(s);
        }
        let _ns = self.ns.lock();
        self.state(ino)
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
}
