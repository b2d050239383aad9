#!/usr/bin/env bash
# fogvault on a real S3 server (single-node Garage on loopback) against the
# same workload on a local-directory store, side by side in one run:
# 1 GiB sequential write + fsync + clean unmount (every pack uploaded), then
# a cold sequential read after dropping caches and remounting.
# Appends to bench-out/results.md. Run as root; needs garage (scripts/deps.sh s3).
# Not yet here: the rclone crypt comparison and GET/PUT counts that issue 5 asks for.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export FOGVAULT=${FOGVAULT:-$ROOT/target/release/fogvault}
OUT=${BENCH_OUT:-$ROOT/bench-out}
SIZE_MB=${S3_BENCH_MB:-1024}
source tests/shell/lib.sh
source tests/shell/garage.sh
start_garage "$FV_TMP/garage" "$((20000 + RANDOM % 20000))"
head -c $((SIZE_MB << 20)) /dev/urandom > "$FV_TMP/input.bin"
rows=()
for kind in local s3; do
    d="$FV_TMP/$kind"; mkdir -p "$d/mnt"
    if [ "$kind" = s3 ]; then repo="s3://$GARAGE_BUCKET/bench"; else repo="$d/repo"; fi
    fv init --repo "$repo" >/dev/null
    "$FOGVAULT" mount --repo "$repo" --cache "$d/cache" "$d/mnt" 2>>"$d/log" & pid=$!
    FV_PIDS+=("$pid"); FV_MOUNTS+=("$d/mnt")
    for _ in $(seq 100); do mountpoint -q "$d/mnt" && break; sleep 0.1; done
    s=$(date +%s.%N)
    dd if="$FV_TMP/input.bin" of="$d/mnt/f" bs=1M conv=fsync status=none
    umount "$d/mnt"; wait "$pid"
    w=$(python3 -c "import sys; print(round($SIZE_MB / ($(date +%s.%N) - $s)))")
    sync; echo 3 > /proc/sys/vm/drop_caches
    "$FOGVAULT" mount --repo "$repo" --cache "$d/cache" "$d/mnt" 2>>"$d/log" & pid=$!
    FV_PIDS+=("$pid")
    for _ in $(seq 100); do mountpoint -q "$d/mnt" && break; sleep 0.1; done
    s=$(date +%s.%N)
    cmp -s "$FV_TMP/input.bin" "$d/mnt/f" || { echo "bench_s3: $kind read back different bytes" >&2; exit 1; }
    r=$(python3 -c "import sys; print(round($SIZE_MB / ($(date +%s.%N) - $s)))")
    umount "$d/mnt"; wait "$pid"
    rows+=("| $kind | $w | $r |")
done
mkdir -p "$OUT"
{
    printf '\n## S3 (Garage on loopback) vs local directory, %s MiB\n\n' "$SIZE_MB"
    echo "| store | write + fsync + unmount MiB/s | cold read MiB/s (cmp) |"
    echo "|---|---:|---:|"
    printf '%s\n' "${rows[@]}"
} | tee -a "$OUT/results.md"
