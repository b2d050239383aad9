//! An open (or dirty) regular file: committed extents, dirty bytes, and the
//! commit that turns dirty bytes into chunks.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::DropPrivs;
use super::chunks::ChunkIo;
use super::dirty::DirtyMap;
use crate::chunking::Chunker;
use crate::crypto::ChunkId;
use crate::error::{Error, Result};
use crate::metadata::{Extent, InodeRecord, Metadata, Timespec, WriteTx};

/// The extended attribute holding file capabilities (`setcap`).
const SECURITY_CAPABILITY: &[u8] = b"security.capability";

pub struct FileState {
    /// Working record: attributes and the extent list as of the last commit
    /// plus truncations since. `rec.size` = sum of `rec.extents`.
    pub rec: InodeRecord,
    /// Extent list as stored in LMDB: reference counts are diffed against it.
    base: Vec<Extent>,
    starts: Vec<u64>,
    /// Logical size, including dirty bytes and unwritten holes.
    pub size: u64,
    pub dirty: DirtyMap,
    pub opens: u32,
    /// Attributes changed in memory (e.g. mtime by a write) since the last commit.
    pub attrs_dirty: bool,
    /// Committed but not yet durable (a commit under memory pressure): the
    /// next close must make it durable even if nothing is dirty.
    pub unsynced: bool,
    /// End of the last read, to recognise sequential readers.
    pub last_read_end: u64,
    /// The last chunk ends at a natural content-defined cut (a streaming
    /// commit kept the tail dirty), so an append need not re-read it.
    tail_natural: bool,
    /// A streamed buffer being chunked in the background (see `begin_stream`).
    inflight: Option<Inflight>,
    /// The last background commit failed (its bytes went back to the dirty
    /// map): the writer commits in the foreground until one succeeds, so
    /// that the error (e.g. `ENOSPC`) reaches it.
    stream_failed: bool,
    /// The inode was freed (its last link went while nobody had it open, or
    /// the last close of an unlinked file): a holder of a stale reference
    /// (the idle flusher) must not commit it again, which would decrement
    /// its chunks' references a second time and write a dead inode back.
    pub freed: bool,
}

/// Bytes `[start, start + data.len())` of a streaming writer, taken out of the
/// dirty map and being chunked off the request path. Reads see them (below
/// newer dirty bytes); everything that changes extents waits for `done`.
pub struct Inflight {
    pub start: u64,
    pub data: Arc<Vec<u8>>,
    pub done: Arc<Done>,
}

/// A one-shot completion flag.
#[derive(Default)]
pub struct Done {
    flag: parking_lot::Mutex<bool>,
    cv: parking_lot::Condvar,
}

impl Done {
    pub fn wait(&self) {
        let mut f = self.flag.lock();
        while !*f {
            self.cv.wait(&mut f);
        }
    }
    fn set(&self) {
        *self.flag.lock() = true;
        self.cv.notify_all();
    }
}

/// Result of chunking a streamed buffer: new extents and how many bytes they cover.
pub type StreamChunks = Result<(Vec<Extent>, usize)>;

/// Everything a commit needs from the vault.
pub struct CommitCtx<'a> {
    pub chunks: &'a ChunkIo,
    pub chunker: &'a Chunker,
    pub meta: &'a Metadata,
}

/// What a read needs once the file lock is released.
pub enum Piece {
    Zeros(usize),
    Chunk { id: ChunkId, from: usize, len: usize },
}

fn push_extent(list: &mut Vec<Extent>, e: Extent) {
    if e.len == 0 {
        return;
    }
    if let (Some(last), None) = (list.last_mut(), e.chunk)
        && last.chunk.is_none()
    {
        last.len += e.len;
        return;
    }
    list.push(e);
}

/// Store one chunk (a run of zeros is a hole, not a chunk).
fn store_piece(cx: &CommitCtx<'_>, piece: &[u8]) -> Result<Option<ChunkId>> {
    if piece.iter().all(|&b| b == 0) { Ok(None) } else { cx.chunks.put(piece).map(|(id, _)| Some(id)) }
}

/// Store the chunks `cuts` of `buf` (hash, compress, encrypt on all cores;
/// all-zero chunks become holes) and append their extents to `out`.
fn store_cuts(cx: &CommitCtx<'_>, buf: &[u8], cuts: &[(usize, usize)], out: &mut Vec<Extent>) -> Result<()> {
    let stored: Vec<Option<ChunkId>> =
        cuts.par_iter().map(|&(o, l)| store_piece(cx, &buf[o..o + l])).collect::<Result<_>>()?;
    for (&(_, l), chunk) in cuts.iter().zip(stored) {
        push_extent(out, Extent { len: l as u64, chunk });
    }
    Ok(())
}

impl FileState {
    pub fn new(rec: InodeRecord) -> Self {
        let size = rec.size;
        let mut st = FileState {
            base: rec.extents.clone(),
            rec,
            starts: Vec::new(),
            size,
            dirty: DirtyMap::default(),
            opens: 0,
            attrs_dirty: false,
            unsynced: false,
            last_read_end: 0,
            tail_natural: false,
            inflight: None,
            stream_failed: false,
            freed: false,
        };
        st.recompute_starts();
        st
    }

    fn recompute_starts(&mut self) {
        self.starts.clear();
        let mut pos = 0;
        for e in &self.rec.extents {
            self.starts.push(pos);
            pos += e.len;
        }
        self.rec.size = pos;
    }

    /// Index of the extent containing byte `off` (which must be < committed size).
    fn extent_index(&self, off: u64) -> usize {
        match self.starts.binary_search(&off) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    pub fn needs_commit(&self) -> bool {
        !self.dirty.is_empty()
            || self.size != self.rec.size
            || self.attrs_dirty
            || self.base != self.rec.extents
            || self.inflight.is_some()
    }

    /// Plan a read of `[off, off+len)` (clamped to the size). The flag says
    /// whether dirty bytes overlap, i.e. `overlay_dirty` must be applied.
    pub fn read_plan(&self, off: u64, len: usize) -> (Vec<Piece>, bool) {
        if off >= self.size {
            return (Vec::new(), false);
        }
        let end = (off + len as u64).min(self.size);
        let committed = self.rec.size;
        let inflight = self.inflight.as_ref().is_some_and(|f| f.start < end && f.start + f.data.len() as u64 > off);
        let overlaps_dirty = inflight || self.dirty.overlaps(off, end);
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end.min(committed) {
            let i = self.extent_index(pos);
            let (s, e) = (self.starts[i], &self.rec.extents[i]);
            let hi = (s + e.len).min(end);
            let n = (hi - pos) as usize;
            out.push(match e.chunk {
                Some(id) => Piece::Chunk { id, from: (pos - s) as usize, len: n },
                None => Piece::Zeros(n),
            });
            pos = hi;
        }
        if pos < end {
            out.push(Piece::Zeros((end - pos) as usize));
        }
        (out, overlaps_dirty)
    }

    /// The chunks holding bytes `off..off + len`, with the file offset where
    /// each starts (for read-ahead).
    pub fn chunks_ahead(&self, off: u64, len: u64) -> Vec<(ChunkId, u64)> {
        if off >= self.rec.size {
            return Vec::new();
        }
        let first = self.extent_index(off);
        let extents = self.rec.extents[first..].iter().zip(&self.starts[first..]);
        extents.take_while(|&(_, &start)| start < off + len).filter_map(|(e, &start)| Some((e.chunk?, start))).collect()
    }

    /// Overlay in-flight and dirty bytes (newest last) onto a buffer read at `off`.
    pub fn overlay_dirty(&self, off: u64, buf: &mut [u8]) {
        if let Some(f) = &self.inflight {
            let (lo, hi) = (off.max(f.start), (off + buf.len() as u64).min(f.start + f.data.len() as u64));
            if lo < hi {
                buf[(lo - off) as usize..(hi - off) as usize]
                    .copy_from_slice(&f.data[(lo - f.start) as usize..(hi - f.start) as usize]);
            }
        }
        self.dirty.overlay(off, buf);
    }

    /// The pending in-flight commit, if any (callers wait on it before
    /// changing extents).
    pub fn inflight_done(&self) -> Option<Arc<Done>> {
        self.inflight.as_ref().map(|f| Arc::clone(&f.done))
    }

    /// Streaming writer over the dirty limit: if everything dirty is one
    /// buffer appended right after a natural cut, take it out for chunking
    /// off the request path. Returns what the background job needs. Not
    /// after a failed background commit until a commit succeeds: the writer
    /// then commits in the foreground, so that the error reaches it.
    pub fn begin_stream(&mut self) -> Option<(u64, Arc<Vec<u8>>)> {
        let start = self.rec.size;
        // A truncate since the last commit changed the extents in memory only:
        // a foreground commit must diff the references against `base` first
        // (a stream adds references for its own chunks and nothing else).
        if self.inflight.is_some()
            || self.stream_failed
            || !(start == 0 || self.tail_natural)
            || self.base != self.rec.extents
        {
            return None;
        }
        let data = Arc::new(self.dirty.take_exact(start, self.size)?);
        self.inflight = Some(Inflight { start, data: Arc::clone(&data), done: Arc::new(Done::default()) });
        Some((start, data))
    }

    /// Background half of a streamed commit (no lock held): cut and store all
    /// but the last chunk, which stays dirty until more bytes arrive.
    pub fn chunk_stream(cx: &CommitCtx<'_>, data: &[u8]) -> StreamChunks {
        // Each chunk is hashed and stored on the pool as soon as the next
        // cut is found (the last one is kept back), so the cut, which is
        // sequential, runs alongside the hashing and sealing.
        let stored = parking_lot::Mutex::new(Vec::new());
        let mut consumed = 0;
        rayon::scope(|s| {
            let mut held: Option<(usize, usize)> = None;
            for (i, cut) in cx.chunker.cuts(data).enumerate() {
                if let Some((o, l)) = held.replace(cut) {
                    consumed = o + l;
                    let stored = &stored;
                    s.spawn(move |_| {
                        let r = store_piece(cx, &data[o..o + l]);
                        stored.lock().push((i, l, r));
                    });
                }
            }
        });
        let mut stored = stored.into_inner();
        stored.sort_by_key(|&(i, _, _)| i);
        let mut exts = Vec::new();
        for (_, l, chunk) in stored {
            push_extent(&mut exts, Extent { len: l as u64, chunk: chunk? });
        }
        Ok((exts, consumed))
    }

    /// Locked half of a streamed commit: append the new extents, commit them,
    /// and return the unconsumed tail (or everything, on error) to the dirty
    /// map beneath any newer writes.
    pub fn finish_stream(&mut self, ino: u64, cx: &CommitCtx<'_>, result: StreamChunks) -> Result<()> {
        let Some(f) = self.inflight.take() else { return Ok(()) };
        let outcome = result.and_then(|(exts, consumed)| {
            if consumed == 0 {
                return Ok(0);
            }
            let mut rec = self.rec.clone();
            for e in &exts {
                push_extent(&mut rec.extents, *e);
            }
            rec.size += consumed as u64;
            let mut delta: HashMap<ChunkId, i64> = HashMap::new();
            for id in exts.iter().filter_map(|e| e.chunk) {
                *delta.entry(id).or_default() += 1;
            }
            self.install(ino, cx, rec, &delta, |_| Ok(()))?;
            self.tail_natural = true;
            Ok(consumed)
        });
        self.stream_failed = outcome.is_err();
        let keep_from = *outcome.as_ref().unwrap_or(&0);
        let tail = &f.data[keep_from..];
        let tail_start = f.start + keep_from as u64;
        if self.dirty.overlaps(tail_start, tail_start + tail.len() as u64) {
            // Bytes written there since the stream began win over the tail.
            let mut tail = tail.to_vec();
            self.dirty.overlay(tail_start, &mut tail);
            self.dirty.write(tail_start, &tail);
        } else {
            self.dirty.write(tail_start, tail);
        }
        f.done.set();
        outcome.map(|_| ())
    }

    /// Write `data` at `off` and drop what `privs` names (see `DropPrivs`).
    /// The changed mode and attributes commit with the bytes.
    pub fn write(&mut self, off: u64, data: &[u8], privs: DropPrivs) {
        self.dirty.write(off, data);
        self.size = self.size.max(off + data.len() as u64);
        if privs.capabilities {
            self.rec.xattrs.retain(|(name, _)| name != SECURITY_CAPABILITY);
        }
        if privs.setid {
            let setgid = if self.rec.perm & 0o010 != 0 { 0o2000 } else { 0 };
            self.rec.perm &= !(0o4000 | setgid);
        }
        let now = Timespec::now();
        self.rec.mtime = now;
        self.rec.ctime = now;
        self.attrs_dirty = true;
    }

    /// Change the logical size. Shrinking below committed data re-dirties the
    /// kept prefix of the cut chunk so it is re-chunked at the next commit.
    pub fn set_size(&mut self, chunks: &ChunkIo, new_size: u64) -> Result<()> {
        if self.inflight.is_some() {
            return Err(Error::Metadata("internal: truncate while a streamed commit is in flight".into()));
        }
        if new_size < self.size {
            self.dirty.truncate(new_size);
            if new_size < self.rec.size {
                let i = self.extent_index(new_size);
                let start = self.starts[i];
                let keep = (new_size - start) as usize;
                match self.rec.extents[i].chunk {
                    _ if keep == 0 => self.rec.extents.truncate(i),
                    None => {
                        self.rec.extents[i].len = keep as u64;
                        self.rec.extents.truncate(i + 1);
                    }
                    Some(id) => {
                        let data = chunks.fetch(&id)?;
                        let mut buf = data[..keep].to_vec();
                        self.dirty.overlay(start, &mut buf);
                        self.dirty.write(start, &buf);
                        self.rec.extents.truncate(i);
                    }
                }
                self.recompute_starts();
            }
        }
        self.size = new_size;
        let now = Timespec::now();
        self.rec.mtime = now;
        self.rec.ctime = now;
        self.attrs_dirty = true;
        Ok(())
    }

    /// Turn dirty bytes into chunks and commit the inode (plus `extra`, in the
    /// same transaction). With `pressure`, the tail after the last
    /// content-defined cut stays dirty so sequential writers get the same
    /// chunks as a whole-file pass.
    pub fn commit(
        &mut self,
        ino: u64,
        cx: &CommitCtx<'_>,
        pressure: bool,
        extra: impl FnOnce(&mut WriteTx<'_>) -> Result<()>,
    ) -> Result<()> {
        // Work on the dirty map out of `self`; buffers handed to the chunker
        // without a copy are collected in `taken` and put back if anything
        // fails, so a failed commit (e.g. ENOSPC) loses no written byte.
        if self.freed {
            return Ok(());
        }
        if self.inflight.is_some() {
            // Callers wait for in-flight streams first (`Vault::settled`);
            // committing now would treat the streamed bytes as a hole.
            return Err(Error::Metadata("internal: commit while a streamed commit is in flight".into()));
        }
        let _gc = cx.chunks.commit_guard();
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut taken = Vec::new();
        match self.commit_inner(ino, cx, pressure, extra, &mut dirty, &mut taken) {
            Ok(leftover) => {
                if let Some((start, bytes)) = leftover {
                    self.dirty.write(start, &bytes);
                }
                for (_, b) in taken {
                    super::dirty::recycle(b);
                }
                self.stream_failed = false;
                Ok(())
            }
            Err(e) => {
                for (start, bytes) in taken {
                    dirty.write(start, &bytes);
                }
                self.dirty = dirty;
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn commit_inner(
        &mut self,
        ino: u64,
        cx: &CommitCtx<'_>,
        pressure: bool,
        extra: impl FnOnce(&mut WriteTx<'_>) -> Result<()>,
        dirty: &mut DirtyMap,
        taken: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        let committed = self.rec.size;
        let size = self.size;
        let extents = &self.rec.extents;
        // 1. Windows to re-chunk, aligned to existing extent boundaries.
        let mut windows: Vec<(u64, u64)> = Vec::new();
        for (a, b) in dirty.ranges() {
            // Chunks are re-cut whole; holes are split where the write lands.
            let ws = if a < committed {
                let i = self.extent_index(a);
                if extents[i].chunk.is_some() { self.starts[i] } else { a }
            } else if a == committed && !self.tail_natural && extents.last().is_some_and(|e| e.chunk.is_some()) {
                // Appending after a forced cut: re-chunk the last chunk too.
                self.starts[extents.len() - 1]
            } else {
                a
            };
            let we = if b <= committed {
                let i = self.extent_index(b - 1);
                if extents[i].chunk.is_some() { self.starts[i] + extents[i].len } else { b }
            } else {
                b
            };
            match windows.last_mut() {
                Some(last) if ws < last.1 => last.1 = last.1.max(we),
                _ => windows.push((ws, we)),
            }
        }
        // 2. Build the new extent list.
        let mut new: Vec<Extent> = Vec::new();
        let mut leftover: Option<(u64, Vec<u8>)> = None;
        let mut pos = 0u64; // everything before `pos` is already in `new`
        let mut materialized: Vec<u8>;
        let copy_old = |new: &mut Vec<Extent>, from: u64, to: u64| {
            // Old extents in [from, to): chunks lie wholly inside (windows are
            // chunk-aligned); holes may be cut anywhere.
            let mut p = from;
            while p < to.min(committed) {
                let i = self.extent_index(p);
                let (s, e) = (self.starts[i], extents[i]);
                let hi = (s + e.len).min(to);
                match e.chunk {
                    Some(_) => push_extent(new, e),
                    None => push_extent(new, Extent { len: hi - p, chunk: None }),
                }
                p = hi;
            }
            if to > committed && to > p {
                push_extent(new, Extent { len: to - p.max(committed), chunk: None });
            }
        };
        for &(ws, we) in &windows {
            copy_old(&mut new, pos, ws);
            // Streaming append: the window is exactly one dirty buffer; use it as is.
            if ws >= committed
                && let Some(b) = dirty.take_exact(ws, we)
            {
                taken.push((ws, b));
            }
            let buf: &[u8] = match taken.last() {
                Some((s, b)) if *s == ws && b.len() as u64 == we - ws => b,
                _ => {
                    materialized = self.materialize(cx, dirty, ws, we, committed)?;
                    &materialized
                }
            };
            let mut cuts = cx.chunker.cut(buf);
            // Under pressure the piece after the last cut stays in RAM, but
            // only if it lies wholly past the committed size: the installed
            // record must never end before bytes an earlier fsync made durable.
            let last_start = ws + cuts.last().map_or(0, |&(o, _)| o as u64);
            if pressure && we == size && last_start >= committed {
                if cuts.len() <= 1 {
                    leftover = Some((ws, buf.to_vec()));
                    pos = we;
                    break;
                }
                let (o, _) = cuts.pop().expect("at least two cuts");
                leftover = Some((ws + o as u64, buf[o..].to_vec()));
            }
            store_cuts(cx, buf, &cuts, &mut new)?;
            pos = we;
        }
        let tail_end = match &leftover {
            Some((start, _)) => *start,
            None => size,
        };
        if leftover.is_none() || pos < tail_end {
            copy_old(&mut new, pos, tail_end.max(pos));
        }
        // 3. Reference-count deltas against what LMDB holds.
        let mut delta: HashMap<ChunkId, i64> = HashMap::new();
        for e in &new {
            if let Some(id) = e.chunk {
                *delta.entry(id).or_default() += 1;
            }
        }
        for e in &self.base {
            if let Some(id) = e.chunk {
                *delta.entry(id).or_default() -= 1;
            }
        }
        delta.retain(|_, d| *d != 0);
        let mut rec = self.rec.clone();
        rec.extents = new;
        rec.size = rec.extents.iter().map(|e| e.len).sum();
        self.install(ino, cx, rec, &delta, extra)?;
        self.attrs_dirty = false;
        // A kept tail starts at a natural cut; anything else may end in a forced one.
        self.tail_natural = leftover.as_ref().is_some_and(|(start, _)| *start == self.rec.size);
        Ok(leftover)
    }

    /// Make `rec` this file's stored record: reference counts, the inode and
    /// `extra` change in one deferred transaction, which the next close or
    /// fsync makes durable (`unsynced`) together with the chunks' bytes (in
    /// an intent-log record, or a checkpoint that syncs the packs before the
    /// index commit: docs/ARCHITECTURE.md, "Write ordering").
    fn install(
        &mut self,
        ino: u64,
        cx: &CommitCtx<'_>,
        rec: InodeRecord,
        delta: &HashMap<ChunkId, i64>,
        extra: impl FnOnce(&mut WriteTx<'_>) -> Result<()>,
    ) -> Result<()> {
        let added: Vec<ChunkId> = delta.iter().filter(|(_, d)| **d > 0).map(|(id, _)| *id).collect();
        let apply = |tx: &mut WriteTx<'_>| {
            for (id, d) in delta {
                cx.chunks.adjust_refs(tx, id, *d)?;
            }
            tx.put_inode(ino, &rec)?;
            extra(tx)
        };
        cx.meta.write_deferred(apply)?;
        // Readers find the new chunks in the index's overlay from here on.
        cx.chunks.forget_pending(&added);
        self.base = rec.extents.clone();
        self.rec = rec;
        self.recompute_starts();
        self.unsynced = true;
        Ok(())
    }

    /// The bytes of `[ws, we)`: committed chunks (holes as zeros) with dirty bytes on top.
    fn materialize(&self, cx: &CommitCtx<'_>, dirty: &DirtyMap, ws: u64, we: u64, committed: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; (we - ws) as usize];
        let mut p = ws;
        while p < we.min(committed) {
            let i = self.extent_index(p);
            let (s, e) = (self.starts[i], self.rec.extents[i]);
            if let Some(id) = e.chunk {
                let data = cx.chunks.fetch(&id)?;
                let lo = (p - s) as usize;
                let hi = ((we.min(s + e.len)) - s) as usize;
                buf[(p - ws) as usize..(p - ws) as usize + (hi - lo)].copy_from_slice(&data[lo..hi]);
            }
            p = s + e.len;
        }
        dirty.overlay(ws, &mut buf);
        Ok(buf)
    }
}
