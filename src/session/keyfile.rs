//! Passphrase-sealed key files: the admin's master secret and identity keys.
//!
//! JSON `{format, version, kind, id, role, mpk, kdf, sealed}`; `sealed` is
//! XChaCha20-Poly1305 under an Argon2id key from the passphrase, AAD
//! `"fogvault key <kind> <id>"`. Files are created with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bls12_381::{G1Affine, Scalar};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::identity::{IdentityKey, MasterPublic, MasterSecret};
use super::wrap::EnrolSecret;
use crate::crypto::{self, KdfParams};
use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: String,
    version: u32,
    kind: String,
    id: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(with = "hex::serde")]
    mpk: Vec<u8>,
    kdf: KdfParams,
    #[serde(with = "hex::serde")]
    sealed: Vec<u8>,
}

const ADMIN: &str = "admin";
const IDENTITY: &str = "identity";

fn aad(kind: &str, id: &str) -> Vec<u8> {
    format!("fogvault key {kind} {id}").into_bytes()
}

fn write(path: &Path, file: &KeyFile) -> Result<()> {
    let json = serde_json::to_vec_pretty(file).expect("key file serializes");
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Repo(format!("cannot create key file {}: {e}", path.display())))?;
    f.write_all(&json)?;
    f.sync_all()?;
    Ok(())
}

fn seal(kind: &str, id: &str, role: Option<&str>, mpk: &MasterPublic, secret: &[u8], pass: &[u8]) -> Result<KeyFile> {
    if pass.is_empty() {
        return Err(Error::Repo("the key passphrase must not be empty".into()));
    }
    // The admin key is unsealed rarely; identity keys at every login.
    let kdf = if kind == ADMIN { KdfParams::new_random() } else { KdfParams::interactive_random() };
    let kek = crypto::derive_kek(pass, &kdf).map_err(Error::Repo)?;
    Ok(KeyFile {
        format: "fogvault-key".into(),
        version: 1,
        kind: kind.into(),
        id: id.into(),
        role: role.map(str::to_string),
        mpk: mpk.to_bytes().to_vec(),
        kdf,
        sealed: crypto::seal(&kek, &aad(kind, id), secret),
    })
}

fn read(path: &Path, kind: &str, pass: &[u8]) -> Result<(KeyFile, Zeroizing<Vec<u8>>)> {
    let raw = std::fs::read(path).map_err(|e| Error::Repo(format!("cannot read key file {}: {e}", path.display())))?;
    let f: KeyFile = serde_json::from_slice(&raw)
        .map_err(|_| Error::Repo(format!("{} is not a fogvault key file", path.display())))?;
    if f.format != "fogvault-key" || f.version != 1 || f.kind != kind {
        return Err(Error::Repo(format!("{} is not a fogvault {kind} key file", path.display())));
    }
    let kek = crypto::derive_kek(pass, &f.kdf).map_err(Error::Repo)?;
    let secret = crypto::open(&kek, &aad(&f.kind, &f.id), &f.sealed)
        .map_err(|_| Error::Repo(format!("wrong passphrase for key file {}", path.display())))?;
    Ok((f, Zeroizing::new(secret)))
}

fn mpk_of(f: &KeyFile) -> Result<MasterPublic> {
    let b: [u8; 96] = f.mpk.as_slice().try_into().map_err(|_| Error::Repo("key file has a malformed mpk".into()))?;
    MasterPublic::from_bytes(&b).ok_or_else(|| Error::Repo("key file has a malformed mpk".into()))
}

pub fn write_admin_key(path: &Path, msk: &MasterSecret, pass: &[u8]) -> Result<()> {
    let secret = Zeroizing::new(msk.to_bytes());
    write(path, &seal(ADMIN, "admin", None, &msk.public(), secret.as_slice(), pass)?)
}

pub fn read_admin_key(path: &Path, pass: &[u8]) -> Result<MasterSecret> {
    let (f, secret) = read(path, ADMIN, pass)?;
    let b: [u8; 32] = secret.as_slice().try_into().map_err(|_| Error::Repo("admin key is malformed".into()))?;
    let msk = MasterSecret::from_bytes(&b).ok_or_else(|| Error::Repo("admin key is malformed".into()))?;
    if msk.public() != mpk_of(&f)? {
        return Err(Error::Repo("admin key file is inconsistent".into()));
    }
    Ok(msk)
}

/// What a user's key file holds: the identity key `d_U` (handshake), the
/// enrolment secret `e_U` (folder-key wraps), the role and the authority.
pub struct UserKey {
    pub identity: IdentityKey,
    pub enrol: EnrolSecret,
    pub role: Option<String>,
    pub mpk: MasterPublic,
}

/// Sealed secret: `d_U` (48, compressed G1) ‖ `e_U` (32, scalar LE).
pub fn write_identity_key(
    path: &Path,
    key: &IdentityKey,
    enrol: &EnrolSecret,
    role: &str,
    mpk: &MasterPublic,
    pass: &[u8],
) -> Result<()> {
    let mut secret = Zeroizing::new(key.d.to_compressed().to_vec());
    secret.extend_from_slice(&enrol.to_bytes());
    write(path, &seal(IDENTITY, &key.id, Some(role), mpk, &secret, pass)?)
}

pub fn read_identity_key(path: &Path, pass: &[u8]) -> Result<UserKey> {
    let (f, secret) = read(path, IDENTITY, pass)?;
    let bad = || Error::Repo(format!("identity key in {} is malformed", path.display()));
    if secret.len() != 80 {
        return Err(bad());
    }
    let b: [u8; 48] = secret[..48].try_into().map_err(|_| bad())?;
    let d: Option<G1Affine> = G1Affine::from_compressed(&b).into();
    let identity = IdentityKey { id: f.id.clone(), d: d.ok_or_else(bad)? };
    let e: [u8; 32] = secret[48..].try_into().map_err(|_| bad())?;
    let enrol = EnrolSecret::from_bytes(&e).ok_or_else(bad)?;
    let mpk = mpk_of(&f)?;
    if !identity.is_valid_for(&mpk) {
        return Err(Error::Repo(format!("identity key in {} is not valid for its authority", path.display())));
    }
    Ok(UserKey { identity, enrol, role: f.role, mpk })
}

impl MasterSecret {
    pub(crate) fn to_bytes(&self) -> [u8; 32] {
        self.scalar().to_bytes()
    }
    pub(crate) fn from_bytes(b: &[u8; 32]) -> Option<Self> {
        Option::<Scalar>::from(Scalar::from_bytes(b)).map(MasterSecret::from_scalar)
    }
}
