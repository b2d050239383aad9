#!/usr/bin/env bash
# Stored bytes of one build for the mixed dataset of bench.sh (v1, an exact
# copy, v2 with 5% of the files edited mid-file), in a fresh repository:
# init, then per folder mount, `cp -r`, unmount, `fogvault stats`. Without
# the peers, so that two chunking settings can be compared in several
# repositories (the keyed gear seed moves cut points from one to the next).
# Not part of CI. Needs the dataset bench.sh prepared.
#
#   scripts/bench_stored.sh BINARY [RUNS]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [RUNS]" >&2; exit 2; }
BIN=$1 RUNS=${2:-2} B=${BENCH_DIR:-/var/tmp/fvbench}
MIX=$B/src-full/mixed D=$B/stored
[ -d "$MIX/v2" ] || { echo "no dataset at $MIX: run scripts/bench.sh once first" >&2; exit 1; }
export FOGVAULT_PASSPHRASE=stored-passphrase
for run in $(seq "$RUNS"); do
    mountpoint -q "$D/mnt" && fusermount3 -u "$D/mnt"
    rm -rf "$D"; mkdir -p "$D/mnt"
    "$BIN" init --repo "$D/repo" >/dev/null 2>&1
    line="run $run:"
    for step in v1 v1copy v2; do
        "$BIN" mount --repo "$D/repo" --cache "$D/cache" "$D/mnt" >>"$D/log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do mountpoint -q "$D/mnt" && break; sleep 0.1; done
        cp -r "$MIX/$step" "$D/mnt/$step"
        fusermount3 -u "$D/mnt"
        wait "$pid"
        line="$line $step $("$BIN" stats --repo "$D/repo" --cache "$D/cache" --json |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["stored_bytes"])')"
    done
    echo "$line (stored bytes after each folder; meta/ $(du -sb "$D/repo/meta" | cut -f1), audit/ $(du -sb "$D/repo/audit" 2>/dev/null | cut -f1 || echo 0))"
done
rm -rf "$D"
