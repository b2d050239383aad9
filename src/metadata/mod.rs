//! The fog node's metadata index in LMDB: the only module that uses LMDB.
//!
//! Key layout (all integers big-endian so LMDB's byte order is numeric order):
//!
//! | database  | key                                   | value                                   |
//! |-----------|---------------------------------------|-----------------------------------------|
//! | `meta`    | ASCII name (`repo_id`, `dver/<domain hex>`, `folder/<domain hex>`) | raw bytes / u64 BE / u32 BE |
//! | `inodes`  | ino (u64)                             | domain u32 ‖ content domain u32 ‖ key version u32 ‖ sealed `InodeRecord` |
//! | `dirents` | parent ino (u64) ‖ name hash (u64)    | domain u32 ‖ key version u32 ‖ sealed `DirentRecord` |
//! | `chunks`  | chunk id (32 bytes, keyed BLAKE3)     | `ChunkEntry` (postcard, not secret)     |
//! | `orphans` | ino (u64)                             | empty: unlinked while open              |
//! | `journal` | commit sequence number (u64)          | postcard `Vec<Change>`: a committed transaction not yet in the cloud |
//!
//! Every write transaction also appends its changes to `journal` (same
//! commit, so nothing is lost by a crash); the vault's metadata sync uploads
//! them as the cloud's metadata journal (`cloud`) and then drops them here.
//! `meta` keys under `local/` (journal positions, the cloud root last seen)
//! describe this fog node only and are never journaled.
//!
//! Sealed records bind their key and clear prefix in the AAD (`"inode" ‖ key ‖
//! prefix`) so the stolen-disk attacker can neither read nor swap them. Each
//! record is sealed with the keys of its *domain*: 0 is the root folder (keys
//! from the repository root secret); a vault folder's domain uses keys from its
//! folder key, which the index holds in RAM only while a session supplied it.
//! The name hash of a directory entry is keyed by the domain of its parent's
//! entries; `dver/<domain>` is the key version a folder's records use now.

pub mod cloud;
mod schema;
mod store;

pub use schema::{ChunkEntry, DirentRecord, Extent, FileKind, InodeRecord, Timespec};
pub use store::{Change, CommitBarrier, DomainKeys, Metadata, ROOT_DOMAIN, ReadTx, Table, Tx, WriteTx};
