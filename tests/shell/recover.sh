#!/usr/bin/env bash
# Fog node recovery from the store alone: the metadata journal, snapshots and
# the root in the store rebuild a lost node byte-identical (>= 10k files, 1000
# on S3); a rolled-back, truncated or altered metadata journal is refused with
# a clear message; a node killed with -9 still gets every fsynced file into
# the store's journal after it restarts. The store is altered through the
# store helpers (files, or signed S3 requests), so it runs on both stores.
source "$(dirname "$0")/lib.sh"

# On Garage every cold read of a small file is one ranged GET, and Garage's
# HTTP server (no TCP_NODELAY) answers a GET on a kept-alive connection in
# ~45 ms (Nagle against the client's delayed ACK; curl sees the same): the
# two full listings of 10k files would take 15 minutes there, so the S3 run
# uses 1000 files (a journal object or two: a snapshot after each, not after
# every 4th); the local run keeps the 10k-file target.
if [ "$FV_STORE" = s3 ]; then
    FILES=${RECOVER_FILES:-1000} SNAPSHOT_EVERY=1
else
    FILES=${RECOVER_FILES:-10000} SNAPSHOT_EVERY=4
fi

# listing DIR → one line per entry: path, type, mode, size, mtime, link target, content hash
listing() {
    (cd "$1" && find . -mindepth 1 -printf '%P %y %m %s %T@ %l\n' | sort) > "$2.meta"
    (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$2.sums"
}
same_listing() { # A B what
    diff -q "$1.meta" "$2.meta" >/dev/null || { diff "$1.meta" "$2.meta" | head >&2; fail "$3: listings differ"; }
    diff -q "$1.sums" "$2.sums" >/dev/null || { diff "$1.sums" "$2.sums" | head >&2; fail "$3: contents differ"; }
}
generation() { fv stats --repo "$(repo_of "$1")" --cache "$1/cache" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata_generation"])'; }

# ---- a vault of >= 10k files, with snapshots taken along the way
d=$(new_repo node1)
mount_vault "$d" --snapshot-every "$SNAPSHOT_EVERY"
m="$d/mnt"
python3 - "$m" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(11)
for i in range(n):
    sub = os.path.join(root, "patients", f"p{i // 250:03}")
    os.makedirs(sub, exist_ok=True)
    size = rnd.choice([0, 40, 700, 3000, 20000])
    with open(os.path.join(sub, f"r{i:05}.txt"), "wb") as f:
        f.write(rnd.randbytes(size))
os.makedirs(os.path.join(root, "imaging"), exist_ok=True)
with open(os.path.join(root, "imaging", "ct.bin"), "wb") as f:
    f.write(rnd.randbytes(6_000_000))
PY
ln -s imaging/ct.bin "$m/latest-ct"
chmod 640 "$m/patients/p000/r00001.txt"
mkfifo "$m/pipe"
setfattr -n user.tag -v cardiology "$m/imaging/ct.bin"
rm "$m/patients/p001/r00260.txt"
mv "$m/patients/p002" "$m/patients/moved"
# A fast machine writes all of that in a few journal objects: add
# $SNAPSHOT_EVERY more, each its own (commits reach the journal within ~2 s).
for i in $(seq "$SNAPSHOT_EVERY"); do echo "$i" > "$m/patients/tick$i"; sleep 2.5; done
listing "$m" "$FV_TMP/orig"
unmount_vault "$d"
gen1=$(generation "$d")
[ "$gen1" -gt 0 ] || fail "no metadata root generation after unmount"
snaps=$(store_ls "$d" meta/snapshot/ | wc -l)
[ "$snaps" -ge 1 ] || fail "no metadata snapshot in the store after $FILES files with --snapshot-every $SNAPSHOT_EVERY"
pass "vault of $FILES files written; root generation $gen1, snapshot in the store"

# ---- the fog node is lost: rebuild from the store on an empty cache
store_save "$d" meta/ "$FV_TMP/store-at-gen1"
fv audit --repo "$(repo_of "$d")" --cache "$d/cache" --json > "$FV_TMP/audit-before.json"
rm -rf "$d/cache"
fv recover --repo "$(repo_of "$d")" --cache "$d/cache" > "$FV_TMP/recover.out" || fail "recover failed"
grep -c "recovered" "$FV_TMP/recover.out" >/dev/null || fail "recover printed no summary"
mount_vault "$d"
listing "$m" "$FV_TMP/recovered"
same_listing "$FV_TMP/orig" "$FV_TMP/recovered" "recovered vault"
[ "$(getfattr --absolute-names --only-values -n user.tag "$m/imaging/ct.bin")" = cardiology ] || fail "xattr lost in recovery"
pass "recover on an empty cache restores every file byte-identical (names, modes, sizes, mtimes, links, xattrs)"

# ---- the recovered node goes on writing; a second recovery sees that too
echo "after recovery" > "$m/patients/new.txt"
rm -r "$m/patients/p003"
listing "$m" "$FV_TMP/orig2"
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" >/dev/null || fail "verify fails after recovery"
# The recovered node continues the store's audit chain instead of starting
# a new one over it.
fv audit --repo "$(repo_of "$d")" --cache "$d/cache" --verify > "$FV_TMP/audit-verify" \
    || { cat "$FV_TMP/audit-verify"; fail "audit --verify fails after recovery"; }
fv audit --repo "$(repo_of "$d")" --cache "$d/cache" --json > "$FV_TMP/audit-after.json"
python3 - "$FV_TMP/audit-before.json" "$FV_TMP/audit-after.json" <<'PY' || fail "the audit trail lost history across recovery"
import json, sys
before, after = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert before, "no audit records before the loss"
assert [r["seq"] for r in after] == list(range(1, len(after) + 1)), "sequence numbers are not 1..n"
assert after[:len(before)] == before, "records from before the loss changed or vanished"
assert any(r["op"] == "create" and (r["path"] or "").endswith("/new.txt") for r in after[len(before):]), \
    "the recovered node's own records are missing"
PY
gen2=$(generation "$d")
[ "$gen2" -gt "$gen1" ] || fail "root generation did not grow ($gen1 -> $gen2)"
fv recover --repo "$(repo_of "$d")" --cache "$d/cache2" >/dev/null || fail "second recover failed"
"$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$d/cache2" "$m" >>"$d/mount.log" 2>&1 & MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
for _ in $(seq 100); do mountpoint -q "$m" && break; sleep 0.1; done
listing "$m" "$FV_TMP/recovered2"
same_listing "$FV_TMP/orig2" "$FV_TMP/recovered2" "second recovery"
unmount_vault "$d"
pass "a recovered node continues the journal; recovering again includes its writes"

# ---- two fog nodes: the first writes on; the second (recovered earlier) must not clobber it
mount_vault "$d"
echo "node one goes on" > "$m/patients/later.txt"
# The second node's mount above appended its own audit records to the
# store's trail after the first node's: the chains fork, and the first
# node's uploads are refused (its records stay on its disk) rather than
# overwriting the second node's; its unmount says so and exits non-zero.
umount "$m"
rc=0; wait_exit "$MOUNT_PID" 600 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "node one's unmount ($rc) does not report the forked audit trail"
grep -q "holds other records" "$d/mount.log" || fail "node one's forked audit trail is not reported"
if "$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$d/cache2" "$m" 2>"$FV_TMP/two.err"; then
    fail "a stale second fog node mounted a repository another node has written since"
fi
grep -c "another fog node" "$FV_TMP/two.err" >/dev/null || { cat "$FV_TMP/two.err" >&2; fail "the refusal does not say why"; }
gen2=$(generation "$d")
pass "a fog node whose index is behind the store's journal refuses to mount (no clobbering)"

# ---- rollback: the store serves its older state (root and journal)
store_save "$d" meta/ "$FV_TMP/store-now"
store_restore "$d" meta/ "$FV_TMP/store-at-gen1"
if "$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$d/cache" "$m" 2>"$FV_TMP/rb.err"; then
    fail "mount accepted a rolled-back store"
fi
grep -c "rolled back" "$FV_TMP/rb.err" >/dev/null || { cat "$FV_TMP/rb.err" >&2; fail "rollback refusal does not say so"; }
if fv verify --repo "$(repo_of "$d")" --cache "$d/cache" > "$FV_TMP/rb.verify" 2>&1; then
    fail "verify passes on a rolled-back store"
fi
grep -c "rolled back" "$FV_TMP/rb.verify" >/dev/null || { cat "$FV_TMP/rb.verify" >&2; fail "verify does not report the rollback"; }
if fv recover --repo "$(repo_of "$d")" --cache "$d/cache3" --min-generation "$gen2" 2>"$FV_TMP/rb2.err"; then
    fail "recover accepted a root older than --min-generation"
fi
grep -c "rolled back" "$FV_TMP/rb2.err" >/dev/null || { cat "$FV_TMP/rb2.err" >&2; fail "recover's rollback refusal does not say so"; }
[ ! -e "$d/cache3/meta" ] || fail "a refused recovery left an index behind"
pass "a rolled-back store is refused by the fog node and by recover --min-generation"

# ---- only the root rolled back: the journal after it still chains, nothing is lost
store_restore "$d" meta/ "$FV_TMP/store-now"
store_put "$d" meta/root "$FV_TMP/store-at-gen1/meta/root"
fv recover --repo "$(repo_of "$d")" --cache "$d/cache4" >/dev/null 2>&1 || true
# (the older root may name a snapshot the newer node already replaced: then
# recovery must refuse, not guess; either way it must never give old state)
if [ -e "$d/cache4/meta" ]; then
    "$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$d/cache4" "$m" >>"$d/mount.log" 2>&1 & MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
    for _ in $(seq 100); do mountpoint -q "$m" && break; sleep 0.1; done
    [ -f "$m/patients/new.txt" ] || fail "recovery from a stale root lost journaled writes"
    umount "$m"; wait "$MOUNT_PID" || true
fi
store_put "$d" meta/root "$FV_TMP/store-now/meta/root"
pass "a stale root alone never yields an older state"

# ---- dropped and altered journal objects
d2=$(new_repo node2)
mount_vault "$d2"
for i in 1 2 3 4; do
    mkdir -p "$d2/mnt/batch$i"
    for j in $(seq 20); do echo "$i $j" > "$d2/mnt/batch$i/f$j"; done
    sleep 3  # let each batch become its own journal object (checkpoints commit within ~2 s)
done
unmount_vault "$d2"
n=$(store_ls "$d2" meta/journal/ | wc -l)
[ "$n" -ge 3 ] || fail "expected several journal objects, found $n"
middle=$(store_ls "$d2" meta/journal/ | sed -n 2p)
store_get "$d2" "$middle" "$FV_TMP/middle"
store_rm "$d2" "$middle"
if fv recover --repo "$(repo_of "$d2")" --cache "$d2/cacheX" 2>"$FV_TMP/gap.err"; then
    fail "recover accepted a journal with a missing object"
fi
grep -c "missing" "$FV_TMP/gap.err" >/dev/null || { cat "$FV_TMP/gap.err" >&2; fail "gap refusal does not say so"; }
if fv verify --repo "$(repo_of "$d2")" --cache "$d2/cache" > "$FV_TMP/gap.verify" 2>&1; then
    fail "verify passes with a journal object missing"
fi
grep -c "missing" "$FV_TMP/gap.verify" >/dev/null || { cat "$FV_TMP/gap.verify" >&2; fail "verify does not report the missing journal object"; }
cp "$FV_TMP/middle" "$FV_TMP/middle-altered"
python3 - "$FV_TMP/middle-altered" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(b)
PY
store_put "$d2" "$middle" "$FV_TMP/middle-altered"
if fv recover --repo "$(repo_of "$d2")" --cache "$d2/cacheY" 2>"$FV_TMP/alt.err"; then
    fail "recover accepted an altered journal object"
fi
grep -c "authentication" "$FV_TMP/alt.err" >/dev/null || { cat "$FV_TMP/alt.err" >&2; fail "altered-object refusal does not say so"; }
fv verify --repo "$(repo_of "$d2")" --cache "$d2/cache" > "$FV_TMP/alt.verify" 2>&1 && fail "verify passes with an altered journal object"
grep -c "authentication" "$FV_TMP/alt.verify" >/dev/null || { cat "$FV_TMP/alt.verify" >&2; fail "verify does not report the altered journal object"; }
store_put "$d2" "$middle" "$FV_TMP/middle"
fv recover --repo "$(repo_of "$d2")" --cache "$d2/cacheZ" >/dev/null || fail "recover fails on the repaired journal"
fv verify --repo "$(repo_of "$d2")" --cache "$d2/cache" >/dev/null || fail "verify fails on the repaired journal"
pass "missing and altered journal objects are refused with a clear message"

# ---- kill -9: fsynced files reach the store's journal after the restart
d3=$(new_repo node3)
mount_vault "$d3"
python3 - "$d3/mnt" <<'PY'
import os, sys
for i in range(200):
    with open(os.path.join(sys.argv[1], f"k{i}"), "wb") as f:
        f.write(f"fsynced {i}\n".encode() * 50); f.flush(); os.fsync(f.fileno())
PY
kill9_vault "$d3"
mount_vault "$d3"
listing "$d3/mnt" "$FV_TMP/k-orig"
unmount_vault "$d3"
fv recover --repo "$(repo_of "$d3")" --cache "$d3/cacheR" >/dev/null || fail "recover after kill -9 failed"
"$FOGVAULT" mount --repo "$(repo_of "$d3")" --cache "$d3/cacheR" "$d3/mnt" >>"$d3/mount.log" 2>&1 & MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
for _ in $(seq 100); do mountpoint -q "$d3/mnt" && break; sleep 0.1; done
listing "$d3/mnt" "$FV_TMP/k-rec"
same_listing "$FV_TMP/k-orig" "$FV_TMP/k-rec" "recovery after kill -9"
unmount_vault "$d3"
pass "after kill -9 and restart every fsynced file is recoverable from the store"

# ---- the lost node uploaded journal objects but died before the root naming them
backlog() { fv stats --repo "$(repo_of "$1")" --cache "$2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata_backlog"])'; }
uploaded() { # uploaded DIR CACHE → waits (30 s at most) until the metadata journal is in the store
    for _ in $(seq 300); do [ "$(backlog "$1" "$2")" = 0 ] && return 0; sleep 0.1; done
    fail "the metadata journal did not reach the store within 30 s (backlog $(backlog "$1" "$2"))"
}
d4=$(new_repo node4)
mount_vault "$d4"
mkdir "$d4/mnt/a"; echo one > "$d4/mnt/a/one"; sync
uploaded "$d4" "$d4/cache"
store_get "$d4" meta/root "$FV_TMP/root-early"
echo two > "$d4/mnt/a/two"; sync
uploaded "$d4" "$d4/cache"
unmount_vault "$d4"
store_put "$d4" meta/root "$FV_TMP/root-early"
fv recover --repo "$(repo_of "$d4")" --cache "$d4/cacheR" >/dev/null || fail "recover with journal objects past the root"
"$FOGVAULT" mount --repo "$(repo_of "$d4")" --cache "$d4/cacheR" "$d4/mnt" >>"$d4/mount.log" 2>&1 & MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
for _ in $(seq 100); do mountpoint -q "$d4/mnt" && break; sleep 0.1; done
[ "$(cat "$d4/mnt/a/two")" = two ] || fail "recover dropped the journal objects past the root"
echo three > "$d4/mnt/a/three"; sync
uploaded "$d4" "$d4/cacheR"
unmount_vault "$d4"
fv recover --repo "$(repo_of "$d4")" --cache "$d4/cacheR2" >/dev/null || fail "second recover"
"$FOGVAULT" mount --repo "$(repo_of "$d4")" --cache "$d4/cacheR2" "$d4/mnt" >>"$d4/mount.log" 2>&1 & MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
for _ in $(seq 100); do mountpoint -q "$d4/mnt" && break; sleep 0.1; done
[ "$(cat "$d4/mnt/a/three")" = three ] || fail "a write after the recovery never reached the store"
unmount_vault "$d4"
pass "a node recovered past a root the lost node never put continues the store's journal"
