//! Vault folders (key domains): creating, unlocking and locking them, the
//! session gate and observer hooks, and planting decoys.

use std::sync::Arc;

use super::{
    Access, AccessGate, Caller, DOMAIN_CACHE_ENTRIES, EntryHook, FileRef, Observer, PlantAttrs, ROOT_INO, Touch, Vault,
    Walker, WalkersHook, check_name,
};
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::metadata::{DirentRecord, DomainKeys, FileKind, InodeRecord, ROOT_DOMAIN};

impl Vault {
    /// Create a decoy file or directory through the normal write path,
    /// then give it `attrs` and the decoy flag (see `audit::decoys`).
    pub fn plant(&self, parent: u64, name: &[u8], kind: FileKind, data: &[u8], attrs: &PlantAttrs) -> Result<u64> {
        let owner = Caller { uid: attrs.uid, gid: attrs.gid };
        let ino = self.create_node(owner, parent, name, kind, attrs.perm, 0, b"")?.ino;
        if kind == FileKind::File && !data.is_empty() {
            self.open_file(ino, false)?;
            let written = self.write(ino, 0, data).and_then(|_| self.flush(ino, true));
            let released = self.release(ino);
            written?;
            released?;
        }
        self.disguise(ino, attrs)?;
        Ok(ino)
    }

    /// Set owner, mode and all times of `ino` and mark it a decoy (all in
    /// one commit; ctime too, which no system call can set).
    pub fn disguise(&self, ino: u64, attrs: &PlantAttrs) -> Result<()> {
        let _ns = self.ns.lock();
        let is_decoy = ino != self.folder_root_of(ino)?;
        self.update_inode(
            ino,
            |r| {
                r.uid = attrs.uid;
                r.gid = attrs.gid;
                r.perm = attrs.perm & 0o7777;
                (r.atime, r.mtime, r.ctime, r.crtime) = (attrs.atime, attrs.mtime, attrs.ctime, attrs.ctime);
                r.decoy |= is_decoy;
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// `ino` itself if it is a vault folder's root, else 0.
    fn folder_root_of(&self, ino: u64) -> Result<u64> {
        Ok(if self.load(ino)?.folder_root != 0 { ino } else { 0 })
    }

    /// Report every operation to `observer` from now on (once per vault: a
    /// second observer would see only part of the mount's life).
    pub fn set_observer(&self, observer: Arc<dyn Observer>) -> Result<()> {
        self.observer.set(observer).map_err(|_| Error::Repo("the vault already has an observer".into()))
    }

    /// Tell the observer (if any) what `uid` did; its `Err` fails the operation.
    pub fn observe(&self, uid: u32, touch: Touch<'_>) -> Result<()> {
        // A plain load: every request of every worker thread passes here.
        match self.observer.get() {
            Some(o) => o.observe(uid, touch),
            None => Ok(()),
        }
    }

    /// Let the mount hear of entries removed behind the kernel's back (`None`: unmounted).
    pub fn set_entry_hook(&self, hook: Option<EntryHook>) {
        *self.entry_hook.write() = hook;
    }

    /// `name` in `parent` changed without a request through the mount: the
    /// kernel may still cache it.
    fn entry_gone(&self, parent: u64, name: &[u8]) {
        if let Some(hook) = &*self.entry_hook.read() {
            hook(parent, name);
        }
    }

    pub fn set_gate(&self, gate: Arc<dyn AccessGate>) {
        *self.gate.write() = Some(gate);
    }

    /// Whether a session gate decides access to vault folders here (the
    /// repository has an admin authority), so folders can exist.
    pub fn has_gate(&self) -> bool {
        self.gate.read().is_some()
    }

    /// Let the mount hear of folder roots whose walkers changed (`None`: unmounted).
    pub fn set_walkers_hook(&self, hook: Option<WalkersHook>) {
        *self.walkers_hook.write() = hook;
    }

    /// The gate's walkers of vault folder `domain` changed (a login, logout,
    /// expiry, lock or new rights): tell the mount, which makes the kernel
    /// forget the root's access control list before this returns.
    pub fn folder_walkers_changed(&self, domain: u32) {
        let Ok(Some(ino)) = self.folder_root(domain) else { return };
        if let Some(hook) = &*self.walkers_hook.read() {
            hook(ino);
        }
    }

    /// Who may walk into `ino` now, if it is a vault folder's root: the path
    /// walk into a folder is checked by the kernel against this list, so it
    /// costs no request to the daemon (see `fuse_adapter::walk_acl`).
    pub fn folder_walkers(&self, ino: u64) -> Result<Option<Vec<Walker>>> {
        let (domain, content) = self.domains_of(ino)?;
        if domain == content {
            return Ok(None);
        }
        Ok(Some(self.gate.read().as_ref().map(|g| g.walkers(content)).unwrap_or_default()))
    }

    /// May `uid` have `access` to inode `ino`? `contents` asks about a
    /// directory's entries (lookup, readdir, create), which at a vault
    /// folder's root belong to the folder while the root itself does not.
    pub fn authorize(&self, uid: u32, ino: u64, access: Access, contents: bool) -> Result<()> {
        if !self.has_folders.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let (domain, content) = self.domains_of(ino)?;
        let d = if contents { content } else { domain };
        if d == ROOT_DOMAIN {
            return Ok(());
        }
        match &*self.gate.read() {
            Some(g) => g.check(uid, d, access),
            None => Err(Error::AccessDenied),
        }
    }

    /// The gate's token for `uid`'s live sessions (see [`AccessGate::session_token`]).
    pub fn session_token(&self, uid: u32) -> Option<u64> {
        self.gate.read().as_ref().and_then(|g| g.session_token(uid))
    }

    /// `(domain, content domain)` of an inode without needing its key: what
    /// the session gate checks before an operation.
    pub fn domains_of(&self, ino: u64) -> Result<(u32, u32)> {
        if let Some(d) = self.domains.read().get(&ino) {
            return Ok(*d);
        }
        let d = self.meta.read(|tx| tx.inode_domains(ino))?.ok_or(Error::NotFound)?;
        let mut cache = self.domains.write();
        if cache.len() >= DOMAIN_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(ino, d);
        Ok(d)
    }

    /// Find the inode of the vault folder `domain`, if it exists here.
    pub fn folder_root(&self, domain: u32) -> Result<Option<u64>> {
        self.meta.read(|tx| tx.folder_root(domain))
    }

    /// Create the root directory of vault folder `domain` at `path` (relative
    /// to the mount root, outside other vault folders). An empty directory
    /// already there is replaced by a new one, not adopted: whoever made it
    /// may hold an inotify watch on it, which would report the names of the
    /// folder's first level to them. Idempotent.
    pub fn create_folder(&self, path: &str, domain: u32, owner: Caller) -> Result<u64> {
        if domain == ROOT_DOMAIN {
            return Err(Error::Invalid("folder domain 0 is the root"));
        }
        if let Some(ino) = self.folder_root(domain)?
            && self.meta.read(|tx| tx.inode(ino))?.is_some_and(|r| r.folder_root == domain)
        {
            return Ok(ino);
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(Error::Invalid("a vault folder needs a path below the root"));
        };
        let mut parent = ROOT_INO;
        for p in dirs {
            parent = match self.lookup(parent, p.as_bytes()) {
                Ok(a) if a.kind == FileKind::Dir => a.ino,
                Ok(_) => return Err(Error::NotDir),
                Err(Error::NotFound) => {
                    self.create_node(owner, parent, p.as_bytes(), FileKind::Dir, 0o755, 0, b"")?.ino
                }
                Err(e) => return Err(e),
            };
            if self.load(parent)?.content_domain() != ROOT_DOMAIN {
                return Err(Error::Invalid("vault folders cannot nest"));
            }
        }
        let name = last.as_bytes();
        check_name(name)?;
        let _ns = self.ns.lock();
        // Set before the folder exists, so no operation inside it skips the gate.
        self.has_folders.store(true, std::sync::atomic::Ordering::Relaxed);
        // One transaction, so the new root is never visible unmarked (and
        // so ungated) and a squatter cannot slip in between.
        let (ino, replaced) = self.meta.write(|tx| {
            let mut replaced = false;
            if let Some(d) = tx.dirent(parent, name)? {
                if d.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                let old = tx.inode(d.ino)?.ok_or(Error::NotFound)?;
                if old.folder_root == domain {
                    tx.set_folder_root(domain, d.ino)?;
                    return Ok((d.ino, false));
                }
                if old.folder_root != 0 || old.content_domain() != ROOT_DOMAIN || !tx.dir_is_empty(d.ino)? {
                    return Err(Error::NotEmpty);
                }
                tx.delete_dirent(parent, name)?;
                tx.delete_inode(d.ino)?;
                replaced = true;
            }
            // Open to every Unix user: the vault policy decides who gets in.
            let mut rec = InodeRecord::new(FileKind::Dir, 0o777, owner.uid, owner.gid);
            rec.parent = parent;
            rec.folder_root = domain;
            let ino = tx.next_ino()?;
            tx.put_inode(ino, &rec)?;
            tx.put_dirent(parent, &DirentRecord { name: name.to_vec(), ino, kind: FileKind::Dir })?;
            Self::touch_parent(tx, parent, rec.ctime, if replaced { 0 } else { 1 })?;
            tx.set_folder_root(domain, ino)?;
            Ok((ino, replaced))
        })?;
        self.domains.write().insert(ino, (ROOT_DOMAIN, domain));
        if replaced {
            self.entry_gone(parent, name);
        }
        self.checkpoint()?;
        Ok(ino)
    }

    /// Make vault folder `domain` readable with the folder keys a session
    /// supplied: `keys` maps key versions to keys and must hold the newest
    /// version and every older one back to the version the records use now.
    /// Records still sealed under an older version are re-sealed under the
    /// newest (key rotation after a revocation).
    pub fn unlock_folder(&self, domain: u32, keys: &[(u32, Key32)]) -> Result<()> {
        let Some((newest, newest_key)) = keys.iter().max_by_key(|(v, _)| *v) else {
            return Err(Error::Invalid("no folder key"));
        };
        self.meta.install_domain(domain, *newest, DomainKeys::from_folder_key(newest_key));
        match self.meta.domain_version(domain)? {
            None => self.meta.write(|tx| tx.set_stored_version(domain, *newest))?,
            Some(v) if v == *newest => {}
            Some(v) if v > *newest => {
                return Err(Error::Integrity("folder key is older than the folder's records".into()));
            }
            Some(v) => {
                let (_, old) = keys.iter().find(|(k, _)| *k == v).ok_or(Error::Locked)?;
                self.meta.install_domain(domain, v, DomainKeys::from_folder_key(old));
                self.meta.rekey_domain(domain, *newest)?;
                self.checkpoint()?;
            }
        }
        // Files unlinked while open in this folder can be freed now.
        self.purge_orphans()
    }

    /// Forget vault folder `domain`'s keys once its pending writes are committed.
    pub fn lock_folder(&self, domain: u32) -> Result<()> {
        self.commit_domain(domain)?;
        self.meta.forget_domain(domain);
        // Drop cached records of closed files too: nothing of the folder stays readable.
        let _ns = self.ns.lock();
        let inos: Vec<u64> = self.files.lock().keys().copied().collect();
        for ino in inos {
            if self.open_state(ino).is_some_and(|s| s.lock().rec.domain == domain) {
                self.maybe_evict(ino);
            }
        }
        Ok(())
    }

    pub fn folder_unlocked(&self, domain: u32) -> bool {
        self.meta.domain_unlocked(domain)
    }

    /// Commit and sync every file of `domain` that holds uncommitted bytes.
    fn commit_domain(&self, domain: u32) -> Result<()> {
        let files: Vec<(u64, FileRef)> = self.files.lock().iter().map(|(k, v)| (*k, Arc::clone(v))).collect();
        for (ino, s) in files {
            let mut st = Self::settled(&s);
            if st.rec.domain == domain && st.needs_commit() {
                st.commit(ino, &self.ctx(), false, |_| Ok(()))?;
            }
        }
        self.checkpoint()
    }
}
