#!/usr/bin/env bash
# Issue 5: fogvault on a real S3 server next to `rclone mount` of an rclone crypt remote on the
# same server, side by side in one run, same data. One single-node Garage on loopback
# (tests/shell/garage.sh) holds both: fogvault under s3://BUCKET/fogvault, rclone crypt over an
# S3 remote under BUCKET/rclone. fogvault on a local-directory store runs the same workloads as a
# reference (no S3 involved). Workloads, each timed until the data is in the store:
#   1. sequential write: dd bs=1M conv=fsync of S3_BENCH_MB MiB of random bytes, then
#      fogvault: unmount and wait for the daemon to exit (it exits once every pack is uploaded);
#      rclone: wait until rclone's VFS cache reports no queued and no running upload and its log
#      shows the file copied to the remote ("f: Copied (new)"), then unmount, wait for rclone to exit.
#   2. cold read: drop the kernel caches (and, for rclone, delete its VFS cache directory), mount,
#      cmp the file against the source.
#   3. untar of S3_TREE_FILES real files (the generator of scripts/bench.sh 4a, scripts/bench_tree.sh),
#      fogvault: tar xf, sync, unmount, wait for the daemon; rclone: tar xf, wait for the uploads
#      (as in 1, with every file in the log), unmount, wait for rclone.
#   After 1 and 3, and outside the timed and counted windows, the data is checked in the store:
#   rclone: `rclone lsjson` must show f with its full size, `rclone lsf` every file (rclone has exited, so
#   nothing can still be uploading); fogvault: the cold read (1) and a remount + file count (3).
# GET/PUT counts: Garage logs one INFO line per S3 request (method and path); the script counts the
# lines each workload adds, from before its mount to after its daemon exited (mount and unmount
# included), and normalizes them per GiB of logical data.
# Appends two tables to bench-out/results.md. Run as root; needs garage (scripts/deps.sh s3) and
# rclone + GNU time (scripts/deps.sh bench).
# Environment: S3_BENCH_MB (default 1024), S3_TREE_FILES (default 20000), BENCH_DIR (cached inputs,
# default /var/tmp/fvbench), RCLONE_WRITE_BACK (rclone --vfs-write-back, default 0s: the upload
# starts at close; rclone's own default, 5s, waits 5 s after the last close and was slower in every
# workload in a trial, with the same request counts), OP_TIMEOUT (seconds to wait for rclone's
# uploads, default 3600), FOGVAULT, BENCH_OUT. rclone's other settings are its defaults
# (--transfers 4, S3 multipart above 200 MiB in 5 MiB parts, reads in 128 MiB ranges).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export FOGVAULT=${FOGVAULT:-$ROOT/target/release/fogvault}
OUT=${BENCH_OUT:-$ROOT/bench-out}
SIZE_MB=${S3_BENCH_MB:-1024}
TREE_FILES=${S3_TREE_FILES:-20000}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fvbench}
WRITE_BACK=${RCLONE_WRITE_BACK:-0s}
OP_TIMEOUT=${OP_TIMEOUT:-3600}

[ "$(id -u)" -eq 0 ] || { echo "bench_s3.sh: run as root (FUSE mounts, drop_caches)" >&2; exit 2; }
for t in rclone /usr/bin/time curl python3 mountpoint; do
    command -v "$t" >/dev/null || { echo "bench_s3.sh: missing $t (scripts/deps.sh bench s3)" >&2; exit 2; }
done
[ -x "$FOGVAULT" ] || { echo "bench_s3.sh: $FOGVAULT not built (cargo build --release)" >&2; exit 2; }

source tests/shell/lib.sh
source tests/shell/garage.sh
source scripts/bench_tree.sh
trap 'exit 130' INT TERM   # so that lib.sh's cleanup (EXIT) unmounts and stops the daemons
start_garage "$FV_TMP/garage"
GLOG=$FV_TMP/garage/server.log
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- inputs
log() { echo "[$(date +%T)] $*" >&2; }
case "$TREE_FILES" in 20000) src=src-full ;; 2000) src=src-quick ;; *) src=src-s3 ;; esac
TREE_TAR=$BENCH_DIR/$src/tree_$TREE_FILES.tar   # the same file as scripts/bench.sh's, when it exists
[ -f "$TREE_TAR" ] || log "building $TREE_TAR"
make_tree_tar "$TREE_TAR" "$TREE_FILES" "$FV_TMP/tar.log"
TREE_N=$(tar tvf "$TREE_TAR" | awk '$1 ~ /^-/' | wc -l)
TREE_BYTES=$(tar tvf "$TREE_TAR" | awk '$1 ~ /^-/ {s += $3} END {print s + 0}')
INPUT=$FV_TMP/input.bin
head -c $((SIZE_MB << 20)) /dev/urandom >"$INPUT"
log "inputs: $SIZE_MB MiB random; $TREE_N files, $TREE_BYTES bytes ($TREE_TAR)"

# ---------------------------------------------------------------- rclone: crypt over s3, same bucket
export RCLONE_CONFIG=$FV_TMP/rclone.conf
cat >"$RCLONE_CONFIG" <<CONF
[fvs3]
type = s3
provider = Other
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
endpoint = $AWS_ENDPOINT_URL
region = $AWS_REGION
force_path_style = true
no_check_bucket = true

[fvcrypt]
type = crypt
remote = fvs3:$GARAGE_BUCKET/rclone
filename_encoding = base64
password = $(rclone obscure "$FOGVAULT_PASSPHRASE")
password2 = $(rclone obscure "$FOGVAULT_PASSPHRASE salt")
CONF
# filename_encoding = base64 (rclone's choice for case-sensitive remotes such as S3) instead of the
# default base32: with base32, 24 of the 20,000 tree paths became object keys of 471-511 bytes, which
# Garage refuses (LMDB: MDB_BAD_VALSIZE); rclone retried each for ~2 min inside close() and then
# only logged the failure (tar exited 0). With base64 the longest key here is 432 bytes.
# rclone's AWS SDK refuses a custom CA bundle with its own HTTP transport; the server is plain HTTP.
rcl() { env -u AWS_CA_BUNDLE rclone "$@"; }
RC_URL=http://127.0.0.1:$(free_ports 1)

# ---------------------------------------------------------------- mounts
declare -A PID_OF=() RLOG=()
MOUNTS=0
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

wait_up() {   # DIR LOG
    local i
    for i in $(seq 1 300); do
        mountpoint -q "$1/mnt" && return 0
        kill -0 "${PID_OF[$1]}" 2>/dev/null || { tail -20 "$2" >&2; fail "mount at $1 exited early"; }
        sleep 0.1
    done
    tail -20 "$2" >&2; fail "mount at $1 did not come up"
}

# sys_mount SYS DIR: SYS is fvlocal (fogvault, local directory store), fv (fogvault on Garage) or
# rclone; the daemon runs under GNU time, whose report (CPU s, peak RSS) goes to DIR/time.last
sys_mount() {
    local sys=$1 d=$2
    mkdir -p "$d/mnt"
    MOUNTS=$((MOUNTS + 1))
    case "$sys" in
        fvlocal|fv)
            local repo; repo=$([ "$sys" = fv ] && echo "s3://$GARAGE_BUCKET/fogvault" || echo "$d/repo")
            /usr/bin/time -f '%U %S %M' -o "$d/time.last" \
                "$FOGVAULT" mount --repo "$repo" --cache "$d/cache" "$d/mnt" >>"$d/daemon.log" 2>&1 & ;;
        rclone)
            RLOG[$d]=$d/rclone.$MOUNTS.log   # one log per mount: the upload count starts from zero
            /usr/bin/time -f '%U %S %M' -o "$d/time.last" env -u AWS_CA_BUNDLE \
                rclone mount fvcrypt: "$d/mnt" --vfs-cache-mode writes --vfs-write-back "$WRITE_BACK" \
                --cache-dir "$d/rcache" --rc --rc-addr "${RC_URL#http://}" --rc-no-auth \
                --log-level INFO --log-file "${RLOG[$d]}" >>"$d/daemon.log" 2>&1 & ;;
    esac
    PID_OF[$d]=$!
    FV_PIDS+=("$!"); FV_MOUNTS+=("$d/mnt")
    wait_up "$d" "$d/daemon.log"
}

# sys_umount DIR: unmount, wait for the daemon to exit (fogvault uploads its last packs first)
sys_umount() {
    local d=$1 rc=0 i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        umount "$d/mnt" 2>/dev/null && break
        [ "$i" = 10 ] && fail "cannot unmount $d/mnt"
        sleep 1
    done
    wait "${PID_OF[$d]}" || rc=$?
    [ "$rc" -eq 0 ] || { tail -20 "$d/daemon.log" >&2; fail "daemon for $d exited with $rc"; }
}

# rclone_wait_uploaded DIR N: until rclone's VFS cache has no queued or running upload and its
# log shows at least N distinct files copied to the remote ("NAME: Copied (new)", logged once the
# upload has succeeded, with any --vfs-write-back). Polls the rc API every 0.1 s.
rclone_wait_uploaded() {
    local d=$1 n=$2 s t0=$SECONDS
    while :; do
        s=$(curl -sf -X POST "$RC_URL/vfs/stats" | tr -d ' \n\t') || fail "rclone rc does not answer"
        case "$s" in *'"erroredFiles":0,'*) ;; *) fail "rclone reports failed uploads: $s" ;; esac
        if grep -q ' ERROR : ' "${RLOG[$d]}"; then grep ' ERROR : ' "${RLOG[$d]}" | head -3 >&2; fail "rclone logged errors"; fi
        case "$s" in *'"uploadsInProgress":0,'*'"uploadsQueued":0'*)
            [ "$(grep -F ': Copied (' "${RLOG[$d]}" | sed 's/^.* INFO  : //; s/: Copied (.*$//' |
                 sort -u | wc -l)" -ge "$n" ] && return 0 ;;
        esac
        [ $((SECONDS - t0)) -lt "$OP_TIMEOUT" ] || fail "rclone uploads did not finish within $OP_TIMEOUT s"
        sleep 0.1
    done
}

# ---------------------------------------------------------------- S3 request counts and CPU
mark() { wc -l <"$GLOG"; }
# reqs FROM → "PUT GET HEAD LIST POST DELETE META" counted in the Garage log after line FROM;
# META: how many of them were on fogvault's metadata and audit objects (keys .../meta/..., .../audit/...)
reqs() {
    sleep 0.5   # let the server write its last lines
    python3 - "$GLOG" "$1" <<'EOF'
import re, sys
path, start = sys.argv[1], int(sys.argv[2])
c = dict.fromkeys(["PUT", "GET", "HEAD", "LIST", "POST", "DELETE", "META"], 0)
pat = re.compile(r"generic_server\S*\s+\S+ \([^)]*\) ([A-Z]+) (\S+)")
with open(path, errors="replace") as f:
    for i, line in enumerate(f):
        if i < start:
            continue
        m = pat.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if not m:
            continue
        meth, target = m.groups()
        base, _, query = target.partition("?")
        if meth == "GET" and (base.strip("/").count("/") == 0 or "uploads" in query or "uploadId" in query):
            meth = "LIST"   # bucket-level GET (ListObjects), ListParts, ListMultipartUploads
        c[meth] = c.get(meth, 0) + 1
        if "/meta/" in base or "/audit/" in base:
            c["META"] += 1
print(" ".join(str(c[k]) for k in ["PUT", "GET", "HEAD", "LIST", "POST", "DELETE", "META"]))
EOF
}
GARAGE_PID_NOW=$GARAGE_PID
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

declare -A RATE=() SECS=() REQ=() CPU=() GCPU=() RSS=() PHASES=()
# record SYS WORKLOAD AMOUNT T0 T1 MARK GTICKS DIR: rate = AMOUNT / (T1 - T0); counts since MARK
record() {
    local sys=$1 w=$2 amount=$3 t0=$4 t1=$5 m=$6 g0=$7 d=$8 u s r
    SECS[$sys/$w]=$(secs "$t0" "$t1")
    RATE[$sys/$w]=$(awk -v a="$amount" -v s="${SECS[$sys/$w]}" 'BEGIN {printf "%.1f", a / s}')
    if [ "$sys" != fvlocal ]; then REQ[$sys/$w]=$(reqs "$m"); fi
    read -r u s r <"$d/time.last"
    CPU[$sys/$w]=$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.1f", u + s}')
    RSS[$sys/$w]=$((r / 1024))
    GCPU[$sys/$w]=$(awk -v a="$g0" -v b="$(cpu_ticks "$GARAGE_PID_NOW")" -v t="$TCK" 'BEGIN {printf "%.1f", (b - a) / t}')
    log "$sys $w: ${SECS[$sys/$w]} s, ${RATE[$sys/$w]}/s; requests (PUT GET HEAD LIST POST DELETE, of them on meta/ and audit/) ${REQ[$sys/$w]:-none};" \
        "daemon CPU ${CPU[$sys/$w]} s, peak RSS ${RSS[$sys/$w]} MiB; garage CPU ${GCPU[$sys/$w]} s${PHASES[$sys/$w]:+ (${PHASES[$sys/$w]})}"
}

SYSTEMS=(fvlocal fv rclone)
mkdir -p "$FV_TMP/fvlocal"
fv init --repo "$FV_TMP/fvlocal/repo" >/dev/null
fv init --repo "s3://$GARAGE_BUCKET/fogvault" >/dev/null

# ---------------------------------------------------------------- 1. sequential write
for sys in "${SYSTEMS[@]}"; do
    d=$FV_TMP/$sys
    drop_caches
    m=$(mark); g=$(cpu_ticks "$GARAGE_PID_NOW")
    sys_mount "$sys" "$d"
    t0=$(now)
    dd if="$INPUT" of="$d/mnt/f" bs=1M conv=fsync status=none
    ta=$(now)
    if [ "$sys" = rclone ]; then rclone_wait_uploaded "$d" 1; fi
    tb=$(now)
    sys_umount "$d"
    t1=$(now)
    PHASES[$sys/seqw]="dd $(secs "$t0" "$ta") s,$([ "$sys" = rclone ] && echo " wait for uploads $(secs "$ta" "$tb") s,") unmount $(secs "$tb" "$t1") s"
    record "$sys" seqw "$SIZE_MB" "$t0" "$t1" "$m" "$g" "$d"
done
size=$(rcl lsjson fvcrypt:f | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Size"])')
[ "$size" -eq $((SIZE_MB << 20)) ] || fail "rclone: f in the bucket has $size bytes after the write"

# ---------------------------------------------------------------- 2. cold read
for sys in "${SYSTEMS[@]}"; do
    d=$FV_TMP/$sys
    rm -rf "$d/rcache"   # rclone: no local copy of the written file left (fogvault's cache holds no chunks)
    drop_caches
    m=$(mark); g=$(cpu_ticks "$GARAGE_PID_NOW")
    sys_mount "$sys" "$d"
    t0=$(now)
    cmp -s "$INPUT" "$d/mnt/f" || fail "$sys read back different bytes"
    t1=$(now)
    sys_umount "$d"
    record "$sys" seqr "$SIZE_MB" "$t0" "$t1" "$m" "$g" "$d"
done

# ---------------------------------------------------------------- 3. untar
for sys in "${SYSTEMS[@]}"; do
    d=$FV_TMP/$sys
    rm -rf "$d/rcache"
    m=$(mark); g=$(cpu_ticks "$GARAGE_PID_NOW")
    sys_mount "$sys" "$d"
    mkdir "$d/mnt/tree"
    drop_caches
    t0=$(now)
    tar xf "$TREE_TAR" -C "$d/mnt/tree"
    ta=$(now)
    if [ "$sys" = rclone ]; then rclone_wait_uploaded "$d" "$TREE_N"; else sync; fi
    tb=$(now)
    sys_umount "$d"
    t1=$(now)
    PHASES[$sys/untar]="tar $(secs "$t0" "$ta") s, $([ "$sys" = rclone ] && echo "wait for uploads" || echo sync) $(secs "$ta" "$tb") s, unmount $(secs "$tb" "$t1") s"
    record "$sys" untar "$TREE_N" "$t0" "$t1" "$m" "$g" "$d"
    if [ "$sys" = rclone ]; then
        n=$(rcl lsf -R --files-only fvcrypt:tree | wc -l)
    else
        sys_mount "$sys" "$d"; n=$(find "$d/mnt/tree" -type f | wc -l); sys_umount "$d"
    fi
    [ "$n" -eq "$TREE_N" ] || fail "$sys: $n files in the store after the untar, expected $TREE_N"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
per_gib() { awk -v n="$1" -v b="$2" 'BEGIN {printf "%.1f", n * 1073741824 / b}'; }
field() { echo "$1" | cut -d' ' -f"$2"; }   # REQ string, 1-based: PUT GET HEAD LIST POST DELETE
other() { echo "$1" | awk '{print $3 + $4 + $5 + $6}'; }
declare -A LOGICAL=([seqw]=$((SIZE_MB << 20)) [seqr]=$((SIZE_MB << 20)) [untar]=$TREE_BYTES)
declare -A TARGET=([seqw]=2 [seqr]=2 [untar]=3)
declare -A LABEL=(
    [seqw]="seq write $SIZE_MB MiB (dd conv=fsync) until uploaded + unmount"
    [seqr]="cold read $SIZE_MB MiB (remount, caches dropped, cmp)"
    [untar]="untar $TREE_N files ($((TREE_BYTES >> 20)) MiB) until uploaded + unmount"
)
declare -A UNIT=([seqw]=MiB/s [seqr]=MiB/s [untar]=files/s)
mkdir -p "$OUT"
{
    printf '\n## S3 (Garage on loopback): fogvault vs rclone crypt (%s)\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "fogvault $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo +dirty);" \
         "$(rclone version | head -1) (crypt over s3, --vfs-cache-mode writes, --vfs-write-back $WRITE_BACK, other settings default);" \
         "$("$(garage_bin)" --version | head -1); $(nproc) cores, load average $LOAD_START at the start, $LOAD_END at the end."
    echo
    echo "| workload | unit | fogvault, local dir | fogvault, S3 | rclone crypt, S3 | fogvault/rclone | target | met |"
    echo "|---|---|---:|---:|---:|---:|---:|---|"
    for w in seqw seqr untar; do
        r=$(ratio "${RATE[fv/$w]}" "${RATE[rclone/$w]}")
        met=$(ge "$r" "${TARGET[$w]}" && echo yes || echo no)
        echo "| ${LABEL[$w]} | ${UNIT[$w]} | ${RATE[fvlocal/$w]} | ${RATE[fv/$w]} | ${RATE[rclone/$w]} | $r | ≥ ${TARGET[$w]} | $met |"
    done
    echo
    echo "S3 requests per GiB of logical data, counted in Garage's request log from before the mount to after the daemon exited"
    echo "(other = HEAD + LIST + POST + DELETE; for the ratios, lower means fewer requests for fogvault):"
    echo
    echo "| workload | fogvault PUT/GiB | rclone PUT/GiB | PUT fogvault/rclone | fogvault GET/GiB | rclone GET/GiB | GET fogvault/rclone | fogvault other/GiB | rclone other/GiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in seqw seqr untar; do
        a=${REQ[fv/$w]} b=${REQ[rclone/$w]} L=${LOGICAL[$w]}
        fp=$(per_gib "$(field "$a" 1)" "$L"); rp=$(per_gib "$(field "$b" 1)" "$L")
        fg=$(per_gib "$(field "$a" 2)" "$L"); rg=$(per_gib "$(field "$b" 2)" "$L")
        echo "| ${LABEL[$w]%% (*} | $fp | $rp | $(ratio "$fp" "$rp") | $fg | $rg | $(ratio "$fg" "$rg") |" \
             "$(per_gib "$(other "$a")" "$L") | $(per_gib "$(other "$b")" "$L") |"
    done
    echo
    echo "Raw counts (PUT GET HEAD LIST POST DELETE, then how many of them were on fogvault's meta/ and audit/ objects), seconds (phases), daemon CPU seconds and peak RSS, Garage CPU seconds:"
    echo
    for w in seqw seqr untar; do
        for sys in "${SYSTEMS[@]}"; do
            echo "- $w $sys: ${REQ[$sys/$w]:-no S3}; ${SECS[$sys/$w]} s${PHASES[$sys/$w]:+ (${PHASES[$sys/$w]})}; daemon CPU ${CPU[$sys/$w]} s, ${RSS[$sys/$w]} MiB; Garage CPU ${GCPU[$sys/$w]} s"
        done
    done
} | tee -a "$OUT/results.md"
