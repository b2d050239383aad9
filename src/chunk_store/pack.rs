//! Pack object format (see docs/STORAGE_FORMAT.md):
//! `envelope_0 ‖ … ‖ envelope_n ‖ sealed_header ‖ header_len (u32 LE) ‖ "FVP1"`.
//! The header lists `(chunk id, offset, len)` and is sealed under the pack key
//! with AAD `"fogvault pack" ‖ pack id`, so the cloud sees neither chunk
//! boundaries nor ids.

use serde::{Deserialize, Serialize};

use crate::crypto::{self, ChunkId, Key32};
use crate::error::{Error, Result};

pub const TRAILER_MAGIC: &[u8; 4] = b"FVP1";
pub const TRAILER_LEN: u64 = 8;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        crypto::random_bytes(&mut b);
        PackId(b)
    }
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(PackId(v.try_into().ok()?))
    }
    /// Object name in the store: `packs/<first 2 hex>/<32 hex>`.
    pub fn object_name(&self) -> String {
        // Built by hand: `format!` here was ~1% of the daemon's CPU in a
        // cold tree read (one name per pack read).
        let h = self.hex();
        let mut name = String::with_capacity(9 + h.len());
        name.push_str("packs/");
        name.push_str(&h[..2]);
        name.push('/');
        name.push_str(&h);
        name
    }
    pub fn from_object_name(name: &str) -> Option<Self> {
        PackId::from_hex(name.rsplit('/').next()?)
    }
}

impl std::fmt::Debug for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackId({})", self.hex())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub len: u32,
}

fn header_aad(pack: &PackId) -> Vec<u8> {
    let mut aad = b"fogvault pack".to_vec();
    aad.extend_from_slice(&pack.0);
    aad
}

pub fn encode_header_and_trailer(key: &Key32, pack: &PackId, entries: &[PackEntry]) -> Vec<u8> {
    let plain = postcard::to_allocvec(entries).expect("serializing pack entries cannot fail");
    let mut out = crypto::seal(key, &header_aad(pack), &plain);
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(TRAILER_MAGIC);
    out
}

/// Header length from the last 8 bytes of a pack.
pub fn parse_trailer(trailer: &[u8]) -> Result<u32> {
    if trailer.len() != TRAILER_LEN as usize || &trailer[4..] != TRAILER_MAGIC {
        return Err(Error::Integrity("pack trailer is damaged".into()));
    }
    Ok(u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")))
}

pub fn decode_header(key: &Key32, pack: &PackId, sealed: &[u8]) -> Result<Vec<PackEntry>> {
    let plain = crypto::open(key, &header_aad(pack), sealed)
        .map_err(|_| Error::Integrity(format!("pack {} header fails authentication", pack.hex())))?;
    postcard::from_bytes(&plain).map_err(|_| Error::Integrity(format!("pack {} header is malformed", pack.hex())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_binds_pack_id_and_detects_tampering() {
        let key = Key32::random();
        let pack = PackId::random();
        let entries = vec![
            PackEntry { id: ChunkId([1; 32]), offset: 0, len: 100 },
            PackEntry { id: ChunkId([2; 32]), offset: 100, len: 4_000_000 },
        ];
        let tail = encode_header_and_trailer(&key, &pack, &entries);
        let hlen = parse_trailer(&tail[tail.len() - 8..]).unwrap() as usize;
        assert_eq!(hlen + 8, tail.len());
        let sealed = &tail[..hlen];
        assert_eq!(decode_header(&key, &pack, sealed).unwrap(), entries);
        // Moved to another pack, altered, or read with another key: refused.
        assert!(decode_header(&key, &PackId::random(), sealed).is_err());
        let mut bad = sealed.to_vec();
        bad[hlen / 2] ^= 1;
        assert!(decode_header(&key, &pack, &bad).is_err());
        assert!(decode_header(&Key32::random(), &pack, sealed).is_err());
        assert!(parse_trailer(b"\0\0\0\0FVP2").is_err());
        assert!(parse_trailer(b"short").is_err());
    }

    #[test]
    fn object_names_roundtrip() {
        let p = PackId::random();
        let name = p.object_name();
        assert!(name.starts_with(&format!("packs/{}/", &p.hex()[..2])));
        assert_eq!(PackId::from_object_name(&name), Some(p));
        assert_eq!(PackId::from_object_name("packs/zz/not-hex"), None);
    }
}
