#!/usr/bin/env bash
# Clear errors, never a panic: bad passphrase, uninitialised or doubly
# initialised repos, bad mount points, a busy cache, bad flags, a full store.
source "$(dirname "$0")/lib.sh"

expect_error() { # expected-exit-code expected-message-regex -- command...
    local want="$1" msg="$2"; shift 3
    local rc=0
    "$@" >"$FV_TMP/out" 2>"$FV_TMP/err" || rc=$?
    [ "$rc" -eq "$want" ] || { cat "$FV_TMP/err"; fail "'$*' exited $rc, want $want"; }
    grep -Eq "$msg" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "'$*' message does not match /$msg/"; }
    ! grep -q "panicked" "$FV_TMP/err" || fail "'$*' panicked"
}

d=$(new_repo errs)
expect_error 1 "already initialised" -- fv init --repo "$d/repo"
expect_error 1 "wrong passphrase" -- env FOGVAULT_PASSPHRASE=nope "$FOGVAULT" stats --repo "$d/repo" --cache "$d/cache"
expect_error 1 "does not exist.*fogvault init" -- fv mount --repo "$FV_TMP/nowhere" "$d/mnt"
mkdir "$FV_TMP/emptydir"
expect_error 1 "not a fogvault repository" -- fv stats --repo "$FV_TMP/emptydir"
expect_error 1 "mount point .*No such file" -- fv mount --repo "$d/repo" "$FV_TMP/no-mnt"
touch "$FV_TMP/afile"
expect_error 1 "not a directory" -- fv mount --repo "$d/repo" "$FV_TMP/afile"
expect_error 1 "cache directory" -- fv mount --repo "$d/repo" --cache "$FV_TMP/afile/cache" "$d/mnt"
expect_error 1 "no fog-node index" -- fv stats --repo "$d/repo" --cache "$FV_TMP/fresh-cache"
expect_error 2 "unexpected argument|Usage" -- fv mount --repo "$d/repo" --bogus-flag "$d/mnt"
expect_error 2 "Usage" -- fv verify
pass "usage, passphrase, repository and path errors are clear with the right exit codes"

mount_vault "$d"
expect_error 1 "busy" -- fv mount --repo "$d/repo" --cache "$d/cache" "$d/mnt"
mkdir "$FV_TMP/mnt2"
expect_error 1 "in use by another fogvault mount" -- fv mount --repo "$d/repo" --cache "$d/cache" "$FV_TMP/mnt2"
mountpoint -q "$FV_TMP/mnt2" && fail "second mount happened"
unmount_vault "$d"
pass "busy mount point and busy cache are refused"

# A full store: writers get ENOSPC, earlier data survives, the vault stays consistent.
small="$FV_TMP/small"
mkdir -p "$small"
mount -t tmpfs -o size=160m tmpfs "$small"
FV_MOUNTS+=("$small")
mkdir -p "$small/v/mnt"
fv init --repo "$small/v/repo" >/dev/null
mount_vault "$small/v"
m="$small/v/mnt"
head -c 4000000 /dev/urandom > "$FV_TMP/keep.bin"
cp "$FV_TMP/keep.bin" "$m/keep.bin"
rc=0
python3 - "$m/fill.bin" <<'PY' || rc=$?
import os, sys, errno
try:
    with open(sys.argv[1], "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
        f.flush(); os.fsync(f.fileno())
except OSError as e:
    if e.errno == errno.ENOSPC:
        sys.exit(28)
    raise
sys.exit(0)
PY
[ "$rc" -eq 28 ] || fail "filling the store gave exit $rc, want ENOSPC (28)"
cmp "$FV_TMP/keep.bin" "$m/keep.bin" || fail "earlier file damaged by a full store"
rm -f "$m/fill.bin"
echo "small note" > "$m/note.txt" 2>/dev/null || true
umount "$m"; wait "$MOUNT_PID" || true
! grep -q panicked "$small/v/mount.log" || fail "daemon panicked on a full store"
fv verify --repo "$small/v/repo" --cache "$small/v/cache" >/dev/null || fail "verify after ENOSPC"
mount_vault "$small/v"
cmp "$FV_TMP/keep.bin" "$m/keep.bin" || fail "earlier file damaged after remount"
umount "$m"; wait "$MOUNT_PID" || true
pass "full store: writer gets ENOSPC, earlier data intact, verify clean"
