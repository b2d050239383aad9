//! Folder-key wraps: ECIES in G1 to a recipient's enrolment public key
//! (DESIGN.md §3 "folder keys"), key-check values, and the key chain that
//! lets the holder of a folder's newest key recover its older versions.
//!
//! wrap: `r` random, `R = r·g1`, `K = derive_key("fogvault v1 folder key wrap",
//! (r·E) ‖ R ‖ E ‖ folder ‖ version ‖ recipient)`, `sealed = XChaCha20-Poly1305(K, FK)`.

use bls12_381::{G1Affine, Scalar};
use group::Curve;
use serde::{Deserialize, Serialize};

use super::identity::random_scalar;
use crate::crypto::{self, Key32};

/// A recipient's enrolment secret `e` (the public key is `E = e·g1`).
pub struct EnrolSecret(Scalar);

impl Drop for EnrolSecret {
    fn drop(&mut self) {
        self.0 = Scalar::zero();
    }
}

impl EnrolSecret {
    pub fn generate() -> Self {
        EnrolSecret(random_scalar())
    }

    /// Deterministic secret from seed bytes (the admin's, from its master secret).
    pub fn derive(context: &str, seed: &[u8]) -> Self {
        let mut wide = [0u8; 64];
        blake3::Hasher::new_derive_key(context).update(seed).finalize_xof().fill(&mut wide);
        let s = Scalar::from_bytes_wide(&wide);
        wide.fill(0);
        EnrolSecret(s)
    }

    pub fn public(&self) -> [u8; 48] {
        (G1Affine::generator() * self.0).to_affine().to_compressed()
    }

    pub(crate) fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub(crate) fn from_bytes(b: &[u8; 32]) -> Option<Self> {
        Option::<Scalar>::from(Scalar::from_bytes(b)).map(EnrolSecret)
    }
}

/// One folder key wrapped to one recipient.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Wrap {
    pub recipient: String,
    #[serde(with = "hex::serde")]
    pub eph: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub sealed: Vec<u8>,
}

fn wrap_key(shared: &G1Affine, eph: &[u8], to: &[u8], folder: u32, version: u32, recipient: &str) -> Key32 {
    let mut h = blake3::Hasher::new_derive_key("fogvault v1 folder key wrap");
    h.update(&shared.to_compressed());
    h.update(eph);
    h.update(to);
    h.update(&folder.to_be_bytes());
    h.update(&version.to_be_bytes());
    h.update(recipient.as_bytes());
    Key32::from_bytes(*h.finalize().as_bytes())
}

fn wrap_aad(folder: u32, version: u32, recipient: &str) -> Vec<u8> {
    format!("fogvault folder key {folder} v{version} for {recipient}").into_bytes()
}

fn point(b: &[u8]) -> Option<G1Affine> {
    let b: [u8; 48] = b.try_into().ok()?;
    Option::<G1Affine>::from(G1Affine::from_compressed(&b)).filter(|p| !bool::from(p.is_identity()))
}

/// Wrap `fk` (folder `folder`, key version `version`) to the enrolment public key `to`.
pub fn wrap(fk: &Key32, to: &[u8], folder: u32, version: u32, recipient: &str) -> Option<Wrap> {
    let e = point(to)?;
    let r = random_scalar();
    let eph = (G1Affine::generator() * r).to_affine().to_compressed();
    let shared = (e * r).to_affine();
    let k = wrap_key(&shared, &eph, to, folder, version, recipient);
    let sealed = crypto::seal(&k, &wrap_aad(folder, version, recipient), fk.as_bytes());
    Some(Wrap { recipient: recipient.to_string(), eph: eph.to_vec(), sealed })
}

/// Unwrap with the recipient's enrolment secret; None if it is not theirs or was altered.
pub fn unwrap(w: &Wrap, sk: &EnrolSecret, folder: u32, version: u32) -> Option<Key32> {
    let eph = point(&w.eph)?;
    let shared = (eph * sk.0).to_affine();
    let k = wrap_key(&shared, &w.eph, &sk.public(), folder, version, &w.recipient);
    let plain = zeroize::Zeroizing::new(crypto::open(&k, &wrap_aad(folder, version, &w.recipient), &w.sealed).ok()?);
    Some(Key32::from_bytes(plain.as_slice().try_into().ok()?))
}

/// Public check value of a folder key: the fog node accepts a key from a
/// session only if it matches the signed policy.
pub fn key_check(fk: &Key32, folder: u32, version: u32) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(fk.derive("folder key check").as_bytes());
    h.update(&folder.to_be_bytes());
    h.update(&version.to_be_bytes());
    *h.finalize().as_bytes()
}

fn chain_aad(folder: u32, older: u32) -> Vec<u8> {
    format!("fogvault folder key chain {folder} v{older}").into_bytes()
}

/// Seal the key of version `older` under the key of version `older + 1`.
pub fn chain_seal(newer: &Key32, older_key: &Key32, folder: u32, older: u32) -> Vec<u8> {
    crypto::seal(&newer.derive("folder key chain"), &chain_aad(folder, older), older_key.as_bytes())
}

pub fn chain_open(newer: &Key32, sealed: &[u8], folder: u32, older: u32) -> Option<Key32> {
    let plain = zeroize::Zeroizing::new(
        crypto::open(&newer.derive("folder key chain"), &chain_aad(folder, older), sealed).ok()?,
    );
    Some(Key32::from_bytes(plain.as_slice().try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_rejections() {
        let alice = EnrolSecret::generate();
        let mallory = EnrolSecret::generate();
        let fk = Key32::random();
        let w = wrap(&fk, &alice.public(), 7, 2, "alice").unwrap();
        assert_eq!(unwrap(&w, &alice, 7, 2).unwrap().as_bytes(), fk.as_bytes());
        assert!(unwrap(&w, &mallory, 7, 2).is_none(), "another recipient's secret");
        assert!(unwrap(&w, &alice, 7, 3).is_none(), "wrong version");
        assert!(unwrap(&w, &alice, 8, 2).is_none(), "wrong folder");
        let mut renamed = w.clone();
        renamed.recipient = "mallory".into();
        assert!(unwrap(&renamed, &alice, 7, 2).is_none(), "recipient is bound");
        let mut flipped = w.clone();
        flipped.sealed[30] ^= 1;
        assert!(unwrap(&flipped, &alice, 7, 2).is_none());
        assert!(wrap(&fk, &[0u8; 48], 7, 2, "x").is_none(), "not a point");
    }

    #[test]
    fn chain_and_check() {
        let (v1, v2) = (Key32::random(), Key32::random());
        let c = chain_seal(&v2, &v1, 3, 1);
        assert_eq!(chain_open(&v2, &c, 3, 1).unwrap().as_bytes(), v1.as_bytes());
        assert!(chain_open(&v1, &c, 3, 1).is_none(), "the old key cannot open the chain forward");
        assert_ne!(key_check(&v1, 3, 1), key_check(&v2, 3, 1));
        assert_ne!(key_check(&v1, 3, 1), key_check(&v1, 3, 2));
    }
}
