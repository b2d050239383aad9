//! LMDB environment, typed transactions and the key builders.

use std::path::Path;

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, RoTransaction, RwTransaction, Transaction,
    WriteFlags,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
fn sealed_aad(table: &[u8], key: &[u8]) -> Vec<u8> {
    let mut aad = table.to_vec();
    aad.extend_from_slice(key);
    aad
}

struct Dbs {
    meta: Database,
    inodes: Database,
    dirents: Database,
    chunks: Database,
    orphans: Database,
}

pub struct Metadata {
    env: Environment,
    dbs: Dbs,
    folder_key: Key32,
    names_key: Key32,
}

pub struct Tx<'e, T> {
    txn: T,
    m: &'e Metadata,
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
        };
        Ok(Metadata { env, dbs, folder_key: keys.root_folder.clone(), names_key: keys.names.clone() })
    }

    pub fn read<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> Result<T>) -> Result<T> {
        let txn = self.env.begin_ro_txn().map_err(map_lmdb)?;
        let tx = Tx { txn, m: self };
        f(&tx)
    }

    /// Run `f` in a write transaction; commit only if it returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        let txn = self.env.begin_rw_txn().map_err(map_lmdb)?;
        let mut tx = Tx { txn, m: self };
        let out = f(&mut tx)?;
        tx.txn.commit().map_err(map_lmdb)?;
        Ok(out)
    }

    /// Flush committed transactions to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.env.sync(true).map_err(map_lmdb)
    }

    fn name_hash(&self, name: &[u8]) -> u64 {
        let h = blake3::keyed_hash(self.names_key.as_bytes(), name);
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
    fn get_raw(&self, db: Database, key: &[u8]) -> Result<Option<&[u8]>> {
        match self.txn.get(db, &key) {
            Ok(v) => Ok(Some(v)),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(map_lmdb(e)),
        }
    }

    fn open_sealed<R: DeserializeOwned>(&self, table: &[u8], key: &[u8], sealed: &[u8]) -> Result<R> {
        let plain = crypto::open(&self.m.folder_key, &sealed_aad(table, key), sealed)
            .map_err(|_| Error::Integrity("a metadata record fails authentication".into()))?;
        decode(&plain, std::str::from_utf8(table).unwrap_or("sealed"))
    }

    pub fn meta_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_raw(self.m.dbs.meta, name.as_bytes())?.map(<[u8]>::to_vec))
    }

    pub fn inode(&self, ino: u64) -> Result<Option<InodeRecord>> {
        let k = ino_key(ino);
        match self.get_raw(self.m.dbs.inodes, &k)? {
            Some(v) => Ok(Some(self.open_sealed(b"inode", &k, v)?)),
            None => Ok(None),
        }
    }

    pub fn dirent(&self, parent: u64, name: &[u8]) -> Result<Option<DirentRecord>> {
        let k = dirent_key(parent, self.m.name_hash(name));
        match self.get_raw(self.m.dbs.dirents, &k)? {
            Some(v) => {
                let d: DirentRecord = self.open_sealed(b"dirent", &k, v)?;
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
            out.push((off, self.open_sealed(b"dirent", k, v)?));
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

    /// Visit every inode (verify, stats). Stops at the first error.
    pub fn for_each_inode(&self, mut f: impl FnMut(u64, InodeRecord) -> Result<()>) -> Result<()> {
        let mut cur = self.txn.open_ro_cursor(self.m.dbs.inodes).map_err(map_lmdb)?;
        for item in cur.iter_start() {
            let (k, v) = item.map_err(map_lmdb)?;
            let ino = u64::from_be_bytes(k.try_into().map_err(|_| Error::Metadata("bad inode key".into()))?);
            f(ino, self.open_sealed(b"inode", k, v)?)?;
        }
        Ok(())
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
    fn put_raw(&mut self, db: Database, key: &[u8], val: &[u8]) -> Result<()> {
        self.txn.put(db, &key, &val, WriteFlags::empty()).map_err(map_lmdb)
    }
    fn del_raw(&mut self, db: Database, key: &[u8]) -> Result<()> {
        match self.txn.del(db, &key, None) {
            Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
            Err(e) => Err(map_lmdb(e)),
        }
    }

    pub fn set_meta_bytes(&mut self, name: &str, val: &[u8]) -> Result<()> {
        self.put_raw(self.m.dbs.meta, name.as_bytes(), val)
    }

    /// Allocate a fresh inode number (never reused).
    pub fn next_ino(&mut self) -> Result<u64> {
        let cur = match self.meta_bytes("next_ino")? {
            Some(b) => u64::from_be_bytes(b.try_into().map_err(|_| Error::Metadata("bad next_ino".into()))?),
            None => 2, // 1 is the root
        };
        self.set_meta_bytes("next_ino", &(cur + 1).to_be_bytes())?;
        Ok(cur)
    }

    pub fn put_inode(&mut self, ino: u64, rec: &InodeRecord) -> Result<()> {
        let k = ino_key(ino);
        let sealed = crypto::seal(&self.m.folder_key, &sealed_aad(b"inode", &k), &encode(rec));
        self.put_raw(self.m.dbs.inodes, &k, &sealed)
    }

    pub fn delete_inode(&mut self, ino: u64) -> Result<()> {
        self.del_raw(self.m.dbs.inodes, &ino_key(ino))
    }

    /// Insert or replace the entry for `rec.name` in `parent`.
    pub fn put_dirent(&mut self, parent: u64, rec: &DirentRecord) -> Result<()> {
        let k = dirent_key(parent, self.m.name_hash(&rec.name));
        if let Some(v) = self.get_raw(self.m.dbs.dirents, &k)? {
            let existing: DirentRecord = self.open_sealed(b"dirent", &k, v)?;
            if existing.name != rec.name {
                // Two names sharing 63 hash bits in one directory (~2^-30 at 100k entries).
                return Err(Error::Metadata("directory entry hash collision".into()));
            }
        }
        let sealed = crypto::seal(&self.m.folder_key, &sealed_aad(b"dirent", &k), &encode(rec));
        self.put_raw(self.m.dbs.dirents, &k, &sealed)
    }

    pub fn delete_dirent(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        let k = dirent_key(parent, self.m.name_hash(name));
        self.del_raw(self.m.dbs.dirents, &k)
    }

    pub fn put_chunk(&mut self, id: &ChunkId, entry: &ChunkEntry) -> Result<()> {
        self.put_raw(self.m.dbs.chunks, &id.0, &encode(entry))
    }

    pub fn add_orphan(&mut self, ino: u64) -> Result<()> {
        self.put_raw(self.m.dbs.orphans, &ino_key(ino), &[])
    }

    pub fn remove_orphan(&mut self, ino: u64) -> Result<()> {
        self.del_raw(self.m.dbs.orphans, &ino_key(ino))
    }
}
