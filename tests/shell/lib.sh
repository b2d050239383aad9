# Shared helpers for the real-mount shell tests. Source it; needs $FOGVAULT (binary path).
# Each test gets a scratch dir under $FV_TMP and cleans up its mounts on exit.
set -euo pipefail

: "${FOGVAULT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/fogvault}"
export FOGVAULT
export FOGVAULT_PASSPHRASE="${FOGVAULT_PASSPHRASE:-correct horse battery staple}"
FV_TMP=$(mktemp -d /tmp/fvtest.XXXXXX)
FV_MOUNTS=()
FV_PIDS=()

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }

cleanup() {
    local m
    for m in "${FV_MOUNTS[@]:-}"; do
        [ -n "$m" ] && mountpoint -q "$m" 2>/dev/null && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    local p
    for p in "${FV_PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    sleep 0.2
    rm -rf "$FV_TMP"
}
trap cleanup EXIT

# FV_STORE=s3 runs a suite against a real Garage S3 server on loopback
# (started here, stopped at exit); the default is a local directory.
FV_STORE=${FV_STORE:-local}
if [ "$FV_STORE" = s3 ]; then
    source "$(dirname "${BASH_SOURCE[0]}")/garage.sh"
    start_garage "$FV_TMP/garage" "$((20000 + RANDOM % 20000))"
fi

# repo_of DIR → the repository of test dir DIR: DIR/repo, or a prefix of the test bucket
repo_of() {
    if [ "$FV_STORE" = s3 ]; then echo "s3://$GARAGE_BUCKET/$(basename "$FV_TMP")-$(basename "$1")"; else echo "$1/repo"; fi
}

# store_dir DIR → where the store's bytes lie on disk (for stolen-disk greps and sizes)
store_dir() {
    if [ "$FV_STORE" = s3 ]; then echo "$FV_TMP/garage/data"; else echo "$1/repo"; fi
}

# new_repo NAME → creates $FV_TMP/NAME/{cache,mnt}, inits its repository (repo_of)
new_repo() {
    local d="$FV_TMP/$1"
    mkdir -p "$d/mnt"
    "$FOGVAULT" init --repo "$(repo_of "$d")" >/dev/null
    echo "$d"
}

# mount_vault DIR [extra args] → mounts repo_of DIR at DIR/mnt with cache DIR/cache; sets MOUNT_PID
mount_vault() {
    local d="$1"; shift
    "$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$d/cache" "$@" "$d/mnt" >>"$d/mount.log" 2>&1 &
    MOUNT_PID=$!
    FV_PIDS+=("$MOUNT_PID")
    FV_MOUNTS+=("$d/mnt")
    local i
    for i in $(seq 1 100); do
        mountpoint -q "$d/mnt" && return 0
        kill -0 "$MOUNT_PID" 2>/dev/null || { cat "$d/mount.log" >&2; fail "mount exited early"; }
        sleep 0.1
    done
    cat "$d/mount.log" >&2
    fail "mount did not come up"
}

# unmount_vault DIR → clean unmount, waits for the daemon to exit with status 0
unmount_vault() {
    local d="$1"
    umount "$d/mnt"
    local rc=0
    wait "$MOUNT_PID" || rc=$?
    [ "$rc" -eq 0 ] || { cat "$d/mount.log" >&2; fail "daemon exited with $rc after unmount"; }
}

# kill9_vault DIR → simulate a crash of the daemon, then detach the dead mount
kill9_vault() {
    local d="$1"
    kill -9 "$MOUNT_PID"
    wait "$MOUNT_PID" 2>/dev/null || true
    umount -l "$d/mnt" 2>/dev/null || true
}

fv() { "$FOGVAULT" "$@"; }
