//! Sessions on a mount: `login`, `logout`, `sessions`.

use super::args::{LoginArgs, LogoutArgs, SessionsArgs};
use super::{print_json, secret_input};
use fogvault::error::Error;
use fogvault::session::{self, control};

pub fn login(a: LoginArgs) -> Result<(), Error> {
    let LoginArgs { mount, key, break_glass, reason, ttl } = a;
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

pub fn logout(a: LogoutArgs) -> Result<(), Error> {
    let LogoutArgs { mount } = a;
    let n = control::logout(&mount)?;
    println!("ended {n} session(s)");
    Ok(())
}

pub fn sessions(a: SessionsArgs) -> Result<(), Error> {
    let SessionsArgs { mount, json } = a;
    let list = control::list(&mount)?;
    if json {
        print_json(&list);
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
