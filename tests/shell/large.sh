#!/usr/bin/env bash
# Large and sparse files, and random overwrites checked against a plain-disk copy.
source "$(dirname "$0")/lib.sh"

d=$(new_repo large)
mount_vault "$d"
m="$d/mnt"

# >= 2 GiB file, streamed through the mount and compared by hash after a remount.
big_mib=${FV_BIG_MIB:-2100}
sum_src=$(head -c "$((big_mib << 20))" /dev/urandom | tee "$m/big.bin" | sha256sum | cut -d' ' -f1)
sync "$m/big.bin"
[ "$(stat -c %s "$m/big.bin")" -eq "$((big_mib << 20))" ] || fail "big file size"
unmount_vault "$d"
mount_vault "$d"
[ "$(sha256sum < "$m/big.bin" | cut -d' ' -f1)" = "$sum_src" ] || fail "big file differs after remount"
pass "${big_mib} MiB file written, remounted and read back identical"
rm "$m/big.bin"
unmount_vault "$d"
before=$(store_bytes "$d")   # deleted data stays until gc
mount_vault "$d"

# Sparse files: a 10 GiB file with two islands of data.
truncate -s 10G "$m/sparse.img"
printf 'ISLAND-A' | dd of="$m/sparse.img" bs=1 seek=$((5 << 30)) conv=notrunc status=none
printf 'ISLAND-B' | dd of="$m/sparse.img" bs=1 seek=$(((10 << 30) - 8)) conv=notrunc status=none
[ "$(stat -c %s "$m/sparse.img")" -eq $((10 << 30)) ] || fail "sparse size"
[ "$(dd if="$m/sparse.img" bs=1 skip=$((5 << 30)) count=8 status=none)" = ISLAND-A ] || fail "island A"
[ "$(dd if="$m/sparse.img" bs=1 skip=$(((10 << 30) - 8)) count=8 status=none)" = ISLAND-B ] || fail "island B"
[ "$(dd if="$m/sparse.img" bs=1M skip=3000 count=4 status=none | tr -d '\0' | wc -c)" -eq 0 ] || fail "hole not zero"
truncate -s 100M "$m/sparse.img"   # shrink, then grow again: old bytes must not reappear
truncate -s 6G "$m/sparse.img"
[ "$(dd if="$m/sparse.img" bs=1 skip=$((5 << 30)) count=8 status=none | tr -d '\0' | wc -c)" -eq 0 ] || fail "data resurrected after truncate"
unmount_vault "$d"
stored=$(( $(store_bytes "$d") - before ))
[ "$stored" -lt $((20 << 20)) ] || fail "sparse file stored $stored bytes"
pass "sparse 10 GiB file: holes read as zeros, truncate down/up, ${stored} bytes stored"

# Random overwrites, appends and truncates mirrored on plain disk.
mount_vault "$d"
python3 - "$m/random.bin" "$FV_TMP/random.bin" <<'PY'
import os, random, sys, hashlib
a, b = sys.argv[1], sys.argv[2]
rnd = random.Random(42)
init = rnd.randbytes(24 << 20)
fds = []
for p in (a, b):
    with open(p, "wb") as f: f.write(init)
    fds.append(os.open(p, os.O_RDWR))
size = len(init)
for i in range(3000):
    r = rnd.random()
    if r < 0.80:
        off = rnd.randrange(0, size + 100_000); n = rnd.choice([1, 17, 4096, 65536, 300_000])
        data = rnd.randbytes(n) if rnd.random() < 0.8 else bytes(n)
        for fd in fds: os.pwrite(fd, data, off)
        size = max(size, off + n)
    elif r < 0.87:
        size = rnd.randrange(0, 40 << 20)
        for fd in fds: os.ftruncate(fd, size)
    elif r < 0.93:
        os.fsync(fds[0])
    else:
        off = rnd.randrange(0, size + 1); n = rnd.randrange(1, 500_000)
        x, y = (os.pread(fd, n, off) for fd in fds)
        assert x == y, f"read mismatch at op {i}"
for fd in fds: os.close(fd)
h = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (a, b)]
assert h[0] == h[1], "final content differs"
PY
unmount_vault "$d"
mount_vault "$d"
cmp "$m/random.bin" "$FV_TMP/random.bin" || fail "random-overwrite file differs after remount"
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep"
pass "3000 random overwrites/truncates match a plain-disk copy, also after remount"
