//! Random-nonce XChaCha20-Poly1305 sealing for records and headers:
//! `nonce (24) ‖ ciphertext ‖ tag (16)`. The AAD binds a record to where it lives.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{AuthError, Key32, random_bytes};

pub const SEAL_OVERHEAD: usize = 24 + 16;

pub fn seal(key: &Key32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let mut nonce = [0u8; 24];
    random_bytes(&mut nonce);
    let ct = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory sizes");
    let mut out = Vec::with_capacity(24 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
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
}
