//! The bytes of one read, handed to the FUSE reply without another copy
//! when they lie inside one cached chunk. A read that spans chunks (most
//! 1 MiB reads of a large file: chunk boundaries fall anywhere) is
//! assembled in a buffer from the vault's spare pool and given back to it
//! when the reply has been sent: a fresh 1 MiB allocation costs a page
//! fault per 4 KiB touched.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

pub enum ReadBuf {
    /// A range of one decrypted chunk, shared with the chunk cache.
    Shared(Arc<Vec<u8>>, Range<usize>),
    /// Bytes assembled from several pieces (chunks, holes, unsaved writes).
    Owned(Vec<u8>),
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if let ReadBuf::Owned(v) = self {
            super::dirty::recycle(std::mem::take(v));
        }
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Shared(chunk, range) => &chunk[range.clone()],
            ReadBuf::Owned(v) => v,
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> PartialEq<T> for ReadBuf {
    fn eq(&self, other: &T) -> bool {
        **self == *other.as_ref()
    }
}

impl fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
