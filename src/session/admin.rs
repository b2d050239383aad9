//! The admin's operations on the signed policy: enrol users, create vault
//! folders, grant, revoke. Each loads the current policy from the store,
//! changes it, re-syncs the folder-key wraps (rotating keys where someone
//! lost access) and publishes the next signed version.

use std::path::Path;

use super::identity::MasterSecret;
use super::keyfile::{read_admin_key, write_identity_key};
use super::policy::{self, BREAK_GLASS, BREAK_GLASS_PREFIX, BreakGlassRecord, Grant, Policy, Rights, Subject};
use super::wrap::EnrolSecret;
use crate::error::{Error, Result};
use crate::repo::{self, FOG_ID, PublicInfo};

pub struct Admin {
    info: PublicInfo,
    msk: MasterSecret,
}

/// What a `grant` asks for.
pub struct GrantRequest<'a> {
    pub subject: Subject,
    pub folder: &'a str,
    pub rights: Rights,
    pub expires: Option<u64>,
    pub hours: Option<(u8, u8)>,
}

impl Admin {
    /// Open the repository's public config and the admin key; they must match.
    pub fn open(location: &str, admin_key: &Path, pass: &[u8]) -> Result<Self> {
        let info = repo::public_info(location)?;
        let msk = read_admin_key(admin_key, pass)?;
        if msk.public() != info.mpk {
            return Err(Error::Repo("this admin key does not belong to the repository's authority".into()));
        }
        Ok(Admin { info, msk })
    }

    pub fn policy(&self) -> Result<Policy> {
        Policy::load_as_admin(&self.info.backend, &self.info.repo_id, &self.msk, &self.info.fog_id)
    }

    /// Apply `change`, re-sync wraps, publish. Returns folders whose key rotated.
    fn update(&self, change: impl FnOnce(&mut Policy) -> Result<()>) -> Result<(Policy, Vec<u32>)> {
        let mut p = self.policy()?;
        change(&mut p)?;
        let rotated = p.sync_wraps(&self.msk)?;
        p.publish(&self.info.backend, &self.info.repo_id, &self.msk, &self.info.fog_id)?;
        Ok((p, rotated))
    }

    /// Enrol `id`: issue its identity key and enrolment key into `key_out`.
    pub fn add_user(
        &self,
        id: &str,
        role: &str,
        expires: Option<u64>,
        key_out: &Path,
        user_pass: &[u8],
    ) -> Result<u64> {
        if id == FOG_ID {
            return Err(Error::Repo(format!("{id:?} is the fog node's identity")));
        }
        let enrol = EnrolSecret::generate();
        // Check first so a refused enrolment writes no key file.
        let mut probe = self.policy()?;
        probe.add_user(id, role, enrol.public(), expires)?;
        write_identity_key(key_out, &self.msk.extract(id), &enrol, role, &self.info.mpk, user_pass)?;
        match self.update(|p| p.add_user(id, role, enrol.public(), expires)) {
            Ok((p, _)) => Ok(p.version),
            Err(e) => {
                let _ = std::fs::remove_file(key_out);
                Err(e)
            }
        }
    }

    pub fn create_folder(&self, path: &str) -> Result<(u32, u64)> {
        let mut id = 0;
        let (p, _) = self.update(|p| {
            id = p.create_folder(path, &self.msk)?;
            Ok(())
        })?;
        Ok((id, p.version))
    }

    pub fn grant(&self, g: GrantRequest<'_>) -> Result<u64> {
        let (p, _) = self.update(|p| {
            let folder = p.folder_by_path(g.folder).ok_or_else(|| no_folder(g.folder))?.id;
            match &g.subject {
                Subject::User(u) if p.admit(u, 0).is_err() => {
                    return Err(Error::Repo(format!("no active user {u}")));
                }
                _ => {}
            }
            p.grant(Grant { subject: g.subject, folder, rights: g.rights, expires: g.expires, hours: g.hours });
            Ok(())
        })?;
        Ok(p.version)
    }

    /// Revoke a user (or their grant on one folder); returns the new policy
    /// version and how many folder keys rotated.
    pub fn revoke(&self, user: &str, folder: Option<&str>) -> Result<(u64, usize)> {
        let (p, rotated) = self.update(|p| {
            let f =
                folder.map(|path| p.folder_by_path(path).map(|f| f.id).ok_or_else(|| no_folder(path))).transpose()?;
            p.revoke(user, f)
        })?;
        Ok((p.version, rotated.len()))
    }
}

impl Admin {
    /// Replace the insider-detection rules; returns the new policy version.
    pub fn set_insider_rules(&self, rules: crate::audit::InsiderRules) -> Result<u64> {
        let (p, _) = self.update(|p| {
            p.insider = rules;
            Ok(())
        })?;
        Ok(p.version)
    }

    /// Lift the insider lock of `user` (locks raised before now).
    pub fn unlock_user(&self, user: &str) -> Result<u64> {
        let (p, _) = self.update(|p| {
            if p.user(user).is_none() {
                return Err(Error::Repo(format!("no user {user} in the policy")));
            }
            p.unlocks.insert(user.to_string(), policy::now_secs());
            Ok(())
        })?;
        Ok(p.version)
    }

    /// Ask the fog node to plant `count` decoy patients in `folder`.
    pub fn request_decoys(&self, folder: &str, count: u32) -> Result<u64> {
        let (p, _) = self.update(|p| {
            let f = p.folder_by_path(folder).map(|f| f.id).ok_or_else(|| no_folder(folder))?;
            let id = p.version + 1;
            p.decoy_requests.push(policy::DecoyRequest { id, folder: f, count });
            Ok(())
        })?;
        Ok(p.version)
    }

    /// What the fog node planted, per request (only the admin key opens these).
    pub fn decoy_records(&self) -> Result<Vec<policy::DecoyRecord>> {
        self.sealed_records(policy::DECOY_PREFIX, policy::DECOYS, "decoy")
    }

    /// Every break-glass record in the store, oldest first. A record that
    /// fails authentication is an error: it was tampered with.
    pub fn break_glass_records(&self) -> Result<Vec<BreakGlassRecord>> {
        self.sealed_records(BREAK_GLASS_PREFIX, BREAK_GLASS, "break-glass")
    }

    /// Every record the fog node sealed for the admin under `prefix`, oldest first.
    fn sealed_records<T: serde::de::DeserializeOwned>(&self, prefix: &str, what: &str, label: &str) -> Result<Vec<T>> {
        let mut names: Vec<String> =
            self.info.backend.list(prefix.trim_end_matches('/'))?.into_iter().map(|(n, _)| n).collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let Some(sealed) = self.info.backend.get(&name)? else { continue };
            let plain = policy::open_as_admin(&self.msk, &self.info.fog_id, &self.info.repo_id, what, &sealed)
                .ok_or_else(|| Error::Integrity(format!("{label} record {name} fails authentication")))?;
            out.push(
                serde_json::from_slice(&plain)
                    .map_err(|_| Error::Integrity(format!("{label} record {name} is malformed")))?,
            );
        }
        Ok(out)
    }
}

fn no_folder(path: &str) -> Error {
    Error::Repo(format!("no vault folder {path} in the policy (create it with `admin folder create`)"))
}
