//! fogvault: an encrypted, deduplicating FUSE filesystem for medical records
//! kept in untrusted object storage. See docs/ARCHITECTURE.md.

pub mod audit;
pub mod chunk_store;
pub mod chunking;
pub mod crypto;
pub mod durable_fs;
pub mod error;
pub mod fuse_adapter;
pub mod maintenance;
pub mod metadata;
pub mod recover;
pub mod repo;
pub mod session;
pub mod tools;
pub mod vault;

pub use error::{Error, Result};
