#!/usr/bin/env bash
# Runs every test: formatting, lints, layering, Rust unit/property tests, and
# the real-mount shell suites (cp/rsync/tar, crash, tampering, errors, large
# and sparse files, concurrency, 100k-entry dirs, mmap, DICOM/Orthanc, pjdfstest, page-cache
# coherence between handles and set-user-ID clearing, a failing fdatasync and a bind-mounted cache),
# all of them again on a real S3 server (Garage on loopback), and
# the vault on a three-node Garage cluster that loses a node (garage3).
# Installs what it needs (idempotent). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "== dependencies"
scripts/deps.sh test s3

echo "== static checks"
cargo fmt --all -- --check
scripts/check_layers.sh
cargo clippy --all-targets --locked -- -D warnings

echo "== rust tests"
cargo test --release --locked

echo "== build"
cargo build --release --locked
export FOGVAULT="$PWD/target/release/fogvault"

# Suites prefixed "s3:" run with FV_STORE=s3: the repository is a bucket prefix on Garage.
# Suites prefixed "dw:" run with FV_WALK_CHECK=daemon: walks into vault folders are
# checked by the daemon (a gated LOOKUP) instead of the kernel (an access list).
suites=(roundtrip integrity durability disk_faults errors shutdown sessions folders large concurrency dicom pjdfstest coherence
    recover gc audit insider s3 s3_outage mirror garage3
    s3:roundtrip s3:integrity s3:durability s3:errors s3:shutdown s3:sessions s3:folders s3:large
    s3:concurrency s3:dicom s3:pjdfstest s3:recover s3:gc s3:audit s3:insider
    dw:folders dw:audit dw:insider)
failed=()
for s in "${suites[@]}"; do
    echo "== shell: $s"
    start=$(date +%s)
    store=local
    walk=kernel
    name=$s
    if [[ $s == s3:* ]]; then store=s3; name=${s#s3:}; fi
    if [[ $s == dw:* ]]; then walk=daemon; name=${s#dw:}; fi
    if FV_STORE=$store FV_WALK_CHECK=$walk bash "tests/shell/$name.sh"; then
        echo "-- $s passed in $(( $(date +%s) - start ))s"
    else
        echo "-- $s FAILED after $(( $(date +%s) - start ))s"
        failed+=("$s")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED suites: ${failed[*]}"
    exit 1
fi
echo "all tests passed"
