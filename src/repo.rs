//! Repository creation and unlock: the sealed `config` object in the store.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::chunk_store::Backend;
use crate::crypto::{self, KdfParams, Key32, VaultKeys};
use crate::error::{Error, Result};
use crate::session::{IdentityKey, MasterPublic, MasterSecret};

pub const CONFIG_OBJECT: &str = "config";
const FORMAT_VERSION: u32 = 1;

/// The `config` object: JSON, everything secret sealed (docs/STORAGE_FORMAT.md).
#[derive(Serialize, Deserialize)]
struct ConfigFile {
    format: String,
    version: u32,
    repo_id: String,
    kdf: KdfParams,
    /// XChaCha20-Poly1305(KEK, nonce, AAD = config_aad) of the 32-byte root secret K_dd.
    #[serde(with = "hex::serde")]
    sealed_root: Vec<u8>,
    /// The admin authority, when the repository has one (`init --admin-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authority: Option<AuthorityFile>,
}

#[derive(Serialize, Deserialize)]
struct AuthorityFile {
    /// `mpk = s·g2`, compressed G2 (public).
    #[serde(with = "hex::serde")]
    mpk: Vec<u8>,
    /// The fog node's identity and its identity key sealed under a key
    /// derived from the root secret (AAD `"fogvault fog key <repo id>"`).
    fog_id: String,
    #[serde(with = "hex::serde")]
    sealed_fog_key: Vec<u8>,
}

/// The pairing-based authority as the fog node sees it.
pub struct Authority {
    pub mpk: MasterPublic,
    pub fog: IdentityKey,
}

fn config_aad(repo_id: &str, version: u32) -> Vec<u8> {
    format!("fogvault config v{version} {repo_id}").into_bytes()
}

/// An unlocked repository: the store plus the keys derived from its root secret.
pub struct Repo {
    pub backend: Arc<Backend>,
    pub keys: Arc<VaultKeys>,
    pub repo_id: String,
    pub authority: Option<Authority>,
}

pub const FOG_ID: &str = "fog";

fn fog_key_aad(repo_id: &str) -> Vec<u8> {
    format!("fogvault fog key {repo_id}").into_bytes()
}

/// Create a new repository at `location`. Refuses to overwrite an existing one.
pub fn init(location: &str, passphrase: &[u8]) -> Result<Repo> {
    init_with_authority(location, passphrase, None)
}

/// `init`, plus the admin authority `admin` (whose `mpk` goes into the config
/// and which issues the fog node's identity key).
pub fn init_with_authority(location: &str, passphrase: &[u8], admin: Option<&MasterSecret>) -> Result<Repo> {
    if passphrase.is_empty() {
        return Err(Error::Repo("the passphrase must not be empty".into()));
    }
    let backend = Arc::new(Backend::open(location, true)?);
    if backend.size(CONFIG_OBJECT)?.is_some() {
        return Err(Error::Repo(format!("a repository is already initialised at {}", backend.description())));
    }
    let root = Key32::random();
    let mut id = [0u8; 16];
    crypto::random_bytes(&mut id);
    let repo_id = hex::encode(id);
    let kdf = KdfParams::new_random();
    let kek = crypto::derive_kek(passphrase, &kdf).map_err(Error::Repo)?;
    let sealed_root = crypto::seal(&kek, &config_aad(&repo_id, FORMAT_VERSION), root.as_bytes());
    let authority = admin.map(|msk| {
        let fog = msk.extract(FOG_ID);
        let sealed_fog_key = crypto::seal(&root.derive("fog identity key"), &fog_key_aad(&repo_id), &fog.to_bytes());
        (
            AuthorityFile { mpk: msk.public().to_bytes().to_vec(), fog_id: FOG_ID.into(), sealed_fog_key },
            fog,
            msk.public(),
        )
    });
    let cfg = ConfigFile {
        format: "fogvault".into(),
        version: FORMAT_VERSION,
        repo_id: repo_id.clone(),
        kdf,
        sealed_root,
        authority: authority.as_ref().map(|(f, _, _)| AuthorityFile {
            mpk: f.mpk.clone(),
            fog_id: f.fog_id.clone(),
            sealed_fog_key: f.sealed_fog_key.clone(),
        }),
    };
    let json = serde_json::to_vec_pretty(&cfg).expect("config serializes");
    if !backend.put_if_absent(CONFIG_OBJECT, Bytes::from(json)).map_err(|e| backend.missing_bucket().unwrap_or(e))? {
        return Err(Error::Repo(format!("a repository is already initialised at {}", backend.description())));
    }
    let authority = authority.map(|(_, fog, mpk)| Authority { mpk, fog });
    Ok(Repo { backend, keys: Arc::new(VaultKeys::derive(&root)), repo_id, authority })
}

/// Open and unlock an existing repository.
pub fn unlock(location: &str, passphrase: &[u8]) -> Result<Repo> {
    let backend = Arc::new(Backend::open(location, false)?);
    let raw = backend.get(CONFIG_OBJECT)?.ok_or_else(|| {
        backend.missing_bucket().unwrap_or_else(|| {
            Error::Repo(format!(
                "{} is not a fogvault repository (no config object; run `fogvault init`)",
                backend.description()
            ))
        })
    })?;
    let cfg: ConfigFile =
        serde_json::from_slice(&raw).map_err(|e| Error::Repo(format!("the repository config is malformed: {e}")))?;
    if cfg.format != "fogvault" || cfg.version != FORMAT_VERSION {
        return Err(Error::Repo(format!("unsupported repository format {} v{}", cfg.format, cfg.version)));
    }
    let kek = crypto::derive_kek(passphrase, &cfg.kdf).map_err(Error::Repo)?;
    let root = Zeroizing::new(
        crypto::open(&kek, &config_aad(&cfg.repo_id, cfg.version), &cfg.sealed_root)
            .map_err(|_| Error::WrongPassphrase)?,
    );
    let root: [u8; 32] =
        root.as_slice().try_into().map_err(|_| Error::Repo("the sealed root secret has the wrong length".into()))?;
    let root = Key32::from_bytes(root);
    let authority = match &cfg.authority {
        None => None,
        Some(a) => {
            let bad = || Error::Repo("the repository config has a malformed authority".into());
            let mpk: [u8; 96] = a.mpk.as_slice().try_into().map_err(|_| bad())?;
            let mpk = MasterPublic::from_bytes(&mpk).ok_or_else(bad)?;
            let d = crypto::open(&root.derive("fog identity key"), &fog_key_aad(&cfg.repo_id), &a.sealed_fog_key)
                .map_err(|_| bad())?;
            let fog = IdentityKey::from_parts(&a.fog_id, &d).ok_or_else(bad)?;
            if !fog.is_valid_for(&mpk) {
                return Err(bad());
            }
            Some(Authority { mpk, fog })
        }
    };
    Ok(Repo { backend, keys: Arc::new(VaultKeys::derive(&root)), repo_id: cfg.repo_id, authority })
}

/// What the admin needs from the config without the operator passphrase:
/// the store, the repository id, `mpk` and the fog node's identity.
pub struct PublicInfo {
    pub backend: Arc<Backend>,
    pub repo_id: String,
    pub mpk: MasterPublic,
    pub fog_id: String,
}

pub fn public_info(location: &str) -> Result<PublicInfo> {
    let backend = Arc::new(Backend::open(location, false)?);
    let raw = backend.get(CONFIG_OBJECT)?.ok_or_else(|| {
        backend
            .missing_bucket()
            .unwrap_or_else(|| Error::Repo(format!("{} is not a fogvault repository", backend.description())))
    })?;
    let cfg: ConfigFile =
        serde_json::from_slice(&raw).map_err(|e| Error::Repo(format!("the repository config is malformed: {e}")))?;
    let a = cfg.authority.ok_or_else(|| {
        Error::Repo("this repository has no admin authority (it was initialised without --admin-key)".into())
    })?;
    let bad = || Error::Repo("the repository config has a malformed authority".into());
    let mpk: [u8; 96] = a.mpk.as_slice().try_into().map_err(|_| bad())?;
    let mpk = MasterPublic::from_bytes(&mpk).ok_or_else(bad)?;
    Ok(PublicInfo { backend, repo_id: cfg.repo_id, mpk, fog_id: a.fog_id })
}

/// Default fog-node state directory: `$XDG_CACHE_HOME/fogvault/<repo id>`.
pub fn default_cache_dir(repo_id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("fogvault").join(repo_id)
}
