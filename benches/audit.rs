//! CPU cost of one audit record (issue 6: the trail's overhead on small-file
//! workloads must stay ≤ 5%). Run: `cargo bench --bench audit`.
//!
//! `append/*` appends a record like those a file operation writes (a path
//! of typical depth, the uid of a logged-in user) to a log in a temporary
//! directory on the disk that holds the build: sealing, chaining and the
//! store into the file's shared map, as a FUSE handler pays them before it replies.
//! `seal` is the sealing alone.

use criterion::{Criterion, criterion_group, criterion_main};
use fogvault::audit::{AuditKeys, AuditLog, Entry, Op, Record, Resume};
use fogvault::crypto::Key32;

fn entry() -> Entry<'static> {
    Entry {
        uid: 1001,
        user: Some("alice"),
        session: Some("4f1c2a9be07d3355"),
        op: Op::Open,
        ino: 0x2f3a_9c41_77e0_12ab,
        path: Some("/cardiology/p-4410/study-1/series-3/img-0117.dcm"),
        detail: Some("read"),
    }
}

fn bench(c: &mut Criterion) {
    let key = Key32::random();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let log = AuditLog::open(dir.path(), AuditKeys::new(&key, "bench-repo"), Resume::default()).expect("audit log");
    c.bench_function("append/open-record", |b| b.iter(|| log.append(entry()).expect("append")));
    let keys = AuditKeys::new(&key, "bench-repo");
    let e = entry();
    let rec = Record {
        seq: 7,
        prev: [3; 32],
        time_ms: 1_764_000_000_000,
        uid: e.uid,
        user: e.user.map(String::from),
        session: e.session.map(String::from),
        op: Op::Open,
        ino: e.ino,
        path: e.path.map(String::from),
        detail: e.detail.map(String::from),
    };
    c.bench_function("seal", |b| b.iter(|| keys.seal(&rec)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
