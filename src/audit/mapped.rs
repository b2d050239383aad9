//! An append-only file of frames written through a shared memory map.
//!
//! Why: an audit record must reach the kernel before the operation it
//! describes is answered, so that a `kill -9` of the daemon cannot lose it.
//! A `write(2)` per record did that but cost ~5 µs of the data path's CPU in
//! context (docs/BENCHMARKS.md). A store into a `MAP_SHARED` mapping lands
//! in the same page cache without a system call and outlives the process
//! just the same; `fdatasync` of the file still makes it crash-durable.
//!
//! The file is allocated ahead of the frames with `posix_fallocate`. On a
//! filesystem that allocates in place (ext4, XFS, tmpfs) a full disk is then
//! an error here, not a `SIGBUS` on a store into a hole; copy-on-write and
//! network filesystems (btrfs with snapshots, ZFS, NFS) give no such promise,
//! so the cache directory belongs on the former (docs/ARCHITECTURE.md). The
//! file is mapped one window at a time. Bytes after the last frame are zero,
//! and readers stop at a zero length. A clean close trims the file back to
//! its frames.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{Ordering, fence};

use memmap2::{MmapMut, MmapOptions};

/// Bytes allocated and mapped at a time (~20,000 audit records).
const WINDOW: u64 = 4 << 20;

pub struct MappedAppend {
    file: File,
    /// Maps file bytes `map_at..map_at + map.len()`.
    map: Option<MmapMut>,
    map_at: u64,
    /// Bytes of complete frames.
    end: u64,
    /// The file's length (what `posix_fallocate` reserved).
    allocated: u64,
}

impl MappedAppend {
    /// `file` holds `end` bytes of frames and nothing after them.
    pub fn new(file: File, end: u64) -> io::Result<Self> {
        let allocated = file.metadata()?.len();
        debug_assert_eq!(allocated, end, "the caller trims the file to its frames");
        Ok(MappedAppend { file, map: None, map_at: end, end, allocated })
    }

    /// Bytes of complete frames; everything before this offset may be read.
    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Append `len u32 LE ‖ body`. The length goes in last: the uploader reads
    /// only up to `end` (taken under the log's lock), and another process
    /// reading the live file (`fogvault audit`) almost always sees either no
    /// frame or all of it (best effort: the length is not an atomic store).
    pub fn append_frame(&mut self, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let need = 4 + u64::from(len);
        let (at, map) = self.window_for(need)?;
        map[at + 4..at + 4 + body.len()].copy_from_slice(body);
        fence(Ordering::Release);
        map[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.end += need;
        Ok(())
    }

    /// The mapped window, moved on if `need` more bytes do not fit in it,
    /// and where in it the next frame starts.
    fn window_for(&mut self, need: u64) -> io::Result<(usize, &mut MmapMut)> {
        let fits = self.map.as_ref().is_some_and(|m| self.end + need <= self.map_at + m.len() as u64);
        if !fits {
            let len = self.allocate(need)?;
            self.map = None;
            // SAFETY: the window covers file bytes `end..end + len`, all of
            // them allocated above (so no store lands in a hole or past the
            // end of the file). Only this struct changes the file's length,
            // and `trim` unmaps before it cuts. The file is the daemon's own
            // (mode 0600 in its cache directory); another process truncating
            // it under the daemon is outside what the daemon can defend.
            let map = unsafe { MmapOptions::new().offset(self.end).len(len as usize).map_mut(&self.file)? };
            self.map = Some(map);
            self.map_at = self.end;
        }
        let at = usize::try_from(self.end - self.map_at).expect("a window fits in memory");
        Ok((at, self.map.as_mut().expect("mapped above")))
    }

    /// Make sure `end..end + len` is allocated for some `len ≥ need`; returns `len`.
    fn allocate(&mut self, need: u64) -> io::Result<u64> {
        let want = WINDOW.max(need);
        if self.end + want <= self.allocated {
            return Ok(want);
        }
        let reserve = |upto: u64| {
            nix::fcntl::posix_fallocate(self.file.as_fd(), self.allocated as i64, (upto - self.allocated) as i64)
                .map_err(io::Error::from)
        };
        match reserve(self.end + want) {
            Ok(()) => {
                self.allocated = self.end + want;
                Ok(want)
            }
            // Near a full disk: a window of exactly what this frame needs.
            Err(_) if self.end + need > self.allocated => {
                reserve(self.end + need)?;
                self.allocated = self.end + need;
                Ok(need)
            }
            Err(_) => Ok(self.allocated - self.end),
        }
    }

    /// Cut the allocated tail off the file (a clean close).
    pub fn trim(&mut self) -> io::Result<()> {
        self.map = None;
        self.file.set_len(self.end)?;
        self.allocated = self.end;
        Ok(())
    }
}

impl Drop for MappedAppend {
    fn drop(&mut self) {
        if let Err(e) = self.trim() {
            tracing::warn!(error = %e, "could not trim the audit log's preallocated tail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> MappedAppend {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).unwrap();
        let end = f.metadata().unwrap().len();
        MappedAppend::new(f, end).unwrap()
    }

    #[test]
    fn frames_reach_the_file_before_close_and_the_tail_is_trimmed_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut a = open(&path);
        a.append_frame(b"first").unwrap();
        a.append_frame(b"second!").unwrap();
        // Visible to a reader while still open, followed by zeros.
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 >= WINDOW);
        assert_eq!(&bytes[..9], b"\x05\0\0\0first");
        assert_eq!(&bytes[9..20], b"\x07\0\0\0second!");
        assert!(bytes[20..].iter().all(|&b| b == 0));
        assert_eq!(a.end(), 20);
        drop(a);
        assert_eq!(std::fs::read(&path).unwrap().len(), 20);
        // Reopened, it appends after what is there.
        let mut a = open(&path);
        a.append_frame(b"x").unwrap();
        drop(a);
        assert_eq!(&std::fs::read(&path).unwrap()[20..], b"\x01\0\0\0x");
    }

    #[test]
    fn frames_cross_windows_and_large_frames_get_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut a = open(&path);
        let body = vec![7u8; 300_000];
        let mut expect = Vec::new();
        for i in 0..30u8 {
            let mut b = body.clone();
            b[0] = i;
            a.append_frame(&b).unwrap();
            expect.extend_from_slice(&(b.len() as u32).to_le_bytes());
            expect.extend_from_slice(&b);
        }
        let big = vec![9u8; (WINDOW + 5) as usize];
        a.append_frame(&big).unwrap();
        expect.extend_from_slice(&(big.len() as u32).to_le_bytes());
        expect.extend_from_slice(&big);
        drop(a);
        assert!(std::fs::read(&path).unwrap() == expect);
    }
}
