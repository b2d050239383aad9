//! The `fogvault` command line. Exit codes: 0 ok, 1 failure, 2 bad usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use fogvault::error::Error;
use fogvault::repo::{self, Repo};
use fogvault::session::{self, MasterSecret, control};
use fogvault::vault::{Caller, Vault};
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
    /// Administration with the admin key (users and their identity keys).
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
    /// Check that every object is present and authentic; exit 1 on any finding.
    Verify {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Also download, decrypt and hash every live chunk.
        #[arg(long)]
        deep: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Users and their identity keys.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Issue an identity key for ID, sealed with FOGVAULT_KEY_PASSPHRASE (or a prompt).
    Add {
        id: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        key_out: PathBuf,
        /// The admin key file from `init --admin-key` (FOGVAULT_ADMIN_PASSPHRASE).
        #[arg(long)]
        admin_key: PathBuf,
    },
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
        Cmd::Admin { cmd: AdminCmd::User { cmd: UserCmd::Add { id, role, key_out, admin_key } } } => {
            if id.is_empty() || id.len() > 128 || id == repo::FOG_ID {
                return Err(Error::Repo(format!("invalid user id {id:?}")));
            }
            let admin_pass = secret_input("FOGVAULT_ADMIN_PASSPHRASE", "admin key passphrase: ", false)?;
            let msk = session::read_admin_key(&admin_key, admin_pass.as_bytes())?;
            let user_pass = secret_input("FOGVAULT_KEY_PASSPHRASE", "passphrase for the new key: ", true)?;
            session::write_identity_key(&key_out, &msk.extract(&id), &role, &msk.public(), user_pass.as_bytes())?;
            println!("identity key for {id} ({role}) written to {}", key_out.display());
            Ok(())
        }
        Cmd::Login { mount, key } => {
            let pass = secret_input("FOGVAULT_KEY_PASSPHRASE", "identity key passphrase: ", false)?;
            let (key, _role, mpk) = session::read_identity_key(&key, pass.as_bytes())?;
            let s = control::login(&mount, &key, &mpk)?;
            println!("session {} for {} (uid {}) until {}", &s.session[..16], s.user, s.uid, s.expires);
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
                    println!(
                        "{}  user={}  uid={}  started={}  expires={}",
                        &s.session[..16],
                        s.user,
                        s.uid,
                        s.started,
                        s.expires
                    );
                }
                if list.is_empty() {
                    println!("no active sessions");
                }
            }
            Ok(())
        }
        Cmd::Mount { repo, mountpoint, cache, allow_other } => {
            check_mountpoint(&mountpoint)?;
            let r = unlock(&repo)?;
            let dir = cache_dir(&r, cache);
            let owner = Caller { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
            let vault = Arc::new(Vault::open(&r, &dir, owner)?);
            let flusher = Arc::clone(&vault);
            std::thread::Builder::new().name("fogvault-flush".into()).spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    if let Err(e) = flusher.flush_idle() {
                        tracing::error!(error = %e, "background commit failed");
                    }
                }
            })?;
            let control = match &r.authority {
                Some(a) => {
                    let c = control::ControlServer::start(&mountpoint, a.mpk, a.fog.clone(), SESSION_TTL)?;
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
            }
            Ok(())
        }
        Cmd::Verify { repo, cache, deep, json } => {
            let r = unlock(&repo)?;
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = tools::verify(&r, &cache_dir(&r, cache), deep, |done, total| {
                if tty {
                    eprint!("\rverifying packs: {done}/{total}");
                    if done == total {
                        eprintln!();
                    }
                }
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                for f in &report.findings {
                    println!("DAMAGED {}: {}", f.object, f.problem);
                    for file in &f.files {
                        println!("  affects {file}");
                    }
                }
                println!(
                    "checked {} packs{}: {}",
                    report.packs_checked,
                    if deep { format!(", {} chunks", report.chunks_checked) } else { String::new() },
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

fn main() -> ExitCode {
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
