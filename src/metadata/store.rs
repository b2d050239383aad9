//! LMDB environment, typed transactions and the key builders. Reading and
//! writing records inside a transaction is in `tx`; the in-memory layers
//! over LMDB (deferred writes) in `overlay`.

mod overlay;
mod tx;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, RoTransaction, RwTransaction, Transaction,
    WriteFlags,
};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};

use super::cloud::Root;
use super::schema::{DirentRecord, InodeRecord};
use crate::crypto::{Key32, VaultKeys};
use crate::error::{Error, Result};
use overlay::Overlay;
use tx::{decode, encode};

const MAP_SIZE: usize = 256 << 30; // virtual reservation; the file grows as needed

fn map_lmdb(e: lmdb::Error) -> Error {
    match e {
        lmdb::Error::MapFull => Error::NoSpace,
        lmdb::Error::Other(code) if code == libc::ENOSPC => Error::NoSpace,
        other => Error::Metadata(other.to_string()),
    }
}

// ---- key builders (see the layout table in mod.rs) ----
fn ino_key(ino: u64) -> [u8; 8] {
    ino.to_be_bytes()
}
fn dirent_key(parent: u64, hash: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&parent.to_be_bytes());
    k[8..].copy_from_slice(&hash.to_be_bytes());
    k
}
fn domain_version_key(domain: u32) -> String {
    format!("dver/{domain:08x}")
}
const FOLDER_ROOT_PREFIX: &str = "folder/";
fn folder_root_key(domain: u32) -> String {
    format!("{FOLDER_ROOT_PREFIX}{domain:08x}")
}
fn sealed_aad(table: &[u8], key: &[u8], prefix: &[u8]) -> Vec<u8> {
    let mut aad = table.to_vec();
    aad.extend_from_slice(key);
    aad.extend_from_slice(prefix);
    aad
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

/// Clear-text prefix of an inode value: domain ‖ content domain ‖ key version.
const INODE_PREFIX: usize = 12;
/// Clear-text prefix of a dirent value: domain ‖ key version.
const DIRENT_PREFIX: usize = 8;

/// The record keys of one key domain (vault folder) at one key version.
pub struct DomainKeys {
    seal: Key32,
    names: Key32,
}

impl DomainKeys {
    /// Keys of a vault folder from its folder key `FK`.
    pub fn from_folder_key(fk: &Key32) -> Self {
        DomainKeys { seal: fk.derive("folder records"), names: fk.derive("folder names") }
    }
}

struct Dbs {
    meta: Database,
    inodes: Database,
    dirents: Database,
    chunks: Database,
    orphans: Database,
    /// Committed changes not yet in the cloud's metadata journal.
    journal: Database,
}

impl Dbs {
    fn of(&self, t: Table) -> Database {
        match t {
            Table::Meta => self.meta,
            Table::Inodes => self.inodes,
            Table::Dirents => self.dirents,
            Table::Chunks => self.chunks,
            Table::Orphans => self.orphans,
        }
    }
}

/// The tables whose contents make up the vault's state (and its journal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Table {
    Meta = 0,
    Inodes = 1,
    Dirents = 2,
    Chunks = 3,
    Orphans = 4,
}

impl Table {
    pub const ALL: [Table; 5] = [Table::Meta, Table::Inodes, Table::Dirents, Table::Chunks, Table::Orphans];
}

/// One change of one committed transaction, as the metadata journal records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub table: Table,
    pub key: Vec<u8>,
    /// `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// `meta` keys under this prefix describe this fog node only (journal
/// positions): they are neither journaled nor part of snapshots.
const LOCAL_PREFIX: &str = "local/";
const UPLOADED_SEQ: &str = "local/uploaded_seq";
/// The newest intent-log transaction number this commit includes.
const INTENT_TXN: &str = "local/intent_txn";
const CLOUD_ROOT: &str = "local/cloud_root";

/// Domain 0 is the root folder (keys from the repository root secret,
/// version 0); vault folders are domains 1.. whose keys exist only while a
/// session has supplied them.
pub const ROOT_DOMAIN: u32 = 0;

/// Deferred writes not committed to LMDB after this many changed keys are
/// committed at once (bounds the memory the overlay holds).
const MAX_DEFERRED_KEYS: usize = 50_000;

/// Namespace changes applied in memory but not yet committed to LMDB
/// (`Metadata::write_deferred`); every reader sees them over its LMDB view.
#[derive(Default)]
struct Deferred {
    changes: Overlay,
    /// When the oldest of them was made.
    since: Option<Instant>,
}

/// Every write gets a transaction number; with an intent log attached, the
/// changes of the ones not yet in it wait here (oldest first).
#[derive(Default)]
struct Txns {
    enabled: bool,
    /// The number the next write gets.
    next: u64,
    unlogged: VecDeque<(u64, Vec<Change>)>,
}

/// Runs before every LMDB commit: what the commit references must be durable first.
pub type CommitBarrier = Box<dyn Fn() -> Result<()> + Send + Sync>;

pub struct Metadata {
    env: Environment,
    dbs: Dbs,
    /// `(domain, key version)` → keys. Records name their version, so a key
    /// rotation can add the new version before the re-seal commits.
    keyring: RwLock<HashMap<(u32, u32), Arc<DomainKeys>>>,
    deferred: RwLock<Deferred>,
    /// Held by a write from its start until the overlay reflects its
    /// outcome. LMDB's own writer lock ends at commit, before a committing
    /// write clears the overlay: a deferred write slipping in between
    /// would be cleared away with it.
    writer: Mutex<()>,
    txns: Mutex<Txns>,
    /// Newest transaction number committed to LMDB, and the newest known durable.
    committed_txn: AtomicU64,
    synced_txn: AtomicU64,
    /// An `mdb_env_sync` failed. A retried fsync would report success for
    /// pages whose writeback failed, so nothing counts as synced any more
    /// until the vault is reopened.
    sync_failed: std::sync::atomic::AtomicBool,
    barrier: OnceLock<CommitBarrier>,
}

pub struct Tx<'e, T> {
    txn: T,
    m: &'e Metadata,
    /// What a write transaction changed, for the metadata journal.
    log: Vec<Change>,
    /// Deferred changes to read over `txn` (`None` in a committing write,
    /// whose `txn` already holds them).
    deferred: Option<RwLockReadGuard<'e, Deferred>>,
    /// A deferred write's own changes, read before everything else.
    staged: Option<Overlay>,
}
pub type ReadTx<'e> = Tx<'e, RoTransaction<'e>>;
pub type WriteTx<'e> = Tx<'e, RwTransaction<'e>>;

impl Metadata {
    /// Open (or create) the index in `dir`. One environment per process (lmdb-rkv rule).
    pub fn open(dir: &Path, keys: &VaultKeys) -> Result<Self> {
        crate::durable_fs::create_dir_all(dir).map_err(Error::from_io)?;
        // NO_META_SYNC: every commit fdatasyncs its data pages but defers the
        // meta-page flush to the next commit or `sync()`. LMDB keeps its
        // integrity across a machine crash (at worst the last transaction is
        // undone; `sync()` at fsync/close makes it durable). Plain NO_SYNC
        // would be faster but can corrupt the tree on a crash, because ext4
        // does not preserve write order.
        let env = Environment::new()
            .set_max_dbs(8)
            .set_map_size(MAP_SIZE)
            .set_flags(EnvironmentFlags::NO_META_SYNC)
            .open(dir)
            .map_err(|e| Error::Metadata(format!("cannot open metadata index in {}: {e}", dir.display())))?;
        let c = |name| env.create_db(Some(name), DatabaseFlags::empty()).map_err(map_lmdb);
        let dbs = Dbs {
            meta: c("meta")?,
            inodes: c("inodes")?,
            dirents: c("dirents")?,
            chunks: c("chunks")?,
            orphans: c("orphans")?,
            journal: c("journal")?,
        };
        let root = DomainKeys { seal: keys.root_folder.clone(), names: keys.names.clone() };
        let keyring = RwLock::new(HashMap::from([((ROOT_DOMAIN, 0), Arc::new(root))]));
        let mut m = Metadata {
            env,
            dbs,
            keyring,
            deferred: RwLock::new(Deferred::default()),
            writer: Mutex::new(()),
            txns: Mutex::new(Txns::default()),
            committed_txn: AtomicU64::new(0),
            synced_txn: AtomicU64::new(0),
            sync_failed: std::sync::atomic::AtomicBool::new(false),
            barrier: OnceLock::new(),
        };
        let stored = m.stored_txn()?;
        m.txns.get_mut().next = stored + 1;
        *m.committed_txn.get_mut() = stored;
        *m.synced_txn.get_mut() = stored;
        Ok(m)
    }

    /// Run `barrier` before every commit from now on (once).
    pub fn set_commit_barrier(&self, barrier: CommitBarrier) {
        let _ = self.barrier.set(barrier);
    }

    /// Keep the changes of every write until `take_unlogged` (an intent log
    /// is attached).
    pub fn keep_unlogged(&self) {
        self.txns.lock().enabled = true;
    }

    /// The newest transaction number committed to LMDB, durable or not, as
    /// stored (recovery replays the intent log's transactions after it).
    pub fn stored_txn(&self) -> Result<u64> {
        self.read(|tx| tx.local_seq(INTENT_TXN))
    }

    /// The newest transaction number handed out.
    pub fn last_txn(&self) -> u64 {
        self.txns.lock().next - 1
    }

    /// Is a commit to LMDB not yet known durable?
    pub fn commit_unsynced(&self) -> bool {
        self.committed_txn.load(AtomicOrdering::Acquire) > self.synced_txn()
    }

    /// The newest transaction number durable in LMDB.
    pub fn synced_txn(&self) -> u64 {
        self.synced_txn.load(AtomicOrdering::Acquire)
    }

    /// Take the changes of the transactions no caller has taken yet, oldest first.
    pub fn take_unlogged(&self) -> Vec<(u64, Vec<Change>)> {
        self.txns.lock().unlogged.drain(..).collect()
    }

    /// Apply transactions an intent log kept (crash recovery), commit them
    /// as one and make it durable. Numbering goes on after the newest.
    pub fn replay(&self, txns: &[(u64, Vec<Change>)]) -> Result<()> {
        let Some((last, _)) = txns.last() else { return Ok(()) };
        {
            let mut t = self.txns.lock();
            t.next = t.next.max(last + 1);
        }
        self.write(|tx| {
            for c in txns.iter().flat_map(|(_, cs)| cs) {
                match &c.value {
                    Some(v) => tx.put_raw(c.table, &c.key, v)?,
                    None => tx.del_raw(c.table, &c.key)?,
                }
            }
            Ok(())
        })?;
        self.sync()
    }

    /// Make `domain`'s records at `version` readable (a session supplied its key).
    pub fn install_domain(&self, domain: u32, version: u32, keys: DomainKeys) {
        self.keyring.write().insert((domain, version), Arc::new(keys));
    }

    /// Forget every key of `domain`: its records become unreadable again.
    pub fn forget_domain(&self, domain: u32) {
        if domain != ROOT_DOMAIN {
            self.keyring.write().retain(|(d, _), _| *d != domain);
        }
    }

    pub fn domain_unlocked(&self, domain: u32) -> bool {
        self.keyring.read().keys().any(|(d, _)| *d == domain)
    }

    fn keys_at(&self, domain: u32, version: u32) -> Result<Arc<DomainKeys>> {
        self.keyring.read().get(&(domain, version)).cloned().ok_or(Error::Locked)
    }

    /// The key version `domain`'s records are sealed under (None: no records yet).
    pub fn domain_version(&self, domain: u32) -> Result<Option<u32>> {
        self.read(|tx| tx.stored_version(domain))
    }

    /// Re-seal every record of `domain` from its stored version to `to`
    /// (whose keys must be installed), in one transaction; then drop the old
    /// keys. Directory entries move to their new name hashes.
    pub fn rekey_domain(&self, domain: u32, to: u32) -> Result<()> {
        let new = self.keys_at(domain, to)?;
        self.write(|tx| {
            let from = tx.stored_version(domain)?;
            if from == Some(to) {
                return Ok(());
            }
            // A committing write: `scan` sees the deferred changes it applied.
            let of_domain = |tx: &WriteTx<'_>, t: Table, prefix: usize| -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let mut out = Vec::new();
                tx.scan(t, &[], |k, v| {
                    if v.len() >= prefix && be32(v) == domain {
                        out.push((k.to_vec(), v.to_vec()));
                    }
                    Ok(true)
                })?;
                Ok(out)
            };
            let inodes = of_domain(tx, Table::Inodes, INODE_PREFIX)?;
            let dirents = of_domain(tx, Table::Dirents, DIRENT_PREFIX)?;
            for (k, v) in inodes {
                let rec: InodeRecord = tx.open_value(b"inode", &k, &v, INODE_PREFIX)?;
                let ino =
                    u64::from_be_bytes(k.as_slice().try_into().map_err(|_| Error::Metadata("bad inode key".into()))?);
                tx.put_inode_at(ino, &rec, to, &new)?;
            }
            for (k, v) in dirents {
                let rec: DirentRecord = tx.open_value(b"dirent", &k, &v, DIRENT_PREFIX)?;
                tx.del_raw(Table::Dirents, &k)?;
                let parent = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
                tx.put_dirent_at(parent, &rec, domain, to, &new)?;
            }
            tx.set_meta_bytes(&domain_version_key(domain), &to.to_be_bytes())
        })?;
        self.keyring.write().retain(|(d, v), _| *d != domain || *v == to);
        Ok(())
    }

    /// Run `f` on a consistent view: the deferred changes over an LMDB snapshot.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> Result<T>) -> Result<T> {
        // The guard comes first and is held throughout: a commit clears the
        // overlay only under the write lock, so this view never pairs an
        // emptied overlay with a snapshot from before that commit. (Reads do
        // not nest: LMDB allows one read transaction per thread.)
        let deferred = self.deferred.read();
        let txn = self.env.begin_ro_txn().map_err(map_lmdb)?;
        let tx = Tx { txn, m: self, log: Vec::new(), deferred: Some(deferred), staged: None };
        f(&tx)
    }

    /// Run `f` in a write transaction; commit only if it returns `Ok`,
    /// together with every deferred change before it. The changes are also
    /// appended, in the same transaction, to the local journal the cloud's
    /// metadata journal is fed from.
    pub fn write<T>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        let _writer = self.writer.lock();
        let mut txn = self.env.begin_rw_txn().map_err(map_lmdb)?;
        // The writer lock is held: the deferred set cannot change meanwhile.
        let mut log = Vec::new();
        for (t, k, v) in self.deferred.read().changes.iter() {
            let db = self.dbs.of(t);
            match v {
                Some(v) => txn.put(db, &k, &v, WriteFlags::empty()).map_err(map_lmdb)?,
                None => match txn.del(db, &k, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => {}
                    Err(e) => return Err(map_lmdb(e)),
                },
            }
            log.push(Change { table: t, key: k.to_vec(), value: v.map(<[u8]>::to_vec) });
        }
        let flushed = log.len();
        let mut tx = Tx { txn, m: self, log, deferred: None, staged: None };
        let out = f(&mut tx)?;
        if tx.log.is_empty() {
            return Ok(out); // nothing to commit (dropping the txn aborts it)
        }
        // The newest journal key is the commit counter (no extra page to
        // dirty per commit); with the journal drained, the uploaded one is.
        let seq = tx.commit_seq()? + 1;
        let entry = encode(&tx.log);
        tx.txn.put(self.dbs.journal, &seq.to_be_bytes(), &entry, WriteFlags::APPEND).map_err(map_lmdb)?;
        // The writer lock is held: no other write takes a number meanwhile.
        let own = tx.log.len() > flushed;
        let txn_no = self.txns.lock().next - u64::from(!own);
        tx.txn.put(self.dbs.meta, &INTENT_TXN, &txn_no.to_be_bytes(), WriteFlags::empty()).map_err(map_lmdb)?;
        if let Some(barrier) = self.barrier.get() {
            barrier()?;
        }
        // Readers pair the overlay with whichever snapshot they get: while the
        // commit lands, the overlay must already hold every key it changes.
        let undo: Vec<_> = {
            let mut d = self.deferred.write();
            tx.log[flushed..]
                .iter()
                .map(|c| (c.table, c.key.clone(), d.changes.set(c.table, c.key.clone(), c.value.clone())))
                .collect()
        };
        if let Err(e) = tx.txn.commit() {
            let mut d = self.deferred.write();
            for (t, k, old) in undo.into_iter().rev() {
                d.changes.restore(t, k, old);
            }
            return Err(map_lmdb(e));
        }
        *self.deferred.write() = Deferred::default();
        self.committed_txn.store(txn_no, AtomicOrdering::Release);
        if own {
            // Numbered (and queued for the intent log) only once committed:
            // a failed commit must not be replayed.
            self.number(|| tx.log.split_off(flushed));
        }
        Ok(out)
    }

    /// Give the next transaction number to `changes` (under the writer lock);
    /// they are only built if an intent log will take them.
    fn number(&self, changes: impl FnOnce() -> Vec<Change>) {
        let mut t = self.txns.lock();
        let no = t.next;
        t.next += 1;
        if t.enabled {
            t.unlogged.push_back((no, changes()));
        }
    }

    /// Run `f` as a write whose changes are applied in memory at once (every
    /// reader sees them) and committed to LMDB with the next `write`, `flush`
    /// or `sync`: namespace operations that POSIX makes durable only at
    /// fsync. A crash loses a suffix of them, never part of one.
    pub fn write_deferred<T>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        let writer = self.writer.lock();
        // A write transaction only for reading (the newest state).
        let txn = self.env.begin_rw_txn().map_err(map_lmdb)?;
        let deferred = self.deferred.read();
        let mut tx = Tx { txn, m: self, log: Vec::new(), deferred: Some(deferred), staged: Some(Overlay::default()) };
        let out = f(&mut tx)?;
        let Tx { txn, deferred, staged, .. } = tx;
        drop(deferred);
        let staged = staged.unwrap_or_default();
        if !staged.is_empty() {
            self.number(|| staged.to_changes());
        }
        let full = {
            let mut d = self.deferred.write();
            d.changes.absorb(staged);
            d.since.get_or_insert_with(Instant::now);
            d.changes.len() >= MAX_DEFERRED_KEYS
        };
        drop(txn); // aborted: LMDB itself is unchanged
        drop(writer);
        if full {
            self.flush()?;
        }
        Ok(out)
    }

    /// Commit the deferred changes to LMDB (not yet synced: see `sync`).
    pub fn flush(&self) -> Result<()> {
        if self.deferred.read().changes.is_empty() {
            return Ok(());
        }
        self.write(|_| Ok(()))
    }

    /// Is a deferred change older than `age` waiting for a commit?
    pub fn deferred_for(&self, age: Duration) -> bool {
        self.deferred.read().since.is_some_and(|t| t.elapsed() >= age)
    }

    /// Does a deferred change touch inode `ino`'s record?
    pub fn inode_deferred(&self, ino: u64) -> bool {
        self.deferred.read().changes.get(Table::Inodes, &ino_key(ino)).is_some()
    }

    /// `(last committed, last uploaded)` journal sequence numbers.
    pub fn journal_position(&self) -> Result<(u64, u64)> {
        self.read(|tx| Ok((tx.commit_seq()?, tx.local_seq(UPLOADED_SEQ)?)))
    }

    /// Journal entries after `after`, oldest first, until about `max_bytes`.
    pub fn journal_after(&self, after: u64, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.read(|tx| {
            let mut cur = tx.txn.open_ro_cursor(self.dbs.journal).map_err(map_lmdb)?;
            let mut out = Vec::new();
            let mut bytes = 0;
            for item in cur.iter_from((after + 1).to_be_bytes()) {
                let (k, v) = item.map_err(map_lmdb)?;
                let seq = u64::from_be_bytes(k.try_into().map_err(|_| Error::Metadata("bad journal key".into()))?);
                out.push((seq, v.to_vec()));
                bytes += v.len();
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// The cloud root this fog node last wrote or recovered from.
    pub fn cloud_root(&self) -> Result<Option<Root>> {
        self.read(|tx| tx.meta_bytes(CLOUD_ROOT))?.map(|b| decode(&b, "cloud root")).transpose()
    }

    /// Entries up to `seq` are in the cloud, under `root`: drop them from
    /// the local journal and remember the root (one transaction).
    pub fn journal_uploaded(&self, seq: u64, root: &Root) -> Result<()> {
        let mut txn = self.env.begin_rw_txn().map_err(map_lmdb)?;
        {
            let mut cur = txn.open_rw_cursor(self.dbs.journal).map_err(map_lmdb)?;
            loop {
                match cur.iter_start().next() {
                    Some(Ok((k, _))) if k <= &seq.to_be_bytes()[..] => {
                        cur.del(WriteFlags::empty()).map_err(map_lmdb)?
                    }
                    Some(Err(e)) => return Err(map_lmdb(e)),
                    _ => break,
                }
            }
        }
        txn.put(self.dbs.meta, &UPLOADED_SEQ, &seq.to_be_bytes(), WriteFlags::empty()).map_err(map_lmdb)?;
        txn.put(self.dbs.meta, &CLOUD_ROOT, &encode(root), WriteFlags::empty()).map_err(map_lmdb)?;
        txn.commit().map_err(map_lmdb)
    }

    /// Visit every record of the vault's state (for a snapshot) in one
    /// consistent view, if every committed change is already uploaded;
    /// returns the sequence number the snapshot stands for, or `None`
    /// (nothing visited) while changes are pending.
    pub fn snapshot(&self, mut f: impl FnMut(Table, &[u8], &[u8]) -> Result<()>) -> Result<Option<u64>> {
        self.read(|tx| {
            let (commit, uploaded) = (tx.commit_seq()?, tx.local_seq(UPLOADED_SEQ)?);
            if commit != uploaded {
                return Ok(None);
            }
            for t in Table::ALL {
                let mut cur = tx.txn.open_ro_cursor(self.dbs.of(t)).map_err(map_lmdb)?;
                for item in cur.iter_start() {
                    let (k, v) = item.map_err(map_lmdb)?;
                    if t == Table::Meta && k.starts_with(LOCAL_PREFIX.as_bytes()) {
                        continue;
                    }
                    f(t, k, v)?;
                }
            }
            Ok(Some(commit))
        })
    }

    /// Apply records or journal changes fetched from the cloud (recovery),
    /// without journaling them again; `seq` becomes both the committed and
    /// the uploaded position.
    pub fn apply_recovered(&self, changes: impl IntoIterator<Item = Change>, seq: u64, root: &Root) -> Result<()> {
        let mut txn = self.env.begin_rw_txn().map_err(map_lmdb)?;
        for c in changes {
            if c.table == Table::Meta && c.key.starts_with(LOCAL_PREFIX.as_bytes()) {
                continue;
            }
            let db = self.dbs.of(c.table);
            match c.value {
                Some(v) => txn.put(db, &c.key, &v, WriteFlags::empty()).map_err(map_lmdb)?,
                None => match txn.del(db, &c.key, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => {}
                    Err(e) => return Err(map_lmdb(e)),
                },
            }
        }
        txn.put(self.dbs.meta, &UPLOADED_SEQ, &seq.to_be_bytes(), WriteFlags::empty()).map_err(map_lmdb)?;
        txn.put(self.dbs.meta, &CLOUD_ROOT, &encode(root), WriteFlags::empty()).map_err(map_lmdb)?;
        txn.commit().map_err(map_lmdb)
    }

    /// Commit the deferred changes and flush everything committed to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.sync_committed()
    }

    /// Flush what is committed to stable storage, leaving deferred changes
    /// deferred (the metadata journal upload: committing them there would
    /// turn every batch into a commit and an upload of its own).
    pub fn sync_committed(&self) -> Result<()> {
        // What is committed now: a commit during the sync may not be covered.
        let committed = self.committed_txn.load(AtomicOrdering::Acquire);
        if self.sync_failed.load(AtomicOrdering::Acquire) {
            return Err(Error::Metadata(
                "an earlier sync of the index failed; writes fail until the vault is remounted".into(),
            ));
        }
        if let Err(e) = self.env.sync(true) {
            self.sync_failed.store(true, AtomicOrdering::Release);
            tracing::error!(error = %e, "sync of the metadata index failed; writes fail until the vault is remounted");
            return Err(map_lmdb(e));
        }
        self.synced_txn.fetch_max(committed, AtomicOrdering::AcqRel);
        // Durable in LMDB: the intent log need not carry them.
        self.txns.lock().unlogged.retain(|(no, _)| *no > committed);
        Ok(())
    }

    fn name_hash(keys: &DomainKeys, name: &[u8]) -> u64 {
        let h = blake3::keyed_hash(keys.names.as_bytes(), name);
        let b: [u8; 8] = h.as_bytes()[..8].try_into().expect("8 bytes");
        // 63 bits, and 0..=2 reserved (start, ".", "..") so it doubles as a readdir offset.
        (u64::from_le_bytes(b) >> 1).max(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Metadata {
        Metadata::open(dir, &VaultKeys::derive(&Key32::random())).unwrap()
    }

    fn value(m: &Metadata, name: &str) -> Option<Vec<u8>> {
        m.read(|tx| tx.meta_bytes(name)).unwrap()
    }

    #[test]
    fn deferred_writes_survive_concurrent_commits() {
        // A deferred write landing between a commit and the overlay being
        // cleared must not be cleared away with it.
        const N: u32 = 30_000;
        let dir = tempfile::tempdir().unwrap();
        let m = open(dir.path());
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    m.sync().unwrap();
                }
            });
            for i in 0..N {
                m.write_deferred(|tx| tx.set_meta_bytes(&format!("k{i}"), &i.to_be_bytes())).unwrap();
                if i % 7 == 0 {
                    m.write(|tx| tx.set_meta_bytes(&format!("c{i}"), b"committed")).unwrap();
                }
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let check = |m: &Metadata| {
            for i in 0..N {
                assert_eq!(value(m, &format!("k{i}")), Some(i.to_be_bytes().to_vec()), "deferred key {i}");
            }
        };
        check(&m);
        m.sync().unwrap();
        drop(m);
        check(&open(dir.path()));
    }

    #[test]
    fn scans_merge_deferred_changes_and_hide_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let m = open(dir.path());
        m.write(|tx| {
            for i in [1u64, 3, 5] {
                tx.add_orphan(i)?;
            }
            Ok(())
        })
        .unwrap();
        m.write_deferred(|tx| {
            tx.remove_orphan(3)?;
            tx.add_orphan(4)?;
            // Own changes are seen inside the write, over the deferred ones.
            assert_eq!(tx.orphans()?, vec![1, 4, 5]);
            tx.add_orphan(9)
        })
        .unwrap();
        m.write_deferred(|tx| tx.remove_orphan(1)).unwrap();
        assert_eq!(m.read(|tx| tx.orphans()).unwrap(), vec![4, 5, 9]);
        // Dropped without a commit (a crash): LMDB still holds the old set.
        drop(m);
        let m = open(dir.path());
        assert_eq!(m.read(|tx| tx.orphans()).unwrap(), vec![1, 3, 5]);
        m.write_deferred(|tx| tx.remove_orphan(5)).unwrap();
        m.sync().unwrap();
        drop(m);
        assert_eq!(open(dir.path()).read(|tx| tx.orphans()).unwrap(), vec![1, 3]);
    }
}
