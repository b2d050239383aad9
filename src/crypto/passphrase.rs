//! Passphrase → key-encryption key with Argon2id (parameters stored in the config).

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use super::Key32;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    #[serde(with = "hex::serde")]
    pub salt: Vec<u8>,
}

impl KdfParams {
    /// RFC 9106's second recommended Argon2id setting: 64 MiB, 3 passes,
    /// 4 lanes. The lanes are computed in parallel, so unlocking takes about
    /// a quarter of the single-lane time on four cores at the same cost to
    /// an attacker per guess.
    pub fn new_random() -> Self {
        let mut salt = vec![0u8; 16];
        super::random_bytes(&mut salt);
        KdfParams { algorithm: "argon2id".into(), m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 4, salt }
    }

    /// For files unsealed at every login (identity key files): one of
    /// OWASP's equivalent recommended Argon2id settings, 19 MiB and two
    /// passes (4 lanes, computed in parallel), about a fifth of
    /// [`KdfParams::new_random`]'s work, so that login to first byte stays
    /// within 50 ms. (Its 46 MiB one-pass equivalent measured ~10 ms slower
    /// here: mapping the memory costs a page fault per 4 KiB.)
    pub fn interactive_random() -> Self {
        KdfParams { m_cost_kib: 19 * 1024, t_cost: 2, ..Self::new_random() }
    }
}

/// Errors only for parameters that are out of range (a corrupt or hostile config).
pub fn derive_kek(passphrase: &[u8], params: &KdfParams) -> Result<Key32, String> {
    if params.algorithm != "argon2id" {
        return Err(format!("unsupported KDF {:?}", params.algorithm));
    }
    let p = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| format!("bad KDF parameters: {e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    let mut out = [0u8; 32];
    argon.hash_password_into(passphrase, &params.salt, &mut out).map_err(|e| format!("KDF failed: {e}"))?;
    Ok(Key32::from_bytes(out))
}
