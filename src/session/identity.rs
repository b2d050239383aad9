//! Master keys and identity keys. `H1(ID)` is hash-to-curve into G1 with
//! DST `FOGVAULT-V1-ID`; `d_ID = s·H1(ID)`; `mpk = s·g2`.

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{G1Affine, G1Projective, G2Affine, G2Prepared, Scalar, multi_miller_loop};
use group::{Curve, Group};
use zeroize::Zeroize;

use crate::crypto::random_bytes;

const ID_DST: &[u8] = b"FOGVAULT-V1-ID";

pub(crate) fn h1(id: &str) -> G1Projective {
    <G1Projective as HashToCurve<ExpandMsgXmd<sha2::Sha256>>>::hash_to_curve([id.as_bytes()], ID_DST)
}

pub(crate) fn random_scalar() -> Scalar {
    let mut wide = [0u8; 64];
    random_bytes(&mut wide);
    let s = Scalar::from_bytes_wide(&wide);
    wide.zeroize();
    s
}

/// The admin's master secret `s` (kept off the fog node).
pub struct MasterSecret {
    s: Scalar,
}

impl Drop for MasterSecret {
    fn drop(&mut self) {
        self.s = Scalar::zero();
    }
}

/// `mpk = s·g2`, published in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasterPublic(pub G2Affine);

impl MasterSecret {
    pub fn generate() -> Self {
        MasterSecret { s: random_scalar() }
    }

    pub(crate) fn scalar(&self) -> Scalar {
        self.s
    }

    pub(crate) fn from_scalar(s: Scalar) -> Self {
        MasterSecret { s }
    }

    pub fn public(&self) -> MasterPublic {
        MasterPublic((G2Affine::generator() * self.s).to_affine())
    }

    /// Issue the identity key of `id`.
    pub fn extract(&self, id: &str) -> IdentityKey {
        IdentityKey { id: id.to_string(), d: (h1(id) * self.s).to_affine() }
    }
}

impl MasterPublic {
    pub fn to_bytes(&self) -> [u8; 96] {
        self.0.to_compressed()
    }
    pub fn from_bytes(b: &[u8; 96]) -> Option<Self> {
        Option::from(G2Affine::from_compressed(b)).filter(|p: &G2Affine| !bool::from(p.is_identity())).map(MasterPublic)
    }
}

/// A user's or the fog node's private identity key.
#[derive(Clone)]
pub struct IdentityKey {
    pub id: String,
    pub(crate) d: G1Affine,
}

impl Drop for IdentityKey {
    fn drop(&mut self) {
        self.d = G1Affine::identity();
    }
}

impl IdentityKey {
    pub(crate) fn to_bytes(&self) -> [u8; 48] {
        self.d.to_compressed()
    }

    /// Rebuild a key from its id and compressed point (None if not a point).
    pub(crate) fn from_parts(id: &str, d: &[u8]) -> Option<Self> {
        let b: [u8; 48] = d.try_into().ok()?;
        let d: Option<G1Affine> = G1Affine::from_compressed(&b).into();
        Some(IdentityKey { id: id.to_string(), d: d? })
    }

    /// Check the key against `mpk`: `e(d, g2) == e(H1(id), mpk)`.
    pub fn is_valid_for(&self, mpk: &MasterPublic) -> bool {
        let neg_q = -h1(&self.id).to_affine();
        let g2 = G2Prepared::from(G2Affine::generator());
        let mpk = G2Prepared::from(mpk.0);
        bool::from(multi_miller_loop(&[(&self.d, &g2), (&neg_q, &mpk)]).final_exponentiation().is_identity())
    }
}
