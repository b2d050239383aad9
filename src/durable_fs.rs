//! Directory entries that survive a machine crash. POSIX makes a new entry
//! durable only when the directory holding it is fsynced; ext4 and XFS
//! happen to commit it with the next fsync of anything, other file systems
//! need not.

use std::fs::File;
use std::io;
use std::path::Path;

/// `std::fs::create_dir_all`, then fsync the parent of every directory it
/// created, so that the new directories are still there after a crash.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = path;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p);
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(path)?;
    for dir in missing.iter().rev() {
        sync_dir(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Make the entries of directory `path` durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_level_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join("a/file"), b"x").unwrap();
        assert!(create_dir_all(&dir.path().join("a/file/d")).is_err());
    }
}
