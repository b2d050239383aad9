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
