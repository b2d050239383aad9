//! Chunk I/O for the vault: dedup-aware storing and cached, authenticated fetching.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, mpsc};

use lru::LruCache;
use parking_lot::{Condvar, Mutex};

use crate::chunk_store::{ChunkStore, Location};
use crate::crypto::{self, ChunkId, VaultKeys};
use crate::error::{Error, Result};
use crate::metadata::{ChunkEntry, Metadata, WriteTx};

/// Bound on decrypted chunks kept in RAM.
const CACHE_BYTES: usize = 64 << 20;

struct Cache {
    lru: LruCache<ChunkId, Arc<Vec<u8>>>,
    bytes: usize,
}

pub struct ChunkIo {
    keys: Arc<VaultKeys>,
    store: ChunkStore,
    meta: Arc<Metadata>,
    cache: Mutex<Cache>,
    /// Stored but not yet in the LMDB index: lets concurrent writers dedup
    /// against each other before their commits land.
    pending: Mutex<HashMap<ChunkId, (Location, u32)>>,
    inflight: Mutex<HashMap<ChunkId, Arc<OnceLock<LoadResult>>>>,
    prefetch_tx: Mutex<mpsc::SyncSender<ChunkId>>,
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

/// A shared load outcome: `Err((is_integrity_failure, message))`.
type LoadResult = std::result::Result<Arc<Vec<u8>>, (bool, String)>;

impl ChunkIo {
    /// Returns the chunk I/O and the receiver the prefetch thread must drain
    /// (see [`ChunkIo::run_prefetcher`]).
    pub fn new(
        keys: Arc<VaultKeys>,
        store: ChunkStore,
        meta: Arc<Metadata>,
        max_chunk: usize,
    ) -> (Self, mpsc::Receiver<ChunkId>) {
        let (tx, rx) = mpsc::sync_channel(16);
        let io = ChunkIo {
            keys,
            store,
            meta,
            cache: Mutex::new(Cache { lru: LruCache::unbounded(), bytes: 0 }),
            pending: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            prefetch_tx: Mutex::new(tx),
            max_chunk,
            gc_gate: GcGate::default(),
        };
        (io, rx)
    }

    /// Body of a prefetch thread (several share `rx`): loads requested chunks
    /// until the vault is dropped.
    pub fn run_prefetcher(io: std::sync::Weak<Self>, rx: Arc<Mutex<mpsc::Receiver<ChunkId>>>) {
        loop {
            let Ok(id) = rx.lock().recv() else { return };
            let Some(io) = io.upgrade() else { return };
            // Errors surface when the reader itself asks for the chunk.
            let _ = io.fetch(&id);
        }
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
    pub fn pending_packs(&self) -> std::collections::HashSet<crate::chunk_store::PackId> {
        self.pending.lock().values().map(|(loc, _)| loc.pack).collect()
    }

    fn cache_insert(&self, id: ChunkId, data: Arc<Vec<u8>>) {
        let mut c = self.cache.lock();
        c.bytes += data.len();
        if let Some(old) = c.lru.put(id, data) {
            c.bytes -= old.len();
        }
        while c.bytes > CACHE_BYTES {
            match c.lru.pop_lru() {
                Some((_, v)) => c.bytes -= v.len(),
                None => break,
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
        if let Some(v) = self.cache.lock().lru.get(id) {
            return Ok(Arc::clone(v));
        }
        let cell = Arc::clone(self.inflight.lock().entry(*id).or_default());
        let res = cell.get_or_init(|| self.load(id).map_err(|e| (matches!(e, Error::Integrity(_)), e.to_string())));
        {
            let mut inflight = self.inflight.lock();
            if inflight.get(id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(id);
            }
        }
        match res {
            Ok(d) => Ok(Arc::clone(d)),
            Err((true, msg)) => Err(Error::Integrity(msg.clone())),
            Err((false, msg)) => Err(Error::Store(msg.clone())),
        }
    }

    fn load(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        let (loc, plain_len) = self
            .locate(id)?
            .ok_or_else(|| Error::Integrity(format!("chunk {} is not in the index", &id.hex()[..16])))?;
        let env = self.store.read_envelope(&loc)?;
        let data = crypto::open_chunk(&self.keys, id, &env, self.max_chunk).map_err(|_| {
            Error::Integrity(format!("chunk {} in pack {} fails authentication", &id.hex()[..16], loc.pack.hex()))
        })?;
        if data.len() != plain_len as usize {
            return Err(Error::Integrity(format!("chunk {} has the wrong length", &id.hex()[..16])));
        }
        let data = Arc::new(data);
        self.cache_insert(*id, Arc::clone(&data));
        Ok(data)
    }

    /// The envelope of `id` at `loc`, checked to be authentic (garbage
    /// collection copies envelopes; it must never copy a damaged one).
    pub fn read_verified_envelope(&self, id: &ChunkId, loc: &Location) -> Result<Vec<u8>> {
        let env = self.store.read_envelope(loc)?;
        crypto::open_chunk(&self.keys, id, &env, self.max_chunk).map_err(|_| {
            Error::Integrity(format!("chunk {} in pack {} fails authentication", &id.hex()[..16], loc.pack.hex()))
        })?;
        Ok(env)
    }

    /// Warm the cache with `ids` on the prefetch thread (sequential reads).
    pub fn prefetch(&self, ids: Vec<ChunkId>) {
        let ids: Vec<ChunkId> = {
            let c = self.cache.lock();
            ids.into_iter().filter(|id| !c.lru.contains(id)).collect()
        };
        let tx = self.prefetch_tx.lock();
        for id in ids {
            // A full queue means the prefetchers are busy: skipping is fine.
            let _ = tx.try_send(id);
        }
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
        let refs = (entry.refs as i64 + delta).max(0) as u64;
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
