//! Cha–Cheon identity-based signatures over BLS12-381.
//!
//! Sign: `r` random, `U = r·H1(ID)`, `h = H(msg ‖ U)`, `V = (r + h)·d_ID`.
//! Verify: `e(V, g2) == e(U + h·H1(ID), mpk)`, as one multi-Miller loop
//! `e(V, g2) · e(−(U + h·H1(ID)), mpk) == 1`.

use bls12_381::{G1Affine, G2Affine, G2Prepared, Scalar, multi_miller_loop};
use group::{Curve, Group};

use super::identity::{IdentityKey, MasterPublic, h1, random_scalar};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    pub u: G1Affine,
    pub v: G1Affine,
}

pub const SIGNATURE_LEN: usize = 96;

fn challenge(msg: &[u8], u: &G1Affine) -> Scalar {
    let mut h = blake3::Hasher::new_derive_key("fogvault v1 ibs challenge");
    h.update(&(msg.len() as u64).to_le_bytes());
    h.update(msg);
    h.update(&u.to_compressed());
    let mut wide = [0u8; 64];
    h.finalize_xof().fill(&mut wide);
    Scalar::from_bytes_wide(&wide)
}

pub fn sign(key: &IdentityKey, msg: &[u8]) -> Signature {
    let r = random_scalar();
    let u = (h1(&key.id) * r).to_affine();
    let h = challenge(msg, &u);
    let v = (key.d * (r + h)).to_affine();
    Signature { u, v }
}

pub fn verify(mpk: &MasterPublic, id: &str, msg: &[u8], sig: &Signature) -> bool {
    if bool::from(sig.u.is_identity()) || bool::from(sig.v.is_identity()) {
        return false;
    }
    let h = challenge(msg, &sig.u);
    let lhs = -(sig.u + h1(id) * h).to_affine();
    let g2 = G2Prepared::from(G2Affine::generator());
    let mpk = G2Prepared::from(mpk.0);
    bool::from(multi_miller_loop(&[(&sig.v, &g2), (&lhs, &mpk)]).final_exponentiation().is_identity())
}

impl Signature {
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        let mut b = [0u8; SIGNATURE_LEN];
        b[..48].copy_from_slice(&self.u.to_compressed());
        b[48..].copy_from_slice(&self.v.to_compressed());
        b
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let u: [u8; 48] = b.get(..48)?.try_into().ok()?;
        let v: [u8; 48] = b.get(48..96)?.try_into().ok()?;
        let u = Option::from(G1Affine::from_compressed(&u))?;
        let v = Option::from(G1Affine::from_compressed(&v))?;
        Some(Signature { u, v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::MasterSecret;

    #[test]
    fn sign_verify_and_reject() {
        let msk = MasterSecret::generate();
        let mpk = msk.public();
        let alice = msk.extract("alice");
        assert!(alice.is_valid_for(&mpk));
        let sig = sign(&alice, b"transcript");
        assert!(verify(&mpk, "alice", b"transcript", &sig));
        assert!(!verify(&mpk, "bob", b"transcript", &sig), "wrong identity");
        assert!(!verify(&mpk, "alice", b"other", &sig), "wrong message");
        assert!(!verify(&MasterSecret::generate().public(), "alice", b"transcript", &sig), "wrong authority");
        let other = MasterSecret::generate().extract("alice");
        assert!(!other.is_valid_for(&mpk));
        assert!(!verify(&mpk, "alice", b"transcript", &sign(&other, b"transcript")), "key from another master");
        let rt = Signature::from_bytes(&sig.to_bytes()).unwrap();
        assert_eq!(rt, sig);
    }
}
