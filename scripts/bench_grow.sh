#!/usr/bin/env bash
# Does creating files slow down as the vault grows? Creates DIRS x FILES
# files of 100 B in a fresh vault and prints the rate and the daemon's CPU
# per file for every 10,000. Not part of CI.
#
#   scripts/bench_grow.sh BINARY DIRS FILES_PER_DIR     e.g. ... 100 1000
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 BINARY DIRS FILES_PER_DIR" >&2; exit 2; }
BIN=$1 D=${BENCH_DIR:-/var/tmp/fvbench}/grow
export FOGVAULT_PASSPHRASE=grow-passphrase
mountpoint -q "$D/mnt" && fusermount3 -u "$D/mnt"
rm -rf "$D"; mkdir -p "$D/mnt"
"$BIN" init --repo "$D/repo" >/dev/null 2>&1
"$BIN" mount --repo "$D/repo" --cache "$D/cache" "$D/mnt" >"$D/log" 2>&1 &
pid=$!
for _ in $(seq 100); do mountpoint -q "$D/mnt" && break; sleep 0.1; done
python3 - "$D/mnt" "$pid" "$2" "$3" <<'PY'
import os, sys, time
mnt, pid, dirs, per_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def cpu():
    f = open(f"/proc/{pid}/stat").read().split()
    return (int(f[13]) + int(f[14])) / 100
n, t, c = 0, time.time(), cpu()
for d in range(dirs):
    os.mkdir(f"{mnt}/d{d}")
    for i in range(per_dir):
        fd = os.open(f"{mnt}/d{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b"x" * 100); os.close(fd)
        n += 1
        if n % 10000 == 0:
            t2, c2 = time.time(), cpu()
            print(f"{n:8d} files: {10000 / (t2 - t):6.0f} files/s {(c2 - c) / 10000 * 1e6:4.0f} us daemon CPU per file", flush=True)
            t, c = t2, c2
PY
fusermount3 -u "$D/mnt"; wait "$pid" || true
