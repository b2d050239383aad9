//! Random-nonce XChaCha20-Poly1305 sealing for records and headers:
//! `nonce (24) ‖ ciphertext ‖ tag (16)`. The AAD binds a record to where it lives.

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{AuthError, Key32, random_nonce};

pub const SEAL_OVERHEAD: usize = 24 + 16;

pub fn seal(key: &Key32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    seal_append(key, aad, plaintext, &mut out);
    out
}

/// `seal`, appending the sealed bytes to `out`: a caller that seals many
/// small records (the audit log) reuses one buffer instead of allocating.
pub fn seal_append(key: &Key32, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let nonce = random_nonce();
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), aad, (&mut out[start..]).into())
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory sizes");
    out.extend_from_slice(&tag);
}

pub fn open(key: &Key32, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(AuthError);
    }
    let (nonce, ct) = sealed.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| AuthError)?;
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher.decrypt(&XNonce::from(nonce), Payload { msg: ct, aad }).map_err(|_| AuthError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let k = Key32::random();
        let s = seal(&k, b"aad", b"hello");
        assert_eq!(open(&k, b"aad", &s).unwrap(), b"hello");
        assert_eq!(open(&k, b"other", &s), Err(AuthError));
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert_eq!(open(&k, b"aad", &t), Err(AuthError));
        }
        assert_eq!(open(&Key32::random(), b"aad", &s), Err(AuthError));
        assert_eq!(open(&k, b"aad", &s[..10]), Err(AuthError));
    }

    #[test]
    fn seal_append_keeps_what_was_in_the_buffer() {
        let k = Key32::random();
        let mut out = b"prefix".to_vec();
        seal_append(&k, b"aad", b"record", &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out.len(), 6 + SEAL_OVERHEAD + 6);
        assert_eq!(open(&k, b"aad", &out[6..]).unwrap(), b"record");
    }
}
