//! Read-only looks at a repository: `stats`, `verify`, `audit`.

use super::args::{AuditArgs, RepoArgs, VerifyArgs};
use super::{audit_checker, cache_dir, iso_time, print_json, progress, unlock};
use fogvault::error::Error;
use fogvault::tools;

pub fn stats(a: RepoArgs) -> Result<(), Error> {
    let RepoArgs { repo, cache, json } = a;
    let r = unlock(&repo)?;
    let s = tools::stats(&r, &cache_dir(&r, cache))?;
    if json {
        print_json(&s);
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

pub fn verify(a: VerifyArgs) -> Result<(), Error> {
    let VerifyArgs { repo, cache, deep, sample, json } = a;
    let r = unlock(&repo)?;
    let show = progress();
    let report = match sample {
        Some(n) => tools::verify_sample(&r, &cache_dir(&r, cache), n)?,
        None => tools::verify(&r, &cache_dir(&r, cache), deep, |done, total| show("verifying packs", done, total))?,
    };
    if json {
        print_json(&report);
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

pub fn audit(a: AuditArgs) -> Result<(), Error> {
    let AuditArgs { repo, cache, verify, since, user, patient, json } = a;
    use fogvault::audit::{AuditKeys, read};
    let r = unlock(&repo)?;
    let dir = cache_dir(&r, cache);
    let keys = AuditKeys::new(&r.keys.audit, &r.repo_id);
    if verify {
        let v = read::verify(&dir, &r.backend, &keys, &audit_checker(&r))?;
        if json {
            print_json(&v);
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
            return Err(Error::Integrity(format!("the audit log fails verification ({} problems)", v.problems.len())));
        }
        return Ok(());
    }
    let records = read::read_all(&dir, &r.backend, &keys)?;
    let filter = read::Filter { since_ms: since.map(|s| s * 1000), user, patient };
    let shown: Vec<&fogvault::audit::Record> = records.iter().map(|(r, _)| r).filter(|r| filter.keeps(r)).collect();
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
        print_json(&rows);
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
