//! The namespace: attributes, lookups, creating, linking, unlinking and
//! renaming entries, setattr, and directory listings. Changes are
//! serialised by `Vault::ns`.

use super::{
    Attr, Caller, DirEntry, MAX_FILE_SIZE, MAX_NAME, ROOT_INO, RenameFlags, SetAttr, TimeSet, Vault, attr_of,
    check_name,
};
use crate::error::{Error, Result};
use crate::metadata::{DirentRecord, FileKind, InodeRecord, Timespec, WriteTx};

impl Vault {
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        if let Some(s) = self.open_state(ino) {
            let st = s.lock();
            return Ok(attr_of(ino, &st.rec, st.size));
        }
        let rec = self.load(ino)?;
        Ok(attr_of(ino, &rec, rec.size))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        if name.len() > MAX_NAME {
            return Err(Error::NameTooLong);
        }
        let d = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        self.getattr(d.ino)
    }

    /// Apply `f` to an inode's record and commit it with `extra` in one
    /// transaction, through the open-file state when there is one.
    pub(super) fn update_inode(
        &self,
        ino: u64,
        f: impl FnOnce(&mut InodeRecord) -> Result<()>,
        extra: impl FnOnce(&mut WriteTx<'_>) -> Result<()>,
    ) -> Result<Attr> {
        if let Some(s) = self.open_state(ino) {
            let mut st = Self::settled(&s);
            f(&mut st.rec)?;
            st.commit(ino, &self.ctx(), false, extra)?;
            return Ok(attr_of(ino, &st.rec, st.size));
        }
        self.meta.write_deferred(|tx| {
            let mut rec = tx.inode(ino)?.ok_or(Error::NotFound)?;
            f(&mut rec)?;
            tx.put_inode(ino, &rec)?;
            extra(tx)?;
            Ok(attr_of(ino, &rec, rec.size))
        })
    }

    fn parent_dir(&self, parent: u64) -> Result<InodeRecord> {
        let rec = self.load(parent)?;
        if rec.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        Ok(rec)
    }

    /// Create any kind of inode under `parent`. The arguments mirror
    /// mknod/mkdir/symlink (`rdev` for devices, `target` for symlinks).
    #[allow(clippy::too_many_arguments)]
    pub fn create_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        target: &[u8],
    ) -> Result<Attr> {
        check_name(name)?;
        let _ns = self.ns.lock();
        let pdir = self.parent_dir(parent)?;
        let mut rec = InodeRecord::new(kind, perm, caller.uid, caller.gid);
        rec.domain = pdir.content_domain();
        rec.rdev = rdev;
        // BSD/SysV group semantics: a setgid directory hands down its group.
        if pdir.perm & 0o2000 != 0 {
            rec.gid = pdir.gid;
            if kind == FileKind::Dir {
                rec.perm |= 0o2000;
            }
        }
        if kind == FileKind::Symlink {
            rec.target = target.to_vec();
            rec.size = target.len() as u64;
        }
        if kind == FileKind::Dir {
            rec.parent = parent;
        }
        let now = rec.ctime;
        let ino = self.meta.write_deferred(|tx| {
            if tx.dirent(parent, name)?.is_some() {
                return Err(Error::Exists);
            }
            let ino = tx.next_ino()?;
            tx.put_inode(ino, &rec)?;
            tx.put_dirent(parent, &DirentRecord { name: name.to_vec(), ino, kind })?;
            let mut p = pdir.clone();
            p.mtime = now;
            p.ctime = now;
            if kind == FileKind::Dir {
                p.nlink += 1;
            }
            tx.put_inode(parent, &p)?;
            Ok(ino)
        })?;
        Ok(attr_of(ino, &rec, rec.size))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let rec = self.load(ino)?;
        if rec.kind != FileKind::Symlink {
            return Err(Error::Invalid("not a symlink"));
        }
        Ok(rec.target)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        let _ns = self.ns.lock();
        let pdir = self.parent_dir(newparent)?;
        let rec = self.load(ino)?;
        if rec.kind == FileKind::Dir {
            return Err(Error::NotPermitted);
        }
        if rec.domain != pdir.content_domain() {
            return Err(Error::CrossDevice);
        }
        if self.meta.read(|tx| tx.dirent(newparent, newname))?.is_some() {
            return Err(Error::Exists);
        }
        let kind = rec.kind;
        let now = Timespec::now();
        self.update_inode(
            ino,
            |r| {
                if r.nlink >= u32::MAX - 1 {
                    return Err(Error::TooManyLinks);
                }
                r.nlink += 1;
                r.ctime = now;
                Ok(())
            },
            |tx| {
                tx.put_dirent(newparent, &DirentRecord { name: newname.to_vec(), ino, kind })?;
                let mut p = pdir;
                p.mtime = now;
                p.ctime = now;
                tx.put_inode(newparent, &p)
            },
        )
    }

    /// Drop one link to `ino` inside `tx`-adjacent logic; frees it when unreferenced.
    fn drop_link(&self, ino: u64, now: Timespec, extra: impl FnOnce(&mut WriteTx<'_>) -> Result<()>) -> Result<()> {
        if let Some(s) = self.open_state(ino) {
            let mut st = Self::settled(&s);
            if st.opens == 0 && st.rec.nlink <= 1 {
                // Last link of a file nobody has open: its uncommitted bytes die
                // with it, so a full store cannot stop the delete.
                st.freed = true;
                drop(st);
                self.files.lock().remove(&ino);
                return self.drop_link(ino, now, extra);
            }
            st.rec.nlink = st.rec.nlink.saturating_sub(1);
            st.rec.ctime = now;
            let orphan = st.rec.nlink == 0;
            // Open files live on (as orphans) until the last close.
            return st.commit(ino, &self.ctx(), false, |tx| {
                extra(tx)?;
                if orphan { tx.add_orphan(ino) } else { Ok(()) }
            });
        }
        self.meta.write_deferred(|tx| {
            let mut rec = tx.inode(ino)?.ok_or(Error::NotFound)?;
            rec.nlink = rec.nlink.saturating_sub(1);
            rec.ctime = now;
            let is_dir = rec.kind == FileKind::Dir;
            if rec.nlink == 0 || is_dir {
                self.free_inode_in(tx, ino, &rec)?;
            } else {
                tx.put_inode(ino, &rec)?;
            }
            extra(tx)
        })
    }

    pub(super) fn touch_parent(tx: &mut WriteTx<'_>, ino: u64, now: Timespec, nlink_delta: i32) -> Result<()> {
        let mut p = tx.inode(ino)?.ok_or(Error::NotFound)?;
        p.mtime = now;
        p.ctime = now;
        p.nlink = (p.nlink as i64 + nlink_delta as i64).max(1) as u32;
        tx.put_inode(ino, &p)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        let _ns = self.ns.lock();
        self.parent_dir(parent)?;
        let d = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        if d.kind == FileKind::Dir {
            return Err(Error::IsDir);
        }
        let now = Timespec::now();
        self.drop_link(d.ino, now, |tx| {
            tx.delete_dirent(parent, name)?;
            Self::touch_parent(tx, parent, now, 0)
        })?;
        self.maybe_evict(d.ino);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(Error::Invalid("cannot remove ."));
        }
        if name == b".." {
            return Err(Error::NotEmpty);
        }
        let _ns = self.ns.lock();
        self.parent_dir(parent)?;
        let d = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        if d.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        if self.load(d.ino)?.folder_root != 0 {
            // A vault folder's root is the admin's to remove (its key domain lives on).
            return Err(Error::NotPermitted);
        }
        if !self.meta.read(|tx| tx.dir_is_empty(d.ino))? {
            return Err(Error::NotEmpty);
        }
        let now = Timespec::now();
        self.meta.write_deferred(|tx| {
            tx.delete_dirent(parent, name)?;
            tx.delete_inode(d.ino)?;
            Self::touch_parent(tx, parent, now, -1)
        })
    }

    /// Is `ancestor` equal to `ino` or one of its ancestors?
    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> Result<bool> {
        loop {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            ino = self.load(ino)?.parent;
        }
    }

    pub fn rename(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: RenameFlags) -> Result<()> {
        check_name(newname)?;
        let _ns = self.ns.lock();
        let from_dir = self.parent_dir(parent)?;
        let to_dir = self.parent_dir(newparent)?;
        if from_dir.content_domain() != to_dir.content_domain() {
            return Err(Error::CrossDevice); // records cannot change vault folder (key domain)
        }
        let src = self.meta.read(|tx| tx.dirent(parent, name))?.ok_or(Error::NotFound)?;
        let dst = self.meta.read(|tx| tx.dirent(newparent, newname))?;
        // A vault folder's root stays where the admin's policy put it.
        for d in [Some(&src), dst.as_ref()].into_iter().flatten() {
            if d.kind == FileKind::Dir && self.load(d.ino)?.folder_root != 0 {
                return Err(Error::NotPermitted);
            }
        }
        let now = Timespec::now();
        if src.kind == FileKind::Dir && self.is_ancestor(src.ino, newparent)? {
            return Err(Error::Invalid("cannot move a directory into itself"));
        }
        if flags.exchange {
            let dst = dst.ok_or(Error::NotFound)?;
            if dst.kind == FileKind::Dir && self.is_ancestor(dst.ino, parent)? {
                return Err(Error::Invalid("cannot move a directory into itself"));
            }
            let dirs_delta = i32::from(src.kind == FileKind::Dir) - i32::from(dst.kind == FileKind::Dir);
            self.meta.write_deferred(|tx| {
                tx.put_dirent(parent, &DirentRecord { name: name.to_vec(), ino: dst.ino, kind: dst.kind })?;
                tx.put_dirent(newparent, &DirentRecord { name: newname.to_vec(), ino: src.ino, kind: src.kind })?;
                for (ino, kind, np) in [(src.ino, src.kind, newparent), (dst.ino, dst.kind, parent)] {
                    if kind == FileKind::Dir {
                        let mut r = tx.inode(ino)?.ok_or(Error::NotFound)?;
                        r.parent = np;
                        r.ctime = now;
                        tx.put_inode(ino, &r)?;
                    }
                }
                if parent != newparent {
                    Self::touch_parent(tx, parent, now, -dirs_delta)?;
                    Self::touch_parent(tx, newparent, now, dirs_delta)
                } else {
                    Self::touch_parent(tx, parent, now, 0)
                }
            })?;
            for (ino, kind) in [(src.ino, src.kind), (dst.ino, dst.kind)] {
                if kind != FileKind::Dir {
                    self.update_inode(
                        ino,
                        |r| {
                            r.ctime = now;
                            Ok(())
                        },
                        |_| Ok(()),
                    )?;
                }
            }
            return Ok(());
        }
        if let Some(dst) = &dst {
            if flags.noreplace {
                return Err(Error::Exists);
            }
            if dst.ino == src.ino {
                return Ok(()); // two links to one inode: POSIX says do nothing
            }
            match (src.kind == FileKind::Dir, dst.kind == FileKind::Dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if !self.meta.read(|tx| tx.dir_is_empty(dst.ino))? => {
                    return Err(Error::NotEmpty);
                }
                _ => {}
            }
        }
        let src_is_dir = src.kind == FileKind::Dir;
        let replaced_dir = dst.as_ref().is_some_and(|d| d.kind == FileKind::Dir);
        // The moved inode's ctime changes in the same transaction unless an
        // open file's state owns its record (then it is updated through it).
        let src_open = self.open_state(src.ino).is_some();
        let moves = |tx: &mut WriteTx<'_>| -> Result<()> {
            tx.delete_dirent(parent, name)?;
            tx.put_dirent(newparent, &DirentRecord { name: newname.to_vec(), ino: src.ino, kind: src.kind })?;
            if !src_is_dir && !src_open {
                let mut r = tx.inode(src.ino)?.ok_or(Error::NotFound)?;
                r.ctime = now;
                tx.put_inode(src.ino, &r)?;
            }
            if src_is_dir {
                let mut r = tx.inode(src.ino)?.ok_or(Error::NotFound)?;
                r.parent = newparent;
                r.ctime = now;
                tx.put_inode(src.ino, &r)?;
            }
            let (out, inn) = (-i32::from(src_is_dir), i32::from(src_is_dir) - i32::from(replaced_dir));
            if parent == newparent {
                Self::touch_parent(tx, parent, now, out + inn)
            } else {
                Self::touch_parent(tx, parent, now, out)?;
                Self::touch_parent(tx, newparent, now, inn)
            }
        };
        match dst {
            Some(d) if d.kind == FileKind::Dir => self.meta.write_deferred(|tx| {
                tx.delete_inode(d.ino)?;
                moves(tx)
            })?,
            Some(d) => {
                self.drop_link(d.ino, now, moves)?;
                self.maybe_evict(d.ino);
            }
            None => self.meta.write_deferred(moves)?,
        }
        if !src_is_dir && src_open {
            self.update_inode(
                src.ino,
                |r| {
                    r.ctime = now;
                    Ok(())
                },
                |_| Ok(()),
            )?;
        }
        Ok(())
    }

    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Attr> {
        let _ns = self.ns.lock();
        let rec = self.load(ino)?;
        if let Some(size) = set.size {
            if rec.kind == FileKind::Dir {
                return Err(Error::IsDir);
            }
            if rec.kind != FileKind::File {
                return Err(Error::Invalid("size of a special file"));
            }
            if size > MAX_FILE_SIZE {
                return Err(Error::TooBig);
            }
        }
        let now = Timespec::now();
        let apply = |r: &mut InodeRecord| -> Result<()> {
            if let Some(m) = set.mode {
                r.perm = m & 0o7777;
            }
            if let Some(u) = set.uid {
                r.uid = u;
            }
            if let Some(g) = set.gid {
                r.gid = g;
            }
            let pick = |t: TimeSet| match t {
                TimeSet::Now => now,
                TimeSet::At(t) => t,
            };
            if let Some(t) = set.atime {
                r.atime = pick(t);
            }
            if let Some(t) = set.mtime {
                r.mtime = pick(t);
            }
            r.ctime = set.ctime.unwrap_or(now);
            Ok(())
        };
        if rec.kind == FileKind::File {
            let s = self.state(ino)?;
            let attr = {
                let mut st = Self::settled(&s);
                // An open file with uncommitted bytes commits on its last close
                // or fsync; the new attributes ride along with those bytes rather
                // than cost an LMDB sync each (tar sets owner, mode and times on
                // every file before closing it). Otherwise commit now.
                let defer = st.opens > 0 && st.needs_commit();
                if let Some(size) = set.size {
                    st.set_size(&self.chunks, size)?;
                }
                apply(&mut st.rec)?;
                if defer {
                    st.attrs_dirty = true;
                } else {
                    st.commit(ino, &self.ctx(), false, |_| Ok(()))?;
                }
                attr_of(ino, &st.rec, st.size)
            };
            self.maybe_evict(ino);
            return Ok(attr);
        }
        self.update_inode(ino, apply, |_| Ok(()))
    }

    /// Entries with offset greater than `offset`, including "." and "..".
    pub fn readdir(&self, ino: u64, offset: u64, limit: usize) -> Result<Vec<DirEntry>> {
        let rec = self.load(ino)?;
        if rec.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry { offset: 1, ino, kind: FileKind::Dir, name: b".".to_vec() });
        }
        if offset < 2 {
            out.push(DirEntry { offset: 2, ino: rec.parent.max(1), kind: FileKind::Dir, name: b"..".to_vec() });
        }
        let rest = self.meta.read(|tx| tx.list_dir(ino, offset.max(2), limit))?;
        out.extend(rest.into_iter().map(|(off, d)| DirEntry { offset: off, ino: d.ino, kind: d.kind, name: d.name }));
        Ok(out)
    }

    /// `readdir` plus each entry's attributes, read in one transaction.
    /// Entries that vanished meanwhile are skipped.
    pub fn readdir_plus(&self, ino: u64, offset: u64, limit: usize) -> Result<Vec<(DirEntry, Attr)>> {
        let entries = self.readdir(ino, offset, limit)?;
        let stored: Vec<Option<InodeRecord>> =
            self.meta.read(|tx| entries.iter().map(|d| tx.inode(d.ino)).collect::<Result<_>>())?;
        Ok(entries
            .into_iter()
            .zip(stored)
            .filter_map(|(d, rec)| {
                // Open files may hold newer attributes (size of dirty data).
                let attr = match self.open_state(d.ino) {
                    Some(s) => {
                        let st = s.lock();
                        attr_of(d.ino, &st.rec, st.size)
                    }
                    None => {
                        let rec = rec?;
                        attr_of(d.ino, &rec, rec.size)
                    }
                };
                Some((d, attr))
            })
            .collect())
    }
}
