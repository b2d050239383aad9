//! Record types stored in LMDB.

use serde::{Deserialize, Serialize};

use crate::chunk_store::Location;
use crate::crypto::ChunkId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timespec {
    pub secs: i64,
    pub nanos: u32,
}

impl Timespec {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timespec { secs: d.as_secs() as i64, nanos: d.subsec_nanos() }
    }
}

/// A run of file bytes: either one chunk, or a hole that reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub len: u64,
    pub chunk: Option<ChunkId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeRecord {
    pub kind: FileKind,
    /// Permission bits (`0o7777`); the type lives in `kind`.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    /// For regular files always the sum of `extents` lengths.
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
    pub extents: Vec<Extent>,
    /// Symlink target.
    pub target: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Parent directory (directories only: they have exactly one).
    pub parent: u64,
    /// Key domain (vault folder) whose key seals this record; 0 = root folder.
    pub domain: u32,
    /// Non-zero on the root directory of a vault folder: the domain of its entries.
    pub folder_root: u32,
    /// A decoy record planted by the fog node (never shown on the mount;
    /// touching it raises an alert).
    pub decoy: bool,
}

impl InodeRecord {
    pub fn new(kind: FileKind, perm: u32, uid: u32, gid: u32) -> Self {
        let now = Timespec::now();
        InodeRecord {
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            rdev: 0,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            extents: Vec::new(),
            target: Vec::new(),
            xattrs: Vec::new(),
            parent: 0,
            domain: 0,
            folder_root: 0,
            decoy: false,
        }
    }

    /// The domain this inode's directory entries are sealed in.
    pub fn content_domain(&self) -> u32 {
        if self.folder_root != 0 { self.folder_root } else { self.domain }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirentRecord {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
}

/// The chunk index: where a chunk lives and how many extents reference it.
/// A chunk whose count drops to zero stays indexed (a later write of the
/// same bytes revives it) until garbage collection repacks it away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub loc: Location,
    pub plain_len: u32,
    pub refs: u64,
}
