//! Keys, key derivation, sealing and the chunk envelope. Pure functions: no I/O.
//!
//! Every derivation is domain-separated with a `blake3::derive_key` context of
//! the form `"fogvault v1 <purpose>"`.

mod envelope;
mod keys;
mod passphrase;
mod seal;

pub use envelope::{
    ChunkId, ENVELOPE_OVERHEAD, open_chunk, open_chunk_checked, open_chunk_into, seal_chunk, seal_chunk_into,
};
pub use keys::{Key32, VaultKeys, random_bytes, random_nonce};
pub use passphrase::{KdfParams, derive_kek};
pub use seal::{SEAL_OVERHEAD, open, seal, seal_append};

/// Authentication failed: wrong key, or the bytes were altered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("authentication failed")]
pub struct AuthError;
