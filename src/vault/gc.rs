//! Garbage collection: drop chunks no file references any more and give
//! their space back, by deleting packs that hold nothing live and repacking
//! packs that are mostly dead. Safe while the vault is mounted and written.
//!
//! Order of steps (each crash point leaves only garbage, never a dangling
//! reference; docs/ARCHITECTURE.md):
//! 1. plan, with commits held off (`ChunkIo::exclusive`): in one index
//!    transaction, drop the entries of dead chunks in the packs to be
//!    deleted or repacked. A writer that later stores the same bytes finds
//!    no entry and stores a new copy.
//! 2. copy live envelopes of sparse packs, unchanged, into new packs, upload
//!    them, then point their index entries at the copies.
//! 3. wait until the metadata journal in the cloud holds steps 1–2 (so a
//!    recovered node never names a deleted pack), give readers that looked
//!    up an old location a moment, then delete the old packs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Vault;
use crate::chunk_store::PackId;
use crate::crypto::ChunkId;
use crate::error::{Error, Result};
use crate::metadata::ChunkEntry;

/// Packs whose live bytes are below this share of their size are repacked.
const REPACK_BELOW: f64 = 0.5;
/// How long readers may still use a location they looked up before the repack.
const READER_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the metadata journal to reach the store.
const JOURNAL_WAIT: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct GcReport {
    pub packs_before: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub chunks_dropped: u64,
    pub chunks_moved: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

struct Plan {
    /// Packs to delete after their live chunks (if any) moved.
    condemned: Vec<PackId>,
    /// Live chunks to move out of condemned packs.
    moves: Vec<(ChunkId, ChunkEntry)>,
}

impl Vault {
    /// Collect garbage now (see the module comment).
    pub fn gc(&self) -> Result<GcReport> {
        let Some(_one) = self.gc_running.try_lock() else {
            return Err(Error::Repo("garbage collection is already running on this vault".into()));
        };
        let mut report = GcReport::default();
        let backend = self.chunks.store().backend();
        let sizes: HashMap<PackId, u64> = backend
            .list("packs")?
            .into_iter()
            .filter_map(|(name, size)| PackId::from_object_name(&name).map(|p| (p, size)))
            .collect();
        report.packs_before = sizes.len() as u64;
        report.bytes_before = sizes.values().sum();
        let plan = self.plan(&sizes, &mut report)?;
        if plan.condemned.is_empty() {
            report.bytes_after = report.bytes_before;
            return Ok(report);
        }
        // 2. Move the live chunks (envelopes are position-independent).
        let store = self.chunks.store();
        let mut moved = Vec::with_capacity(plan.moves.len());
        for (id, entry) in &plan.moves {
            let env = self.chunks.read_verified_envelope(id, &entry.loc)?;
            moved.push((*id, entry.loc, store.store_chunk(*id, &env)?));
        }
        store.sync()?;
        store.flush_uploads()?;
        self.meta.write(|tx| {
            for (id, old, new) in &moved {
                // Re-read: references may have changed meanwhile; only the location moves.
                if let Some(e) = tx.chunk(id)?
                    && e.loc == *old
                {
                    tx.put_chunk(id, &ChunkEntry { loc: *new, ..e })?;
                }
            }
            Ok(())
        })?;
        self.checkpoint()?;
        report.chunks_moved = moved.len() as u64;
        // 3. The cloud's journal must hold all of this before a pack goes.
        let (target, _) = self.meta.journal_position()?;
        let start = Instant::now();
        while self.meta.journal_position()?.1 < target {
            if start.elapsed() > JOURNAL_WAIT {
                return Err(Error::Store(
                    "the metadata journal did not reach the store; old packs are kept for the next gc".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(READER_GRACE);
        let repacked: HashSet<PackId> = plan.moves.iter().map(|(_, e)| e.loc.pack).collect();
        for pack in &plan.condemned {
            store.delete_pack(pack)?;
            report.packs_deleted += 1;
        }
        report.packs_repacked = repacked.len() as u64;
        report.bytes_after = backend.list("packs")?.iter().map(|(_, s)| s).sum();
        Ok(report)
    }

    /// Step 1: choose the packs to delete or repack and drop their dead chunks.
    fn plan(&self, sizes: &HashMap<PackId, u64>, report: &mut GcReport) -> Result<Plan> {
        let _quiet = self.chunks.exclusive();
        let busy: HashSet<PackId> = self.chunks.pending_packs();
        let store = self.chunks.store();
        self.meta.write(|tx| {
            let mut by_pack: HashMap<PackId, Vec<(ChunkId, ChunkEntry)>> = HashMap::new();
            tx.for_each_chunk(|id, e| {
                by_pack.entry(e.loc.pack).or_default().push((id, e));
                Ok(())
            })?;
            let mut condemned = Vec::new();
            let mut moves = Vec::new();
            for (pack, &size) in sizes {
                if busy.contains(pack) || store.any_staged(&[*pack]) {
                    continue;
                }
                let entries = by_pack.remove(pack).unwrap_or_default();
                let live: u64 = entries.iter().filter(|(_, e)| e.refs > 0).map(|(_, e)| e.loc.len as u64).sum();
                // A pack no entry names is left from an interrupted gc or write.
                if live as f64 >= REPACK_BELOW * size as f64 {
                    continue;
                }
                for (id, e) in entries {
                    if e.refs > 0 {
                        moves.push((id, e));
                    } else {
                        tx.delete_chunk(&id)?;
                        report.chunks_dropped += 1;
                    }
                }
                condemned.push(*pack);
            }
            Ok(Plan { condemned, moves })
        })
    }
}
