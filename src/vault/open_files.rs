//! Open regular files: open, read, write, flush, fsync, release and
//! fallocate, and the commit of files left with bytes but no handle.

use std::sync::Arc;

use super::file::{CommitCtx, FileState, Piece};
use super::{DropPrivs, FileRef, MAX_FILE_SIZE, ReadBuf, Vault, dirty};
use crate::crypto::ChunkId;
use crate::error::{Error, Result};

/// Bytes `from..from + len` of chunk `id`; an index that says the chunk is
/// longer than it is gets an integrity error, not a panic.
fn piece_of<'a>(chunk: &'a [u8], id: &ChunkId, from: usize, len: usize) -> Result<&'a [u8]> {
    chunk
        .get(from..from + len)
        .ok_or_else(|| Error::Integrity(format!("chunk {} is shorter than its extent", &id.hex()[..16])))
}

impl Vault {
    /// Open a regular file; `truncate` for O_TRUNC.
    pub fn open_file(&self, ino: u64, truncate: bool) -> Result<()> {
        let _ns = self.ns.lock();
        let s = self.state(ino)?;
        let mut st = Self::settled(&s);
        st.opens += 1;
        if truncate && st.size > 0 {
            st.set_size(&self.chunks, 0)?;
        }
        Ok(())
    }

    /// Commit a file's pending bytes; `durable` waits for stable storage.
    pub fn flush(&self, ino: u64, durable: bool) -> Result<()> {
        let Some(s) = self.open_state(ino) else {
            return Ok(());
        };
        let mut st = Self::settled(&s);
        if st.needs_commit() {
            st.commit(ino, &self.ctx(), false, |_| Ok(()))?;
        }
        if durable {
            self.sync_file(ino, &mut st)?;
        }
        Ok(())
    }

    /// Make what a file's handles did durable: its commits, and also a
    /// deferred change that touched it alone (its creation by this handle,
    /// a chmod).
    fn sync_file(&self, ino: u64, st: &mut FileState) -> Result<()> {
        // A commit made by another write (not synced) may hold this file's
        // creation or attributes: make that durable too.
        if st.unsynced || self.meta.inode_deferred(ino) || self.meta.commit_unsynced() {
            self.durable()?;
            st.unsynced = false;
        }
        Ok(())
    }

    /// Make everything committed so far durable (fsync on any file).
    pub fn fsync(&self, ino: u64) -> Result<()> {
        self.flush(ino, false)?;
        self.durable()
    }

    /// Last close of a handle: commit, and free the inode if it was unlinked.
    pub fn release(&self, ino: u64) -> Result<()> {
        let Some(s) = self.open_state(ino) else {
            return Ok(());
        };
        let result = {
            let mut st = Self::settled(&s);
            st.opens = st.opens.saturating_sub(1);
            if st.opens == 0 && st.rec.nlink == 0 {
                st.freed = true;
                let rec = st.rec.clone();
                let r = self.meta.write(|tx| {
                    // Free what LMDB holds (the committed extents).
                    let stored = tx.inode(ino)?.unwrap_or(rec);
                    self.free_inode_in(tx, ino, &stored)?;
                    tx.remove_orphan(ino)
                });
                drop(st);
                self.files.lock().remove(&ino);
                return r;
            }
            let r = if st.needs_commit() { st.commit(ino, &self.ctx(), false, |_| Ok(())) } else { Ok(()) };
            r.and_then(|()| self.sync_file(ino, &mut st))
        };
        let _ns = self.ns.lock();
        self.maybe_evict(ino);
        result
    }

    pub fn read(&self, ino: u64, off: u64, len: usize) -> Result<ReadBuf> {
        let s = self.state_outside_ns(ino)?;
        let mut st = s.lock();
        let (plan, overlay) = st.read_plan(off, len);
        // Sequential reader: fetch and decrypt the next chunks on the prefetch
        // threads while this one is copied out.
        if st.last_read_end == off {
            let (from, ra) = (off + len as u64, self.chunks.read_ahead());
            let ahead = st.chunks_ahead(from, ra.window + ra.horizon);
            let near = ahead.iter().take_while(|(_, start)| *start < from + ra.window).count();
            let ids: Vec<ChunkId> = ahead.into_iter().map(|(id, _)| id).collect();
            self.chunks.prefetch(&ids, near);
        }
        st.last_read_end = off + len as u64;
        let guard = if overlay {
            Some(st)
        } else {
            drop(st);
            None
        };
        if let (None, [Piece::Chunk { id, from, len }]) = (&guard, plan.as_slice()) {
            let chunk = self.chunks.fetch(id)?;
            piece_of(&chunk, id, *from, *len)?;
            return Ok(ReadBuf::Shared(chunk, *from..from + len));
        }
        let total: usize = plan
            .iter()
            .map(|p| match p {
                Piece::Zeros(n) => *n,
                Piece::Chunk { len, .. } => *len,
            })
            .sum();
        let mut out = dirty::buffer_for(total);
        for p in plan {
            match p {
                Piece::Zeros(n) => out.resize(out.len() + n, 0),
                Piece::Chunk { id, from, len } => {
                    let data = self.chunks.fetch(&id)?;
                    out.extend_from_slice(piece_of(&data, &id, from, len)?);
                }
            }
        }
        if let Some(st) = guard {
            st.overlay_dirty(off, &mut out);
        }
        Ok(ReadBuf::Owned(out))
    }

    /// `write(2)` of `data` at `off` (see `DropPrivs::WRITE`).
    pub fn write(&self, ino: u64, off: u64, data: &[u8]) -> Result<usize> {
        self.write_dropping(ino, off, data, DropPrivs::WRITE)
    }

    /// Write `data` at `off`, dropping `privs` (see `DropPrivs`).
    pub fn write_dropping(&self, ino: u64, off: u64, data: &[u8], privs: DropPrivs) -> Result<usize> {
        if off.checked_add(data.len() as u64).is_none_or(|end| end > MAX_FILE_SIZE) {
            return Err(Error::TooBig);
        }
        let (s, mut st) = loop {
            let s = self.state_outside_ns(ino)?;
            let st = s.lock_arc();
            // The state may have been evicted between lookup and lock (writes
            // with no open handle, e.g. mmap writeback): retry with the live one.
            if self.files.lock().get(&ino).is_some_and(|cur| Arc::ptr_eq(cur, &s)) {
                break (s, st);
            }
        };
        st.write(off, data, privs);
        if st.dirty.bytes() > self.dirty_limit {
            // A streaming writer hands its buffer to a background commit and
            // carries on. One more than a buffer ahead, it waits for that
            // commit and hands over the next buffer: committing here instead
            // would stop the writer and leave the background idle. Anything
            // else (writes out of order), and any write after a background
            // commit failed, commits here: its error must reach the writer.
            if st.inflight_done().is_some() {
                if st.dirty.bytes() <= 2 * self.dirty_limit {
                    return Ok(data.len());
                }
                drop(st);
                st = Self::settled(&s);
            }
            if let Some((_, buf)) = st.begin_stream() {
                drop(st);
                self.spawn_stream_commit(ino, s, buf);
            } else {
                st.commit(ino, &self.ctx(), true, |_| Ok(()))?;
            }
        }
        Ok(data.len())
    }

    fn spawn_stream_commit(&self, ino: u64, s: FileRef, buf: Arc<Vec<u8>>) {
        let (chunks, meta, chunker) = (Arc::clone(&self.chunks), Arc::clone(&self.meta), self.chunker.clone());
        let state = Arc::clone(&s);
        let job = move || {
            let _gc = chunks.commit_guard();
            let cx = CommitCtx { chunks: &chunks, chunker: &chunker, meta: &meta };
            let result = FileState::chunk_stream(&cx, &buf);
            if let Err(e) = state.lock().finish_stream(ino, &cx, result) {
                // The bytes went back to the dirty map; the next commit retries
                // them and reports a persistent failure to the application.
                tracing::warn!(error = %e, "background commit failed; will retry");
            }
            if let Ok(buf) = Arc::try_unwrap(buf) {
                dirty::recycle(buf);
            }
        };
        if let Err(e) = std::thread::Builder::new().name("fogvault-commit".into()).spawn(job) {
            // No thread: give the bytes back so nothing waits on this stream.
            let _ = s.lock().finish_stream(ino, &self.ctx(), Err(Error::Io(e)));
        }
    }

    /// `fallocate`: mode 0 extends the size; KEEP_SIZE is a no-op (we never
    /// preallocate); other modes are not supported.
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, keep_size: bool) -> Result<()> {
        let end = off.checked_add(len).ok_or(Error::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(Error::TooBig);
        }
        if keep_size {
            return Ok(());
        }
        let s = self.state_outside_ns(ino)?;
        let mut st = Self::settled(&s);
        if end > st.size {
            st.set_size(&self.chunks, end)?;
        }
        Ok(())
    }

    /// Commit files that hold uncommitted bytes but no open handle (mmap
    /// writeback after close), and free spare write buffers when no file is
    /// being written. Called periodically by the mount loop.
    pub fn flush_idle(&self) -> Result<()> {
        let idle: Vec<(u64, FileRef)> = self.files.lock().iter().map(|(k, v)| (*k, Arc::clone(v))).collect();
        if idle.iter().all(|(_, s)| s.try_lock().is_some_and(|st| st.dirty.is_empty() && st.inflight_done().is_none()))
        {
            dirty::release_spares(); // nobody is writing
        }
        // One file that cannot commit (a locked folder, a damaged chunk) must
        // not keep the others' bytes in RAM: carry on, report the first error.
        let mut first_err = None;
        for (ino, s) in idle {
            {
                let mut st = s.lock();
                if st.opens > 0 || !st.needs_commit() || st.inflight_done().is_some() {
                    continue;
                }
                if let Err(e) = st.commit(ino, &self.ctx(), false, |_| Ok(())) {
                    first_err.get_or_insert(e);
                    continue;
                }
            }
            let _ns = self.ns.lock();
            self.maybe_evict(ino);
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::FileKind;
    use crate::vault::{Caller, ROOT_INO};

    const ME: Caller = Caller { uid: 0, gid: 0 };

    /// The idle flusher takes its list of files, then an unlink frees one of
    /// them (last link, no handle, uncommitted bytes from a write without a
    /// handle, as mmap writeback does): committing that stale state must not
    /// write the dead inode back or drop its chunks' references again.
    #[test]
    fn a_state_freed_by_unlink_is_never_committed_again() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repo::init(dir.path().join("repo").to_str().unwrap(), b"pw").unwrap();
        let cache = dir.path().join("cache");
        let v = Vault::open(&repo, &cache, ME).unwrap();
        let keep = v.create_node(ME, ROOT_INO, b"keep", FileKind::File, 0o600, 0, b"").unwrap();
        let gone = v.create_node(ME, ROOT_INO, b"gone", FileKind::File, 0o600, 0, b"").unwrap();
        let data = vec![7u8; 50_000];
        for a in [&keep, &gone] {
            v.open_file(a.ino, false).unwrap();
            v.write(a.ino, 0, &data).unwrap(); // the same bytes: shared chunks
            v.release(a.ino).unwrap();
        }
        v.write(gone.ino, 50_000, b"late").unwrap(); // no handle open
        let stale = v.files.lock().get(&gone.ino).cloned().expect("state of a file with dirty bytes");
        v.unlink(ROOT_INO, b"gone").unwrap();
        stale.lock().commit(gone.ino, &v.ctx(), false, |_| Ok(())).unwrap();
        v.shutdown().unwrap();
        drop(v);
        let stats = crate::tools::stats(&repo, &cache).unwrap();
        assert_eq!(stats.files, 1, "the freed inode was written back");
        assert_eq!((stats.chunks, stats.unique_bytes), (1, 50_000), "only keep's chunk is live");
        let v = Vault::open(&repo, &cache, ME).unwrap();
        v.open_file(keep.ino, false).unwrap();
        assert_eq!(&v.read(keep.ino, 0, 60_000).unwrap()[..], &data[..]);
        v.release(keep.ino).unwrap();
        v.shutdown().unwrap();
    }
}
