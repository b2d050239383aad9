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
//! 2. once the metadata journal in the cloud holds the plan (so a recovered
//!    node never names a deleted pack), delete the packs with nothing live:
//!    they need no copying and free the space a repack needs.
//! 3. copy the live envelopes of sparse packs, unchanged, into new packs,
//!    upload them (to every store of a mirror), then point their index
//!    entries at the copies; once the cloud's journal holds that too, delete
//!    the old packs. A pack whose chunks cannot all be copied (a damaged
//!    envelope, a full disk, a store down) is kept as it is and reported;
//!    the others are still collected.
//!
//! Before each delete, readers that looked up an old location get a moment.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Vault;
use crate::chunk_store::{Location, PackId};
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
    /// Packs that should have been repacked but were kept this time.
    #[serde(default)]
    pub packs_kept: u64,
    /// Why (no file names: pack ids and store errors only).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// A live chunk copied out of a sparse pack: `(chunk, old location, new location)`.
type Move = (ChunkId, Location, Location);

struct Plan {
    /// Packs to delete after their live chunks (if any) moved.
    condemned: Vec<PackId>,
    /// Live chunks to move out of condemned packs.
    moves: Vec<(ChunkId, ChunkEntry)>,
}

impl Vault {
    /// Collect garbage now (see the module comment). Packs that could not
    /// be repacked are kept and named in `GcReport::problems`.
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
        let mut sparse: HashMap<PackId, Vec<(ChunkId, ChunkEntry)>> = HashMap::new();
        for (id, entry) in plan.moves {
            sparse.entry(entry.loc.pack).or_default().push((id, entry));
        }
        // 2. Packs with nothing live.
        let dead: Vec<PackId> = plan.condemned.iter().filter(|p| !sparse.contains_key(p)).copied().collect();
        if !dead.is_empty() {
            self.wait_until_journal_uploaded()?;
            self.delete_packs(&dead, &mut report)?;
        }
        // 3. Sparse packs.
        let moved = self.copy_live_chunks(sparse, &mut report);
        if !moved.is_empty() {
            self.meta.write(|tx| {
                for (id, old, new) in moved.iter().flat_map(|(_, m)| m) {
                    // Re-read: references may have changed meanwhile; only the location moves.
                    if let Some(e) = tx.chunk(id)?
                        && e.loc == *old
                    {
                        tx.put_chunk(id, &ChunkEntry { loc: *new, ..e })?;
                    }
                }
                Ok(())
            })?;
            report.chunks_moved = moved.iter().map(|(_, m)| m.len() as u64).sum();
            self.wait_until_journal_uploaded()?;
            let repacked: Vec<PackId> = moved.iter().map(|(p, _)| *p).collect();
            self.delete_packs(&repacked, &mut report)?;
            report.packs_repacked = repacked.len() as u64;
        }
        report.bytes_after = backend.list("packs")?.iter().map(|(_, s)| s).sum();
        Ok(report)
    }

    /// Copy the live chunks of each sparse pack into new packs and upload
    /// them. Returns, per pack whose every live chunk was copied, the moves
    /// `(chunk, old location, new location)`; the other packs stay as they
    /// are (their copies so far become garbage in the new packs).
    fn copy_live_chunks(
        &self,
        sparse: HashMap<PackId, Vec<(ChunkId, ChunkEntry)>>,
        report: &mut GcReport,
    ) -> Vec<(PackId, Vec<Move>)> {
        let store = self.chunks.store();
        let mut moved = Vec::new();
        let mut stopped = false;
        for (pack, entries) in sparse {
            if stopped {
                report.packs_kept += 1;
                continue;
            }
            let mut copies = Vec::with_capacity(entries.len());
            let copied = entries.iter().try_for_each(|(id, e)| {
                let env = self.chunks.read_verified_envelope(id, &e.loc)?;
                copies.push((*id, e.loc, store.store_chunk(*id, &env)?));
                Ok(())
            });
            match copied {
                Ok(()) => moved.push((pack, copies)),
                Err(e) => {
                    // A damaged envelope concerns its pack only (`verify`
                    // names it); anything else (no space, the store) would
                    // fail the next pack too.
                    stopped = !matches!(e, Error::Integrity(_));
                    report.packs_kept += 1;
                    report.problems.push(format!("pack {} kept: {e}", pack.hex()));
                }
            }
        }
        if moved.is_empty() {
            return moved;
        }
        let uploaded = store.sync().and_then(|()| store.flush_uploads());
        let new_packs: HashSet<PackId> = moved.iter().flat_map(|(_, m)| m.iter().map(|(_, _, l)| l.pack)).collect();
        let problem = match uploaded {
            Err(e) => Some(format!("the repacked data did not upload: {e}")),
            Ok(()) if !new_packs.iter().all(|p| store.backend().on_every_store(&p.object_name())) => {
                Some("a store of the mirror lacks a repacked pack (run `fogvault repair`)".to_string())
            }
            Ok(()) => None,
        };
        if let Some(p) = problem {
            report.packs_kept += moved.len() as u64;
            report.problems.push(format!("{} sparse pack(s) kept: {p}", moved.len()));
            moved.clear();
        }
        moved
    }

    /// Make the metadata durable and wait until the cloud's journal holds
    /// every transaction committed so far.
    fn wait_until_journal_uploaded(&self) -> Result<()> {
        self.checkpoint()?;
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
        Ok(())
    }

    fn delete_packs(&self, packs: &[PackId], report: &mut GcReport) -> Result<()> {
        std::thread::sleep(READER_GRACE);
        for pack in packs {
            self.chunks.store().delete_pack(pack)?;
            report.packs_deleted += 1;
        }
        Ok(())
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
