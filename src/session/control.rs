//! The daemon's control socket and session manager: login (the handshake,
//! then the folder keys over the session channel), session listing, logout,
//! and the access gate the vault consults inside vault folders. Sessions are
//! bound to the caller's uid (`SO_PEERCRED`) and expire.
//!
//! Frames are `len u32 LE ‖ payload` (at most 64 KiB). A request frame starts
//! with an op byte; every reply starts with a status byte (0 ok, 1 error
//! followed by a UTF-8 message). Login (docs/SESSION_HANDSHAKE.md):
//! `[1] ‖ msg1` → `ok ‖ msg2`; `msg3` → `ok ‖ C_f(offers)`; `C_u(keys)` →
//! `ok ‖ session info`, where `C_f`/`C_u` seal under the direction keys.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::handshake::{FogResponder, ReplayCache, SessionKeys, UserInitiator};
use super::identity::{IdentityKey, MasterPublic};
use super::keyfile::UserKey;
use super::login_budget::LoginBudget;
use super::policy::{self, BreakGlassRecord, Policy, PolicyError, Rights, now_secs};
use super::transport::{self, KeyDelivery};
use crate::audit::{Auditor, Op, SessionView, Who};
use crate::chunk_store::Backend;
use crate::error::{Error, Result};
use crate::vault::{Access, AccessGate, Caller, MAX_FOLDER_UIDS, Vault, Walker};

const OP_LOGIN: u8 = 1;
const OP_LIST: u8 = 2;
const OP_LOGOUT: u8 = 3;
const MAX_FRAME: usize = 64 * 1024;
/// How long a handshake's nonce is remembered (replays within it are refused).
const REPLAY_WINDOW: Duration = Duration::from_secs(300);
/// Handshakes one uid may start per `REPLAY_WINDOW`: a hundredth of the
/// replay cache, far above any person's or service's logins.
const LOGINS_PER_UID: usize = 1000;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the daemon re-reads the policy and expires sessions.
const TICK: Duration = Duration::from_millis(500);
const MAX_REASON: usize = 1024;

/// Whose share a login from `uid` spends: its own if the host has an account
/// for it, else one shared by every uid without one (a user with subordinate
/// uids, e.g. in a user namespace, must not get a share per uid).
fn budget_bucket(uid: u32) -> u32 {
    const UNLISTED: u32 = u32::MAX;
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(_)) => uid,
        _ => UNLISTED,
    }
}

/// Where the control socket of the mount at `mountpoint` lives.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let canon = mountpoint.canonicalize().unwrap_or_else(|_| mountpoint.to_path_buf());
    let h = blake3::hash(canon.as_os_str().as_encoded_bytes());
    PathBuf::from("/run/fogvault").join(format!("{}.sock", &h.to_hex()[..16]))
}

/// Create the control socket's directory (mode 0755), or check the one that
/// exists: whoever else may write in it could swap the socket for their own
/// and make logins fail, so it must be this user's and closed to others.
fn prepare_socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(Error::Repo(format!(
            "{} must be a directory owned by uid {me} and writable by nobody else; \
             refusing to put the control socket there",
            dir.display()
        )));
    }
    Ok(())
}

/// A vault folder a session may enter, as listed (no secrets).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FolderAccess {
    pub path: String,
    pub rights: String,
}

/// A live session as listed by `fogvault sessions` (no secrets).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    pub session: String,
    pub user: String,
    pub uid: u32,
    pub started: u64,
    pub expires: u64,
    pub folders: Vec<FolderAccess>,
    pub break_glass: bool,
    pub reason: Option<String>,
    /// Locked by an insider alert (every folder access refused until an admin unlocks).
    #[serde(default)]
    pub locked: bool,
}

struct Live {
    info: SessionInfo,
    _keys: SessionKeys,
    /// Folders whose key this session supplied.
    supplied: HashSet<u32>,
    /// Folders opened by break-glass (read-write until the session expires).
    glass: HashSet<u32>,
    rights: HashMap<u32, Rights>,
    /// Who the audit trail names for this session (made once, shared per record).
    who: Arc<Who>,
    /// This session's part of `session_token` (made once: asked on every open).
    token: u64,
}

pub struct ControlServer {
    mpk: MasterPublic,
    fog: IdentityKey,
    repo_id: String,
    backend: Arc<Backend>,
    vault: Arc<Vault>,
    ttl: Duration,
    /// Highest accepted policy version survives restarts here.
    high_water: PathBuf,
    policy: RwLock<Arc<Policy>>,
    last_raw: Mutex<Option<bytes::Bytes>>,
    sessions: RwLock<Vec<Live>>,
    replay: Mutex<ReplayCache>,
    /// Each uid's share of the replay cache (one flooding user must not lock out the rest).
    login_budget: Mutex<LoginBudget>,
    /// Vault folders whose keys the vault holds now.
    unlocked: Mutex<HashSet<u32>>,
    /// The audit trail and insider monitor, when the daemon keeps one.
    auditor: RwLock<Option<Arc<Auditor>>>,
    /// user → when an insider alert locked them (kept in `locks_path`).
    locks: Mutex<HashMap<String, u64>>,
    locks_path: PathBuf,
    /// Decoy requests planted (or tried) by this mount, or whose records the store holds.
    decoys_done: Mutex<HashSet<u64>>,
    /// Sealed decoy records whose upload failed: retried every tick.
    decoy_records_unsent: Mutex<Vec<(String, Vec<u8>)>>,
    /// Each folder's walkers as the mount last heard them (`publish_walkers`).
    published: Mutex<HashMap<u32, Vec<Walker>>>,
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_frame(s: &mut UnixStream, payload: &[u8]) -> std::io::Result<()> {
    s.write_all(&(payload.len() as u32).to_le_bytes())?;
    s.write_all(payload)
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(body);
    v
}

fn err(msg: &str) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(msg.as_bytes());
    v
}

fn read_locks(path: &Path) -> HashMap<String, u64> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn read_high_water(path: &Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn write_high_water(path: &Path, v: u64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(v.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl ControlServer {
    /// Load and check the policy, create its folders in the vault, bind the
    /// socket for `mountpoint` and serve it; a ticker thread follows policy
    /// updates and expires sessions. Refuses a policy older than one this
    /// fog node accepted before (rollback) or one without a valid signature.
    /// `auditor` keeps the trail from the first connection on.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        mountpoint: &Path,
        mpk: MasterPublic,
        fog: IdentityKey,
        repo_id: &str,
        backend: Arc<Backend>,
        vault: Arc<Vault>,
        cache_dir: &Path,
        ttl: Duration,
        auditor: Arc<Auditor>,
    ) -> Result<Arc<Self>> {
        let high_water = cache_dir.join("policy-version");
        let raw = Policy::fetch(&backend).map_err(|e| Error::Repo(e.to_string()))?;
        let policy = match &raw {
            None => Policy::empty(),
            Some(raw) => Policy::open(raw, repo_id, &mpk, &fog).map_err(|e| Error::Repo(e.to_string()))?,
        };
        let have = read_high_water(&high_water);
        if policy.version < have {
            return Err(Error::Repo(PolicyError::Rollback { got: policy.version, have }.to_string()));
        }
        write_high_water(&high_water, policy.version)?;
        let path = socket_path(mountpoint);
        prepare_socket_dir(path.parent().expect("socket path has a parent"))?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| Error::Repo(format!("cannot create control socket {}: {e}", path.display())))?;
        // Anyone may connect: the handshake authenticates, SO_PEERCRED binds the uid.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let server = Arc::new(ControlServer {
            mpk,
            fog,
            repo_id: repo_id.to_string(),
            backend,
            vault: Arc::clone(&vault),
            ttl,
            high_water,
            policy: RwLock::new(Arc::new(policy)),
            last_raw: Mutex::new(raw),
            sessions: RwLock::new(Vec::new()),
            replay: Mutex::new(ReplayCache::new(REPLAY_WINDOW, 100_000)),
            login_budget: Mutex::new(LoginBudget::new(REPLAY_WINDOW, LOGINS_PER_UID)),
            unlocked: Mutex::new(HashSet::new()),
            auditor: RwLock::new(None),
            locks: Mutex::new(read_locks(&cache_dir.join("locked-users.json"))),
            locks_path: cache_dir.join("locked-users.json"),
            decoys_done: Mutex::new(HashSet::new()),
            decoy_records_unsent: Mutex::new(Vec::new()),
            published: Mutex::new(HashMap::new()),
        });
        server.load_decoys_done();
        server.create_folders();
        vault.set_gate(Arc::clone(&server) as Arc<dyn AccessGate>);
        server.set_auditor(auditor);
        let me = Arc::clone(&server);
        std::thread::Builder::new().name("fogvault-control".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let me = Arc::clone(&me);
                let _ = std::thread::Builder::new().name("fogvault-control-conn".into()).spawn(move || {
                    if let Err(e) = me.serve(conn) {
                        tracing::info!(error = %e, "control connection ended with an error");
                    }
                });
            }
        })?;
        // Walkers have a thread of their own: expiry must not wait for the
        // policy tick's store fetch.
        Self::every_tick(&server, "fogvault-walkers", Self::publish_walkers)?;
        Self::every_tick(&server, "fogvault-policy", Self::tick)?;
        Ok(server)
    }

    /// Run `job` every `TICK` on a named thread until the server is dropped.
    fn every_tick(server: &Arc<Self>, name: &str, job: fn(&Self)) -> std::io::Result<()> {
        let me = Arc::downgrade(server);
        std::thread::Builder::new().name(name.into()).spawn(move || {
            while let Some(me) = me.upgrade() {
                job(&me);
                drop(me);
                std::thread::sleep(TICK);
            }
        })?;
        Ok(())
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read())
    }

    /// Keep the audit trail: sessions, policy changes and insider locks are
    /// recorded, and the auditor learns who is behind each uid.
    fn set_auditor(self: &Arc<Self>, auditor: Arc<Auditor>) {
        auditor.set_sessions(Arc::clone(self) as Arc<dyn SessionView>);
        *self.auditor.write() = Some(Arc::clone(&auditor));
        // After the store: a policy adopted meanwhile is handed over by `adopt`.
        let p = self.policy();
        auditor.set_rules(p.version, p.insider.clone());
    }

    fn audit_session(&self, uid: u32, user: &str, session: &str, op: Op, detail: Option<String>) {
        if let Some(a) = self.auditor.read().as_ref()
            && let Err(e) = a.record_session(uid, user, session, op, detail)
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Is `user` locked by an insider alert the admin has not lifted since?
    fn is_locked(&self, user: &str) -> bool {
        let Some(&at) = self.locks.lock().get(user) else { return false };
        self.policy().unlocks.get(user).is_none_or(|&unlocked| unlocked < at)
    }

    fn save_locks(&self) {
        let data = serde_json::to_vec(&*self.locks.lock()).expect("locks serialize");
        let tmp = self.locks_path.with_extension("tmp");
        let r = std::fs::write(&tmp, data)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.locks_path));
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot record an insider lock on disk");
        }
    }

    fn load_decoys_done(&self) {
        match self.backend.list(policy::DECOY_PREFIX.trim_end_matches('/')) {
            Ok(list) => {
                let done = list
                    .iter()
                    .filter_map(|(n, _)| n.strip_prefix(policy::DECOY_PREFIX))
                    .filter_map(|h| u64::from_str_radix(h, 16).ok());
                self.decoys_done.lock().extend(done);
            }
            Err(e) => tracing::warn!(error = %e, "cannot list decoy records"),
        }
    }

    /// Plant the decoys the policy asks for in folders that are unlocked now.
    fn plant_decoys(&self) {
        self.decoy_records_unsent.lock().retain(|(name, sealed)| match self.backend.put(name, sealed.clone().into()) {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store a decoy record yet; will retry");
                true
            }
        });
        let p = self.policy();
        for req in &p.decoy_requests {
            if self.decoys_done.lock().contains(&req.id) || !self.vault.folder_unlocked(req.folder) {
                continue;
            }
            let Some(folder) = p.folder(req.folder) else { continue };
            // One attempt per request and mount: planting again after a
            // failed upload of the record (the store down) would add another
            // set of decoys every tick.
            self.decoys_done.lock().insert(req.id);
            let patients = match crate::audit::decoys::plant(&self.vault, req.folder, req.count, req.id) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(folder = req.folder, error = %e, "planting decoys failed");
                    continue;
                }
            };
            let rec =
                policy::DecoyRecord { request: req.id, folder: folder.path.clone(), patients, planted: now_secs() };
            let sealed = policy::seal_for_admin(
                &self.fog,
                &self.repo_id,
                policy::DECOYS,
                &serde_json::to_vec(&rec).expect("serializes"),
            );
            tracing::info!(folder = req.folder, count = req.count, "planted decoy patients");
            let name = policy::decoy_record_name(req.id);
            if let Err(e) = self.backend.put(&name, sealed.clone().into()) {
                tracing::warn!(error = %e, "cannot store the decoy record yet; will retry");
                self.decoy_records_unsent.lock().push((name, sealed));
            }
        }
    }

    /// Make sure every folder of the policy exists in the vault.
    fn create_folders(&self) {
        let root = Caller { uid: 0, gid: 0 };
        for f in &self.policy().folders {
            if let Err(e) = self.vault.create_folder(&f.path, f.id, root) {
                // The path is not logged: it may name a patient.
                tracing::error!(folder = f.id, error = %e, "cannot create vault folder");
            }
        }
    }

    /// Follow the store's policy, expire sessions, recompute rights.
    fn tick(&self) {
        match Policy::fetch(&self.backend) {
            Ok(Some(raw)) if self.last_raw.lock().as_ref() != Some(&raw) => {
                *self.last_raw.lock() = Some(raw.clone());
                self.adopt(&raw);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the policy"),
        }
        self.refresh_sessions();
        self.plant_decoys();
    }

    fn adopt(&self, raw: &[u8]) {
        let have = self.policy().version;
        match Policy::open(raw, &self.repo_id, &self.mpk, &self.fog) {
            Ok(p) if p.version < have => {
                tracing::error!(got = p.version, have, "refusing a rolled-back policy from the store");
            }
            Ok(p) if p.version == have => {}
            Ok(p) => {
                if let Err(e) = write_high_water(&self.high_water, p.version) {
                    tracing::error!(error = %e, "cannot record the policy version; not adopting it");
                    return;
                }
                tracing::info!(version = p.version, "adopted policy");
                if let Some(a) = self.auditor.read().as_ref() {
                    let _ = a.record(0, Op::PolicyChange, 0, None, Some(&format!("policy v{}", p.version)));
                }
                let p = Arc::new(p);
                *self.policy.write() = Arc::clone(&p);
                // After the store: an auditor set meanwhile reads this policy itself.
                if let Some(a) = self.auditor.read().as_ref() {
                    a.set_rules(p.version, p.insider.clone());
                }
                self.create_folders();
            }
            Err(e) => tracing::error!(error = %e, "refusing the policy in the store"),
        }
    }

    /// Drop expired or no-longer-admitted sessions, recompute every session's
    /// rights from the policy, and forget folder keys nobody needs.
    fn refresh_sessions(&self) {
        let p = self.policy();
        let now = now_secs();
        let ended: Vec<(SessionInfo, &'static str)> = {
            let mut s = self.sessions.write();
            // Why a session ends now, if it does. A break-glass session also
            // ends when the policy's limit, as it stands now, has run out.
            let end = |l: &Live| {
                if l.info.expires <= now {
                    Some("expired")
                } else if p.admit(&l.info.user, now).is_err() {
                    Some("no longer admitted by the policy")
                } else if !l.glass.is_empty() && l.info.started + p.break_glass_minutes as u64 * 60 <= now {
                    Some("break-glass limit reached")
                } else {
                    None
                }
            };
            let mut ended = Vec::new();
            s.retain(|l| match end(l) {
                Some(why) => {
                    ended.push((l.info.clone(), why));
                    false
                }
                None => true,
            });
            for l in s.iter_mut() {
                l.rights = Self::rights_of(&p, &l.info.user, &l.supplied, &l.glass, now);
                l.info.folders = self.listing(&p, &l.rights);
            }
            ended
        };
        // Every end of a session is in the trail, not only `logout`.
        for (i, why) in ended {
            self.audit_session(i.uid, &i.user, &i.session[..16], Op::Logout, Some(why.to_string()));
        }
        self.publish_walkers();
        self.release_unneeded();
    }

    /// Whether live session `l` counts for the gate at `now`.
    fn admits(&self, l: &Live, now: u64) -> bool {
        l.info.expires > now && !self.is_locked(&l.info.user)
    }

    /// Every folder's walkers now (see [`AccessGate::walkers`]). A folder
    /// keeps the `MAX_FOLDER_UIDS` uids whose sessions started first: logins
    /// are refused past that, but rights that return on a tick (grant hours)
    /// could still go over, and a longer list would shut everyone out.
    fn all_walkers(&self) -> HashMap<u32, Vec<Walker>> {
        let now = now_secs();
        // folder → uid → (may write, first session start)
        let mut by_folder: HashMap<u32, HashMap<u32, (bool, u64)>> = HashMap::new();
        for l in self.sessions.read().iter().filter(|l| self.admits(l, now)) {
            for (f, r) in l.rights.iter().filter(|(_, r)| r.read) {
                let e = by_folder.entry(*f).or_default().entry(l.info.uid).or_insert((false, l.info.started));
                e.0 |= r.write;
                e.1 = e.1.min(l.info.started);
            }
        }
        by_folder
            .into_iter()
            .map(|(f, uids)| {
                let mut v: Vec<(u32, (bool, u64))> = uids.into_iter().collect();
                if v.len() > MAX_FOLDER_UIDS {
                    tracing::warn!(
                        folder = f,
                        uids = v.len(),
                        "more uids with sessions than a folder's access list holds"
                    );
                    v.sort_by_key(|&(uid, (_, started))| (started, uid));
                    v.truncate(MAX_FOLDER_UIDS);
                }
                let mut w: Vec<Walker> = v.into_iter().map(|(uid, (write, _))| Walker { uid, write }).collect();
                w.sort_by_key(|w| w.uid);
                (f, w)
            })
            .collect()
    }

    /// Tell the vault (and through it the kernel) of every folder whose
    /// walkers changed since the last call. Run after each change to the
    /// sessions, on every policy tick (grant hours, revocation, unlocks) and
    /// every `TICK` from a thread of its own (expiry, also while the store is
    /// slow). The kernel is only ever handed published lists (`walkers`), so
    /// a list it may have cached is always one whose change gets announced.
    fn publish_walkers(&self) {
        let mut published = self.published.lock();
        let now = self.all_walkers();
        let changed: Vec<u32> = now
            .iter()
            .filter(|(f, w)| published.get(f) != Some(w))
            .map(|(f, _)| *f)
            .chain(published.keys().filter(|f| !now.contains_key(f)).copied())
            .collect();
        *published = now;
        for f in changed {
            self.vault.folder_walkers_changed(f);
        }
    }

    /// Refuse a session that would let more uids into a folder than the
    /// kernel's access list for its root can name.
    fn check_folder_room(&self, uid: u32, rights: &HashMap<u32, Rights>) -> Result<()> {
        folder_room(&self.all_walkers(), uid, rights.keys().copied())
    }

    fn rights_of(
        p: &Policy,
        user: &str,
        supplied: &HashSet<u32>,
        glass: &HashSet<u32>,
        now: u64,
    ) -> HashMap<u32, Rights> {
        supplied
            .iter()
            .filter_map(|&f| {
                let mut r = p.rights(user, f, now);
                // Re-checked on every tick: a user taken out of the emergency
                // roles loses what break-glass gave at once.
                if glass.contains(&f) && p.may_break_glass(user, now) {
                    r = Rights::READ_WRITE;
                }
                r.read.then_some((f, r))
            })
            .collect()
    }

    /// The folders a session may use, by path: only those whose root exists
    /// in the vault (a path squatted by a symlink or a file before the folder
    /// was created is not offered: it leads outside the vault).
    fn listing(&self, p: &Policy, rights: &HashMap<u32, Rights>) -> Vec<FolderAccess> {
        let mut v: Vec<FolderAccess> = rights
            .iter()
            .filter(|(f, _)| self.vault.folder_root(**f).ok().flatten().is_some())
            .filter_map(|(f, r)| p.folder(*f).map(|e| FolderAccess { path: e.path.clone(), rights: r.to_string() }))
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Lock order: `unlocked` before `sessions`, here and in `open_session`,
    /// so a login that is installing keys is never undercut.
    fn release_unneeded(&self) {
        let mut unlocked = self.unlocked.lock();
        // A key stays while a session that supplied it still holds a grant,
        // even outside the grant's hours (the gate refuses meanwhile).
        let p = self.policy();
        let now = now_secs();
        let needed: HashSet<u32> = self
            .sessions
            .read()
            .iter()
            .flat_map(|l| {
                let user = l.info.user.clone();
                let p = &p;
                l.supplied.iter().copied().filter(move |f| l.glass.contains(f) || p.has_grant(&user, *f, now))
            })
            .collect();
        let gone: Vec<u32> = unlocked.difference(&needed).copied().collect();
        for d in gone {
            match self.vault.lock_folder(d) {
                Ok(()) => {
                    unlocked.remove(&d);
                }
                Err(e) => tracing::error!(folder = d, error = %e, "cannot commit a vault folder before locking it"),
            }
        }
    }

    /// Live (unexpired) sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let t = now_secs();
        self.sessions.read().iter().filter(|l| l.info.expires > t).map(|l| l.info.clone()).collect()
    }

    fn serve(&self, mut conn: UnixStream) -> Result<()> {
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let cred = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(|e| Error::Repo(format!("no peer credentials: {e}")))?;
        let uid = cred.uid();
        let req = read_frame(&mut conn)?;
        let Some((&op, body)) = req.split_first() else {
            return Ok(write_frame(&mut conn, &err("empty request"))?);
        };
        match op {
            OP_LOGIN => self.login(&mut conn, uid, body),
            OP_LIST => {
                let mut mine: Vec<SessionInfo> =
                    self.sessions().into_iter().filter(|s| uid == 0 || s.uid == uid).collect();
                for s in &mut mine {
                    s.locked = self.is_locked(&s.user);
                }
                Ok(write_frame(&mut conn, &ok(&serde_json::to_vec(&mine).expect("serializes")))?)
            }
            OP_LOGOUT => {
                let ended: Vec<SessionInfo> = {
                    let mut s = self.sessions.write();
                    let (gone, kept): (Vec<Live>, Vec<Live>) = s.drain(..).partition(|l| l.info.uid == uid);
                    *s = kept;
                    gone.into_iter().map(|l| l.info).collect()
                };
                for i in &ended {
                    self.audit_session(uid, &i.user, &i.session[..16], Op::Logout, None);
                }
                let n = ended.len();
                self.publish_walkers();
                self.release_unneeded();
                Ok(write_frame(&mut conn, &ok(n.to_string().as_bytes()))?)
            }
            _ => Ok(write_frame(&mut conn, &err("unknown request"))?),
        }
    }

    fn login(&self, conn: &mut UnixStream, uid: u32, msg1: &[u8]) -> Result<()> {
        let bucket = budget_bucket(uid); // an account lookup: before the lock
        let spent = {
            let admitted = self.login_budget.lock().admit(bucket, std::time::Instant::now());
            (!admitted).then(|| {
                let whose = if bucket == uid { format!("uid {uid}") } else { "uids without an account".into() };
                let secs = REPLAY_WINDOW.as_secs();
                format!("too many logins from {whose} (at most {LOGINS_PER_UID} in {secs} s); try again later")
            })
        };
        if let Some(why) = spent {
            tracing::warn!(uid, "login refused: the handshake budget is spent");
            return Ok(write_frame(conn, &err(&why))?);
        }
        let p = self.policy();
        let now = now_secs();
        let responder =
            FogResponder::respond(&self.fog, &mut self.replay.lock(), msg1, |u| p.admit(u, now).map(|_| ()));
        let (responder, msg2) = match responder {
            Ok(r) => r,
            Err(e) => return Ok(write_frame(conn, &err(&e.to_string()))?),
        };
        write_frame(conn, &ok(&msg2))?;
        let msg3 = read_frame(conn)?;
        let keys = match responder.finish(&self.mpk, &msg3) {
            Ok(k) => k,
            Err(e) => return Ok(write_frame(conn, &err(&e.to_string()))?),
        };
        write_frame(conn, &ok(&transport::seal_offers(&keys, &transport::offers_for(&p, &keys.user))))?;
        let reply = read_frame(conn)?;
        let Some(delivery) = transport::open_delivery(&keys, &reply) else {
            return Ok(write_frame(conn, &err("malformed or unauthentic key delivery"))?);
        };
        match self.open_session(&p, uid, keys, delivery) {
            Ok(info) => Ok(write_frame(conn, &ok(&serde_json::to_vec(&info).expect("serializes")))?),
            Err(e) => Ok(write_frame(conn, &err(&e.to_string()))?),
        }
    }

    fn open_session(&self, p: &Policy, uid: u32, keys: SessionKeys, d: KeyDelivery) -> Result<SessionInfo> {
        let now = now_secs();
        let user = keys.user.clone();
        if self.is_locked(&user) {
            return Err(Error::Repo(format!(
                "{user} is locked after an insider alert; an admin must unlock them (fogvault admin unlock)"
            )));
        }
        // Locked once, unlocked by the admin since: the alert's profile is
        // settled, so the user starts afresh (otherwise the windows that
        // raised it would raise it again at the next open).
        if self.locks.lock().remove(&user).is_some() {
            self.save_locks();
            if let Some(a) = self.auditor.read().as_ref() {
                a.forget_profile(uid);
            }
        }
        if let Some(r) = &d.break_glass {
            if r.trim().is_empty() || r.len() > MAX_REASON {
                return Err(Error::Repo("break-glass needs a reason (at most 1024 bytes)".into()));
            }
            if !p.may_break_glass(&user, now) {
                return Err(Error::Repo(format!("{user} is not in an emergency role; break-glass refused")));
            }
        }
        let mut unlocked = self.unlocked.lock();
        let mut supplied = HashSet::new();
        let mut glass = HashSet::new();
        for (folder, version, hex_key) in &d.keys {
            let Some(fk) = transport::delivered_key(hex_key) else { continue };
            let Some(entry) = p.folder(*folder) else { continue };
            if entry.version != *version {
                continue;
            }
            let granted = p.rights(&user, *folder, now).read;
            if !granted && d.break_glass.is_none() {
                continue; // a key alone grants nothing
            }
            let Some(versions) = p.key_versions(*folder, &fk) else {
                return Err(Error::Repo("a folder key does not match the policy".into()));
            };
            self.vault.unlock_folder(*folder, &versions)?;
            unlocked.insert(*folder);
            supplied.insert(*folder);
            if !granted {
                glass.insert(*folder);
            }
        }
        let started = now;
        let mut expires = started + self.ttl.as_secs().min(d.ttl.unwrap_or(u64::MAX)).max(1);
        if d.break_glass.is_some() {
            expires = expires.min(started + u64::from(p.break_glass_minutes) * 60);
        }
        let rights = Self::rights_of(p, &user, &supplied, &glass, now);
        self.check_folder_room(uid, &rights)?;
        let info = SessionInfo {
            session: hex::encode(keys.session_id),
            user: user.clone(),
            uid,
            started,
            expires,
            folders: self.listing(p, &rights),
            break_glass: d.break_glass.is_some(),
            reason: d.break_glass.clone(),
            locked: false,
        };
        if let Some(reason) = &d.break_glass {
            let rec = BreakGlassRecord {
                user: user.clone(),
                uid,
                session: info.session.clone(),
                reason: reason.clone(),
                folders: glass.iter().filter_map(|f| p.folder(*f).map(|e| e.path.clone())).collect(),
                started,
                expires,
            };
            let sealed = policy::seal_for_admin(
                &self.fog,
                &self.repo_id,
                policy::BREAK_GLASS,
                &serde_json::to_vec(&rec).expect("serializes"),
            );
            let name = format!("{}{started:016x}-{}", policy::BREAK_GLASS_PREFIX, &info.session[..16]);
            self.backend.put(&name, sealed.into())?;
            tracing::warn!(user = %user, uid, folders = glass.len(), "BREAK-GLASS session opened");
        }
        tracing::info!(uid, folders = rights.len(), "session established");
        let op = if d.break_glass.is_some() { Op::BreakGlass } else { Op::Login };
        self.audit_session(uid, &user, &info.session[..16], op, d.break_glass.clone());
        let who = Arc::new(Who { user: info.user.clone(), session: info.session[..16].to_string() });
        let token =
            u64::from_le_bytes(blake3::hash(info.session.as_bytes()).as_bytes()[..8].try_into().expect("8 bytes"));
        let glass_count = glass.len();
        self.sessions.write().push(Live { info: info.clone(), _keys: keys, supplied, glass, rights, who, token });
        drop(unlocked);
        // Off the folder-key lock, and with the session already listed.
        if d.break_glass.is_some()
            && let Some(a) = self.auditor.read().as_ref()
        {
            a.alert_break_glass(uid, &user, &info.session[..16], glass_count, expires);
        }
        self.publish_walkers();
        Ok(info)
    }
}

impl SessionView for ControlServer {
    fn who(&self, uid: u32) -> Option<Arc<Who>> {
        let now = now_secs();
        self.sessions.read().iter().find(|l| l.info.uid == uid && l.info.expires > now).map(|l| Arc::clone(&l.who))
    }

    fn lock(&self, uid: u32, rule: &str) {
        let users: Vec<String> =
            self.sessions.read().iter().filter(|l| l.info.uid == uid).map(|l| l.info.user.clone()).collect();
        let now = now_secs();
        {
            let mut locks = self.locks.lock();
            for u in &users {
                locks.insert(u.clone(), now);
            }
        }
        self.save_locks();
        self.publish_walkers();
        tracing::warn!(uid, rule, "session locked after an insider alert");
    }
}

impl AccessGate for ControlServer {
    fn check(&self, uid: u32, domain: u32, access: Access) -> Result<()> {
        let now = now_secs();
        let ok = self.sessions.read().iter().any(|l| {
            l.info.uid == uid
                && self.admits(l, now)
                && l.rights.get(&domain).is_some_and(|r| match access {
                    Access::Read => r.read,
                    Access::Write => r.write,
                })
        });
        if ok { Ok(()) } else { Err(Error::AccessDenied) }
    }

    fn session_token(&self, uid: u32) -> Option<u64> {
        let now = now_secs();
        // Sessions are distinct random ids, so the XOR of their hashes names
        // the set (in any order) without sorting or allocating.
        self.sessions
            .read()
            .iter()
            .filter(|l| l.info.uid == uid && self.admits(l, now))
            .map(|l| l.token)
            .reduce(|a, b| a ^ b)
    }

    fn walkers(&self, domain: u32) -> Vec<Walker> {
        self.published.lock().get(&domain).cloned().unwrap_or_default()
    }
}

/// `Ok` unless one of `folders` already has `MAX_FOLDER_UIDS` walkers and
/// `uid` is not among them.
fn folder_room(walkers: &HashMap<u32, Vec<Walker>>, uid: u32, folders: impl Iterator<Item = u32>) -> Result<()> {
    for f in folders {
        let w = walkers.get(&f).map_or(&[][..], Vec::as_slice);
        if w.len() >= MAX_FOLDER_UIDS && !w.iter().any(|w| w.uid == uid) {
            return Err(Error::Repo(format!(
                "vault folder {f} already has {MAX_FOLDER_UIDS} users with live sessions on this fog node, \
                 the most its kernel access list can hold; try again when one logs out"
            )));
        }
    }
    Ok(())
}

fn connect(mountpoint: &Path) -> Result<UnixStream> {
    let path = socket_path(mountpoint);
    let s = UnixStream::connect(&path).map_err(|e| {
        Error::Repo(format!(
            "no fogvault daemon with sessions at {} ({e}); is it mounted from a repository with an admin authority?",
            mountpoint.display()
        ))
    })?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn reply(s: &mut UnixStream) -> Result<Vec<u8>> {
    let r = read_frame(s)?;
    match r.split_first() {
        Some((0, body)) => Ok(body.to_vec()),
        Some((1, msg)) => Err(Error::Repo(format!("refused by the fog node: {}", String::from_utf8_lossy(msg)))),
        _ => Err(Error::Repo("malformed reply from the fog node".into())),
    }
}

/// Run the handshake with the daemon serving `mountpoint`, then unwrap the
/// offered folder keys and hand them over the session channel.
pub fn login(mountpoint: &Path, key: &UserKey, break_glass: Option<String>, ttl: Option<u64>) -> Result<SessionInfo> {
    let mut s = connect(mountpoint)?;
    let (user, msg1) = UserInitiator::start(&key.identity);
    let mut req = vec![OP_LOGIN];
    req.extend_from_slice(&msg1);
    write_frame(&mut s, &req)?;
    let msg2 = reply(&mut s)?;
    let (msg3, keys) = user
        .finish(&key.mpk, Some(crate::repo::FOG_ID), &msg2)
        .map_err(|e| Error::Repo(format!("the fog node failed authentication: {e}")))?;
    write_frame(&mut s, &msg3)?;
    let offers = transport::open_offers(&keys, &reply(&mut s)?)
        .ok_or_else(|| Error::Repo("malformed folder-key offer from the fog node".into()))?;
    let delivery = KeyDelivery { keys: transport::unwrap_offers(&offers, &key.enrol), break_glass, ttl };
    write_frame(&mut s, &transport::seal_delivery(&keys, &delivery))?;
    let info = reply(&mut s)?;
    serde_json::from_slice(&info).map_err(|_| Error::Repo("malformed reply from the fog node".into()))
}

pub fn list(mountpoint: &Path) -> Result<Vec<SessionInfo>> {
    let mut s = connect(mountpoint)?;
    write_frame(&mut s, &[OP_LIST])?;
    serde_json::from_slice(&reply(&mut s)?).map_err(|_| Error::Repo("malformed reply from the fog node".into()))
}

pub fn logout(mountpoint: &Path) -> Result<usize> {
    let mut s = connect(mountpoint)?;
    write_frame(&mut s, &[OP_LOGOUT])?;
    String::from_utf8_lossy(&reply(&mut s)?)
        .parse()
        .map_err(|_| Error::Repo("malformed reply from the fog node".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_folder_takes_no_new_uid_but_its_own_again() {
        let full: Vec<Walker> =
            (0..MAX_FOLDER_UIDS as u32).map(|uid| Walker { uid: 1000 + uid, write: false }).collect();
        let walkers = HashMap::from([(7, full), (8, vec![Walker { uid: 1000, write: true }])]);
        assert!(folder_room(&walkers, 5000, [7].into_iter()).is_err());
        assert!(folder_room(&walkers, 5000, [8, 7].into_iter()).is_err());
        // A uid already on the list (a second session) adds nobody.
        assert!(folder_room(&walkers, 1000, [7].into_iter()).is_ok());
        assert!(folder_room(&walkers, 5000, [8, 9].into_iter()).is_ok());
    }
}
