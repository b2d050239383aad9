//! CPU cost of each handshake step, of a full login (both sides, with the
//! folder-key hand-over for three vault folders) and of unsealing a key file.
//! Run: `cargo bench --bench handshake`. Target (issue 4): ≤ 10 ms of CPU per side.
//!
//! Groups:
//! - `handshake/*`: the four protocol steps and the bare handshake, wall time
//!   per call on one thread (the steps are pure CPU, so wall ≈ CPU).
//! - `login/*`: what `fogvault login` and the daemon compute for one login,
//!   minus the socket round trips and `Vault::unlock_folder` (which needs a
//!   mounted vault): user = message 1, message 3, opening the sealed offer,
//!   unwrapping each folder key, sealing the key delivery; fog = admitting the
//!   user, message 2, checking message 3, sealing the offers, opening the
//!   delivery, and per folder the rights lookup and `Policy::key_versions`
//!   (key check + key chain). The per-side benches run whole logins and count
//!   only that side's *thread CPU time* (`CLOCK_THREAD_CPUTIME_ID`).
//! - `keyfile/*`: the passphrase KDF (Argon2id with the parameters new key
//!   files get, named in the bench id) that `fogvault login` runs before it
//!   connects, and the identity-key check.

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use fogvault::crypto::{self, KdfParams};
use fogvault::session::policy::{Policy, now_secs};
use fogvault::session::transport::{self, KeyDelivery};
use fogvault::session::wrap::{self, EnrolSecret};
use fogvault::session::{
    FogResponder, Grant, IdentityKey, MasterPublic, MasterSecret, ReplayCache, Rights, Subject, UserInitiator,
    read_identity_key, write_identity_key,
};

const FOLDERS: [&str; 3] = ["cardiology", "wards/oncology", "radiology"];

fn handshake(c: &mut Criterion) {
    let msk = MasterSecret::generate();
    let mpk = msk.public();
    let (alice, fog) = (msk.extract("alice"), msk.extract("fog"));
    let mut cache = ReplayCache::new(Duration::from_secs(300), 1 << 24);

    c.bench_function("extract identity key (admin)", |b| b.iter(|| msk.extract("alice")));
    c.bench_function("user: message 1", |b| b.iter(|| UserInitiator::start(&alice)));
    c.bench_function("fog: message 1 -> 2", |b| {
        b.iter_batched(
            || UserInitiator::start(&alice).1,
            |m1| FogResponder::respond(&fog, &mut cache, &m1, |_| Ok(())).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut cache2 = ReplayCache::new(Duration::from_secs(300), 1 << 24);
    c.bench_function("user: message 2 -> 3", |b| {
        b.iter_batched(
            || {
                let (u, m1) = UserInitiator::start(&alice);
                let (_, m2) = FogResponder::respond(&fog, &mut cache2, &m1, |_| Ok(())).unwrap();
                (u, m2)
            },
            |(u, m2)| u.finish(&mpk, None, &m2).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut cache3 = ReplayCache::new(Duration::from_secs(300), 1 << 24);
    c.bench_function("fog: message 3 -> session", |b| {
        b.iter_batched(
            || {
                let (u, m1) = UserInitiator::start(&alice);
                let (f, m2) = FogResponder::respond(&fog, &mut cache3, &m1, |_| Ok(())).unwrap();
                let (m3, _) = u.finish(&mpk, None, &m2).unwrap();
                (f, m3)
            },
            |(f, m3)| f.finish(&mpk, &m3).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut cache4 = ReplayCache::new(Duration::from_secs(300), 1 << 24);
    c.bench_function("full handshake (both sides)", |b| {
        b.iter(|| {
            let (u, m1) = UserInitiator::start(&alice);
            let (f, m2) = FogResponder::respond(&fog, &mut cache4, &m1, |_| Ok(())).unwrap();
            let (m3, _) = u.finish(&mpk, None, &m2).unwrap();
            f.finish(&mpk, &m3).unwrap()
        })
    });
}

// ---------------------------------------------------------------- full login

struct World {
    mpk: MasterPublic,
    fog: IdentityKey,
    alice: IdentityKey,
    enrol: EnrolSecret,
    policy: Policy,
}

/// A signed-policy equivalent: alice (physician) with rw on three folders,
/// each folder at key version 2 (one rotation, so `key_versions` walks a chain).
fn world() -> World {
    let msk = MasterSecret::generate();
    let enrol = EnrolSecret::generate();
    let mut p = Policy::empty();
    p.add_user("alice", "physician", enrol.public(), None).unwrap();
    p.add_user("bob", "nurse", EnrolSecret::generate().public(), None).unwrap();
    for path in FOLDERS {
        let id = p.create_folder(path, &msk).unwrap();
        for who in ["alice", "bob"] {
            let subject = Subject::User(who.into());
            p.grant(Grant { subject, folder: id, rights: Rights::READ_WRITE, expires: None, hours: None });
        }
    }
    p.sync_wraps(&msk).unwrap();
    for f in 1..=FOLDERS.len() as u32 {
        p.revoke("bob", Some(f)).unwrap();
    }
    let rotated = p.sync_wraps(&msk).unwrap();
    assert_eq!(rotated.len(), FOLDERS.len(), "each folder rotated once");
    World { mpk: msk.public(), fog: msk.extract("fog"), alice: msk.extract("alice"), enrol, policy: p }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One login as `fogvault login` and the daemon compute it; returns the thread
/// CPU time spent on the user's side and on the fog node's side.
fn login(w: &World, replay: &mut ReplayCache) -> (Duration, Duration) {
    let (mut user_t, mut fog_t) = (Duration::ZERO, Duration::ZERO);
    let p = &w.policy;

    // user: message 1
    let t = thread_cpu();
    let (u, msg1) = UserInitiator::start(&w.alice);
    user_t += thread_cpu() - t;

    // fog: admit + message 2
    let t = thread_cpu();
    let now = now_secs();
    let (responder, msg2) = FogResponder::respond(&w.fog, replay, &msg1, |id| p.admit(id, now).map(|_| ())).unwrap();
    fog_t += thread_cpu() - t;

    // user: message 3
    let t = thread_cpu();
    let (msg3, ukeys) = u.finish(&w.mpk, None, &msg2).unwrap();
    user_t += thread_cpu() - t;

    // fog: check message 3, seal the offers
    let t = thread_cpu();
    let fkeys = responder.finish(&w.mpk, &msg3).unwrap();
    let sealed_offers = transport::seal_offers(&fkeys, &transport::offers_for(p, &fkeys.user));
    fog_t += thread_cpu() - t;

    // user: open the offers, unwrap each folder key, seal the delivery
    let t = thread_cpu();
    let offers = transport::open_offers(&ukeys, &sealed_offers).unwrap();
    let delivered = transport::unwrap_offers(&offers, &w.enrol);
    assert_eq!(delivered.len(), FOLDERS.len(), "alice's wraps");
    let delivery = transport::seal_delivery(&ukeys, &KeyDelivery { keys: delivered, break_glass: None, ttl: None });
    user_t += thread_cpu() - t;

    // fog: open the delivery, check every folder key against the policy
    let t = thread_cpu();
    let d = transport::open_delivery(&fkeys, &delivery).unwrap();
    let mut opened = 0;
    for (folder, version, hex_key) in &d.keys {
        let fk = transport::delivered_key(hex_key).unwrap();
        let entry = p.folder(*folder).unwrap();
        assert_eq!(entry.version, *version);
        assert!(p.rights(&fkeys.user, *folder, now).read);
        let versions = p.key_versions(*folder, &fk).expect("key matches the policy");
        opened += versions.len();
    }
    fog_t += thread_cpu() - t;
    assert_eq!(opened, 2 * FOLDERS.len(), "two key versions per folder");
    (user_t, fog_t)
}

fn full_login(c: &mut Criterion) {
    let w = world();
    let mut g = c.benchmark_group("login (3 folders)");
    let mut replay = ReplayCache::new(Duration::from_secs(300), 1 << 24);
    g.bench_function("both sides, wall time", |b| b.iter(|| login(&w, &mut replay)));
    g.bench_function("user side, thread CPU", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| login(&w, &mut replay).0).sum())
    });
    g.bench_function("fog side, thread CPU", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| login(&w, &mut replay).1).sum())
    });
    // The parts that are new relative to the bare handshake, one folder each.
    let f = &w.policy.folders[0];
    let my_wrap = f.wraps.iter().find(|x| x.recipient == "alice").unwrap();
    g.bench_function("user: unwrap one folder key", |b| {
        b.iter(|| wrap::unwrap(my_wrap, &w.enrol, f.id, f.version).unwrap())
    });
    let fk = wrap::unwrap(my_wrap, &w.enrol, f.id, f.version).unwrap();
    g.bench_function("fog: key_versions of one folder (check + 1 chain link)", |b| {
        b.iter(|| w.policy.key_versions(f.id, &fk).unwrap())
    });
    g.finish();
}

// ---------------------------------------------------------------- key file

fn key_file(c: &mut Criterion) {
    let msk = MasterSecret::generate();
    let mpk = msk.public();
    let alice = msk.extract("alice");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.key");
    write_identity_key(&path, &alice, &EnrolSecret::generate(), "physician", &mpk, b"bench-user").unwrap();

    let mut g = c.benchmark_group("keyfile");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    // The parameters new identity key files get, named in the bench id.
    let params = KdfParams::interactive_random();
    let name = format!(
        "Argon2id derive_kek alone ({} MiB, t={}, p={})",
        params.m_cost_kib / 1024,
        params.t_cost,
        params.p_cost
    );
    g.bench_function(&name, |b| b.iter(|| crypto::derive_kek(b"bench-user", &params).unwrap()));
    g.bench_function("read_identity_key (Argon2id + open + validity check)", |b| {
        b.iter(|| read_identity_key(&path, b"bench-user").unwrap())
    });
    g.finish();
    c.bench_function("identity key validity check (pairing)", |b| b.iter(|| alice.is_valid_for(&mpk)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = handshake, full_login, key_file
}
criterion_main!(benches);
