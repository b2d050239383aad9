//! The `fogvault` command line: one module per group of subcommands, and
//! the helpers they share (passphrases, unlocking, paths, progress).

mod admin;
pub mod args;
mod mount;
mod report;
mod sessions;
mod setup;
mod upkeep;

use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use args::{Cli, Cmd};
use fogvault::error::Error;
use fogvault::repo::{self, Repo};

/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Run one subcommand.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.cmd {
        Cmd::Init(a) => setup::init(a),
        Cmd::Admin { cmd } => admin::run(cmd),
        Cmd::Login(a) => sessions::login(a),
        Cmd::Logout(a) => sessions::logout(a),
        Cmd::Sessions(a) => sessions::sessions(a),
        Cmd::Mount(a) => mount::mount(a),
        Cmd::Gc(a) => upkeep::gc(a),
        Cmd::Audit(a) => report::audit(a),
        Cmd::SynthPatients(a) => setup::synth_patients(a),
        Cmd::Recover(a) => upkeep::recover(a),
        Cmd::Stats(a) => report::stats(a),
        Cmd::Repair(a) => upkeep::repair(a),
        Cmd::Verify(a) => report::verify(a),
    }
}

pub fn passphrase(confirm: bool) -> Result<Zeroizing<String>, Error> {
    secret_input("FOGVAULT_PASSPHRASE", "fogvault passphrase: ", confirm)
}

/// A secret from the environment variable `var`, or typed at a prompt.
pub fn secret_input(var: &str, prompt: &str, confirm: bool) -> Result<Zeroizing<String>, Error> {
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

pub fn unlock(repo_arg: &str) -> Result<Repo, Error> {
    let pass = passphrase(false)?;
    repo::unlock(repo_arg, pass.as_bytes())
}

/// Who may sign the audit trail's checkpoints: the fog node's identity, or
/// (a vault without an admin authority) a MAC key from the root secret.
pub fn audit_checker(r: &Repo) -> fogvault::audit::cloud::Checker {
    use fogvault::audit::cloud::Checker;
    match &r.authority {
        Some(a) => Checker::Ibs { mpk: a.mpk, fog_id: a.fog.id.clone() },
        None => Checker::Mac(r.keys.audit.clone()),
    }
}

pub fn iso_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub fn cache_dir(repo: &Repo, cache: Option<PathBuf>) -> PathBuf {
    cache.unwrap_or_else(|| repo::default_cache_dir(&repo.repo_id))
}

pub fn check_mountpoint(mnt: &Path) -> Result<(), Error> {
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

/// Print `value` as pretty JSON on stdout (`--json`).
pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("in-memory values serialize"));
}

/// A progress line: `show(label, done, total)` redraws `LABEL: done/total`
/// on stderr when it is a terminal, and prints nothing otherwise (scripts, logs).
pub fn progress() -> impl Fn(&str, u64, u64) {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |label, done, total| {
        if tty && total > 0 {
            eprint!("\r{label}: {done}/{total}");
            if done == total {
                eprintln!();
            }
        }
    }
}
