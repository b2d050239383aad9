#!/usr/bin/env bash
# The fog node's own disk misbehaving:
# - an fdatasync of a staged pack fails (EIO, injected with an LD_PRELOAD
#   shim): the fsync that hit it fails, and so does every later one, because
#   Linux reports a lost writeback once and then calls the pages clean; a
#   remount brings the vault back;
# - the cache and the local store are one file system seen through two mounts
#   (a bind mount): renaming a pack into the store gives EXDEV, so it is
#   uploaded by copying instead of being retried forever.
source "$(dirname "$0")/lib.sh"

# ---- a failing fdatasync
cat > "$FV_TMP/failsync.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* While the file named by $FV_FAIL_SYNC exists, fsync/fdatasync of a staged pack fail with EIO. */
static int failing(int fd) {
    const char *trigger = getenv("FV_FAIL_SYNC");
    char link[64], path[4096];
    if (!trigger || access(trigger, F_OK) != 0) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return strstr(path, "/staging/") && strstr(path, ".data");
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd);
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (failing(fd)) { errno = EIO; return -1; }
    return real(fd);
}
C
gcc -shared -fPIC -O2 -o "$FV_TMP/failsync.so" "$FV_TMP/failsync.c" -ldl || fail "cannot build the fsync-failure shim"

d=$(new_repo syncfail)
m="$d/mnt"
trigger="$FV_TMP/fail-now"
for f in a b c e; do head -c 3000000 /dev/urandom > "$FV_TMP/$f.bin"; done
LD_PRELOAD="$FV_TMP/failsync.so" FV_FAIL_SYNC="$trigger" mount_vault "$d"
dd if="$FV_TMP/a.bin" of="$m/a.bin" bs=1M conv=fsync status=none || fail "fsync before any fault"
touch "$trigger"
# 3 MB: more than an intent-log record carries, so the fsync syncs the pack.
if dd if="$FV_TMP/b.bin" of="$m/b.bin" bs=1M conv=fsync status=none 2>"$FV_TMP/b.err"; then
    fail "fsync reported success although the pack's fdatasync failed"
fi
grep -q "Input/output error" "$FV_TMP/b.err" || { cat "$FV_TMP/b.err"; fail "want EIO from the failed fsync"; }
rm "$trigger"
if dd if="$FV_TMP/c.bin" of="$m/c.bin" bs=1M conv=fsync status=none 2>"$FV_TMP/c.err"; then
    fail "a later fsync reported success: the failed writeback was forgotten"
fi
grep -q "fdatasync of a staged pack failed" "$d/mount.log" || fail "the daemon did not log the failed fdatasync"
cmp "$FV_TMP/a.bin" "$m/a.bin" || fail "a.bin differs while writes fail"
pass "a failed fdatasync of a staged pack fails that fsync and every later one (no retry reports success)"

# Unmount: the daemon gives up on the uploads it may not do, in bounded time.
umount "$m"
rc=0; wait_exit "$MOUNT_PID" 120 || rc=$?
[ "$rc" -ne 124 ] || fail "the daemon did not exit after the unmount"
mount_vault "$d"
cmp "$FV_TMP/a.bin" "$m/a.bin" || fail "a.bin after the remount"
for f in b c; do
    # Never different bytes: whatever reads back is a prefix of what was written.
    if [ -e "$m/$f.bin" ] && n=$(stat -c %s "$m/$f.bin") && [ "$n" -gt 0 ]; then
        cmp -n "$n" "$FV_TMP/$f.bin" "$m/$f.bin" || fail "$f.bin reads back different bytes"
    fi
done
dd if="$FV_TMP/e.bin" of="$m/e.bin" bs=1M conv=fsync status=none || fail "fsync after the remount"
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after the fault"
pass "after a remount writes and fsync work again, earlier data is intact and verify --deep passes"

# ---- the cache and the store on one file system through two mounts
mkdir -p "$FV_TMP/disk/real" "$FV_TMP/disk/view"
mount --bind "$FV_TMP/disk/real" "$FV_TMP/disk/view"
FV_MOUNTS+=("$FV_TMP/disk/view")
d="$FV_TMP/disk/real/b"
mkdir -p "$d/mnt"
fv init --repo "$d/repo" >/dev/null
"$FOGVAULT" mount --repo "$d/repo" --cache "$FV_TMP/disk/view/b-cache" "$d/mnt" >>"$d/mount.log" 2>&1 &
MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID"); FV_MOUNTS+=("$d/mnt")
for _ in $(seq 100); do mountpoint -q "$d/mnt" && break; sleep 0.1; done
mountpoint -q "$d/mnt" || { cat "$d/mount.log"; fail "mount with the cache on a bind mount"; }
head -c 40000000 /dev/urandom > "$FV_TMP/big.bin"
cp "$FV_TMP/big.bin" "$d/mnt/big.bin"
umount "$d/mnt"
rc=0; wait_exit "$MOUNT_PID" 120 || rc=$?
[ "$rc" -eq 0 ] || { tail -5 "$d/mount.log"; fail "daemon exit $rc with the cache on a bind mount"; }
[ -z "$(find "$FV_TMP/disk/view/b-cache/staging" -name '*.data')" ] || fail "packs left in the upload journal"
[ "$(find "$d/repo/packs" -type f | wc -l)" -ge 2 ] || fail "no packs in the store"
fv verify --repo "$d/repo" --cache "$FV_TMP/disk/view/b-cache" --deep >/dev/null || fail "verify --deep (bind mount)"
pass "with the cache and the store on one file system through a bind mount, packs are uploaded (EXDEV: copied)"
