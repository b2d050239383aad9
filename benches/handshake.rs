//! CPU cost of each handshake step and of a full login (both sides).
//! Run: `cargo bench --bench handshake`. Target (issue 4): ≤ 10 ms per side.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fogvault::session::{FogResponder, MasterSecret, ReplayCache, UserInitiator};

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
            criterion::BatchSize::SmallInput,
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
            criterion::BatchSize::SmallInput,
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
            criterion::BatchSize::SmallInput,
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = handshake
}
criterion_main!(benches);
