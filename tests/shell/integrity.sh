#!/usr/bin/env bash
# Tampering with stored objects: a flipped bit, a truncated pack, a deleted
# pack each give EIO on read (never different bytes) and a verify finding
# that names the object and the affected file. The objects are altered
# through the store itself (files of the repository directory, or signed S3
# requests to Garage), as a thief with write access to the bucket would.
source "$(dirname "$0")/lib.sh"

d=$(new_repo tamper)
repo=$(repo_of "$d")
mount_vault "$d"
m="$d/mnt"
mkdir "$m/ward"
packs=()
for f in flip trunc del; do
    # One file per pack: unmount between files seals each pack separately.
    head -c 2000000 /dev/urandom > "$FV_TMP/$f.bin"
    cp "$FV_TMP/$f.bin" "$m/ward/$f.bin"
    # The file's pack is the one its unmount adds.
    seal_pack "$d" "writing $f.bin"
    packs+=("$SEALED_PACK")
done
unmount_vault "$d"
[ "$(store_ls "$d" packs/ | wc -l)" -eq 3 ] || fail "expected 3 packs, found $(store_ls "$d" packs/ | wc -l)"
fv verify --repo "$repo" --cache "$d/cache" --deep >/dev/null || fail "verify before tampering"
# Every block of every pack: the sample MACs taken while the packs were
# written match what the store holds (3 packs of ~2 MB: ~100 blocks).
fv verify --repo "$repo" --cache "$d/cache" --sample 2000 >"$FV_TMP/sample.out" 2>&1 ||
    { cat "$FV_TMP/sample.out"; fail "verify --sample before tampering"; }
grep -q "sampled blocks: no problems found" "$FV_TMP/sample.out" || { cat "$FV_TMP/sample.out"; fail "verify --sample output"; }

store_get "$d" "${packs[0]}" "$FV_TMP/pack0"
python3 - "$FV_TMP/pack0" <<'PY'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(1000); b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 0x01]))
PY
store_put "$d" "${packs[0]}" "$FV_TMP/pack0"
store_get "$d" "${packs[1]}" "$FV_TMP/pack1"
truncate -s 1500000 "$FV_TMP/pack1"
store_put "$d" "${packs[1]}" "$FV_TMP/pack1"
store_rm "$d" "${packs[2]}"
store_get "$d" "${packs[1]}" "$FV_TMP/pack1.check"
[ "$(stat -c %s "$FV_TMP/pack1.check")" -eq 1500000 ] || fail "the store did not take the truncated pack"
[ -z "$(store_ls "$d" "${packs[2]}")" ] || fail "the store did not delete ${packs[2]}"

mount_vault "$d"
for f in flip trunc del; do
    if out=$(cat "$m/ward/$f.bin" 2>&1 >/dev/null); then
        fail "reading tampered $f.bin succeeded"
    fi
    grep -c "Input/output error" <<<"$out" >/dev/null || fail "expected EIO for $f.bin, got: $out"
    # dd must not return any wrong bytes before the error either: compare what it got.
    dd if="$m/ward/$f.bin" of="$FV_TMP/$f.partial" bs=4096 status=none 2>/dev/null || true
    cmp -n "$(stat -c %s "$FV_TMP/$f.partial")" "$FV_TMP/$f.partial" "$FV_TMP/$f.bin" || fail "$f.bin returned different bytes"
done
pass "flipped, truncated and deleted packs give EIO and never wrong bytes"
unmount_vault "$d"

set +e
fv verify --repo "$repo" --cache "$d/cache" > "$FV_TMP/verify.out"; rc=$?
set -e
cat "$FV_TMP/verify.out"
[ "$rc" -eq 1 ] || fail "verify exit code $rc, want 1"
for i in 1 2; do grep -c >/dev/null "DAMAGED ${packs[$i]}" "$FV_TMP/verify.out" || fail "verify did not name ${packs[$i]}"; done
grep -c >/dev/null "affects /ward/trunc.bin" "$FV_TMP/verify.out" || fail "verify did not name trunc.bin"
grep -c >/dev/null "affects /ward/del.bin" "$FV_TMP/verify.out" || fail "verify did not name del.bin"
pass "verify names the truncated and deleted packs and their files"

set +e
fv verify --repo "$repo" --cache "$d/cache" --deep > "$FV_TMP/deep.out"; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "verify --deep exit code $rc"
grep -c >/dev/null "DAMAGED ${packs[0]}" "$FV_TMP/deep.out" || { cat "$FV_TMP/deep.out"; fail "verify --deep missed the flipped bit"; }
grep -c >/dev/null "affects /ward/flip.bin" "$FV_TMP/deep.out" || fail "verify --deep did not name flip.bin"
pass "verify --deep finds the flipped bit and names the file"

# A tampered config object: unlock fails cleanly.
store_get "$d" config "$FV_TMP/config"
sed -i 's/"version": 2/"version": 7/' "$FV_TMP/config"
grep -c >/dev/null '"version": 7' "$FV_TMP/config" || fail "could not alter the config"
store_put "$d" config "$FV_TMP/config"
if fv stats --repo "$repo" --cache "$d/cache" 2>"$FV_TMP/err"; then fail "stats with tampered config"; fi
grep -c >/dev/null "unsupported repository format" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear error"; }
pass "a tampered config is refused with a clear error"
