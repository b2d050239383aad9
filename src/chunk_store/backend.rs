//! A blocking facade over `object_store`, run on a private tokio runtime.
//! For the embedded local-directory store, every put is fsynced so that an
//! uploaded object is as durable as the staging file it replaces.

use std::error::Error as StdError;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::error::{Error, Result};

pub struct Backend {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
    local_root: Option<PathBuf>,
    description: String,
}

/// Find an `io::Error` in the source chain so a full disk becomes `NoSpace`.
fn map_err(e: object_store::Error) -> Error {
    let mut src: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::ENOSPC)
        {
            return Error::NoSpace;
        }
        src = s.source();
    }
    // The innermost cause says what really failed (refused connection, DNS, TLS…).
    let mut msg = e.to_string();
    let mut src = StdError::source(&e);
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    Error::Store(msg)
}

/// An S3 (or S3-compatible) bucket, configured by the standard AWS
/// environment variables: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`),
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and
/// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint such as a local Garage.
fn s3_store(rest: &str) -> Result<Arc<dyn ObjectStore>> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Repo("an S3 repository looks like s3://bucket/prefix".into()));
    }
    let retry = RetryConfig {
        // Short: the upload worker retries a failed pack forever on its own,
        // and a reader should get EIO rather than hang on a dead store.
        max_retries: 4,
        retry_timeout: Duration::from_secs(20),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
    };
    let client =
        ClientOptions::new().with_timeout(Duration::from_secs(30)).with_connect_timeout(Duration::from_secs(5));
    // Our defaults first, then every AWS_* variable on top (as `from_env` reads them).
    let mut builder = AmazonS3Builder::new().with_client_options(client).with_retry(retry);
    for (key, value) in std::env::vars() {
        if key.starts_with("AWS_")
            && let Ok(k) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
        {
            builder = builder.with_config(k, value);
        }
    }
    let s3 = builder
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| Error::Repo(format!("cannot use S3 bucket {bucket:?}: {e}")))?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) })
}

impl Backend {
    /// Open the store named by `repo`: a directory path (the embedded
    /// default) or `s3://bucket[/prefix]`. `create` makes a directory if it
    /// does not exist yet (for `init`); a bucket must exist already.
    pub fn open(repo: &str, create: bool) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fogvault-io")
            .enable_all()
            .build()?;
        if let Some(rest) = repo.strip_prefix("s3://") {
            let store = s3_store(rest)?;
            return Ok(Backend { store, rt, description: repo.to_string(), local_root: None });
        }
        if repo.contains("://") && !repo.starts_with("file://") {
            return Err(Error::Repo(format!(
                "unsupported repository URL scheme in {repo:?}: use a directory path or s3://bucket/prefix"
            )));
        }
        let dir = PathBuf::from(repo.strip_prefix("file://").unwrap_or(repo));
        if create {
            std::fs::create_dir_all(&dir).map_err(Error::from_io)?;
        } else if !dir.is_dir() {
            return Err(Error::Repo(format!(
                "repository {} does not exist (run `fogvault init` first)",
                dir.display()
            )));
        }
        let dir = dir.canonicalize()?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(map_err)?;
        Ok(Backend { store: Arc::new(store), rt, description: dir.display().to_string(), local_root: Some(dir) })
    }

    /// Root directory of a local-directory store.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    /// Where object `name` lives on disk, for a local-directory store.
    pub fn local_object_path(&self, name: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(name))
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    fn sync_local(&self, name: &str) -> Result<()> {
        if let Some(root) = &self.local_root {
            let path = root.join(name);
            std::fs::File::open(&path)?.sync_all().map_err(Error::from_io)?;
            if let Some(parent) = path.parent() {
                std::fs::File::open(parent)?.sync_all().map_err(Error::from_io)?;
            }
        }
        Ok(())
    }

    pub fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let path = Path::from(name);
        self.rt.block_on(self.store.put(&path, PutPayload::from(data))).map_err(map_err)?;
        self.sync_local(name)
    }

    /// Create `name` only if absent; `Ok(false)` if it already existed.
    pub fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        let path = Path::from(name);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.rt.block_on(self.store.put_opts(&path, PutPayload::from(data), opts)) {
            Ok(_) => {
                self.sync_local(name)?;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = Path::from(name);
        let res = self.rt.block_on(async {
            let r = self.store.get(&path).await?;
            r.bytes().await
        });
        match res {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Ranged read. A missing object or a short object is an integrity failure.
    pub fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Bytes> {
        let path = Path::from(name);
        match self.rt.block_on(self.store.get_range(&path, start..start + len)) {
            Ok(b) if b.len() as u64 == len => Ok(b),
            Ok(_) => Err(Error::Integrity(format!("object {name} is shorter than expected"))),
            Err(object_store::Error::NotFound { .. }) => Err(Error::Integrity(format!("object {name} is missing"))),
            Err(e) => {
                let msg = e.to_string();
                // The local store reports reads past the end as a range error.
                if msg.contains("range") || msg.contains("Range") {
                    Err(Error::Integrity(format!("object {name} is shorter than expected")))
                } else {
                    Err(map_err(e))
                }
            }
        }
    }

    /// Size of an object, or `None` if it does not exist.
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.rt.block_on(self.store.head(&Path::from(name))) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    /// All objects under `prefix`, as `(name, size)`.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let p = Path::from(prefix);
        self.rt
            .block_on(self.store.list(Some(&p)).map_ok(|m| (m.location.to_string(), m.size)).try_collect())
            .map_err(map_err)
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        match self.rt.block_on(self.store.delete(&Path::from(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// `(total, available)` bytes of the store, when it has a meaningful capacity.
    pub fn capacity(&self) -> Option<(u64, u64)> {
        let root: &FsPath = self.local_root.as_deref()?;
        let s = nix::sys::statvfs::statvfs(root).ok()?;
        let frag = s.fragment_size() as u64;
        Some((s.blocks() as u64 * frag, s.blocks_available() as u64 * frag))
    }
}
