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
pub mod monitor;
pub mod read;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::vault::{Observer, Touch};
pub use log::{AuditKeys, AuditLog, Entry, Op, Record};
pub use monitor::{Alert, InsiderRules, Monitor};

/// Bound of the inode → name map (cleared when full; refilled by lookups).
const NAME_ENTRIES: usize = 1 << 20;

/// What the audit layer needs from the session layer.
pub trait SessionView: Send + Sync {
    /// `(user, session id prefix)` of `uid`'s live session.
    fn who(&self, uid: u32) -> Option<(String, String)>;
    /// The insider thresholds of the current policy.
    fn rules(&self) -> InsiderRules;
    /// Lock `uid`'s sessions (and their user) until an admin unlocks them.
    fn lock(&self, uid: u32, rule: &str);
}

struct Handle {
    uid: u32,
    ino: u64,
    path: String,
    read_logged: bool,
    write_logged: bool,
}

pub struct Auditor {
    log: Arc<AuditLog>,
    monitor: Monitor,
    sessions: RwLock<Option<Arc<dyn SessionView>>>,
    /// ino → (parent, name) as last seen: names files in records.
    names: RwLock<HashMap<u64, (u64, Vec<u8>)>>,
    folder_roots: RwLock<HashSet<u64>>,
    handles: Mutex<HashMap<u64, Handle>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Auditor {
    pub fn new(log: AuditLog, monitor: Monitor) -> Self {
        Auditor {
            log: Arc::new(log),
            monitor,
            sessions: RwLock::new(None),
            names: RwLock::new(HashMap::new()),
            folder_roots: RwLock::new(HashSet::new()),
            handles: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_sessions(&self, s: Arc<dyn SessionView>) {
        *self.sessions.write() = Some(s);
    }

    /// The log, shared with the uploader that copies it to the store.
    pub fn log_handle(&self) -> Arc<AuditLog> {
        Arc::clone(&self.log)
    }

    fn sessions(&self) -> Option<Arc<dyn SessionView>> {
        self.sessions.read().clone()
    }

    /// Append a record for `uid` (user and session filled in from its session).
    pub fn record(&self, uid: u32, op: Op, ino: u64, path: Option<String>, detail: Option<String>) -> Result<()> {
        let (user, session) = self.sessions().and_then(|s| s.who(uid)).unzip();
        self.log.append(Entry { uid, user, session, op: Some(op), ino, path, detail })?;
        Ok(())
    }

    /// Record a session event whose user and session are known (login, logout, break-glass).
    pub fn record_session(&self, uid: u32, user: &str, session: &str, op: Op, detail: Option<String>) -> Result<()> {
        if matches!(op, Op::Login | Op::BreakGlass) {
            self.monitor.reset(uid);
        }
        let e = Entry {
            uid,
            user: Some(user.to_string()),
            session: Some(session.to_string()),
            op: Some(op),
            detail,
            ..Entry::default()
        };
        self.log.append(e)?;
        Ok(())
    }

    /// `/a/b/c` for `ino`, from the names seen so far.
    fn path_of(&self, ino: u64) -> String {
        let names = self.names.read();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        while cur != crate::vault::ROOT_INO && parts.len() < 256 {
            match names.get(&cur) {
                Some((parent, name)) => {
                    parts.push(name);
                    cur = *parent;
                }
                None => return format!("<inode {ino}>"),
            }
        }
        let mut out = String::new();
        for p in parts.iter().rev() {
            out.push('/');
            out.push_str(&String::from_utf8_lossy(p));
        }
        if out.is_empty() { "/".into() } else { out }
    }

    /// The patient a path belongs to: the first component below the vault
    /// folder holding it (or the first component, outside folders).
    fn patient_of(&self, ino: u64) -> String {
        let names = self.names.read();
        let roots = self.folder_roots.read();
        let mut chain: Vec<u64> = Vec::new();
        let mut cur = ino;
        while cur != crate::vault::ROOT_INO && chain.len() < 256 {
            chain.push(cur);
            match names.get(&cur) {
                Some((parent, _)) => cur = *parent,
                None => return format!("<inode {ino}>"),
            }
        }
        chain.reverse(); // top-down: chain[0] is a child of the root
        let below = chain.iter().rposition(|i| roots.contains(i)).map_or(0, |k| k + 1);
        let pick = chain.get(below).or(chain.last()).copied().unwrap_or(ino);
        names.get(&pick).map_or_else(|| format!("<inode {pick}>"), |(_, n)| String::from_utf8_lossy(n).into_owned())
    }

    /// Whether `uid` holds `ino` open through a handle whose write is already recorded.
    fn writing(&self, uid: u32, ino: u64) -> bool {
        self.handles.lock().values().any(|s| s.ino == ino && s.uid == uid && s.write_logged)
    }

    fn alert(&self, uid: u32, rule: &'static str, detail: String) -> bool {
        let sessions = self.sessions();
        let rules = sessions.as_ref().map(|s| s.rules()).unwrap_or_default();
        let (user, session) = sessions.as_ref().and_then(|s| s.who(uid)).unzip();
        let lock = rules.lock_on_alert && user.is_some();
        let _ = self.record(uid, Op::Alert, 0, None, Some(format!("{rule}: {detail}")));
        if lock && let Some(s) = &sessions {
            s.lock(uid, rule);
            let _ = self.record(uid, Op::SessionLocked, 0, None, Some(rule.to_string()));
        }
        let alert = Alert { time: now_secs(), rule, uid, user, session, detail, locked: lock };
        self.monitor.deliver(&alert, rules.webhook.as_deref());
        lock
    }
}

impl Observer for Auditor {
    fn observe(&self, uid: u32, touch: Touch<'_>) -> Result<()> {
        match touch {
            Touch::Name { parent, name, ino, folder_root } => {
                let mut names = self.names.write();
                if names.len() >= NAME_ENTRIES {
                    names.clear();
                }
                names.insert(ino, (parent, name.to_vec()));
                if folder_root {
                    self.folder_roots.write().insert(ino);
                }
                Ok(())
            }
            Touch::Open { ino, handle, write, created, decoy, .. } => {
                let path = self.path_of(ino);
                let mode = if write { "write" } else { "read" };
                let op = if created { Op::Create } else { Op::Open };
                self.record(uid, op, ino, Some(path.clone()), Some(mode.into()))?;
                self.handles.lock().insert(handle, Handle { uid, ino, path, read_logged: false, write_logged: false });
                if decoy {
                    if self.alert(uid, "decoy", format!("decoy record opened (inode {ino})")) {
                        return Err(Error::AccessDenied);
                    }
                    return Ok(());
                }
                if write {
                    return Ok(()); // profiles watch what leaves the vault, not imports
                }
                let rules = self.sessions().map(|s| s.rules()).unwrap_or_default();
                let patient = self.patient_of(ino);
                let mut locked = false;
                for (rule, detail) in self.monitor.on_open(uid, &patient, &rules) {
                    locked |= self.alert(uid, rule, detail);
                }
                if locked { Err(Error::AccessDenied) } else { Ok(()) }
            }
            Touch::Read { ino, handle, bytes } | Touch::Write { ino, handle, bytes } => {
                let is_read = matches!(touch, Touch::Read { .. });
                let first = {
                    let mut h = self.handles.lock();
                    match h.get_mut(&handle) {
                        Some(s) if is_read && !s.read_logged => {
                            s.read_logged = true;
                            Some((s.ino, s.path.clone()))
                        }
                        Some(s) if !is_read && !s.write_logged => {
                            s.write_logged = true;
                            Some((s.ino, s.path.clone()))
                        }
                        Some(_) => None,
                        // Opened before this daemon started observing: log once by inode.
                        None => {
                            let path = self.path_of(ino);
                            h.insert(
                                handle,
                                Handle { uid, ino, path: path.clone(), read_logged: is_read, write_logged: !is_read },
                            );
                            Some((ino, path))
                        }
                    }
                };
                if let Some((ino, path)) = first {
                    self.record(uid, if is_read { Op::Read } else { Op::Write }, ino, Some(path), None)?;
                }
                if is_read {
                    let rules = self.sessions().map(|s| s.rules()).unwrap_or_default();
                    let mut locked = false;
                    for (rule, detail) in self.monitor.on_read(uid, bytes, &rules) {
                        locked |= self.alert(uid, rule, detail);
                    }
                    if locked {
                        return Err(Error::AccessDenied);
                    }
                }
                Ok(())
            }
            Touch::Release { handle } => {
                self.handles.lock().remove(&handle);
                Ok(())
            }
            Touch::Create { ino } => self.record(uid, Op::Create, ino, Some(self.path_of(ino)), None),
            Touch::Delete { parent, name } => {
                let path = format!("{}/{}", self.path_of(parent).trim_end_matches('/'), String::from_utf8_lossy(name));
                self.record(uid, Op::Delete, 0, Some(path), None)
            }
            Touch::Rename { parent, name, newparent, newname } => {
                let from = format!("{}/{}", self.path_of(parent).trim_end_matches('/'), String::from_utf8_lossy(name));
                let to =
                    format!("{}/{}", self.path_of(newparent).trim_end_matches('/'), String::from_utf8_lossy(newname));
                // The moved inode is renamed in `names` by the kernel's next lookup.
                self.record(uid, Op::Rename, 0, Some(from), Some(to))
            }
            Touch::Permission { ino, what } => {
                if what == "times" && self.writing(uid, ino) {
                    // Part of that write (tar, cp -p and rsync set the times
                    // of each file they write before closing it).
                    return Ok(());
                }
                self.record(uid, Op::Permission, ino, Some(self.path_of(ino)), Some(what.into()))
            }
            Touch::Denied { ino, write } => {
                let what = if write { "write" } else { "read" };
                self.record(uid, Op::Denied, ino, Some(self.path_of(ino)), Some(what.into()))
            }
        }
    }
}
