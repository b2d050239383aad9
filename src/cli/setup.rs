//! Creating things: `init` (a repository) and `synth-patients` (test data).

use super::args::{InitArgs, SynthPatientsArgs};
use super::{passphrase, secret_input};
use fogvault::error::Error;
use fogvault::repo;
use fogvault::session::{self, MasterSecret};

pub fn init(a: InitArgs) -> Result<(), Error> {
    let InitArgs { repo, admin_key } = a;
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

pub fn synth_patients(a: SynthPatientsArgs) -> Result<(), Error> {
    let SynthPatientsArgs { out, count, seed } = a;
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
