//! The command line: subcommands, their arguments and value parsers (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use fogvault::session::Rights;

#[derive(Parser)]
#[command(
    name = "fogvault",
    version,
    about = "Encrypted, deduplicating medical-records vault over untrusted object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a new repository (REPO: a directory path).
    Init(InitArgs),
    /// Administration with the admin key: users, vault folders, grants, the policy.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Authenticate to a mounted vault (identity-based handshake over the control socket).
    Login(LoginArgs),
    /// End the caller's sessions on a mounted vault.
    Logout(LogoutArgs),
    /// List active sessions (your own; root sees all). No secrets are shown.
    Sessions(SessionsArgs),
    /// Mount the vault in the foreground; `fusermount3 -u MOUNTPOINT` or Ctrl-C unmounts.
    Mount(MountArgs),
    /// Reclaim the space of deleted data: drop dead chunks, delete or repack
    /// packs that are mostly dead. Runs inside the mount if one serves --cache.
    Gc(RepoArgs),
    /// The audit trail: who opened, read, wrote, deleted, renamed what, when,
    /// in which session; logins, break-glass, policy changes, alerts.
    Audit(AuditArgs),
    /// Write synthetic patients (DICOM CT series, report, FHIR) to a directory:
    /// the generator decoys come from, for demos and tests.
    SynthPatients(SynthPatientsArgs),
    /// Rebuild a lost fog node's state from the store alone (into an empty --cache).
    Recover(RecoverArgs),
    /// Logical vs stored bytes, chunks, files.
    Stats(RepoArgs),
    /// Restore full redundancy of a mirrored repository (copies what a store lacks).
    Repair(RepairArgs),
    /// Check that every object is present and authentic; exit 1 on any finding.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    pub repo: String,
    /// Also create the admin authority (BLS12-381 master secret) and write
    /// it, sealed with FOGVAULT_ADMIN_PASSPHRASE, to this file. Keep it off the fog node.
    #[arg(long)]
    pub admin_key: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct LoginArgs {
    #[arg(long)]
    pub mount: PathBuf,
    /// Identity key file (passphrase: FOGVAULT_KEY_PASSPHRASE or a prompt).
    #[arg(long)]
    pub key: PathBuf,
    /// Emergency access to folders you hold no grant for (emergency roles only; recorded).
    #[arg(long, requires = "reason")]
    pub break_glass: bool,
    /// Why the glass is broken (required with --break-glass).
    #[arg(long, requires = "break_glass")]
    pub reason: Option<String>,
    /// End the session after this many seconds (default: the daemon's 8 hours).
    #[arg(long)]
    pub ttl: Option<u64>,
}

#[derive(clap::Args)]
pub struct LogoutArgs {
    #[arg(long)]
    pub mount: PathBuf,
}

#[derive(clap::Args)]
pub struct SessionsArgs {
    #[arg(long)]
    pub mount: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct MountArgs {
    #[arg(long)]
    pub repo: String,
    pub mountpoint: PathBuf,
    /// Fog-node state directory (default ~/.cache/fogvault/<repo id>).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Let other Unix users use the mount (needs root or user_allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// Bound of the local upload journal while the store is unreachable
    /// (e.g. 512M, 4G); beyond it writers get ENOSPC.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub journal_limit: u64,
    /// Metadata journal objects in the cloud between compacted snapshots.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// Audit records already in the store that the fog node also keeps on
    /// its disk (e.g. 256M, 10G); older ones are read from the store.
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    pub audit_keep_local: u64,
    /// Who checks path walks into vault folders. kernel: an access list on
    /// each folder root names the uids with sessions, so a walk costs no
    /// request to the daemon, but walks it refuses are not in the audit trail
    /// (needs root; otherwise daemon). daemon: every walk into a folder is a
    /// LOOKUP the session gate answers, and every refusal is audited.
    #[arg(long, value_enum, default_value_t = WalkCheck::Kernel)]
    pub walk_check: WalkCheck,
}

/// See `MountArgs::walk_check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WalkCheck {
    Kernel,
    Daemon,
}

/// A repository, the fog node's cache for it, and JSON output (`gc`, `stats`).
#[derive(clap::Args)]
pub struct RepoArgs {
    #[arg(long)]
    pub repo: String,
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub repo: String,
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Check both copies (fog node and store) for removed, reordered or altered records.
    #[arg(long)]
    pub verify: bool,
    /// Only records since this time (Unix seconds, or YYYY-MM-DD[THH:MM[:SS]] UTC).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<u64>,
    #[arg(long)]
    pub user: Option<String>,
    /// Only records whose path has this component (a patient's directory).
    #[arg(long)]
    pub patient: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct SynthPatientsArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub count: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(clap::Args)]
pub struct RecoverArgs {
    #[arg(long)]
    pub repo: String,
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Refuse a metadata root older than this generation (the last one
    /// you know of, from `stats`): catches a store rolled back as a whole.
    #[arg(long, default_value_t = 0)]
    pub min_generation: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RepairArgs {
    #[arg(long)]
    pub repo: String,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub repo: String,
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Also download, decrypt and hash every live chunk.
    #[arg(long, conflicts_with = "sample")]
    pub deep: bool,
    /// Instead of reading every pack header, challenge N random 64 KiB blocks
    /// of random packs (per store) against MACs kept at upload.
    #[arg(long, value_name = "N")]
    pub sample: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

/// Every admin command works on the store's signed policy with the admin key.
#[derive(clap::Args)]
pub struct AdminArgs {
    #[arg(long)]
    pub repo: String,
    /// The admin key file from `init --admin-key` (FOGVAULT_ADMIN_PASSPHRASE).
    #[arg(long)]
    pub admin_key: PathBuf,
}

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Users and their identity keys.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Vault folders (key domains).
    Folder {
        #[command(subcommand)]
        cmd: FolderCmd,
    },
    /// Give a user or a role rights on a vault folder.
    Grant {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long, conflicts_with = "role", required_unless_present = "role")]
        user: Option<String>,
        #[arg(long)]
        role: Option<String>,
        /// Vault folder path, as given to `admin folder create`.
        #[arg(long)]
        folder: String,
        /// r, rw or rwa.
        #[arg(long, value_parser = parse_rights)]
        rights: Rights,
        /// The grant lapses after this many days.
        #[arg(long)]
        expires_days: Option<u64>,
        /// UTC hours the grant applies, e.g. 7-19.
        #[arg(long, value_parser = parse_hours)]
        hours: Option<(u8, u8)>,
    },
    /// Revoke a user (all access, live sessions end) or their grant on one folder;
    /// folder keys they held are rotated.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        user: String,
        #[arg(long)]
        folder: Option<String>,
    },
    /// The signed policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Break-glass sessions recorded by fog nodes (who, when, why, which folders).
    BreakGlass {
        #[command(subcommand)]
        cmd: BreakGlassCmd,
    },
    /// Insider-detection thresholds and what an alert does (signed into the policy).
    Alerts {
        #[command(subcommand)]
        cmd: AlertsCmd,
    },
    /// Lift the lock an insider alert put on a user.
    Unlock {
        #[command(flatten)]
        admin: AdminArgs,
        user: String,
    },
    /// Decoy patients planted by the fog node beside real ones.
    Decoys {
        #[command(subcommand)]
        cmd: DecoysCmd,
    },
}

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Change the thresholds given; the others keep their values.
    Set {
        #[command(flatten)]
        admin: AdminArgs,
        /// Distinct patients one uid may open per --window-secs.
        #[arg(long)]
        max_patients: Option<u32>,
        #[arg(long)]
        window_secs: Option<u64>,
        /// A bulk copy: this many distinct patients within --bulk-secs.
        #[arg(long)]
        bulk_patients: Option<u32>,
        #[arg(long)]
        bulk_secs: Option<u64>,
        /// MiB one uid may read per minute.
        #[arg(long)]
        max_mib_per_min: Option<u64>,
        /// Lock the session when an alert fires: on or off.
        #[arg(long, value_parser = parse_on_off)]
        lock: Option<bool>,
        /// POST alerts as JSON to this URL ("" to stop).
        #[arg(long)]
        webhook: Option<String>,
    },
    /// Show the current thresholds.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum DecoysCmd {
    /// Ask the fog node to plant N decoy patients in a vault folder (done
    /// the next time a session unlocks the folder).
    Plant {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        folder: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10000))]
        count: u32,
    },
    /// Which patients are decoys (only the admin key can tell).
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum BreakGlassCmd {
    /// List every recorded break-glass session.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Enrol ID: issue its identity key, sealed with FOGVAULT_KEY_PASSPHRASE (or a prompt).
    Add {
        id: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        key_out: PathBuf,
        /// The identity stops being admitted after this many days.
        #[arg(long)]
        expires_days: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum FolderCmd {
    /// Make PATH (below the mount root) a vault folder with its own key.
    Create {
        path: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Print the current policy (no key material).
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("size must look like 512M or 4G, not {s:?}")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("size must look like 512M or 4G, not {s:?}"))
}

pub fn parse_rights(s: &str) -> Result<Rights, String> {
    Rights::parse(s).ok_or_else(|| format!("rights must be r, rw or rwa, not {s:?}"))
}

pub fn parse_hours(s: &str) -> Result<(u8, u8), String> {
    let bad = || format!("hours must look like 7-19 (UTC, 0-24), not {s:?}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u8, u8) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > 24 || b > 24 || a == b {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// Unix seconds, or a UTC date `YYYY-MM-DD[THH:MM[:SS]]`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    use chrono::{NaiveDate, NaiveDateTime};
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let t = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
        .ok_or_else(|| format!("{s:?} is neither Unix seconds nor YYYY-MM-DD[THH:MM[:SS]]"))?;
    u64::try_from(t.and_utc().timestamp()).map_err(|_| format!("{s:?} is before 1970"))
}
