//! The one place where library errors become errno values.

use fuser::Errno;

use crate::error::Error;

pub fn errno(e: &Error) -> Errno {
    let code = match e {
        Error::NotFound => libc::ENOENT,
        Error::Exists => libc::EEXIST,
        Error::NotDir => libc::ENOTDIR,
        Error::IsDir => libc::EISDIR,
        Error::NotEmpty => libc::ENOTEMPTY,
        Error::Invalid(_) => libc::EINVAL,
        Error::NotPermitted => libc::EPERM,
        Error::NameTooLong => libc::ENAMETOOLONG,
        Error::NoAttr => libc::ENODATA,
        Error::Range => libc::ERANGE,
        Error::NotSupported => libc::EOPNOTSUPP,
        Error::TooBig => libc::EFBIG,
        Error::CrossDevice => libc::EXDEV,
        Error::TooManyLinks => libc::EMLINK,
        Error::NoSpace => libc::ENOSPC,
        Error::Locked | Error::AccessDenied => libc::EACCES,
        Error::Integrity(_) | Error::Store(_) | Error::Metadata(_) | Error::Repo(_) | Error::WrongPassphrase => {
            libc::EIO
        }
        Error::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
    };
    Errno::from_i32(code)
}
