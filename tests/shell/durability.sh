#!/usr/bin/env bash
# kill -9 of the daemon during writes: every file whose fsync (or close)
# returned before the kill is intact after a remount; the store and the
# index stay consistent (verify --deep passes).
source "$(dirname "$0")/lib.sh"

d=$(new_repo crash)
mount_vault "$d"
m="$d/mnt"
mkdir "$m/records"
manifest="$FV_TMP/manifest"
# The writer records a file in the manifest (on local disk) only after its
# fsync/close returned; it runs until the daemon dies under it.
python3 - "$m/records" "$manifest" <<'PY' &
import hashlib, os, sys, random
root, manifest = sys.argv[1], sys.argv[2]
rnd = random.Random(7)
with open(manifest, "w") as man:
    i = 0
    try:
        while True:
            size = rnd.choice([100, 5000, 300_000, 2_500_000])
            data = rnd.randbytes(size)
            path = os.path.join(root, f"r{i:05}.bin")
            mode = i % 3  # 0: fsync, 1: close only, 2: rewrite in place then fsync
            with open(path, "wb") as f:
                f.write(data)
                if mode != 1:
                    f.flush(); os.fsync(f.fileno())
            if mode == 2:
                with open(path, "r+b") as f:
                    f.seek(size // 2); patch = rnd.randbytes(min(size // 2, 4096))
                    f.write(patch); f.flush(); os.fsync(f.fileno())
                data = data[:size // 2] + patch + data[size // 2 + len(patch):]
            man.write(f"{path} {hashlib.sha256(data).hexdigest()}\n"); man.flush()
            i += 1
    except OSError:
        pass
PY
writer=$!
sleep 6
kill9_vault "$d"
wait "$writer" || true
n=$(wc -l < "$manifest")
[ "$n" -gt 10 ] || fail "writer completed only $n files before the crash"

mount_vault "$d"
bad=0
while read -r path sum; do
    got=$(sha256sum "$path" 2>/dev/null | cut -d' ' -f1 || true)
    [ "$got" = "$sum" ] || { echo "lost or damaged: $(basename "$path")"; bad=$((bad + 1)); }
done < "$manifest"
[ "$bad" -eq 0 ] || fail "$bad of $n acknowledged files lost after kill -9"
pass "all $n fsynced/closed files intact after kill -9 and remount"

# The vault keeps working after the crash, then verifies clean.
cp "$m/records/r00001.bin" "$m/records/after-crash.bin"
cmp "$m/records/r00001.bin" "$m/records/after-crash.bin"
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after crash recovery"
pass "store and index consistent after crash recovery (verify --deep)"

# Crash twice in a row right after heavy writes, with no clean unmount at all.
mount_vault "$d"
head -c 40000000 /dev/urandom > "$FV_TMP/big.bin"
cp "$FV_TMP/big.bin" "$m/records/big.bin"
sync "$m/records/big.bin"
kill9_vault "$d"
mount_vault "$d"
cmp "$FV_TMP/big.bin" "$m/records/big.bin" || fail "synced 40 MB file damaged after kill -9"
kill9_vault "$d"
mount_vault "$d"
cmp "$FV_TMP/big.bin" "$m/records/big.bin" || fail "after a second kill -9"
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify after double crash"
pass "staged packs replayed after repeated kill -9"
