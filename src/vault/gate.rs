//! The access gate: who may touch which vault folder. The vault asks it
//! before any operation inside a folder; the session layer implements it.

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

pub trait AccessGate: Send + Sync {
    /// `Ok` if `uid` may have `access` to vault folder `domain` (never asked for
    /// domain 0, where POSIX modes alone apply); `Err(AccessDenied)` otherwise.
    fn check(&self, uid: u32, domain: u32, access: Access) -> Result<()>;

    /// A token that names `uid`'s live sessions and changes whenever they do
    /// (login, logout, expiry, lock); `None` without a session.
    fn session_token(&self, _uid: u32) -> Option<u64> {
        None
    }

    /// The uids `check` lets into folder `domain` now, ascending, each with
    /// whether it may write there: the mount lets the kernel check path walks
    /// into the folder against this list (see `Vault::folder_walkers`).
    fn walkers(&self, _domain: u32) -> Vec<Walker> {
        Vec::new()
    }
}

/// A uid the gate lets into a vault folder (see [`AccessGate::walkers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walker {
    pub uid: u32,
    pub write: bool,
}

/// At most this many uids may hold sessions in one vault folder at once: the
/// kernel reads a directory's access control list into one page (4 KiB, 8
/// bytes per entry), and the list names each of them.
pub const MAX_FOLDER_UIDS: usize = 500;

/// What a caller did, for the audit trail and insider detection. The
/// adapter reports each operation after it succeeded (and each refusal).
#[derive(Clone, Copy, Debug)]
pub enum Touch<'a> {
    /// `name` in `parent` is `ino` (lookup, create, readdir, rename target):
    /// lets the observer name files in its records.
    Name {
        parent: u64,
        name: &'a [u8],
        ino: u64,
        folder_root: bool,
    },
    /// A handle opened; `created` when the open made the file (O_CREAT):
    /// one event for both, so the trail has one record for them.
    Open {
        ino: u64,
        handle: u64,
        write: bool,
        created: bool,
        decoy: bool,
        domain: u32,
    },
    /// Bytes read or written through an open handle.
    Read {
        ino: u64,
        handle: u64,
        bytes: u64,
    },
    Write {
        ino: u64,
        handle: u64,
        bytes: u64,
    },
    /// A descriptor of the handle was closed (`close(2)` waits for this;
    /// the handle itself may live on in a `dup` or until `Release`).
    Flush {
        handle: u64,
    },
    Release {
        handle: u64,
    },
    Create {
        ino: u64,
    },
    Delete {
        parent: u64,
        name: &'a [u8],
    },
    Rename {
        parent: u64,
        name: &'a [u8],
        newparent: u64,
        newname: &'a [u8],
    },
    /// chmod, chown, utimens, truncate, xattr changes.
    Permission {
        ino: u64,
        what: &'static str,
    },
    Denied {
        ino: u64,
        write: bool,
    },
}

/// Told `(parent, name)` of an entry the vault removed or replaced on its
/// own, so the mount can drop it from the kernel's dentry cache.
pub type EntryHook = Box<dyn Fn(u64, &[u8]) + Send + Sync>;

/// Told the inode of a vault folder's root whose walkers (see
/// [`AccessGate::walkers`]) changed, so the mount can make the kernel fetch
/// its access control list again. Called synchronously: when the session
/// change that caused it returns, the kernel no longer holds the old list.
pub type WalkersHook = Box<dyn Fn(u64) + Send + Sync>;

pub trait Observer: Send + Sync {
    /// Record `touch` by `uid`. An `Err` (e.g. `AccessDenied` for a locked
    /// session or a decoy) makes the operation fail.
    fn observe(&self, uid: u32, touch: Touch<'_>) -> Result<()>;
}
