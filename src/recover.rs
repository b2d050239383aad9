//! `fogvault recover`: rebuild a fog node's index from the cloud alone
//! (the root, the newest snapshot and the journal after it), checking that
//! the store neither rolled back nor dropped any part of the metadata.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chunk_store::Backend;
use crate::error::{Error, Result};
use crate::metadata::cloud::{self, MetaKeys, Root};
use crate::metadata::{Change, Metadata};
use crate::repo::Repo;

#[derive(Serialize, Debug, Default)]
pub struct RecoverReport {
    /// Generation of the metadata root recovered from.
    pub generation: u64,
    /// Last transaction recovered.
    pub transactions: u64,
    pub snapshot_seq: Option<u64>,
    pub journal_objects: u64,
    /// Inode records restored (files, directories, links; sealed folders included).
    pub inodes: u64,
    /// Stores of a mirror that serve an older root than the newest (repair them).
    pub warnings: Vec<String>,
}

/// The newest authentic root over every store of the repository.
fn newest_root(backend: &Backend, keys: &MetaKeys, report: &mut RecoverReport) -> Result<Root> {
    let mut roots = Vec::new();
    let mut last_err = None;
    for view in backend.split()? {
        match view.get_small(cloud::ROOT_OBJECT).and_then(|b| b.map(|b| keys.open_root(&b)).transpose()) {
            Ok(r) => roots.push((view.description().to_string(), r)),
            Err(e) => {
                report.warnings.push(format!("{}: cannot read the metadata root: {e}", view.description()));
                last_err = Some(e);
            }
        }
    }
    let best = roots.iter().filter_map(|(_, r)| r.as_ref()).max_by_key(|r| r.generation).cloned();
    let Some(best) = best else {
        return Err(last_err.unwrap_or_else(|| {
            Error::Repo("the store holds no metadata root: there is nothing to recover from".into())
        }));
    };
    for (store, r) in &roots {
        let g = r.as_ref().map_or(0, |r| r.generation);
        if g < best.generation && roots.len() > 1 {
            report.warnings.push(format!(
                "{store} serves metadata root generation {g}, older than {}: run `fogvault repair`",
                best.generation
            ));
        }
    }
    Ok(best)
}

/// Rebuild the index for `repo` in `cache_dir` (which must hold none).
/// Refuses a root older than `min_generation` (the last generation the
/// operator knows of, e.g. from `stats`): a store that rolled back both its
/// root and the journal after it is indistinguishable from an honest older
/// store without that number.
pub fn recover(
    repo: &Repo,
    cache_dir: &Path,
    min_generation: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<RecoverReport> {
    let target = cache_dir.join("meta");
    if target.join("data.mdb").exists() {
        return Err(Error::Repo(format!(
            "{} already holds a fog-node index; recover into an empty cache directory",
            cache_dir.display()
        )));
    }
    crate::durable_fs::create_dir_all(cache_dir)
        .map_err(|e| Error::Repo(format!("cannot create cache directory {}: {e}", cache_dir.display())))?;
    let keys = MetaKeys::new(&repo.keys.metadata, &repo.repo_id);
    let mut report = RecoverReport::default();
    let root = newest_root(&repo.backend, &keys, &mut report)?;
    if root.generation < min_generation {
        return Err(Error::Integrity(format!(
            "the store's metadata root is at generation {} but generation {min_generation} was expected: \
             the store was rolled back; refusing to recover from it",
            root.generation
        )));
    }
    // Build in a side directory and move it into place only when complete,
    // so a failed recovery leaves nothing a mount could mistake for an index.
    let building: PathBuf = cache_dir.join("meta.recovering");
    let _ = std::fs::remove_dir_all(&building);
    let result = rebuild(repo, &keys, &root, &building, &mut report, &mut progress);
    match result {
        Ok(()) => {
            std::fs::rename(&building, &target).map_err(Error::from_io)?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            Err(e)
        }
    }
}

/// Where a walk of the store's metadata ended.
pub struct Walked {
    pub head_seq: u64,
    pub head_hash: cloud::Hash,
    pub journal_objects: u64,
}

/// Walk the store's metadata from `root`: the snapshot's parts, then every
/// journal object chained after it, checking names, hashes and the chain.
/// `apply` gets each batch of changes with the transaction it reaches.
/// Anything missing, altered, replayed or short of the root is an error.
pub fn walk(
    backend: &Backend,
    keys: &MetaKeys,
    root: &Root,
    warnings: &mut Vec<String>,
    mut apply: impl FnMut(Vec<Change>, u64) -> Result<()>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Walked> {
    let (mut next, mut prev) = (1u64, [0u8; 32]);
    if let Some(snap) = &root.snapshot {
        for (i, want) in snap.parts.iter().enumerate() {
            let name = cloud::snapshot_part_name(snap.seq, i);
            let raw = backend
                .get(&name)?
                .ok_or_else(|| Error::Integrity(format!("metadata snapshot part {name} is missing from the store")))?;
            if &cloud::hash(&raw) != want {
                return Err(Error::Integrity(format!("metadata snapshot part {name} was altered or replaced")));
            }
            apply(keys.open_snapshot_part(&name, &raw)?, snap.seq)?;
        }
        (next, prev) = (snap.seq + 1, snap.chain);
    }
    let mut objects: Vec<(u64, String)> = backend
        .list(cloud::JOURNAL_PREFIX)?
        .into_iter()
        .filter_map(|(name, _)| cloud::parse_journal_name(&name).map(|first| (first, name)))
        .filter(|(first, _)| *first >= next)
        .collect();
    objects.sort();
    let total = objects.len() as u64;
    let mut count = 0;
    for (first, name) in objects {
        if first != next {
            if next <= root.head_seq {
                return Err(Error::Integrity(format!(
                    "metadata journal transactions {next}..{} are missing from the store (dropped or deleted)",
                    first - 1
                )));
            }
            warnings.push(format!("ignored metadata journal object {name}: it does not follow the journal"));
            break;
        }
        let raw = backend.get(&name)?.ok_or_else(|| Error::Integrity(format!("metadata object {name} vanished")))?;
        let obj = keys.open_journal(&name, &raw)?;
        if obj.prev != prev {
            if next <= root.head_seq {
                return Err(Error::Integrity(format!(
                    "metadata journal object {name} does not follow its predecessor (altered or replayed)"
                )));
            }
            warnings.push(format!("ignored metadata journal object {name}: it does not chain"));
            break;
        }
        let mut changes: Vec<Change> = Vec::new();
        for (_, entry) in &obj.entries {
            changes.extend(cloud::decode_entry(entry)?);
        }
        apply(changes, obj.last)?;
        (next, prev) = (obj.last + 1, cloud::hash(&raw));
        count += 1;
        progress(count, total);
    }
    let head = next - 1;
    if head < root.head_seq {
        return Err(Error::Integrity(format!(
            "the metadata journal ends at transaction {head} but the root names {}: \
             the store dropped journal objects",
            root.head_seq
        )));
    }
    Ok(Walked { head_seq: head, head_hash: prev, journal_objects: count })
}

fn rebuild(
    repo: &Repo,
    keys: &MetaKeys,
    root: &Root,
    dir: &Path,
    report: &mut RecoverReport,
    progress: &mut impl FnMut(u64, u64),
) -> Result<()> {
    let meta = Metadata::open(dir, &repo.keys)?;
    let walked = walk(
        &repo.backend,
        keys,
        root,
        &mut report.warnings,
        |changes, seq| meta.apply_recovered(changes, seq, root),
        progress,
    )?;
    report.snapshot_seq = root.snapshot.as_ref().map(|s| s.seq);
    report.journal_objects = walked.journal_objects;
    let head = walked.head_seq;
    let recovered = Root {
        generation: root.generation,
        head_seq: head,
        head_hash: walked.head_hash,
        snapshot: root.snapshot.clone(),
        objects_since_snapshot: root.objects_since_snapshot.max(walked.journal_objects),
    };
    meta.apply_recovered(std::iter::empty(), head, &recovered)?;
    match meta.read(|tx| tx.meta_bytes("repo_id"))? {
        Some(id) if id == repo.repo_id.as_bytes() => {}
        _ => return Err(Error::Integrity("the recovered index does not name this repository".into())),
    }
    let mut inodes = 0;
    let locked = meta.read(|tx| {
        tx.for_each_inode(|_, _| {
            inodes += 1;
            Ok(())
        })
    })?;
    meta.sync()?;
    report.inodes = inodes + locked;
    report.generation = root.generation;
    report.transactions = head;
    Ok(())
}
