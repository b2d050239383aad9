//! `fogvault audit`: read the trail (the fog node's copy, or the store's
//! when the node's is gone) and verify both copies against each other and
//! against the signed checkpoints.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use super::cloud::{self, Checker};
use super::log::{self, AuditKeys, Hash, Record};
use crate::chunk_store::Backend;
use crate::error::{Error, Result};

/// Records in chain order, each with the hash of its sealed bytes.
pub type Chain = Vec<(Record, Hash)>;

/// The fog node's copy of the log.
pub struct Local {
    /// Where it begins: records up to `base.seq` are in the store only.
    pub base: log::Resume,
    /// The records of its valid part, from `base.seq + 1`.
    pub chain: Chain,
    /// The first problem met.
    pub problem: Option<String>,
}

impl Local {
    /// Sequence number of the newest record it holds.
    pub fn last_seq(&self) -> u64 {
        self.base.seq + self.chain.len() as u64
    }
}

/// The fog node's log from its base (`cloud::local_base`) on.
pub fn read_local(cache_dir: &Path, keys: &AuditKeys) -> Result<Option<Local>> {
    let mut file = match std::fs::File::open(log::log_path(cache_dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A trim by the running daemon may move the base (and punch the bytes
    // below it) while this reads: read again from the new base then. The
    // bytes are checked only against the base they were read from.
    let mut base = cloud::local_base(cache_dir);
    let mut bytes = Vec::new();
    for _ in 0..3 {
        bytes.clear();
        file.seek(SeekFrom::Start(base.offset))?;
        file.read_to_end(&mut bytes)?;
        let now = cloud::local_base(cache_dir);
        if now.offset == base.offset {
            let (frames, _torn) = log::split_frames(&bytes);
            let (chain, problem) = log::check_chain(keys, &frames, base.seq + 1, base.head.unwrap_or([0; 32]));
            return Ok(Some(Local { base, chain, problem }));
        }
        base = now;
    }
    Err(Error::Repo("the fog node's audit log was trimmed three times while it was read; try again".into()))
}

/// The whole trail for showing: the store's records the fog node no longer
/// keeps, then the fog node's own (the store's alone if the node has none).
pub fn read_all(cache_dir: &Path, backend: &Backend, keys: &AuditKeys) -> Result<Chain> {
    match read_local(cache_dir, keys)? {
        // An empty copy (a new node, or one that lost its base) shows the store's.
        Some(local) if local.chain.is_empty() => Ok(read_store(backend, keys)?.0),
        Some(local) if local.base.seq == 0 => Ok(local.chain),
        Some(local) => {
            let mut all = read_store(backend, keys)?.0;
            if (all.len() as u64) < local.base.seq {
                tracing::warn!(
                    have = all.len(),
                    need = local.base.seq,
                    "the store lacks older audit records; run `fogvault audit --verify`"
                );
            }
            all.truncate(local.base.seq as usize);
            all.extend(local.chain);
            Ok(all)
        }
        None => Ok(read_store(backend, keys)?.0),
    }
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

/// What `continue_store_chain` found.
#[derive(Debug, Default)]
pub struct Continued {
    /// The new log's first record follows this one (`None`: the store holds no trail).
    pub after: Option<u64>,
    /// Problems of the store's trail (it is continued after them, never over them).
    pub problems: Vec<String>,
}

/// A fog node rebuilt by `recover` (no log of its own) continues the
/// store's trail instead of starting a second chain at record 1 over it:
/// its log begins after the newest record the store holds, whichever is
/// later of the end of the valid chain, any segment beyond a gap, and the
/// newest authentic checkpoint. So no segment of the lost node is
/// overwritten, and `audit --verify` checks the old records in the store.
pub fn continue_store_chain(
    cache_dir: &Path,
    backend: &Backend,
    keys: &AuditKeys,
    checker: &Checker,
) -> Result<Continued> {
    if log::log_path(cache_dir).exists() {
        return Ok(Continued::default());
    }
    let (chain, problems) = read_store(backend, keys)?;
    let mut point: Option<(u64, Hash)> = chain.last().map(|(r, h)| (r.seq, *h));
    let newer = |point: &Option<(u64, Hash)>, seq: u64| point.is_none_or(|(s, _)| seq > s);
    for (name, _) in backend.list(cloud::SEGMENT_PREFIX)? {
        let Some(first) = cloud::parse_seq(&name, cloud::SEGMENT_PREFIX) else { continue };
        if !newer(&point, first) {
            continue;
        }
        let Some(bytes) = backend.get(&name)? else { continue };
        let (frames, _) = log::split_frames(&bytes);
        if let Some(last) = frames.last() {
            point = Some((first + frames.len() as u64 - 1, log::hash(last)));
        }
    }
    for (name, _) in backend.list(cloud::CHECKPOINT_PREFIX)? {
        let Some(last) = cloud::parse_seq(&name, cloud::CHECKPOINT_PREFIX) else { continue };
        if !newer(&point, last) {
            continue;
        }
        let Some(raw) = backend.get(&name)? else { continue };
        let head = checker.open(&raw).ok().filter(|cp| cp.last == last).and_then(|cp| hex::decode(cp.head).ok());
        if let Some(head) = head.and_then(|h| Hash::try_from(h).ok()) {
            point = Some((last, head));
        }
    }
    let Some((seq, head)) = point else { return Ok(Continued { after: None, problems }) };
    cloud::start_after(cache_dir, &log::Resume { offset: 0, seq, head: Some(head) })?;
    Ok(Continued { after: Some(seq), problems })
}

#[derive(Serialize, Debug, Default)]
pub struct AuditVerify {
    pub local_records: u64,
    /// First record the fog node keeps (older ones are in the store only).
    pub local_first: u64,
    pub store_records: u64,
    pub checkpoints: u64,
    pub problems: Vec<String>,
}

/// Check the fog node's copy, the store's copy and every checkpoint.
pub fn verify(cache_dir: &Path, backend: &Backend, keys: &AuditKeys, checker: &Checker) -> Result<AuditVerify> {
    let mut v = AuditVerify::default();
    // Taken before the store is read: a live mount keeps uploading meanwhile.
    let uploaded = cloud::uploaded_point(cache_dir).seq;
    let local = read_local(cache_dir, keys)?;
    let (store, store_problems) = read_store(backend, keys)?;
    v.store_records = store.len() as u64;
    v.problems.extend(store_problems);
    if let Some(l) = &local {
        v.local_records = l.chain.len() as u64;
        v.local_first = l.base.seq + 1;
        if let Some(p) = &l.problem {
            v.problems.push(format!("fog node's log: {p}"));
        }
        // The store must hold what the fog node uploaded (deleting every
        // audit object from the store leaves no chain and no checkpoint to
        // contradict, but the node knows how far its uploads went)...
        if (store.len() as u64) < uploaded {
            v.problems.push(format!(
                "store: the fog node uploaded records up to {uploaded} but the store's log ends at {} (records removed)",
                store.len()
            ));
        }
        // ...and, unchanged, the records the fog node gave up (a store that
        // ends before them was reported just above: the base is uploaded).
        if let Some((_, h)) = l.base.seq.checked_sub(1).and_then(|i| store.get(i as usize))
            && Some(*h) != l.base.head
        {
            v.problems
                .push(format!("store: record {} differs from the one the fog node's log begins after", l.base.seq));
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
        // `recs` starts at record `first`.
        let matches = |recs: &[(Record, Hash)], first: u64| {
            let i = cp.last.checked_sub(first)? as usize;
            recs.get(i).map(|(r, h)| r.seq == cp.last && hex::encode(h) == cp.head)
        };
        match matches(&store, 1) {
            Some(true) => {}
            Some(false) => v.problems.push(format!("store: record {} differs from its signed checkpoint", cp.last)),
            None => v.problems.push(format!(
                "store: the signed checkpoint names record {} but the store's log ends at {} (records removed)",
                cp.last,
                store.len()
            )),
        }
        if let Some(l) = local.as_ref().filter(|l| cp.last > l.base.seq) {
            match matches(&l.chain, l.base.seq + 1) {
                Some(true) => {}
                Some(false) => {
                    v.problems.push(format!("fog node's log: record {} differs from its signed checkpoint", cp.last))
                }
                None => v.problems.push(format!(
                    "fog node's log ends at record {} but a signed checkpoint names record {} (records removed)",
                    l.last_seq(),
                    cp.last
                )),
            }
        }
    }
    // Both copies must agree where they overlap.
    if let Some(l) = &local {
        for ((a, ha), (_, hb)) in l.chain.iter().zip(store.iter().skip(l.base.seq as usize)) {
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
