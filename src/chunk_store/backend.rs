//! A blocking facade over `object_store`, run on a private tokio runtime.
//! For the embedded local-directory store, every put is fsynced so that an
//! uploaded object is as durable as the staging file it replaces.
//!
//! A repository may mirror several stores (`mirror:A,B,…`): every write goes
//! to all of them and succeeds if at least one took it (the others are
//! reported and brought back by `fogvault repair`); reads go to the fastest
//! healthy store (mean latency of its recent reads; a failed store is tried
//! last for 30 s) and fall back to the others, so a store that is down or
//! has lost its bucket does not stop the vault.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// One store of a repository.
#[derive(Clone)]
struct Member {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    description: String,
}

pub struct Backend {
    members: Vec<Member>,
    /// Per member: how fast and how healthy its reads have been.
    health: Vec<ReadHealth>,
    /// Counts reads, to send one in `PROBE_EVERY` to the runner-up.
    reads: AtomicUsize,
    rt: tokio::runtime::Runtime,
    description: String,
    opened: Instant,
}

/// A mirror reads from its fastest healthy store; every `PROBE_EVERY`-th
/// read goes to the runner-up first, so a store that got faster (or came
/// back) is noticed.
const PROBE_EVERY: usize = 32;
/// A store whose read failed is tried last for this long.
const FAILED_FOR: Duration = Duration::from_secs(30);
/// The largest object `get_small` loads: the config, the metadata root and
/// the policy are kilobytes to megabytes; anything this big is a store's
/// fault or an attack. (Journal objects and audit segments have no such
/// bound: one transaction or one outage's backlog is one object.)
const MAX_SMALL_OBJECT: u64 = 1 << 30;

#[derive(Default)]
struct ReadHealth {
    /// Exponentially weighted mean read latency, microseconds (0: unmeasured).
    ewma_us: AtomicU64,
    /// Until when (ms since the backend opened) this store counts as failed.
    failed_until_ms: AtomicU64,
}

/// Read order from each member's `(failed now, mean latency)`: healthy
/// before failed, then fastest first; on a probe the first two swap.
fn read_order_of(stats: &[(bool, u64)], probe: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..stats.len()).collect();
    order.sort_by_key(|&i| stats[i]);
    if probe && order.len() > 1 && !stats[order[1]].0 {
        order.swap(0, 1);
    }
    order
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

fn open_member(repo: &str, create: bool) -> Result<Member> {
    if let Some(rest) = repo.strip_prefix("s3://") {
        return Ok(Member { store: s3_store(rest)?, local_root: None, description: repo.to_string() });
    }
    if repo.contains("://") && !repo.starts_with("file://") {
        return Err(Error::Repo(format!(
            "unsupported repository URL scheme in {repo:?}: use a directory path, s3://bucket/prefix or mirror:A,B"
        )));
    }
    let dir = PathBuf::from(repo.strip_prefix("file://").unwrap_or(repo));
    if create {
        crate::durable_fs::create_dir_all(&dir).map_err(Error::from_io)?;
    } else if !dir.is_dir() {
        return Err(Error::Repo(format!("repository {} does not exist (run `fogvault init` first)", dir.display())));
    }
    let dir = dir.canonicalize()?;
    let store = LocalFileSystem::new_with_prefix(&dir).map_err(map_err)?;
    Ok(Member { store: Arc::new(store), description: dir.display().to_string(), local_root: Some(dir) })
}

/// Before a local store writes an object: create its directory (e.g.
/// `packs/<h2>/`) durably, which the store would create without an fsync.
fn prepare_local(m: &Member, name: &str) -> Result<()> {
    if let Some(dir) = m.local_root.as_ref().and_then(|root| root.join(name).parent().map(FsPath::to_path_buf)) {
        crate::durable_fs::create_dir_all(&dir).map_err(Error::from_io)?;
    }
    Ok(())
}

/// Make an object a local store just wrote durable: the file and its entry.
fn sync_local(m: &Member, name: &str) -> Result<()> {
    if let Some(root) = &m.local_root {
        let path = root.join(name);
        std::fs::File::open(&path)?.sync_all().map_err(Error::from_io)?;
        if let Some(parent) = path.parent() {
            crate::durable_fs::sync_dir(parent).map_err(Error::from_io)?;
        }
    }
    Ok(())
}

impl Backend {
    /// Open the store named by `repo`: a directory path (the embedded
    /// default), `s3://bucket[/prefix]`, or `mirror:A,B,…` over several of
    /// those. `create` makes directories that do not exist yet (for `init`);
    /// a bucket must exist already.
    pub fn open(repo: &str, create: bool) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fogvault-io")
            .enable_all()
            .build()?;
        let specs: Vec<&str> = match repo.strip_prefix("mirror:") {
            Some(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect(),
            None => vec![repo],
        };
        if specs.is_empty() || (repo.starts_with("mirror:") && specs.len() < 2) {
            return Err(Error::Repo("a mirrored repository names two or more stores: mirror:A,B".into()));
        }
        let members = specs.iter().map(|s| open_member(s, create)).collect::<Result<Vec<_>>>()?;
        let description = if members.len() == 1 {
            members[0].description.clone()
        } else {
            format!("mirror:{}", members.iter().map(|m| m.description.as_str()).collect::<Vec<_>>().join(","))
        };
        let health = members.iter().map(|_| ReadHealth::default()).collect();
        Ok(Backend { members, health, reads: AtomicUsize::new(0), rt, description, opened: Instant::now() })
    }

    /// Root directory of a single local-directory store (None for S3 and mirrors).
    pub fn local_root(&self) -> Option<&FsPath> {
        match self.members.as_slice() {
            [m] => m.local_root.as_deref(),
            _ => None,
        }
    }

    /// Where object `name` lives on disk, for a single local-directory store.
    pub fn local_object_path(&self, name: &str) -> Option<PathBuf> {
        self.local_root().map(|r| r.join(name))
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Why a repository is not there, if its S3 bucket does not exist: S3
    /// answers a missing bucket with the same 404 as a missing object, so
    /// "no config object" alone would send the operator to `fogvault init`,
    /// which then fails on the same bucket. Only asked on that error path
    /// (one LIST request), and only for a single S3 store.
    pub fn missing_bucket(&self) -> Option<Error> {
        let [m] = self.members.as_slice() else { return None };
        let bucket = m.description.strip_prefix("s3://")?.split('/').next().unwrap_or_default();
        let first = self.rt.block_on(async { m.store.list(None).try_next().await.map(|_| ()) });
        match first {
            Err(e) if e.to_string().contains("NoSuchBucket") => Some(Error::Repo(format!(
                "the S3 bucket {bucket:?} of {} does not exist (create it, then run `fogvault init`)",
                m.description
            ))),
            _ => None,
        }
    }

    /// Run `op` on every member; Ok if at least one succeeded (the failures
    /// are logged: the mirror is degraded until `repair`).
    /// The stores of a mirror are written concurrently (one thread each), so
    /// a mirrored upload takes as long as the slowest store, not the sum.
    fn on_all<T: Send>(
        &self,
        what: &str,
        name: &str,
        op: impl Fn(&Member) -> Result<T> + Sync,
    ) -> Result<Vec<Option<T>>> {
        let results: Vec<Result<T>> = if self.members.len() == 1 {
            vec![op(&self.members[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = self.members.iter().map(|m| s.spawn(|| op(m))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(Error::Store("a store operation panicked".into()))))
                    .collect()
            })
        };
        let mut out = Vec::with_capacity(self.members.len());
        let mut first_err = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(v) => out.push(Some(v)),
                Err(e) => {
                    if self.members.len() > 1 {
                        tracing::warn!(store = i, object = name, error = %e, "{what} failed on one store of the mirror");
                    }
                    first_err.get_or_insert(e);
                    out.push(None);
                }
            }
        }
        match first_err {
            Some(e) if out.iter().all(Option::is_none) => Err(e),
            _ => Ok(out),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Members in read order: healthy before recently failed, fastest first.
    fn read_order(&self) -> Vec<usize> {
        if self.members.len() == 1 {
            return vec![0];
        }
        let now = self.now_ms();
        let stats: Vec<(bool, u64)> = self
            .health
            .iter()
            .map(|h| (h.failed_until_ms.load(Ordering::Relaxed) > now, h.ewma_us.load(Ordering::Relaxed)))
            .collect();
        let probe = self.reads.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == PROBE_EVERY - 1;
        read_order_of(&stats, probe)
    }

    fn record_read(&self, i: usize, took: Duration, ok: bool) {
        let h = &self.health[i];
        if ok {
            let us = took.as_micros().max(1) as u64;
            let old = h.ewma_us.load(Ordering::Relaxed);
            h.ewma_us.store(if old == 0 { us } else { (old * 7 + us) / 8 }, Ordering::Relaxed);
            h.failed_until_ms.store(0, Ordering::Relaxed);
        } else {
            h.failed_until_ms.store(self.now_ms() + FAILED_FOR.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Try `op` on members in read order until one gives a definite answer.
    /// `Ok(None)` from a member means "not there": the next is asked.
    fn read_any<T>(&self, op: impl Fn(&Member) -> Result<Option<T>>) -> Result<Option<T>> {
        let mut first_err = None;
        for i in self.read_order() {
            let start = Instant::now();
            match op(&self.members[i]) {
                Ok(Some(v)) => {
                    self.record_read(i, start.elapsed(), true);
                    return Ok(Some(v));
                }
                Ok(None) => {}
                Err(e) => {
                    self.record_read(i, start.elapsed(), false);
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(None), Err)
    }

    pub fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let path = Path::from(name);
        self.on_all("put", name, |m| {
            prepare_local(m, name)?;
            self.rt.block_on(m.store.put(&path, PutPayload::from(data.clone()))).map_err(map_err)?;
            sync_local(m, name)
        })?;
        Ok(())
    }

    /// Create `name` only if absent; `Ok(false)` if it already existed (on any store).
    pub fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        let path = Path::from(name);
        // On a degraded mirror one store may lack an object the others hold:
        // never write a second, different version next to it.
        if self.members.len() > 1 && self.size(name)?.is_some() {
            return Ok(false);
        }
        let created = self.on_all("put", name, |m| {
            prepare_local(m, name)?;
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.rt.block_on(m.store.put_opts(&path, PutPayload::from(data.clone()), opts)) {
                Ok(_) => {
                    sync_local(m, name)?;
                    Ok(true)
                }
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(map_err(e)),
            }
        })?;
        Ok(!created.contains(&Some(false)))
    }

    pub fn get(&self, name: &str) -> Result<Option<Bytes>> {
        self.get_at_most(name, u64::MAX)
    }

    /// [`Self::get`] of an object that is small by construction (config,
    /// root, policy): one the store says is larger than 1 GiB is refused
    /// instead of loaded, so a store cannot exhaust the fog node's memory
    /// with it.
    pub fn get_small(&self, name: &str) -> Result<Option<Bytes>> {
        self.get_at_most(name, MAX_SMALL_OBJECT)
    }

    fn get_at_most(&self, name: &str, max: u64) -> Result<Option<Bytes>> {
        let path = Path::from(name);
        self.read_any(|m| {
            let res = self.rt.block_on(async {
                let r = m.store.get(&path).await?;
                if r.meta.size > max {
                    return Ok(Err(r.meta.size));
                }
                r.bytes().await.map(Ok)
            });
            match res {
                Ok(Ok(b)) => Ok(Some(b)),
                Ok(Err(size)) => Err(Error::Integrity(format!(
                    "object {name} is {size} bytes, more than fogvault ever writes there; not loading it"
                ))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(map_err(e)),
            }
        })
    }

    /// Ranged read. A missing object or a short object is an integrity failure.
    pub fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Bytes> {
        let path = Path::from(name);
        let got = self.read_any(|m| match self.rt.block_on(m.store.get_range(&path, start..start + len)) {
            Ok(b) if b.len() as u64 == len => Ok(Some(b)),
            Ok(_) => Ok(None),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                let msg = e.to_string();
                // The local store reports reads past the end as a range error.
                if msg.contains("range") || msg.contains("Range") { Ok(None) } else { Err(map_err(e)) }
            }
        })?;
        got.ok_or_else(|| Error::Integrity(format!("object {name} is missing or shorter than expected")))
    }

    /// Size of an object, or `None` if it does not exist.
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        let path = Path::from(name);
        self.read_any(|m| match self.rt.block_on(m.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        })
    }

    /// Whether every store holds `name`: a mirrored put succeeds when one
    /// store took the object, so whoever deletes the only other copy of its
    /// data (gc) checks first. A store that cannot be asked counts as lacking it.
    pub fn on_every_store(&self, name: &str) -> bool {
        if self.members.len() == 1 {
            return true;
        }
        let path = Path::from(name);
        self.members.iter().all(|m| self.rt.block_on(m.store.head(&path)).is_ok())
    }

    /// All objects under `prefix`, as `(name, size)` (the union over a mirror).
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let per = self.on_all("list", prefix, |m| self.list_member(m, prefix))?;
        let mut all: BTreeMap<String, u64> = BTreeMap::new();
        for (name, size) in per.into_iter().flatten().flatten() {
            let e = all.entry(name).or_insert(size);
            *e = (*e).max(size);
        }
        Ok(all.into_iter().collect())
    }

    fn list_member(&self, m: &Member, prefix: &str) -> Result<Vec<(String, u64)>> {
        let p = Path::from(prefix);
        self.rt
            .block_on(m.store.list(Some(&p)).map_ok(|o| (o.location.to_string(), o.size)).try_collect())
            .map_err(map_err)
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let path = Path::from(name);
        self.on_all("delete", name, |m| match self.rt.block_on(m.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        })?;
        Ok(())
    }

    /// `(total, available)` bytes when every store is a local directory (the smallest).
    pub fn capacity(&self) -> Option<(u64, u64)> {
        self.members
            .iter()
            .map(|m| {
                let s = nix::sys::statvfs::statvfs(m.local_root.as_deref()?).ok()?;
                let frag = s.fragment_size() as u64;
                Some((s.blocks() as u64 * frag, s.blocks_available() as u64 * frag))
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min_by_key(|(_, free)| *free)
    }

    /// One backend per store (just this one when it is not a mirror), for
    /// checks that must look at every copy.
    pub fn split(&self) -> Result<Vec<Backend>> {
        self.members
            .iter()
            .map(|m| {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
                Ok(Backend {
                    members: vec![m.clone()],
                    health: vec![ReadHealth::default()],
                    reads: AtomicUsize::new(0),
                    rt,
                    description: m.description.clone(),
                    opened: Instant::now(),
                })
            })
            .collect()
    }

    /// How many stores the repository has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn member_description(&self, i: usize) -> &str {
        &self.members[i].description
    }

    /// Objects under `prefix` that some store has and store `i` lacks (or holds
    /// at a different size): what `repair` copies and `verify` reports.
    pub fn missing_on(&self, i: usize, prefix: &str) -> Result<Vec<String>> {
        let all = self.list(prefix)?;
        let here: BTreeMap<String, u64> = self.list_member(&self.members[i], prefix)?.into_iter().collect();
        Ok(all.into_iter().filter(|(n, s)| here.get(n) != Some(s)).map(|(n, _)| n).collect())
    }

    /// Copy `name` to store `i` from another store that holds it.
    pub fn copy_to(&self, i: usize, name: &str) -> Result<()> {
        let path = Path::from(name);
        let data = self
            .members
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .find_map(|(_, m)| self.rt.block_on(async { m.store.get(&path).await?.bytes().await }).ok())
            .ok_or_else(|| Error::Integrity(format!("no store holds {name}")))?;
        let m = &self.members[i];
        prepare_local(m, name)?;
        self.rt.block_on(m.store.put(&path, PutPayload::from(data))).map_err(map_err)?;
        sync_local(m, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefer_the_fastest_healthy_store_and_probe_the_runner_up() {
        // (failed now, mean latency µs)
        assert_eq!(read_order_of(&[(false, 900), (false, 100), (false, 0)], false), vec![2, 1, 0]);
        assert_eq!(read_order_of(&[(false, 900), (false, 100)], false), vec![1, 0]);
        assert_eq!(read_order_of(&[(false, 900), (true, 100)], false), vec![0, 1], "a failed store goes last");
        assert_eq!(read_order_of(&[(false, 900), (false, 100)], true), vec![0, 1], "a probe tries the runner-up");
        assert_eq!(read_order_of(&[(false, 900), (true, 100)], true), vec![0, 1], "never probe a failed store first");
    }

    #[test]
    fn a_huge_object_is_refused_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let m = Backend::open(&format!("mirror:{},{}", a.display(), b.display()), true).unwrap();
        m.put("meta/root", Bytes::from_static(b"root")).unwrap();
        // A sparse file: the store reports 2 GiB without holding them.
        let f = std::fs::OpenOptions::new().write(true).open(a.join("meta/root")).unwrap();
        f.set_len(2 << 30).unwrap();
        let one = Backend::open(a.to_str().unwrap(), false).unwrap();
        let err = one.get_small("meta/root").unwrap_err().to_string();
        assert!(err.contains("not loading it"), "{err}");
        // A mirror reads the sane copy from the other store.
        assert_eq!(&m.get_small("meta/root").unwrap().unwrap()[..], b"root");
    }

    #[test]
    fn a_mirror_writes_everywhere_reads_anywhere_and_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let spec = format!("mirror:{},{}", a.display(), b.display());
        let m = Backend::open(&spec, true).unwrap();
        assert_eq!(m.member_count(), 2);
        assert!(m.local_root().is_none(), "no rename shortcut for a mirror");
        m.put("packs/aa/x", Bytes::from_static(b"0123456789")).unwrap();
        assert!(a.join("packs/aa/x").exists() && b.join("packs/aa/x").exists());
        assert!(m.put_if_absent("config", Bytes::from_static(b"cfg")).unwrap());
        std::fs::remove_file(a.join("config")).unwrap();
        assert!(!m.put_if_absent("config", Bytes::from_static(b"other")).unwrap(), "exists on one store");
        // Lost on the first store: reads come from the second.
        std::fs::remove_file(a.join("packs/aa/x")).unwrap();
        assert_eq!(m.get_range("packs/aa/x", 2, 3).unwrap().as_ref(), b"234");
        assert_eq!(m.size("packs/aa/x").unwrap(), Some(10));
        assert_eq!(m.list("packs").unwrap(), vec![("packs/aa/x".to_string(), 10)]);
        assert!(!a.join("config").exists(), "no second version written beside the first");
        assert_eq!(m.missing_on(0, "").unwrap(), vec!["config".to_string(), "packs/aa/x".to_string()]);
        assert!(m.missing_on(1, "").unwrap().is_empty());
        for name in m.missing_on(0, "").unwrap() {
            m.copy_to(0, &name).unwrap();
        }
        assert_eq!(std::fs::read(a.join("packs/aa/x")).unwrap(), b"0123456789");
        // Gone everywhere: a ranged read is an integrity error, never other bytes.
        m.delete("packs/aa/x").unwrap();
        assert!(matches!(m.get_range("packs/aa/x", 0, 1), Err(Error::Integrity(_))));
        assert_eq!(m.split().unwrap().len(), 2);
        assert!(Backend::open(&format!("mirror:{}", a.display()), false).is_err(), "a mirror needs two stores");
    }
}
