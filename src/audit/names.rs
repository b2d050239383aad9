//! Names for audit records: inode → (parent, name) as the kernel last looked
//! them up, so that a record can say `/cardiology/p-4410/img.dcm` and the
//! insider monitor can tell which patient a file belongs to.
//!
//! Every open needs a path, so this is kept cheap: a fast hash of the inode
//! number (inode numbers come from the vault, not from users, so a
//! DoS-resistant hash buys nothing), names stored already converted to
//! text, one walk giving both the path and the patient, and the places of
//! the last few directories remembered (files are mostly opened, created
//! and listed directory by directory), so a walk is usually one lookup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::FastMap;
use crate::vault::ROOT_INO;

/// Bound of the map (cleared when full; refilled by lookups).
const ENTRIES: usize = 1 << 20;
/// Deeper than this is a loop or garbage, not a directory tree.
const MAX_DEPTH: usize = 256;
/// Directories whose place is remembered.
const RECENT_DIRS: usize = 8;

struct Named {
    parent: u64,
    /// Shared so that a walk copies a pointer, not the name.
    name: Arc<str>,
    folder_root: bool,
}

/// A directory's place, for its children: their path starts with `path`,
/// and their patient is `patient` (or, below a folder root or the vault's
/// root, the child itself).
struct DirPlace {
    path: String,
    patient: Option<Arc<str>>,
}

#[derive(Default)]
pub struct Names {
    map: RwLock<FastMap<u64, Named>>,
    /// Bumped whenever a known inode changes name or parent: every
    /// remembered directory place may then be stale.
    generation: AtomicU64,
    /// `(directory, generation, place)`, most recent last.
    recent: Mutex<Vec<(u64, u64, Arc<DirPlace>)>>,
}

/// Where a file is: its path and its patient.
pub struct Place {
    pub path: String,
    /// The first component below the vault folder holding it (or the first
    /// component, outside folders). Shared with the names map: the insider
    /// monitor keeps it without copying.
    pub patient: Arc<str>,
}

impl Names {
    /// `ino` is `name` in directory `parent` (a lookup, create or rename).
    pub fn learn(&self, parent: u64, name: &[u8], ino: u64, folder_root: bool) {
        let text = String::from_utf8_lossy(name);
        if let Some(n) = self.map.read().get(&ino)
            && n.parent == parent
            && *n.name == *text
            && n.folder_root == folder_root
        {
            return; // the common case: a lookup of a name already known
        }
        let mut map = self.map.write();
        if map.len() >= ENTRIES {
            map.clear();
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        if map.insert(ino, Named { parent, name: text.into(), folder_root }).is_some() {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `/a/b/c` for `ino`, from the names seen so far.
    pub fn path(&self, ino: u64) -> String {
        self.place(ino).path
    }

    /// Path of `name` in directory `parent` (a name that may be gone).
    pub fn child_path(&self, parent: u64, name: &[u8]) -> String {
        let prefix = self.dir_place(parent).map_or_else(|| format!("<inode {parent}>"), |d| d.path.clone());
        format!("{prefix}/{}", String::from_utf8_lossy(name))
    }

    /// Path and patient of `ino` in one walk.
    pub fn place(&self, ino: u64) -> Place {
        let unknown = || {
            let path = format!("<inode {ino}>");
            Place { patient: path.as_str().into(), path }
        };
        if ino == ROOT_INO {
            return Place { path: "/".into(), patient: unknown().patient };
        }
        let (parent, name, folder_root) = match self.map.read().get(&ino) {
            Some(n) => (n.parent, Arc::clone(&n.name), n.folder_root),
            None => return unknown(),
        };
        let Some(dir) = self.dir_place(parent) else { return unknown() };
        let mut path = String::with_capacity(dir.path.len() + 1 + name.len());
        path.push_str(&dir.path);
        path.push('/');
        path.push_str(&name);
        // A folder root is its own patient (as a child of a folder root is).
        let patient = if folder_root { name } else { dir.patient.clone().unwrap_or(name) };
        Place { path, patient }
    }

    /// The place of directory `dir`, remembered or walked to the root.
    fn dir_place(&self, dir: u64) -> Option<Arc<DirPlace>> {
        // Read before the walk: a rename during it makes the result stale at once.
        let generation = self.generation.load(Ordering::Relaxed);
        {
            let mut recent = self.recent.lock();
            if let Some(k) = recent.iter().position(|&(d, g, _)| d == dir && g == generation) {
                let hit = recent.remove(k);
                let place = Arc::clone(&hit.2);
                recent.push(hit);
                return Some(place);
            }
        }
        let place = Arc::new(self.walk_dir(dir)?);
        let mut recent = self.recent.lock();
        recent.retain(|&(d, g, _)| d != dir && g == generation);
        if recent.len() >= RECENT_DIRS {
            recent.remove(0);
        }
        recent.push((dir, generation, Arc::clone(&place)));
        Some(place)
    }

    fn walk_dir(&self, dir: u64) -> Option<DirPlace> {
        if dir == ROOT_INO {
            return Some(DirPlace { path: String::new(), patient: None });
        }
        let map = self.map.read();
        // Bottom-up chain of the names from `dir` to a child of the root.
        let mut chain: Vec<&Named> = Vec::with_capacity(16);
        let mut cur = dir;
        while cur != ROOT_INO {
            let n = map.get(&cur).filter(|_| chain.len() < MAX_DEPTH)?;
            chain.push(n);
            cur = n.parent;
        }
        let mut path = String::with_capacity(chain.iter().map(|n| n.name.len() + 1).sum());
        for n in chain.iter().rev() {
            path.push('/');
            path.push_str(&n.name);
        }
        // A child's patient: the component just below the deepest folder
        // root, or the first component outside folders; `None` when that
        // component is the child itself.
        let patient = match chain.iter().position(|n| n.folder_root) {
            Some(0) => None,
            Some(k) => Some(Arc::clone(&chain[k - 1].name)),
            None => chain.last().map(|n| Arc::clone(&n.name)),
        };
        Some(DirPlace { path, patient })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Names {
        let n = Names::default();
        n.learn(ROOT_INO, b"cardiology", 10, true);
        n.learn(10, b"p-4410", 11, false);
        n.learn(11, b"study", 12, false);
        n.learn(12, b"img.dcm", 13, false);
        n.learn(ROOT_INO, b"scratch", 20, false);
        n.learn(20, b"notes", 21, false);
        n.learn(21, b"a.txt", 22, false);
        n
    }

    #[test]
    fn paths_and_patients() {
        let n = tree();
        let p = n.place(13);
        assert_eq!((p.path.as_str(), &*p.patient), ("/cardiology/p-4410/study/img.dcm", "p-4410"));
        let p = n.place(11);
        assert_eq!((p.path.as_str(), &*p.patient), ("/cardiology/p-4410", "p-4410"));
        // The folder root itself: its own name.
        assert_eq!(n.place(10).patient.as_ref(), "cardiology");
        // Outside folders: the first component.
        let p = n.place(22);
        assert_eq!((p.path.as_str(), &*p.patient), ("/scratch/notes/a.txt", "scratch"));
        assert_eq!(n.path(ROOT_INO), "/");
        assert_eq!(n.child_path(12, b"gone.dcm"), "/cardiology/p-4410/study/gone.dcm");
        assert_eq!(n.child_path(ROOT_INO, b"x"), "/x");
        assert_eq!(n.child_path(99, b"x"), "<inode 99>/x");
    }

    #[test]
    fn renames_and_unknown_inodes() {
        let n = tree();
        // A remembered directory place does not outlive a rename above it.
        assert_eq!(n.path(13), "/cardiology/p-4410/study/img.dcm");
        n.learn(20, b"p-moved", 11, false);
        assert_eq!(n.path(13), "/scratch/p-moved/study/img.dcm");
        assert_eq!(n.place(13).patient.as_ref(), "scratch");
        n.learn(20, b"moved.dcm", 13, false);
        assert_eq!(n.path(13), "/scratch/moved.dcm");
        assert_eq!(n.place(13).patient.as_ref(), "scratch");
        assert_eq!(n.path(99), "<inode 99>");
        // A loop (only a corrupt map could hold one) ends the walk.
        n.learn(31, b"a", 30, false);
        n.learn(30, b"b", 31, false);
        assert_eq!(n.path(30), "<inode 30>");
    }

    #[test]
    fn a_nested_folder_root_names_its_own_patients() {
        let n = tree();
        n.learn(11, b"inner", 14, true);
        n.learn(14, b"p-9", 15, false);
        n.learn(15, b"f", 16, false);
        assert_eq!(n.place(16).patient.as_ref(), "p-9");
        assert_eq!(n.place(14).patient.as_ref(), "inner");
    }
}
