//! Ranged reads of local pack files (staged packs, the local-directory
//! store) into one reused buffer per thread, on the calling thread.
//!
//! Large reads bypass the page cache (`O_DIRECT`): a pack's ciphertext is
//! read once, straight into our buffer, and authenticated there; caching it
//! in the kernel too would cost a copy per byte and memory for bytes nobody
//! reads again (decrypted chunks have their own cache). Small reads (a small
//! file's envelope) stay buffered, so that the kernel's read-ahead of the
//! pack serves the neighbouring files of a tree being read.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Reads of at least this many bytes bypass the page cache.
const DIRECT_MIN: usize = 256 << 10;
/// `O_DIRECT` needs offsets, lengths and buffer addresses aligned to the
/// device's logical block; 4 KiB covers every common device.
const ALIGN: usize = 4096;
/// A thread keeps a buffer up to this size between reads (one maximal span
/// plus alignment); a larger one is freed after use.
const KEEP_MAX: usize = (24 << 20) + 2 * ALIGN;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Bytes `start..start + len` of the file at `path`, handed to `f`. A file
/// shorter than that is `UnexpectedEof`.
pub fn read_path<R>(path: &Path, start: u64, len: usize, f: impl FnOnce(io::Result<&[u8]>) -> R) -> R {
    with_buffer(f, |buf| {
        if len >= DIRECT_MIN {
            match read_direct(buf, path, start, len) {
                // The file system has no O_DIRECT (tmpfs), or the device
                // wants a larger alignment: read through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                r => return r,
            }
        }
        read_buffered(buf, &File::open(path)?, start, len)
    })
}

/// [`read_path`] of a file already open (a staged pack), through the page cache.
pub fn read_file<R>(file: &File, start: u64, len: usize, f: impl FnOnce(io::Result<&[u8]>) -> R) -> R {
    with_buffer(f, |buf| read_buffered(buf, file, start, len))
}

/// Runs `read` on this thread's buffer and `f` on the bytes it read. Not
/// re-entrant: `f` must not read through this module again.
fn with_buffer<R>(
    f: impl FnOnce(io::Result<&[u8]>) -> R,
    read: impl FnOnce(&mut Vec<u8>) -> io::Result<Range<usize>>,
) -> R {
    BUFFER.with_borrow_mut(|buf| {
        let range = read(buf);
        let out = f(range.map(|r| &buf[r]));
        if buf.len() > KEEP_MAX {
            *buf = Vec::new();
        }
        out
    })
}

/// Grows `buf` to at least `n` bytes (zeroed once, then reused as is).
fn ensure_len(buf: &mut Vec<u8>, n: usize) {
    if buf.len() < n {
        buf.resize(n, 0);
    }
}

fn read_buffered(buf: &mut Vec<u8>, file: &File, start: u64, len: usize) -> io::Result<Range<usize>> {
    ensure_len(buf, len);
    file.read_exact_at(&mut buf[..len], start)?;
    Ok(0..len)
}

fn read_direct(buf: &mut Vec<u8>, path: &Path, start: u64, len: usize) -> io::Result<Range<usize>> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)?;
    let aligned_start = start - start % ALIGN as u64;
    let head = (start - aligned_start) as usize;
    let want = head + len;
    let aligned_len = want.next_multiple_of(ALIGN);
    ensure_len(buf, aligned_len + ALIGN);
    let pad = buf.as_ptr().align_offset(ALIGN);
    let dst = &mut buf[pad..pad + aligned_len];
    let mut got = 0;
    // The last block of the file may be partial: a short read there is fine
    // as long as the wanted bytes are in.
    while got < want {
        match file.read_at(&mut dst[got..], aligned_start + got as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pad + head..pad + want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn reads_any_range_direct_or_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let data = pattern(3 * DIRECT_MIN + 12_345);
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        for (start, len) in [
            (0, 10),
            (4095, 2),
            (1, DIRECT_MIN),
            (ALIGN as u64, DIRECT_MIN * 2),
            (17, data.len() - 17),
            (0, data.len()),
            (data.len() as u64 - DIRECT_MIN as u64, DIRECT_MIN),
        ] {
            let want = &data[start as usize..start as usize + len];
            read_path(&path, start, len, |r| assert_eq!(r.unwrap(), want, "path {start}+{len}"));
            read_file(&file, start, len, |r| assert_eq!(r.unwrap(), want, "file {start}+{len}"));
        }
    }

    #[test]
    fn a_short_or_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let data = pattern(DIRECT_MIN + 100);
        std::fs::write(&path, &data).unwrap();
        let near_end = data.len() as u64 - 50;
        for len in [200, DIRECT_MIN + 1] {
            let kind = read_path(&path, near_end, len, |r| r.unwrap_err().kind());
            assert_eq!(kind, io::ErrorKind::UnexpectedEof, "{len}");
        }
        let kind = read_path(&dir.path().join("gone"), 0, DIRECT_MIN, |r| r.unwrap_err().kind());
        assert_eq!(kind, io::ErrorKind::NotFound);
    }
}
