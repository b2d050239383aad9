//! The fog node's metadata index in LMDB: the only module that uses LMDB.
//!
//! Key layout (all integers big-endian so LMDB's byte order is numeric order):
//!
//! | database  | key                                   | value                                   |
//! |-----------|---------------------------------------|-----------------------------------------|
//! | `meta`    | ASCII name (`repo_id`, `next_ino`)     | raw bytes / u64 BE                      |
//! | `inodes`  | ino (u64)                             | sealed `InodeRecord` (folder key)       |
//! | `dirents` | parent ino (u64) ‖ name hash (u64)    | sealed `DirentRecord` (folder key)      |
//! | `chunks`  | chunk id (32 bytes, keyed BLAKE3)     | `ChunkEntry` (postcard, not secret)     |
//! | `orphans` | ino (u64)                             | empty: unlinked while open              |
//!
//! Sealed records bind their key in the AAD (`"inode" ‖ key`, `"dirent" ‖ key`)
//! so the stolen-disk attacker can neither read nor swap them.

mod schema;
mod store;

pub use schema::{ChunkEntry, DirentRecord, Extent, FileKind, InodeRecord, Timespec};
pub use store::{Metadata, ReadTx, Tx, WriteTx};
