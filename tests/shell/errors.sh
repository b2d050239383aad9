#!/usr/bin/env bash
# Clear errors, never a panic: bad passphrase, uninitialised or doubly
# initialised repos, bad mount points, a busy cache, bad flags, a full store.
source "$(dirname "$0")/lib.sh"

expect_error() { # expected-exit-code expected-message-regex -- command...
    local want="$1" msg="$2"; shift 3
    local rc=0
    "$@" >"$FV_TMP/out" 2>"$FV_TMP/err" || rc=$?
    [ "$rc" -eq "$want" ] || { cat "$FV_TMP/err"; fail "'$*' exited $rc, want $want"; }
    grep -Ec "$msg" "$FV_TMP/err" >/dev/null || { cat "$FV_TMP/err"; fail "'$*' message does not match /$msg/"; }
    ! grep -c "panicked" "$FV_TMP/err" >/dev/null || fail "'$*' panicked"
}

d=$(new_repo errs)
repo=$(repo_of "$d")
expect_error 1 "already initialised" -- fv init --repo "$repo"
expect_error 1 "wrong passphrase" -- env FOGVAULT_PASSPHRASE=nope "$FOGVAULT" stats --repo "$repo" --cache "$d/cache"
# A store that is not there (a missing directory, a missing bucket), and one
# that is there but empty (an empty directory, an unused bucket prefix).
if [ "$FV_STORE" = s3 ]; then
    expect_error 1 "bucket .*no-such-bucket.* does not exist" -- fv mount --repo "s3://no-such-bucket/emr" "$d/mnt"
    expect_error 1 "bucket .*no-such-bucket.* does not exist" -- fv init --repo "s3://no-such-bucket/emr"
    expect_error 1 "not a fogvault repository" -- fv stats --repo "s3://$GARAGE_BUCKET/empty-prefix"
else
    expect_error 1 "does not exist.*fogvault init" -- fv mount --repo "$FV_TMP/nowhere" "$d/mnt"
    mkdir "$FV_TMP/emptydir"
    expect_error 1 "not a fogvault repository" -- fv stats --repo "$FV_TMP/emptydir"
fi
expect_error 1 "mount point .*No such file" -- fv mount --repo "$repo" "$FV_TMP/no-mnt"
touch "$FV_TMP/afile"
expect_error 1 "not a directory" -- fv mount --repo "$repo" "$FV_TMP/afile"
expect_error 1 "cache directory" -- fv mount --repo "$repo" --cache "$FV_TMP/afile/cache" "$d/mnt"
expect_error 1 "no fog-node index" -- fv stats --repo "$repo" --cache "$FV_TMP/fresh-cache"
expect_error 2 "unexpected argument|Usage" -- fv mount --repo "$repo" --bogus-flag "$d/mnt"
expect_error 2 "Usage" -- fv verify
pass "usage, passphrase, repository and path errors are clear with the right exit codes"

mount_vault "$d"
expect_error 1 "busy" -- fv mount --repo "$repo" --cache "$d/cache" "$d/mnt"
mkdir "$FV_TMP/mnt2"
expect_error 1 "in use by another fogvault mount" -- fv mount --repo "$repo" --cache "$d/cache" "$FV_TMP/mnt2"
mountpoint -q "$FV_TMP/mnt2" && fail "second mount happened"
unmount_vault "$d"
pass "busy mount point and busy cache are refused"

# A full store: writers get ENOSPC, earlier data survives, the vault stays
# consistent and keeps what it could not upload.
#   local: the repository lies on a 160 MiB tmpfs that fills up.
#   s3:    the bucket gets a 40 MiB quota (Garage then refuses every PUT with
#          403); writes go on into a 64 MiB upload journal, then get ENOSPC.
#          Unmounting must not hang on the refused uploads: the journal stays on
#          the fog node and drains at the next mount once the quota is lifted.
if [ "$FV_STORE" = s3 ]; then
    v=$(new_repo full)
    journal=(--journal-limit 64M)
    $GARAGE bucket set-quotas "$GARAGE_BUCKET" --max-size 40MiB >/dev/null
else
    small="$FV_TMP/small"
    mkdir -p "$small"
    mount -t tmpfs -o size=160m tmpfs "$small"
    FV_MOUNTS+=("$small")
    v="$small/v"
    mkdir -p "$v/mnt"
    fv init --repo "$(repo_of "$v")" >/dev/null
    journal=()
fi
# stop_daemon WHAT → unmount; the daemon must exit within 120 s
stop_daemon() {
    umount "$m"
    local rc=0
    wait_exit "$MOUNT_PID" 120 || rc=$?
    [ "$rc" -ne 124 ] || { tail -n 5 "$v/mount.log" >&2; fail "the daemon did not exit within 120 s of the unmount ($1)"; }
}
mount_vault "$v" "${journal[@]}"
m="$v/mnt"
head -c 4000000 /dev/urandom > "$FV_TMP/keep.bin"
cp "$FV_TMP/keep.bin" "$m/keep.bin"
sync "$m/keep.bin"
rc=0
timeout 300 python3 - "$m/fill.bin" <<'PY' || rc=$?
import os, sys, errno
try:
    with open(sys.argv[1], "wb") as f:
        for i in range(200):
            f.write(os.urandom(1 << 20))
            if i % 8 == 7:
                os.fsync(f.fileno())
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
stop_daemon "full store"
! grep -c panicked "$v/mount.log" >/dev/null || fail "daemon panicked on a full store"
if [ "$FV_STORE" = s3 ]; then
    ls "$v/cache/staging/" | grep -c '\.data$' >/dev/null || fail "the refused uploads are not kept in the journal"
    grep -c "upload journal will be replayed" "$v/mount.log" >/dev/null || fail "the daemon did not report the uploads it left in the journal"
    $GARAGE bucket set-quotas "$GARAGE_BUCKET" --max-size none >/dev/null
fi
mount_vault "$v" "${journal[@]}"
cmp "$FV_TMP/keep.bin" "$m/keep.bin" || fail "earlier file damaged after remount"
unmount_vault "$v"
fv verify --repo "$(repo_of "$v")" --cache "$v/cache" >/dev/null || fail "verify after ENOSPC"
if [ "$FV_STORE" = s3 ]; then
    [ -z "$(ls "$v/cache/staging/" | grep '\.data$' || true)" ] || fail "the journal did not drain once the quota was lifted"
fi
pass "full store: writer gets ENOSPC, earlier data intact, unmount does not hang, verify clean"
