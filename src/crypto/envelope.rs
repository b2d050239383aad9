//! The convergent chunk envelope.
//!
//! `id = BLAKE3-keyed(K_id, plaintext)`, `ck = BLAKE3-keyed(K_ck, id)`,
//! envelope = XChaCha20-Poly1305(ck, nonce = id[..24], AAD = id ‖ version)
//! over `body ‖ codec (1)`, where codec 0 = raw, 1 = zstd.
//! Identical plaintext → identical id and envelope, from any user or folder,
//! so dedup needs nobody's help; without `K_dd` nobody can confirm a guess.

use std::cell::RefCell;

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use super::{AuthError, VaultKeys};

pub const ENVELOPE_VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// Codec byte + Poly1305 tag.
pub const ENVELOPE_OVERHEAD: usize = 1 + TAG_LEN;

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 1;
/// Compress only when a sample shrinks by at least 1/16: skips the cost of
/// compressing already-compressed DICOM pixel data and encrypted payloads.
const SAMPLE: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(keys: &VaultKeys, plaintext: &[u8]) -> Self {
        ChunkId(*blake3::keyed_hash(keys.id.as_bytes(), plaintext).as_bytes())
    }
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkId({})", &self.hex()[..16])
    }
}

fn cipher_for(keys: &VaultKeys, id: &ChunkId) -> (XChaCha20Poly1305, XNonce, [u8; 33]) {
    let ck = blake3::keyed_hash(keys.chunk.as_bytes(), &id.0);
    let cipher = XChaCha20Poly1305::new(ck.as_bytes().into());
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&id.0[..24]);
    let mut aad = [0u8; 33];
    aad[..32].copy_from_slice(&id.0);
    aad[32] = ENVELOPE_VERSION;
    (cipher, XNonce::from(nonce), aad)
}

thread_local! {
    // One zstd context per thread: creating one per chunk (allocating and
    // clearing its tables) cost more than compressing a small file.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| {
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        c.as_mut()?.compress(data).ok()
    })
}

fn decompress(data: &[u8], max_len: usize) -> Option<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        if d.is_none() {
            *d = zstd::bulk::Decompressor::new().ok();
        }
        d.as_mut()?.decompress(data, max_len).ok()
    })
}

fn compress_if_useful(plaintext: &[u8]) -> Option<Vec<u8>> {
    let sample = &plaintext[..plaintext.len().min(SAMPLE)];
    let probe = compress(sample)?;
    if probe.len() + sample.len() / 16 > sample.len() {
        return None;
    }
    let full = compress(plaintext)?;
    (full.len() < plaintext.len()).then_some(full)
}

/// Encrypt one chunk whose id is `id` (computed by the caller with `ChunkId::of`).
pub fn seal_chunk(keys: &VaultKeys, id: &ChunkId, plaintext: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    seal_chunk_into(keys, id, plaintext, &mut body);
    body
}

/// [`seal_chunk`] into `body` (cleared first), so a caller can reuse one buffer.
pub fn seal_chunk_into(keys: &VaultKeys, id: &ChunkId, plaintext: &[u8], body: &mut Vec<u8>) {
    // In place: one copy of the plaintext, room for the tag reserved up front.
    body.clear();
    body.reserve(plaintext.len() + ENVELOPE_OVERHEAD);
    // The codec byte trails the body so opening can drop it without a copy.
    match compress_if_useful(plaintext) {
        Some(c) => {
            body.extend_from_slice(&c);
            body.push(CODEC_ZSTD);
        }
        None => {
            body.extend_from_slice(plaintext);
            body.push(CODEC_RAW);
        }
    }
    let (cipher, nonce, aad) = cipher_for(keys, id);
    cipher.encrypt_in_place(&nonce, &aad, body).expect("XChaCha20-Poly1305 encryption cannot fail for chunk sizes");
}

/// Decrypt and authenticate a chunk envelope. `max_len` bounds decompression
/// so a hostile envelope cannot make us allocate without limit. The AEAD key
/// and AAD are bound to `id`, so a forgery needs `K_ck`; `verify --deep` uses
/// [`open_chunk_checked`] to also re-hash the plaintext.
pub fn open_chunk(keys: &VaultKeys, id: &ChunkId, envelope: &[u8], max_len: usize) -> Result<Vec<u8>, AuthError> {
    open_inner(keys, id, envelope, max_len)
}

/// [`open_chunk`] plus the content-address check: the plaintext must hash to `id`.
pub fn open_chunk_checked(
    keys: &VaultKeys,
    id: &ChunkId,
    envelope: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, AuthError> {
    let plaintext = open_inner(keys, id, envelope, max_len)?;
    if ChunkId::of(keys, &plaintext) != *id {
        return Err(AuthError);
    }
    Ok(plaintext)
}

fn open_inner(keys: &VaultKeys, id: &ChunkId, envelope: &[u8], max_len: usize) -> Result<Vec<u8>, AuthError> {
    let mut plaintext = Vec::new();
    open_chunk_into(keys, id, envelope, max_len, &mut plaintext)?;
    Ok(plaintext)
}

/// [`open_chunk`] into `out` (a reused buffer: its old bytes are overwritten,
/// never zeroed first). The envelope is authenticated where it lies and
/// decrypted straight into `out`, one pass over the bytes.
pub fn open_chunk_into(
    keys: &VaultKeys,
    id: &ChunkId,
    envelope: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), AuthError> {
    let body_len = envelope.len().checked_sub(TAG_LEN).ok_or(AuthError)?;
    let (body, tag) = envelope.split_at(body_len);
    let tag = Tag::try_from(tag).map_err(|_| AuthError)?;
    out.resize(body_len, 0);
    let (cipher, nonce, aad) = cipher_for(keys, id);
    let inout = InOutBuf::new(body, out).map_err(|_| AuthError)?;
    cipher.decrypt_inout_detached(&nonce, &aad, inout, &tag).map_err(|_| AuthError)?;
    match out.pop() {
        Some(CODEC_RAW) => Ok(()),
        Some(CODEC_ZSTD) => {
            *out = decompress(out, max_len).ok_or(AuthError)?;
            Ok(())
        }
        _ => Err(AuthError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key32;

    fn keys() -> VaultKeys {
        VaultKeys::derive(&Key32::random())
    }

    #[test]
    fn convergent_and_authenticated() {
        let k = keys();
        for data in
            [vec![7u8; 100_000], (0..50_000u32).flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes()).collect()]
        {
            let id = ChunkId::of(&k, &data);
            let a = seal_chunk(&k, &id, &data);
            let b = seal_chunk(&k, &id, &data);
            assert_eq!(a, b, "same plaintext must give the same envelope");
            assert_eq!(open_chunk_checked(&k, &id, &a, 1 << 24).unwrap(), data);
            let mut t = a.clone();
            t[a.len() / 2] ^= 0x40;
            assert!(open_chunk(&k, &id, &t, 1 << 24).is_err());
            let other = ChunkId::of(&k, b"x");
            assert!(open_chunk(&k, &other, &a, 1 << 24).is_err());
        }
    }

    #[test]
    fn compressible_data_shrinks() {
        let k = keys();
        let data = b"Patient report: normal findings. ".repeat(10_000);
        let id = ChunkId::of(&k, &data);
        assert!(seal_chunk(&k, &id, &data).len() < data.len() / 4);
    }

    #[test]
    fn different_vault_keys_differ() {
        let (k1, k2) = (keys(), keys());
        let data = vec![1u8; 1000];
        assert_ne!(ChunkId::of(&k1, &data), ChunkId::of(&k2, &data));
    }
}
