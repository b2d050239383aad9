//! Keeping a repository whole: `gc`, `recover`, `repair`.

use super::args::{RecoverArgs, RepairArgs, RepoArgs};
use super::{audit_checker, cache_dir, print_json, progress, unlock};
use fogvault::error::Error;
use fogvault::tools;
use fogvault::vault::{Caller, Vault};

pub fn gc(a: RepoArgs) -> Result<(), Error> {
    let RepoArgs { repo, cache, json } = a;
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
        print_json(&report);
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
    for problem in &report.problems {
        eprintln!("gc: {problem}");
    }
    if report.packs_kept > 0 {
        return Err(Error::Store(format!(
            "{} pack(s) could not be repacked and were kept; the rest was collected",
            report.packs_kept
        )));
    }
    Ok(())
}

pub fn recover(a: RecoverArgs) -> Result<(), Error> {
    let RecoverArgs { repo, cache, min_generation, json } = a;
    let r = unlock(&repo)?;
    let dir = cache_dir(&r, cache);
    // The audit trail first (it leaves alone a cache that has a log):
    // if this fails, nothing is in place yet and recover can run again.
    let audit_keys = fogvault::audit::AuditKeys::new(&r.keys.audit, &r.repo_id);
    let trail = fogvault::audit::read::continue_store_chain(&dir, &r.backend, &audit_keys, &audit_checker(&r))?;
    let show = progress();
    let report = fogvault::recover::recover(&r, &dir, min_generation, |done, total| {
        show("replaying metadata journal", done, total)
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
        print_json(&report);
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

pub fn repair(a: RepairArgs) -> Result<(), Error> {
    let RepairArgs { repo } = a;
    let backend = fogvault::chunk_store::Backend::open(&repo, false)?;
    if backend.member_count() < 2 {
        return Err(Error::Repo("repair restores a mirror (mirror:A,B); this repository has one store".into()));
    }
    let show = progress();
    let report = tools::repair(&backend, |store, done, total| show(&format!("repairing {store}"), done, total))?;
    for (store, object) in &report.copied {
        println!("restored {object} on {store}");
    }
    println!("repair: {} object(s) copied; every store now holds every object", report.copied.len());
    Ok(())
}
