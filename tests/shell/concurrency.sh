#!/usr/bin/env bash
# Concurrent writers and readers, hundred-thousand-entry directories, mmap.
source "$(dirname "$0")/lib.sh"

d=$(new_repo conc)
mount_vault "$d"
m="$d/mnt"

# 8 writers and 8 readers at once, on separate and on shared files.
mkdir "$m/par"
for i in $(seq 1 8); do head -c $((3 << 20)) /dev/urandom > "$FV_TMP/w$i"; done
cp "$FV_TMP/w1" "$m/par/shared"
pids=()
for i in $(seq 1 8); do
    ( for k in 1 2 3; do cp "$FV_TMP/w$i" "$m/par/f$i.$k"; done ) & pids+=($!)
    ( for k in $(seq 1 10); do cmp -s "$FV_TMP/w1" "$m/par/shared" || exit 9; done ) & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent worker failed"; done
for i in $(seq 1 8); do for k in 1 2 3; do cmp "$FV_TMP/w$i" "$m/par/f$i.$k" || fail "f$i.$k"; done; done
pass "8 concurrent writers + 8 readers"

# Two processes appending to one file with O_APPEND: no lost records.
python3 - "$m/par/log.txt" <<'PY'
import os, sys, multiprocessing
def worker(tag):
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for i in range(500):
        os.write(fd, f"{tag}:{i:04}\n".encode())
    os.close(fd)
ps = [multiprocessing.Process(target=worker, args=(t,)) for t in "AB"]
[p.start() for p in ps]; [p.join() for p in ps]
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1000 and len(set(lines)) == 1000, len(lines)
PY
pass "concurrent O_APPEND writers lose nothing"

# A directory with 100k entries: create, list, stat, remove.
n=${FV_BIGDIR:-100000}
mkdir "$m/big"
python3 - "$m/big" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.close(os.open(os.path.join(d, f"IMG{i:06}.dcm"), os.O_CREAT | os.O_WRONLY, 0o644))
names = os.listdir(d)
assert len(names) == n and len(set(names)) == n, (len(names), len(set(names)))
PY
[ "$(ls -f "$m/big" | wc -l)" -eq $((n + 2)) ] || fail "ls -f count"
[ "$(find "$m/big" -type f | wc -l)" -eq "$n" ] || fail "find count"
unmount_vault "$d"
mount_vault "$d"
[ "$(ls "$m/big" | wc -l)" -eq "$n" ] || fail "count after remount"
find "$m/big" -name 'IMG0[0-4]*' -delete
[ "$(ls "$m/big" | wc -l)" -eq $((n / 2)) ] || fail "count after deleting half"
pass "directory with $n entries: create, list, remount, delete"

# mmap: reads, and shared writable mappings that reach the file.
python3 - "$m/mm.bin" <<'PY'
import mmap, os, sys
p = sys.argv[1]
data = os.urandom(5 << 20)
with open(p, "wb") as f: f.write(data)
with open(p, "r+b") as f:
    mm = mmap.mmap(f.fileno(), 0)
    assert mm[:] == data
    mm[1000:1005] = b"HELLO"; mm[(4 << 20):(4 << 20) + 3] = b"END"
    mm.flush(); mm.close()
expect = bytearray(data); expect[1000:1005] = b"HELLO"; expect[(4 << 20):(4 << 20) + 3] = b"END"
assert open(p, "rb").read() == bytes(expect)
open(p + ".expect", "wb").write(bytes(expect))
PY
unmount_vault "$d"
mount_vault "$d"
cmp "$m/mm.bin" "$m/mm.bin.expect" || fail "shared mmap writes lost after remount"
unmount_vault "$d"
pass "mmap reads and shared writable mmap"
