//! The `fogvault` command line. Exit codes: 0 ok, 1 failure, 2 bad usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use fogvault::error::Error;
use fogvault::repo::{self, Repo};
use fogvault::session::{self, Admin, GrantRequest, MasterSecret, Rights, Subject, control};
use fogvault::vault::{Caller, Vault, VaultOptions};
use fogvault::{fuse_adapter, tools};

/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

#[derive(Parser)]
#[command(
    name = "fogvault",
    version,
    about = "Encrypted, deduplicating medical-records vault over untrusted object storage"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new repository (REPO: a directory path).
    Init {
        #[arg(long)]
        repo: String,
        /// Also create the admin authority (BLS12-381 master secret) and write
        /// it, sealed with FOGVAULT_ADMIN_PASSPHRASE, to this file. Keep it off the fog node.
        #[arg(long)]
        admin_key: Option<PathBuf>,
    },
    /// Administration with the admin key: users, vault folders, grants, the policy.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Authenticate to a mounted vault (identity-based handshake over the control socket).
    Login {
        #[arg(long)]
        mount: PathBuf,
        /// Identity key file (passphrase: FOGVAULT_KEY_PASSPHRASE or a prompt).
        #[arg(long)]
        key: PathBuf,
        /// Emergency access to folders you hold no grant for (emergency roles only; recorded).
        #[arg(long, requires = "reason")]
        break_glass: bool,
        /// Why the glass is broken (required with --break-glass).
        #[arg(long, requires = "break_glass")]
        reason: Option<String>,
        /// End the session after this many seconds (default: the daemon's 8 hours).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// End the caller's sessions on a mounted vault.
    Logout {
        #[arg(long)]
        mount: PathBuf,
    },
    /// List active sessions (your own; root sees all). No secrets are shown.
    Sessions {
        #[arg(long)]
        mount: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Mount the vault in the foreground; `fusermount3 -u MOUNTPOINT` or Ctrl-C unmounts.
    Mount {
        #[arg(long)]
        repo: String,
        mountpoint: PathBuf,
        /// Fog-node state directory (default ~/.cache/fogvault/<repo id>).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Let other Unix users use the mount (needs root or user_allow_other).
        #[arg(long)]
        allow_other: bool,
        /// Bound of the local upload journal while the store is unreachable
        /// (e.g. 512M, 4G); beyond it writers get ENOSPC.
        #[arg(long, value_parser = parse_size, default_value = "1G")]
        journal_limit: u64,
        /// Metadata journal objects in the cloud between compacted snapshots.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        snapshot_every: u64,
        /// Audit records already in the store that the fog node also keeps on
        /// its disk (e.g. 256M, 10G); older ones are read from the store.
        #[arg(long, value_parser = parse_size, default_value = "256M")]
        audit_keep_local: u64,
    },
    /// Reclaim the space of deleted data: drop dead chunks, delete or repack
    /// packs that are mostly dead. Runs inside the mount if one serves --cache.
    Gc {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The audit trail: who opened, read, wrote, deleted, renamed what, when,
    /// in which session; logins, break-glass, policy changes, alerts.
    Audit {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Check both copies (fog node and store) for removed, reordered or altered records.
        #[arg(long)]
        verify: bool,
        /// Only records since this time (Unix seconds, or YYYY-MM-DD[THH:MM[:SS]] UTC).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        #[arg(long)]
        user: Option<String>,
        /// Only records whose path has this component (a patient's directory).
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write synthetic patients (DICOM CT series, report, FHIR) to a directory:
    /// the generator decoys come from, for demos and tests.
    SynthPatients {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Rebuild a lost fog node's state from the store alone (into an empty --cache).
    Recover {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Refuse a metadata root older than this generation (the last one
        /// you know of, from `stats`): catches a store rolled back as a whole.
        #[arg(long, default_value_t = 0)]
        min_generation: u64,
        #[arg(long)]
        json: bool,
    },
    /// Logical vs stored bytes, chunks, files.
    Stats {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Restore full redundancy of a mirrored repository (copies what a store lacks).
    Repair {
        #[arg(long)]
        repo: String,
    },
    /// Check that every object is present and authentic; exit 1 on any finding.
    Verify {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Also download, decrypt and hash every live chunk.
        #[arg(long, conflicts_with = "sample")]
        deep: bool,
        /// Instead of reading every pack header, challenge N random 64 KiB blocks
        /// of random packs (per store) against MACs kept at upload.
        #[arg(long, value_name = "N")]
        sample: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

/// Every admin command works on the store's signed policy with the admin key.
#[derive(clap::Args)]
struct AdminArgs {
    #[arg(long)]
    repo: String,
    /// The admin key file from `init --admin-key` (FOGVAULT_ADMIN_PASSPHRASE).
    #[arg(long)]
    admin_key: PathBuf,
}

#[derive(Subcommand)]
enum AdminCmd {
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
enum AlertsCmd {
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
enum DecoysCmd {
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
enum BreakGlassCmd {
    /// List every recorded break-glass session.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCmd {
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
enum FolderCmd {
    /// Make PATH (below the mount root) a vault folder with its own key.
    Create {
        path: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print the current policy (no key material).
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
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

fn parse_rights(s: &str) -> Result<Rights, String> {
    Rights::parse(s).ok_or_else(|| format!("rights must be r, rw or rwa, not {s:?}"))
}

fn parse_hours(s: &str) -> Result<(u8, u8), String> {
    let bad = || format!("hours must look like 7-19 (UTC, 0-24), not {s:?}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u8, u8) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > 24 || b > 24 || a == b {
        return Err(bad());
    }
    Ok((a, b))
}

fn open_admin(a: &AdminArgs) -> Result<Admin, Error> {
    let pass = secret_input("FOGVAULT_ADMIN_PASSPHRASE", "admin key passphrase: ", false)?;
    Admin::open(&a.repo, &a.admin_key, pass.as_bytes())
}

fn days_from_now(days: Option<u64>) -> Option<u64> {
    days.map(|d| session::policy::now_secs() + d * 86_400)
}

fn passphrase(confirm: bool) -> Result<Zeroizing<String>, Error> {
    secret_input("FOGVAULT_PASSPHRASE", "fogvault passphrase: ", confirm)
}

/// A secret from the environment variable `var`, or typed at a prompt.
fn secret_input(var: &str, prompt: &str, confirm: bool) -> Result<Zeroizing<String>, Error> {
    if let Ok(p) = std::env::var(var) {
        return Ok(Zeroizing::new(p));
    }
    let p =
        Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| {
            Error::Repo(format!("cannot read the passphrase (set {var} for non-interactive use): {e}"))
        })?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("repeat passphrase: ").map_err(Error::Io)?);
        if *again != *p {
            return Err(Error::Repo("the passphrases do not match".into()));
        }
    }
    Ok(p)
}

fn unlock(repo_arg: &str) -> Result<Repo, Error> {
    let pass = passphrase(false)?;
    repo::unlock(repo_arg, pass.as_bytes())
}

/// Who may sign the audit trail's checkpoints: the fog node's identity, or
/// (a vault without an admin authority) a MAC key from the root secret.
fn audit_checker(r: &Repo) -> fogvault::audit::cloud::Checker {
    use fogvault::audit::cloud::Checker;
    match &r.authority {
        Some(a) => Checker::Ibs { mpk: a.mpk, fog_id: a.fog.id.clone() },
        None => Checker::Mac(r.keys.audit.clone()),
    }
}

/// The audit trail of a mount: log file, store copies with signed
/// checkpoints, and the insider monitor, observing every vault operation.
fn start_audit(
    r: &Repo,
    dir: &Path,
    vault: &Arc<Vault>,
    keep_local: u64,
) -> Result<(Arc<fogvault::audit::Auditor>, fogvault::audit::cloud::Uploader), Error> {
    use fogvault::audit::{AuditKeys, AuditLog, Auditor, Monitor, Op, cloud};
    let log = AuditLog::open(dir, AuditKeys::new(&r.keys.audit, &r.repo_id), cloud::uploaded_point(dir))?;
    let auditor = Arc::new(Auditor::new(log, Monitor::new(dir.join("alerts.log"))));
    let signer = match &r.authority {
        Some(a) => cloud::Signer::Ibs { key: Box::new(a.fog.clone()), mpk: a.mpk },
        None => cloud::Signer::Mac(r.keys.audit.clone()),
    };
    let upload =
        cloud::Uploader::start(dir, auditor.log_handle(), Arc::clone(&r.backend), signer, &r.repo_id, keep_local)?;
    if cfg!(feature = "bench-no-audit") {
        eprintln!("fogvault: WARNING: built with bench-no-audit: file operations are not audited");
        auditor.record(0, Op::Alert, 0, None, Some("audit disabled: bench-no-audit build"))?;
    } else {
        auditor.record(0, Op::Mount, 0, None, None)?;
        vault.set_observer(Arc::clone(&auditor) as Arc<dyn fogvault::vault::Observer>);
    }
    Ok((auditor, upload))
}

fn iso_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// Unix seconds, or a UTC date `YYYY-MM-DD[THH:MM[:SS]]`.
fn parse_time(s: &str) -> Result<u64, String> {
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

fn cache_dir(repo: &Repo, cache: Option<PathBuf>) -> PathBuf {
    cache.unwrap_or_else(|| repo::default_cache_dir(&repo.repo_id))
}

fn check_mountpoint(mnt: &Path) -> Result<(), Error> {
    let meta = std::fs::metadata(mnt).map_err(|e| Error::Repo(format!("mount point {}: {e}", mnt.display())))?;
    if !meta.is_dir() {
        return Err(Error::Repo(format!("mount point {} is not a directory", mnt.display())));
    }
    let canon = mnt.canonicalize()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let busy = mounts.lines().any(|l| l.split(' ').nth(4).is_some_and(|p| Path::new(p) == canon));
    if busy {
        return Err(Error::Repo(format!("mount point {} is busy (something is already mounted there)", mnt.display())));
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.cmd {
        Cmd::Init { repo, admin_key } => {
            let pass = passphrase(true)?;
            let r = match admin_key {
                None => repo::init(&repo, pass.as_bytes())?,
                Some(path) => {
                    let admin_pass = secret_input("FOGVAULT_ADMIN_PASSPHRASE", "admin key passphrase: ", true)?;
                    let msk = MasterSecret::generate();
                    session::write_admin_key(&path, &msk, admin_pass.as_bytes())?;
                    let r = repo::init_with_authority(&repo, pass.as_bytes(), Some(&msk));
                    if r.is_err() {
                        let _ = std::fs::remove_file(&path);
                    }
                    println!("admin key written to {} (keep it off the fog node)", path.display());
                    r?
                }
            };
            println!("initialised repository {} (id {})", r.backend.description(), r.repo_id);
            Ok(())
        }
        Cmd::Admin { cmd } => run_admin(cmd),
        Cmd::Login { mount, key, break_glass, reason, ttl } => {
            let pass = secret_input("FOGVAULT_KEY_PASSPHRASE", "identity key passphrase: ", false)?;
            let key = session::read_identity_key(&key, pass.as_bytes())?;
            let s = control::login(&mount, &key, reason.filter(|_| break_glass), ttl)?;
            println!("session {} for {} (uid {}) until {}", &s.session[..16], s.user, s.uid, s.expires);
            for f in &s.folders {
                println!("  {} {}", f.rights, f.path);
            }
            if s.break_glass {
                println!("BREAK-GLASS session: recorded for the admin");
            }
            Ok(())
        }
        Cmd::Logout { mount } => {
            let n = control::logout(&mount)?;
            println!("ended {n} session(s)");
            Ok(())
        }
        Cmd::Sessions { mount, json } => {
            let list = control::list(&mount)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list).expect("serializes"));
            } else {
                for s in &list {
                    let folders: Vec<String> = s.folders.iter().map(|f| format!("{}:{}", f.path, f.rights)).collect();
                    println!(
                        "{}  user={}  uid={}  started={}  expires={}  folders={}{}",
                        &s.session[..16],
                        s.user,
                        s.uid,
                        s.started,
                        s.expires,
                        folders.join(","),
                        if s.break_glass { "  BREAK-GLASS" } else { "" }
                    );
                    if s.locked {
                        println!("    LOCKED after an insider alert (admin unlock lifts it)");
                    }
                    if let Some(r) = &s.reason {
                        println!("    reason: {r}");
                    }
                }
                if list.is_empty() {
                    println!("no active sessions");
                }
            }
            Ok(())
        }
        Cmd::Mount { repo, mountpoint, cache, allow_other, journal_limit, snapshot_every, audit_keep_local } => {
            check_mountpoint(&mountpoint)?;
            let r = unlock(&repo)?;
            let dir = cache_dir(&r, cache);
            let owner = Caller { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
            let opts = VaultOptions { journal_limit, snapshot_every, ..VaultOptions::default() };
            let vault = Arc::new(Vault::open_with(&r, &dir, owner, opts)?);
            let _maintenance = fogvault::maintenance::serve(Arc::clone(&vault), &dir)?;
            let (auditor, audit_upload) = start_audit(&r, &dir, &vault, audit_keep_local)?;
            let flusher = Arc::clone(&vault);
            std::thread::Builder::new().name("fogvault-flush".into()).spawn(move || {
                for tick in 1u64.. {
                    std::thread::sleep(Duration::from_secs(1));
                    let r = flusher.sync_deferred(Duration::from_secs(1));
                    let r = if tick % 5 == 0 { r.and(flusher.flush_idle()) } else { r };
                    if let Err(e) = r {
                        tracing::error!(error = %e, "background commit failed");
                    }
                }
            })?;
            let control = match &r.authority {
                Some(a) => {
                    let c = control::ControlServer::start(
                        &mountpoint,
                        a.mpk,
                        a.fog.clone(),
                        &r.repo_id,
                        Arc::clone(&r.backend),
                        Arc::clone(&vault),
                        &dir,
                        SESSION_TTL,
                    )?;
                    c.set_auditor(Arc::clone(&auditor));
                    eprintln!("fogvault: control socket {}", control::socket_path(&mountpoint).display());
                    Some(c)
                }
                None => None,
            };
            let mnt = mountpoint.clone();
            fuse_adapter::serve(Arc::clone(&vault), &mountpoint, allow_other, move |unmount| {
                eprintln!("fogvault: mounted at {}", mnt.display());
                let _ = ctrlc::set_handler(unmount);
            })
            .map_err(|e| Error::Repo(format!("mount failed: {e}")))?;
            if control.is_some() {
                let _ = std::fs::remove_file(control::socket_path(&mountpoint));
            }
            let _ = auditor.record(0, fogvault::audit::Op::Unmount, 0, None, None);
            let uploaded = audit_upload.shutdown();
            auditor.log_handle().trim()?;
            uploaded?;
            eprintln!("fogvault: unmounted cleanly");
            Ok(())
        }
        Cmd::Stats { repo, cache, json } => {
            let r = unlock(&repo)?;
            let s = tools::stats(&r, &cache_dir(&r, cache))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("stats serialize"));
            } else {
                println!("files:          {}", s.files);
                println!("directories:    {}", s.directories);
                println!("logical bytes:  {}", s.logical_bytes);
                println!("unique bytes:   {} (dedup ratio {:.2})", s.unique_bytes, s.dedup_ratio);
                println!("stored bytes:   {}", s.stored_bytes);
                println!("chunks:         {}", s.chunks);
                println!("packs:          {} (+{} awaiting upload)", s.packs, s.upload_backlog_packs);
                println!(
                    "metadata:       root generation {} (+{} transactions awaiting upload)",
                    s.metadata_generation, s.metadata_backlog
                );
                if s.unapplied_transactions > 0 {
                    println!(
                        "intent log:     {} transactions not yet in the index (not counted above; a mounted vault \
                         checkpoints them within about a second, after an unclean stop the next mount applies them)",
                        s.unapplied_transactions
                    );
                }
                if s.locked_records > 0 {
                    println!(
                        "locked:         {} records in locked vault folders (not counted above; logical bytes from chunk references)",
                        s.locked_records
                    );
                }
            }
            Ok(())
        }
        Cmd::Gc { repo, cache, json } => {
            let r = unlock(&repo)?;
            let dir = cache_dir(&r, cache);
            let report = match fogvault::maintenance::request_gc(&dir)? {
                Some(report) => report,
                None => {
                    if !dir.join("meta").join("data.mdb").exists() {
                        return Err(Error::Repo(format!("no fog-node index in {}", dir.display())));
                    }
                    let owner = Caller { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
                    let vault = Vault::open(&r, &dir, owner)?;
                    let report = vault.gc();
                    let closed = vault.shutdown();
                    let report = report?;
                    closed?;
                    report
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                println!(
                    "gc: {} packs deleted ({} repacked, {} chunks moved, {} dead chunks dropped); store {} -> {} bytes",
                    report.packs_deleted,
                    report.packs_repacked,
                    report.chunks_moved,
                    report.chunks_dropped,
                    report.bytes_before,
                    report.bytes_after
                );
            }
            Ok(())
        }
        Cmd::Audit { repo, cache, verify, since, user, patient, json } => {
            use fogvault::audit::{AuditKeys, read};
            let r = unlock(&repo)?;
            let dir = cache_dir(&r, cache);
            let keys = AuditKeys::new(&r.keys.audit, &r.repo_id);
            if verify {
                let v = read::verify(&dir, &r.backend, &keys, &audit_checker(&r))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
                } else {
                    let kept = if v.local_first > 1 {
                        format!(" (from record {}; older ones in the store only)", v.local_first)
                    } else {
                        String::new()
                    };
                    println!(
                        "audit log: {} records on the fog node{kept}, {} in the store, {} signed checkpoints",
                        v.local_records, v.store_records, v.checkpoints
                    );
                    for p in &v.problems {
                        println!("DAMAGED {p}");
                    }
                }
                if !v.problems.is_empty() {
                    return Err(Error::Integrity(format!(
                        "the audit log fails verification ({} problems)",
                        v.problems.len()
                    )));
                }
                return Ok(());
            }
            let records = read::read_all(&dir, &r.backend, &keys)?;
            let filter = read::Filter { since_ms: since.map(|s| s * 1000), user, patient };
            let shown: Vec<&fogvault::audit::Record> =
                records.iter().map(|(r, _)| r).filter(|r| filter.keeps(r)).collect();
            if json {
                let rows: Vec<serde_json::Value> = shown
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "seq": r.seq, "time": iso_time(r.time_ms), "uid": r.uid, "user": r.user,
                            "session": r.session, "op": r.op.name(), "inode": r.ino, "path": r.path, "detail": r.detail,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows).expect("serializes"));
            } else {
                for r in shown {
                    println!(
                        "{:>6} {} uid={} user={} session={} {} {}{}",
                        r.seq,
                        iso_time(r.time_ms),
                        r.uid,
                        r.user.as_deref().unwrap_or("-"),
                        r.session.as_deref().unwrap_or("-"),
                        r.op.name(),
                        r.path.as_deref().unwrap_or(""),
                        r.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Cmd::SynthPatients { out, count, seed } => {
            for p in fogvault::audit::decoys::synth_patients(count, seed)? {
                for f in &p.files {
                    let path = out.join(&p.dir).join(&f.path);
                    std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
                    std::fs::write(&path, &f.data)?;
                }
            }
            println!("wrote {count} synthetic patients to {}", out.display());
            Ok(())
        }
        Cmd::Recover { repo, cache, min_generation, json } => {
            let r = unlock(&repo)?;
            let dir = cache_dir(&r, cache);
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            // The audit trail first (it leaves alone a cache that has a log):
            // if this fails, nothing is in place yet and recover can run again.
            let audit_keys = fogvault::audit::AuditKeys::new(&r.keys.audit, &r.repo_id);
            let trail = fogvault::audit::read::continue_store_chain(&dir, &r.backend, &audit_keys, &audit_checker(&r))?;
            let report = fogvault::recover::recover(&r, &dir, min_generation, |done, total| {
                if tty {
                    eprint!("\rreplaying metadata journal: {done}/{total}");
                    if done == total {
                        eprintln!();
                    }
                }
            })?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            for p in &trail.problems {
                eprintln!("warning: audit trail in the store: {p}");
            }
            if let Some(after) = trail.after {
                eprintln!("the audit log continues the store's trail after record {after}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                println!(
                    "recovered {} inodes up to transaction {} (root generation {}, {} journal objects{}) into {}",
                    report.inodes,
                    report.transactions,
                    report.generation,
                    report.journal_objects,
                    report.snapshot_seq.map(|s| format!(", snapshot at {s}")).unwrap_or_default(),
                    dir.display()
                );
            }
            Ok(())
        }
        Cmd::Repair { repo } => {
            let backend = fogvault::chunk_store::Backend::open(&repo, false)?;
            if backend.member_count() < 2 {
                return Err(Error::Repo("repair restores a mirror (mirror:A,B); this repository has one store".into()));
            }
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = tools::repair(&backend, |store, done, total| {
                if tty && total > 0 {
                    eprint!("\rrepairing {store}: {done}/{total}");
                    if done == total {
                        eprintln!();
                    }
                }
            })?;
            for (store, object) in &report.copied {
                println!("restored {object} on {store}");
            }
            println!("repair: {} object(s) copied; every store now holds every object", report.copied.len());
            Ok(())
        }
        Cmd::Verify { repo, cache, deep, sample, json } => {
            let r = unlock(&repo)?;
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = match sample {
                Some(n) => tools::verify_sample(&r, &cache_dir(&r, cache), n)?,
                None => tools::verify(&r, &cache_dir(&r, cache), deep, |done, total| {
                    if tty {
                        eprint!("\rverifying packs: {done}/{total}");
                        if done == total {
                            eprintln!();
                        }
                    }
                })?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                if report.unapplied_transactions > 0 {
                    println!(
                        "note: {} transactions in the intent log are not yet in the index and were not checked \
                         (a mounted vault checkpoints them within about a second; after an unclean stop, mount once)",
                        report.unapplied_transactions
                    );
                }
                for f in &report.findings {
                    println!("DAMAGED {}: {}", f.object, f.problem);
                    for file in &f.files {
                        println!("  affects {file}");
                    }
                }
                println!(
                    "checked {} packs{}: {}",
                    report.packs_checked,
                    if deep {
                        format!(", {} chunks", report.chunks_checked)
                    } else if sample.is_some() {
                        format!(", {} sampled blocks", report.samples_checked)
                    } else {
                        String::new()
                    },
                    if report.findings.is_empty() {
                        "no problems found".to_string()
                    } else {
                        format!("{} problem(s)", report.findings.len())
                    }
                );
            }
            if report.findings.is_empty() {
                Ok(())
            } else {
                Err(Error::Integrity("verification found damaged or missing objects".into()))
            }
        }
    }
}

fn run_admin(cmd: AdminCmd) -> Result<(), Error> {
    match cmd {
        AdminCmd::User { cmd: UserCmd::Add { id, role, key_out, expires_days, admin } } => {
            let a = open_admin(&admin)?;
            let user_pass = secret_input("FOGVAULT_KEY_PASSPHRASE", "passphrase for the new key: ", true)?;
            let v = a.add_user(&id, &role, days_from_now(expires_days), &key_out, user_pass.as_bytes())?;
            println!("identity key for {id} ({role}) written to {}; policy v{v}", key_out.display());
            Ok(())
        }
        AdminCmd::Folder { cmd: FolderCmd::Create { path, admin } } => {
            let (id, v) = open_admin(&admin)?.create_folder(&path)?;
            println!("vault folder {id} created; policy v{v}");
            Ok(())
        }
        AdminCmd::Grant { admin, user, role, folder, rights, expires_days, hours } => {
            let subject = match (user, role) {
                (Some(u), _) => Subject::User(u),
                (None, Some(r)) => Subject::Role(r),
                (None, None) => unreachable!("clap requires --user or --role"),
            };
            let req = GrantRequest { subject, folder: &folder, rights, expires: days_from_now(expires_days), hours };
            let v = open_admin(&admin)?.grant(req)?;
            println!("granted {rights}; policy v{v}");
            Ok(())
        }
        AdminCmd::Revoke { admin, user, folder } => {
            let (v, rotated) = open_admin(&admin)?.revoke(&user, folder.as_deref())?;
            println!("revoked; {rotated} folder key(s) rotated; policy v{v}");
            Ok(())
        }
        AdminCmd::BreakGlass { cmd: BreakGlassCmd::List { admin, json } } => {
            let records = open_admin(&admin)?.break_glass_records()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records).expect("serializes"));
            } else {
                for r in &records {
                    println!(
                        "{}  user={} uid={} session={} until={} folders={}\n    reason: {}",
                        r.started,
                        r.user,
                        r.uid,
                        r.session.get(..16).unwrap_or(&r.session),
                        r.expires,
                        r.folders.join(","),
                        r.reason
                    );
                }
                if records.is_empty() {
                    println!("no break-glass sessions recorded");
                }
            }
            Ok(())
        }
        AdminCmd::Alerts { cmd: AlertsCmd::Show { admin } } => {
            let p = open_admin(&admin)?.policy()?;
            println!("{}", serde_json::to_string_pretty(&p.insider).expect("serializes"));
            Ok(())
        }
        AdminCmd::Alerts {
            cmd:
                AlertsCmd::Set {
                    admin,
                    max_patients,
                    window_secs,
                    bulk_patients,
                    bulk_secs,
                    max_mib_per_min,
                    lock,
                    webhook,
                },
        } => {
            let a = open_admin(&admin)?;
            let mut r = a.policy()?.insider;
            r.max_patients = max_patients.unwrap_or(r.max_patients);
            r.window_secs = window_secs.unwrap_or(r.window_secs);
            r.bulk_patients = bulk_patients.unwrap_or(r.bulk_patients);
            r.bulk_secs = bulk_secs.unwrap_or(r.bulk_secs);
            r.max_mib_per_min = max_mib_per_min.unwrap_or(r.max_mib_per_min);
            r.lock_on_alert = lock.unwrap_or(r.lock_on_alert);
            if let Some(w) = webhook {
                r.webhook = (!w.is_empty()).then_some(w);
            }
            let v = a.set_insider_rules(r)?;
            println!("insider-detection rules updated (policy v{v})");
            Ok(())
        }
        AdminCmd::Unlock { admin, user } => {
            let v = open_admin(&admin)?.unlock_user(&user)?;
            println!("unlocked {user} (policy v{v}); fog nodes apply it within a second");
            Ok(())
        }
        AdminCmd::Decoys { cmd: DecoysCmd::Plant { admin, folder, count } } => {
            let v = open_admin(&admin)?.request_decoys(&folder, count)?;
            println!(
                "requested {count} decoy patients in {folder} (policy v{v}); the fog node plants them when the folder is next unlocked"
            );
            Ok(())
        }
        AdminCmd::Decoys { cmd: DecoysCmd::List { admin, json } } => {
            let records = open_admin(&admin)?.decoy_records()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records).expect("serializes"));
            } else {
                for r in &records {
                    for p in &r.patients {
                        println!("{}/{}", r.folder.trim_end_matches('/'), p);
                    }
                }
                if records.is_empty() {
                    println!("no decoys planted yet");
                }
            }
            Ok(())
        }
        AdminCmd::Policy { cmd: PolicyCmd::Show { admin, json } } => {
            let p = open_admin(&admin)?.policy()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p.summary()).expect("serializes"));
            } else {
                print!("{}", p.summary());
            }
            Ok(())
        }
    }
}

/// Keep the daemon's memory bounded: chunk-sized buffers come from mmap and go
/// back to the OS when freed (glibc's adaptive threshold would otherwise move
/// them onto heaps that never shrink), and few per-thread arenas.
fn tune_allocator() {
    // SAFETY: mallopt only changes glibc allocator parameters; it is called
    // first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// CPU features this binary was compiled to use (it is built for the build
/// machine's CPU, `.cargo/config.toml`) that the running CPU lacks: a binary
/// copied to an older machine stops here with a message, not a SIGILL later.
fn missing_cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! need {
            ($($f:tt),*) => {$(
                if cfg!(target_feature = $f) && !std::arch::is_x86_feature_detected!($f) {
                    missing.push($f);
                }
            )*};
        }
        need!(
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "bmi1",
            "bmi2",
            "lzcnt",
            "movbe",
            "aes",
            "pclmulqdq",
            "sha",
            "adx",
            "avx512f",
            "avx512cd",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512vbmi",
            "avx512ifma",
            "avx512vnni",
            "avx512bitalg",
            "avx512vpopcntdq",
            "vaes",
            "vpclmulqdq",
            "gfni"
        );
    }
    missing
}

fn main() -> ExitCode {
    let missing = missing_cpu_features();
    if !missing.is_empty() {
        eprintln!(
            "fogvault: error: this binary was built for a CPU with {}, which this machine lacks; \
             build it here (cargo build --release) or build a portable one \
             (RUSTFLAGS=\"--cfg chacha20_avx512\" cargo build --release)",
            missing.join(", ")
        );
        return ExitCode::from(1);
    }
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FOGVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse(); // exits 2 on bad usage
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fogvault: error: {e}");
            ExitCode::from(1)
        }
    }
}
