//! `stats` and `verify`: read-only inspection that works whether or not the
//! repository is mounted (LMDB allows a second process to read).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::chunk_store::{Backend, PackId, TRAILER_LEN, decode_header, parse_trailer, samples, staged_packs};
use crate::crypto::{self, ChunkId};
use crate::error::{Error, Result};
use crate::metadata::cloud::{self, MetaKeys};
use crate::metadata::{ChunkEntry, FileKind, Metadata};
use crate::repo::Repo;
use crate::vault::{ROOT_INO, Vault};

#[derive(Serialize, Debug)]
pub struct Stats {
    /// Sum of the sizes of all regular files (each inode once).
    pub logical_bytes: u64,
    /// Bytes the store holds for packs (plus the not-yet-uploaded journal).
    pub stored_bytes: u64,
    /// Distinct live chunks.
    pub chunks: u64,
    /// Regular files (inodes).
    pub files: u64,
    pub directories: u64,
    pub packs: u64,
    /// Plaintext bytes of distinct live chunks: what is left after dedup.
    pub unique_bytes: u64,
    /// logical_bytes / unique_bytes.
    pub dedup_ratio: f64,
    /// Packs in the fog node's upload journal.
    pub upload_backlog_packs: u64,
    /// Inode records in vault folders no session has unlocked: not counted
    /// in `files`/`directories`; `logical_bytes` then comes from chunk
    /// reference counts (file bytes minus holes) instead of file sizes.
    pub locked_records: u64,
    /// Generation of the metadata root this fog node last wrote to the
    /// store (give it to `recover --min-generation`).
    pub metadata_generation: u64,
    /// Committed metadata transactions not yet in the store's journal.
    pub metadata_backlog: u64,
    /// Transactions in the fog node's intent log not yet in its index (a
    /// live mount's last second, or an unclean stop: the next mount applies
    /// them); not counted above.
    pub unapplied_transactions: u64,
}

fn open_meta(repo: &Repo, cache_dir: &Path) -> Result<Metadata> {
    let dir = cache_dir.join("meta");
    if !dir.join("data.mdb").exists() {
        return Err(Error::Repo(format!(
            "no fog-node index in {} (mount the repository with this --cache first)",
            cache_dir.display()
        )));
    }
    let meta = Metadata::open(&dir, &repo.keys)?;
    match meta.read(|tx| tx.meta_bytes("repo_id"))? {
        Some(id) if id == repo.repo_id.as_bytes() => Ok(meta),
        _ => Err(Error::Repo(format!("cache directory {} belongs to a different repository", cache_dir.display()))),
    }
}

pub fn stats(repo: &Repo, cache_dir: &Path) -> Result<Stats> {
    let meta = open_meta(repo, cache_dir)?;
    let (mut logical, mut files, mut dirs) = (0u64, 0u64, 0u64);
    let (mut chunks, mut unique, mut referenced) = (0u64, 0u64, 0u64);
    let mut locked = 0;
    meta.read(|tx| {
        locked = tx.for_each_inode(|_, rec| {
            match rec.kind {
                FileKind::File => {
                    files += 1;
                    logical += rec.size;
                }
                FileKind::Dir => dirs += 1,
                _ => {}
            }
            Ok(())
        })?;
        tx.for_each_chunk(|_, e| {
            if e.refs > 0 {
                chunks += 1;
                unique += e.plain_len as u64;
                referenced += e.refs * e.plain_len as u64;
            }
            Ok(())
        })
    })?;
    let packs = repo.backend.list("packs")?;
    let staged = staged_packs(&cache_dir.join("staging"))?;
    let stored: u64 = packs.iter().map(|(_, s)| s).sum::<u64>() + staged.iter().map(|(_, s)| s).sum::<u64>();
    if locked > 0 {
        logical = referenced;
    }
    let (committed, uploaded) = meta.journal_position()?;
    let generation = meta.cloud_root()?.map_or(0, |r| r.generation);
    Ok(Stats {
        locked_records: locked,
        logical_bytes: logical,
        stored_bytes: stored,
        chunks,
        files,
        directories: dirs,
        packs: packs.len() as u64,
        unique_bytes: unique,
        dedup_ratio: if unique == 0 { 1.0 } else { logical as f64 / unique as f64 },
        upload_backlog_packs: staged.len() as u64,
        metadata_generation: generation,
        metadata_backlog: committed.saturating_sub(uploaded),
        unapplied_transactions: Vault::unapplied_intents(&meta, cache_dir)?,
    })
}

#[derive(Serialize, Debug)]
pub struct Finding {
    /// Store object name (or staging file) that is damaged or missing.
    pub object: String,
    pub problem: String,
    /// Paths inside the vault whose data depends on it.
    pub files: Vec<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct VerifyReport {
    pub packs_checked: u64,
    pub chunks_checked: u64,
    /// Blocks challenged by `--sample`.
    pub samples_checked: u64,
    pub findings: Vec<Finding>,
    /// Transactions in the intent log not yet in the index (see `Stats`):
    /// what they reference was not checked.
    pub unapplied_transactions: u64,
}

/// Check that every pack the index needs is present and authentic; with
/// `deep`, decrypt and hash every live chunk.
pub fn verify(repo: &Repo, cache_dir: &Path, deep: bool, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
    let meta = open_meta(repo, cache_dir)?;
    let mut by_pack: BTreeMap<PackId, Vec<(ChunkId, ChunkEntry)>> = BTreeMap::new();
    meta.read(|tx| {
        tx.for_each_chunk(|id, e| {
            if e.refs > 0 {
                by_pack.entry(e.loc.pack).or_default().push((id, e));
            }
            Ok(())
        })
    })?;
    let staged: HashSet<PackId> = staged_packs(&cache_dir.join("staging"))?.into_iter().map(|(p, _)| p).collect();
    let mut report = VerifyReport::default();
    // (object, problem, damaged chunk ids)
    let mut bad: Vec<(String, String, Vec<ChunkId>)> = Vec::new();
    // A mirror is checked store by store: each copy must be whole and authentic.
    let views = repo.backend.split()?;
    for view in &views {
        let label = if views.len() > 1 { format!("{}: ", view.description()) } else { String::new() };
        let mut ctx = PackCheck { repo, backend: view, label: &label, deep, staged: &staged };
        ctx.run(&by_pack, &mut report, &mut bad, &mut progress)?;
        check_cloud_metadata(repo, view, &label, &meta, &mut bad)?;
    }
    // Chunks referenced by files but absent from the index.
    let mut unindexed: BTreeSet<ChunkId> = BTreeSet::new();
    meta.read(|tx| {
        tx.for_each_inode(|_, rec| {
            for e in &rec.extents {
                if let Some(id) = e.chunk
                    && tx.chunk(&id)?.is_none_or(|c| c.refs == 0)
                {
                    unindexed.insert(id);
                }
            }
            Ok(())
        })
    })?;
    if !unindexed.is_empty() {
        bad.push((
            "metadata index".into(),
            format!("{} referenced chunk(s) are not indexed", unindexed.len()),
            unindexed.into_iter().collect(),
        ));
    }
    report.findings.extend(findings_for(&meta, bad)?);
    report.unapplied_transactions = Vault::unapplied_intents(&meta, cache_dir)?;
    Ok(report)
}

/// The store's metadata root, snapshot and journal: present, authentic,
/// chained, and not older than what this fog node last wrote.
fn check_cloud_metadata(repo: &Repo, view: &Backend, label: &str, meta: &Metadata, bad: &mut Bad) -> Result<()> {
    let keys = MetaKeys::new(&repo.keys.metadata, &repo.repo_id);
    let local = meta.cloud_root()?.map_or(0, |r| r.generation);
    let root = match view.get_small(cloud::ROOT_OBJECT)?.map(|b| keys.open_root(&b)) {
        None if local > 0 => {
            let problem = format!("missing from the store (this fog node wrote generation {local})");
            bad.push((format!("{label}{}", cloud::ROOT_OBJECT), problem, Vec::new()));
            return Ok(());
        }
        None => return Ok(()),
        Some(Err(e)) => {
            bad.push((format!("{label}{}", cloud::ROOT_OBJECT), e.to_string(), Vec::new()));
            return Ok(());
        }
        Some(Ok(r)) => r,
    };
    if root.generation < local {
        let problem = format!("rolled back: generation {} but this fog node wrote generation {local}", root.generation);
        bad.push((format!("{label}{}", cloud::ROOT_OBJECT), problem, Vec::new()));
    }
    let mut warnings = Vec::new();
    if let Err(e) = crate::recover::walk(view, &keys, &root, &mut warnings, |_, _| Ok(()), &mut |_, _| {}) {
        bad.push((format!("{label}metadata journal"), e.to_string(), Vec::new()));
    }
    Ok(())
}

/// Turn `(object, problem, damaged chunk ids)` into findings naming the files.
fn findings_for(meta: &Metadata, bad: Bad) -> Result<Vec<Finding>> {
    if bad.is_empty() {
        return Ok(Vec::new());
    }
    let paths = file_paths(meta)?;
    let mut users: HashMap<ChunkId, BTreeSet<u64>> = HashMap::new();
    let wanted: HashSet<ChunkId> = bad.iter().flat_map(|(_, _, ids)| ids.iter().copied()).collect();
    meta.read(|tx| {
        tx.for_each_inode(|ino, rec| {
            for e in &rec.extents {
                if let Some(id) = e.chunk.filter(|id| wanted.contains(id)) {
                    users.entry(id).or_default().insert(ino);
                }
            }
            Ok(())
        })
    })?;
    Ok(bad
        .into_iter()
        .map(|(object, problem, ids)| {
            let inos: BTreeSet<u64> = ids.iter().filter_map(|id| users.get(id)).flatten().copied().collect();
            let files = inos
                .iter()
                .flat_map(|ino| {
                    paths
                        .get(ino)
                        .cloned()
                        .unwrap_or_else(|| vec![format!("<inode {ino}, unlinked or in a locked vault folder>")])
                })
                .collect();
            Finding { object, problem, files }
        })
        .collect())
}

/// `verify --sample N`: challenge N random 64 KiB blocks of random packs
/// (per store of a mirror) against the MACs kept at upload, and check that
/// every pack with kept MACs is still listed at its size. Downloads at most
/// N blocks per store.
pub fn verify_sample(repo: &Repo, cache_dir: &Path, n: u32) -> Result<VerifyReport> {
    use rand::RngExt;
    use rand::seq::SliceRandom;
    use samples::{SAMPLE_BLOCK, block_mac, read_samples};
    let meta = open_meta(repo, cache_dir)?;
    let key = repo.keys.pack.derive("sample mac");
    let dir = cache_dir.join("samples");
    // pack → its live chunks (to name the affected files).
    let mut chunks_of: HashMap<PackId, Vec<ChunkId>> = HashMap::new();
    meta.read(|tx| {
        tx.for_each_chunk(|id, e| {
            if e.refs > 0 {
                chunks_of.entry(e.loc.pack).or_default().push(id);
            }
            Ok(())
        })
    })?;
    let mut report = VerifyReport::default();
    let mut bad: Bad = Vec::new();
    let mut rng = rand::rng();
    let views = repo.backend.split()?;
    for view in &views {
        let label = if views.len() > 1 { format!("{}: ", view.description()) } else { String::new() };
        let listed: HashMap<PackId, u64> = view
            .list("packs")?
            .into_iter()
            .filter_map(|(name, size)| PackId::from_object_name(&name).map(|p| (p, size)))
            .collect();
        let mut sampled: Vec<(PackId, u64, Vec<[u8; samples::MAC_LEN]>)> = Vec::new();
        for pack in chunks_of.keys() {
            let Some(macs) = read_samples(&dir, pack) else { continue };
            let want = macs.len() as u64;
            match listed.get(pack) {
                None => bad.push((
                    format!("{label}{}", pack.object_name()),
                    "missing from the store".into(),
                    chunks_of[pack].clone(),
                )),
                Some(&size) if size.div_ceil(SAMPLE_BLOCK) != want => bad.push((
                    format!("{label}{}", pack.object_name()),
                    "stored object has the wrong size".into(),
                    chunks_of[pack].clone(),
                )),
                Some(&size) => sampled.push((*pack, size, macs)),
            }
        }
        sampled.shuffle(&mut rng);
        report.packs_checked += sampled.len().min(n as usize) as u64;
        // N blocks in all, spread over the packs (several per pack when N is larger).
        for k in 0..(n as usize).min(sampled.len() * 256) {
            let (pack, size, macs) = &sampled[k % sampled.len()];
            let i = rng.random_range(0..macs.len() as u64);
            let start = i * SAMPLE_BLOCK;
            let len = SAMPLE_BLOCK.min(size - start);
            report.samples_checked += 1;
            let got = view.get_range(&pack.object_name(), start, len);
            if !got.is_ok_and(|b| block_mac(&key, pack, i, &b) == macs[i as usize]) {
                let object = format!("{label}{}", pack.object_name());
                if !bad.iter().any(|(o, _, _)| *o == object) {
                    bad.push((
                        object,
                        format!("sampled block {i} does not match what was uploaded"),
                        chunks_of[pack].clone(),
                    ));
                }
            }
        }
    }
    report.findings = findings_for(&meta, bad)?;
    Ok(report)
}

/// One pass of `verify` over the packs of one store.
struct PackCheck<'a> {
    repo: &'a Repo,
    backend: &'a Backend,
    label: &'a str,
    deep: bool,
    staged: &'a HashSet<PackId>,
}

type Bad = Vec<(String, String, Vec<ChunkId>)>;

impl PackCheck<'_> {
    fn run(
        &mut self,
        by_pack: &BTreeMap<PackId, Vec<(ChunkId, ChunkEntry)>>,
        report: &mut VerifyReport,
        bad: &mut Bad,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<()> {
        let (repo, backend, label, deep, staged) = (self.repo, self.backend, self.label, self.deep, self.staged);
        let in_store: HashMap<PackId, u64> = backend
            .list("packs")?
            .into_iter()
            .filter_map(|(n, s)| PackId::from_object_name(&n).map(|p| (p, s)))
            .collect();
        let total = by_pack.len() as u64;
        for (n, (pack, chunks)) in by_pack.iter().enumerate() {
            progress(n as u64, total);
            let object = pack.object_name();
            let name = format!("{label}{object}");
            let ids = || chunks.iter().map(|(id, _)| *id).collect::<Vec<_>>();
            let Some(&size) = in_store.get(pack) else {
                if !staged.contains(pack) {
                    bad.push((name, "missing from the store".into(), ids()));
                }
                continue;
            };
            report.packs_checked += 1;
            let header = (|| -> Result<Vec<crate::chunk_store::PackEntry>> {
                if size < TRAILER_LEN {
                    return Err(Error::Integrity("pack is truncated".into()));
                }
                let trailer = backend.get_range(&object, size - TRAILER_LEN, TRAILER_LEN)?;
                let hlen = parse_trailer(&trailer)? as u64;
                if hlen + TRAILER_LEN > size {
                    return Err(Error::Integrity("pack header length is out of range".into()));
                }
                let sealed = backend.get_range(&object, size - TRAILER_LEN - hlen, hlen)?;
                let entries = decode_header(&repo.keys.pack, pack, &sealed)?;
                let data_end = size - TRAILER_LEN - hlen;
                if entries.iter().any(|e| e.offset as u64 + e.len as u64 > data_end) {
                    return Err(Error::Integrity("pack is shorter than its header says".into()));
                }
                Ok(entries)
            })();
            let entries = match header {
                Ok(e) => e,
                Err(e) => {
                    bad.push((name, e.to_string(), ids()));
                    continue;
                }
            };
            let listed: HashMap<ChunkId, (u32, u32)> = entries.iter().map(|e| (e.id, (e.offset, e.len))).collect();
            let mut damaged = Vec::new();
            for (id, e) in chunks {
                if listed.get(id) != Some(&(e.loc.offset, e.loc.len)) {
                    damaged.push(*id);
                }
            }
            if !damaged.is_empty() {
                bad.push((name.clone(), "pack header disagrees with the index".into(), damaged));
                continue;
            }
            if deep {
                let data_end = entries.iter().map(|e| e.offset as u64 + e.len as u64).max().unwrap_or(0);
                let body = match backend.get_range(&object, 0, data_end) {
                    Ok(b) => b,
                    Err(e) => {
                        bad.push((name, e.to_string(), ids()));
                        continue;
                    }
                };
                let mut damaged = Vec::new();
                for (id, e) in chunks {
                    let env = &body[e.loc.offset as usize..(e.loc.offset + e.loc.len) as usize];
                    report.chunks_checked += 1;
                    match crypto::open_chunk_checked(&repo.keys, id, env, 8 << 20) {
                        Ok(p) if p.len() == e.plain_len as usize => {}
                        _ => damaged.push(*id),
                    }
                }
                if !damaged.is_empty() {
                    bad.push((name, format!("{} chunk(s) fail authentication", damaged.len()), damaged));
                }
            }
        }
        progress(total, total);
        Ok(())
    }
}

/// ino → every path that names it (hard links give several).
fn file_paths(meta: &Metadata) -> Result<HashMap<u64, Vec<String>>> {
    let mut out: HashMap<u64, Vec<String>> = HashMap::new();
    let mut stack = vec![(ROOT_INO, String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut after = 0;
        loop {
            let batch = match meta.read(|tx| tx.list_dir(dir, after, 1024)) {
                Ok(b) => b,
                Err(Error::Locked) => break, // a locked vault folder: its names stay sealed
                Err(e) => return Err(e),
            };
            let Some(last) = batch.last() else { break };
            after = last.0;
            for (_, d) in batch {
                let path = format!("{prefix}/{}", String::from_utf8_lossy(&d.name));
                if d.kind == FileKind::Dir {
                    stack.push((d.ino, path));
                } else {
                    out.entry(d.ino).or_default().push(path);
                }
            }
        }
    }
    Ok(out)
}

/// What `repair` did.
#[derive(Serialize, Debug, Default)]
pub struct RepairReport {
    /// `(store, object)` copies made.
    pub copied: Vec<(String, String)>,
}

/// Restore full redundancy of a mirrored repository: every object that one
/// store holds and another lacks (or holds at a different size) is copied
/// there. Only ciphertext moves, so no passphrase is needed. A store that is
/// unreachable is an error (nothing can be restored to it yet).
pub fn repair(backend: &Backend, mut progress: impl FnMut(&str, u64, u64)) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    for i in 0..backend.member_count() {
        let store = backend.member_description(i).to_string();
        let missing = backend.missing_on(i, "")?;
        let total = missing.len() as u64;
        for (n, name) in missing.iter().enumerate() {
            progress(&store, n as u64, total);
            backend.copy_to(i, name)?;
            report.copied.push((store.clone(), name.clone()));
        }
        progress(&store, total, total);
    }
    Ok(report)
}
