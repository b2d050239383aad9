//! Audit trail, decoys and insider detection (DESIGN §3 "audit and decoys").
//!
//! The `Auditor` is the vault's `Observer`: every operation on the mount is
//! appended to the hash-chained, encrypted audit log (`log`), checkpointed
//! to the store (`cloud`), and fed to the insider monitor (`monitor`),
//! whose alerts can lock the session. `decoys` generates the synthetic
//! patients the fog node plants beside real ones.

pub mod cloud;
pub mod decoys;
pub mod log;
mod mapped;
pub mod monitor;
mod names;
pub mod read;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::vault::{Observer, Touch};
pub use log::{AuditKeys, AuditLog, Entry, Op, Record, Resume};
pub use monitor::{Alert, InsiderRules, Monitor};

/// The user and session a record names.
#[derive(Debug)]
pub struct Who {
    pub user: String,
    /// First 16 hex digits of the session id.
    pub session: String,
}

/// What the audit layer needs from the session layer.
pub trait SessionView: Send + Sync {
    /// Who is behind `uid`'s live session.
    fn who(&self, uid: u32) -> Option<Arc<Who>>;
    /// Lock `uid`'s sessions (and their user) until an admin unlocks them.
    fn lock(&self, uid: u32, rule: &str);
}

struct Handle {
    uid: u32,
    ino: u64,
    path: String,
    read_logged: bool,
    write_logged: bool,
    /// This handle made the file, no descriptor of it has been closed yet
    /// and nobody else has opened the file: its `create` record stands for
    /// the writes through it and the attributes its user sets meanwhile
    /// (see `Touch::Permission`).
    created: bool,
}

/// Fast, not DoS-resistant hashing, for the trail's maps: their keys are
/// inode and handle numbers the vault hands out, uids, and the names of
/// patients a logged-in user opens, none attacker-chosen at scale.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl Handle {
    /// Whether this handle's first read (or write) is recorded.
    fn logged(&mut self, read: bool) -> &mut bool {
        if read { &mut self.read_logged } else { &mut self.write_logged }
    }
}

pub struct Auditor {
    log: Arc<AuditLog>,
    monitor: Monitor,
    /// Set once, by the session layer (mounts without sessions have none).
    sessions: std::sync::OnceLock<Arc<dyn SessionView>>,
    names: names::Names,
    /// The insider thresholds of the newest policy the session layer has
    /// reported, with its version (defaults, version 0, until then); read on
    /// every open and read.
    rules: RwLock<(u64, Arc<InsiderRules>)>,
    /// Open files by FUSE file handle (numbers the vault hands out, not user input).
    handles: Mutex<FastMap<u64, Handle>>,
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Auditor {
    pub fn new(log: AuditLog, monitor: Monitor) -> Self {
        Auditor {
            log: Arc::new(log),
            monitor,
            sessions: std::sync::OnceLock::new(),
            names: names::Names::default(),
            rules: RwLock::default(),
            handles: Mutex::default(),
        }
    }

    /// Learn who is behind each uid from `s` (once: one session layer per mount).
    pub fn set_sessions(&self, s: Arc<dyn SessionView>) {
        if self.sessions.set(s).is_err() {
            tracing::error!("the auditor already has a session layer; keeping the first");
        }
    }

    /// The log, shared with the uploader that copies it to the store.
    pub fn log_handle(&self) -> Arc<AuditLog> {
        Arc::clone(&self.log)
    }

    /// Adopt the thresholds of policy `version`. An older version than the
    /// one held is ignored: the session layer's start and its policy thread
    /// may report two policies in either order.
    pub fn set_rules(&self, version: u64, rules: InsiderRules) {
        let mut held = self.rules.write();
        if version >= held.0 {
            *held = (version, Arc::new(rules));
        }
    }

    fn rules(&self) -> Arc<InsiderRules> {
        Arc::clone(&self.rules.read().1)
    }

    fn sessions(&self) -> Option<&Arc<dyn SessionView>> {
        self.sessions.get()
    }

    /// Append a record for `uid` (user and session filled in from its session).
    pub fn record(&self, uid: u32, op: Op, ino: u64, path: Option<&str>, detail: Option<&str>) -> Result<()> {
        let who = self.sessions().and_then(|s| s.who(uid));
        let (user, session) = who.as_deref().map(|w| (w.user.as_str(), w.session.as_str())).unzip();
        self.log.append(Entry { uid, user, session, op, ino, path, detail })?;
        Ok(())
    }

    /// Start `uid` with a clean profile: an admin has lifted its lock.
    pub fn forget_profile(&self, uid: u32) {
        self.monitor.forget(uid);
    }

    /// Record a session event whose user and session are known (login, logout, break-glass).
    pub fn record_session(&self, uid: u32, user: &str, session: &str, op: Op, detail: Option<String>) -> Result<()> {
        if matches!(op, Op::Login | Op::BreakGlass) {
            self.monitor.rearm(uid);
        }
        let e = Entry { user: Some(user), session: Some(session), detail: detail.as_deref(), ..Entry::new(uid, op) };
        self.log.append(e)?;
        Ok(())
    }

    /// Whether `uid` holds `ino` open through a handle whose write is
    /// already recorded (with `creator_only`: the handle still creating it).
    fn writing(&self, uid: u32, ino: u64, creator_only: bool) -> bool {
        self.handles
            .lock()
            .values()
            .any(|s| s.ino == ino && s.uid == uid && s.write_logged && (s.created || !creator_only))
    }

    /// Raise an insider alert for `uid`; true if the policy locks its session.
    fn alert(&self, uid: u32, rule: &'static str, detail: String) -> bool {
        let who = self.sessions().and_then(|s| s.who(uid));
        let lock = self.rules().lock_on_alert && who.is_some();
        let (user, session) = who.map(|w| (w.user.clone(), w.session.clone())).unzip();
        self.raise(Alert { time: now_secs(), rule, uid, user, session, detail, locked: lock });
        lock
    }

    /// Breaking the glass is allowed but loudly audited (DESIGN.md §3): every
    /// alert channel hears of it, and the session is not locked. The reason
    /// stays in the sealed trail: it may name a patient.
    pub fn alert_break_glass(&self, uid: u32, user: &str, session: &str, folders: usize, expires: u64) {
        let detail =
            format!("emergency access to {folders} folder(s) until {expires}; the reason is in the audit trail");
        let (user, session) = (Some(user.to_string()), Some(session.to_string()));
        self.raise(Alert { time: now_secs(), rule: "break-glass", uid, user, session, detail, locked: false });
    }

    /// Record `alert` (and the lock it carries) in the trail, then deliver it.
    fn raise(&self, alert: Alert) {
        let (uid, rule) = (alert.uid, alert.rule);
        let (user, session) = (alert.user.as_deref(), alert.session.as_deref());
        let detail = format!("{rule}: {}", alert.detail);
        let _ = self.log.append(Entry { user, session, detail: Some(&detail), ..Entry::new(uid, Op::Alert) });
        if alert.locked
            && let Some(s) = self.sessions()
        {
            s.lock(uid, rule);
            let _ = self.log.append(Entry { user, session, detail: Some(rule), ..Entry::new(uid, Op::SessionLocked) });
        }
        self.monitor.deliver(&alert, self.rules().webhook.as_deref());
    }
}

/// Calls of `Auditor::observe` and nanoseconds spent in them (wall time,
/// locks included), in builds with `--features bench-audit-timing`: what
/// the trail adds to the request path, measured rather than inferred.
#[cfg(feature = "bench-audit-timing")]
static OBSERVE_TIME: [std::sync::atomic::AtomicU64; 2] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// `(calls, nanoseconds)` of `Auditor::observe` so far (zeros unless built
/// with `--features bench-audit-timing`).
pub fn observe_time() -> (u64, u64) {
    #[cfg(feature = "bench-audit-timing")]
    {
        use std::sync::atomic::Ordering::Relaxed;
        (OBSERVE_TIME[0].load(Relaxed), OBSERVE_TIME[1].load(Relaxed))
    }
    #[cfg(not(feature = "bench-audit-timing"))]
    (0, 0)
}

impl Observer for Auditor {
    fn observe(&self, uid: u32, touch: Touch<'_>) -> Result<()> {
        #[cfg(feature = "bench-audit-timing")]
        let start = std::time::Instant::now();
        let result = self.observe_touch(uid, touch);
        #[cfg(feature = "bench-audit-timing")]
        {
            use std::sync::atomic::Ordering::Relaxed;
            OBSERVE_TIME[0].fetch_add(1, Relaxed);
            OBSERVE_TIME[1].fetch_add(start.elapsed().as_nanos() as u64, Relaxed);
        }
        result
    }
}

impl Auditor {
    fn observe_touch(&self, uid: u32, touch: Touch<'_>) -> Result<()> {
        match touch {
            Touch::Name { parent, name, ino, folder_root } => {
                self.names.learn(parent, name, ino, folder_root);
                Ok(())
            }
            Touch::Open { ino, handle, write, created, decoy, .. } => {
                let names::Place { path, patient } = self.names.place(ino);
                let mode = if write { "write" } else { "read" };
                let op = if created { Op::Create } else { Op::Open };
                self.record(uid, op, ino, Some(&path), Some(mode))?;
                // A new file's `create (write)` record covers the writes through
                // the handle that made it: a second record per imported file
                // (tar, cp, a PACS store) would say nothing more.
                let h = Handle { uid, ino, path, read_logged: false, write_logged: created && write, created };
                {
                    let mut handles = self.handles.lock();
                    // Someone else has the file now: it is no longer being made.
                    for other in handles.values_mut().filter(|o| o.ino == ino) {
                        other.created = false;
                    }
                    handles.insert(handle, h);
                }
                let refused = if decoy {
                    self.alert(uid, "decoy", format!("decoy record opened (inode {ino})"))
                } else if write {
                    false // profiles watch what leaves the vault, not imports
                } else {
                    // The rules' guard ends with this statement (an alert reads them again).
                    let fired = self.monitor.on_open(uid, &patient, &self.rules.read().1);
                    let mut locked = false;
                    for (rule, detail) in fired {
                        locked |= self.alert(uid, rule, detail);
                    }
                    locked
                };
                if refused {
                    self.handles.lock().remove(&handle); // no release follows a refused open
                    return Err(Error::AccessDenied);
                }
                Ok(())
            }
            Touch::Read { ino, handle, bytes } | Touch::Write { ino, handle, bytes } => {
                let is_read = matches!(touch, Touch::Read { .. });
                {
                    let mut handles = self.handles.lock();
                    let op = if is_read { Op::Read } else { Op::Write };
                    // A handle number is only trusted for the inode it was opened on.
                    match handles.get_mut(&handle).filter(|s| s.ino == ino) {
                        Some(s) => {
                            if !*s.logged(is_read) {
                                // Under the lock, so the path is lent, not copied.
                                self.record(uid, op, ino, Some(&s.path), None)?;
                                *s.logged(is_read) = true;
                            }
                        }
                        // Opened before this daemon started observing: log once by inode.
                        None => {
                            let path = self.names.path(ino);
                            self.record(uid, op, ino, Some(&path), None)?;
                            let h =
                                Handle { uid, ino, path, read_logged: is_read, write_logged: !is_read, created: false };
                            handles.insert(handle, h);
                        }
                    }
                }
                if is_read {
                    let fired = self.monitor.on_read(uid, bytes, &self.rules.read().1);
                    let mut locked = false;
                    for (rule, detail) in fired {
                        locked |= self.alert(uid, rule, detail);
                    }
                    if locked {
                        return Err(Error::AccessDenied);
                    }
                }
                Ok(())
            }
            Touch::Flush { handle } => {
                if let Some(s) = self.handles.lock().get_mut(&handle) {
                    s.created = false; // what follows close(2) is not part of making the file
                }
                Ok(())
            }
            Touch::Release { handle } => {
                self.handles.lock().remove(&handle);
                Ok(())
            }
            Touch::Create { ino } => self.record(uid, Op::Create, ino, Some(&self.names.path(ino)), None),
            Touch::Delete { parent, name } => {
                let path = self.names.child_path(parent, name);
                self.record(uid, Op::Delete, 0, Some(&path), None)
            }
            Touch::Rename { parent, name, newparent, newname } => {
                let from = self.names.child_path(parent, name);
                let to = self.names.child_path(newparent, newname);
                // The moved inode is renamed in `names` by the kernel's next lookup.
                self.record(uid, Op::Rename, 0, Some(&from), Some(&to))
            }
            Touch::Permission { ino, what } => {
                // Part of that write: tar and cp -p set the times of each file
                // they write before closing it, and the owner, mode and xattrs
                // of each file they create. A truncate, and any change to an
                // existing file's owner, mode or xattrs, is always recorded.
                if what != "truncate" && self.writing(uid, ino, what != "times") {
                    return Ok(());
                }
                self.record(uid, Op::Permission, ino, Some(&self.names.path(ino)), Some(what))
            }
            Touch::Denied { ino, write } => {
                let what = if write { "write" } else { "read" };
                self.record(uid, Op::Denied, ino, Some(&self.names.path(ino)), Some(what))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key32;

    fn ops(dir: &std::path::Path, key: &Key32) -> Vec<(Op, Option<String>, Option<String>)> {
        let bytes = std::fs::read(log::log_path(dir)).unwrap();
        let keys = AuditKeys::new(key, "r");
        let (frames, _) = log::split_frames(&bytes);
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| keys.open(i as u64 + 1, f).unwrap())
            .map(|r| (r.op, r.path, r.detail))
            .collect()
    }

    /// An auditor on a fresh log in its own directory (alerts to `alerts` there).
    fn auditor() -> (tempfile::TempDir, Key32, Auditor) {
        let dir = tempfile::tempdir().unwrap();
        let key = Key32::random();
        let log = AuditLog::open(dir.path(), AuditKeys::new(&key, "r"), Resume::default()).unwrap();
        let a = Auditor::new(log, Monitor::new(dir.path().join("alerts")));
        (dir, key, a)
    }

    #[test]
    fn a_new_files_create_record_covers_its_writes_and_attributes_until_close_but_not_an_existing_files() {
        let (dir, key, a) = auditor();
        let name =
            |ino, name: &'static [u8]| Touch::Name { parent: crate::vault::ROOT_INO, name, ino, folder_root: false };
        for (ino, n) in [(5, &b"new.dcm"[..]), (6, b"old.dcm"), (7, b"shared.dcm"), (8, b"cut.dcm")] {
            a.observe(0, name(ino, n)).unwrap();
        }
        let open = |ino, handle, created| Touch::Open { ino, handle, write: true, created, decoy: false, domain: 0 };
        let perm = |ino, what| Touch::Permission { ino, what };
        // tar: create, times (before any write), write, fchown, fchmod, futimens, close.
        a.observe(0, open(5, 1, true)).unwrap();
        a.observe(0, perm(5, "times")).unwrap();
        a.observe(0, Touch::Write { ino: 5, handle: 1, bytes: 10 }).unwrap();
        for what in ["chown", "chmod", "setxattr", "times"] {
            a.observe(0, perm(5, what)).unwrap();
        }
        // Another uid changing the new file's mode meanwhile is recorded.
        a.observe(7, perm(5, "chmod")).unwrap();
        // After close(2) (the handle lives on until its release): recorded.
        a.observe(0, Touch::Flush { handle: 1 }).unwrap();
        a.observe(0, perm(5, "chmod")).unwrap();
        a.observe(0, Touch::Release { handle: 1 }).unwrap();
        // An existing file opened for writing: its write and mode change are recorded.
        a.observe(0, open(6, 2, false)).unwrap();
        a.observe(0, Touch::Write { ino: 6, handle: 2, bytes: 10 }).unwrap();
        a.observe(0, perm(6, "times")).unwrap();
        a.observe(0, perm(6, "chmod")).unwrap();
        // A new file someone else has opened is no longer being made.
        a.observe(0, open(7, 3, true)).unwrap();
        a.observe(9, Touch::Open { ino: 7, handle: 4, write: false, created: false, decoy: false, domain: 0 }).unwrap();
        a.observe(0, perm(7, "chmod")).unwrap();
        // A truncate is always recorded, even by the creator.
        a.observe(0, open(8, 5, true)).unwrap();
        a.observe(0, perm(8, "truncate")).unwrap();
        // A handle number reused for another inode does not inherit its state.
        a.observe(0, Touch::Write { ino: 6, handle: 5, bytes: 1 }).unwrap();
        let got: Vec<_> = ops(dir.path(), &key).into_iter().map(|(op, p, d)| (op, p.unwrap(), d)).collect();
        let want = [
            (Op::Create, "/new.dcm", Some("write")),
            (Op::Permission, "/new.dcm", Some("chmod")),
            (Op::Permission, "/new.dcm", Some("chmod")),
            (Op::Open, "/old.dcm", Some("write")),
            (Op::Write, "/old.dcm", None),
            (Op::Permission, "/old.dcm", Some("chmod")),
            (Op::Create, "/shared.dcm", Some("write")),
            (Op::Open, "/shared.dcm", Some("read")),
            (Op::Permission, "/shared.dcm", Some("chmod")),
            (Op::Create, "/cut.dcm", Some("write")),
            (Op::Permission, "/cut.dcm", Some("truncate")),
            (Op::Write, "/old.dcm", None),
        ];
        let want: Vec<_> = want.iter().map(|(op, p, d)| (*op, p.to_string(), d.map(String::from))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn breaking_the_glass_alerts_without_locking_or_naming_the_reason() {
        let (dir, key, a) = auditor();
        assert!(a.rules().lock_on_alert, "the default policy locks on alerts");
        a.alert_break_glass(1001, "dave", "0123456789abcdef", 2, 1_800_000_000);
        let detail = "break-glass: emergency access to 2 folder(s) until 1800000000; the reason is in the audit trail";
        assert_eq!(ops(dir.path(), &key), [(Op::Alert, None, Some(detail.to_string()))]);
        let line = std::fs::read_to_string(dir.path().join("alerts")).unwrap();
        let alert: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(alert["rule"], "break-glass");
        assert_eq!(alert["user"], "dave");
        assert_eq!(alert["session"], "0123456789abcdef");
        assert_eq!(alert["locked"], false);
    }
}
