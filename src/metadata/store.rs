//! LMDB environment, typed transactions and the key builders.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, RoTransaction, RwTransaction, Transaction,
    WriteFlags,
};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::cloud::Root;
use super::schema::{ChunkEntry, DirentRecord, InodeRecord};
use crate::crypto::{self, ChunkId, Key32, VaultKeys};
use crate::error::{Error, Result};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    Meta,
    Inodes,
    Dirents,
    Chunks,
    Orphans,
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
const CLOUD_ROOT: &str = "local/cloud_root";

/// Domain 0 is the root folder (keys from the repository root secret,
/// version 0); vault folders are domains 1.. whose keys exist only while a
/// session has supplied them.
pub const ROOT_DOMAIN: u32 = 0;

pub struct Metadata {
    env: Environment,
    dbs: Dbs,
    /// `(domain, key version)` → keys. Records name their version, so a key
    /// rotation can add the new version before the re-seal commits.
    keyring: RwLock<HashMap<(u32, u32), Arc<DomainKeys>>>,
}

pub struct Tx<'e, T> {
    txn: T,
    m: &'e Metadata,
    /// What a write transaction changed, for the metadata journal.
    log: Vec<Change>,
}
pub type ReadTx<'e> = Tx<'e, RoTransaction<'e>>;
pub type WriteTx<'e> = Tx<'e, RwTransaction<'e>>;

impl Metadata {
    /// Open (or create) the index in `dir`. One environment per process (lmdb-rkv rule).
    pub fn open(dir: &Path, keys: &VaultKeys) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::from_io)?;
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
        Ok(Metadata { env, dbs, keyring })
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
            let mut inodes = Vec::new();
            let mut dirents = Vec::new();
            {
                let mut cur = tx.txn.open_ro_cursor(self.dbs.inodes).map_err(map_lmdb)?;
                for item in cur.iter_start() {
                    let (k, v) = item.map_err(map_lmdb)?;
                    if v.len() >= INODE_PREFIX && be32(v) == domain {
                        inodes.push((k.to_vec(), v.to_vec()));
                    }
                }
                let mut cur = tx.txn.open_ro_cursor(self.dbs.dirents).map_err(map_lmdb)?;
                for item in cur.iter_start() {
                    let (k, v) = item.map_err(map_lmdb)?;
                    if v.len() >= DIRENT_PREFIX && be32(v) == domain {
                        dirents.push((k.to_vec(), v.to_vec()));
                    }
                }
            }
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

    pub fn read<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> Result<T>) -> Result<T> {
        let txn = self.env.begin_ro_txn().map_err(map_lmdb)?;
        let tx = Tx { txn, m: self, log: Vec::new() };
        f(&tx)
    }

    /// Run `f` in a write transaction; commit only if it returns `Ok`. The
    /// changes are also appended, in the same transaction, to the local
    /// journal the cloud's metadata journal is fed from.
    pub fn write<T>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        let txn = self.env.begin_rw_txn().map_err(map_lmdb)?;
        let mut tx = Tx { txn, m: self, log: Vec::new() };
        let out = f(&mut tx)?;
        if !tx.log.is_empty() {
            // The newest journal key is the commit counter (no extra page to
            // dirty per commit); with the journal drained, the uploaded one is.
            let seq = tx.commit_seq()? + 1;
            let entry = encode(&tx.log);
            tx.txn.put(self.dbs.journal, &seq.to_be_bytes(), &entry, WriteFlags::APPEND).map_err(map_lmdb)?;
        }
        tx.txn.commit().map_err(map_lmdb)?;
        Ok(out)
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

    /// Flush committed transactions to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.env.sync(true).map_err(map_lmdb)
    }

    fn name_hash(keys: &DomainKeys, name: &[u8]) -> u64 {
        let h = blake3::keyed_hash(keys.names.as_bytes(), name);
        let b: [u8; 8] = h.as_bytes()[..8].try_into().expect("8 bytes");
        // 63 bits, and 0..=2 reserved (start, ".", "..") so it doubles as a readdir offset.
        (u64::from_le_bytes(b) >> 1).max(3)
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|_| Error::Metadata(format!("malformed {what} record")))
}
fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("serializing a record cannot fail")
}

impl<T: Transaction> Tx<'_, T> {
    /// The last committed transaction: the newest journal entry, or (the
    /// journal drained) the last uploaded one.
    fn commit_seq(&self) -> Result<u64> {
        let cur = self.txn.open_ro_cursor(self.m.dbs.journal).map_err(map_lmdb)?;
        let last = match cur.get(None, None, lmdb_sys::MDB_LAST) {
            Ok((Some(k), _)) => k.try_into().ok().map(u64::from_be_bytes),
            Ok((None, _)) | Err(lmdb::Error::NotFound) => None,
            Err(e) => return Err(map_lmdb(e)),
        };
        Ok(last.unwrap_or(0).max(self.local_seq(UPLOADED_SEQ)?))
    }

    fn local_seq(&self, name: &str) -> Result<u64> {
        Ok(self
            .get_raw(self.m.dbs.meta, name.as_bytes())?
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn get_raw(&self, db: Database, key: &[u8]) -> Result<Option<&[u8]>> {
        match self.txn.get(db, &key) {
            Ok(v) => Ok(Some(v)),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(map_lmdb(e)),
        }
    }

    /// Open a sealed value `prefix ‖ sealed`; the prefix starts with domain ‖ …
    /// and ends with the key version.
    fn open_value<R: DeserializeOwned>(&self, table: &[u8], key: &[u8], value: &[u8], prefix: usize) -> Result<R> {
        if value.len() < prefix {
            return Err(Error::Integrity("a metadata record is truncated".into()));
        }
        let (head, sealed) = value.split_at(prefix);
        let keys = self.m.keys_at(be32(head), be32(&head[prefix - 4..]))?;
        let plain = crypto::open(&keys.seal, &sealed_aad(table, key, head), sealed)
            .map_err(|_| Error::Integrity("a metadata record fails authentication".into()))?;
        decode(&plain, std::str::from_utf8(table).unwrap_or("sealed"))
    }

    /// The key version `domain`'s records are sealed under (None: no records yet).
    pub fn stored_version(&self, domain: u32) -> Result<Option<u32>> {
        if domain == ROOT_DOMAIN {
            return Ok(Some(0));
        }
        Ok(self.get_raw(self.m.dbs.meta, domain_version_key(domain).as_bytes())?.filter(|b| b.len() == 4).map(be32))
    }

    /// The keys records of `domain` are written with now.
    fn current_keys(&self, domain: u32) -> Result<(u32, Arc<DomainKeys>)> {
        let v = self.stored_version(domain)?.ok_or(Error::Locked)?;
        Ok((v, self.m.keys_at(domain, v)?))
    }

    /// `(domain, content domain)` of an inode, from its clear-text prefix
    /// (no key needed): the domain seals the inode itself, the content domain
    /// its directory entries (they differ only at a vault folder's root).
    pub fn inode_domains(&self, ino: u64) -> Result<Option<(u32, u32)>> {
        Ok(self
            .get_raw(self.m.dbs.inodes, &ino_key(ino))?
            .filter(|v| v.len() >= INODE_PREFIX)
            .map(|v| (be32(v), be32(&v[4..]))))
    }

    fn dirent_key_in(&self, parent: u64, name: &[u8]) -> Result<(u32, u32, Arc<DomainKeys>, [u8; 16])> {
        let (_, domain) = self.inode_domains(parent)?.ok_or(Error::NotFound)?;
        let (v, keys) = self.current_keys(domain)?;
        let k = dirent_key(parent, Metadata::name_hash(&keys, name));
        Ok((domain, v, keys, k))
    }

    /// The root directory of vault folder `domain`, if it was created here.
    pub fn folder_root(&self, domain: u32) -> Result<Option<u64>> {
        let v = self.get_raw(self.m.dbs.meta, folder_root_key(domain).as_bytes())?;
        Ok(v.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes))
    }

    /// Does this index hold any vault folder?
    pub fn any_folder_root(&self) -> Result<bool> {
        let prefix = FOLDER_ROOT_PREFIX.as_bytes();
        let mut cur = self.txn.open_ro_cursor(self.m.dbs.meta).map_err(map_lmdb)?;
        match cur.iter_from(prefix).next() {
            Some(item) => Ok(item.map_err(map_lmdb)?.0.starts_with(prefix)),
            None => Ok(false),
        }
    }

    pub fn meta_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_raw(self.m.dbs.meta, name.as_bytes())?.map(<[u8]>::to_vec))
    }

    pub fn inode(&self, ino: u64) -> Result<Option<InodeRecord>> {
        let k = ino_key(ino);
        match self.get_raw(self.m.dbs.inodes, &k)? {
            Some(v) => Ok(Some(self.open_value(b"inode", &k, v, INODE_PREFIX)?)),
            None => Ok(None),
        }
    }

    pub fn dirent(&self, parent: u64, name: &[u8]) -> Result<Option<DirentRecord>> {
        let (.., k) = self.dirent_key_in(parent, name)?;
        match self.get_raw(self.m.dbs.dirents, &k)? {
            Some(v) => {
                let d: DirentRecord = self.open_value(b"dirent", &k, v, DIRENT_PREFIX)?;
                Ok((d.name == name).then_some(d))
            }
            None => Ok(None),
        }
    }

    /// Entries of `parent` whose offset is greater than `after`, in offset order.
    pub fn list_dir(&self, parent: u64, after: u64, limit: usize) -> Result<Vec<(u64, DirentRecord)>> {
        let start = dirent_key(parent, after.saturating_add(1));
        let mut cur = self.txn.open_ro_cursor(self.m.dbs.dirents).map_err(map_lmdb)?;
        let mut out = Vec::new();
        for item in cur.iter_from(start) {
            let (k, v) = item.map_err(map_lmdb)?;
            if k.len() != 16 || k[..8] != parent.to_be_bytes() || out.len() >= limit {
                break;
            }
            let off = u64::from_be_bytes(k[8..].try_into().expect("8 bytes"));
            out.push((off, self.open_value(b"dirent", k, v, DIRENT_PREFIX)?));
        }
        Ok(out)
    }

    pub fn dir_is_empty(&self, parent: u64) -> Result<bool> {
        Ok(self.list_dir(parent, 0, 1)?.is_empty())
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        self.get_raw(self.m.dbs.chunks, &id.0)?.map(|v| decode(v, "chunk")).transpose()
    }

    pub fn orphans(&self) -> Result<Vec<u64>> {
        let mut cur = self.txn.open_ro_cursor(self.m.dbs.orphans).map_err(map_lmdb)?;
        cur.iter_start()
            .map(|r| r.map_err(map_lmdb).map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap_or([0; 8]))))
            .collect()
    }

    /// Visit every inode whose folder is unlocked (verify, stats); returns
    /// how many were skipped because their folder is locked. Stops at the
    /// first error.
    pub fn for_each_inode(&self, mut f: impl FnMut(u64, InodeRecord) -> Result<()>) -> Result<u64> {
        let mut cur = self.txn.open_ro_cursor(self.m.dbs.inodes).map_err(map_lmdb)?;
        let mut locked = 0;
        for item in cur.iter_start() {
            let (k, v) = item.map_err(map_lmdb)?;
            let ino = u64::from_be_bytes(k.try_into().map_err(|_| Error::Metadata("bad inode key".into()))?);
            match self.open_value(b"inode", k, v, INODE_PREFIX) {
                Ok(rec) => f(ino, rec)?,
                Err(Error::Locked) => locked += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(locked)
    }

    /// Visit every chunk index entry.
    pub fn for_each_chunk(&self, mut f: impl FnMut(ChunkId, ChunkEntry) -> Result<()>) -> Result<()> {
        let mut cur = self.txn.open_ro_cursor(self.m.dbs.chunks).map_err(map_lmdb)?;
        for item in cur.iter_start() {
            let (k, v) = item.map_err(map_lmdb)?;
            let id = ChunkId(k.try_into().map_err(|_| Error::Metadata("bad chunk key".into()))?);
            f(id, decode(v, "chunk")?)?;
        }
        Ok(())
    }
}

impl WriteTx<'_> {
    fn put_raw(&mut self, t: Table, key: &[u8], val: &[u8]) -> Result<()> {
        self.txn.put(self.m.dbs.of(t), &key, &val, WriteFlags::empty()).map_err(map_lmdb)?;
        self.log.push(Change { table: t, key: key.to_vec(), value: Some(val.to_vec()) });
        Ok(())
    }
    fn del_raw(&mut self, t: Table, key: &[u8]) -> Result<()> {
        match self.txn.del(self.m.dbs.of(t), &key, None) {
            Ok(()) => {}
            Err(lmdb::Error::NotFound) => return Ok(()),
            Err(e) => return Err(map_lmdb(e)),
        }
        self.log.push(Change { table: t, key: key.to_vec(), value: None });
        Ok(())
    }

    pub fn set_meta_bytes(&mut self, name: &str, val: &[u8]) -> Result<()> {
        self.put_raw(Table::Meta, name.as_bytes(), val)
    }

    /// Allocate a fresh inode number: random in [2, 2^62), so that inode
    /// numbers reveal neither creation order nor count (decoys planted
    /// later look like records created long ago). Collisions with a live
    /// inode are retried; reuse of a deleted number is a 2^-62 event per
    /// allocation.
    pub fn next_ino(&mut self) -> Result<u64> {
        loop {
            let mut b = [0u8; 8];
            crypto::random_bytes(&mut b);
            let ino = u64::from_le_bytes(b) >> 2;
            if ino >= 2 && self.get_raw(self.m.dbs.inodes, &ino_key(ino))?.is_none() {
                return Ok(ino);
            }
        }
    }

    /// Store an inode, sealed under the current key of `rec.domain`.
    pub fn put_inode(&mut self, ino: u64, rec: &InodeRecord) -> Result<()> {
        let (v, keys) = self.current_keys(rec.domain)?;
        self.put_inode_at(ino, rec, v, &keys)
    }

    fn put_inode_at(&mut self, ino: u64, rec: &InodeRecord, version: u32, keys: &DomainKeys) -> Result<()> {
        let k = ino_key(ino);
        let mut value = Vec::with_capacity(INODE_PREFIX + 64);
        value.extend_from_slice(&rec.domain.to_be_bytes());
        value.extend_from_slice(&rec.content_domain().to_be_bytes());
        value.extend_from_slice(&version.to_be_bytes());
        let sealed = crypto::seal(&keys.seal, &sealed_aad(b"inode", &k, &value), &encode(rec));
        value.extend_from_slice(&sealed);
        self.put_raw(Table::Inodes, &k, &value)
    }

    fn put_dirent_at(
        &mut self,
        parent: u64,
        rec: &DirentRecord,
        domain: u32,
        version: u32,
        keys: &DomainKeys,
    ) -> Result<()> {
        let k = dirent_key(parent, Metadata::name_hash(keys, &rec.name));
        if let Some(v) = self.get_raw(self.m.dbs.dirents, &k)? {
            let existing: DirentRecord = self.open_value(b"dirent", &k, v, DIRENT_PREFIX)?;
            if existing.name != rec.name {
                // Two names sharing 63 hash bits in one directory (~2^-30 at 100k entries).
                return Err(Error::Metadata("directory entry hash collision".into()));
            }
        }
        let mut value = Vec::with_capacity(DIRENT_PREFIX + 64);
        value.extend_from_slice(&domain.to_be_bytes());
        value.extend_from_slice(&version.to_be_bytes());
        let sealed = crypto::seal(&keys.seal, &sealed_aad(b"dirent", &k, &value), &encode(rec));
        value.extend_from_slice(&sealed);
        self.put_raw(Table::Dirents, &k, &value)
    }

    pub fn set_folder_root(&mut self, domain: u32, ino: u64) -> Result<()> {
        self.set_meta_bytes(&folder_root_key(domain), &ino.to_be_bytes())
    }

    /// First use of a vault folder's key: its records will be sealed at `version`.
    pub fn set_stored_version(&mut self, domain: u32, version: u32) -> Result<()> {
        self.set_meta_bytes(&domain_version_key(domain), &version.to_be_bytes())
    }

    pub fn delete_inode(&mut self, ino: u64) -> Result<()> {
        self.del_raw(Table::Inodes, &ino_key(ino))
    }

    /// Insert or replace the entry for `rec.name` in `parent`.
    pub fn put_dirent(&mut self, parent: u64, rec: &DirentRecord) -> Result<()> {
        let (domain, v, keys, _) = self.dirent_key_in(parent, &rec.name)?;
        self.put_dirent_at(parent, rec, domain, v, &keys)
    }

    pub fn delete_dirent(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        let (.., k) = self.dirent_key_in(parent, name)?;
        self.del_raw(Table::Dirents, &k)
    }

    pub fn put_chunk(&mut self, id: &ChunkId, entry: &ChunkEntry) -> Result<()> {
        self.put_raw(Table::Chunks, &id.0, &encode(entry))
    }

    /// Drop a dead chunk from the index (garbage collection).
    pub fn delete_chunk(&mut self, id: &ChunkId) -> Result<()> {
        self.del_raw(Table::Chunks, &id.0)
    }

    pub fn add_orphan(&mut self, ino: u64) -> Result<()> {
        self.put_raw(Table::Orphans, &ino_key(ino), &[])
    }

    pub fn remove_orphan(&mut self, ino: u64) -> Result<()> {
        self.del_raw(Table::Orphans, &ino_key(ino))
    }
}
