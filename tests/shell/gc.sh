#!/usr/bin/env bash
# Garbage collection: deleting files frees store space after `fogvault gc`
# (dead packs deleted, sparse packs repacked), never losing live data, while
# the vault is mounted and being written (including writes of bytes that
# were just deleted: the dedup-revival race); the store's metadata journal
# follows, so a node recovered after gc reads everything.
source "$(dirname "$0")/lib.sh"

stored() { fv stats --repo "$(repo_of "$1")" --cache "$1/cache" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])'; }
check_manifest() { # MANIFEST ROOT what
    local bad=0 path sum got
    while read -r path sum; do
        got=$(sha256sum "$2/$path" 2>/dev/null | cut -d' ' -f1 || true)
        [ "$got" = "$sum" ] || { echo "  $path: expected $sum got ${got:-<unreadable>}" >&2; bad=$((bad + 1)); }
    done < "$1"
    [ "$bad" -eq 0 ] || fail "$3: $bad files damaged"
}

d=$(new_repo gc)
mount_vault "$d"
m="$d/mnt"
# 48 files of 1.5 MB random data (~5 packs); group "old" is deleted whole,
# group "mixed" loses three of every four files.
python3 - "$m" "$FV_TMP/all" <<'PY'
import hashlib, os, random, sys
root, man = sys.argv[1], sys.argv[2]
rnd = random.Random(5)
os.makedirs(f"{root}/old"); os.makedirs(f"{root}/mixed")
with open(man, "w") as out:
    for group in ("old", "mixed"):
        for i in range(24):
            data = rnd.randbytes(1_500_000)
            with open(f"{root}/{group}/f{i:02}", "wb") as f:
                f.write(data)
            out.write(f"{group}/f{i:02} {hashlib.sha256(data).hexdigest()}\n")
PY
sync
cp "$m/mixed/f01" "$FV_TMP/revive.bin"    # bytes to write again while gc runs
before=$(stored "$d")
rm -r "$m/old"
for i in $(seq 0 23); do [ $((i % 4)) -eq 0 ] || rm "$m/mixed/f$(printf %02d "$i")"; done
grep -E '^mixed/f(00|04|08|12|16|20) ' "$FV_TMP/all" > "$FV_TMP/live"
sync

# A writer keeps creating, rewriting (with just-deleted bytes) and deleting files during gc.
python3 - "$m" "$FV_TMP/revive.bin" "$FV_TMP/writer" <<'PY' &
import hashlib, os, random, sys, time
root, revive, man = sys.argv[1], sys.argv[2], sys.argv[3]
rnd = random.Random(9)
os.makedirs(f"{root}/during", exist_ok=True)
old = open(revive, "rb").read()
end = time.time() + 8
i = 0
with open(man, "w") as out:
    while time.time() < end:
        data = old if i % 3 == 0 else rnd.randbytes(rnd.choice([1_000, 40_000]))
        p = f"during/w{i:04}"
        with open(f"{root}/{p}", "wb") as f:
            f.write(data); f.flush(); os.fsync(f.fileno())
        if i % 5 == 4:
            os.unlink(f"{root}/{p}")
        else:
            out.write(f"{p} {hashlib.sha256(data).hexdigest()}\n"); out.flush()
        i += 1
        time.sleep(0.02)
PY
writer=$!
sleep 1
fv gc --repo "$(repo_of "$d")" --cache "$d/cache" > "$FV_TMP/gc.out" || fail "gc while mounted failed"
wait "$writer" || fail "the writer failed during gc"
cat "$FV_TMP/gc.out"
grep -c "packs deleted" "$FV_TMP/gc.out" >/dev/null || fail "gc printed no report"
check_manifest "$FV_TMP/live" "$m" "files kept across gc"
check_manifest "$FV_TMP/writer" "$m" "files written during gc"
after=$(stored "$d")
echo "  stored bytes: $before before deletes, $after after gc"
# Live: 6 of 48 files (~9 MB) plus the writer's (at most a few MB, most of it deduplicated).
[ "$after" -lt $((before / 3)) ] || fail "gc freed too little: $before -> $after bytes (live data is ~1/8)"
pass "gc while mounted and written frees the space of deleted files ($before -> $after bytes) and keeps every live byte"

# Drop caches and re-read through a fresh mount; the store is consistent.
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep fails after gc"
mount_vault "$d"
check_manifest "$FV_TMP/live" "$m" "files kept across gc, after remount"
check_manifest "$FV_TMP/writer" "$m" "files written during gc, after remount"
rm -r "$m/during"
unmount_vault "$d"
pass "verify --deep passes after gc; everything reads back after a remount"

# Unmounted gc works too, and a second run after it finds the rest.
fv gc --repo "$(repo_of "$d")" --cache "$d/cache" > "$FV_TMP/gc2.out" || fail "gc while unmounted failed"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep fails after the second gc"
pass "gc runs without a mount too ($(cat "$FV_TMP/gc2.out"))"

# The store's metadata journal holds the gc: a node rebuilt from the store reads everything.
fv recover --repo "$(repo_of "$d")" --cache "$d/cache-recovered" >/dev/null || fail "recover after gc failed"
"$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$d/cache-recovered" "$m" >>"$d/mount.log" 2>&1 & MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
for _ in $(seq 100); do mountpoint -q "$m" && break; sleep 0.1; done
check_manifest "$FV_TMP/live" "$m" "files read by a node recovered after gc"
unmount_vault "$d"
pass "a node recovered from the store after gc reads every live file"

# A damaged live envelope in a sparse pack: gc keeps that pack (and says so,
# exit non-zero) but still deletes the dead pack and repacks the sound one.
d=$(new_repo gcdamaged)
m="$d/mnt"
mount_vault "$d"
packs=()
for group in "a 1000000 3000000" "b 1000000 3000000" "c 2000000"; do
    # One group per pack: an unmount seals it.
    set -- $group
    g=$1; shift
    i=1
    for size in "$@"; do
        head -c "$size" /dev/urandom > "$FV_TMP/$g$i"
        cp "$FV_TMP/$g$i" "$m/$g$i"
        i=$((i + 1))
    done
    seal_pack "$d" "group $g"
    packs+=("$SEALED_PACK")
done
rm "$m/a2" "$m/b2" "$m/c1"    # a and b keep a quarter of their bytes, c nothing
sync
# The first envelope of pack a is a1's.
store_get "$d" "${packs[0]}" "$FV_TMP/pack-a"
cp "$FV_TMP/pack-a" "$FV_TMP/pack-a.damaged"
python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(1000); b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 1]))' "$FV_TMP/pack-a.damaged"
store_put "$d" "${packs[0]}" "$FV_TMP/pack-a.damaged"
unmount_vault "$d"; mount_vault "$d"
cat "$m/a1" >/dev/null 2>&1 && fail "the damage did not hit a1"
if fv gc --repo "$(repo_of "$d")" --cache "$d/cache" > "$FV_TMP/gc3.out" 2> "$FV_TMP/gc3.err"; then
    fail "gc exited 0 although it could not repack a damaged pack"
fi
cat "$FV_TMP/gc3.out" "$FV_TMP/gc3.err"
grep -q "pack ${packs[0]##*/} kept" "$FV_TMP/gc3.err" || fail "gc did not name the pack it kept"
store_ls "$d" packs/ > "$FV_TMP/packs.after"
grep -qx "${packs[0]}" "$FV_TMP/packs.after" || fail "gc deleted the damaged pack"
grep -qx "${packs[1]}" "$FV_TMP/packs.after" && fail "gc kept the sound sparse pack"
grep -qx "${packs[2]}" "$FV_TMP/packs.after" && fail "gc kept the dead pack"
cmp "$m/b1" "$FV_TMP/b1" || fail "b1 differs after gc"
out=$(cat "$m/a1" 2>&1 >/dev/null) && fail "a1 reads after gc although its envelope is damaged"
grep -q "Input/output error" <<<"$out" || fail "a1: expected EIO, got: $out"
pass "gc keeps a sparse pack with a damaged envelope (named, exit non-zero) and still collects the others"

# Once the pack is whole again, the next gc repacks it.
store_put "$d" "${packs[0]}" "$FV_TMP/pack-a"
unmount_vault "$d"; mount_vault "$d"
fv gc --repo "$(repo_of "$d")" --cache "$d/cache" > "$FV_TMP/gc4.out" || fail "gc after the repair failed"
store_ls "$d" packs/ | grep -qx "${packs[0]}" && fail "gc kept pack a after it was repaired"
cmp "$m/a1" "$FV_TMP/a1" || fail "a1 differs after the repack"
cmp "$m/b1" "$FV_TMP/b1" || fail "b1 differs after the second gc"
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after the second gc"
pass "after the pack is restored, gc repacks it and everything verifies"
