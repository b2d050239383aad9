#!/usr/bin/env bash
# Round trips with everyday tools: cp -a, rsync -a, tar in and out, diff -r,
# across a remount, then verify --deep.
source "$(dirname "$0")/lib.sh"

d=$(new_repo rt)
src="$FV_TMP/src"
mkdir -p "$src/patients/p001/ct" "$src/patients/p002" "$src/empty-dir"
# Real files of various sizes plus generated ones.
cp -a /usr/share/doc/bash "$src/docs" 2>/dev/null || true
cp -a /usr/share/common-licenses "$src/licenses"
head -c 3000000 /dev/urandom > "$src/patients/p001/ct/slice-001.raw"
python3 -c "import sys; sys.stdout.write('MSH|^~\\\\&|HIS|RIH|EKG|EKG|199904140038||ADT^A01||P|2.2\n' * 20000)" > "$src/patients/p002/adt.hl7"
printf '{"resourceType":"Patient","id":"synthetic"}\n' > "$src/patients/p002/patient.json"
: > "$src/patients/empty.txt"
ln -s ct/slice-001.raw "$src/patients/p001/latest"
ln "$src/patients/p002/adt.hl7" "$src/patients/p002/adt-hardlink.hl7"
chmod 600 "$src/patients/p002/patient.json"
chmod 750 "$src/patients/p001"
setfattr -n user.origin -v "synthetic-test" "$src/patients/p002/patient.json"
touch -d '2001-02-03 04:05:06' "$src/patients/empty.txt"

mount_vault "$d"
m="$d/mnt"
cp -a "$src" "$m/cp"
diff -r "$src" "$m/cp" || fail "cp -a copy differs"
[ "$(getfattr --only-values -n user.origin "$m/cp/patients/p002/patient.json")" = synthetic-test ] || fail "xattr lost"
[ "$(stat -c %a "$m/cp/patients/p002/patient.json")" = 600 ] || fail "mode lost"
[ "$(stat -c %Y "$m/cp/patients/empty.txt")" = "$(stat -c %Y "$src/patients/empty.txt")" ] || fail "mtime lost"
[ "$(stat -c %h "$m/cp/patients/p002/adt.hl7")" = 2 ] || fail "hard link count"
[ "$(readlink "$m/cp/patients/p001/latest")" = ct/slice-001.raw ] || fail "symlink target"
pass "cp -a round trip keeps content, modes, times, xattrs, links"

rsync -aHAX "$src/" "$m/rsync/"
diff -r "$src" "$m/rsync" || fail "rsync copy differs"
rsync -aHAXc --dry-run --itemize-changes "$src/" "$m/rsync/" > "$FV_TMP/rsync.out"
[ ! -s "$FV_TMP/rsync.out" ] || { cat "$FV_TMP/rsync.out"; fail "rsync sees differences after copy"; }
pass "rsync -aHAX round trip (checksum dry run clean)"

tar -C "$src" -cf "$FV_TMP/src.tar" .
mkdir "$m/untar"
tar -C "$m/untar" -xf "$FV_TMP/src.tar"
diff -r "$src" "$m/untar" || fail "untar differs"
tar -C "$m/untar" -cf "$FV_TMP/back.tar" .
mkdir "$FV_TMP/back" && tar -C "$FV_TMP/back" -xf "$FV_TMP/back.tar"
diff -r "$src" "$FV_TMP/back" || fail "tar out of the mount differs"
pass "tar in and out"

unmount_vault "$d"
mount_vault "$d"
for t in cp rsync untar; do diff -r "$src" "$m/$t" || fail "$t differs after remount"; done
pass "all copies identical after remount"

# Edits, renames and deletes behave like a local drive.
echo "addendum" >> "$m/cp/patients/p002/patient.json"
mv "$m/cp/patients/p001" "$m/cp/patients/p001-renamed"
rm -r "$m/rsync/docs" 2>/dev/null || true
rm -r "$m/rsync/licenses"
[ ! -e "$m/rsync/licenses" ] || fail "rm -r left files"
tail -n1 "$m/cp/patients/p002/patient.json" | grep -q addendum || fail "append lost"
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after round trips"
fv stats --repo "$(repo_of "$d")" --cache "$d/cache" --json > "$FV_TMP/stats.json"
python3 - "$FV_TMP/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["logical_bytes"] > 0 and s["files"] > 0 and s["chunks"] > 0, s
# Three copies of the same tree: dedup must keep unique bytes well below logical.
assert s["unique_bytes"] * 2 < s["logical_bytes"], s
PY
pass "verify --deep clean; stats show dedup across copies"

# Stolen disk / curious cloud: with the daemon stopped, neither the store nor
# the fog node's cache (LMDB, journal) holds a known name or known content.
for needle in slice-001.raw adt-hardlink.hl7 patient.json p001-renamed 'ADT^A01' '"resourceType":"Patient"' synthetic-test; do
    if grep -rlaF -- "$needle" "$(store_dir "$d")" "$d/cache" >/dev/null; then
        fail "plaintext '$needle' found in the store or cache"
    fi
done
pass "no file name or content in plaintext in the store or the cache"
