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

# free_ports N → the first of N consecutive TCP ports on 127.0.0.1 that are
# free now, chosen at random below the kernel's ephemeral range (so outgoing
# connections cannot take them while a server starts). A server that still
# loses a race must be retried by its caller (start_garage does).
free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
top = min(lo, 32768) - n
for _ in range(200):
    base = random.randrange(10000, top)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("free_ports: no free port range found")
PY
}

# FV_STORE=s3 runs a suite against a real Garage S3 server on loopback
# (started here, stopped at exit); the default is a local directory.
FV_STORE=${FV_STORE:-local}
if [ "$FV_STORE" = s3 ]; then
    source "$(dirname "${BASH_SOURCE[0]}")/garage.sh"
    start_garage "$FV_TMP/garage"
fi

# s3_prefix_of DIR → the key prefix of test dir DIR's repository in the test bucket
s3_prefix_of() { echo "$(basename "$FV_TMP")-$(basename "$1")"; }

# repo_of DIR → the repository of test dir DIR: DIR/repo, or a prefix of the test bucket
repo_of() {
    if [ "$FV_STORE" = s3 ]; then echo "s3://$GARAGE_BUCKET/$(s3_prefix_of "$1")"; else echo "$1/repo"; fi
}

# store_dir DIR → where the store's bytes lie on disk, for stolen-disk greps: the
# repository directory, or the whole Garage node (data blocks, and the metadata
# database that holds small objects inline). Garage is configured without
# compression, so plaintext stored there would show up in a grep.
store_dir() {
    if [ "$FV_STORE" = s3 ]; then echo "$FV_TMP/garage"; else echo "$1/repo"; fi
}

# The store of test dir DIR, object by object (NAME relative to the repository,
# e.g. packs/ab/…, config, policy/current), the same calls on both stores, so
# tampering and inspection are written once.
# store_ls DIR [PREFIX] → object names under PREFIX, sorted
store_ls() {
    if [ "$FV_STORE" = s3 ]; then
        local p; p=$(s3_prefix_of "$1")
        s3_keys "$p/${2:-}" | sed "s|^$p/||" | sort
    else
        [ -d "$1/repo/${2:-}" ] || return 0
        (cd "$1/repo" && find "./${2:-}" -type f) | sed 's|^\./||; s|//*|/|g' | sort
    fi
}
# store_get DIR NAME FILE → copies object NAME to local FILE (fails if it is missing)
store_get() {
    if [ "$FV_STORE" = s3 ]; then s3_req GET "$(s3_prefix_of "$1")/$2" -o "$3"; else cp "$1/repo/$2" "$3"; fi
}
# store_put DIR NAME FILE → replaces (or creates) object NAME with the bytes of FILE
store_put() {
    if [ "$FV_STORE" = s3 ]; then
        s3_req PUT "$(s3_prefix_of "$1")/$2" --data-binary "@$3" -o /dev/null
    else
        mkdir -p "$(dirname "$1/repo/$2")" && cp "$3" "$1/repo/$2"
    fi
}
# store_rm DIR NAME → deletes object NAME
store_rm() {
    if [ "$FV_STORE" = s3 ]; then s3_req DELETE "$(s3_prefix_of "$1")/$2" -o /dev/null; else rm "$1/repo/$2"; fi
}
# store_save DIR PREFIX LOCAL → copies every object under PREFIX to LOCAL/<name>
store_save() {
    local names name
    names=$(store_ls "$1" "$2")
    mkdir -p "$3"
    for name in $names; do
        mkdir -p "$(dirname "$3/$name")"
        store_get "$1" "$name" "$3/$name"
    done
}
# store_restore DIR PREFIX LOCAL → the objects under PREFIX become exactly those
# store_save put in LOCAL (others deleted, saved ones written back)
store_restore() {
    local names name
    names=$(store_ls "$1" "$2")
    for name in $names; do [ -f "$3/$name" ] || store_rm "$1" "$name"; done
    names=$(cd "$3" && find "$2" -type f | sort)
    for name in $names; do store_put "$1" "$name" "$3/$name"; done
}
# store_bytes DIR → total size in bytes of the repository's objects
store_bytes() {
    if [ "$FV_STORE" = s3 ]; then
        s3_list "$(s3_prefix_of "$1")/" | awk '{ n += $2 } END { printf "%.0f\n", n }'
    else
        find "$1/repo" -type f -printf '%s\n' | awk '{ n += $1 } END { printf "%.0f\n", n }'
    fi
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
    # FV_WALK_CHECK=daemon: vault folders gate path walks in the daemon.
    "$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$d/cache" --walk-check "${FV_WALK_CHECK:-kernel}" "$@" "$d/mnt" \
        >>"$d/mount.log" 2>&1 &
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

# wait_exit PID SECS → waits for child PID and returns its exit status, or
# returns 124 if it is still running after SECS (it is left running)
wait_exit() {
    local pid="$1" secs="$2" i
    for i in $(seq 1 $((secs * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && return 124
    wait "$pid"
}

# unmount_vault DIR → clean unmount, waits (at most FV_UNMOUNT_TIMEOUT s, 600 by
# default) for the daemon to exit with status 0
unmount_vault() {
    local d="$1"
    umount "$d/mnt"
    local rc=0
    wait_exit "$MOUNT_PID" "${FV_UNMOUNT_TIMEOUT:-600}" || rc=$?
    [ "$rc" -ne 124 ] || { tail -n 20 "$d/mount.log" >&2; fail "daemon still running ${FV_UNMOUNT_TIMEOUT:-600} s after unmount"; }
    [ "$rc" -eq 0 ] || { cat "$d/mount.log" >&2; fail "daemon exited with $rc after unmount"; }
}

# seal_pack DIR WHAT → unmounts DIR (which seals its open pack), sets SEALED_PACK to
# the one pack that adds to the store (fails naming WHAT otherwise), and mounts DIR again
seal_pack() {
    local d="$1" new
    store_ls "$d" packs/ > "$FV_TMP/packs.before"
    unmount_vault "$d"
    mapfile -t new < <(store_ls "$d" packs/ | comm -13 "$FV_TMP/packs.before" -)
    [ "${#new[@]}" -eq 1 ] || fail "$2 added ${#new[@]} packs, want 1: ${new[*]}"
    SEALED_PACK=${new[0]}
    mount_vault "$d"
}

# kill9_vault DIR → simulate a crash of the daemon, then detach the dead mount
kill9_vault() {
    local d="$1"
    kill -9 "$MOUNT_PID"
    wait "$MOUNT_PID" 2>/dev/null || true
    umount -l "$d/mnt" 2>/dev/null || true
}

fv() { "$FOGVAULT" "$@"; }
