//! `fogvault audit`: read the trail (the fog node's copy, or the store's
//! when the node's is gone) and verify both copies against each other and
//! against the signed checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::cloud::{self, Checker};
use super::log::{self, AuditKeys, Hash, Record};
use crate::chunk_store::Backend;
use crate::error::Result;

/// Records in chain order, each with the hash of its sealed bytes.
pub type Chain = Vec<(Record, Hash)>;

/// The fog node's log: the records of its valid prefix, and the first problem.
pub fn read_local(cache_dir: &Path, keys: &AuditKeys) -> Result<Option<(Chain, Option<String>)>> {
    let bytes = match std::fs::read(log::log_path(cache_dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (frames, _torn) = log::split_frames(&bytes);
    Ok(Some(log::check_chain(keys, &frames, 1, [0; 32])))
}

/// The store's copy: records of the contiguous, chained segments from 1,
/// and the problems met (gaps, broken chains).
pub fn read_store(backend: &Backend, keys: &AuditKeys) -> Result<(Chain, Vec<String>)> {
    let mut segs: BTreeMap<u64, String> = BTreeMap::new();
    for (name, _) in backend.list(cloud::SEGMENT_PREFIX)? {
        if let Some(first) = cloud::parse_seq(&name, cloud::SEGMENT_PREFIX) {
            segs.insert(first, name);
        }
    }
    let mut out: Chain = Vec::new();
    let mut problems = Vec::new();
    let (mut next, mut prev) = (1u64, [0u8; 32]);
    for (first, name) in segs {
        if first < next {
            continue; // an older, shorter copy of a segment already read
        }
        if first > next {
            problems.push(format!("store: audit records {next}..{} are missing (segment removed)", first - 1));
            break;
        }
        let Some(bytes) = backend.get(&name)? else { continue };
        let (frames, torn) = log::split_frames(&bytes);
        let (good, problem) = log::check_chain(keys, &frames, first, prev);
        if let Some((r, h)) = good.last() {
            next = r.seq + 1;
            prev = *h;
        }
        out.extend(good);
        if let Some(p) = problem {
            problems.push(format!("store ({name}): {p}"));
            break;
        }
        if torn > 0 {
            problems.push(format!("store ({name}): truncated"));
            break;
        }
    }
    Ok((out, problems))
}

#[derive(Serialize, Debug, Default)]
pub struct AuditVerify {
    pub local_records: u64,
    pub store_records: u64,
    pub checkpoints: u64,
    pub problems: Vec<String>,
}

/// Check the fog node's copy, the store's copy and every checkpoint.
pub fn verify(cache_dir: &Path, backend: &Backend, keys: &AuditKeys, checker: &Checker) -> Result<AuditVerify> {
    let mut v = AuditVerify::default();
    let local = read_local(cache_dir, keys)?;
    let (store, store_problems) = read_store(backend, keys)?;
    v.store_records = store.len() as u64;
    v.problems.extend(store_problems);
    if let Some((recs, problem)) = &local {
        v.local_records = recs.len() as u64;
        if let Some(p) = problem {
            v.problems.push(format!("fog node's log: {p}"));
        }
    }
    // Every checkpoint must be authentic and match the store's chain.
    let mut newest = 0;
    for (name, _) in backend.list(cloud::CHECKPOINT_PREFIX)? {
        let Some(last) = cloud::parse_seq(&name, cloud::CHECKPOINT_PREFIX) else { continue };
        v.checkpoints += 1;
        let Some(raw) = backend.get(&name)? else { continue };
        let cp = match checker.open(&raw) {
            Ok(cp) if cp.last == last => cp,
            Ok(_) => {
                v.problems.push(format!("store ({name}): checkpoint stored under the wrong name"));
                continue;
            }
            Err(e) => {
                v.problems.push(format!("store ({name}): {e}"));
                continue;
            }
        };
        newest = newest.max(cp.last);
        let matches = |recs: &[(Record, Hash)]| {
            recs.get(cp.last as usize - 1).map(|(r, h)| r.seq == cp.last && hex::encode(h) == cp.head)
        };
        match matches(&store) {
            Some(true) => {}
            Some(false) => v.problems.push(format!("store: record {} differs from its signed checkpoint", cp.last)),
            None => v.problems.push(format!(
                "store: the signed checkpoint names record {} but the store's log ends at {} (records removed)",
                cp.last,
                store.len()
            )),
        }
        if let Some((recs, _)) = &local {
            match matches(recs) {
                Some(true) => {}
                Some(false) => {
                    v.problems.push(format!("fog node's log: record {} differs from its signed checkpoint", cp.last))
                }
                None => v.problems.push(format!(
                    "fog node's log ends at record {} but a signed checkpoint names record {} (records removed)",
                    recs.len(),
                    cp.last
                )),
            }
        }
    }
    // Both copies must agree where they overlap.
    if let Some((recs, _)) = &local {
        for ((a, ha), (_, hb)) in recs.iter().zip(store.iter()) {
            if ha != hb {
                v.problems.push(format!("record {} differs between the fog node's log and the store's", a.seq));
                break;
            }
        }
    }
    v.problems.dedup();
    let _ = newest;
    Ok(v)
}

/// Which records `audit` shows.
#[derive(Default)]
pub struct Filter {
    pub since_ms: Option<u64>,
    pub user: Option<String>,
    pub patient: Option<String>,
}

impl Filter {
    pub fn keeps(&self, r: &Record) -> bool {
        self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.user.as_ref().is_none_or(|u| r.user.as_deref() == Some(u.as_str()))
            && self.patient.as_ref().is_none_or(|p| {
                let hit = |s: &Option<String>| s.as_deref().is_some_and(|s| s.split('/').any(|c| c == p));
                hit(&r.path) || hit(&r.detail)
            })
    }
}
