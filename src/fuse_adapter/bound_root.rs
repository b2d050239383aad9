//! Why a mount with sessions is a bind mount. The kernel checks path walks
//! into vault folders against access lists (`walk_acl`), and caches each
//! inode's list, except the FUSE root's: it makes that inode before the
//! daemon's INIT reply says the mount has access lists, marks it "never
//! cache" (`ACL_DONT_CACHE`), and current kernels keep that mark for the
//! mount's life. Every walk through the root by anyone but its owner would
//! then ask the daemon for the list, costing what the kernel-side gate saves.
//!
//! So, when the daemon runs as root and the vault has sessions, the FUSE
//! root is a bare directory with one entry, the vault root, made after INIT.
//! The file system is mounted in a private directory, the vault root is
//! bind-mounted on the mountpoint, and the private mount is detached at
//! once: the bind is the only way in, and unmounting it ends the file system
//! (the daemon then exits as after any unmount). The bind keeps the mount's
//! options (`nosuid,nodev`, `allow_other`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};

/// The inode number the kernel uses for the mount's own root.
pub const FUSE_ROOT: u64 = 1;
/// The vault root's inode number as the kernel sees it on a bound mount:
/// outside the range the vault allocates ([2, 2^62)).
pub const VAULT_ROOT: u64 = 1 << 62;
/// The FUSE root's one entry.
pub const ENTRY: &str = "vault";
/// What the FUSE root is to the vault on a bound mount: no inode at all.
pub const NOWHERE: u64 = u64::MAX;

/// Where the file system is mounted before its vault root is bound to the
/// mountpoint: a fresh directory only root may enter.
pub fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = Path::new("/run/fogvault");
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(base)?;
    clear_abandoned(base);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let dir = base.join(format!("fuse-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Detach and remove private directories of daemons that died before
/// binding (their pid is gone): each may still hold a dead FUSE mount.
fn clear_abandoned(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("fuse-")).and_then(|n| n.split('-').next()) else {
            continue;
        };
        let alive =
            pid.parse::<i32>().is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());
        if !alive {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// What the threads of a bound mount share.
#[derive(Default)]
pub struct Binding {
    /// The file system's device once the vault root is bound (0 before).
    dev: AtomicU64,
    /// Set when the daemon is asked to stop.
    stopping: AtomicBool,
    /// Why binding failed, unless it failed because the daemon was stopping.
    failed: parking_lot::Mutex<Option<io::Error>>,
}

impl Binding {
    /// Bind the vault root (the entry of the file system mounted at
    /// `private`) on `mountpoint`, then detach the private mount and remove
    /// its directory. On failure the private mount is detached too, which
    /// ends the session.
    pub fn expose(&self, private: &Path, mountpoint: &Path) {
        match bind(private, mountpoint) {
            Ok(dev) => {
                self.dev.store(dev, Ordering::SeqCst);
                // Asked to stop while binding: the bind is the mount now.
                if self.stopping.load(Ordering::SeqCst) {
                    let _ = nix::mount::umount(mountpoint);
                }
            }
            Err(e) => {
                if !self.stopping.load(Ordering::SeqCst) {
                    *self.failed.lock() = Some(e);
                }
                let _ = nix::mount::umount2(private, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir(private);
            }
        }
    }

    /// Unmount the bind at `mountpoint` if it is still this file system's;
    /// `false` if the vault root is not bound yet (the private mount is the
    /// one to unmount then).
    pub fn unmount(&self, mountpoint: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.stopping.store(true, Ordering::SeqCst);
        let dev = self.dev.load(Ordering::SeqCst);
        if dev == 0 {
            return false;
        }
        // Someone may have mounted something else there since our bind went.
        if std::fs::metadata(mountpoint).is_ok_and(|m| m.dev() == dev) {
            let _ = nix::mount::umount(mountpoint);
        }
        true
    }

    /// The error that kept the vault root from being bound, if any.
    pub fn failure(&self) -> Option<io::Error> {
        self.failed.lock().take()
    }
}

/// Bind, detach, clean up; the file system's device number.
fn bind(private: &Path, mountpoint: &Path) -> io::Result<u64> {
    use nix::mount::{MntFlags, MsFlags};
    use std::os::unix::fs::MetadataExt;
    let entry = private.join(ENTRY);
    let dev = std::fs::metadata(&entry)?.dev();
    nix::mount::mount(Some(&entry), mountpoint, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    nix::mount::umount2(private, MntFlags::MNT_DETACH)?;
    std::fs::remove_dir(private)?;
    Ok(dev)
}

/// The FUSE root's attributes: a root-owned directory only root may list.
pub fn root_attr() -> FileAttr {
    let t = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(FUSE_ROOT),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: FileType::Directory,
        perm: 0o500,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}
