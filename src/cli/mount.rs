//! `fogvault mount`: the FUSE daemon with its audit trail, background
//! commits and (with an admin authority) the session control socket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::args::{MountArgs, WalkCheck};
use super::{SESSION_TTL, cache_dir, check_mountpoint, unlock};
use fogvault::error::Error;
use fogvault::fuse_adapter;
use fogvault::repo::Repo;
use fogvault::session::control;
use fogvault::vault::{Caller, Vault, VaultOptions};

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
        vault.set_observer(Arc::clone(&auditor) as Arc<dyn fogvault::vault::Observer>)?;
    }
    Ok((auditor, upload))
}

pub fn mount(a: MountArgs) -> Result<(), Error> {
    let MountArgs { repo, mountpoint, cache, allow_other, journal_limit, snapshot_every, audit_keep_local, walk_check } =
        a;
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
                Arc::clone(&auditor),
            )?;
            eprintln!("fogvault: control socket {}", control::socket_path(&mountpoint).display());
            Some(c)
        }
        None => None,
    };
    let mnt = mountpoint.clone();
    let kernel_walks = walk_check == WalkCheck::Kernel;
    if kernel_walks && control.is_some() && !nix::unistd::geteuid().is_root() {
        eprintln!("fogvault: walks into vault folders are checked by the daemon (the kernel check needs root)");
    }
    fuse_adapter::serve(Arc::clone(&vault), &mountpoint, allow_other, kernel_walks, move |unmount| {
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
    if cfg!(feature = "bench-audit-timing") {
        let (calls, ns) = fogvault::audit::observe_time();
        eprintln!("fogvault: audit timing: {calls} calls, {ns} ns");
    }
    eprintln!("fogvault: unmounted cleanly");
    Ok(())
}
