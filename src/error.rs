//! The library's error type. Each layer reports what went wrong in its own
//! terms; `fuse_adapter::errno` maps these to errno values in one place and
//! `main.rs` maps them to exit codes.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("operation not permitted")]
    NotPermitted,
    #[error("name too long")]
    NameTooLong,
    #[error("no such attribute")]
    NoAttr,
    #[error("attribute buffer too small")]
    Range,
    #[error("operation not supported")]
    NotSupported,
    #[error("file too large")]
    TooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("cross-device link")]
    CrossDevice,
    /// The record belongs to a vault folder whose key no session has supplied.
    #[error("vault folder is locked (no session holds its key)")]
    Locked,
    /// The caller's session does not grant this access.
    #[error("access denied by the vault policy")]
    AccessDenied,
    #[error("no space left in the store or cache")]
    NoSpace,
    /// Stored data failed authentication or is missing: never hand out bytes.
    #[error("integrity failure: {0}")]
    Integrity(String),
    #[error("wrong passphrase (the repository config could not be unsealed)")]
    WrongPassphrase,
    #[error("{0}")]
    Repo(String),
    #[error("object store: {0}")]
    Store(String),
    #[error("metadata database: {0}")]
    Metadata(String),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classify an I/O error: a full disk is reported as `NoSpace`, so writers
    /// see `ENOSPC` rather than a generic I/O failure.
    pub fn from_io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace
        } else {
            Error::Io(e)
        }
    }
}
