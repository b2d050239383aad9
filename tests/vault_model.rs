//! The vault compared op by op with a reference model of a filesystem (as
//! mountpoint-s3 does): random writes at any offset, truncates, hard links,
//! renames, unlink-while-open, commits under memory pressure and remounts.
//! Small chunk sizes make every file span many chunks.

use std::collections::BTreeMap;
use std::path::Path;

use fogvault::chunking::ChunkParams;
use fogvault::metadata::{FileKind, Timespec};
use fogvault::repo;
use fogvault::vault::{Caller, DropPrivs, ROOT_INO, RenameFlags, SetAttr, TimeSet, Vault, VaultOptions, XattrMode};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a.dcm", "b.txt", "c.json", "d.hl7"];
const ME: Caller = Caller { uid: 0, gid: 0 };

#[derive(Debug, Clone)]
enum Op {
    Write {
        name: usize,
        off: u32,
        len: u32,
        seed: u8,
    },
    Truncate {
        name: usize,
        size: u32,
    },
    /// chmod + utimens (mtime), as tar does before closing a file it wrote.
    SetMode {
        name: usize,
        mode: u32,
        mtime: i64,
    },
    Flush {
        name: usize,
    },
    Reopen {
        name: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
    Unlink {
        name: usize,
    },
    Rename {
        from: usize,
        to: usize,
        noreplace: bool,
    },
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    prop_oneof![
        6 => (n.clone(), 0u32..400_000, 1u32..150_000, any::<u8>()).prop_map(|(name, off, len, seed)| Op::Write { name, off, len, seed }),
        2 => (n.clone(), 0u32..450_000).prop_map(|(name, size)| Op::Truncate { name, size }),
        2 => (n.clone(), 0u32..0o1000, 0i64..1_000_000_000).prop_map(|(name, mode, mtime)| Op::SetMode { name, mode, mtime }),
        2 => n.clone().prop_map(|name| Op::Flush { name }),
        1 => n.clone().prop_map(|name| Op::Reopen { name }),
        1 => (n.clone(), n.clone()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => n.clone().prop_map(|name| Op::Unlink { name }),
        1 => (n.clone(), n.clone(), any::<bool>()).prop_map(|(from, to, noreplace)| Op::Rename { from, to, noreplace }),
        1 => Just(Op::Remount),
    ]
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    // Half the seeds give zero runs (holes), the rest pseudo-random bytes.
    if seed.is_multiple_of(4) {
        return vec![0; len];
    }
    let mut x = (seed as u32).wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Harness {
    repo: repo::Repo,
    cache: std::path::PathBuf,
    vault: Option<Vault>,
    /// name → inode
    names: BTreeMap<usize, u64>,
    /// inode → (content, open)
    files: BTreeMap<u64, (Vec<u8>, bool)>,
    /// inode → (permission bits, mtime seconds) last set by `SetMode`
    modes: BTreeMap<u64, (u32, i64)>,
}

fn opts() -> VaultOptions {
    VaultOptions {
        chunk_params: Some(ChunkParams { min: 2048, avg: 8192, max: 32768 }),
        dirty_limit: 64 * 1024,
        ..VaultOptions::default()
    }
}

impl Harness {
    fn new(dir: &Path) -> Self {
        let repo = repo::init(dir.join("repo").to_str().unwrap(), b"pw").unwrap();
        let cache = dir.join("cache");
        let vault = Vault::open_with(&repo, &cache, ME, opts()).unwrap();
        Harness {
            repo,
            cache,
            vault: Some(vault),
            names: BTreeMap::new(),
            files: BTreeMap::new(),
            modes: BTreeMap::new(),
        }
    }
    fn v(&self) -> &Vault {
        self.vault.as_ref().unwrap()
    }
    /// The crash: the vault goes without a shutdown, and the next mount
    /// (replaying the intent log) is returned.
    fn crash_and_remount(self) -> Vault {
        let Harness { repo, cache, vault, .. } = self;
        drop(vault);
        Vault::open_with(&repo, &cache, ME, opts()).unwrap()
    }
    fn ensure(&mut self, name: usize) -> u64 {
        if let Some(&ino) = self.names.get(&name) {
            return ino;
        }
        let a = self.v().create_node(ME, ROOT_INO, NAMES[name].as_bytes(), FileKind::File, 0o644, 0, b"").unwrap();
        self.v().open_file(a.ino, false).unwrap();
        self.names.insert(name, a.ino);
        self.files.insert(a.ino, (Vec::new(), true));
        a.ino
    }
    fn drop_link(&mut self, ino: u64) {
        if !self.names.values().any(|&i| i == ino) {
            // Last link gone: the open handle keeps the data alive until release.
            if let Some((_, open)) = self.files.get(&ino)
                && *open
            {
                let data = self.v().read(ino, 0, 1 << 20).unwrap();
                assert_eq!(data, self.files[&ino].0, "unlinked-but-open file must stay readable");
                self.v().release(ino).unwrap();
            }
            self.files.remove(&ino);
            assert!(self.v().getattr(ino).is_err(), "freed inode must be gone");
        }
    }
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { name, off, len, seed } => {
                let ino = self.ensure(name);
                let data = pattern(len as usize, seed);
                assert_eq!(self.v().write(ino, off as u64, &data).unwrap(), data.len());
                let f = &mut self.files.get_mut(&ino).unwrap().0;
                let end = off as usize + data.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[off as usize..end].copy_from_slice(&data);
            }
            Op::Truncate { name, size } => {
                let ino = self.ensure(name);
                self.v().setattr(ino, &SetAttr { size: Some(size as u64), ..Default::default() }).unwrap();
                self.files.get_mut(&ino).unwrap().0.resize(size as usize, 0);
            }
            Op::SetMode { name, mode, mtime } => {
                let ino = self.ensure(name);
                let at = TimeSet::At(Timespec { secs: mtime, nanos: 0 });
                let set = SetAttr { mode: Some(mode), mtime: Some(at), ..Default::default() };
                let a = self.v().setattr(ino, &set).unwrap();
                assert_eq!((a.perm, a.mtime.secs), (mode, mtime), "attributes returned by setattr");
                self.modes.insert(ino, (mode, mtime));
            }
            Op::Flush { name } => {
                if let Some(&ino) = self.names.get(&name) {
                    self.v().flush(ino, true).unwrap();
                }
            }
            Op::Reopen { name } => {
                if let Some(&ino) = self.names.get(&name) {
                    self.v().release(ino).unwrap();
                    self.v().open_file(ino, false).unwrap();
                }
            }
            Op::Link { from, to } => {
                if let (Some(&ino), None) = (self.names.get(&from), self.names.get(&to)) {
                    self.v().link(ino, ROOT_INO, NAMES[to].as_bytes()).unwrap();
                    self.names.insert(to, ino);
                }
            }
            Op::Unlink { name } => {
                if let Some(ino) = self.names.remove(&name) {
                    self.v().unlink(ROOT_INO, NAMES[name].as_bytes()).unwrap();
                    self.drop_link(ino);
                }
            }
            Op::Rename { from, to, noreplace } => {
                let Some(&src) = self.names.get(&from) else { return };
                let flags = RenameFlags { noreplace, exchange: false };
                let r = self.v().rename(ROOT_INO, NAMES[from].as_bytes(), ROOT_INO, NAMES[to].as_bytes(), flags);
                match self.names.get(&to).copied() {
                    Some(_) if noreplace => {
                        assert!(r.is_err(), "RENAME_NOREPLACE over an existing name (Linux: EEXIST even onto itself)")
                    }
                    Some(dst) if dst == src => r.unwrap(),
                    dst => {
                        r.unwrap();
                        self.names.remove(&from);
                        self.names.insert(to, src);
                        if let Some(d) = dst {
                            self.drop_link(d);
                        }
                    }
                }
            }
            Op::Remount => {
                for (&ino, (_, open)) in &self.files {
                    if *open {
                        self.v().release(ino).unwrap();
                    }
                }
                self.v().shutdown().unwrap();
                self.vault = None;
                self.vault = Some(Vault::open_with(&self.repo, &self.cache, ME, opts()).unwrap());
                for (&ino, (_, open)) in &self.files {
                    if *open {
                        self.v().open_file(ino, false).unwrap();
                    }
                }
            }
        }
    }
    fn check(&self) {
        let mut listed: Vec<Vec<u8>> =
            self.v().readdir(ROOT_INO, 2, 100).unwrap().into_iter().map(|d| d.name).collect();
        listed.sort();
        let mut expect: Vec<Vec<u8>> = self.names.keys().map(|&n| NAMES[n].as_bytes().to_vec()).collect();
        expect.sort();
        assert_eq!(listed, expect, "directory listing");
        for (&name, &ino) in &self.names {
            let a = self.v().lookup(ROOT_INO, NAMES[name].as_bytes()).unwrap();
            assert_eq!(a.ino, ino);
            let model = &self.files[&ino].0;
            assert_eq!(a.size, model.len() as u64, "size of {}", NAMES[name]);
            let links = self.names.values().filter(|&&i| i == ino).count() as u32;
            assert_eq!(a.nlink, links, "nlink of {}", NAMES[name]);
            if let Some(&(mode, mtime)) = self.modes.get(&ino) {
                assert_eq!(a.perm, mode, "mode of {}", NAMES[name]);
                // A later write moves mtime on; it never goes back before the set value.
                assert!(a.mtime.secs >= mtime, "mtime of {}", NAMES[name]);
            }
            let got = self.v().read(ino, 0, model.len() + 10).unwrap();
            assert!(got == *model, "content of {} differs (len {} vs {})", NAMES[name], got.len(), model.len());
            // A read at an odd offset and length exercises chunk slicing.
            if model.len() > 10 {
                let (o, l) = (model.len() / 3, model.len() / 2);
                assert_eq!(self.v().read(ino, o as u64, l).unwrap(), model[o..o + l]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn vault_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness::new(dir.path());
        for op in &ops {
            h.apply(op);
            h.check();
        }
        h.apply(&Op::Remount);
        h.check();
    }
}

#[test]
fn sequential_write_matches_whole_file_chunking() {
    // Pressure commits keep the tail dirty, so a streamed file gets the same
    // chunks as one pass over it: a second identical file adds no chunk.
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let data = pattern(900_000, 7);
    for name in [0, 1] {
        let ino = h.ensure(name);
        for (i, piece) in data.chunks(4096 * 3 + 17).enumerate() {
            h.v().write(ino, (i * (4096 * 3 + 17)) as u64, piece).unwrap();
        }
        h.v().release(ino).unwrap();
        h.files.get_mut(&ino).unwrap().1 = false;
        h.files.get_mut(&ino).unwrap().0 = data.clone();
    }
    h.check();
    h.v().shutdown().unwrap();
    let stats = fogvault::tools::stats(&h.repo, &h.cache).unwrap();
    assert_eq!(stats.logical_bytes, 2 * data.len() as u64);
    assert_eq!(stats.unique_bytes, data.len() as u64, "the second copy must be fully deduplicated");
}

/// Namespace operations (deferred in memory until a commit) and durable
/// points, for the crash test below.
#[derive(Debug, Clone)]
enum NsOp {
    /// create + write + close: close is durable, and commits every deferred change before it
    Create {
        name: usize,
        tag: u8,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
    Unlink {
        name: usize,
    },
    /// chmod of a closed file
    Chmod {
        name: usize,
        mode: u32,
    },
    /// fsync of the root directory
    Sync,
}

fn ns_op() -> impl Strategy<Value = NsOp> {
    let n = 0..NAMES.len();
    prop_oneof![
        3 => (n.clone(), any::<u8>()).prop_map(|(name, tag)| NsOp::Create { name, tag }),
        3 => (n.clone(), n.clone()).prop_map(|(from, to)| NsOp::Rename { from, to }),
        1 => (n.clone(), n.clone()).prop_map(|(from, to)| NsOp::Link { from, to }),
        2 => n.clone().prop_map(|name| NsOp::Unlink { name }),
        2 => (n.clone(), 0u32..0o1000).prop_map(|(name, mode)| NsOp::Chmod { name, mode }),
        1 => Just(NsOp::Sync),
    ]
}

/// name → (content, mode) as a user sees the root directory.
type Listing = BTreeMap<Vec<u8>, (Vec<u8>, u32)>;

fn listing(v: &Vault) -> Listing {
    let entries = v.readdir(ROOT_INO, 2, 100).unwrap();
    entries
        .iter()
        .map(|d| {
            let a = v.lookup(ROOT_INO, &d.name).unwrap();
            let links = entries.iter().filter(|e| e.ino == d.ino).count() as u32;
            assert_eq!(a.nlink, links, "nlink matches the names that reach the inode");
            (d.name.clone(), (v.read(d.ino, 0, 1 << 16).unwrap().to_vec(), a.perm))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// A crash (the vault dropped without shutdown, as by kill -9) keeps
    /// every operation up to the last durable point (a close after writing,
    /// an fsync) and then a prefix of the later ones: never a state that
    /// did not exist, never a half-applied rename, never a lost closed file.
    #[test]
    fn crash_keeps_a_prefix_of_namespace_operations(ops in proptest::collection::vec(ns_op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let h = Harness::new(dir.path());
        let v = h.v();
        // The model: name → file, file → (content, mode).
        let mut names: BTreeMap<usize, u64> = BTreeMap::new();
        let mut files: BTreeMap<u64, (Vec<u8>, u32)> = BTreeMap::new();
        // Every state since the last durable point (the first is durable).
        let mut since_durable: Vec<Listing> = vec![Listing::new()];
        for op in &ops {
            let name = |i: usize| NAMES[i].as_bytes();
            let exists = |i: usize| v.lookup(ROOT_INO, name(i)).is_ok();
            let durable = match *op {
                NsOp::Create { name: n, tag } => {
                    if exists(n) {
                        continue;
                    }
                    let a = v.create_node(ME, ROOT_INO, name(n), FileKind::File, 0o640, 0, b"").unwrap();
                    v.open_file(a.ino, false).unwrap();
                    let data = pattern(100 + tag as usize, tag | 1);
                    v.write(a.ino, 0, &data).unwrap();
                    v.flush(a.ino, true).unwrap();
                    v.release(a.ino).unwrap();
                    names.insert(n, a.ino);
                    files.insert(a.ino, (data, 0o640));
                    true
                }
                NsOp::Rename { from, to } => {
                    if !exists(from) {
                        continue;
                    }
                    v.rename(ROOT_INO, name(from), ROOT_INO, name(to), RenameFlags::default()).unwrap();
                    let src = names[&from];
                    if names.get(&to) != Some(&src) {
                        names.remove(&from);
                        names.insert(to, src);
                    }
                    false
                }
                NsOp::Link { from, to } => {
                    if !exists(from) || exists(to) {
                        continue;
                    }
                    let ino = v.lookup(ROOT_INO, name(from)).unwrap().ino;
                    v.link(ino, ROOT_INO, name(to)).unwrap();
                    names.insert(to, ino);
                    false
                }
                NsOp::Unlink { name: n } => {
                    if !exists(n) {
                        continue;
                    }
                    v.unlink(ROOT_INO, name(n)).unwrap();
                    names.remove(&n);
                    false
                }
                NsOp::Chmod { name: n, mode } => {
                    let Ok(a) = v.lookup(ROOT_INO, name(n)) else { continue };
                    v.setattr(a.ino, &SetAttr { mode: Some(mode), ..Default::default() }).unwrap();
                    files.get_mut(&a.ino).unwrap().1 = mode;
                    false
                }
                NsOp::Sync => {
                    v.fsync(ROOT_INO).unwrap();
                    true
                }
            };
            let now: Listing = names.iter().map(|(&n, ino)| (NAMES[n].as_bytes().to_vec(), files[ino].clone())).collect();
            prop_assert_eq!(&listing(v), &now, "the mount after {:?}", op);
            if durable {
                since_durable.clear();
            }
            since_durable.push(now);
        }
        let Harness { repo, cache, vault, .. } = h;
        drop(vault); // the crash: no shutdown, deferred changes are lost
        let v = Vault::open_with(&repo, &cache, ME, opts()).unwrap();
        let after = listing(&v);
        prop_assert!(
            since_durable.contains(&after),
            "state after the crash {:?} is none of the {} states since the last durable point",
            after.keys().collect::<Vec<_>>(),
            since_durable.len()
        );
        v.shutdown().unwrap();
        let report = fogvault::tools::verify(&repo, &cache, true, |_, _| {}).unwrap();
        prop_assert!(report.findings.is_empty(), "verify after the crash: {:?}", report.findings);
    }
}

/// A machine crash can lose every page nobody synced. Closes are durable
/// through the intent log (one flush), not through the staged packs: with
/// the packs' unsynced bytes zeroed and their side files emptied after the
/// "crash", every closed file still reads back whole, and verify is clean.
#[test]
fn closed_files_survive_losing_the_unsynced_pack_pages() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(dir.path());
    let v = h.v();
    let mut written = Vec::new();
    for i in 0..40u8 {
        let name = format!("r{i:02}.txt");
        let a = v.create_node(ME, ROOT_INO, name.as_bytes(), FileKind::File, 0o640, 0, b"").unwrap();
        v.open_file(a.ino, false).unwrap();
        let data = pattern(300 + 97 * i as usize, i | 1);
        v.write(a.ino, 0, &data).unwrap();
        v.flush(a.ino, true).unwrap();
        v.release(a.ino).unwrap();
        written.push((name, data));
    }
    let Harness { repo, cache, vault, .. } = h;
    drop(vault); // the crash
    // Tools reading the index alone say what the intent log still holds.
    let before = fogvault::tools::stats(&repo, &cache).unwrap();
    assert!(before.unapplied_transactions >= 40, "unapplied: {}", before.unapplied_transactions);
    let mut zeroed = 0;
    for e in std::fs::read_dir(cache.join("staging")).unwrap() {
        let p = e.unwrap().path();
        let len = std::fs::metadata(&p).unwrap().len();
        if p.extension().is_some_and(|x| x == "data") {
            std::fs::write(&p, vec![0u8; len as usize]).unwrap();
            zeroed += len;
        } else {
            std::fs::write(&p, b"").unwrap();
        }
    }
    assert!(zeroed > 0, "the test needs staged bytes to lose");
    let v = Vault::open_with(&repo, &cache, ME, opts()).unwrap();
    for (name, data) in &written {
        let a = v.lookup(ROOT_INO, name.as_bytes()).unwrap();
        v.open_file(a.ino, false).unwrap();
        let got = v.read(a.ino, 0, data.len() + 10).unwrap();
        assert_eq!(&got[..], &data[..], "{name} after the crash");
        v.release(a.ino).unwrap();
    }
    v.shutdown().unwrap();
    drop(v);
    let report = fogvault::tools::verify(&repo, &cache, true, |_, _| {}).unwrap();
    assert!(report.findings.is_empty(), "verify after the crash: {:?}", report.findings);
    assert_eq!(report.unapplied_transactions, 0, "the remount applied and cleared the log");
    assert_eq!(fogvault::tools::stats(&repo, &cache).unwrap().files, 40);
}

/// A commit under memory pressure keeps the piece after the last cut in RAM.
/// It must never install a record that ends before bytes an earlier fsync
/// made durable: another file's fsync makes that record durable, and a crash
/// would then cut the file short.
#[test]
fn a_pressure_commit_never_shortens_what_was_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(dir.path());
    let v = h.v();
    let a = v.create_node(ME, ROOT_INO, b"study.dcm", FileKind::File, 0o640, 0, b"").unwrap();
    v.open_file(a.ino, false).unwrap();
    let old = pattern(100_000, 7);
    v.write(a.ino, 0, &old).unwrap();
    v.fsync(a.ino).unwrap();
    // Rewrite the end and append a little, then scattered overwrites until
    // the dirty bytes pass the limit (64 KiB) and force a commit.
    v.write(a.ino, 99_000, &pattern(1_010, 9)).unwrap();
    for k in 0..20u64 {
        v.write(a.ino, k * 4_500, &pattern(4_000, k as u8 + 11)).unwrap();
    }
    let b = v.create_node(ME, ROOT_INO, b"other.txt", FileKind::File, 0o640, 0, b"").unwrap();
    v.open_file(b.ino, false).unwrap();
    v.write(b.ino, 0, b"x").unwrap();
    v.fsync(b.ino).unwrap();
    let v = h.crash_and_remount();
    let a = v.lookup(ROOT_INO, b"study.dcm").unwrap();
    assert!(a.size >= 100_000, "the file came back {} bytes long; 100,000 were fsynced", a.size);
    v.shutdown().unwrap();
}

/// An in-memory truncate (deferred: the file is open with uncommitted bytes)
/// followed by a long sequential write that streams: the chunks the truncate
/// dropped lose their references, so deleting the file leaves no live chunk.
#[test]
fn a_truncate_before_a_streamed_write_drops_the_old_references() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(dir.path());
    let v = h.v();
    let a = v.create_node(ME, ROOT_INO, b"series.dcm", FileKind::File, 0o640, 0, b"").unwrap();
    v.open_file(a.ino, false).unwrap();
    v.write(a.ino, 0, &pattern(300_000, 3)).unwrap();
    v.fsync(a.ino).unwrap();
    v.write(a.ino, 0, b"dirty").unwrap();
    v.setattr(a.ino, &SetAttr { size: Some(0), ..SetAttr::default() }).unwrap();
    let new = pattern(400_000, 5);
    for (i, piece) in new.chunks(4096).enumerate() {
        v.write(a.ino, (i * 4096) as u64, piece).unwrap();
    }
    v.flush(a.ino, true).unwrap();
    v.release(a.ino).unwrap();
    v.open_file(a.ino, false).unwrap();
    assert_eq!(&v.read(a.ino, 0, 500_000).unwrap()[..], &new[..]);
    v.release(a.ino).unwrap();
    v.unlink(ROOT_INO, b"series.dcm").unwrap();
    let Harness { repo, cache, vault, .. } = h;
    let vault = vault.unwrap();
    vault.shutdown().unwrap();
    drop(vault);
    let stats = fogvault::tools::stats(&repo, &cache).unwrap();
    assert_eq!(stats.chunks, 0, "chunks still referenced after the only file was deleted");
}

/// A write drops privileges as a local disk's does (the kernel leaves it to
/// the daemon on direct-I/O handles): file capabilities go with a write(2)
/// but not with a mapping's writeback; an unprivileged writer's write also
/// clears set-user-ID, and set-group-ID when the group may execute. Other
/// attributes stay, and all of it is durable with the bytes at close.
#[test]
fn writes_drop_file_capabilities_and_unprivileged_writes_clear_setid() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(dir.path());
    let v = h.v();
    let cap = b"\x00\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let unprivileged = DropPrivs { capabilities: true, setid: true };
    let writeback = DropPrivs { capabilities: false, setid: false };
    // (name, mode, what the write drops, mode after it, capabilities kept)
    let cases: [(&[u8], u32, DropPrivs, u32, bool); 5] = [
        (b"tool", 0o6755, unprivileged, 0o755, false),
        (b"lockable", 0o2745, unprivileged, 0o2745, false), // no group execute: set-group-ID stays
        (b"roots", 0o6755, DropPrivs::WRITE, 0o6755, false),
        (b"plain", 0o644, unprivileged, 0o644, false),
        (b"mapped", 0o755, writeback, 0o755, true),
    ];
    for (name, mode, drop, _, _) in cases {
        let a = v.create_node(ME, ROOT_INO, name, FileKind::File, mode, 0, b"").unwrap();
        v.setxattr(a.ino, b"security.capability", cap, XattrMode::Any).unwrap();
        v.setxattr(a.ino, b"user.study", b"CT", XattrMode::Any).unwrap();
        v.open_file(a.ino, false).unwrap();
        v.write_dropping(a.ino, 0, b"patched", drop).unwrap();
        assert_eq!(v.getxattr(a.ino, b"security.capability").is_ok(), drop == writeback);
        v.flush(a.ino, true).unwrap(); // close(2): durable from here
        v.release(a.ino).unwrap();
    }
    let v = h.crash_and_remount(); // the intent log brings the closes back
    for (name, _, _, want, caps_kept) in cases {
        let a = v.lookup(ROOT_INO, name).unwrap();
        let name = String::from_utf8_lossy(name);
        assert_eq!(a.perm & 0o7777, want, "mode of {name} after the write");
        let mut names = vec![b"user.study".to_vec()];
        if caps_kept {
            names.insert(0, b"security.capability".to_vec());
        }
        assert_eq!(v.listxattr(a.ino).unwrap(), names, "xattrs of {name}");
        assert_eq!(a.size, 7);
    }
    v.shutdown().unwrap();
}

/// A write with no open handle (a mapping's writeback after the last close)
/// loads the file's state from the index. An attribute change racing with
/// it on the closed file (here setxattr; chmod takes the same path) must
/// not be undone by that state's commit.
#[test]
fn a_handleless_write_never_undoes_a_concurrent_attribute_change() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(dir.path());
    let v = h.v();
    for round in 0..400u32 {
        let name = format!("mapped{round}.dcm");
        let a = v.create_node(ME, ROOT_INO, name.as_bytes(), FileKind::File, 0o600, 0, b"").unwrap();
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                v.write(a.ino, 0, b"written back").unwrap();
            });
            s.spawn(|| {
                start.wait();
                v.setxattr(a.ino, b"user.series", b"CT", XattrMode::Any).unwrap();
            });
        });
        v.flush(a.ino, false).unwrap();
        assert_eq!(v.getxattr(a.ino, b"user.series").ok().as_deref(), Some(&b"CT"[..]), "round {round}: lost");
        assert_eq!(v.getattr(a.ino).unwrap().size, 12);
    }
}
