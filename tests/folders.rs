//! Vault folders and the policy without FUSE: folder keys seal records and
//! are needed to read them; rotation re-seals so old keys open nothing;
//! the policy's signature, rollback and revocation rules; the handshake
//! refuses identities the policy does not admit.

use fogvault::chunk_store::Backend;
use fogvault::crypto::Key32;
use fogvault::error::Error;
use fogvault::metadata::FileKind;
use fogvault::repo;
use fogvault::session::policy::{POLICY_CURRENT, now_secs};
use fogvault::session::wrap::{self, EnrolSecret};
use fogvault::session::{
    FogResponder, Grant, HandshakeError, MasterSecret, Policy, PolicyError, ReplayCache, Rights, Subject, UserInitiator,
};
use fogvault::vault::{Caller, ROOT_INO, Vault};

const ME: Caller = Caller { uid: 0, gid: 0 };
const FOLDER: u32 = 1;

fn write_file(v: &Vault, parent: u64, name: &str, data: &[u8]) -> u64 {
    let a = v.create_node(ME, parent, name.as_bytes(), FileKind::File, 0o644, 0, b"").unwrap();
    v.open_file(a.ino, false).unwrap();
    v.write(a.ino, 0, data).unwrap();
    v.release(a.ino).unwrap();
    a.ino
}

#[test]
fn folder_records_need_the_folder_key_and_rotation_retires_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo::init(dir.path().join("repo").to_str().unwrap(), b"pw").unwrap();
    let v = Vault::open(&r, &dir.path().join("cache"), ME).unwrap();
    let root = v.create_folder("ward/cardiology", FOLDER, ME).unwrap();
    assert_eq!(
        v.domains_of(root).unwrap(),
        (0, FOLDER),
        "the folder root lives in the root, its entries in the folder"
    );
    // Locked: no entries can be created or listed.
    assert!(matches!(v.create_node(ME, root, b"x", FileKind::File, 0o644, 0, b""), Err(Error::Locked)));
    let (k1, k2) = (Key32::random(), Key32::random());
    v.unlock_folder(FOLDER, &[(1, k1.clone())]).unwrap();
    let ino = write_file(&v, root, "ecg.txt", b"sinus rhythm");
    let outside = write_file(&v, ROOT_INO, "leaflet.txt", b"public");
    assert_eq!(v.domains_of(ino).unwrap(), (FOLDER, FOLDER));
    assert_eq!(v.read(ino, 0, 100).unwrap(), b"sinus rhythm");
    // Cross-folder renames and links are EXDEV.
    let none = fogvault::vault::RenameFlags::default();
    assert!(matches!(v.rename(root, b"ecg.txt", ROOT_INO, b"ecg.txt", none), Err(Error::CrossDevice)));
    assert!(matches!(v.rename(ROOT_INO, b"leaflet.txt", root, b"l.txt", none), Err(Error::CrossDevice)));
    assert!(matches!(v.link(outside, root, b"l.txt"), Err(Error::CrossDevice)));
    let ward = v.lookup(ROOT_INO, b"ward").unwrap().ino;
    assert!(matches!(v.rmdir(ward, b"cardiology"), Err(Error::NotPermitted)));
    assert!(matches!(v.rename(ward, b"cardiology", ward, b"cardio", none), Err(Error::NotPermitted)));
    v.create_node(ME, ward, b"decoy", FileKind::Dir, 0o755, 0, b"").unwrap();
    assert!(matches!(v.rename(ward, b"decoy", ward, b"cardiology", none), Err(Error::NotPermitted)));

    v.lock_folder(FOLDER).unwrap();
    assert!(matches!(v.lookup(root, b"ecg.txt"), Err(Error::Locked)));
    assert!(matches!(v.getattr(ino), Err(Error::Locked)));
    assert!(v.getattr(outside).is_ok(), "the root folder stays open");

    // Rotation: the holder of v2 (and the chain to v1) re-seals everything.
    v.unlock_folder(FOLDER, &[(2, k2.clone()), (1, k1.clone())]).unwrap();
    assert_eq!(v.read(v.lookup(root, b"ecg.txt").unwrap().ino, 0, 100).unwrap(), b"sinus rhythm");
    v.lock_folder(FOLDER).unwrap();
    // The old key alone opens nothing any more.
    assert!(matches!(v.unlock_folder(FOLDER, &[(1, k1)]), Err(Error::Integrity(_))));
    assert!(matches!(v.lookup(root, b"ecg.txt"), Err(Error::Locked) | Err(Error::Integrity(_))));
    v.lock_folder(FOLDER).unwrap();
    // A wrong key of the right version fails authentication, never wrong data.
    v.unlock_folder(FOLDER, &[(2, Key32::random())]).unwrap();
    assert!(matches!(v.lookup(root, b"ecg.txt"), Err(Error::Integrity(_)) | Err(Error::NotFound)));
    v.lock_folder(FOLDER).unwrap();
    v.unlock_folder(FOLDER, &[(2, k2)]).unwrap();
    assert!(v.lookup(root, b"ecg.txt").is_ok());
}

#[test]
fn files_survive_a_remount_inside_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo::init(dir.path().join("repo").to_str().unwrap(), b"pw").unwrap();
    let k = Key32::random();
    {
        let v = Vault::open(&r, &dir.path().join("cache"), ME).unwrap();
        let root = v.create_folder("oncology", FOLDER, ME).unwrap();
        v.unlock_folder(FOLDER, &[(1, k.clone())]).unwrap();
        write_file(&v, root, "plan.txt", b"chemo cycle 2");
        v.shutdown().unwrap();
    }
    let v = Vault::open(&r, &dir.path().join("cache"), ME).unwrap();
    let root = v.folder_root(FOLDER).unwrap().unwrap();
    assert!(matches!(v.lookup(root, b"plan.txt"), Err(Error::Locked)), "keys are never on disk");
    v.unlock_folder(FOLDER, &[(1, k)]).unwrap();
    let ino = v.lookup(root, b"plan.txt").unwrap().ino;
    assert_eq!(v.read(ino, 0, 100).unwrap(), b"chemo cycle 2");
}

struct World {
    _dir: tempfile::TempDir,
    backend: Backend,
    msk: MasterSecret,
    alice: EnrolSecret,
    bob: EnrolSecret,
}

fn world() -> (World, Policy) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path().to_str().unwrap(), true).unwrap();
    let msk = MasterSecret::generate();
    let (alice, bob) = (EnrolSecret::generate(), EnrolSecret::generate());
    let mut p = Policy::empty();
    p.add_user("alice", "physician", alice.public(), None).unwrap();
    p.add_user("bob", "nurse", bob.public(), None).unwrap();
    let f = p.create_folder("/cardiology/", &msk).unwrap();
    assert_eq!(p.folder(f).unwrap().path, "cardiology");
    let g = |s: Subject, r: &str| Grant {
        subject: s,
        folder: f,
        rights: Rights::parse(r).unwrap(),
        expires: None,
        hours: None,
    };
    p.grant(g(Subject::User("alice".into()), "rw"));
    p.grant(g(Subject::Role("nurse".into()), "r"));
    assert!(p.sync_wraps(&msk).unwrap().is_empty(), "adding recipients does not rotate");
    (World { _dir: dir, backend, msk, alice, bob }, p)
}

fn newest_key(p: &Policy, who: &str, sk: &EnrolSecret) -> Option<Key32> {
    let f = p.folder(FOLDER)?;
    let w = f.wraps.iter().find(|w| w.recipient == who)?;
    wrap::unwrap(w, sk, f.id, f.version)
}

#[test]
fn policy_rights_wraps_and_revocation() {
    let (w, mut p) = world();
    let now = now_secs();
    assert_eq!(p.rights("alice", FOLDER, now), Rights::READ_WRITE);
    assert_eq!(p.rights("bob", FOLDER, now).to_string(), "r", "role grant");
    assert!(!p.rights("mallory", FOLDER, now).read);
    let a1 = newest_key(&p, "alice", &w.alice).unwrap();
    let b1 = newest_key(&p, "bob", &w.bob).unwrap();
    assert_eq!(a1.as_bytes(), b1.as_bytes(), "one folder key, wrapped to each");
    assert!(newest_key(&p, "alice", &w.bob).is_none(), "bob cannot open alice's wrap");
    assert!(p.key_versions(FOLDER, &a1).is_some());

    // Revoke alice: her grant goes, the key rotates, her old key is useless.
    p.revoke("alice", None).unwrap();
    assert_eq!(p.sync_wraps(&w.msk).unwrap(), vec![FOLDER]);
    assert_eq!(p.admit("alice", now).err().as_deref(), Some("identity revoked"));
    assert!(!p.rights("alice", FOLDER, now).read);
    assert!(newest_key(&p, "alice", &w.alice).is_none(), "no wrap for alice any more");
    assert!(p.key_versions(FOLDER, &a1).is_none(), "the old key does not match the policy");
    let b2 = newest_key(&p, "bob", &w.bob).unwrap();
    let versions = p.key_versions(FOLDER, &b2).unwrap();
    assert_eq!(versions.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(versions[1].1.as_bytes(), a1.as_bytes(), "the chain recovers v1 for re-sealing");

    // Expiry and hours.
    p.grant(Grant {
        subject: Subject::User("bob".into()),
        folder: FOLDER,
        rights: Rights::READ_WRITE,
        expires: Some(now - 1),
        hours: None,
    });
    assert_eq!(p.rights("bob", FOLDER, now).to_string(), "r", "an expired grant adds nothing");
    let hour = ((now / 3600) % 24) as u8;
    p.grant(Grant {
        subject: Subject::User("bob".into()),
        folder: FOLDER,
        rights: Rights::READ_WRITE,
        expires: None,
        hours: Some(((hour + 1) % 24, (hour + 2) % 24)),
    });
    assert_eq!(p.rights("bob", FOLDER, now).to_string(), "r", "outside the grant's hours");
}

#[test]
fn the_fog_node_refuses_unsigned_altered_and_foreign_policies() {
    let (w, mut p) = world();
    let fog = w.msk.extract(repo::FOG_ID);
    assert_eq!(Policy::load(&w.backend, "repo1", &w.msk.public(), &fog).unwrap(), None);
    p.publish(&w.backend, "repo1", &w.msk, repo::FOG_ID).unwrap();
    let loaded = Policy::load(&w.backend, "repo1", &w.msk.public(), &fog).unwrap().unwrap();
    assert_eq!(loaded, p);
    assert_eq!(loaded.version, 1);
    // Bound to the repository.
    assert_eq!(Policy::load(&w.backend, "repo2", &w.msk.public(), &fog).err(), Some(PolicyError::BadSignature));
    let raw = w.backend.get(POLICY_CURRENT).unwrap().unwrap();
    // Flip one hex digit of every field in turn: always refused.
    let text = String::from_utf8(raw.to_vec()).unwrap();
    for field in ["\"sealed\": \"", "\"signature\": \""] {
        let at = text.find(field).unwrap() + field.len() + 10;
        let mut t = text.clone().into_bytes();
        t[at] = if t[at] == b'0' { b'1' } else { b'0' };
        let r = Policy::open(&t, "repo1", &w.msk.public(), &fog);
        assert!(matches!(r, Err(PolicyError::BadSignature) | Err(PolicyError::Malformed)), "{field}: {r:?}");
    }
    let unsigned =
        text.replace(&text[text.find("\"signature\": \"").unwrap()..text.rfind('"').unwrap()], "\"signature\": \"");
    assert!(Policy::open(unsigned.as_bytes(), "repo1", &w.msk.public(), &fog).is_err());
    // A policy signed by another authority (which also lacks this fog node's key).
    let mut forged = p.clone();
    forged.publish(&w.backend, "repo1", &MasterSecret::generate(), repo::FOG_ID).unwrap();
    assert_eq!(Policy::load(&w.backend, "repo1", &w.msk.public(), &fog).err(), Some(PolicyError::BadSignature));
}

#[test]
fn the_handshake_admits_only_what_the_policy_admits() {
    let (w, mut p) = world();
    p.add_user("carol", "clerk", EnrolSecret::generate().public(), Some(now_secs() - 10)).unwrap();
    p.revoke("bob", None).unwrap();
    let fog = w.msk.extract(repo::FOG_ID);
    let now = now_secs();
    for (who, why) in [
        ("alice", None),
        ("bob", Some("identity revoked")),
        ("carol", Some("identity expired")),
        ("mallory", Some("unknown identity")),
    ] {
        let (_, m1) = UserInitiator::start(&w.msk.extract(who));
        let r = FogResponder::respond(&fog, &mut ReplayCache::new(std::time::Duration::from_secs(60), 10), &m1, |id| {
            p.admit(id, now).map(|_| ())
        });
        match why {
            None => assert!(r.is_ok()),
            Some(why) => assert_eq!(r.err(), Some(HandshakeError::Refused(who.into(), why.into()))),
        }
    }
}
