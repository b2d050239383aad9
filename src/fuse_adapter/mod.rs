//! The FUSE adapter: the only user of `fuser`. Each callback translates its
//! arguments, calls the vault, and maps errors through `errno`.

mod bound_root;
mod errno;
mod walk_acl;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Config, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, MountOption, OpenFlags, RenameFlags as FuseRenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, SessionACL, TimeOrNow, WriteFlags,
};

pub use errno::errno;

use crate::error::Error;
use crate::metadata::{FileKind, Timespec};
use crate::vault::{Access, Attr, Caller, DropPrivs, ROOT_INO, RenameFlags, SetAttr, TimeSet, Touch, Vault, XattrMode};

/// The kernel may cache attributes and entries this long: every change goes
/// through this mount (and the kernel invalidates what its own operations
/// touch), so the kernel's view cannot go stale behind its back.
const TTL: Duration = Duration::from_secs(10);
const BLOCK: u32 = 4096;

pub struct FogFs {
    vault: Arc<Vault>,
    /// Numbers open handles (see `handle_for`).
    handles: std::sync::atomic::AtomicU64,
    /// Inside vault folders: inode → (uid, session token) of its last opener
    /// (see `page_cache`).
    last_opener: parking_lot::Mutex<std::collections::HashMap<u64, (u32, u64)>>,
    /// Write-only handles bypass the page cache (see `write_only`).
    direct_writes: bool,
    /// The kernel checks path walks into vault folders against an access
    /// list from `walk_acl`, so folder roots' dentries may be cached: asked
    /// for when sessions exist, set when the kernel agreed (`init`).
    kernel_gates_walks: std::sync::atomic::AtomicBool,
    /// The FUSE root is a bare directory and the vault root is bound on the
    /// mountpoint (see `bound_root`); inode numbers are translated (`v`, `f`).
    bound: bool,
}

/// Bound of `last_opener` (cleared when full: the next opens just re-read).
const LAST_OPENERS: usize = 1 << 16;

fn to_system_time(t: Timespec) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + Duration::from_nanos(t.nanos as u64)
    }
}

fn from_system_time(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                Timespec { secs: -(d.as_secs() as i64), nanos: 0 }
            } else {
                Timespec { secs: -(d.as_secs() as i64) - 1, nanos: 1_000_000_000 - d.subsec_nanos() }
            }
        }
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

fn fuse_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: to_system_time(a.atime),
        mtime: to_system_time(a.mtime),
        ctime: to_system_time(a.ctime),
        crtime: to_system_time(a.crtime),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid() }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(from_system_time(t)),
    }
}

impl FogFs {
    pub fn new(vault: Arc<Vault>, bound: bool) -> Self {
        let direct_writes = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .is_ok_and(|release| kernel_keeps_direct_writes_coherent(&release));
        FogFs {
            vault,
            handles: std::sync::atomic::AtomicU64::new(1),
            last_opener: Default::default(),
            direct_writes,
            kernel_gates_walks: Default::default(),
            bound,
        }
    }

    /// Handles opened write-only (cp, tar, dd, rsync, PACS imports) bypass
    /// the kernel page cache (`FOPEN_DIRECT_IO`): the written bytes go from
    /// the writer's buffer to the daemon in one copy instead of two, and the
    /// kernel no longer asks for `security.capability` before each write.
    /// Such a handle cannot read or map the file, and the kernel writes back
    /// and drops the cached pages of each range it writes, before and after
    /// the write, so other descriptors and mappings stay coherent. In return
    /// it leaves dropping privileges on write to us (`drop_privs`).
    fn write_only(&self, open_flags: i32) -> FopenFlags {
        if self.direct_writes && open_flags & libc::O_ACCMODE == libc::O_WRONLY {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        }
    }

    /// A new handle for a file opened by `uid`: the kernel may send
    /// writeback and readahead on behalf of another uid, so reads and writes
    /// are checked against the opener's session; the sequence number lets
    /// the audit trail log one read per open rather than one per block.
    fn handle_for(&self, uid: u32) -> FileHandle {
        let n = self.handles.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & ((1 << 31) - 1);
        FileHandle(n << 33 | 1 << 32 | u64::from(uid))
    }

    /// Report `touch` to the observer; its refusal fails the operation.
    fn observe(&self, uid: u32, touch: Touch<'_>) -> Result<(), Error> {
        self.vault.observe(uid, touch)
    }

    /// After a create-like call: name the new inode and record the creation.
    fn created(&self, uid: u32, parent: INodeNo, name: &[u8], r: &Result<Attr, Error>) {
        if let Ok(a) = r {
            self.observe_name(uid, parent, name, a);
            let _ = self.observe(uid, Touch::Create { ino: a.ino });
        }
    }

    /// After `open_file` succeeded: a handle, and the open reported (a
    /// refusal, e.g. a decoy or a locked session, undoes the open).
    fn opened(&self, uid: u32, ino: u64, write: bool, created: bool) -> Result<(FileHandle, Attr), Error> {
        let fh = self.handle_for(uid);
        let r = self.vault.getattr(ino).and_then(|a| {
            let touch = Touch::Open { ino, handle: fh.0, write, created, decoy: a.decoy, domain: a.domain };
            self.observe(uid, touch).map(|()| a)
        });
        match r {
            Ok(a) => Ok((fh, a)),
            Err(e) => {
                let _ = self.vault.release(ino);
                Err(e)
            }
        }
    }

    /// The page cache stays valid across opens (all writes pass through us)
    /// outside vault folders. Inside them it is kept only for a re-open by
    /// the same uid in the same sessions: anyone else's first read of the
    /// file comes to the daemon, so the audit trail and the insider monitor
    /// see it, and bytes cached for one session never serve another.
    fn page_cache(&self, uid: u32, ino: u64, domain: u32) -> FopenFlags {
        if domain == 0 {
            return keep_cache(true);
        }
        let Some(token) = self.vault.session_token(uid) else { return keep_cache(false) };
        let mut last = self.last_opener.lock();
        if last.len() >= LAST_OPENERS {
            last.clear();
        }
        keep_cache(last.insert(ino, (uid, token)) == Some((uid, token)))
    }

    fn observe_name(&self, uid: u32, parent: INodeNo, name: &[u8], a: &Attr) {
        if name == b"." || name == b".." {
            return;
        }
        let _ = self.observe(uid, Touch::Name { parent: parent.0, name, ino: a.ino, folder_root: a.folder_root });
    }

    fn entry(&self, reply: ReplyEntry, r: Result<Attr, Error>) {
        match r {
            // Attributes may be cached everywhere: reaching an inode by path
            // needs a lookup (gated at the folder root), and by fd an open.
            Ok(a) => reply.entry_with_ttls(&attr_ttl(&a), &self.entry_ttl(&a), &self.shown(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The vault's inode for the kernel's `ino`.
    fn v(&self, ino: INodeNo) -> INodeNo {
        vault_ino(self.bound, ino)
    }

    /// The kernel's inode for the vault's `ino`.
    fn f(&self, ino: u64) -> INodeNo {
        kernel_ino(self.bound, ino)
    }

    /// Whether `ino` (the kernel's) is the bare FUSE root of a bound mount.
    fn is_bare_root(&self, ino: INodeNo) -> bool {
        self.bound && ino.0 == bound_root::FUSE_ROOT
    }

    fn kernel_gates_walks(&self) -> bool {
        self.kernel_gates_walks.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn entry_ttl(&self, a: &Attr) -> Duration {
        entry_ttl(a, self.kernel_gates_walks())
    }

    fn entry_and_attr_ttl(&self, a: &Attr) -> Duration {
        entry_and_attr_ttl(a, self.kernel_gates_walks())
    }

    /// `a` as the kernel sees it: a folder root's mode matches its access
    /// list when the kernel gates walks (see `walk_acl`).
    fn shown(&self, a: &Attr) -> FileAttr {
        let mut f = fuse_attr(a);
        f.ino = self.f(a.ino);
        if a.folder_root && self.kernel_gates_walks() {
            f.perm = walk_acl::folder_root_perm(a.perm) as u16;
        }
        f
    }

    /// A folder root's access list (see `walk_acl`); `None` for any other inode.
    fn walk_acl(&self, ino: u64) -> Result<Option<Vec<u8>>, Error> {
        if !self.kernel_gates_walks() {
            return Ok(None);
        }
        let Some(walkers) = self.vault.folder_walkers(ino)? else { return Ok(None) };
        Ok(Some(walk_acl::encode(self.vault.getattr(ino)?.perm, &walkers)))
    }

    /// The session gate for `uid` (see `Vault::authorize`); refusals are audited.
    fn allow(&self, uid: u32, ino: INodeNo, access: Access, contents: bool) -> Result<(), Error> {
        let r = self.vault.authorize(uid, ino.0, access, contents);
        if matches!(r, Err(Error::AccessDenied)) {
            let _ = self.observe(uid, Touch::Denied { ino: ino.0, write: access == Access::Write });
        }
        r
    }
}

/// How long the kernel may keep the dentry of `a`. The dentry cache is
/// shared by all uids, so a path walk into a vault folder must be checked
/// against the sessions: every walk from outside passes the folder root.
/// Where the kernel checks such walks itself (`kernel_gates_walks`, against
/// the root's access list, see `walk_acl`) the root's entry is cached like
/// any other. Elsewhere it is never cached (TTL 0: the kernel revalidates it
/// with a LOOKUP, gated, on every walk). Reaching the root is gated, not
/// just listing it, because a process that reaches a directory may watch it
/// with inotify, which the kernel grants without asking the daemon and which
/// reports the names of the entries others create, open and delete there.
/// Entries inside are cached as anywhere else: only a process whose walk was
/// let in (a cwd or a directory fd inside) can start below the root, and
/// `open`, `read`, `readdir` and the rest are still gated per call.
fn entry_ttl(a: &Attr, kernel_gates_walks: bool) -> Duration {
    if a.folder_root && !kernel_gates_walks { Duration::ZERO } else { TTL }
}

/// For replies that carry one TTL for both the entry and the attributes.
fn entry_and_attr_ttl(a: &Attr, kernel_gates_walks: bool) -> Duration {
    entry_ttl(a, kernel_gates_walks).min(attr_ttl(a))
}

/// The vault's inode for the kernel's `ino` (see `FogFs::bound`).
fn vault_ino(bound: bool, ino: INodeNo) -> INodeNo {
    match ino.0 {
        bound_root::FUSE_ROOT if bound => INodeNo(bound_root::NOWHERE),
        bound_root::VAULT_ROOT if bound => INodeNo(ROOT_INO),
        _ => ino,
    }
}

/// The kernel's inode for the vault's `ino` (see `FogFs::bound`).
fn kernel_ino(bound: bool, ino: u64) -> INodeNo {
    if bound && ino == ROOT_INO { INodeNo(bound_root::VAULT_ROOT) } else { INodeNo(ino) }
}

/// The uid that opened handle `fh` (see `FogFs::handle_for`).
fn opener(fh: FileHandle, req: &Request) -> u32 {
    if fh.0 >> 32 & 1 == 1 { fh.0 as u32 } else { req.uid() }
}

/// How long the kernel may cache `a`'s attributes. Not at all for set-user-ID
/// and set-group-ID files: a write through a direct-I/O handle clears those
/// bits here, and after such a write the kernel refreshes only size and
/// times, so `stat -c %a` (a `statx` for the mode alone) would show the old
/// mode until the TTL ran out. Such files are rare on a records mount, so
/// the extra GETATTRs cost nothing.
fn attr_ttl(a: &Attr) -> Duration {
    if a.kind == FileKind::File && a.perm & 0o6000 != 0 { Duration::ZERO } else { TTL }
}

/// Whether a kernel of this release (`/proc/sys/kernel/osrelease`) keeps
/// other handles coherent with a direct-I/O write: it must write back dirty
/// pages of the range first and drop its cached pages both before and after
/// the write (a reader's read-ahead can cache the old bytes while the write
/// is in flight). Linux 6.6 added the drop before; the write-back and the
/// drop after came in 6.19 and reached the 6.18 and 6.12 stable series in
/// January 2026 (the sublevels below leave a margin). Other kernels keep
/// write-only handles cached.
fn kernel_keeps_direct_writes_coherent(release: &str) -> bool {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else { return false };
    let sublevel = parts.next().flatten().unwrap_or(0);
    match (major, minor) {
        (6, 18) => sublevel >= 5,
        (6, 12) => sublevel >= 66,
        version => version >= (6, 19),
    }
}

/// What a write drops besides writing. On direct-I/O handles the kernel
/// leaves it all to us and marks writes by a writer without `CAP_FSETID`
/// (on cached ones it has cleared both itself). Page-cache writeback of a
/// shared mapping keeps capabilities, as on a local disk.
fn drop_privs(flags: WriteFlags) -> DropPrivs {
    DropPrivs {
        capabilities: !flags.contains(WriteFlags::FUSE_WRITE_CACHE),
        setid: flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID),
    }
}

fn keep_cache(keep: bool) -> FopenFlags {
    if keep { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() }
}

fn empty(reply: ReplyEmpty, r: Result<(), Error>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn log_err(op: &str, e: &Error) {
    // Never log names or contents: only the operation and the error class.
    if matches!(e, Error::Integrity(_) | Error::Store(_) | Error::Metadata(_) | Error::Io(_)) {
        tracing::error!(op, error = %e, "operation failed");
    }
}

impl Filesystem for FogFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large writes: 1 MiB requests keep per-request overhead low.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_READ);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Always READDIRPLUS (not the kernel's adaptive mode, which lists only
        // the first batch of a directory with attributes): a walk that stats
        // every entry (find, tar, rsync, PACS scans) then needs no LOOKUP per
        // file; a bare `ls -f` pays ~4 µs per entry for the attributes.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.set_max_background(64);
        // With sessions, the kernel checks walks into vault folders itself
        // (see `walk_acl`). This turns on POSIX access lists for the whole
        // mount; none can be set (`setxattr` refuses `system.*`), so only
        // folder roots have one.
        if self.bound && config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_ok() {
            self.kernel_gates_walks.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.vault.shutdown() {
            tracing::error!(error = %e, "clean shutdown failed; the upload journal will be replayed at the next mount");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.is_bare_root(parent) {
            let r = if name == bound_root::ENTRY { self.vault.getattr(ROOT_INO) } else { Err(Error::NotFound) };
            return self.entry(reply, r);
        }
        let parent = self.v(parent);
        let r = self
            .allow(req.uid(), parent, Access::Read, true)
            .and_then(|()| self.vault.lookup(parent.0, name.as_bytes()))
            // A folder root is reached only by those who may list it (see
            // `entry_ttl`); where the kernel checks walks against its access
            // list, its entry is as public as `ls -l` of its parent shows.
            .and_then(|a| {
                if a.folder_root && !self.kernel_gates_walks() {
                    self.allow(req.uid(), INodeNo(a.ino), Access::Read, true).map(|()| a)
                } else {
                    Ok(a)
                }
            });
        if let Ok(a) = &r {
            self.observe_name(req.uid(), parent, name.as_bytes(), a);
        }
        self.entry(reply, r)
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.is_bare_root(ino) {
            return reply.attr(&TTL, &bound_root::root_attr());
        }
        let ino = self.v(ino);
        match self.allow(req.uid(), ino, Access::Read, false).and_then(|()| self.vault.getattr(ino.0)) {
            Ok(a) => reply.attr(&attr_ttl(&a), &self.shown(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = self.v(ino);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(from_system_time),
        };
        let what = if set.mode.is_some() {
            "chmod"
        } else if set.uid.is_some() || set.gid.is_some() {
            "chown"
        } else if set.size.is_some() {
            "truncate"
        } else {
            "times"
        };
        match self.allow(req.uid(), ino, Access::Write, false).and_then(|()| self.vault.setattr(ino.0, &set)) {
            Ok(a) => {
                let _ = self.observe(req.uid(), Touch::Permission { ino: ino.0, what });
                reply.attr(&attr_ttl(&a), &self.shown(&a))
            }
            Err(e) => {
                log_err("setattr", &e);
                reply.error(errno(&e))
            }
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let ino = self.v(ino);
        match self.allow(req.uid(), ino, Access::Read, false).and_then(|()| self.vault.readlink(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let parent = self.v(parent);
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => FileKind::File,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            _ => return reply.error(fuser::Errno::from_i32(libc::EINVAL)),
        };
        let r = self
            .allow(req.uid(), parent, Access::Write, true)
            .and_then(|()| self.vault.create_node(caller(req), parent.0, name.as_bytes(), kind, mode, rdev, b""));
        self.created(req.uid(), parent, name.as_bytes(), &r);
        self.entry(reply, r)
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let parent = self.v(parent);
        let r = self
            .allow(req.uid(), parent, Access::Write, true)
            .and_then(|()| self.vault.create_node(caller(req), parent.0, name.as_bytes(), FileKind::Dir, mode, 0, b""));
        self.created(req.uid(), parent, name.as_bytes(), &r);
        self.entry(reply, r)
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = self.v(parent);
        let r = self
            .allow(req.uid(), parent, Access::Write, true)
            .and_then(|()| self.vault.unlink(parent.0, name.as_bytes()));
        if r.is_ok() {
            let _ = self.observe(req.uid(), Touch::Delete { parent: parent.0, name: name.as_bytes() });
        }
        empty(reply, r)
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = self.v(parent);
        let r = self
            .allow(req.uid(), parent, Access::Write, true)
            .and_then(|()| self.vault.rmdir(parent.0, name.as_bytes()));
        if r.is_ok() {
            let _ = self.observe(req.uid(), Touch::Delete { parent: parent.0, name: name.as_bytes() });
        }
        empty(reply, r)
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let parent = self.v(parent);
        let t = target.as_os_str().as_bytes();
        let r = self.allow(req.uid(), parent, Access::Write, true).and_then(|()| {
            self.vault.create_node(caller(req), parent.0, link_name.as_bytes(), FileKind::Symlink, 0o777, 0, t)
        });
        self.created(req.uid(), parent, link_name.as_bytes(), &r);
        self.entry(reply, r)
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: FuseRenameFlags,
        reply: ReplyEmpty,
    ) {
        let parent = self.v(parent);
        let newparent = self.v(newparent);
        if flags.contains(FuseRenameFlags::RENAME_WHITEOUT) {
            return reply.error(fuser::Errno::from_i32(libc::EINVAL));
        }
        let f = RenameFlags {
            noreplace: flags.contains(FuseRenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(FuseRenameFlags::RENAME_EXCHANGE),
        };
        let uid = req.uid();
        let r = self
            .allow(uid, parent, Access::Write, true)
            .and_then(|()| self.allow(uid, newparent, Access::Write, true))
            .and_then(|()| self.vault.rename(parent.0, name.as_bytes(), newparent.0, newname.as_bytes(), f));
        if r.is_ok() {
            let (name, newname) = (name.as_bytes(), newname.as_bytes());
            let _ = self.observe(uid, Touch::Rename { parent: parent.0, name, newparent: newparent.0, newname });
        }
        empty(reply, r);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let ino = self.v(ino);
        let newparent = self.v(newparent);
        let r = self
            .allow(req.uid(), ino, Access::Write, false)
            .and_then(|()| self.allow(req.uid(), newparent, Access::Write, true))
            .and_then(|()| self.vault.link(ino.0, newparent.0, newname.as_bytes()));
        self.created(req.uid(), newparent, newname.as_bytes(), &r);
        self.entry(reply, r)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = self.v(ino);
        let trunc = flags.0 & libc::O_TRUNC != 0;
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || trunc;
        let access = if writes { Access::Write } else { Access::Read };
        let uid = req.uid();
        let r = self.allow(uid, ino, access, false).and_then(|()| self.vault.open_file(ino.0, trunc));
        if let Err(e) = r {
            return reply.error(errno(&e));
        }
        match self.opened(uid, ino.0, writes, false) {
            Ok((fh, a)) => {
                // close(2) of a read-only handle has nothing to make durable:
                // the kernel skips its FLUSH round trip (one of four requests
                // per file when a tree is read).
                let no_flush = if writes { FopenFlags::empty() } else { FopenFlags::FOPEN_NOFLUSH };
                reply.opened(fh, self.page_cache(uid, a.ino, a.domain) | no_flush | self.write_only(flags.0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ino = self.v(ino);
        let r = self.allow(opener(fh, req), ino, Access::Read, false);
        let uid = opener(fh, req);
        let r = r.and_then(|()| self.vault.read(ino.0, offset, size as usize)).and_then(|d| {
            self.observe(uid, Touch::Read { ino: ino.0, handle: fh.0, bytes: d.len() as u64 }).map(|()| d)
        });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => {
                log_err("read", &e);
                reply.error(errno(&e))
            }
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = self.v(ino);
        let r = self.allow(opener(fh, req), ino, Access::Write, false);
        let uid = opener(fh, req);
        let r = r
            .and_then(|()| self.vault.write_dropping(ino.0, offset, data, drop_privs(write_flags)))
            .and_then(|n| self.observe(uid, Touch::Write { ino: ino.0, handle: fh.0, bytes: n as u64 }).map(|()| n));
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => {
                log_err("write", &e);
                reply.error(errno(&e))
            }
        }
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let ino = self.v(ino);
        let _ = self.observe(opener(fh, req), Touch::Flush { handle: fh.0 });
        // close(2): commit and make durable, so data survives a crash after close returns.
        let r = self.vault.flush(ino.0, true);
        if let Err(e) = &r {
            log_err("flush", e);
        }
        empty(reply, r)
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let ino = self.v(ino);
        let r = self.vault.release(ino.0);
        if let Err(e) = &r {
            log_err("release", e);
        }
        let _ = self.observe(opener(fh, req), Touch::Release { handle: fh.0 });
        empty(reply, r)
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let ino = self.v(ino);
        let r = self.vault.fsync(ino.0);
        if let Err(e) = &r {
            log_err("fsync", e);
        }
        empty(reply, r)
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.is_bare_root(ino) {
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        let ino = self.v(ino);
        match self.allow(req.uid(), ino, Access::Read, true).and_then(|()| self.vault.getattr(ino.0)) {
            Ok(a) if a.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(fuser::Errno::from_i32(libc::ENOTDIR)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if self.is_bare_root(ino) {
            return reply.ok();
        }
        let ino = self.v(ino);
        if let Err(e) = self.allow(req.uid(), ino, Access::Read, true) {
            return reply.error(errno(&e));
        }
        let mut offset = offset;
        // The reply buffer holds a few dozen entries: read small batches
        // first so entries that do not fit are not decrypted for nothing.
        let mut want = 32;
        loop {
            let batch = match self.vault.readdir(ino.0, offset, want) {
                Ok(b) => b,
                Err(e) => return reply.error(errno(&e)),
            };
            if batch.is_empty() {
                return reply.ok();
            }
            want = (want * 2).min(256);
            for d in batch {
                if reply.add(self.f(d.ino), d.offset, file_type(d.kind), OsStr::from_bytes(&d.name)) {
                    return reply.ok();
                }
                offset = d.offset;
            }
        }
    }

    /// Entries with their attributes: saves one LOOKUP round trip per entry
    /// for `ls -l`, `find`, `tar` and PACS directory scans.
    fn readdirplus(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        if self.is_bare_root(ino) {
            return reply.ok();
        }
        let ino = self.v(ino);
        if let Err(e) = self.allow(req.uid(), ino, Access::Read, true) {
            return reply.error(errno(&e));
        }
        let mut offset = offset;
        let mut want = 16;
        loop {
            let batch = match self.vault.readdir_plus(ino.0, offset, want) {
                Ok(b) => b,
                Err(e) => return reply.error(errno(&e)),
            };
            if batch.is_empty() {
                return reply.ok();
            }
            want = (want * 2).min(256);
            for (d, attr) in batch {
                offset = d.offset;
                self.observe_name(req.uid(), ino, &d.name, &attr);
                let name = OsStr::from_bytes(&d.name);
                let ttl = self.entry_and_attr_ttl(&attr);
                if reply.add(self.f(d.ino), d.offset, name, &ttl, &self.shown(&attr), Generation(0)) {
                    return reply.ok();
                }
            }
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let ino = self.v(ino);
        empty(reply, self.vault.fsync(ino.0))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.vault.statfs();
        let b = BLOCK as u64;
        reply.statfs(
            s.total_bytes / b,
            s.free_bytes / b,
            s.free_bytes / b,
            u64::MAX / 2,
            u64::MAX / 4,
            BLOCK,
            255,
            BLOCK,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let ino = self.v(ino);
        let mode = if flags & libc::XATTR_CREATE != 0 {
            XattrMode::Create
        } else if flags & libc::XATTR_REPLACE != 0 {
            XattrMode::Replace
        } else {
            XattrMode::Any
        };
        let r = self.allow(req.uid(), ino, Access::Write, false);
        let r = r.and_then(|()| self.vault.setxattr(ino.0, name.as_bytes(), value, mode));
        if r.is_ok() {
            let _ = self.observe(req.uid(), Touch::Permission { ino: ino.0, what: "setxattr" });
        }
        empty(reply, r)
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let ino = self.v(ino);
        let r = self.allow(req.uid(), ino, Access::Read, false);
        let value = r.and_then(|()| match name.as_bytes() {
            walk_acl::ACCESS_XATTR => self.walk_acl(ino.0)?.ok_or(Error::NoAttr),
            walk_acl::DEFAULT_XATTR => Err(Error::NoAttr),
            name => self.vault.getxattr(ino.0, name),
        });
        match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(fuser::Errno::from_i32(libc::ERANGE)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let ino = self.v(ino);
        let names = self.allow(req.uid(), ino, Access::Read, false).and_then(|()| {
            let mut names = self.vault.listxattr(ino.0)?;
            if self.kernel_gates_walks() && self.vault.folder_walkers(ino.0)?.is_some() {
                names.push(walk_acl::ACCESS_XATTR.to_vec());
            }
            Ok(names)
        });
        match names {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() <= size as usize {
                    reply.data(&buf)
                } else {
                    reply.error(fuser::Errno::from_i32(libc::ERANGE))
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let ino = self.v(ino);
        let r = self.allow(req.uid(), ino, Access::Write, false);
        let r = r.and_then(|()| self.vault.removexattr(ino.0, name.as_bytes()));
        if r.is_ok() {
            let _ = self.observe(req.uid(), Touch::Permission { ino: ino.0, what: "removexattr" });
        }
        empty(reply, r)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let parent = self.v(parent);
        let r = self
            .allow(req.uid(), parent, Access::Write, true)
            .and_then(|()| self.vault.create_node(caller(req), parent.0, name.as_bytes(), FileKind::File, mode, 0, b""))
            .and_then(|a| self.vault.open_file(a.ino, flags & libc::O_TRUNC != 0).map(|()| a));
        if let Ok(a) = &r {
            self.observe_name(req.uid(), parent, name.as_bytes(), a);
        }
        let r = r.and_then(|a| self.opened(req.uid(), a.ino, true, true).map(|(fh, _)| (fh, a)));
        match r {
            Ok((fh, a)) => {
                let flags = self.page_cache(req.uid(), a.ino, a.domain) | self.write_only(flags);
                reply.created(&self.entry_and_attr_ttl(&a), &self.shown(&a), Generation(0), fh, flags)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let ino = self.v(ino);
        if let Err(e) = self.allow(opener(fh, req), ino, Access::Write, false) {
            return reply.error(errno(&e));
        }
        let r = match mode {
            0 => self.vault.fallocate(ino.0, offset, length, false),
            libc::FALLOC_FL_KEEP_SIZE => self.vault.fallocate(ino.0, offset, length, true),
            _ => Err(Error::NotSupported),
        };
        empty(reply, r)
    }
}

/// Mount options used by `fogvault mount`.
pub fn mount_config(allow_other: bool, threads: usize) -> Config {
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("fogvault".into()),
        MountOption::Subtype("fogvault".into()),
        // The kernel enforces POSIX modes; the daemon adds its own checks on top.
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        // A records mount runs no set-id programs and opens no device nodes.
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    if allow_other {
        cfg.acl = SessionACL::All;
    }
    cfg.n_threads = Some(threads);
    cfg.clone_fd = true;
    cfg
}

/// Mount `vault` at `mountpoint` and serve until unmounted (by `fusermount3 -u`
/// or by `stop` being triggered, e.g. from a signal handler).
pub fn serve(
    vault: Arc<Vault>,
    mountpoint: &Path,
    allow_other: bool,
    kernel_walks: bool,
    on_ready: impl FnOnce(Box<dyn FnMut() + Send>),
) -> std::io::Result<()> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8) * 2;
    let cfg = mount_config(allow_other, threads);
    // With sessions, and unless asked to check walks in the daemon, the vault
    // root is bound on the mountpoint from a private mount (see
    // `bound_root`); that takes root, as any bind mount does.
    let bound = kernel_walks && vault.has_gate() && nix::unistd::geteuid().is_root();
    let private = if bound { Some(bound_root::private_dir()?) } else { None };
    let fuse_at = private.as_deref().unwrap_or(mountpoint);
    let mut session = match fuser::Session::new(FogFs::new(Arc::clone(&vault), bound), fuse_at, &cfg) {
        Ok(s) => s,
        Err(e) => {
            if let Some(p) = &private {
                let _ = std::fs::remove_dir(p);
            }
            return Err(e);
        }
    };
    // Entries the vault changed on its own are dropped from the kernel's
    // dentry cache by a thread that owns the session's notifier (a handler
    // cannot notify while the kernel holds the locks of the request it serves).
    let notifier = session.notifier();
    let (tx, rx) = std::sync::mpsc::channel::<(INodeNo, std::ffi::OsString)>();
    vault.set_entry_hook(Some(Box::new(move |parent, name| {
        let _ = tx.send((kernel_ino(bound, parent), OsStr::from_bytes(name).to_os_string()));
    })));
    // A folder root's access list changed: the kernel must fetch it again.
    // Sent at once (the session change waits for it); an attribute-only
    // invalidation takes no lock a request in flight could hold.
    let acl_notifier = session.notifier();
    vault.set_walkers_hook(Some(Box::new(move |ino| {
        // ENOENT: the kernel has no such inode cached; nothing to drop.
        let _ = acl_notifier.inval_inode(kernel_ino(bound, ino), -1, 0);
    })));
    // Ends when the hook (and with it the sender) is dropped after the session.
    std::thread::Builder::new().name("fogvault-inval".into()).spawn(move || {
        for (parent, name) in rx {
            // ENOENT: the kernel had no such dentry; nothing to drop.
            let _ = notifier.inval_entry(parent, &name);
        }
    })?;
    // stat() of the mount is answered by this session, so ask from another
    // thread; binding the vault root needs its LOOKUP answered too.
    let binding = Arc::new(bound_root::Binding::default());
    {
        let (fuse_at, visible, binding) = (fuse_at.to_path_buf(), mountpoint.to_path_buf(), Arc::clone(&binding));
        std::thread::spawn(move || {
            raise_readahead(&fuse_at);
            if bound {
                binding.expose(&fuse_at, &visible);
            }
        });
    }
    let mut unmounter = session.unmount_callable();
    let (visible, stopper) = (mountpoint.to_path_buf(), Arc::clone(&binding));
    on_ready(Box::new(move || {
        // A bound mount ends when its bind goes (the private mount is
        // detached); before the bind exists, the private mount is the one.
        if !bound || !stopper.unmount(&visible) {
            let _ = unmounter.unmount();
        }
    }));
    let served = session.run();
    vault.set_entry_hook(None);
    vault.set_walkers_hook(None);
    if let Some(e) = binding.failure() {
        return Err(std::io::Error::new(e.kind(), format!("cannot bind the vault root on the mountpoint: {e}")));
    }
    served
}

/// The kernel offers FUSE mounts 128 KiB of readahead; sequential readers of
/// large DICOM series go much faster with 1 MiB (one request per chunk-sized
/// run). Best effort: needs root, and a failure only costs speed.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else { return };
    let dev = meta.dev();
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    if let Err(e) = std::fs::write(&path, "1024") {
        tracing::debug!(error = %e, "could not raise readahead");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_writes_only_on_kernels_that_keep_them_coherent() {
        for (release, want) in [
            ("6.18.44-fc-v669\n", true),
            ("6.19.0", true),
            ("7.0.1-arch1", true),
            ("6.18.2-1-default", false),
            ("6.18", false),
            ("6.12.57+deb13-amd64", false),
            ("6.12.70", true),
            ("6.6.120", false),
            ("6.1.0-18-amd64", false),
            ("5.15.0-91-generic", false),
            ("garbage", false),
            ("", false),
        ] {
            assert_eq!(kernel_keeps_direct_writes_coherent(release), want, "{release:?}");
        }
    }

    #[test]
    fn set_id_files_are_never_cached() {
        let file = |perm, kind| Attr {
            ino: 5,
            kind,
            size: 0,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            crtime: Timespec::default(),
            domain: 0,
            folder_root: false,
            decoy: false,
        };
        for perm in [0o4755, 0o2755, 0o6711, 0o2745] {
            assert_eq!(attr_ttl(&file(perm, FileKind::File)), Duration::ZERO, "{perm:o}");
            for kernel_gates_walks in [false, true] {
                let ttl = entry_and_attr_ttl(&file(perm, FileKind::File), kernel_gates_walks);
                assert_eq!(ttl, Duration::ZERO, "{perm:o}");
            }
        }
        assert_eq!(attr_ttl(&file(0o755, FileKind::File)), TTL);
        // A setgid directory hands down its group; no write clears it.
        assert_eq!(attr_ttl(&file(0o2775, FileKind::Dir)), TTL);
        let root = Attr { folder_root: true, ..file(0o755, FileKind::Dir) };
        // A folder root's entry is cached only where the kernel checks walks into it.
        assert_eq!(entry_and_attr_ttl(&root, false), Duration::ZERO);
        assert_eq!(entry_and_attr_ttl(&root, true), TTL);
    }

    #[test]
    fn bound_mounts_renumber_only_the_two_roots() {
        let vault_root = INodeNo(bound_root::VAULT_ROOT);
        assert_eq!(kernel_ino(true, ROOT_INO), vault_root);
        assert_eq!(vault_ino(true, vault_root), INodeNo(ROOT_INO));
        // The bare FUSE root is no inode of the vault's.
        assert_eq!(vault_ino(true, INodeNo(1)), INodeNo(bound_root::NOWHERE));
        for ino in [2, 77, (1 << 62) - 1] {
            assert_eq!(kernel_ino(true, ino), INodeNo(ino));
            assert_eq!(vault_ino(true, INodeNo(ino)), INodeNo(ino));
        }
        // Unbound mounts use the vault's numbers as they are.
        assert_eq!(kernel_ino(false, ROOT_INO), INodeNo(1));
        assert_eq!(vault_ino(false, INodeNo(1)), INodeNo(1));
    }

    #[test]
    fn writes_drop_what_the_kernel_left_to_us() {
        let direct_unprivileged = WriteFlags::FUSE_WRITE_KILL_SUIDGID | WriteFlags::FUSE_WRITE_LOCKOWNER;
        assert_eq!(drop_privs(direct_unprivileged), DropPrivs { capabilities: true, setid: true });
        assert_eq!(drop_privs(WriteFlags::empty()), DropPrivs::WRITE);
        assert_eq!(drop_privs(WriteFlags::FUSE_WRITE_CACHE), DropPrivs { capabilities: false, setid: false });
    }
}
