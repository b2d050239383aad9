//! The authorization policy (DESIGN.md §3 "authorization rules"): users,
//! roles, vault folders with their wrapped keys, grants with rights, expiry
//! and hours. The admin signs it; it is sealed and versioned in the store.
//!
//! Store objects: `policy/current` and `policy/v/<version:016x>` (history),
//! each JSON `{format, version, sealed, signature}`:
//! - `sealed` = XChaCha20-Poly1305(K_pol, AAD `"fogvault policy v<N> <repo id>"`,
//!   JSON body), `K_pol = derive_key("fogvault v1 policy key", d_F ‖ repo id)`:
//!   the fog node holds `d_F`, the admin recomputes it from `s`, nobody else can.
//! - `signature` = Cha–Cheon signature by the admin identity [`ADMIN_ID`] over
//!   `"fogvault v1 policy " ‖ repo id ‖ N (u64 BE) ‖ BLAKE3(sealed)`.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ibs::{self, SIGNATURE_LEN, Signature};
use super::identity::{IdentityKey, MasterPublic, MasterSecret};
use super::wrap::{self, EnrolSecret, Wrap};
use crate::chunk_store::Backend;
use crate::crypto::{self, Key32};
use crate::error::{Error, Result};

pub const POLICY_CURRENT: &str = "policy/current";
/// Break-glass records: `breakglass/<start:016x>-<session id, 16 hex>`.
pub const BREAK_GLASS_PREFIX: &str = "breakglass/";
/// AAD word of sealed break-glass records.
pub const BREAK_GLASS: &str = "break-glass";

/// A break-glass session as recorded in the store for the admin (sealed under `K_pol`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BreakGlassRecord {
    pub user: String,
    pub uid: u32,
    pub session: String,
    pub reason: String,
    pub folders: Vec<String>,
    pub started: u64,
    pub expires: u64,
}
/// The identity that signs policies (user ids may not start with '@').
pub const ADMIN_ID: &str = "@admin";
const DEFAULT_BREAK_GLASS_MINUTES: u32 = 60;

fn history_name(version: u64) -> String {
    format!("policy/v/{version:016x}")
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Rights {
    pub const READ_WRITE: Rights = Rights { read: true, write: true, admin: false };

    /// `r`, `rw` or `rwa` (write and admin imply read).
    pub fn parse(s: &str) -> Option<Rights> {
        match s {
            "r" => Some(Rights { read: true, write: false, admin: false }),
            "rw" => Some(Rights::READ_WRITE),
            "rwa" => Some(Rights { read: true, write: true, admin: true }),
            _ => None,
        }
    }

    fn union(self, o: Rights) -> Rights {
        Rights { read: self.read || o.read, write: self.write || o.write, admin: self.admin || o.admin }
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match (self.write, self.admin) {
            (_, true) => "rwa",
            (true, false) => "rw",
            _ if self.read => "r",
            _ => "-",
        };
        f.write_str(s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    User(String),
    Role(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub subject: Subject,
    pub folder: u32,
    pub rights: Rights,
    /// Unix seconds after which the grant no longer applies.
    pub expires: Option<u64>,
    /// UTC hours `[from, to)` in which the grant applies (wraps past midnight if from > to).
    pub hours: Option<(u8, u8)>,
}

impl Grant {
    /// Is this a grant on `folder` to `u`, directly or through `u`'s role?
    fn applies_to(&self, u: &UserEntry, folder: u32) -> bool {
        self.folder == folder
            && match &self.subject {
                Subject::User(id) => *id == u.id,
                Subject::Role(r) => *r == u.role,
            }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    pub id: String,
    pub role: String,
    /// Enrolment public key (compressed G1) that folder keys are wrapped to.
    #[serde(with = "hex::serde")]
    pub enrol: Vec<u8>,
    pub expires: Option<u64>,
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderEntry {
    pub id: u32,
    /// Path below the mount root.
    pub path: String,
    /// Current key version (1 at creation, +1 per rotation).
    pub version: u32,
    #[serde(with = "hex::serde")]
    pub check: Vec<u8>,
    pub wraps: Vec<Wrap>,
    /// `chain[i]` = key of version i+1 sealed under the key of version i+2.
    pub chain: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub version: u64,
    pub issued: u64,
    pub users: Vec<UserEntry>,
    pub folders: Vec<FolderEntry>,
    pub grants: Vec<Grant>,
    /// Roles whose users may break the glass.
    pub emergency_roles: Vec<String>,
    pub break_glass_minutes: u32,
    /// Insider-detection thresholds and what an alert does.
    #[serde(default)]
    pub insider: crate::audit::InsiderRules,
    /// user → time (Unix seconds) of the admin's last unlock: a lock older
    /// than this is lifted.
    #[serde(default)]
    pub unlocks: std::collections::BTreeMap<String, u64>,
    /// Decoy patients the fog node is to plant (each request once).
    #[serde(default)]
    pub decoy_requests: Vec<DecoyRequest>,
}

/// "Plant `count` decoy patients in `folder`": done by the fog node the next
/// time the folder is unlocked; `id` names the request's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecoyRequest {
    pub id: u64,
    pub folder: u32,
    pub count: u32,
}

/// What the fog node planted for one request (sealed for the admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecoyRecord {
    pub request: u64,
    pub folder: String,
    /// Directory names of the decoy patients, below the folder.
    pub patients: Vec<String>,
    pub planted: u64,
}

pub const DECOY_PREFIX: &str = "decoys/";
pub const DECOYS: &str = "decoys";

/// Object name of the record of decoy request `id`.
pub fn decoy_record_name(id: u64) -> String {
    format!("{DECOY_PREFIX}{id:016x}")
}

#[derive(Serialize, Deserialize)]
struct PolicyObject {
    format: String,
    version: u64,
    #[serde(with = "hex::serde")]
    sealed: Vec<u8>,
    #[serde(with = "hex::serde")]
    signature: Vec<u8>,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn policy_key(fog: &IdentityKey, repo_id: &str) -> Key32 {
    let mut h = blake3::Hasher::new_derive_key("fogvault v1 policy key");
    h.update(&fog.to_bytes());
    h.update(repo_id.as_bytes());
    Key32::from_bytes(*h.finalize().as_bytes())
}

/// Seal a record only the admin (and this fog node) can read, e.g. a
/// break-glass record: XChaCha20-Poly1305 under `K_pol`.
pub fn seal_for_admin(fog: &IdentityKey, repo_id: &str, what: &str, data: &[u8]) -> Vec<u8> {
    crypto::seal(&policy_key(fog, repo_id), format!("fogvault {what} {repo_id}").as_bytes(), data)
}

pub fn open_as_admin(msk: &MasterSecret, fog_id: &str, repo_id: &str, what: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    crypto::open(&policy_key(&msk.extract(fog_id), repo_id), format!("fogvault {what} {repo_id}").as_bytes(), sealed)
        .ok()
}

fn signed_message(repo_id: &str, version: u64, sealed: &[u8]) -> Vec<u8> {
    let mut m = b"fogvault v1 policy ".to_vec();
    m.extend_from_slice(repo_id.as_bytes());
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(blake3::hash(sealed).as_bytes());
    m
}

fn aad(repo_id: &str, version: u64) -> Vec<u8> {
    format!("fogvault policy v{version} {repo_id}").into_bytes()
}

/// Why a policy object was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the policy object is malformed")]
    Malformed,
    #[error("the policy signature does not verify (unsigned or altered)")]
    BadSignature,
    #[error("the policy v{got} is older than the accepted v{have} (rollback refused)")]
    Rollback { got: u64, have: u64 },
    #[error("the policy cannot be read from the store: {0}")]
    Store(String),
}

fn in_hours(hours: Option<(u8, u8)>, now: u64) -> bool {
    let Some((from, to)) = hours else { return true };
    let h = ((now / 3600) % 24) as u8;
    if from <= to { (from..to).contains(&h) } else { h >= from || h < to }
}

impl Policy {
    pub fn empty() -> Self {
        Policy {
            version: 0,
            issued: 0,
            users: Vec::new(),
            folders: Vec::new(),
            grants: Vec::new(),
            emergency_roles: vec!["emergency".into()],
            break_glass_minutes: DEFAULT_BREAK_GLASS_MINUTES,
            insider: crate::audit::InsiderRules::default(),
            unlocks: std::collections::BTreeMap::new(),
            decoy_requests: Vec::new(),
        }
    }

    /// Read and check the current policy as the fog node (`fog` = its identity key).
    /// `None` when the admin has not published one yet.
    pub fn load(
        backend: &Backend,
        repo_id: &str,
        mpk: &MasterPublic,
        fog: &IdentityKey,
    ) -> std::result::Result<Option<Policy>, PolicyError> {
        Self::fetch(backend)?.map(|raw| Self::open(&raw, repo_id, mpk, fog)).transpose()
    }

    /// The raw current policy object (None: none published yet).
    pub fn fetch(backend: &Backend) -> std::result::Result<Option<Bytes>, PolicyError> {
        backend.get_small(POLICY_CURRENT).map_err(|e| PolicyError::Store(e.to_string()))
    }

    /// Check the admin's signature on a raw policy object and open it.
    pub fn open(
        raw: &[u8],
        repo_id: &str,
        mpk: &MasterPublic,
        fog: &IdentityKey,
    ) -> std::result::Result<Policy, PolicyError> {
        let key = policy_key(fog, repo_id);
        let obj: PolicyObject = serde_json::from_slice(raw).map_err(|_| PolicyError::Malformed)?;
        if obj.format != "fogvault-policy" || obj.signature.len() != SIGNATURE_LEN {
            return Err(PolicyError::Malformed);
        }
        let sig = Signature::from_bytes(&obj.signature).ok_or(PolicyError::BadSignature)?;
        if !ibs::verify(mpk, ADMIN_ID, &signed_message(repo_id, obj.version, &obj.sealed), &sig) {
            return Err(PolicyError::BadSignature);
        }
        let plain =
            crypto::open(&key, &aad(repo_id, obj.version), &obj.sealed).map_err(|_| PolicyError::BadSignature)?;
        let p: Policy = serde_json::from_slice(&plain).map_err(|_| PolicyError::Malformed)?;
        if p.version != obj.version {
            return Err(PolicyError::Malformed);
        }
        Ok(p)
    }

    /// The admin's view: the current policy (or an empty one).
    pub fn load_as_admin(backend: &Backend, repo_id: &str, msk: &MasterSecret, fog_id: &str) -> Result<Policy> {
        match Self::load(backend, repo_id, &msk.public(), &msk.extract(fog_id)) {
            Ok(p) => Ok(p.unwrap_or_else(Policy::empty)),
            Err(e) => Err(Error::Repo(e.to_string())),
        }
    }

    /// Sign, seal and store this policy as the next version.
    pub fn publish(&mut self, backend: &Backend, repo_id: &str, msk: &MasterSecret, fog_id: &str) -> Result<()> {
        self.version += 1;
        self.issued = now_secs();
        let key = policy_key(&msk.extract(fog_id), repo_id);
        let body = serde_json::to_vec(self).expect("policy serializes");
        let sealed = crypto::seal(&key, &aad(repo_id, self.version), &body);
        let sig = ibs::sign(&msk.extract(ADMIN_ID), &signed_message(repo_id, self.version, &sealed));
        let obj = PolicyObject {
            format: "fogvault-policy".into(),
            version: self.version,
            sealed,
            signature: sig.to_bytes().to_vec(),
        };
        let json = Bytes::from(serde_json::to_vec_pretty(&obj).expect("policy object serializes"));
        if !backend.put_if_absent(&history_name(self.version), json.clone())? {
            return Err(Error::Repo(format!(
                "policy v{} was published concurrently; run the command again",
                self.version
            )));
        }
        backend.put(POLICY_CURRENT, json)
    }

    // ---- evaluation (fog node) ----

    pub fn user(&self, id: &str) -> Option<&UserEntry> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn folder(&self, id: u32) -> Option<&FolderEntry> {
        self.folders.iter().find(|f| f.id == id)
    }

    pub fn folder_by_path(&self, path: &str) -> Option<&FolderEntry> {
        let want = normalize_path(path);
        self.folders.iter().find(|f| f.path == want)
    }

    /// May `id` start a session now? (Unknown, revoked and expired identities may not.)
    pub fn admit(&self, id: &str, now: u64) -> std::result::Result<&UserEntry, String> {
        let u = self.user(id).ok_or_else(|| "unknown identity".to_string())?;
        if u.revoked {
            return Err("identity revoked".into());
        }
        if u.expires.is_some_and(|t| now >= t) {
            return Err("identity expired".into());
        }
        Ok(u)
    }

    /// What `user` may do in `folder` now (union of user and role grants).
    pub fn rights(&self, user: &str, folder: u32, now: u64) -> Rights {
        self.live_grants(user, folder, now)
            .filter(|g| in_hours(g.hours, now))
            .fold(Rights::default(), |acc, g| acc.union(g.rights))
    }

    /// Unexpired grants of an admitted `user` on `folder`, whatever the hour.
    fn live_grants<'p>(&'p self, user: &str, folder: u32, now: u64) -> impl Iterator<Item = &'p Grant> {
        let u = self.admit(user, now).ok();
        self.grants
            .iter()
            .filter(move |g| u.is_some_and(|u| g.applies_to(u, folder)) && g.expires.is_none_or(|t| now < t))
    }

    /// Does `user` hold an unexpired grant on `folder`, whatever the hour?
    pub fn has_grant(&self, user: &str, folder: u32, now: u64) -> bool {
        self.live_grants(user, folder, now).next().is_some()
    }

    pub fn may_break_glass(&self, user: &str, now: u64) -> bool {
        self.admit(user, now).is_ok_and(|u| self.emergency_roles.contains(&u.role))
    }

    /// Every key version of `folder`, newest first, from its newest key.
    pub fn key_versions(&self, folder: u32, newest: &Key32) -> Option<Vec<(u32, Key32)>> {
        let f = self.folder(folder)?;
        if wrap::key_check(newest, f.id, f.version).as_slice() != f.check.as_slice() {
            return None;
        }
        let mut out = vec![(f.version, newest.clone())];
        for v in (1..f.version).rev() {
            let sealed = f.chain.get(v as usize - 1)?;
            let older = wrap::chain_open(&out.last()?.1, sealed, f.id, v)?;
            out.push((v, older));
        }
        Some(out)
    }

    // ---- administration ----

    fn admin_enrol(msk: &MasterSecret) -> EnrolSecret {
        EnrolSecret::derive("fogvault v1 admin enrolment", &msk.to_bytes())
    }

    /// Users who should hold a wrap of `folder`: any grant, or an emergency role.
    fn recipients(&self, folder: u32) -> BTreeSet<String> {
        self.users
            .iter()
            .filter(|u| !u.revoked)
            .filter(|u| self.emergency_roles.contains(&u.role) || self.grants.iter().any(|g| g.applies_to(u, folder)))
            .map(|u| u.id.clone())
            .collect()
    }

    /// Bring every folder's wraps in line with the grants: new recipients get
    /// a wrap; if anyone lost their place, the folder key is rotated (new key,
    /// old key chained under it, fresh wraps for those who remain).
    pub fn sync_wraps(&mut self, msk: &MasterSecret) -> Result<Vec<u32>> {
        let admin = Self::admin_enrol(msk);
        let mut rotated = Vec::new();
        for i in 0..self.folders.len() {
            let want = self.recipients(self.folders[i].id);
            let f = &self.folders[i];
            let have: BTreeSet<String> =
                f.wraps.iter().map(|w| w.recipient.clone()).filter(|r| r != ADMIN_ID).collect();
            let admin_wrap = f
                .wraps
                .iter()
                .find(|w| w.recipient == ADMIN_ID)
                .ok_or_else(|| Error::Repo("a folder has no admin wrap".into()))?;
            let current = wrap::unwrap(admin_wrap, &admin, f.id, f.version)
                .ok_or_else(|| Error::Repo("the admin key cannot unwrap a folder key".into()))?;
            let (fk, version, mut chain) = if have.is_subset(&want) {
                (current, f.version, f.chain.clone())
            } else {
                let next = Key32::random();
                let mut chain = f.chain.clone();
                chain.push(wrap::chain_seal(&next, &current, f.id, f.version));
                rotated.push(f.id);
                (next, f.version + 1, chain)
            };
            let id = f.id;
            let mut wraps = Vec::new();
            let keep_old = version == f.version;
            for r in std::iter::once(ADMIN_ID.to_string()).chain(want) {
                if keep_old && let Some(w) = f.wraps.iter().find(|w| w.recipient == r) {
                    wraps.push(w.clone());
                    continue;
                }
                let enrol = if r == ADMIN_ID {
                    admin.public().to_vec()
                } else {
                    self.user(&r).expect("recipient").enrol.clone()
                };
                wraps.push(
                    wrap::wrap(&fk, &enrol, id, version, &r)
                        .ok_or_else(|| Error::Repo(format!("user {r} has a malformed enrolment key")))?,
                );
            }
            let f = &mut self.folders[i];
            f.check = wrap::key_check(&fk, id, version).to_vec();
            f.version = version;
            f.wraps = wraps;
            std::mem::swap(&mut f.chain, &mut chain);
        }
        Ok(rotated)
    }

    pub fn add_user(&mut self, id: &str, role: &str, enrol: [u8; 48], expires: Option<u64>) -> Result<()> {
        check_id(id)?;
        check_id(role)?;
        let entry = UserEntry { id: id.into(), role: role.into(), enrol: enrol.to_vec(), expires, revoked: false };
        match self.users.iter_mut().find(|u| u.id == id) {
            Some(u) if !u.revoked => return Err(Error::Repo(format!("user {id} already exists"))),
            Some(u) => *u = entry, // re-enrolment of a revoked user: new keys
            None => self.users.push(entry),
        }
        Ok(())
    }

    pub fn create_folder(&mut self, path: &str, msk: &MasterSecret) -> Result<u32> {
        let path = normalize_path(path);
        if path.is_empty() || path.split('/').any(|p| p == "." || p == "..") {
            return Err(Error::Repo("a vault folder needs a path below the mount root".into()));
        }
        for f in &self.folders {
            let nested = path.starts_with(&format!("{}/", f.path)) || f.path.starts_with(&format!("{path}/"));
            if f.path == path || nested {
                return Err(Error::Repo(format!("vault folder {path} overlaps an existing one (no nesting)")));
            }
        }
        let id = self.folders.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        let fk = Key32::random();
        let admin = Self::admin_enrol(msk);
        let w = wrap::wrap(&fk, &admin.public(), id, 1, ADMIN_ID).expect("admin key is a point");
        self.folders.push(FolderEntry {
            id,
            path,
            version: 1,
            check: wrap::key_check(&fk, id, 1).to_vec(),
            wraps: vec![w],
            chain: Vec::new(),
        });
        Ok(id)
    }

    pub fn grant(&mut self, g: Grant) {
        self.grants.retain(|o| !(o.subject == g.subject && o.folder == g.folder));
        self.grants.push(g);
    }

    /// Revoke `user` entirely, or only their own grants on `folder`.
    pub fn revoke(&mut self, user: &str, folder: Option<u32>) -> Result<()> {
        let u = self.users.iter_mut().find(|u| u.id == user).ok_or_else(|| Error::Repo(format!("no user {user}")))?;
        match folder {
            None => u.revoked = true,
            Some(f) => {
                let before = self.grants.len();
                self.grants.retain(|g| !(g.folder == f && g.subject == Subject::User(user.into())));
                if before == self.grants.len() {
                    return Err(Error::Repo(format!("{user} has no grant of their own on that folder")));
                }
            }
        }
        Ok(())
    }
}

/// The policy as `admin policy show` prints it: no wraps, no key material.
#[derive(Serialize)]
pub struct Summary {
    pub version: u64,
    pub issued: u64,
    pub users: Vec<UserSummary>,
    pub folders: Vec<FolderSummary>,
    pub grants: Vec<GrantSummary>,
    pub emergency_roles: Vec<String>,
    pub break_glass_minutes: u32,
}

#[derive(Serialize)]
pub struct UserSummary {
    pub id: String,
    pub role: String,
    pub expires: Option<u64>,
    pub revoked: bool,
}

#[derive(Serialize)]
pub struct FolderSummary {
    pub id: u32,
    pub path: String,
    pub key_version: u32,
    pub key_holders: Vec<String>,
}

#[derive(Serialize)]
pub struct GrantSummary {
    pub subject: String,
    pub folder: String,
    pub rights: String,
    pub expires: Option<u64>,
    pub hours: Option<(u8, u8)>,
}

impl Policy {
    pub fn summary(&self) -> Summary {
        Summary {
            version: self.version,
            issued: self.issued,
            users: self
                .users
                .iter()
                .map(|u| UserSummary { id: u.id.clone(), role: u.role.clone(), expires: u.expires, revoked: u.revoked })
                .collect(),
            folders: self
                .folders
                .iter()
                .map(|f| FolderSummary {
                    id: f.id,
                    path: f.path.clone(),
                    key_version: f.version,
                    key_holders: f.wraps.iter().map(|w| w.recipient.clone()).collect(),
                })
                .collect(),
            grants: self
                .grants
                .iter()
                .map(|g| GrantSummary {
                    subject: match &g.subject {
                        Subject::User(u) => format!("user:{u}"),
                        Subject::Role(r) => format!("role:{r}"),
                    },
                    folder: self.folder(g.folder).map_or_else(|| format!("#{}", g.folder), |f| f.path.clone()),
                    rights: g.rights.to_string(),
                    expires: g.expires,
                    hours: g.hours,
                })
                .collect(),
            emergency_roles: self.emergency_roles.clone(),
            break_glass_minutes: self.break_glass_minutes,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "policy v{} (issued {})", self.version, self.issued)?;
        writeln!(f, "users:")?;
        for u in &self.users {
            let state = if u.revoked { " REVOKED" } else { "" };
            let exp = u.expires.map(|t| format!(" expires {t}")).unwrap_or_default();
            writeln!(f, "  {} role={}{exp}{state}", u.id, u.role)?;
        }
        writeln!(f, "folders:")?;
        for d in &self.folders {
            writeln!(f, "  {} /{} key v{} held by {}", d.id, d.path, d.key_version, d.key_holders.join(","))?;
        }
        writeln!(f, "grants:")?;
        for g in &self.grants {
            let exp = g.expires.map(|t| format!(" expires {t}")).unwrap_or_default();
            let hours = g.hours.map(|(a, b)| format!(" hours {a}-{b} UTC")).unwrap_or_default();
            writeln!(f, "  {} {} /{}{exp}{hours}", g.subject, g.rights, g.folder)?;
        }
        writeln!(f, "break-glass: roles {} for {} minutes", self.emergency_roles.join(","), self.break_glass_minutes)
    }
}

pub fn normalize_path(p: &str) -> String {
    p.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/")
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('@')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok { Ok(()) } else { Err(Error::Repo(format!("invalid id {id:?} (letters, digits, . _ -; at most 128)"))) }
}
