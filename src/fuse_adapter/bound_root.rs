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
use std::time::{Duration, SystemTime};

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
        let alive = pid.parse::<i32>().is_ok_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() || pid == std::process::id() as i32
        });
        if !alive {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Bind the vault root (the entry of the file system mounted at `private`)
/// on `mountpoint`, then detach the private mount and remove its directory.
pub fn expose(private: &Path, mountpoint: &Path) -> io::Result<()> {
    use nix::mount::{MntFlags, MsFlags};
    nix::mount::mount(Some(&private.join(ENTRY)), mountpoint, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    nix::mount::umount2(private, MntFlags::MNT_DETACH)?;
    std::fs::remove_dir(private)?;
    Ok(())
}

/// The FUSE root's attributes: a root-owned directory only root may list.
pub fn root_attr() -> FileAttr {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(0);
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
