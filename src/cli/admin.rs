//! `fogvault admin …`: users, folders, grants, policy, decoys and alerts,
//! all through the store's signed policy and the admin key.

use super::args::{AdminArgs, AdminCmd, AlertsCmd, BreakGlassCmd, DecoysCmd, FolderCmd, PolicyCmd, UserCmd};
use super::{print_json, secret_input};
use fogvault::error::Error;
use fogvault::session::{self, Admin, GrantRequest, Subject};

fn open_admin(a: &AdminArgs) -> Result<Admin, Error> {
    let pass = secret_input("FOGVAULT_ADMIN_PASSPHRASE", "admin key passphrase: ", false)?;
    Admin::open(&a.repo, &a.admin_key, pass.as_bytes())
}

fn days_from_now(days: Option<u64>) -> Option<u64> {
    days.map(|d| session::policy::now_secs() + d * 86_400)
}

pub fn run(cmd: AdminCmd) -> Result<(), Error> {
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
                print_json(&records);
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
            print_json(&p.insider);
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
                print_json(&records);
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
                print_json(&p.summary());
            } else {
                print!("{}", p.summary());
            }
            Ok(())
        }
    }
}
