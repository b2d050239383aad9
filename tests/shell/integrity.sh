#!/usr/bin/env bash
# Tampering with stored objects: a flipped bit, a truncated pack, a deleted
# pack each give EIO on read (never different bytes) and a verify finding
# that names the object and the affected file.
source "$(dirname "$0")/lib.sh"

d=$(new_repo tamper)
mount_vault "$d"
m="$d/mnt"
mkdir "$m/ward"
for f in flip trunc del; do
    # One file per pack: unmount between files seals each pack separately.
    head -c 2000000 /dev/urandom > "$FV_TMP/$f.bin"
    cp "$FV_TMP/$f.bin" "$m/ward/$f.bin"
    unmount_vault "$d"
    mount_vault "$d"
done
unmount_vault "$d"
fv verify --repo "$d/repo" --cache "$d/cache" --deep >/dev/null || fail "verify before tampering"

# Map each file to its pack: the newest pack holds the newest file.
mapfile -t packs < <(cd "$d/repo" && ls -tr packs/*/* )
[ "${#packs[@]}" -eq 3 ] || fail "expected 3 packs, found ${#packs[@]}"
python3 - "$d/repo/${packs[0]}" <<'PY'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(1000); b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 0x01]))
PY
truncate -s 1500000 "$d/repo/${packs[1]}"
rm "$d/repo/${packs[2]}"

mount_vault "$d"
for f in flip trunc del; do
    if out=$(cat "$m/ward/$f.bin" 2>&1 >/dev/null); then
        fail "reading tampered $f.bin succeeded"
    fi
    echo "$out" | grep -q "Input/output error" || fail "expected EIO for $f.bin, got: $out"
    # dd must not return any wrong bytes before the error either: compare what it got.
    dd if="$m/ward/$f.bin" of="$FV_TMP/$f.partial" bs=4096 status=none 2>/dev/null || true
    cmp -n "$(stat -c %s "$FV_TMP/$f.partial")" "$FV_TMP/$f.partial" "$FV_TMP/$f.bin" || fail "$f.bin returned different bytes"
done
pass "flipped, truncated and deleted packs give EIO and never wrong bytes"
unmount_vault "$d"

set +e
fv verify --repo "$d/repo" --cache "$d/cache" > "$FV_TMP/verify.out"; rc=$?
set -e
cat "$FV_TMP/verify.out"
[ "$rc" -eq 1 ] || fail "verify exit code $rc, want 1"
for i in 1 2; do grep -q "DAMAGED ${packs[$i]}" "$FV_TMP/verify.out" || fail "verify did not name ${packs[$i]}"; done
grep -q "affects /ward/trunc.bin" "$FV_TMP/verify.out" || fail "verify did not name trunc.bin"
grep -q "affects /ward/del.bin" "$FV_TMP/verify.out" || fail "verify did not name del.bin"
pass "verify names the truncated and deleted packs and their files"

set +e
fv verify --repo "$d/repo" --cache "$d/cache" --deep > "$FV_TMP/deep.out"; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "verify --deep exit code $rc"
grep -q "DAMAGED ${packs[0]}" "$FV_TMP/deep.out" || { cat "$FV_TMP/deep.out"; fail "verify --deep missed the flipped bit"; }
grep -q "affects /ward/flip.bin" "$FV_TMP/deep.out" || fail "verify --deep did not name flip.bin"
pass "verify --deep finds the flipped bit and names the file"

# A tampered config object: unlock fails cleanly.
sed -i 's/"version": 1/"version": 7/' "$d/repo/config"
if fv stats --repo "$d/repo" --cache "$d/cache" 2>"$FV_TMP/err"; then fail "stats with tampered config"; fi
grep -q "unsupported repository format" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear error"; }
pass "a tampered config is refused with a clear error"
