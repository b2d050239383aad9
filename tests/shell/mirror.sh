#!/usr/bin/env bash
# A repository mirrored over two clouds: a local directory and a bucket on a
# real Garage server. Every object lands in both; when the bucket loses
# everything the vault keeps reading and writing, verify names what is
# missing where, and repair restores full redundancy; when the S3 server
# hangs, or the local store vanishes, the vault reads from the other store
# and writes go on.
FV_STORE=s3
source "$(dirname "$0")/lib.sh"

d="$FV_TMP/m"; mkdir -p "$d/mnt"
prefix="$(basename "$FV_TMP")-mirror"
# Reads go to the fastest healthy store (here the local one); the sections
# below take each store away in turn so both fallbacks are exercised.
repo="mirror:s3://$GARAGE_BUCKET/$prefix,$d/local-cloud"
fv init --repo "$repo" >/dev/null
mountm() {
    "$FOGVAULT" mount --repo "$repo" --cache "$d/cache" "$d/mnt" >>"$d/mount.log" 2>&1 &
    MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID"); FV_MOUNTS+=("$d/mnt")
    for _ in $(seq 1 100); do mountpoint -q "$d/mnt" && return 0; sleep 0.1; done
    cat "$d/mount.log" >&2; fail "mirror mount did not come up"
}
m="$d/mnt"
mountm
for i in 1 2 3; do head -c 12000000 /dev/urandom > "$FV_TMP/f$i.bin"; cp "$FV_TMP/f$i.bin" "$m/f$i.bin"; done
cp -a /usr/share/doc/bash "$m/doc"
unmount_vault "$d"
local_objs=$(cd "$d/local-cloud" && find . -type f | sed 's|^\./||' | sort)
s3_objs=$(s3_keys "$prefix/" | sed "s|^$prefix/||" | sort)
[ -n "$local_objs" ] && [ "$local_objs" = "$s3_objs" ] || { echo "local: $local_objs"; echo "s3: $s3_objs"; fail "the two stores differ"; }
fv verify --repo "$repo" --cache "$d/cache" --deep >/dev/null || fail "verify of a healthy mirror"
pass "every object is in both stores ($(echo "$local_objs" | wc -l) objects); verify --deep checks both"

# The bucket loses everything: the vault works on, verify reports, repair restores.
for k in $(s3_keys "$prefix/"); do s3_req DELETE "$k" -o /dev/null; done
[ -z "$(s3_keys "$prefix/")" ] || fail "bucket not emptied"
mountm
for i in 1 2 3; do cmp "$FV_TMP/f$i.bin" "$m/f$i.bin" || fail "f$i.bin after the bucket was emptied"; done
diff -r /usr/share/doc/bash "$m/doc" || fail "doc tree after the bucket was emptied"
head -c 5000000 /dev/urandom > "$FV_TMP/new.bin"; cp "$FV_TMP/new.bin" "$m/new.bin"
unmount_vault "$d"
if fv verify --repo "$repo" --cache "$d/cache" > "$FV_TMP/verify.out" 2>&1; then fail "verify passed with one store emptied"; fi
grep -c >/dev/null "DAMAGED s3://$GARAGE_BUCKET/$prefix: packs/.*missing from the store" "$FV_TMP/verify.out" \
    || { cat "$FV_TMP/verify.out"; fail "verify did not name the missing packs on the emptied store"; }
! grep -c >/dev/null "DAMAGED $d/local-cloud" "$FV_TMP/verify.out" || fail "verify blamed the healthy store"
fv repair --repo "$repo" > "$FV_TMP/repair.out" || { cat "$FV_TMP/repair.out"; fail "repair"; }
grep -c >/dev/null "restored config on s3://" "$FV_TMP/repair.out" || { cat "$FV_TMP/repair.out"; fail "repair did not restore config"; }
fv verify --repo "$repo" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after repair"
[ "$(s3_keys "$prefix/" | wc -l)" = "$(cd "$d/local-cloud" && find . -type f | wc -l)" ] || fail "object counts differ after repair"
pass "with the bucket emptied the vault reads and writes on; verify names the losses; repair restores redundancy"

# The S3 server hangs: reads come from the local store, writes go on.
sync; echo 3 > /proc/sys/vm/drop_caches
mountm
kill -STOP "$GARAGE_PID"
trap 'kill -CONT "$GARAGE_PID" 2>/dev/null; cleanup' EXIT
start=$(date +%s)
for i in 1 2 3; do timeout 120 cmp "$FV_TMP/f$i.bin" "$m/f$i.bin" || fail "f$i.bin with S3 hung"; done
head -c 5000000 /dev/urandom > "$FV_TMP/during.bin"
timeout 120 cp "$FV_TMP/during.bin" "$m/during.bin" || fail "write with S3 hung"
timeout 120 sync "$m/during.bin" || fail "fsync with S3 hung"
pass "with the S3 server hung, reads fall back to the local store and writes go on ($(( $(date +%s) - start )) s)"
kill -CONT "$GARAGE_PID"
unmount_vault "$d"
fv repair --repo "$repo" >/dev/null || fail "repair after the hang"
fv verify --repo "$repo" --cache "$d/cache" --deep >/dev/null || fail "verify after the hang and repair"
mountm
cmp "$FV_TMP/during.bin" "$m/during.bin" || fail "during.bin after the hang"
unmount_vault "$d"
pass "after the hang, repair and verify --deep leave both stores whole; the file written during it is intact"

# The local store vanishes (its directory replaced by an empty one): reads
# come from S3, writes go on, repair restores the local copy.
if mountpoint -q "$m"; then unmount_vault "$d"; fi
mv "$d/local-cloud" "$d/local-gone"
mkdir "$d/local-cloud"
sync; echo 3 > /proc/sys/vm/drop_caches
mountm
for i in 1 2 3; do cmp "$FV_TMP/f$i.bin" "$m/f$i.bin" || fail "f$i.bin with the local store gone"; done
cmp "$FV_TMP/during.bin" "$m/during.bin" || fail "during.bin with the local store gone"
head -c 3000000 /dev/urandom > "$FV_TMP/late.bin"; cp "$FV_TMP/late.bin" "$m/late.bin"
unmount_vault "$d"
fv repair --repo "$repo" >/dev/null || fail "repair of the vanished local store"
fv verify --repo "$repo" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after restoring the local store"
[ "$(s3_keys "$prefix/" | wc -l)" = "$(cd "$d/local-cloud" && find . -type f | wc -l)" ] || fail "object counts differ after the local repair"
pass "with the local store gone the vault reads from S3 and writes on; repair restores it"

# gc on a degraded mirror: a repacked pack that reached one store only must
# not replace a pack both stores hold. The local store's packs/ becomes a
# file, so new packs land on S3 alone.
mountm
head -c 1000000 /dev/urandom > "$FV_TMP/x1.bin"; cp "$FV_TMP/x1.bin" "$m/x1.bin"
head -c 3000000 /dev/urandom > "$m/x2.bin"
s3_keys "$prefix/packs/" | sort > "$FV_TMP/packs.before"
unmount_vault "$d"   # seals x1 and x2 into one pack
sparse=$(s3_keys "$prefix/packs/" | sort | comm -13 "$FV_TMP/packs.before" -)
[ "$(echo "$sparse" | wc -l)" -eq 1 ] || fail "x1 and x2 went into more than one pack: $sparse"
mountm
rm "$m/x2.bin"; sync
mv "$d/local-cloud/packs" "$d/local-packs-off"; touch "$d/local-cloud/packs"
if fv gc --repo "$repo" --cache "$d/cache" > "$FV_TMP/gcm.out" 2> "$FV_TMP/gcm.err"; then
    cat "$FV_TMP/gcm.out"; fail "gc on a degraded mirror exited 0 although it kept a sparse pack"
fi
grep -q "lacks a repacked pack" "$FV_TMP/gcm.err" || { cat "$FV_TMP/gcm.out" "$FV_TMP/gcm.err"; fail "gc did not say why it kept the pack"; }
s3_keys "$prefix/packs/" | grep -qx "$sparse" || fail "gc deleted a pack whose data now has one copy only"
cmp "$FV_TMP/x1.bin" "$m/x1.bin" || fail "x1.bin after gc on the degraded mirror"
unmount_vault "$d"
rm "$d/local-cloud/packs"; mv "$d/local-packs-off" "$d/local-cloud/packs"
fv repair --repo "$repo" >/dev/null || fail "repair after the degraded gc"
fv gc --repo "$repo" --cache "$d/cache" > "$FV_TMP/gcm2.out" || { cat "$FV_TMP/gcm2.out"; fail "gc on the repaired mirror"; }
s3_keys "$prefix/packs/" | grep -qx "$sparse" && fail "gc on the repaired mirror kept the sparse pack"
[ -e "$d/local-cloud/${sparse#"$prefix/"}" ] && fail "the sparse pack is still in the local store"
fv verify --repo "$repo" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after gc on the mirror"
mountm
cmp "$FV_TMP/x1.bin" "$m/x1.bin" || fail "x1.bin after the repack"
unmount_vault "$d"
pass "gc on a degraded mirror keeps sparse packs until both stores hold their new copies; after repair it repacks them"
