#!/usr/bin/env bash
# fogvault on a real S3 server (single-node Garage on loopback): tampered,
# truncated and deleted objects in the bucket give EIO and verify findings;
# wrong credentials and an unreachable endpoint give clear errors.
# (The general suites also run against Garage: FV_STORE=s3 in scripts/test.sh.)
FV_STORE=s3
source "$(dirname "$0")/lib.sh"

d=$(new_repo s3)
repo=$(repo_of "$d")
prefix=${repo#s3://$GARAGE_BUCKET/}
mount_vault "$d"
m="$d/mnt"
for i in 1 2 3; do head -c 20000000 /dev/urandom > "$m/scan$i.bin"; done
cp "$m"/scan*.bin "$FV_TMP/"
s3_keys "$prefix/" > "$FV_TMP/keys.txt"
grep -c >/dev/null "^$prefix/config$" "$FV_TMP/keys.txt" || { cat "$FV_TMP/keys.txt"; fail "config object not in the bucket"; }
unmount_vault "$d"
packs=$(s3_keys "$prefix/packs/")
[ "$(echo "$packs" | wc -l)" -ge 3 ] || fail "expected at least 3 packs in the bucket, got: $packs"
fv verify --repo "$repo" --cache "$d/cache" --sample 20 > "$FV_TMP/sample.out" || { cat "$FV_TMP/sample.out"; fail "verify --sample on a healthy bucket"; }
grep -c >/dev/null "20 sampled blocks: no problems found" "$FV_TMP/sample.out" || { cat "$FV_TMP/sample.out"; fail "verify --sample output"; }
pass "a vault on Garage: config and packs are objects in the bucket; verify --sample 20 passes"

# Tamper with one pack (flip a byte), truncate another, delete a third.
p1=$(echo "$packs" | sed -n 1p); p2=$(echo "$packs" | sed -n 2p); p3=$(echo "$packs" | sed -n 3p)
s3_req GET "$p1" -o "$FV_TMP/p1"
python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[len(b)//2]^=1; open(sys.argv[1],'wb').write(b)" "$FV_TMP/p1"
s3_req PUT "$p1" --data-binary @"$FV_TMP/p1" -o /dev/null
s3_req GET "$p2" -o "$FV_TMP/p2"; head -c 1000 "$FV_TMP/p2" > "$FV_TMP/p2t"
s3_req PUT "$p2" --data-binary @"$FV_TMP/p2t" -o /dev/null
s3_req DELETE "$p3" -o /dev/null
mount_vault "$d"
bad=0
for i in 1 2 3; do
    if out=$(cat "$m/scan$i.bin" 2>&1 >/dev/null); then
        cmp -s "$m/scan$i.bin" "$FV_TMP/scan$i.bin" || fail "scan$i.bin read back different bytes"
    else
        echo "$out" | grep -c >/dev/null "Input/output error" || fail "expected EIO for scan$i.bin, got: $out"
        bad=$((bad + 1))
    fi
done
[ "$bad" -ge 1 ] || fail "no read failed although three packs were damaged"
unmount_vault "$d"
if fv verify --repo "$repo" --cache "$d/cache" --deep > "$FV_TMP/verify.out" 2>&1; then fail "verify passed a damaged bucket"; fi
for p in "$p1" "$p2" "$p3"; do
    grep -c >/dev/null "DAMAGED ${p#$prefix/}" "$FV_TMP/verify.out" || { cat "$FV_TMP/verify.out"; fail "verify did not name $p"; }
done
pass "flipped, truncated and deleted objects in the bucket: EIO (never other bytes) and verify names each"

# Proof of storage without downloading everything: a few sampled blocks catch
# the deleted and the truncated pack at once, and a pack whose bytes were all
# replaced (same size) on the first sampled block.
s3_req PUT "$p1" --data-binary @<(head -c "$(stat -c %s "$FV_TMP/p1")" /dev/urandom) -o /dev/null
if fv verify --repo "$repo" --cache "$d/cache" --sample 3 > "$FV_TMP/sample.out" 2>&1; then fail "verify --sample passed a damaged bucket"; fi
for p in "$p1" "$p2" "$p3"; do
    grep -c >/dev/null "DAMAGED ${p#$prefix/}" "$FV_TMP/sample.out" || { cat "$FV_TMP/sample.out"; fail "verify --sample did not name $p"; }
done
grep -c >/dev/null "affects /scan" "$FV_TMP/sample.out" || { cat "$FV_TMP/sample.out"; fail "verify --sample names no files"; }
pass "verify --sample 3 names the replaced, truncated and deleted packs and the files they hold"

# Wrong credentials and an unreachable endpoint: clear errors, no hang.
if AWS_SECRET_ACCESS_KEY=wrong fv stats --repo "$repo" --cache "$d/cache" 2>"$FV_TMP/err"; then fail "wrong S3 secret accepted"; fi
grep -c >/dev/null "object store" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear error for a wrong S3 secret"; }
start=$(date +%s)
if AWS_ENDPOINT_URL=http://127.0.0.1:9 timeout 180 "$FOGVAULT" init --repo "s3://$GARAGE_BUCKET/nowhere" 2>"$FV_TMP/err"; then fail "init against a closed port succeeded"; fi
grep -c >/dev/null -i "connect\|refused\|error sending" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear error for an unreachable endpoint"; }
pass "a wrong S3 secret and an unreachable endpoint give clear errors (after $(( $(date +%s) - start )) s of retries)"
if fv init --repo "s3://" 2>"$FV_TMP/err"; then fail "s3:// without a bucket accepted"; fi
grep -c >/dev/null "s3://bucket/prefix" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear error for s3:// without a bucket"; }
pass "a malformed S3 URL gives a clear error"
