//! The access gate: who may touch which vault folder. The vault asks it
//! before any operation inside a folder; the session layer implements it.

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

pub trait AccessGate: Send + Sync {
    /// `Ok` if `uid` may have `access` to vault folder `domain` (never asked for
    /// domain 0, where POSIX modes alone apply); `Err(AccessDenied)` otherwise.
    fn check(&self, uid: u32, domain: u32, access: Access) -> Result<()>;
}
