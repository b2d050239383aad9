//! The metadata as the cloud stores it: an append-only journal of committed
//! changes, compacted snapshots, and one root that names the newest of both
//! (byte layout in docs/STORAGE_FORMAT.md). Pure encoding: no I/O here.
//!
//! Every object is zstd-compressed, then sealed with XChaCha20-Poly1305 under
//! a key derived from the repository root secret, with the repository id and
//! the object's name in the AAD, so the cloud can neither read, forge, nor
//! move an object to another name. Journal objects form a hash chain (each
//! names the BLAKE3 hash of its predecessor's sealed bytes), and the root's
//! generation only grows: a store that drops, reorders or rolls back objects
//! is caught.

use serde::{Deserialize, Serialize};

use super::store::{Change, Table};
use crate::chunk_store::PackId;
use crate::crypto::{self, Key32};
use crate::error::{Error, Result};

pub const ROOT_OBJECT: &str = "meta/root";
pub const JOURNAL_PREFIX: &str = "meta/journal/";
pub const SNAPSHOT_PREFIX: &str = "meta/snapshot/";
const FORMAT: u32 = 1;
const ZSTD_LEVEL: i32 = 3;
/// Plaintext bytes per snapshot part: bounds the memory a snapshot needs.
pub const SNAPSHOT_PART_BYTES: usize = 16 << 20;

pub type Hash = [u8; 32];

/// One journal object: consecutive committed transactions `first..=last`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct JournalObject {
    pub first: u64,
    pub last: u64,
    /// Hash of the sealed journal object ending at `first - 1` (zero for the first).
    pub prev: Hash,
    /// `(sequence number, encoded changes)`, in order.
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// A compacted snapshot: the whole state after transaction `seq`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub seq: u64,
    /// Chain hash at `seq`: the next journal object's `prev`.
    pub chain: Hash,
    /// BLAKE3 of each sealed part, in order.
    pub parts: Vec<Hash>,
}

/// The root: where the cloud's metadata ends. Rewritten after every
/// journal object; `generation` grows by one each time.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Root {
    pub generation: u64,
    /// Last transaction in the journal, and the hash of the object holding it.
    pub head_seq: u64,
    pub head_hash: Hash,
    pub snapshot: Option<SnapshotRef>,
    /// Journal objects written since the snapshot (when to compact next).
    pub objects_since_snapshot: u64,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    format: u32,
    body: T,
}

pub struct MetaKeys {
    key: Key32,
    repo_id: String,
}

pub fn journal_name(first: u64) -> String {
    format!("{JOURNAL_PREFIX}{first:016x}")
}

pub fn parse_journal_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(JOURNAL_PREFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub fn snapshot_dir(seq: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{seq:016x}/")
}

pub fn snapshot_part_name(seq: u64, part: usize) -> String {
    format!("{}{part:04x}", snapshot_dir(seq))
}

pub fn hash(sealed: &[u8]) -> Hash {
    *blake3::hash(sealed).as_bytes()
}

impl MetaKeys {
    pub fn new(metadata_key: &Key32, repo_id: &str) -> Self {
        MetaKeys { key: metadata_key.clone(), repo_id: repo_id.to_string() }
    }

    fn aad(&self, name: &str) -> Vec<u8> {
        format!("fogvault metadata {} {name}", self.repo_id).into_bytes()
    }

    fn seal<T: Serialize>(&self, name: &str, body: &T) -> Vec<u8> {
        let plain = postcard::to_allocvec(&Envelope { format: FORMAT, body }).expect("metadata object serializes");
        let packed = zstd::bulk::compress(&plain, ZSTD_LEVEL).expect("zstd compresses in memory");
        crypto::seal(&self.key, &self.aad(name), &packed)
    }

    fn open<T: for<'de> Deserialize<'de>>(&self, name: &str, sealed: &[u8]) -> Result<T> {
        let bad = |what: &str| Error::Integrity(format!("metadata object {name} {what}"));
        let packed = crypto::open(&self.key, &self.aad(name), sealed).map_err(|_| bad("fails authentication"))?;
        let plain = zstd::stream::decode_all(packed.as_slice()).map_err(|_| bad("does not decompress"))?;
        let env: Envelope<T> = postcard::from_bytes(&plain).map_err(|_| bad("is malformed"))?;
        if env.format != FORMAT {
            return Err(bad("has an unsupported format"));
        }
        Ok(env.body)
    }

    pub fn seal_journal(&self, obj: &JournalObject) -> Vec<u8> {
        self.seal(&journal_name(obj.first), obj)
    }

    pub fn open_journal(&self, name: &str, sealed: &[u8]) -> Result<JournalObject> {
        let obj: JournalObject = self.open(name, sealed)?;
        let consistent = parse_journal_name(name) == Some(obj.first)
            && obj.entries.first().map(|e| e.0) == Some(obj.first)
            && obj.entries.last().map(|e| e.0) == Some(obj.last)
            && obj.entries.windows(2).all(|w| w[1].0 == w[0].0 + 1);
        if !consistent {
            return Err(Error::Integrity(format!("metadata object {name} has inconsistent sequence numbers")));
        }
        Ok(obj)
    }

    pub fn seal_root(&self, root: &Root) -> Vec<u8> {
        self.seal(ROOT_OBJECT, root)
    }

    pub fn open_root(&self, sealed: &[u8]) -> Result<Root> {
        self.open(ROOT_OBJECT, sealed)
    }

    pub fn seal_snapshot_part(&self, name: &str, records: &[u8]) -> Vec<u8> {
        self.seal(name, &records)
    }

    /// The records of one snapshot part, as changes that recreate them.
    pub fn open_snapshot_part(&self, name: &str, sealed: &[u8]) -> Result<Vec<Change>> {
        let raw: Vec<u8> = self.open(name, sealed)?;
        decode_records(&raw).ok_or_else(|| Error::Integrity(format!("metadata object {name} has malformed records")))
    }
}

/// Append one snapshot record: table u8 ‖ key length u32 LE ‖ key ‖ value length u32 LE ‖ value.
pub fn encode_record(out: &mut Vec<u8>, table: Table, key: &[u8], value: &[u8]) {
    out.push(table as u8);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn decode_records(mut b: &[u8]) -> Option<Vec<Change>> {
    let mut out = Vec::new();
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (h, t) = (b.get(..n)?, b.get(n..)?);
        *b = t;
        Some(h.to_vec())
    };
    while !b.is_empty() {
        let table = *Table::ALL.get(take(&mut b, 1)?[0] as usize)?;
        let klen = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        let key = take(&mut b, klen)?;
        let vlen = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        let value = take(&mut b, vlen)?;
        out.push(Change { table, key, value: Some(value) });
    }
    Some(out)
}

/// Decode one journal entry (the changes of one transaction).
pub fn decode_entry(bytes: &[u8]) -> Result<Vec<Change>> {
    postcard::from_bytes(bytes).map_err(|_| Error::Integrity("a metadata journal entry is malformed".into()))
}

/// Packs a journal entry's chunk-index changes point into: the journal may
/// reach the cloud only after they do.
pub fn packs_of_entry(bytes: &[u8]) -> Result<Vec<PackId>> {
    Ok(decode_entry(bytes)?
        .into_iter()
        .filter(|c| c.table == Table::Chunks)
        .filter_map(|c| c.value)
        .filter_map(|v| postcard::from_bytes::<super::ChunkEntry>(&v).ok())
        .map(|e| e.loc.pack)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_and_bind_their_names() {
        let k = MetaKeys::new(&Key32::random(), "repo");
        let obj = JournalObject { first: 5, last: 6, prev: [1; 32], entries: vec![(5, vec![1]), (6, vec![2])] };
        let sealed = k.seal_journal(&obj);
        assert_eq!(k.open_journal(&journal_name(5), &sealed).unwrap().entries, obj.entries);
        assert!(k.open_journal(&journal_name(7), &sealed).is_err(), "moved to another name");
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(k.open_journal(&journal_name(5), &bad).is_err(), "altered");
        let other = MetaKeys::new(&Key32::random(), "repo");
        assert!(other.open_journal(&journal_name(5), &sealed).is_err(), "another vault's key");

        let root = Root { generation: 3, head_seq: 6, head_hash: hash(&sealed), ..Default::default() };
        assert_eq!(k.open_root(&k.seal_root(&root)).unwrap(), root);

        let mut recs = Vec::new();
        encode_record(&mut recs, Table::Inodes, b"k1", b"v1");
        encode_record(&mut recs, Table::Meta, b"next_ino", &[0; 8]);
        let name = snapshot_part_name(6, 0);
        let back = k.open_snapshot_part(&name, &k.seal_snapshot_part(&name, &recs)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].table, back[0].key.as_slice()), (Table::Inodes, &b"k1"[..]));
        assert!(k.open_snapshot_part(&snapshot_part_name(6, 1), &k.seal_snapshot_part(&name, &recs)).is_err());
    }
}
