#!/usr/bin/env bash
# Per-file overhead of the vault-folder permission check (issue 4 target: ≤ 5%
# against the same workload without folders).
#
# One repository with an admin authority, mounted --allow-other; a real Unix
# user (benchuser, created if missing) enrolled, granted rw on the vault
# folder cardiology, and logged in (session bound to its uid). The same
# workload runs, as benchuser (setpriv), in three places:
#   folder     $MNT/cardiology/runN            inside the vault folder (gate checked, TTL 0, no KEEP_CACHE)
#   root       $MNT/plain/runN                 a 0777 directory outside folders, same mount
#   nofolders  $MNT2/plain/runN                a 0777 directory on a second mount of a repository
#                                              without an admin authority (no gate at all)
# Workload, FOLDER_FILES files (default 2000) of FOLDER_SIZE bytes (default 4096: the
# worst case for a per-file cost; a CT slice is ~512 KiB) of fresh random bytes
# (generated before the clock starts, new per run, so nothing deduplicates):
#   create     open(O_CREAT|O_EXCL) + write + close, each file
#   cold read  open + read all + close, each file, after sync + drop_caches
#   warm read  the same again (3 times per round)
#   open only  open + close, each file, warm (3 times per round)
#   other      open + read all + close of each file by a second user (benchreader,
#              logged in with a read grant), after sync + drop_caches: the files
#              are not theirs, so the kernel checks group/other modes (and, where
#              it checks folder walks itself, fetches each file's access list)
# FOLDER_REPS rounds (default 5; QUICK=1: 3). In each round every phase runs in
# the three places back to back, in a rotating order. Reported: µs per file
# (median of all measurements per place) and the median of the paired
# per-round ratios folder/nofolders (the target: the same workload without
# folders), folder/root and root/nofolders.
# Run as root. FOGVAULT=PATH selects the binary; WALK_CHECK=kernel|daemon is passed
# to `fogvault mount --walk-check` (unset: the binary's default). Appends to
# bench-out/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
FOGVAULT=${FOGVAULT:-$PWD/target/release/fogvault}
OUT=${BENCH_OUT:-$PWD/bench-out}
QUICK=${QUICK:-0}
NFILES=${FOLDER_FILES:-2000}
SIZE=${FOLDER_SIZE:-4096}
if [ "$QUICK" = 1 ]; then REPS=${FOLDER_REPS:-3}; else REPS=${FOLDER_REPS:-5}; fi
BU=${BENCH_USER:-benchuser}
BR=${BENCH_READER:-benchreader}
PY=/usr/bin/python3   # the system python: a pyenv shim under /root is not usable by benchuser
[ "$(id -u)" -eq 0 ] || { echo "bench_folders.sh: run as root" >&2; exit 2; }
[ -x "$FOGVAULT" ] || { echo "bench_folders.sh: $FOGVAULT not built" >&2; exit 2; }
id "$BU" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$BU"
id "$BR" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$BR"
W=$(mktemp -d /var/tmp/fvfolders.XXXXXX)
chmod 755 "$W"
export FOGVAULT_PASSPHRASE=bench FOGVAULT_ADMIN_PASSPHRASE=bench-admin
PIDS=()
cleanup() {
    local m
    for m in "$W/a/mnt" "$W/b/mnt"; do
        if mountpoint -q "$m" 2>/dev/null; then umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
    done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
as() { setpriv --reuid "$BU" --regid "$BU" --init-groups -- "$@"; }
as_reader() { setpriv --reuid "$BR" --regid "$BR" --init-groups -- "$@"; }
mount_fv() {   # DIR
    mkdir -p "$1/mnt"
    "$FOGVAULT" mount --repo "$1/repo" --cache "$1/cache" --allow-other ${WALK_CHECK:+--walk-check "$WALK_CHECK"} "$1/mnt" 2>"$1/log" &
    PIDS+=($!)
    for _ in $(seq 100); do mountpoint -q "$1/mnt" && return 0; sleep 0.1; done
    cat "$1/log" >&2; echo "bench_folders.sh: $1/mnt did not come up" >&2; exit 1
}

# a: folders and a session; b: no admin authority
mkdir -p "$W/a" "$W/b"
"$FOGVAULT" init --repo "$W/a/repo" --admin-key "$W/admin.key" >/dev/null
adm() { "$FOGVAULT" admin "$@" --repo "$W/a/repo" --admin-key "$W/admin.key" >/dev/null; }
FOGVAULT_KEY_PASSPHRASE=bench-user adm user add "$BU" --role physician --key-out "$W/$BU.key"
chown "$BU" "$W/$BU.key"
adm folder create cardiology
adm grant --user "$BU" --folder cardiology --rights rw
FOGVAULT_KEY_PASSPHRASE=bench-reader adm user add "$BR" --role nurse --key-out "$W/$BR.key"
chown "$BR" "$W/$BR.key"
adm grant --user "$BR" --folder cardiology --rights r
# Each round's directory is a "patient" to the insider monitor: a fast run
# would read a department's worth per minute and be locked out. The monitor
# still runs (its cost is part of the check); it just never fires.
adm alerts set --max-patients 1000000 --bulk-patients 1000000 --max-mib-per-min 1000000
"$FOGVAULT" init --repo "$W/b/repo" >/dev/null
mount_fv "$W/a"
mount_fv "$W/b"
for m in "$W/a/mnt" "$W/b/mnt"; do mkdir "$m/plain"; chmod 0777 "$m/plain"; done
as env FOGVAULT_KEY_PASSPHRASE=bench-user "$FOGVAULT" login --mount "$W/a/mnt" --key "$W/$BU.key" >/dev/null
as_reader env FOGVAULT_KEY_PASSPHRASE=bench-reader "$FOGVAULT" login --mount "$W/a/mnt" --key "$W/$BR.key" >/dev/null
declare -A DIR=([folder]=$W/a/mnt/cardiology [root]=$W/a/mnt/plain [nofolders]=$W/b/mnt/plain)

cat >"$W/wl.py" <<'EOF'
import os, sys, time
phase, d, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
names = [os.path.join(d, "f%05d.dat" % i) for i in range(n)]
if phase == "create":
    os.mkdir(d)
    data = [os.urandom(size) for _ in range(n)]   # fresh per run: nothing deduplicates
    t0 = time.perf_counter()
    for p, b in zip(names, data):
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, b)
        os.close(fd)
elif phase == "read":
    t0 = time.perf_counter()
    for p in names:
        fd = os.open(p, os.O_RDONLY)
        got = 0
        while b := os.read(fd, 1 << 20):
            got += len(b)
        os.close(fd)
        if got != size:
            sys.exit(f"{p}: read {got} bytes")
elif phase == "open":
    t0 = time.perf_counter()
    for p in names:
        os.close(os.open(p, os.O_RDONLY))
elif phase == "clean":
    for p in names:
        os.unlink(p)
    os.rmdir(d)
    sys.exit(0)
print("%.6f" % (time.perf_counter() - t0))
EOF
chmod 644 "$W/wl.py"

PLACES=(folder root nofolders)
PHASES=(create cold warm open other)
WARM_REPEAT=3     # warm phases are short: run each this many times per round
declare -A T=()   # place/phase -> space-separated seconds (one per measurement)
declare -A R=()   # phase -> per-round ratios folder/root (paired: same round, back to back)
declare -A RN=()  # phase -> per-round ratios root/nofolders
declare -A RF=()  # phase -> per-round ratios folder/nofolders (the issue's comparison)
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
wl() { as "$PY" "$W/wl.py" "$@" "$SIZE"; }
# The places run back to back for each phase (rotating order per round) so a
# paired ratio compares measurements a second apart: the host may be shared.
echo "bench_folders: $NFILES files x $SIZE B, $REPS rounds, as $BU" >&2
for r in $(seq 1 "$REPS"); do
    order=()
    for k in 0 1 2; do order+=("${PLACES[$(( (k + r) % 3 ))]}"); done
    declare -A S=()   # place/phase -> sum of this round's seconds
    for place in "${order[@]}"; do
        drop_caches
        t=$(wl create "${DIR[$place]}/run$r" "$NFILES"); T[$place/create]+=" $t"; S[$place/create]=$t
    done
    for place in "${order[@]}"; do
        drop_caches
        t=$(wl read "${DIR[$place]}/run$r" "$NFILES"); T[$place/cold]+=" $t"; S[$place/cold]=$t
    done
    for place in "${order[@]}"; do
        drop_caches
        t=$(as_reader "$PY" "$W/wl.py" read "${DIR[$place]}/run$r" "$NFILES" "$SIZE"); T[$place/other]+=" $t"; S[$place/other]=$t
    done
    for ph in warm open; do
        for place in "${order[@]}"; do S[$place/$ph]=0; done
        for _ in $(seq "$WARM_REPEAT"); do
            for place in "${order[@]}"; do
                t=$(wl "${ph/warm/read}" "${DIR[$place]}/run$r" "$NFILES"); T[$place/$ph]+=" $t"
                S[$place/$ph]=$(awk -v a="${S[$place/$ph]}" -v b="$t" 'BEGIN {print a + b}')
            done
        done
    done
    for ph in "${PHASES[@]}"; do
        R[$ph]+=" $(awk -v a="${S[folder/$ph]}" -v b="${S[root/$ph]}" 'BEGIN {print a / b}')"
        RN[$ph]+=" $(awk -v a="${S[root/$ph]}" -v b="${S[nofolders/$ph]}" 'BEGIN {print a / b}')"
        RF[$ph]+=" $(awk -v a="${S[folder/$ph]}" -v b="${S[nofolders/$ph]}" 'BEGIN {print a / b}')"
    done
    for place in "${order[@]}"; do wl clean "${DIR[$place]}/run$r" "$NFILES"; done
    unset S
    echo "  round $r done" >&2
done
# Still logged in and nothing leaked to root: the folder run really went through the gate.
if ls "${DIR[folder]}" >/dev/null 2>&1; then echo "bench_folders.sh: root can list the vault folder" >&2; exit 1; fi

med() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
us() { awk -v s="$1" -v n="$NFILES" 'BEGIN {printf "%.0f", s/n*1e6}'; }     # seconds -> µs per file
rt() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
declare -A M=()
for p in "${PLACES[@]}"; do for ph in "${PHASES[@]}"; do M[$p/$ph]=$(med "${T[$p/$ph]}"); done; done
label() { case "$1" in create) echo "create + write + close";; cold) echo "open + read + close, kernel caches dropped";;
                      warm) echo "open + read + close, warm";; open) echo "open + close, warm";;
                      other) echo "open + read + close by another user, caches dropped";; esac; }
table=$(
    echo "| per file | folder µs | root dir µs | no-folders mount µs | folder / no-folders | geometric mean [95% CI] | folder / root | root / no-folders |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for ph in "${PHASES[@]}"; do
        f=${M[folder/$ph]} r=${M[root/$ph]} n=${M[nofolders/$ph]}
        echo "| $(label "$ph") | $(us "$f") | $(us "$r") | $(us "$n") | $(rt "$(med "${RF[$ph]}")" 1) | $("$PY" scripts/bench_stats.py ${RF[$ph]}) | $(rt "$(med "${R[$ph]}")" 1) | $(rt "$(med "${RN[$ph]}")" 1) |"
    done
)
raw=$(for p in "${PLACES[@]}"; do for ph in "${PHASES[@]}"; do echo "  $p $ph s:${T[$p/$ph]}"; done; done
      for ph in "${PHASES[@]}"; do echo "  ratio folder/root $ph per round:${R[$ph]}"; done
      for ph in "${PHASES[@]}"; do echo "  ratio root/nofolders $ph per round:${RN[$ph]}"; done
      for ph in "${PHASES[@]}"; do echo "  ratio folder/nofolders $ph per round:${RF[$ph]}"; done)
echo "$table"
echo "raw seconds per run ($NFILES files):"
echo "$raw"
mkdir -p "$OUT"
{
    printf '\n## Vault-folder permission check (issue 4)\n\n'
    printf '`scripts/bench_folders.sh`: %s files of %s bytes, as the unix user %s (logged in, rw grant), %s rounds interleaved; walk check: %s.\n' "$NFILES" "$SIZE" "$BU" "$REPS" "${WALK_CHECK:-default}"
    printf 'folder = inside the vault folder; root dir = a 0777 directory outside folders on the same mount;\n'
    printf 'no-folders mount = the same on a mount of a repository without an admin authority. µs per file: median\n'
    printf 'over all measurements (create, cold and other: 1 per round; warm and open: %s per round). Ratios: median over\n' "$WARM_REPEAT"
    printf 'the rounds of the paired per-round ratio (the places run back to back). Ratio > 1: slower.\n\n'
    echo "$table"
    printf '\n<details><summary>raw seconds per run</summary>\n\n```\n%s\n```\n</details>\n' "$raw"
} >> "$OUT/results.md"
