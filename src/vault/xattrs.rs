//! Extended attributes, stored in the inode record.

use super::{MAX_XATTR_NAME, MAX_XATTR_VALUE, Vault, XattrMode};
use crate::error::{Error, Result};
use crate::metadata::{InodeRecord, Timespec};

impl Vault {
    fn xattr_ns_ok(name: &[u8]) -> Result<()> {
        if name.is_empty() || name.len() > MAX_XATTR_NAME {
            return Err(if name.is_empty() { Error::Invalid("empty xattr name") } else { Error::Range });
        }
        for ns in [&b"user."[..], b"trusted.", b"security."] {
            if name.starts_with(ns) {
                return Ok(());
            }
        }
        Err(Error::NotSupported)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], mode: XattrMode) -> Result<()> {
        Self::xattr_ns_ok(name)?;
        if value.len() > MAX_XATTR_VALUE {
            return Err(Error::TooBig);
        }
        let _ns = self.ns.lock();
        let now = Timespec::now();
        self.update_inode(
            ino,
            |r| {
                let pos = r.xattrs.iter().position(|(n, _)| n == name);
                match (pos, mode) {
                    (Some(_), XattrMode::Create) => return Err(Error::Exists),
                    (None, XattrMode::Replace) => return Err(Error::NoAttr),
                    (Some(i), _) => r.xattrs[i].1 = value.to_vec(),
                    (None, _) => r.xattrs.push((name.to_vec(), value.to_vec())),
                }
                r.ctime = now;
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// The inode's record: the open file's working copy if there is one.
    fn current_record(&self, ino: u64) -> Result<InodeRecord> {
        match self.open_state(ino) {
            Some(s) => Ok(s.lock().rec.clone()),
            None => self.load(ino),
        }
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let rec = self.current_record(ino)?;
        rec.xattrs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or(Error::NoAttr)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let rec = self.current_record(ino)?;
        Ok(rec.xattrs.into_iter().map(|(n, _)| n).collect())
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let _ns = self.ns.lock();
        let now = Timespec::now();
        self.update_inode(
            ino,
            |r| {
                let i = r.xattrs.iter().position(|(n, _)| n == name).ok_or(Error::NoAttr)?;
                r.xattrs.remove(i);
                r.ctime = now;
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }
}
