#!/usr/bin/env bash
# Overhead of the audit trail (issue 6 target: ≤ 5% of throughput), measured as
# two binaries side by side on the same host, interleaved:
#   FOGVAULT_OLD   a build without the audit trail. Default: this source tree built with
#                  `--features bench-no-audit` (the same code, but no file operation is
#                  recorded) into target/bench-no-audit, built here if missing or older
#                  than the sources. Or a build from before the audit trail (e.g. 8db96e3):
#                    git worktree add /tmp/fv-old 8db96e3 && (cd /tmp/fv-old && cargo build --release)
#                    FOGVAULT_OLD=/tmp/fv-old/target/release/fogvault bash scripts/bench_audit.sh
#   FOGVAULT_NEW   a build with it (default: $FOGVAULT, else target/release/fogvault)
#
# Workloads, every measurement on a fresh local-directory repository:
#   1  untar     root folder, as root, mount as in bench.sh (no --admin-key): tar xf of the
#                bench.sh tree (AUDIT_FILES real files, default 20000) + sync + unmount
#                (the clock stops when the daemon has exited: every commit and upload done)
#   2  read      root folder: AUDIT_READ_MB (default 1024) random MiB written (dd bs=1M
#                conv=fsync, reported too), unmount, drop_caches, mount, cold sequential read
#                (cat >/dev/null), then a warm re-read (cat again); checked with cmp afterwards
#   1b reread    after (1): remount + drop_caches, cold re-read of the tree (tar c to a pipe,
#                bench.sh 4b); the same after (3) as benchuser (3c)
#   4  small     root folder: create AUDIT_SMALL_N (default 10000) 100-byte files in one
#                directory, rename them, delete them, each phase ending with fsync of the
#                directory + sync (bench.sh 5a-c)
#   3  folder    init --admin-key, user add, folder create, grant rw, mount --allow-other,
#                `fogvault login` as the unix user benchuser (created if missing): the untar of
#                (1) as benchuser inside the vault folder, + sync + unmount
#   3b folder read  (2) as benchuser inside the vault folder (AUDIT_FOLDER_READ=0 skips it).
#                The new build turns the page cache off inside folders; the insider monitor's
#                MiB/min limit is raised for this (admin alerts set) so that it does not lock
#                the reader.
# AUDIT_ROUNDS rounds (default 3); within a round each workload runs on both binaries back to
# back, old first in odd rounds and new first in even ones. Reported: the median over rounds per
# binary, new/old of those medians, the per-round paired new/old ratios, and their geometric
# mean with a 95% t-interval (the rounds are paired; judge the target by this interval). Rates: higher is
# better; new/old < 1 means the new build is slower (overhead = 1 - new/old).
#
# Other settings: QUICK=1 (2000 files, 100 MiB, 2000 small files), BENCH_DIR (where bench.sh keeps its generated
# inputs, default /var/tmp/fvbench; reused), AUDIT_TREE_TAR / AUDIT_SEQ_SRC (use these inputs),
# AUDIT_OLD_LABEL / AUDIT_NEW_LABEL (column names), BENCH_OUT (default bench-out), KEEP=1.
# Run as root (FUSE, drop_caches, setpriv). Appends a markdown section to $BENCH_OUT/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NEW=${FOGVAULT_NEW:-${FOGVAULT:-$ROOT/target/release/fogvault}}
OLD=${FOGVAULT_OLD:-}
OUT=${BENCH_OUT:-$ROOT/bench-out}
QUICK=${QUICK:-0}
ROUNDS=${AUDIT_ROUNDS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fvbench}
FOLDER_READ=${AUDIT_FOLDER_READ:-1}
BU=${BENCH_USER:-benchuser}
PY=/usr/bin/python3
if [ "$QUICK" = 1 ]; then MODE=quick DEF_FILES=2000 DEF_MB=100 DEF_SMALL=2000; else MODE=full DEF_FILES=20000 DEF_MB=1024 DEF_SMALL=10000; fi
SMALL_N=${AUDIT_SMALL_N:-$DEF_SMALL}
NFILES=${AUDIT_FILES:-$DEF_FILES}
READ_MB=${AUDIT_READ_MB:-$DEF_MB}
LOLD=${AUDIT_OLD_LABEL:-old}
LNEW=${AUDIT_NEW_LABEL:-new}
export FOGVAULT_PASSPHRASE=${FOGVAULT_PASSPHRASE:-fvbench-passphrase} FOGVAULT_ADMIN_PASSPHRASE=bench-admin

die() { echo "bench_audit.sh: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "run as root"
if [ -z "$OLD" ]; then
    OLD=$ROOT/target/bench-no-audit/release/fogvault
    LOLD=${AUDIT_OLD_LABEL:-no-audit} LNEW=${AUDIT_NEW_LABEL:-audit}
    # cargo rebuilds only what changed; the log says how the baseline was made.
    cargo build --release --features bench-no-audit --target-dir "$ROOT/target/bench-no-audit" >&2 \
        || die "building the bench-no-audit baseline failed"
fi
[ -x "$OLD" ] || die "$OLD not built"
[ -x "$NEW" ] || die "$NEW not built"
command -v setpriv >/dev/null || die "missing setpriv"
id "$BU" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$BU"
declare -A BIN=([old]=$OLD [new]=$NEW)
source "$ROOT/scripts/bench_tree.sh"

W=$(mktemp -d /var/tmp/fvaudit.XXXXXX)
chmod 755 "$W"
LOG=$W/bench_audit.log
PID=""   # the one daemon running
cleanup() {
    local m
    for m in "$W"/*/mnt; do
        if mountpoint -q "$m" 2>/dev/null; then umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
    done
    [ -z "$PID" ] || wait "$PID" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "bench_audit: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }
as() { setpriv --reuid "$BU" --regid "$BU" --init-groups -- "$@"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

# ---------------------------------------------------------------- inputs (bench.sh's, reused)
SRC=$BENCH_DIR/src-$MODE
mkdir -p "$SRC"
TREE_TAR=${AUDIT_TREE_TAR:-$SRC/tree_${NFILES}.tar}
if [ ! -f "$TREE_TAR" ]; then
    # the same tree as bench.sh 4a (scripts/bench_tree.sh)
    log "building $TREE_TAR from real files"
    make_tree_tar "$TREE_TAR" "$NFILES" "$LOG" || die "building the tarball failed"
fi
TREE_N=$(tar tvf "$TREE_TAR" | awk '$1 ~ /^-/' | wc -l)
TREE_MB=$(( $(stat -c %s "$TREE_TAR") >> 20 ))
SEQ_SRC=${AUDIT_SEQ_SRC:-$SRC/rand_${READ_MB}M}
if [ ! -f "$SEQ_SRC" ] || [ "$(stat -c %s "$SEQ_SRC")" -ne $((READ_MB << 20)) ]; then
    [ -z "${AUDIT_SEQ_SRC:-}" ] || die "$SEQ_SRC is not $READ_MB MiB"
    log "generating $SEQ_SRC"
    head -c $((READ_MB << 20)) /dev/urandom >"$SEQ_SRC.tmp" && mv "$SEQ_SRC.tmp" "$SEQ_SRC"
fi
# benchuser reads the inputs too (folder workloads)
as test -r "$TREE_TAR" && as test -r "$SEQ_SRC" || {
    cp "$TREE_TAR" "$W/tree.tar"; cp "$SEQ_SRC" "$W/seq.bin"; chmod 644 "$W/tree.tar" "$W/seq.bin"
    TREE_TAR=$W/tree.tar SEQ_SRC=$W/seq.bin
}

# ---------------------------------------------------------------- one repository per measurement
setup() {   # KIND DIR FOLDER(0|1): fresh repository (with folder, user, grant when FOLDER=1)
    local k=$1 d=$2 f=$3 b=${BIN[$1]}
    rm -rf "$d"; mkdir -p "$d/mnt"
    if [ "$f" = 0 ]; then
        "$b" init --repo "$d/repo" >>"$LOG" 2>&1
        return
    fi
    "$b" init --repo "$d/repo" --admin-key "$d/admin.key" >>"$LOG" 2>&1
    adm() { "$b" admin "$@" --repo "$d/repo" --admin-key "$d/admin.key" >>"$LOG" 2>&1; }
    FOGVAULT_KEY_PASSPHRASE=bench-user adm user add "$BU" --role physician --key-out "$d/$BU.key"
    chown "$BU" "$d/$BU.key"
    adm folder create cardiology
    adm grant --user "$BU" --folder cardiology --rights rw
    # the insider monitor would lock a reader past 2 GiB/min (3b reads the file twice)
    if [ "$k" = new ] && "$b" admin alerts set --help >/dev/null 2>&1; then
        adm alerts set --max-mib-per-min 1000000
    fi
}
mount_fv() {   # KIND DIR FOLDER
    local k=$1 d=$2 f=$3 opt=()
    [ "$f" = 1 ] && opt=(--allow-other)
    "${BIN[$k]}" mount --repo "$d/repo" --cache "$d/cache" "${opt[@]}" "$d/mnt" >>"$d/daemon.log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        mountpoint -q "$d/mnt" && break
        kill -0 "$PID" 2>/dev/null || { cat "$d/daemon.log" >&2; die "$k daemon for $d exited"; }
        sleep 0.1
    done
    mountpoint -q "$d/mnt" || { cat "$d/daemon.log" >&2; die "$d/mnt did not come up"; }
    if [ "$f" = 1 ]; then
        as env FOGVAULT_KEY_PASSPHRASE=bench-user "${BIN[$k]}" login --mount "$d/mnt" --key "$d/$BU.key" >>"$LOG" 2>&1
    fi
}
cpu_now() {   # user+system CPU seconds of the running daemon so far
    local t
    t=$(awk '{print $14 + $15}' "/proc/$PID/stat" 2>/dev/null || echo 0)
    awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
}
CPU=0
umount_fv() {   # DIR: unmount, wait for the daemon; CPU = its user+system seconds just before
    local d=$1 i rc=0
    CPU=$(cpu_now)
    for i in $(seq 10); do
        umount "$d/mnt" 2>>"$LOG" && break
        [ "$i" = 10 ] && die "cannot unmount $d/mnt"
        sleep 1
    done
    wait "$PID" || rc=$?
    PID=""
    [ "$rc" -eq 0 ] || log "WARNING: daemon for $d exited with status $rc (see $d/daemon.log)"
}
run_as() {   # FOLDER CMD...: as root, or as benchuser for the folder workloads
    if [ "$1" = 1 ]; then shift; as "$@"; else shift; "$@"; fi
}
place() {   # DIR FOLDER: where the workload writes
    if [ "$2" = 1 ]; then echo "$1/mnt/cardiology"; else echo "$1/mnt"; fi
}

declare -A V=()     # workload/kind -> space-separated values, one per round
declare -A PR=()    # workload -> space-separated per-round new/old ratios
declare -A X=()     # workload/kind/round -> value (for the paired ratio)
declare -A ALOG=()  # workload -> audit log bytes of the new build per round
put() { V[$1/$2]+=" $4"; X[$1/$2/$3]=$4; log "round $3 $2 $1 = $4"; }

w_untar() {   # KIND ROUND FOLDER
    local k=$1 r=$2 f=$3 d w t0 s n
    w=$([ "$f" = 1 ] && echo funtar || echo untar)
    d=$W/$k-$w
    setup "$k" "$d" "$f"
    mount_fv "$k" "$d" "$f"
    run_as "$f" mkdir "$(place "$d" "$f")/tree"
    drop_caches
    t0=$(now)
    run_as "$f" tar xf "$TREE_TAR" -C "$(place "$d" "$f")/tree" 2>>"$LOG" || die "$k: tar xf failed (round $r, $w)"
    sync
    umount_fv "$d"
    s=$(since "$t0")
    put "$w" "$k" "$r" "$(awk -v n="$TREE_N" -v s="$s" 'BEGIN {printf "%.1f", n / s}')"
    put "${w}cpu" "$k" "$r" "$CPU"
    [ "$k" = new ] && ALOG[$w]+=" $(stat -c %s "$d/cache/audit/log" 2>/dev/null || echo 0)"
    drop_caches
    mount_fv "$k" "$d" "$f"
    t0=$(now)
    # GNU tar skips reading file data when the archive is /dev/null, hence the pipe.
    run_as "$f" tar cf - -C "$(place "$d" "$f")/tree" . | cat >/dev/null
    put "${w}read" "$k" "$r" "$(awk -v n="$TREE_N" -v s="$(since "$t0")" 'BEGIN {printf "%.1f", n / s}')"
    if [ "$r" = 1 ]; then   # every file there after the remount (first round only: it costs a tree walk)
        n=$(run_as "$f" find "$(place "$d" "$f")/tree" -type f | wc -l)
        [ "$n" -eq "$TREE_N" ] || die "$k: $n files after the untar, expected $TREE_N ($w)"
    fi
    umount_fv "$d"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
}

w_read() {   # KIND ROUND FOLDER
    local k=$1 r=$2 f=$3 d w t0 p mb=$READ_MB
    w=$([ "$f" = 1 ] && echo fread || echo read)
    d=$W/$k-$w
    setup "$k" "$d" "$f"
    mount_fv "$k" "$d" "$f"
    p=$(place "$d" "$f")/big
    drop_caches
    t0=$(now)
    run_as "$f" dd if="$SEQ_SRC" of="$p" bs=1M conv=fsync status=none
    put "${w}w" "$k" "$r" "$(awk -v m="$mb" -v s="$(since "$t0")" 'BEGIN {printf "%.1f", m / s}')"
    umount_fv "$d"
    drop_caches
    mount_fv "$k" "$d" "$f"
    t0=$(now)
    run_as "$f" cat "$p" >/dev/null
    put "${w}c" "$k" "$r" "$(awk -v m="$mb" -v s="$(since "$t0")" 'BEGIN {printf "%.1f", m / s}')"
    t0=$(now)
    run_as "$f" cat "$p" >/dev/null
    put "${w}h" "$k" "$r" "$(awk -v m="$mb" -v s="$(since "$t0")" 'BEGIN {printf "%.1f", m / s}')"
    put "${w}cpu" "$k" "$r" "$(cpu_now)"
    run_as "$f" cmp -s "$SEQ_SRC" "$p" || die "$k: $p reads back different bytes ($w)"
    umount_fv "$d"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
}

w_small() {   # KIND ROUND: create, rename, delete SMALL_N small files in one directory
    local k=$1 r=$2 d=$W/$1-small out
    setup "$k" "$d" 0
    mount_fv "$k" "$d" 0
    out=$("$PY" - "$d/mnt/small" "$SMALL_N" <<'PYEOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
def durable():
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    os.sync()
a = [os.path.join(d, "f%06d" % i) for i in range(n)]
b = [os.path.join(d, "g%06d" % i) for i in range(n)]
durable()
t = [time.perf_counter()]
for p in a:
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100)
    os.close(fd)
durable(); t.append(time.perf_counter())
for x, y in zip(a, b):
    os.rename(x, y)
durable(); t.append(time.perf_counter())
for y in b:
    os.unlink(y)
durable(); t.append(time.perf_counter())
assert not os.listdir(d)
print(" ".join("%.1f" % (n / (t[i + 1] - t[i])) for i in range(3)))
PYEOF
) || die "$k: small-file operations failed (round $r)"
    read -r c rn dl <<<"$out"
    put smallc "$k" "$r" "$c"
    put smallr "$k" "$r" "$rn"
    put smalld "$k" "$r" "$dl"
    umount_fv "$d"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
}

WL=(untar read small)
[ "${AUDIT_FOLDER:-1}" = 1 ] && WL+=(funtar)
[ "${AUDIT_FOLDER:-1}" = 1 ] && [ "$FOLDER_READ" = 1 ] && WL+=(fread)
log "bench_audit: $ROUNDS rounds; tree $TREE_N files ($TREE_MB MiB); read $READ_MB MiB; old $OLD; new $NEW; work $W"
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order=(old new); else order=(new old); fi
    for wl in "${WL[@]}"; do
        for k in "${order[@]}"; do
            case $wl in
                untar) w_untar "$k" "$r" 0 ;;
                funtar) w_untar "$k" "$r" 1 ;;
                read) w_read "$k" "$r" 0 ;;
                small) w_small "$k" "$r" ;;
                fread) w_read "$k" "$r" 1 ;;
            esac
        done
    done
    log "round $r done (load average $(cut -d' ' -f1-3 /proc/loadavg))"
done

# ---------------------------------------------------------------- report
med() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
rt() { awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 > 0) printf "%.3f", a / b; else print "n/a"}'; }
gci() { "$PY" "$ROOT/scripts/bench_stats.py" "$@"; }   # geometric mean [95% CI] of paired ratios
ROWS=()
row() { ROWS+=("$1|$2|$3"); }
row untar "1. untar $TREE_N files ($TREE_MB MiB) + sync + unmount, root folder, as root" files/s
row untarcpu "1'. daemon CPU during 1 (user+system; lower is better)" "CPU s"
row untarread "1b. cold re-read of the tree after remount (tar c to a pipe), root folder" files/s
row readw "2a. write $READ_MB MiB (dd bs=1M conv=fsync), root folder" MiB/s
row readc "2b. cold sequential read after remount + drop_caches (cat), root folder" MiB/s
row readh "2c. warm re-read (cat), root folder" MiB/s
row readcpu "2'. daemon CPU during 2b + 2c (lower is better)" "CPU s"
row smallc "4a. create $SMALL_N x 100 B files in one dir (+fsync dir, sync), root folder" ops/s
row smallr "4b. rename them (+fsync dir, sync)" ops/s
row smalld "4c. delete them (+fsync dir, sync)" ops/s
if [[ " ${WL[*]} " == *" funtar "* ]]; then
    row funtar "3. untar $TREE_N files + sync + unmount inside a vault folder, logged-in $BU" files/s
    row funtarcpu "3'. daemon CPU during 3 (lower is better)" "CPU s"
    row funtarread "3c. cold re-read of the tree inside the vault folder" files/s
fi
if [[ " ${WL[*]} " == *" fread "* ]]; then
    row freadw "3b-a. write $READ_MB MiB (dd conv=fsync) inside the vault folder" MiB/s
    row freadc "3b-b. cold sequential read inside the vault folder" MiB/s
    row freadh "3b-c. warm re-read inside the vault folder" MiB/s
    row freadcpu "3b'. daemon CPU during 3b-b + 3b-c (lower is better)" "CPU s"
fi
table=$(
    echo "| workload | unit | $LOLD (median) | $LNEW (median) | **$LNEW / $LOLD** (medians) | median of per-round $LNEW / $LOLD | geometric mean of per-round $LNEW / $LOLD [95% CI] | per-round $LNEW / $LOLD |"
    echo "|---|---|---:|---:|---:|---:|---:|---|"
    for line in "${ROWS[@]}"; do
        IFS='|' read -r key label unit <<<"$line"
        pr=""
        for r in $(seq "$ROUNDS"); do
            pr+="$(rt "${X[$key/new/$r]:-0}" "${X[$key/old/$r]:-0}") "
        done
        mo=$(med "${V[$key/old]:-}") mn=$(med "${V[$key/new]:-}")
        echo "| $label | $unit | $mo | $mn | **$(rt "$mn" "$mo")** | $(rt "$(med "$pr")" 1) | $(gci $pr) | ${pr% } |"
    done
)
raw=$(
    for line in "${ROWS[@]}"; do
        IFS='|' read -r key _ unit <<<"$line"
        echo "$key $unit: $LOLD${V[$key/old]:-} | $LNEW${V[$key/new]:-}"
    done
    for key in untar funtar; do
        if [ -n "${ALOG[$key]:-}" ]; then echo "audit log bytes after $key ($LNEW):${ALOG[$key]}"; fi
    done
)
echo "$table"
echo "$raw"
mkdir -p "$OUT"
{
    printf '\n## Audit overhead (issue 6)\n\n'
    printf '`scripts/bench_audit.sh` (%s UTC): %s rounds, each workload on both binaries back to back\n' "$(date -u +%FT%H:%M)" "$ROUNDS"
    printf '(old first in odd rounds), fresh local-directory repository per measurement. %s = `%s`\n' "$LOLD" "$OLD"
    printf '(built %s), %s = `%s` (built %s). Host: %s cores, load average at the end %s.\n' \
        "$(date -r "$OLD" '+%F %T')" "$LNEW" "$NEW" "$(date -r "$NEW" '+%F %T')" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'Rates, higher is better; %s / %s < 1 means the audit build is slower (target: ≥ 0.95). Daemon CPU\n' "$LNEW" "$LOLD"
    printf '(utime+stime from /proc, read just before the unmount; lower is better): %s / %s > 1 means more CPU.\n\n' "$LNEW" "$LOLD"
    echo "$table"
    printf '\n<details><summary>raw values per round</summary>\n\n```\n%s\n```\n</details>\n' "$raw"
} >>"$OUT/results.md"
