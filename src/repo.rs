//! Repository creation and unlock: the sealed `config` object in the store.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::chunk_store::Backend;
use crate::chunking::ChunkParams;
use crate::crypto::{self, KdfParams, Key32, VaultKeys};
use crate::error::{Error, Result};
use crate::session::{IdentityKey, MasterPublic, MasterSecret};

pub const CONFIG_OBJECT: &str = "config";
/// v2 names its minimum chunk size; v1 (no `chunk_min_kib`) is still opened.
const FORMAT_VERSION: u32 = 2;
const LEGACY_FORMAT_VERSION: u32 = 1;

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
    /// FastCDC's minimum chunk size in KiB; absent in repositories made
    /// before it was raised (they keep [`LEGACY_CHUNK_MIN_KIB`], so their
    /// cut points, and with them deduplication, stay as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_min_kib: Option<u32>,
}

/// The minimum chunk size of repositories whose config does not name one.
const LEGACY_CHUNK_MIN_KIB: u32 = 256;

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

/// Binds the sealed root secret to the config's other fields: a changed
/// repository id, version or chunk size fails to unseal. (Unambiguous:
/// `repo_id` is 32 hex digits, checked before, and the version fixes
/// whether a chunk size follows.)
fn config_aad(repo_id: &str, version: u32, chunk_min_kib: Option<u32>) -> Vec<u8> {
    match chunk_min_kib {
        None => format!("fogvault config v{version} {repo_id}").into_bytes(),
        Some(kib) => format!("fogvault config v{version} {repo_id} chunk-min-kib {kib}").into_bytes(),
    }
}

/// The format checks `unlock` makes before it tries the passphrase.
fn check_format(cfg: &ConfigFile) -> Result<()> {
    let versioned = match cfg.version {
        FORMAT_VERSION => cfg.chunk_min_kib.is_some(),
        LEGACY_FORMAT_VERSION => cfg.chunk_min_kib.is_none(),
        _ => false,
    };
    if cfg.format != "fogvault" || !versioned {
        return Err(Error::Repo(format!("unsupported repository format {} v{}", cfg.format, cfg.version)));
    }
    if cfg.repo_id.len() != 32 || !cfg.repo_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Error::Repo("the repository config is malformed: bad repo_id".into()));
    }
    Ok(())
}

/// The chunking parameters a config names.
fn chunk_params(chunk_min_kib: Option<u32>) -> Result<ChunkParams> {
    let d = ChunkParams::default();
    let min = chunk_min_kib.unwrap_or(LEGACY_CHUNK_MIN_KIB) as usize * 1024;
    if !(64 * 1024..d.avg).contains(&min) {
        return Err(Error::Repo(format!("the repository config names an unusable minimum chunk size ({min} bytes)")));
    }
    Ok(ChunkParams { min, ..d })
}

/// An unlocked repository: the store plus the keys derived from its root secret.
pub struct Repo {
    pub backend: Arc<Backend>,
    pub keys: Arc<VaultKeys>,
    pub repo_id: String,
    pub authority: Option<Authority>,
    /// How files are cut into chunks (fixed per repository).
    pub chunk_params: ChunkParams,
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
    let chunk_min_kib = Some((ChunkParams::default().min / 1024) as u32);
    let sealed_root = crypto::seal(&kek, &config_aad(&repo_id, FORMAT_VERSION, chunk_min_kib), root.as_bytes());
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
        chunk_min_kib,
    };
    let json = serde_json::to_vec_pretty(&cfg).expect("config serializes");
    if !backend.put_if_absent(CONFIG_OBJECT, Bytes::from(json)).map_err(|e| backend.missing_bucket().unwrap_or(e))? {
        return Err(Error::Repo(format!("a repository is already initialised at {}", backend.description())));
    }
    let authority = authority.map(|(_, fog, mpk)| Authority { mpk, fog });
    let chunk_params = chunk_params(chunk_min_kib)?;
    Ok(Repo { backend, keys: Arc::new(VaultKeys::derive(&root)), repo_id, authority, chunk_params })
}

/// Open and unlock an existing repository.
pub fn unlock(location: &str, passphrase: &[u8]) -> Result<Repo> {
    let backend = Arc::new(Backend::open(location, false)?);
    let raw = backend.get_small(CONFIG_OBJECT)?.ok_or_else(|| {
        backend.missing_bucket().unwrap_or_else(|| {
            Error::Repo(format!(
                "{} is not a fogvault repository (no config object; run `fogvault init`)",
                backend.description()
            ))
        })
    })?;
    let cfg: ConfigFile =
        serde_json::from_slice(&raw).map_err(|e| Error::Repo(format!("the repository config is malformed: {e}")))?;
    check_format(&cfg)?;
    let kek = crypto::derive_kek(passphrase, &cfg.kdf).map_err(Error::Repo)?;
    let root = Zeroizing::new(
        crypto::open(&kek, &config_aad(&cfg.repo_id, cfg.version, cfg.chunk_min_kib), &cfg.sealed_root)
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
    let chunk_params = chunk_params(cfg.chunk_min_kib)?;
    Ok(Repo { backend, keys: Arc::new(VaultKeys::derive(&root)), repo_id: cfg.repo_id, authority, chunk_params })
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
    let raw = backend.get_small(CONFIG_OBJECT)?.ok_or_else(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config_json(dir: &std::path::Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(CONFIG_OBJECT)).unwrap()).unwrap()
    }

    #[test]
    fn chunk_size_is_fixed_per_repository_and_authenticated() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = tmp.path().to_str().unwrap();
        let made = init(loc, b"pw").unwrap();
        assert_eq!(made.chunk_params.min, 512 << 10);
        assert_eq!(unlock(loc, b"pw").unwrap().chunk_params.min, 512 << 10);

        // A store that changes the chunk size (or drops it) is caught.
        let good = config_json(tmp.path());
        let mut cfg = good.clone();
        cfg["chunk_min_kib"] = 128.into();
        std::fs::write(tmp.path().join(CONFIG_OBJECT), serde_json::to_vec(&cfg).unwrap()).unwrap();
        assert!(unlock(loc, b"pw").is_err());
        cfg.as_object_mut().unwrap().remove("chunk_min_kib");
        std::fs::write(tmp.path().join(CONFIG_OBJECT), serde_json::to_vec(&cfg).unwrap()).unwrap();
        assert!(unlock(loc, b"pw").is_err());
        // Moving the size into the repository id (same AAD bytes) is refused too.
        let mut cfg = good.clone();
        let id = cfg["repo_id"].as_str().unwrap().to_string();
        cfg["repo_id"] = format!("{id} chunk-min-kib 512").into();
        cfg.as_object_mut().unwrap().remove("chunk_min_kib");
        cfg["version"] = LEGACY_FORMAT_VERSION.into();
        std::fs::write(tmp.path().join(CONFIG_OBJECT), serde_json::to_vec(&cfg).unwrap()).unwrap();
        assert!(unlock(loc, b"pw").is_err());

        // A v1 repository (made before the field existed, sealed without it) keeps 256 KiB.
        let parsed: ConfigFile = serde_json::from_value(good).unwrap();
        let kek = crypto::derive_kek(b"pw", &parsed.kdf).unwrap();
        let root =
            crypto::open(&kek, &config_aad(&parsed.repo_id, parsed.version, Some(512)), &parsed.sealed_root).unwrap();
        let legacy = ConfigFile {
            sealed_root: crypto::seal(&kek, &config_aad(&parsed.repo_id, LEGACY_FORMAT_VERSION, None), &root),
            version: LEGACY_FORMAT_VERSION,
            chunk_min_kib: None,
            ..parsed
        };
        std::fs::write(tmp.path().join(CONFIG_OBJECT), serde_json::to_vec(&legacy).unwrap()).unwrap();
        assert_eq!(unlock(loc, b"pw").unwrap().chunk_params.min, 256 << 10);
    }
}
