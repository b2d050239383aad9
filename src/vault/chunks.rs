//! Chunk I/O for the vault: dedup-aware storing and cached, authenticated fetching.
//!
//! Reads go through a bounded LRU of decrypted chunks. A chunk being loaded
//! has a `Slot` in `inflight` that every other reader of it waits on (one
//! load per chunk). Read-ahead loads runs of neighbouring chunks of one pack
//! with one store read each, then opens every envelope on its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, mpsc};

use lru::LruCache;
use parking_lot::{Condvar, Mutex};

use crate::chunk_store::{ChunkStore, Location, MAX_GAP, PackId, plan_spans};
use crate::crypto::{self, ChunkId, VaultKeys};
use crate::error::{Error, Result};
use crate::metadata::{ChunkEntry, Metadata, WriteTx};

/// Bound on decrypted chunks kept in RAM.
const CACHE_BYTES: usize = 64 << 20;
/// Plaintext buffers of evicted chunks kept for reuse: a fresh chunk-sized
/// allocation costs a page fault per 4 KiB (glibc returns large blocks to
/// the OS), about as much as decrypting the chunk.
const SPARE_BUFFERS: usize = 8;
/// Smaller buffers come cheaply from the allocator's free lists.
const SPARE_MIN: usize = 128 << 10;
/// Read-ahead jobs waiting for a prefetch thread (more are skipped).
const QUEUED_JOBS: usize = 16;

/// How far ahead of a sequential reader chunks are fetched.
#[derive(Clone, Copy, Debug)]
pub struct ReadAhead {
    /// Bytes after the read position whose chunks are fetched ahead.
    pub window: u64,
    /// Bytes after the window searched for more chunks of the packs being
    /// read, so that a pack's chunks come in one read even when they are not
    /// stored in file order (a commit seals its chunks in parallel).
    pub horizon: u64,
    /// Prefetch threads.
    pub threads: usize,
    /// Largest store read of one read-ahead job. Jobs are decrypted in
    /// parallel, one per prefetch thread.
    pub job_bytes: u64,
}

impl ReadAhead {
    /// A local directory: a few chunks ahead, each read is cheap, so the
    /// window is cut into jobs of a few chunks that the threads decrypt side
    /// by side. Three threads on a two-core fog node: while one waits for
    /// its (`O_DIRECT`) read, the others decrypt, so the disk and both cores
    /// stay busy (two threads and 8 MiB read ~15% slower; docs/BENCHMARKS.md).
    pub const LOCAL: ReadAhead = ReadAhead { window: 16 << 20, horizon: 0, threads: 3, job_bytes: 4 << 20 };
    /// A remote store: a pack or two ahead, each fetched with one GET, a few
    /// in flight. RAM: at most `window + horizon` (48 MiB) ahead, which fits
    /// the LRU (`CACHE_BYTES`), plus one read buffer (at most a pack) per thread.
    pub const REMOTE: ReadAhead =
        ReadAhead { window: 20 << 20, horizon: 28 << 20, threads: 3, job_bytes: crate::chunk_store::MAX_SPAN };
}

struct Cache {
    lru: LruCache<ChunkId, Arc<Vec<u8>>>,
    bytes: usize,
}

/// A shared load outcome: `Err((is_integrity_failure, message))`.
type LoadResult = std::result::Result<Arc<Vec<u8>>, (bool, String)>;

/// One chunk being loaded: the thread that claimed it fills it once, every
/// other reader of the chunk waits for that.
#[derive(Default)]
struct Slot {
    result: Mutex<Option<LoadResult>>,
    filled: Condvar,
}

impl Slot {
    fn wait(&self) -> Result<Arc<Vec<u8>>> {
        let mut r = self.result.lock();
        while r.is_none() {
            self.filled.wait(&mut r);
        }
        match r.as_ref().expect("filled") {
            Ok(d) => Ok(Arc::clone(d)),
            Err((true, msg)) => Err(Error::Integrity(msg.clone())),
            Err((false, msg)) => Err(Error::Store(msg.clone())),
        }
    }
}

/// Chunks this thread has claimed to load. Each is filled exactly once: by
/// `fill`, or (if loading stops early, e.g. a panic) with an error on drop,
/// so no reader waits forever.
struct Claims<'a> {
    io: &'a ChunkIo,
    slots: HashMap<ChunkId, Arc<Slot>>,
}

impl Claims<'_> {
    fn ids(&self) -> Vec<ChunkId> {
        self.slots.keys().copied().collect()
    }

    /// Publish the outcome for `id`: cache it, wake its readers, release it.
    fn fill(&mut self, id: &ChunkId, res: Result<Arc<Vec<u8>>>) {
        let Some(slot) = self.slots.remove(id) else { return };
        if let Ok(data) = &res {
            self.io.cache_insert(*id, Arc::clone(data));
        }
        *slot.result.lock() = Some(res.map_err(|e| (matches!(e, Error::Integrity(_)), e.to_string())));
        slot.filled.notify_all();
        self.io.inflight.lock().remove(id);
    }
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        for id in self.ids() {
            self.fill(&id, Err(Error::Store("the chunk load was abandoned".into())));
        }
    }
}

pub struct ChunkIo {
    keys: Arc<VaultKeys>,
    store: ChunkStore,
    meta: Arc<Metadata>,
    cache: Mutex<Cache>,
    /// Recycled plaintext buffers (`SPARE_BUFFERS`).
    spare: Mutex<Vec<Vec<u8>>>,
    /// Stored but not yet in the LMDB index: lets concurrent writers dedup
    /// against each other before their commits land.
    pending: Mutex<HashMap<ChunkId, (Location, u32)>>,
    /// Lock order: `inflight`, then `cache`, then `queued`.
    inflight: Mutex<HashMap<ChunkId, Arc<Slot>>>,
    /// Chunks of read-ahead jobs no prefetch thread has taken yet.
    queued: Mutex<HashSet<ChunkId>>,
    prefetch_tx: Mutex<mpsc::SyncSender<Vec<ChunkId>>>,
    read_ahead: ReadAhead,
    max_chunk: usize,
    /// Held (shared) by every commit from its first dedup lookup to its
    /// index update, and (exclusive) by garbage collection while it drops
    /// dead chunks: a chunk a commit found in the index is still there when
    /// the commit references it.
    gc_gate: GcGate,
}

/// A reader-preferring shared/exclusive gate: garbage collection waits
/// until no commit is running and only then keeps new ones out, so a commit
/// that holds a file lock never waits behind a collector that waits for it.
#[derive(Default)]
struct GcGate {
    state: Mutex<(usize, bool)>, // (running commits, collector inside)
    changed: Condvar,
}

pub struct CommitGuard<'a>(&'a GcGate);
pub struct ExclusiveGuard<'a>(&'a GcGate);

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        self.0.state.lock().0 -= 1;
        self.0.changed.notify_all();
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.0.state.lock().1 = false;
        self.0.changed.notify_all();
    }
}

impl ChunkIo {
    /// Returns the chunk I/O and the receiver the prefetch thread must drain
    /// (see [`ChunkIo::run_prefetcher`]).
    pub fn new(
        keys: Arc<VaultKeys>,
        store: ChunkStore,
        meta: Arc<Metadata>,
        max_chunk: usize,
        read_ahead: ReadAhead,
    ) -> (Self, mpsc::Receiver<Vec<ChunkId>>) {
        let (tx, rx) = mpsc::sync_channel(QUEUED_JOBS);
        let io = ChunkIo {
            keys,
            store,
            meta,
            cache: Mutex::new(Cache { lru: LruCache::unbounded(), bytes: 0 }),
            spare: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            prefetch_tx: Mutex::new(tx),
            read_ahead,
            max_chunk,
            gc_gate: GcGate::default(),
        };
        (io, rx)
    }

    /// Body of a prefetch thread (several share `rx`): runs read-ahead jobs
    /// until the vault is dropped.
    pub fn run_prefetcher(io: std::sync::Weak<Self>, rx: Arc<Mutex<mpsc::Receiver<Vec<ChunkId>>>>) {
        loop {
            let Ok(job) = rx.lock().recv() else { return };
            let Some(io) = io.upgrade() else { return };
            // Errors surface when the reader itself asks for the chunk.
            io.load_job(&job);
        }
    }

    pub fn read_ahead(&self) -> ReadAhead {
        self.read_ahead
    }

    pub fn store(&self) -> &ChunkStore {
        &self.store
    }

    /// Taken by a commit for its whole length (re-entrant).
    pub fn commit_guard(&self) -> CommitGuard<'_> {
        let mut st = self.gc_gate.state.lock();
        while st.1 {
            self.gc_gate.changed.wait(&mut st);
        }
        st.0 += 1;
        CommitGuard(&self.gc_gate)
    }

    /// Taken by garbage collection: no commit is between lookup and update.
    pub fn exclusive(&self) -> ExclusiveGuard<'_> {
        let mut st = self.gc_gate.state.lock();
        while st.0 > 0 || st.1 {
            self.gc_gate.changed.wait(&mut st);
        }
        st.1 = true;
        ExclusiveGuard(&self.gc_gate)
    }

    /// Packs holding chunks stored but not (yet) in the committed index.
    pub fn pending_packs(&self) -> HashSet<PackId> {
        self.pending.lock().values().map(|(loc, _)| loc.pack).collect()
    }

    fn cache_insert(&self, id: ChunkId, data: Arc<Vec<u8>>) {
        let mut evicted = Vec::new();
        {
            let mut c = self.cache.lock();
            c.bytes += data.capacity();
            if let Some(old) = c.lru.put(id, data) {
                c.bytes -= old.capacity();
            }
            while c.bytes > CACHE_BYTES {
                match c.lru.pop_lru() {
                    Some((_, v)) => {
                        c.bytes -= v.capacity();
                        evicted.push(v);
                    }
                    None => break,
                }
            }
        }
        // A buffer no reader holds any more is kept for the next chunk.
        let mut spare = self.spare.lock();
        for v in evicted {
            if spare.len() < SPARE_BUFFERS
                && v.capacity() >= SPARE_MIN
                && let Ok(buf) = Arc::try_unwrap(v)
            {
                spare.push(buf);
            }
        }
    }

    /// Where a chunk lives: the committed index, or a not-yet-committed store.
    fn locate(&self, id: &ChunkId) -> Result<Option<(Location, u32)>> {
        if let Some(p) = self.pending.lock().get(id) {
            return Ok(Some(*p));
        }
        Ok(self.meta.read(|tx| tx.chunk(id))?.map(|e| (e.loc, e.plain_len)))
    }

    /// The plaintext of chunk `id`, authenticated. Missing or altered → `Integrity`.
    /// Concurrent requests for one chunk (kernel readahead, prefetch) share a
    /// single load.
    pub fn fetch(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        loop {
            if let Some(v) = self.cache.lock().lru.get(id) {
                return Ok(Arc::clone(v));
            }
            let claims = self.claim(std::slice::from_ref(id));
            let slot = self.inflight.lock().get(id).cloned();
            // Loads it if we claimed it; nothing if another thread is loading it.
            self.load_claimed(claims);
            if let Some(slot) = slot {
                return slot.wait();
            }
            // Loaded by another thread between our look-ups: look again.
        }
    }

    /// Claim the `ids` that are neither cached nor being loaded: the caller
    /// must load them (`load_claimed`); other readers of them wait.
    fn claim(&self, ids: &[ChunkId]) -> Claims<'_> {
        let mut inflight = self.inflight.lock();
        let cache = self.cache.lock();
        let mut slots = HashMap::new();
        for id in ids {
            if !cache.lru.contains(id) && !inflight.contains_key(id) {
                let slot = Arc::new(Slot::default());
                inflight.insert(*id, Arc::clone(&slot));
                slots.insert(*id, slot);
            }
        }
        Claims { io: self, slots }
    }

    /// Load every claimed chunk: neighbours in a pack come with one store
    /// read, and each envelope is authenticated on its own (a damaged one
    /// fails alone).
    fn load_claimed(&self, mut claims: Claims<'_>) {
        let mut found = Vec::new();
        for id in claims.ids() {
            match self.locate(&id) {
                Ok(Some((loc, plain_len))) => found.push((id, loc, plain_len)),
                Ok(None) => {
                    claims.fill(&id, Err(Error::Integrity(format!("chunk {} is not in the index", &id.hex()[..16]))))
                }
                Err(e) => claims.fill(&id, Err(e)),
            }
        }
        self.read_located(&mut claims, &found);
    }

    /// Read, authenticate and hand out claimed chunks at the locations looked up.
    fn read_located(&self, claims: &mut Claims<'_>, found: &[(ChunkId, Location, u32)]) {
        let locs: Vec<Location> = found.iter().map(|f| f.1).collect();
        let mut failed = Vec::new();
        self.store.read_envelopes(&locs, |i, env| {
            let (id, loc, plain_len) = &found[i];
            match env.and_then(|env| self.open(id, loc, *plain_len, env)) {
                Err(e @ Error::Integrity(_)) => failed.push((i, e)),
                r => claims.fill(id, r),
            }
        });
        // Garbage collection may have moved a chunk and deleted its old pack
        // after this reader looked it up: read it again where it is now.
        for (i, e) in failed {
            let (id, loc, _) = &found[i];
            let r = match self.locate(id) {
                Ok(Some((now, plain_len))) if now != *loc => {
                    self.store.read_envelope(&now).and_then(|env| self.open(id, &now, plain_len, &env))
                }
                _ => Err(e),
            };
            claims.fill(id, r);
        }
    }

    /// A read-ahead job: load what nobody else has (claimed first, so the
    /// job's chunks never look absent to `prefetch` in between).
    fn load_job(&self, ids: &[ChunkId]) {
        let claims = self.claim(ids);
        {
            let mut queued = self.queued.lock();
            for id in ids {
                queued.remove(id);
            }
        }
        self.load_claimed(claims);
    }

    /// Authenticate and decrypt one envelope (key and AAD bound to the chunk
    /// id) into `out`.
    fn open_envelope(&self, id: &ChunkId, loc: &Location, env: &[u8], out: &mut Vec<u8>) -> Result<()> {
        crypto::open_chunk_into(&self.keys, id, env, self.max_chunk, out).map_err(|_| {
            Error::Integrity(format!("chunk {} in pack {} fails authentication", &id.hex()[..16], loc.pack.hex()))
        })
    }

    /// A recycled buffer that fits `len` bytes without wasting more than as
    /// much again (the cache counts capacity), or a new one. New ones come
    /// in powers of two, so that chunks of similar sizes share buffers.
    fn take_spare(&self, len: usize) -> Vec<u8> {
        let mut spare = self.spare.lock();
        match spare.iter().position(|b| (len..=2 * len).contains(&b.capacity())) {
            Some(i) => spare.swap_remove(i),
            None if len >= SPARE_MIN => Vec::with_capacity(len.next_power_of_two()),
            None => Vec::new(),
        }
    }

    /// [`Self::open_envelope`] into a recycled buffer, checked against the
    /// indexed plaintext length.
    fn open(&self, id: &ChunkId, loc: &Location, plain_len: u32, env: &[u8]) -> Result<Arc<Vec<u8>>> {
        let mut data = self.take_spare(env.len());
        self.open_envelope(id, loc, env, &mut data)?;
        if data.len() != plain_len as usize {
            return Err(Error::Integrity(format!("chunk {} has the wrong length", &id.hex()[..16])));
        }
        Ok(Arc::new(data))
    }

    /// The envelope of `id` at `loc`, checked to be authentic (garbage
    /// collection copies envelopes; it must never copy a damaged one).
    pub fn read_verified_envelope(&self, id: &ChunkId, loc: &Location) -> Result<Vec<u8>> {
        let env = self.store.read_envelope(loc)?;
        self.open_envelope(id, loc, &env, &mut Vec::new())?;
        Ok(env)
    }

    /// Read-ahead for a sequential reader: `ahead` is the chunks of the next
    /// `window + horizon` bytes in file order, the first `near` of them in
    /// the window. Chunks neither cached nor on their way are grouped into
    /// store reads (`read_ahead_jobs`) and queued for the prefetch threads.
    pub fn prefetch(&self, ahead: &[ChunkId], near: usize) {
        let wanted = self.unclaimed(ahead);
        if !wanted.iter().any(|id| ahead[..near].contains(id)) {
            return;
        }
        // A chunk that cannot be located is left to the reader, which reports it.
        let missing: Vec<(ChunkId, Location)> =
            wanted.into_iter().filter_map(|id| Some((id, self.locate(&id).ok()??.0))).collect();
        let tx = self.prefetch_tx.lock();
        for job in read_ahead_jobs(&ahead[..near], &missing, self.read_ahead.job_bytes) {
            // Marked before sending: a prefetch thread unmarks it once claimed.
            self.queued.lock().extend(job.iter().copied());
            if let Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) = tx.try_send(job) {
                // The prefetchers are busy: skipping is fine.
                let mut queued = self.queued.lock();
                for id in &job {
                    queued.remove(id);
                }
            }
        }
    }

    /// The `ids` (once each, in order) neither cached, nor being loaded, nor queued.
    fn unclaimed(&self, ids: &[ChunkId]) -> Vec<ChunkId> {
        let inflight = self.inflight.lock();
        let cache = self.cache.lock();
        let queued = self.queued.lock();
        let mut seen = HashSet::new();
        ids.iter()
            .filter(|id| {
                !cache.lru.contains(id) && !inflight.contains_key(id) && !queued.contains(id) && seen.insert(**id)
            })
            .copied()
            .collect()
    }

    /// Store `data` unless an identical chunk is already known; returns its id.
    /// Returns whether new bytes went to the store.
    pub fn put(&self, data: &[u8]) -> Result<(ChunkId, bool)> {
        let id = ChunkId::of(&self.keys, data);
        if self.locate(&id)?.is_some() {
            return Ok((id, false));
        }
        // One envelope buffer per thread (at most one chunk, 4 MiB): a fresh
        // chunk-sized allocation per chunk costs page faults, since glibc
        // hands freed memory back to the OS.
        thread_local! {
            static ENVELOPE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let loc = ENVELOPE.with_borrow_mut(|env| {
            crypto::seal_chunk_into(&self.keys, &id, data, env);
            self.store.store_chunk(id, env)
        })?;
        self.pending.lock().entry(id).or_insert((loc, data.len() as u32));
        Ok((id, true))
    }

    /// Add `delta` references to `id` inside a metadata transaction.
    pub fn adjust_refs(&self, tx: &mut WriteTx<'_>, id: &ChunkId, delta: i64) -> Result<()> {
        let entry =
            match tx.chunk(id)? {
                Some(e) => e,
                None => {
                    let (loc, plain_len) =
                        self.pending.lock().get(id).copied().ok_or_else(|| {
                            Error::Integrity(format!("chunk {} vanished before commit", &id.hex()[..16]))
                        })?;
                    ChunkEntry { loc, plain_len, refs: 0 }
                }
            };
        let refs = entry.refs as i64 + delta;
        if refs < 0 {
            // A reference dropped twice: gc would delete a chunk some file may
            // still name. Keep the count at zero, but make it visible.
            tracing::error!(chunk = %&id.hex()[..16], refs, "reference count went below zero");
        }
        let refs = refs.max(0) as u64;
        tx.put_chunk(id, &ChunkEntry { refs, ..entry })
    }

    /// Drop pending entries now present in the committed index.
    pub fn forget_pending(&self, ids: &[ChunkId]) {
        let mut p = self.pending.lock();
        for id in ids {
            p.remove(id);
        }
    }
}

/// The read-ahead jobs to queue for `missing` (chunks to fetch, in file
/// order, with their locations): every pack holding one of the `window`
/// chunks is read with all its missing chunks, also those past the window,
/// so that it comes whole even when its chunks are not in file order. One
/// job per store read of at most `job_bytes` (`plan_spans`), nearest first.
fn read_ahead_jobs(window: &[ChunkId], missing: &[(ChunkId, Location)], job_bytes: u64) -> Vec<Vec<ChunkId>> {
    let packs: HashSet<PackId> = missing.iter().filter(|(id, _)| window.contains(id)).map(|(_, l)| l.pack).collect();
    let chosen: Vec<&(ChunkId, Location)> = missing.iter().filter(|(_, l)| packs.contains(&l.pack)).collect();
    let locs: Vec<Location> = chosen.iter().map(|c| c.1).collect();
    let mut reads = plan_spans(&locs, MAX_GAP, job_bytes);
    reads.sort_by_key(|r| r.members.iter().min().copied());
    reads.into_iter().map(|r| r.members.iter().map(|&i| chosen[i].0).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_store::{DEFAULT_JOURNAL_LIMIT, MAX_SPAN, plan_reads};

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn at(pack: u8, offset: u32, len: u32) -> Location {
        Location { pack: PackId([pack; 16]), offset, len }
    }

    /// Chunks 1..=6 of a file, 1 MiB each: 1-3 in pack `a`, 4-6 in pack `b`.
    fn two_packs(a: u8, b: u8) -> (Vec<ChunkId>, Vec<(ChunkId, Location)>) {
        let mib = 1 << 20;
        let ahead: Vec<ChunkId> = (1..=6).map(id).collect();
        let missing = (1..=6u8).map(|n| (id(n), at(if n <= 3 { a } else { b }, (n as u32 - 1) % 3 * mib, mib)));
        (ahead, missing.collect())
    }

    #[test]
    fn read_ahead_fetches_each_pack_with_one_read() {
        let (ahead, missing) = two_packs(1, 2);
        let jobs = read_ahead_jobs(&ahead, &missing, MAX_SPAN);
        assert_eq!(jobs, vec![vec![id(1), id(2), id(3)], vec![id(4), id(5), id(6)]]);
        // Nearest first, whatever the pack ids.
        let (ahead, missing) = two_packs(2, 1);
        assert_eq!(read_ahead_jobs(&ahead, &missing, MAX_SPAN), jobs);
    }

    #[test]
    fn read_ahead_takes_a_packs_chunks_from_past_the_window() {
        let (ahead, missing) = two_packs(1, 2);
        // Chunks 1-2 in the window: pack 1 is read whole (with chunk 3), pack 2 not yet.
        assert_eq!(read_ahead_jobs(&ahead[..2], &missing, MAX_SPAN), vec![vec![id(1), id(2), id(3)]]);
        // Chunks stored out of file order (3, 1, 2) still make one read.
        let mib = 1 << 20;
        let shuffled = [(id(1), at(1, mib, mib)), (id(2), at(1, 2 * mib, mib)), (id(3), at(1, 0, mib))];
        assert_eq!(read_ahead_jobs(&ahead[..1], &shuffled, MAX_SPAN), vec![vec![id(3), id(1), id(2)]]);
        // Nothing missing in the window: nothing to do yet.
        assert!(read_ahead_jobs(&ahead[..2], &missing[2..], MAX_SPAN).is_empty());
    }

    #[test]
    fn read_ahead_reads_only_the_missing_chunks() {
        let (ahead, missing) = two_packs(1, 2);
        // Chunk 2 is cached: the 1 MiB between chunks 1 and 3 is too large to bridge.
        let holes = [missing[0], missing[2]];
        assert_eq!(read_ahead_jobs(&ahead, &holes, MAX_SPAN), vec![vec![id(1)], vec![id(3)]]);
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        repo: crate::repo::Repo,
        io: ChunkIo,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repo::init(dir.path().join("repo").to_str().unwrap(), b"pw").unwrap();
        let meta = Arc::new(Metadata::open(&dir.path().join("meta"), &repo.keys).unwrap());
        let no_entries = |_: &[crate::chunk_store::PackId]| Ok(Vec::new());
        let store = ChunkStore::open(
            Arc::clone(&repo.backend),
            repo.keys.pack.clone(),
            dir.path().join("staging"),
            DEFAULT_JOURNAL_LIMIT,
            &no_entries,
        )
        .unwrap();
        let (io, _rx) = ChunkIo::new(Arc::clone(&repo.keys), store, meta, 1 << 20, ReadAhead::LOCAL);
        Fixture { _dir: dir, repo, io }
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// Four chunks stored side by side in one uploaded pack.
    fn stored_chunks(f: &Fixture) -> (Vec<Vec<u8>>, Vec<ChunkId>, Vec<Location>) {
        let data: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(50_000 + i * 1000, i as u32 + 1)).collect();
        let ids: Vec<ChunkId> = data.iter().map(|d| f.io.put(d).unwrap().0).collect();
        f.io.store().flush_uploads().unwrap();
        let locs: Vec<Location> = ids.iter().map(|id| f.io.locate(id).unwrap().unwrap().0).collect();
        assert_eq!(plan_reads(&locs).len(), 1, "the four envelopes make one read");
        (data, ids, locs)
    }

    #[test]
    fn a_damaged_envelope_in_a_coalesced_read_fails_alone() {
        let f = fixture();
        let (data, ids, locs) = stored_chunks(&f);
        let path = f.repo.backend.local_object_path(&locs[2].pack.object_name()).unwrap();
        let mut pack = std::fs::read(&path).unwrap();
        pack[locs[2].offset as usize + 100] ^= 0x01;
        std::fs::write(&path, pack).unwrap();

        f.io.load_job(&ids);
        for (i, id) in ids.iter().enumerate() {
            match f.io.fetch(id) {
                Ok(got) => {
                    assert_ne!(i, 2, "the damaged chunk must not be returned");
                    assert_eq!(*got, data[i]);
                }
                Err(e) => {
                    assert_eq!(i, 2, "only the damaged chunk fails: {e}");
                    assert!(matches!(e, Error::Integrity(_)), "{e}");
                }
            }
        }
        let cache = f.io.cache.lock();
        assert!([0, 1, 3].iter().all(|&i| cache.lru.contains(&ids[i])), "neighbours cached by the one read");
        assert!(!cache.lru.contains(&ids[2]));
        assert!(f.io.inflight.lock().is_empty() && f.io.queued.lock().is_empty());
    }

    #[test]
    fn a_chunk_moved_by_gc_after_its_lookup_is_read_where_it_is_now() {
        let f = fixture();
        let (data, ids, locs) = stored_chunks(&f);
        let store = f.io.store();
        // gc copies chunk 1 to a new pack, moves its index entry, deletes the old pack.
        let env = f.io.read_verified_envelope(&ids[1], &locs[1]).unwrap();
        let moved = store.store_chunk(ids[1], &env).unwrap();
        store.flush_uploads().unwrap();
        let plain_len = data[1].len() as u32;
        f.io.meta.write(|tx| tx.put_chunk(&ids[1], &ChunkEntry { loc: moved, plain_len, refs: 1 })).unwrap();
        f.io.forget_pending(&ids[1..2]);
        store.delete_pack(&locs[1].pack).unwrap();
        // A reader that looked the four up before the move.
        let found: Vec<(ChunkId, Location, u32)> =
            ids.iter().zip(&locs).zip(&data).map(|((id, loc), d)| (*id, *loc, d.len() as u32)).collect();
        let mut claims = f.io.claim(&ids);
        f.io.read_located(&mut claims, &found);
        drop(claims);
        let cached = f.io.cache.lock().lru.get(&ids[1]).cloned();
        assert_eq!(cached.as_deref(), Some(&data[1]), "read from its new pack by that same load");
        for i in [0, 2, 3] {
            assert!(matches!(f.io.fetch(&ids[i]), Err(Error::Integrity(_))), "chunk {i}: its pack is gone");
        }
    }

    #[test]
    fn readers_of_a_chunk_being_loaded_wait_for_that_load() {
        let f = fixture();
        let (data, ids, _) = stored_chunks(&f);
        let claims = f.io.claim(&ids);
        std::thread::scope(|s| {
            let reader = s.spawn(|| f.io.fetch(&ids[1]));
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!reader.is_finished(), "the reader waits for the claimed load");
            f.io.load_claimed(claims);
            assert_eq!(*reader.join().unwrap().unwrap(), data[1]);
        });
        assert!(f.io.claim(&ids).ids().is_empty(), "all four are cached now");
    }
}
