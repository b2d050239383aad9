#!/usr/bin/env bash
# Side-by-side benchmark: plain disk vs fogvault vs gocryptfs, one run, same data, same disk.
# Heavy (several GiB of I/O, ~30-60 min); NOT part of CI. Run as root (FUSE mounts, drop_caches).
#
#   scripts/deps.sh bench s3 && cargo build --release && scripts/bench.sh
#
# Environment:
#   QUICK=1          shrink every size ~10x (smoke run, a few minutes)
#   BENCH_DIR=DIR    work area on a real disk, not tmpfs (default /var/tmp/fvbench)
#   FOGVAULT=PATH    binary (default target/release/fogvault)
#   OP_TIMEOUT=SEC   per measured operation (default 1800); a timeout is reported as FAIL
#   KEEP=1           keep the run directory (the generated source data is always kept for reuse)
#   LOGIN_RUNS=N     login-to-first-byte iterations (scripts/bench_login.sh; default 20, QUICK 10)
#   FOLDER_FILES=N, FOLDER_REPS=N   scripts/bench_folders.sh (default 2000 files, 5 rounds; QUICK 3 rounds)
#   EXTRAS=0         only the workloads above (skip login, folders, audit and S3 benchmarks)
#   AUDIT_ROUNDS, AUDIT_FILES, AUDIT_READ_MB   scripts/bench_audit.sh: the audit trail's overhead, FOGVAULT
#                    against the same code built with --features bench-no-audit (or FOGVAULT_OLD=PATH)
# Output: a table on stdout and bench-out/results.md (markdown); a detailed log in bench-out/bench.log.
#
# Notes on method: every measured write ends durable (dd conv=fsync, or a trailing sync), so the
# page cache of plain/gocryptfs does not flatter them against fogvault's commit-on-close. Cold reads
# unmount/remount the FUSE file system and drop the kernel caches first. Numbers from one run on a
# shared machine are noisy; look at ratios of 2x and more, not at 10%.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FOGVAULT=${FOGVAULT:-$ROOT/target/release/fogvault}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fvbench}
QUICK=${QUICK:-0}
OP_TIMEOUT=${OP_TIMEOUT:-1800}
OUT=$ROOT/bench-out
export FOGVAULT_PASSPHRASE=${FOGVAULT_PASSPHRASE:-fvbench-passphrase}
export RESTIC_PASSWORD=$FOGVAULT_PASSPHRASE

[ "$(id -u)" -eq 0 ] || { echo "bench.sh: run as root (FUSE mounts, drop_caches)" >&2; exit 2; }
for t in gocryptfs restic python3 fusermount3 mountpoint timeout; do
    command -v "$t" >/dev/null || { echo "bench.sh: missing $t (run scripts/deps.sh bench)" >&2; exit 2; }
done
[ -x "$FOGVAULT" ] || { echo "bench.sh: $FOGVAULT not built (cargo build --release)" >&2; exit 2; }
case "$(stat -f -c %T "$(dirname "$BENCH_DIR")")" in
    tmpfs|ramfs) echo "bench.sh: $BENCH_DIR is on tmpfs; use a real disk (BENCH_DIR=...)" >&2; exit 2 ;;
esac

if [ "$QUICK" = 1 ]; then
    SEQ_MB=100 TREE_FILES=2000 SMALL_N=1000 MIX_PY=430 MIX_RAND=8 MIX_RAND_MAXKB=4096
    BIG_MB=10 RSS_BIG_MB=400 MANY_FILES=10000 MODE=quick
else
    SEQ_MB=1024 TREE_FILES=20000 SMALL_N=10000 MIX_PY=100000 MIX_RAND=24 MIX_RAND_MAXKB=16384
    BIG_MB=100 RSS_BIG_MB=4096 MANY_FILES=100000 MODE=full
fi

SRC=$BENCH_DIR/src-$MODE          # generated inputs, reused across runs
RUN=$BENCH_DIR/run                # file systems under test, wiped per run
LOG=$OUT/bench.log
PY=$RUN/fvb.py
mkdir -p "$OUT" "$SRC"
: >"$LOG"

log() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }
source "$ROOT/scripts/bench_tree.sh"

# ---------------------------------------------------------------- mounts and cleanup
declare -A PIDS=()      # mount dir -> daemon pid (fogvault and gocryptfs run in the foreground)
declare -A MOUNTED=()   # mount dir -> 1

cleanup() {
    local m
    for m in "${!MOUNTED[@]}"; do
        mountpoint -q "$m" 2>/dev/null && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    local p
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && { sleep 1; kill "$p" 2>/dev/null || true; }
    done
    if [ "${KEEP:-0}" != 1 ] && [ -d "$RUN" ]; then
        rm -rf "$RUN" 2>/dev/null || log "could not remove $RUN"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_mounted() {   # DIR PID LOGFILE
    local i
    for i in $(seq 1 300); do
        mountpoint -q "$1" && return 0
        kill -0 "$2" 2>/dev/null || { cat "$3" >&2; echo "bench.sh: mount daemon for $1 exited" >&2; exit 1; }
        sleep 0.1
    done
    cat "$3" >&2; echo "bench.sh: $1 did not come up" >&2; exit 1
}

fs_mount() {   # KIND DIR  (KIND: plain|fv|gc); DIR holds repo/cache/mnt or cipher/mnt or data
    local kind=$1 d=$2 p
    case "$kind" in
        plain) return 0 ;;
        fv) "$FOGVAULT" mount --repo "$d/repo" --cache "$d/cache" "$d/mnt" >>"$d/daemon.log" 2>&1 & p=$! ;;
        gc) gocryptfs -fg -q -passfile "$RUN/passfile" "$d/cipher" "$d/mnt" >>"$d/daemon.log" 2>&1 & p=$! ;;
    esac
    PIDS[$d/mnt]=$p
    MOUNTED[$d/mnt]=1
    wait_mounted "$d/mnt" "$p" "$d/daemon.log"
}

fs_umount() {   # KIND DIR: unmount and wait until the daemon has exited (fogvault commits on exit)
    local kind=$1 d=$2 i rc=0
    [ "$kind" = plain ] && return 0
    for i in 1 2 3 4 5 6 7 8 9 10; do
        umount "$d/mnt" 2>>"$LOG" && break
        [ "$i" = 10 ] && { echo "bench.sh: cannot unmount $d/mnt" >&2; exit 1; }
        sleep 1
    done
    wait "${PIDS[$d/mnt]}" || rc=$?
    unset "MOUNTED[$d/mnt]"
    [ "$rc" -eq 0 ] || log "WARNING: $kind daemon for $d exited with status $rc (see $d/daemon.log)"
}

fs_init() {   # KIND DIR
    local kind=$1 d=$2
    mkdir -p "$d"
    case "$kind" in
        plain) mkdir -p "$d/mnt" ;;
        fv) mkdir -p "$d/mnt"; "$FOGVAULT" init --repo "$d/repo" >>"$LOG" 2>&1 ;;
        gc) mkdir -p "$d/mnt" "$d/cipher"; gocryptfs -init -q -passfile "$RUN/passfile" "$d/cipher" >>"$LOG" 2>&1 ;;
    esac
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

cold_remount() {   # KIND DIR: unmount, drop every cache, mount again
    fs_umount "$1" "$2"
    drop_caches
    fs_mount "$1" "$2"
}

fv_stat() {   # DIR FIELD (daemon must be stopped)
    "$FOGVAULT" stats --repo "$1/repo" --cache "$1/cache" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

du_b() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k/1024}'; }

# ---------------------------------------------------------------- measuring and results
ELAPSED=""
measure() {   # CMD...: run under timeout, set ELAPSED (s); returns non-zero on failure
    local t0 t1 rc=0
    echo "+ $*" >>"$LOG"
    t0=$(date +%s.%N)
    timeout "$OP_TIMEOUT" "$@" >>"$LOG" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b-a}')
    echo "  -> rc=$rc ${ELAPSED}s" >>"$LOG"
    if [ "$rc" -ne 0 ]; then
        log "FAILED (rc=$rc$([ "$rc" = 124 ] && echo ', timeout' || true)) after ${ELAPSED}s: $*"
        return 1
    fi
}
per_s() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.1f", (s > 0 ? n/s : 0)}'; }   # N SECONDS
mb_s() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.1f", (s > 0 ? n/1048576/s : 0)}'; }

declare -A RES=()
ROWS=()
row() { ROWS+=("$1|$2|$3"); }           # KEY LABEL UNIT   (registers a row of the main table)
res() { RES[$1/$2]=$3; log "result $1 $2 = $3"; }   # KEY TARGET VALUE
get() { echo "${RES[$1/$2]:-n/a}"; }
ratio() {   # ratio A B [DIGITS]
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b+0 > 0) printf "%.*f", d, a/b; else printf "-" }'
}

TARGETS=(plain fv gc)
declare -A TDIR=([plain]=$RUN/plain [fv]=$RUN/fv [gc]=$RUN/gc)
mnt() { echo "${TDIR[$1]}/mnt"; }

# ---------------------------------------------------------------- python helpers
write_py() {
cat >"$PY" <<'EOF'
import os, sys, time, random

def durable(d):
    # sync(1) does not reach a FUSE daemon; fsync of the directory makes its
    # namespace changes durable on every file system (fogvault batches them).
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    os.sync()

def smallops(d, n):
    os.makedirs(d, exist_ok=True)
    data = b"x" * 100
    a = [os.path.join(d, "f%06d" % i) for i in range(n)]
    b = [os.path.join(d, "g%06d" % i) for i in range(n)]
    os.sync()  # untimed: start without other dirty data
    t0 = time.perf_counter()
    for p in a:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, data)
        os.close(fd)
    durable(d)
    t1 = time.perf_counter()
    for x, y in zip(a, b):
        os.rename(x, y)
    durable(d)
    t2 = time.perf_counter()
    for y in b:
        os.unlink(y)
    durable(d)
    t3 = time.perf_counter()
    left = os.listdir(d)
    assert not left, f"{len(left)} files left"
    print("create %.1f" % (n / (t1 - t0)))
    print("rename %.1f" % (n / (t2 - t1)))
    print("delete %.1f" % (n / (t3 - t2)))

def manyfiles(d, n):
    per = 1000
    os.sync()
    t0 = time.perf_counter()
    for i in range(n):
        sub = os.path.join(d, "d%03d" % (i // per))
        if i % per == 0:
            os.makedirs(sub, exist_ok=True)
        fd = os.open(os.path.join(sub, "f%06d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, b"%d\n" % i * 8)
        os.close(fd)
    durable(d)
    t1 = time.perf_counter()
    c = statall(d, quiet=True)
    t2 = time.perf_counter()
    assert c == n, (c, n)
    print("create %.1f" % (n / (t1 - t0)))
    print("stat %.1f" % (n / (t2 - t1)))

def statall(d, quiet=False):
    t0 = time.perf_counter()
    c = 0
    for root, dirs, files in os.walk(d):
        for f in files:
            os.lstat(os.path.join(root, f))
            c += 1
    if not quiet:
        print("count %d" % c)
        print("stat %.1f" % (c / (time.perf_counter() - t0)))
    return c

def randfiles(d, count, maxkb):
    rnd = random.Random(7)
    os.makedirs(d, exist_ok=True)
    for i in range(count):
        size = rnd.randint(maxkb // 16, maxkb) * 1024
        with open(os.path.join(d, "blob%02d.bin" % i), "wb") as f:
            f.write(os.urandom(size))

def edit(d, fraction):
    # insert 16..4096 random bytes in the middle of `fraction` of the files (seeded choice)
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)
    rnd = random.Random(42)
    pick = rnd.sample(files, max(1, int(len(files) * fraction)))
    for p in pick:
        with open(p, "rb") as f:
            data = f.read()
        mid = len(data) // 2
        with open(p, "wb") as f:
            f.write(data[:mid] + os.urandom(rnd.randint(16, 4096)) + data[mid:])
    print("edited %d of %d files" % (len(pick), len(files)))

def insert100(p):
    with open(p, "rb") as f:
        data = f.read()
    mid = len(data) // 2
    with open(p, "wb") as f:
        f.write(data[:mid] + os.urandom(100) + data[mid:])
        f.flush()
        os.fsync(f.fileno())

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "smallops": smallops(args[0], int(args[1]))
elif cmd == "manyfiles": manyfiles(args[0], int(args[1]))
elif cmd == "statall": statall(args[0])
elif cmd == "randfiles": randfiles(args[0], int(args[1]), int(args[2]))
elif cmd == "edit": edit(args[0], float(args[1]))
elif cmd == "insert100": insert100(args[0])
else: sys.exit("unknown " + cmd)
EOF
}

pyout() {   # KEY CMD...: run the python helper under timeout, print the value for KEY
    local key=$1 out rc=0; shift
    echo "+ fvb.py $*" >>"$LOG"
    out=$(timeout "$OP_TIMEOUT" python3 "$PY" "$@" 2>>"$LOG") || rc=$?
    echo "$out" >>"$LOG"
    [ "$rc" -eq 0 ] || { log "FAILED (rc=$rc) fvb.py $*"; return 1; }
    PYOUT=$out
}
pyget() { awk -v k="$1" '$1 == k {print $2}' <<<"$PYOUT"; }

# ---------------------------------------------------------------- inputs (generated once per mode)
prepare_inputs() {
    local f=$SRC/rand_${SEQ_MB}M
    if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" -ne $((SEQ_MB * 1048576)) ]; then
        log "generating $f"
        head -c $((SEQ_MB * 1048576)) /dev/urandom >"$f.tmp" && mv "$f.tmp" "$f"
    fi
    SEQ_SRC=$f

    TREE_TAR=$SRC/tree_${TREE_FILES}.tar
    if [ ! -f "$TREE_TAR" ]; then
        log "building $TREE_TAR from real files"
        make_tree_tar "$TREE_TAR" "$TREE_FILES" "$LOG" || exit 1
    fi
    TREE_N=$(tar tvf "$TREE_TAR" | awk '$1 ~ /^-/' | wc -l)
    TREE_BYTES=$(stat -c %s "$TREE_TAR")

    MIX=$SRC/mixed
    if [ ! -f "$MIX/.done" ]; then
        log "building the mixed dataset in $MIX"
        rm -rf "$MIX"; mkdir -p "$MIX/v1/real"
        local py
        py=$(ls -d /usr/lib/python3.[0-9]* | sort -V | tail -1)
        find "$py" -type f -readable | sort | sed -n "1,${MIX_PY}p" >"$SRC/mix.list"
        tar cf - -T "$SRC/mix.list" 2>>"$LOG" | tar xf - -C "$MIX/v1/real"
        python3 "$PY" randfiles "$MIX/v1/random" "$MIX_RAND" "$MIX_RAND_MAXKB"
        cp -a "$MIX/v1" "$MIX/v1copy"
        cp -a "$MIX/v1" "$MIX/v2"
        python3 "$PY" edit "$MIX/v2" 0.05 | tee -a "$LOG"
        touch "$MIX/.done"
    fi
    MIX_FILES=$(find "$MIX/v1" -type f | wc -l)
    MIX_BYTES=$(du_b --apparent-size "$MIX/v1")
    BIG_SRC=$SRC/rand_${BIG_MB}M_b
    [ -f "$BIG_SRC" ] || head -c $((BIG_MB * 1048576)) /dev/urandom >"$BIG_SRC"
}

# ---------------------------------------------------------------- workloads
w_seq() {   # 1-3: sequential write, cold read, second copy
    local t m bytes=$((SEQ_MB * 1048576))
    row seqw "1. seq write ${SEQ_MB} MiB random (dd bs=1M conv=fsync)" MiB/s
    row seqr "2. cold seq read after remount" MiB/s
    row seqw2 "3. second copy of the same data" MiB/s
    for t in "${TARGETS[@]}"; do
        m=$(mnt "$t")
        drop_caches
        if measure dd if="$SEQ_SRC" of="$m/seq1" bs=1M conv=fsync; then
            res seqw "$t" "$(mb_s $bytes "$ELAPSED")"; else res seqw "$t" FAIL; fi
    done
    for t in "${TARGETS[@]}"; do
        m=$(mnt "$t")
        cold_remount "$t" "${TDIR[$t]}"
        if measure dd if="$m/seq1" of=/dev/null bs=1M; then
            res seqr "$t" "$(mb_s $bytes "$ELAPSED")"; else res seqr "$t" FAIL; fi
        cmp -s "$SEQ_SRC" "$m/seq1" || { log "ERROR: $t: seq1 read back differs from the source"; res seqr "$t" CORRUPT; }
    done
    for t in "${TARGETS[@]}"; do
        m=$(mnt "$t")
        drop_caches
        if measure dd if="$SEQ_SRC" of="$m/seq2" bs=1M conv=fsync; then
            res seqw2 "$t" "$(mb_s $bytes "$ELAPSED")"; else res seqw2 "$t" FAIL; fi
    done
    fs_umount fv "${TDIR[fv]}"
    FV_AFTER_SEQ=$(fv_stat "${TDIR[fv]}" stored_bytes)
    fs_mount fv "${TDIR[fv]}"
    log "fogvault stored bytes after two ${SEQ_MB} MiB copies: $FV_AFTER_SEQ"
}

w_tree() {   # 4: untar ~20k real files, cold re-read
    local t m
    row untar "4a. untar ${TREE_N} real files ($(mib $((TREE_BYTES / 1024))) MiB) + fsync dir, sync" files/s
    row tarread "4b. cold re-read (tar c to a pipe) after remount" files/s
    for t in "${TARGETS[@]}"; do
        m=$(mnt "$t")
        mkdir -p "$m/tree"
        drop_caches
        # fsync of the top directory: fogvault batches namespace changes (tar sets
        # directory times last), and sync(1) does not reach FUSE daemons.
        if measure bash -c 'tar xf "$1" -C "$2" && python3 -c "import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))" "$2" && sync' _ "$TREE_TAR" "$m/tree"; then
            res untar "$t" "$(per_s "$TREE_N" "$ELAPSED")"; else res untar "$t" FAIL; fi
    done
    for t in "${TARGETS[@]}"; do
        m=$(mnt "$t")
        cold_remount "$t" "${TDIR[$t]}"
        # GNU tar skips reading file data when the archive is /dev/null, hence the pipe.
        if measure bash -c 'tar cf - -C "$1" tree | cat >/dev/null' _ "$m"; then
            res tarread "$t" "$(per_s "$TREE_N" "$ELAPSED")"; else res tarread "$t" FAIL; fi
        local n
        n=$(find "$m/tree" -type f | wc -l)
        [ "$n" -eq "$TREE_N" ] || log "ERROR: $t: tree has $n files, expected $TREE_N"
    done
}

w_small() {   # 5: create/rename/delete N small files in one directory
    local t m
    row create "5a. create ${SMALL_N} x 100 B files in one dir (+fsync dir, sync)" ops/s
    row rename "5b. rename them (+fsync dir, sync)" ops/s
    row delete "5c. delete them (+fsync dir, sync)" ops/s
    for t in "${TARGETS[@]}"; do
        m=$(mnt "$t")
        if pyout create smallops "$m/small" "$SMALL_N"; then
            res create "$t" "$(pyget create)"; res rename "$t" "$(pyget rename)"; res delete "$t" "$(pyget delete)"
        else
            res create "$t" FAIL; res rename "$t" FAIL; res delete "$t" FAIL
        fi
    done
}

w_storage() {   # 6: stored bytes for v1, v1copy, v2 (fogvault vs restic vs gocryptfs); 100-byte insert
    local fvd=$RUN/fvmix gcd=$RUN/gcmix rr=$RUN/restic step cache=$RUN/restic-cache
    fs_init fv "$fvd"; fs_init gc "$gcd"
    restic -r "$rr" init --repository-version 2 -q >>"$LOG" 2>&1
    local logical=0
    for step in v1 v1copy v2; do
        logical=$((logical + $(du_b --apparent-size "$MIX/$step")))
        fs_mount fv "$fvd"; fs_mount gc "$gcd"
        measure cp -r "$MIX/$step" "$fvd/mnt/$step" || res "st_$step" fv FAIL
        measure cp -r "$MIX/$step" "$gcd/mnt/$step" || res "st_$step" gc FAIL
        fs_umount fv "$fvd"; fs_umount gc "$gcd"
        measure restic -r "$rr" --cache-dir "$cache" backup -q "$MIX/$step" || res "st_$step" restic FAIL
        ST_LOGICAL[$step]=$logical
        ST_FVSTORED[$step]=$(fv_stat "$fvd" stored_bytes)
        ST_FVREPO[$step]=$(du_b "$fvd/repo")
        ST_FVAUDIT[$step]=$(du_b "$fvd/repo/audit")
        ST_FVMETA[$step]=$(du_b "$fvd/repo/meta")
        ST_FVCACHE[$step]=$(du_b "$fvd/cache")
        ST_GC[$step]=$(du_b "$gcd/cipher")
        ST_RESTIC[$step]=$(du_b "$rr")
        log "storage after $step: logical $logical fv-stored ${ST_FVSTORED[$step]} fv-repo ${ST_FVREPO[$step]}" \
            "fv-cache ${ST_FVCACHE[$step]} gocryptfs ${ST_GC[$step]} restic ${ST_RESTIC[$step]}"
    done

    # 100 bytes inserted mid-file into a BIG_MB random file, rewritten in place. A dedup copy keeps the
    # old chunks referenced, so the live-chunk delta counts exactly the chunks the edit created.
    fs_mount fv "$fvd"
    cp "$BIG_SRC" "$fvd/mnt/big.bin"
    cp "$fvd/mnt/big.bin" "$fvd/mnt/big.orig"
    fs_umount fv "$fvd"
    local c0 s0 c1 s1
    c0=$(fv_stat "$fvd" chunks); s0=$(fv_stat "$fvd" stored_bytes)
    fs_mount fv "$fvd"
    if measure python3 "$PY" insert100 "$fvd/mnt/big.bin"; then INS_TIME=$ELAPSED; else INS_TIME=FAIL; fi
    fs_umount fv "$fvd"
    c1=$(fv_stat "$fvd" chunks); s1=$(fv_stat "$fvd" stored_bytes)
    INS_CHUNKS=$((c1 - c0)); INS_BYTES=$((s1 - s0)); INS_TOTAL=$c0
    log "insert100: chunks $c0 -> $c1, stored $s0 -> $s1"
}

w_rss() {   # 7: daemon peak RSS (VmHWM): BIG write, MANY files create+stat, cold stat after remount
    local t m p
    row rssw "7a. write ${RSS_BIG_MB} MiB unique data: rate" MiB/s
    row manyc "7b. create ${MANY_FILES} small files in 100 dirs (+fsync, sync)" files/s
    row manys "7c. stat them all (warm)" files/s
    row manycs "7d. stat them all after remount (cold)" files/s
    for t in "${TARGETS[@]}"; do
        m=$(mnt "$t")
        rm -rf "$m/seq1" "$m/seq2" "$m/tree"   # free disk space (fogvault/gocryptfs stay mounted)
        cold_remount "$t" "${TDIR[$t]}"        # fresh daemon: VmHWM covers this workload only
        if measure bash -c 'head -c "$1" /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:fvbench -pbkdf2 2>/dev/null |
                            dd of="$2" bs=1M iflag=fullblock conv=fsync status=none' _ $((RSS_BIG_MB * 1048576)) "$m/big"; then
            res rssw "$t" "$(mb_s $((RSS_BIG_MB * 1048576)) "$ELAPSED")"; else res rssw "$t" FAIL; fi
        [ "$t" = plain ] || RSS_BIG[$t]=$(mib "$(hwm_kb "${PIDS[$m]}")")
        rm -f "$m/big"
        cold_remount "$t" "${TDIR[$t]}"
        if pyout create manyfiles "$m/many" "$MANY_FILES"; then
            res manyc "$t" "$(pyget create)"; res manys "$t" "$(pyget stat)"
        else res manyc "$t" FAIL; res manys "$t" FAIL; fi
        [ "$t" = plain ] || RSS_MANY[$t]=$(mib "$(hwm_kb "${PIDS[$m]}")")
        cold_remount "$t" "${TDIR[$t]}"
        if pyout stat statall "$m/many"; then res manycs "$t" "$(pyget stat)"; else res manycs "$t" FAIL; fi
        [ "$t" = plain ] || RSS_MANYCOLD[$t]=$(mib "$(hwm_kb "${PIDS[$m]}")")
    done
}

# ---------------------------------------------------------------- report
report() {
    local md=$OUT/results.md k label unit a b c line
    {
        echo "# fogvault benchmark ($MODE run, $(date -u +%Y-%m-%dT%H:%MZ))"
        echo
        echo "Host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM," \
             "$(uname -r); disk: $(findmnt -n -o SOURCE,FSTYPE -T "$BENCH_DIR" | tr -s ' ')." \
             "fogvault $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty') (binary built $(date -r "$FOGVAULT" '+%F %T'));" \
             "$(gocryptfs -version | cut -d';' -f1); $(restic version | cut -d' ' -f1-2)."
        echo "Single run on a shared machine: noisy. Higher is better for every rate; ratio < 1 means fogvault is slower."
        echo
        echo "| workload | unit | plain | fogvault | gocryptfs | fogvault/plain | fogvault/gocryptfs |"
        echo "|---|---|---:|---:|---:|---:|---:|"
        for line in "${ROWS[@]}"; do
            IFS='|' read -r k label unit <<<"$line"
            a=$(get "$k" plain); b=$(get "$k" fv); c=$(get "$k" gc)
            echo "| $label | $unit | $a | $b | $c | $(ratio "$b" "$a") | $(ratio "$b" "$c") |"
        done
        echo
        echo "## 6. Stored bytes: v1 ($MIX_FILES files, $(mib $((MIX_BYTES / 1024))) MiB), + exact copy, + v2 (5% of files edited mid-file)"
        echo
        echo "Cumulative after each folder. fogvault: \`stats\` stored_bytes (packs incl. staging) and \`du -sb\` of repo and cache (metadata)."
        echo
        echo "The repository's \`audit/\` (the access trail, which restic has no counterpart of) and \`meta/\` (metadata journal and snapshots) are shown apart; the last column leaves the trail out."
        echo
        echo "| after | logical | fogvault stored | fogvault du repo | of which audit/ | of which meta/ | fogvault du cache | restic du repo | gocryptfs du | fogvault repo/restic | without audit/ |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for k in v1 v1copy v2; do
            echo "| +$k | ${ST_LOGICAL[$k]:-n/a} | ${ST_FVSTORED[$k]:-n/a} | ${ST_FVREPO[$k]:-n/a} | ${ST_FVAUDIT[$k]:-n/a} | ${ST_FVMETA[$k]:-n/a} |" \
                 "${ST_FVCACHE[$k]:-n/a} | ${ST_RESTIC[$k]:-n/a} | ${ST_GC[$k]:-n/a} | $(ratio "${ST_FVREPO[$k]:-x}" "${ST_RESTIC[$k]:-x}" 3) |" \
                 "$(ratio $(( ${ST_FVREPO[$k]:-0} - ${ST_FVAUDIT[$k]:-0} )) "${ST_RESTIC[$k]:-x}" 3) |"
        done
        echo
        echo "Seq workloads: fogvault stored bytes after two identical ${SEQ_MB} MiB copies: ${FV_AFTER_SEQ:-n/a}" \
             "($(ratio "${FV_AFTER_SEQ:-x}" $((SEQ_MB * 1048576))) x one copy)."
        echo
        echo "100 bytes inserted into the middle of a ${BIG_MB} MiB random file (rewritten in place, ${INS_TIME:-n/a} s):" \
             "**${INS_CHUNKS:-n/a} new chunks**, +${INS_BYTES:-n/a} stored bytes (repo had ${INS_TOTAL:-n/a} live chunks before)."
        echo
        echo "## 7. Daemon peak RSS (VmHWM, MiB; fresh daemon per measurement)"
        echo
        echo "| workload | fogvault | gocryptfs | fogvault/gocryptfs |"
        echo "|---|---:|---:|---:|"
        echo "| write ${RSS_BIG_MB} MiB file | ${RSS_BIG[fv]:-n/a} | ${RSS_BIG[gc]:-n/a} | $(ratio "${RSS_BIG[fv]:-x}" "${RSS_BIG[gc]:-x}") |"
        echo "| create + stat ${MANY_FILES} files | ${RSS_MANY[fv]:-n/a} | ${RSS_MANY[gc]:-n/a} | $(ratio "${RSS_MANY[fv]:-x}" "${RSS_MANY[gc]:-x}") |"
        echo "| stat ${MANY_FILES} files after remount | ${RSS_MANYCOLD[fv]:-n/a} | ${RSS_MANYCOLD[gc]:-n/a} | $(ratio "${RSS_MANYCOLD[fv]:-x}" "${RSS_MANYCOLD[gc]:-x}") |"
        if grep -q FAILED "$LOG"; then
            echo
            echo "## Failures"
            echo
            grep FAILED "$LOG" | sed 's/^/- /'
        fi
        local slow=()
        for line in "${ROWS[@]}"; do
            IFS='|' read -r k label unit <<<"$line"
            b=$(get "$k" fv); c=$(get "$k" gc)
            awk -v b="$b" -v c="$c" 'BEGIN {exit !(b ~ /^[0-9.]+$/ && c ~ /^[0-9.]+$/ && b*10 < c+0)}' &&
                slow+=("$label: fogvault $b vs gocryptfs $c $unit")
        done
        if [ "${#slow[@]}" -gt 0 ]; then
            echo
            echo "## Pathologically slow on fogvault (>10x slower than gocryptfs)"
            echo
            printf -- '- %s\n' "${slow[@]}"
        fi
    } >"$md"
    echo
    # terminal rendering: the markdown with the table pipes aligned
    python3 - "$md" <<'EOF'
import sys
lines = open(sys.argv[1]).read().splitlines()
i = 0
while i < len(lines):
    if lines[i].startswith("|"):
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        rows = [[c.strip() for c in l.strip("|").split("|")] for l in lines[i:j]]
        w = [max(len(r[k]) for r in rows if k < len(r)) for k in range(len(rows[0]))]
        for n, r in enumerate(rows):
            if n == 1:
                print("  ".join("-" * x for x in w))
            else:
                print("  ".join((c.ljust(x) if k == 0 else c.rjust(x)) for k, (c, x) in enumerate(zip(r, w))))
        i = j
    else:
        print(lines[i]); i += 1
EOF
    echo
    echo "(markdown: $md, log: $LOG)"
}

# ---------------------------------------------------------------- main
declare -A ST_LOGICAL=() ST_FVSTORED=() ST_FVREPO=() ST_FVAUDIT=() ST_FVMETA=() ST_FVCACHE=() ST_GC=() ST_RESTIC=()
declare -A RSS_BIG=() RSS_MANY=() RSS_MANYCOLD=()

log "fvbench $MODE run in $BENCH_DIR (binary $FOGVAULT)"
for m in "$RUN"/*/mnt; do
    if mountpoint -q "$m" 2>/dev/null; then echo "bench.sh: $m is still mounted from an earlier run; unmount it" >&2; exit 1; fi
done
rm -rf "$RUN"; mkdir -p "$RUN"
printf '%s\n' "$FOGVAULT_PASSPHRASE" >"$RUN/passfile"; chmod 600 "$RUN/passfile"
write_py
prepare_inputs
log "inputs: seq ${SEQ_MB} MiB; tree $TREE_N files $(mib $((TREE_BYTES / 1024))) MiB; mixed v1 $MIX_FILES files $(mib $((MIX_BYTES / 1024))) MiB"

for t in "${TARGETS[@]}"; do fs_init "$t" "${TDIR[$t]}"; fs_mount "$t" "${TDIR[$t]}"; done

log "== 1-3 sequential";         w_seq
log "== 4 tree";                 w_tree
log "== 5 small files";          w_small
log "== 7 peak RSS";             w_rss
for t in fv gc; do fs_umount "$t" "${TDIR[$t]}"; done
log "== 6 storage";              w_storage
grep -h -i -E 'error|panic|warn' "$RUN"/*/daemon.log >>"$LOG" 2>/dev/null || true
report
if [ "${EXTRAS:-1}" = 1 ]; then
# Issue 4: login to first byte, and the per-file cost of the vault-folder permission check.
# Both append to bench-out/results.md; QUICK=1 makes them shorter too.
if [ "$QUICK" = 1 ]; then LOGIN_RUNS=${LOGIN_RUNS:-10}; fi
LOGIN_RUNS=${LOGIN_RUNS:-20} FOGVAULT=$FOGVAULT BENCH_OUT=$OUT \
    bash "$ROOT/scripts/bench_login.sh" 2>>"$LOG" | tee -a "$LOG" || log "login benchmark FAILED"
QUICK=$QUICK FOGVAULT=$FOGVAULT BENCH_OUT=$OUT \
    bash "$ROOT/scripts/bench_folders.sh" 2>>"$LOG" | tee -a "$LOG" || log "folder benchmark FAILED"
# Issue 6: the audit trail's overhead: FOGVAULT against the same code built without it
# (bench_audit.sh builds that; FOGVAULT_OLD=PATH compares with another build instead).
QUICK=$QUICK FOGVAULT_NEW=$FOGVAULT BENCH_DIR=$BENCH_DIR BENCH_OUT=$OUT \
    bash "$ROOT/scripts/bench_audit.sh" 2>>"$LOG" | tee -a "$LOG" || log "audit benchmark FAILED"
# Issue 5: the same vault on a real S3 server (Garage), next to a local directory and to rclone crypt.
FOGVAULT=$FOGVAULT BENCH_OUT=$OUT BENCH_DIR=$BENCH_DIR S3_BENCH_MB=$([ "$QUICK" = 1 ] && echo 256 || echo 1024) \
    S3_TREE_FILES=$TREE_FILES bash "$ROOT/scripts/bench_s3.sh" 2>>"$LOG" | tee -a "$LOG" || log "S3 benchmark FAILED"
fi
