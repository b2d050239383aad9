//! Reading and writing records inside a transaction: LMDB values under
//! the in-memory overlays, sealed and opened with their folder's keys.

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use lmdb::{Cursor, Database, Transaction, WriteFlags};

use super::overlay::{Layered, Overlay};
use super::{
    Change, DIRENT_PREFIX, DomainKeys, FOLDER_ROOT_PREFIX, INODE_PREFIX, Metadata, ROOT_DOMAIN, Table, Tx,
    UPLOADED_SEQ, WriteTx, be32, dirent_key, domain_version_key, folder_root_key, ino_key, map_lmdb, sealed_aad,
};
use crate::crypto::{self, ChunkId};
use crate::error::{Error, Result};
use crate::metadata::schema::{ChunkEntry, DirentRecord, InodeRecord};

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|_| Error::Metadata(format!("malformed {what} record")))
}
pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("serializing a record cannot fail")
}

impl<T: Transaction> Tx<'_, T> {
    /// The last committed transaction: the newest journal entry, or (the
    /// journal drained) the last uploaded one.
    pub(super) fn commit_seq(&self) -> Result<u64> {
        let cur = self.txn.open_ro_cursor(self.m.dbs.journal).map_err(map_lmdb)?;
        let last = match cur.get(None, None, lmdb_sys::MDB_LAST) {
            Ok((Some(k), _)) => k.try_into().ok().map(u64::from_be_bytes),
            Ok((None, _)) | Err(lmdb::Error::NotFound) => None,
            Err(e) => return Err(map_lmdb(e)),
        };
        Ok(last.unwrap_or(0).max(self.local_seq(UPLOADED_SEQ)?))
    }

    pub(super) fn local_seq(&self, name: &str) -> Result<u64> {
        Ok(self
            .lmdb_get(self.m.dbs.meta, name.as_bytes())?
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// LMDB alone (journal positions, which deferred writes never touch).
    fn lmdb_get(&self, db: Database, key: &[u8]) -> Result<Option<&[u8]>> {
        match self.txn.get(db, &key) {
            Ok(v) => Ok(Some(v)),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(map_lmdb(e)),
        }
    }

    /// The current value of `key`: this write's own changes, then the
    /// deferred ones, then LMDB.
    fn get_raw(&self, t: Table, key: &[u8]) -> Result<Option<&[u8]>> {
        for layer in [self.staged.as_ref(), self.deferred.as_deref().map(|d| &d.changes)].into_iter().flatten() {
            if let Some(v) = layer.get(t, key) {
                return Ok(v);
            }
        }
        self.lmdb_get(self.m.dbs.of(t), key)
    }

    /// Visit the current entries of `t` from key `from` on, in key order,
    /// until `visit` returns `false`: LMDB's cursor merged with the deferred
    /// and this write's changes (newest wins, deletions hidden).
    pub(super) fn scan(
        &self,
        t: Table,
        from: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut cur = self.txn.open_ro_cursor(self.m.dbs.of(t)).map_err(map_lmdb)?;
        let mut failed = None;
        let base = if from.is_empty() { cur.iter_start() } else { cur.iter_from(from) };
        let base = base.map_while(|r| match r {
            Ok((k, v)) => Some((k, Some(v))),
            Err(e) => {
                failed = Some(map_lmdb(e));
                None
            }
        });
        let none = Overlay::default();
        let deferred = self.deferred.as_deref().map_or(&none, |d| &d.changes);
        let staged = self.staged.as_ref().unwrap_or(&none);
        let merged = Layered::new(staged.range(t, from), Layered::new(deferred.range(t, from), base));
        for (k, v) in merged {
            if let Some(v) = v
                && !visit(k, v)?
            {
                break;
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Open a sealed value `prefix ‖ sealed`; the prefix starts with domain ‖ …
    /// and ends with the key version.
    pub(super) fn open_value<R: DeserializeOwned>(
        &self,
        table: &[u8],
        key: &[u8],
        value: &[u8],
        prefix: usize,
    ) -> Result<R> {
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
        Ok(self.get_raw(Table::Meta, domain_version_key(domain).as_bytes())?.filter(|b| b.len() == 4).map(be32))
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
            .get_raw(Table::Inodes, &ino_key(ino))?
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
        let v = self.get_raw(Table::Meta, folder_root_key(domain).as_bytes())?;
        Ok(v.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes))
    }

    /// Does this index hold any vault folder?
    pub fn any_folder_root(&self) -> Result<bool> {
        let prefix = FOLDER_ROOT_PREFIX.as_bytes();
        let mut found = false;
        self.scan(Table::Meta, prefix, |k, _| {
            found = k.starts_with(prefix);
            Ok(false)
        })?;
        Ok(found)
    }

    pub fn meta_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_raw(Table::Meta, name.as_bytes())?.map(<[u8]>::to_vec))
    }

    pub fn inode(&self, ino: u64) -> Result<Option<InodeRecord>> {
        let k = ino_key(ino);
        match self.get_raw(Table::Inodes, &k)? {
            Some(v) => Ok(Some(self.open_value(b"inode", &k, v, INODE_PREFIX)?)),
            None => Ok(None),
        }
    }

    pub fn dirent(&self, parent: u64, name: &[u8]) -> Result<Option<DirentRecord>> {
        let (.., k) = self.dirent_key_in(parent, name)?;
        match self.get_raw(Table::Dirents, &k)? {
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
        let mut out = Vec::new();
        self.scan(Table::Dirents, &start, |k, v| {
            if k.len() != 16 || k[..8] != parent.to_be_bytes() || out.len() >= limit {
                return Ok(false);
            }
            let off = u64::from_be_bytes(k[8..].try_into().expect("8 bytes"));
            out.push((off, self.open_value(b"dirent", k, v, DIRENT_PREFIX)?));
            Ok(true)
        })?;
        Ok(out)
    }

    pub fn dir_is_empty(&self, parent: u64) -> Result<bool> {
        Ok(self.list_dir(parent, 0, 1)?.is_empty())
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        self.get_raw(Table::Chunks, &id.0)?.map(|v| decode(v, "chunk")).transpose()
    }

    pub fn orphans(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        self.scan(Table::Orphans, &[], |k, _| {
            out.push(u64::from_be_bytes(k.try_into().unwrap_or([0; 8])));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Visit every inode whose folder is unlocked (verify, stats); returns
    /// how many were skipped because their folder is locked. Stops at the
    /// first error.
    pub fn for_each_inode(&self, mut f: impl FnMut(u64, InodeRecord) -> Result<()>) -> Result<u64> {
        let mut locked = 0;
        self.scan(Table::Inodes, &[], |k, v| {
            let ino = u64::from_be_bytes(k.try_into().map_err(|_| Error::Metadata("bad inode key".into()))?);
            match self.open_value(b"inode", k, v, INODE_PREFIX) {
                Ok(rec) => f(ino, rec)?,
                Err(Error::Locked) => locked += 1,
                Err(e) => return Err(e),
            }
            Ok(true)
        })?;
        Ok(locked)
    }

    /// Visit every chunk index entry.
    pub fn for_each_chunk(&self, mut f: impl FnMut(ChunkId, ChunkEntry) -> Result<()>) -> Result<()> {
        self.scan(Table::Chunks, &[], |k, v| {
            let id = ChunkId(k.try_into().map_err(|_| Error::Metadata("bad chunk key".into()))?);
            f(id, decode(v, "chunk")?)?;
            Ok(true)
        })
    }
}

impl WriteTx<'_> {
    pub(super) fn put_raw(&mut self, t: Table, key: &[u8], val: &[u8]) -> Result<()> {
        if let Some(staged) = &mut self.staged {
            staged.set(t, key.to_vec(), Some(val.to_vec()));
            return Ok(());
        }
        self.txn.put(self.m.dbs.of(t), &key, &val, WriteFlags::empty()).map_err(map_lmdb)?;
        self.log.push(Change { table: t, key: key.to_vec(), value: Some(val.to_vec()) });
        Ok(())
    }
    pub(super) fn del_raw(&mut self, t: Table, key: &[u8]) -> Result<()> {
        if self.staged.is_some() {
            if self.get_raw(t, key)?.is_some()
                && let Some(staged) = &mut self.staged
            {
                staged.set(t, key.to_vec(), None);
            }
            return Ok(());
        }
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
            if ino >= 2 && self.get_raw(Table::Inodes, &ino_key(ino))?.is_none() {
                return Ok(ino);
            }
        }
    }

    /// Store an inode, sealed under the current key of `rec.domain`.
    pub fn put_inode(&mut self, ino: u64, rec: &InodeRecord) -> Result<()> {
        let (v, keys) = self.current_keys(rec.domain)?;
        self.put_inode_at(ino, rec, v, &keys)
    }

    pub(super) fn put_inode_at(&mut self, ino: u64, rec: &InodeRecord, version: u32, keys: &DomainKeys) -> Result<()> {
        let k = ino_key(ino);
        let mut value = Vec::with_capacity(INODE_PREFIX + 64);
        value.extend_from_slice(&rec.domain.to_be_bytes());
        value.extend_from_slice(&rec.content_domain().to_be_bytes());
        value.extend_from_slice(&version.to_be_bytes());
        let sealed = crypto::seal(&keys.seal, &sealed_aad(b"inode", &k, &value), &encode(rec));
        value.extend_from_slice(&sealed);
        self.put_raw(Table::Inodes, &k, &value)
    }

    pub(super) fn put_dirent_at(
        &mut self,
        parent: u64,
        rec: &DirentRecord,
        domain: u32,
        version: u32,
        keys: &DomainKeys,
    ) -> Result<()> {
        let k = dirent_key(parent, Metadata::name_hash(keys, &rec.name));
        if let Some(v) = self.get_raw(Table::Dirents, &k)? {
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
