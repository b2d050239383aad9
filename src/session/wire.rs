//! Byte-level reading and writing of handshake messages: fixed-size fields
//! and u8-length-prefixed identities. Every read is bounds-checked; a short
//! or oversized message is `Malformed`, never a panic.

use bls12_381::G1Affine;

pub const MAGIC: &[u8; 4] = b"FVHS";
pub const VERSION: u8 = 1;
pub const MAX_ID_LEN: usize = 128;

pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn id(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        if n == 0 || n > MAX_ID_LEN {
            return None;
        }
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// A G1 point: must decode, lie in the subgroup, and not be the identity.
    pub fn point(&mut self) -> Option<Option<G1Affine>> {
        let b: [u8; 48] = self.array()?;
        let p: Option<G1Affine> = G1Affine::from_compressed(&b).into();
        Some(p.filter(|p| !bool::from(p.is_identity())))
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

pub fn header(kind: u8) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.push(VERSION);
    v.push(kind);
    v
}

pub fn put_id(out: &mut Vec<u8>, id: &str) {
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
}
