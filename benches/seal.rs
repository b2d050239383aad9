//! CPU cost of sealing and opening one small record (`crypto::seal`/`open`:
//! random-nonce XChaCha20-Poly1305), as every inode, directory entry, audit
//! record and metadata object pays it. Run: `cargo bench --bench seal`.
//! The sizes show the fixed cost per call (subkey, one-time MAC key, MAC
//! setup and finish, the nonce) against the cost per byte.

use criterion::{Criterion, criterion_group, criterion_main};
use fogvault::crypto::{self, Key32};

fn bench(c: &mut Criterion) {
    let key = Key32::random();
    for n in [16usize, 200, 1024, 4096] {
        let m = vec![7u8; n];
        c.bench_function(&format!("seal/{n}"), |b| b.iter(|| crypto::seal(&key, b"aad", &m)));
        let s = crypto::seal(&key, b"aad", &m);
        c.bench_function(&format!("open/{n}"), |b| b.iter(|| crypto::open(&key, b"aad", &s).expect("opens")));
    }
    let mut nonce = [0u8; 24];
    c.bench_function("nonce/getrandom-24", |b| b.iter(|| crypto::random_bytes(&mut nonce)));
    c.bench_function("nonce/thread-rng-24", |b| b.iter(crypto::random_nonce));
}

criterion_group!(benches, bench);
criterion_main!(benches);
