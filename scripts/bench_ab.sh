#!/usr/bin/env bash
# A/B of two fogvault builds, alternating per round, a fresh vault per run.
# Prints the measured rate and the daemon's CPU per file (or per MiB). Not
# part of CI. Workloads ($WORKLOADS, default "create untar"):
#   create   5,000 creates of 100 B (+ fsync of the directory)
#   untar    a synthetic 20,000-file tree (+ fsync of the directory)
#   reread   that tree read back with `tar c` after a remount, caches dropped
#   seqread  a 1 GiB random file read with dd after a remount, caches dropped
#   seqwrite that file written with dd bs=1M conv=fsync (new data: a fresh vault per run)
#   seqcopy  the same, into a vault that already holds it (a second copy: deduplicated)
#
#   scripts/bench_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   WORKLOADS=reread scripts/bench_ab.sh NO_AUDIT_BUILD AUDIT_BUILD 3
#   SHARED=1 WORKLOADS=reread scripts/bench_ab.sh NO_AUDIT_BUILD AUDIT_BUILD 60
#
# SHARED=1 (reread, seqread): both builds read one vault, made once, so a
# round costs the measured read and a remount, not a fresh import: many
# rounds fit in minutes, which this host's noise needs (both builds must
# read the same format). The summary gives the median of the paired
# ratios with a distribution-free 95% interval (order statistics), which
# one disturbed round cannot move, next to the geometric mean.
#
# FOLDER=1: the vault has an admin key, a folder `cardiology` granted rw to
# the unix user $BENCH_USER (default benchuser, created if missing), who logs
# in after each mount and runs every workload inside the folder (sessions,
# access checks and the folder's audit records on the path).
#
# With a build made with `--features bench-audit-timing`, each line also says
# how long the request path spent in the audit trail per file (or MiB).
#
# Build the old one from a worktree, e.g.
#   git worktree add /var/tmp/base <commit> && (cd /var/tmp/base && cargo build --release)
# and the trail-less one with
#   CARGO_TARGET_DIR=/var/tmp/fv-noaudit cargo build --release --features bench-no-audit
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
OLD=$1 NEW=$2 ROUNDS=${3:-2}
BASE=${BENCH_DIR:-/var/tmp/fvbench}
D=$BASE/ab
TAR=$BASE/ab-src.tar
BIG=$BASE/ab-rand-1g
export FOGVAULT_PASSPHRASE=ab-passphrase FOGVAULT_ADMIN_PASSPHRASE=ab-admin
FOLDER=${FOLDER:-0} BU=${BENCH_USER:-benchuser}
if [ "$FOLDER" = 1 ]; then
    id "$BU" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$BU"
    TOP=$D/mnt/cardiology
else
    TOP=$D/mnt
fi
as() { # as CMD...: run CMD as the folder's user (FOLDER=1), else as root
    if [ "$FOLDER" = 1 ]; then setpriv --reuid "$BU" --regid "$BU" --init-groups -- "$@"; else "$@"; fi
}
mkdir -p "$BASE"
rm -f "$D"/ready-*  # SHARED: a vault made once per invocation, by its own builds
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

PID=
make_vault() { # make_vault BINARY
    if [ "$FOLDER" = 0 ]; then "$1" init --repo "$D/repo" >/dev/null 2>&1; return; fi
    local b=$1
    adm() { "$b" admin "$@" --repo "$D/repo" --admin-key "$D/admin.key"; }
    {
        "$b" init --repo "$D/repo" --admin-key "$D/admin.key" &&
        FOGVAULT_KEY_PASSPHRASE=ab-user adm user add "$BU" --role physician --key-out "$D/user.key" &&
        adm folder create cardiology &&
        adm grant --user "$BU" --folder cardiology --rights rw &&
        adm alerts set --max-mib-per-min 1000000 # seqread reads 1 GiB at once
    } >>"$D/log" 2>&1 || { echo "making the vault failed (see $D/log)" >&2; exit 1; }
    chown "$BU" "$D/user.key"
}
mount_vault() { # mount_vault BINARY
    local opt=()
    [ "$FOLDER" = 0 ] || opt=(--allow-other)
    "$1" mount --repo "$D/repo" --cache "$D/cache" "${opt[@]}" "$D/mnt" >>"$D/log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do mountpoint -q "$D/mnt" && break; sleep 0.1; done
    mountpoint -q "$D/mnt" || { echo "mount failed (see $D/log)" >&2; exit 1; }
    [ "$FOLDER" = 0 ] || as env FOGVAULT_KEY_PASSPHRASE=ab-user "$1" login --mount "$D/mnt" --key "$D/user.key" \
        >>"$D/log" 2>&1 || { echo "login failed (see $D/log)" >&2; exit 1; }
}
unmount_vault() { umount "$D/mnt"; wait "$PID" || true; }
cold_remount() { # cold_remount BINARY
    unmount_vault; sync; echo 3 >/proc/sys/vm/drop_caches; mount_vault "$1"
}
fsync_dir() { as /usr/bin/python3 -c "import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))" "$1"; }

run() { # run BINARY WORKLOAD
    local bin=$1 w=$2 n unit=files pid c0 c1 t0 t1
    mountpoint -q "$D/mnt" && umount "$D/mnt"
    if [ "${SHARED:-0}" = 1 ] && [ -f "$D/ready-$w" ]; then
        sync; echo 3 >/proc/sys/vm/drop_caches; mount_vault "$bin"
    else
    rm -rf "$D"; mkdir -p "$D/mnt"
    make_vault "$bin"
    mount_vault "$bin"
    # Unmeasured set-up.
    case $w in
        reread) as mkdir "$TOP/t"; as tar xf "$TAR" -C "$TOP/t"; cold_remount "$bin" ;;
        seqwrite) [ -f "$BIG" ] || head -c 1073741824 /dev/urandom >"$BIG"; cat "$BIG" >/dev/null ;;
        seqcopy) [ -f "$BIG" ] || head -c 1073741824 /dev/urandom >"$BIG"
            as dd if="$BIG" of="$TOP/first" bs=1M conv=fsync status=none ;;
        seqread) [ -f "$BIG" ] || head -c 1073741824 /dev/urandom >"$BIG"
            as dd if="$BIG" of="$TOP/big" bs=1M conv=fsync status=none; cold_remount "$bin" ;;
    esac
    case $w in reread | seqread) touch "$D/ready-$w" ;; esac
    fi
    pid=$PID
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat"); t0=$(date +%s.%N)
    case $w in
        create) n=5000; as /usr/bin/python3 - "$TOP/c" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2]); os.mkdir(d)
for i in range(n):
    fd = os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b"x" * 100); os.close(fd)
fd = os.open(d, os.O_RDONLY); os.fsync(fd)
PY
        ;;
        untar) n=20000; as mkdir "$TOP/t"; as tar xf "$TAR" -C "$TOP/t"; fsync_dir "$TOP/t" ;;
        reread) n=20000; as tar cf - -C "$TOP" t | cat >/dev/null ;;
        seqread) n=1024 unit=MiB; as dd if="$TOP/big" of=/dev/null bs=1M status=none ;;
        seqwrite | seqcopy) n=1024 unit=MiB; as dd if="$BIG" of="$TOP/big" bs=1M conv=fsync status=none ;;
        *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
    t1=$(date +%s.%N); c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    # A bench-audit-timing build prints the time spent in the trail since mount.
    local a0 a1
    a0=$(grep -c "audit timing" "$D/log" || true)
    unmount_vault
    a1=$(grep "audit timing" "$D/log" | tail -1 | awk '{print $6}' || true)
    [ "$(grep -c "audit timing" "$D/log" || true)" -gt "$a0" ] || a1=
    [ "$w" != seqcopy ] || a1=  # its daemon also made the unmeasured first copy
    python3 -c "import sys; n, u, t0, t1, c0, c1 = int(sys.argv[1]), sys.argv[2], *map(float, sys.argv[3:7]); \
a = sys.argv[7]; per = u[:-1] if u == 'files' else u; \
print(f'{n / (t1 - t0):8.0f} {u}/s  {(c1 - c0) / 100 / n * 1e6:5.0f} us daemon CPU per {per}' \
      + (f', {int(a) / 1000 / n:.1f} us in the audit trail (of {(t1 - t0) * 1e6 / n:.0f} us wall)' if a else ''))" \
        "$n" "$unit" "$t0" "$t1" "$c0" "$c1" "$a1"
}

OUT=$(mktemp)
for w in ${WORKLOADS:-create untar}; do
    for r in $(seq "$ROUNDS"); do
        for side in old new; do
            if [ $((r % 2)) = 0 ]; then side=$([ $side = old ] && echo new || echo old); fi
            bin=$([ $side = old ] && echo "$OLD" || echo "$NEW")
            { printf '%-7s round %d %-3s ' "$w" "$r" "$side"; run "$bin" "$w"; } | tee -a "$OUT"
        done
    done
done
# Paired new/old ratios per workload: rate (above 1: NEW is faster) and daemon CPU per unit.
python3 - "$OUT" "$(dirname "$0")/bench_stats.py" <<'PY'
import collections, subprocess, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 7:
        runs[(f[0], f[2])][f[3]] = (float(f[4]), float(f[6]))
ratios = collections.defaultdict(lambda: ([], []))
for (w, _), s in runs.items():
    if "old" in s and "new" in s:
        ratios[w][0].append(s["new"][0] / s["old"][0])
        ratios[w][1].append(s["new"][1] / s["old"][1])
def stats(xs, *opt):
    cmd = [sys.executable, sys.argv[2], *opt, *map(str, xs)]
    return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
for w, (rate, cpu) in ratios.items():
    print(f"{w}: {len(rate)} pairs, new/old: rate {stats(rate, '--median')} (median), "
          f"{stats(rate)} (geometric mean); daemon CPU {stats(cpu, '--median')} (median)")
PY
rm -f "$OUT"
