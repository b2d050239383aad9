#!/usr/bin/env bash
# A/B of two fogvault builds on small-file work, alternating per round, a fresh
# vault per run: 5,000 creates of 100 B (+ fsync of the directory) and an untar
# of a synthetic 20,000-file tree (+ fsync). Prints files/s and the daemon's
# CPU per file. Not part of CI.
#
#   scripts/bench_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# Build the old one from a worktree, e.g.
#   git worktree add /var/tmp/base <commit> && (cd /var/tmp/base && cargo build --release)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
OLD=$1 NEW=$2 ROUNDS=${3:-2}
D=${BENCH_DIR:-/var/tmp/fvbench}/ab
TAR=${BENCH_DIR:-/var/tmp/fvbench}/ab-src.tar
export FOGVAULT_PASSPHRASE=ab-passphrase
mkdir -p "$(dirname "$TAR")"
if [ ! -f "$TAR" ]; then
    python3 - "$TAR" <<'PY'
import io, os, random, sys, tarfile
random.seed(1)
with tarfile.open(sys.argv[1], "w") as t:
    for i in range(20000):
        n = random.choice([200, 800, 3000, 9000, 30000])
        data = os.urandom(n // 2) + b"a" * (n - n // 2)
        ti = tarfile.TarInfo(f"d{i // 200:03d}/f{i:05d}.txt"); ti.size = n; ti.mode = 0o644; ti.mtime = 1700000000
        t.addfile(ti, io.BytesIO(data))
PY
fi

run() { # run BINARY WORKLOAD
    local bin=$1 w=$2 n pid c0 c1 t0 t1
    mountpoint -q "$D/mnt" && fusermount3 -u "$D/mnt"
    rm -rf "$D"; mkdir -p "$D/mnt"
    "$bin" init --repo "$D/repo" >/dev/null 2>&1
    "$bin" mount --repo "$D/repo" --cache "$D/cache" "$D/mnt" >"$D/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do mountpoint -q "$D/mnt" && break; sleep 0.1; done
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat"); t0=$(date +%s.%N)
    case $w in
        create) n=5000; python3 - "$D/mnt/c" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2]); os.mkdir(d)
for i in range(n):
    fd = os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b"x" * 100); os.close(fd)
fd = os.open(d, os.O_RDONLY); os.fsync(fd)
PY
        ;;
        untar) n=20000; mkdir "$D/mnt/t"; tar xf "$TAR" -C "$D/mnt/t"
            python3 -c "import os,sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))" "$D/mnt/t" ;;
    esac
    t1=$(date +%s.%N); c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    fusermount3 -u "$D/mnt"; wait "$pid" || true
    python3 -c "import sys; n, t0, t1, c0, c1 = int(sys.argv[1]), *map(float, sys.argv[2:]); \
print(f'{n / (t1 - t0):8.0f} files/s  {(c1 - c0) / 100 / n * 1e6:5.0f} us daemon CPU/file')" "$n" "$t0" "$t1" "$c0" "$c1"
}

for w in create untar; do
    for r in $(seq "$ROUNDS"); do
        for side in old new; do
            if [ $((r % 2)) = 0 ]; then side=$([ $side = old ] && echo new || echo old); fi
            bin=$([ $side = old ] && echo "$OLD" || echo "$NEW")
            printf '%-6s round %d %-3s ' "$w" "$r" "$side"; run "$bin" "$w"
        done
    done
done
