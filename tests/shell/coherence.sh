#!/usr/bin/env bash
# Page-cache coherence between handles, as on a local disk: readers holding
# cached pages (read(2) and mmap) see writes made through other handles, a
# dirty shared mapping and a later write to the same bytes both land in the
# right order, and an unprivileged write clears set-user-ID / set-group-ID
# while root's keeps them. Where the kernel allows it, write-only handles
# bypass the page cache, which makes most of this the daemon's job.
source "$(dirname "$0")/lib.sh"

user=fvsetid
id "$user" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$user"
as() { setpriv --reuid "$user" --regid "$user" --init-groups -- "$@"; }

chmod 755 "$FV_TMP"
d=$(new_repo coh)
chmod 755 "$d"
mount_vault "$d" --allow-other
m="$d/mnt"
chmod 1777 "$m"

# Readers with cached pages, a write-only writer in between; each check
# reads through the same descriptor and mapping as before the write.
python3 - "$m/shared.bin" <<'PY'
import mmap, os, sys
p = sys.argv[1]
old = os.urandom(3 << 20)
with open(p, "wb") as f:
    f.write(old)
r = os.open(p, os.O_RDONLY)
assert os.pread(r, len(old), 0) == old  # now in the page cache
mm = mmap.mmap(r, len(old), prot=mmap.PROT_READ)
assert mm[:] == old
new = os.urandom(200_000)
at = (1 << 20) + 12345  # inside a cached page range, not page aligned
w = os.open(p, os.O_WRONLY)
assert os.pwrite(w, new, at) == len(new)
want = old[:at] + new + old[at + len(new):]
assert os.pread(r, len(want), 0) == want, "read(2) after a write-only write returned stale bytes"
assert mm[:] == want, "a read-only mapping kept stale bytes after a write-only write"
grow = os.urandom(5000)
assert os.pwrite(w, grow, len(want)) == len(grow)  # past the end
os.close(w)
assert os.fstat(r).st_size == len(want) + len(grow)
assert os.pread(r, len(want) + len(grow) + 10, 0) == want + grow
mm.close()
os.close(r)
PY
pass "cached readers (read and mmap) see writes made through a write-only handle"

# Which path the checks here exercised: on kernels that keep direct writes
# coherent (fuse_adapter::kernel_keeps_direct_writes_coherent) write-only
# handles bypass the page cache and the daemon drops privileges on write,
# so a file written through one, new or existing, has no cached pages;
# elsewhere they stay cached.
kernel=$(cat /proc/sys/kernel/osrelease)
head -c 1048576 /dev/urandom >"$m/direct.bin"
head -c 1048576 /dev/urandom >>"$m/direct.bin"
command -v fincore >/dev/null || fail "fincore (util-linux) is missing"
cached=$(fincore -n -o PAGES "$m/direct.bin" | tr -d ' ')
IFS=.-+ read -r kmajor kminor ksub _ <<<"$kernel"
case "$kmajor.$kminor" in
    6.18) [ "${ksub:-0}" -ge 5 ] && direct=1 || direct=0 ;;
    6.12) [ "${ksub:-0}" -ge 66 ] && direct=1 || direct=0 ;;
    *) [ "$kmajor" -gt 6 ] || { [ "$kmajor" -eq 6 ] && [ "$kminor" -ge 19 ]; } && direct=1 || direct=0 ;;
esac
if [ "$direct" = 1 ]; then
    [ "$cached" = 0 ] || fail "Linux $kernel: write-only handles left $cached pages cached (not direct I/O)"
    pass "Linux $kernel: write-only handles bypass the page cache"
else
    [ "$cached" -gt 0 ] || fail "Linux $kernel: write-only handles bypassed the page cache"
    pass "Linux $kernel: write-only handles keep the page cache"
fi

# A shared writable mapping with dirty pages, then a write-only write over
# part of them: the kernel writes the dirty pages back first, so the later
# write wins where they overlap and the mapping's other bytes survive.
python3 - "$m/mapped.bin" <<'PY'
import mmap, os, sys
p = sys.argv[1]
with open(p, "wb") as f:
    f.write(b"." * 3 * 4096)
rw = os.open(p, os.O_RDWR)
mm = mmap.mmap(rw, 3 * 4096)  # MAP_SHARED, read-write
mm[0:8192] = b"A" * 8192  # dirty, not msync'd
w = os.open(p, os.O_WRONLY)
assert os.pwrite(w, b"B" * 100, 4000) == 100  # straddles the first two pages
os.close(w)
want = b"A" * 4000 + b"B" * 100 + b"A" * (8192 - 4100) + b"." * 4096
assert mm[:] == want, "the mapping after an overlapping write-only write"
mm.close()
os.close(rw)
with open(p, "rb") as f:
    assert f.read() == want, "file bytes after an overlapping write-only write"
PY
pass "dirty shared mapping + overlapping write-only write: the later write wins, nothing else lost"

# O_APPEND on a write-only handle, twice, from two processes.
printf 'a' > "$m/log.txt"
printf 'b' >> "$m/log.txt"
chmod 666 "$m/log.txt"
as sh -c "printf c >> '$m/log.txt'"
[ "$(cat "$m/log.txt")" = abc ] || fail "appends through write-only handles: $(cat "$m/log.txt")"
pass "O_APPEND through write-only handles"

# Set-user-ID and set-group-ID (with group execute): an unprivileged writer
# clears them, through a write-only and a read-write handle; root keeps both.
for how in wo rw; do
    f="$m/setid-$how"
    printf x > "$f"
    chmod 6777 "$f"
    if [ "$how" = wo ]; then
        as sh -c "printf y >> '$f'"
    else
        as /usr/bin/python3 -c "import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.pwrite(fd, b'y', 1); os.close(fd)" "$f"
    fi
    [ "$(stat -c %a "$f")" = 777 ] || fail "$how write by $user left mode $(stat -c %a "$f")"
    [ "$(cat "$f")" = xy ] || fail "$how write by $user: content $(cat "$f")"
done
f="$m/setid-root"
printf x > "$f"
chmod 6777 "$f"
printf y >> "$f"
[ "$(stat -c %a "$f")" = 6777 ] || fail "root's write changed mode to $(stat -c %a "$f")"
pass "unprivileged writes clear set-user-ID/set-group-ID (write-only and read-write handles); root's keep them"

# The mount runs no set-id programs and opens no device nodes, so a set-id
# bit cleared by a write can never grant anything, even for the moment the
# kernel may still have the old mode cached.
findmnt -no OPTIONS "$m" | tr , '\n' | grep -qx nosuid || fail "the mount allows set-id programs"
findmnt -no OPTIONS "$m" | tr , '\n' | grep -qx nodev || fail "the mount allows device nodes"
pass "the mount is nosuid,nodev"

# File capabilities go with any write, root's included (the kernel's
# file_remove_privs): a changed binary must not keep them.
python3 - "$m/capbin" <<'PY'
import errno, os, struct, sys
p = sys.argv[1]
with open(p, "wb") as f:
    f.write(b"\x7fELF binary")
cap = struct.pack("<IIIII", 0x02000000, 1 << 10, 0, 0, 0)  # v2: cap_net_bind_service
os.setxattr(p, "security.capability", cap)
assert os.getxattr(p, "security.capability") == cap
fd = os.open(p, os.O_WRONLY | os.O_APPEND)
os.write(fd, b" patched")
os.close(fd)
try:
    os.getxattr(p, "security.capability")
    sys.exit("security.capability survived a write")
except OSError as e:
    assert e.errno == errno.ENODATA, e
PY
pass "a write drops the file's security.capability"

# All of it after a remount: the cleared bits and the bytes were committed.
unmount_vault "$d"
mount_vault "$d" --allow-other
[ "$(stat -c %a "$m/setid-wo")" = 777 ] && [ "$(stat -c %a "$m/setid-root")" = 6777 ] ||
    fail "modes after remount: $(stat -c %a "$m/setid-wo") $(stat -c %a "$m/setid-root")"
[ "$(cat "$m/log.txt")" = abc ] || fail "append lost across remount"
python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); assert d == b'A' * 4000 + b'B' * 100 + b'A' * 4092 + b'.' * 4096, 'mapped.bin after remount'" "$m/mapped.bin" ||
    fail "mapped.bin changed across remount"
unmount_vault "$d"
"$FOGVAULT" verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >"$FV_TMP/verify.out" 2>&1 ||
    { cat "$FV_TMP/verify.out"; fail "verify --deep after the coherence checks"; }
pass "modes and bytes survive a remount; verify --deep clean"
