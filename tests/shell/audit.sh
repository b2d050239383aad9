#!/usr/bin/env bash
# The audit trail: every operation type appears with the right user and
# file; removing, editing or reordering a record, in the fog node's copy or
# the store's, is caught by `audit --verify`; kill -9 during heavy access
# loses no record of a completed operation.
source "$(dirname "$0")/lib.sh"

users="alice bob dave"
for u in $users; do id "$u" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$u"; done
chmod 755 "$FV_TMP"
as() { local who="$1"; shift; setpriv --reuid "$who" --regid "$who" --init-groups -- "$@"; }
export FOGVAULT_ADMIN_PASSPHRASE="admin pass"
d="$FV_TMP/a"; mkdir -p "$d/mnt" "$FV_TMP/keys"; chmod 755 "$d" "$FV_TMP/keys"
repo=$(repo_of "$d")
fv init --repo "$repo" --admin-key "$FV_TMP/admin.key" >/dev/null
adm() { fv admin "$@" --repo "$repo" --admin-key "$FV_TMP/admin.key"; }
for spec in alice:physician bob:clerk dave:emergency; do
    u=${spec%%:*}
    FOGVAULT_KEY_PASSPHRASE="$u-pw" adm user add "$u" --role "${spec#*:}" --key-out "$FV_TMP/keys/$u.key" >/dev/null
    chown "$u" "$FV_TMP/keys/$u.key"
done
adm folder create oncology >/dev/null
adm grant --user alice --folder oncology --rights rw >/dev/null
mount_vault "$d" --allow-other
m="$d/mnt"
login() { local u="$1"; shift; as "$u" env FOGVAULT_KEY_PASSPHRASE="$u-pw" "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/$u.key" "$@"; }

login alice >/dev/null
as alice mkdir "$m/oncology/DOE_JANE_1234567"
as alice sh -c "echo 'biopsy: benign' > '$m/oncology/DOE_JANE_1234567/path.txt'"
as alice cat "$m/oncology/DOE_JANE_1234567/path.txt" >/dev/null
as alice sh -c "echo 'addendum' >> '$m/oncology/DOE_JANE_1234567/path.txt'"
as alice chmod 600 "$m/oncology/DOE_JANE_1234567/path.txt"
as alice mv "$m/oncology/DOE_JANE_1234567/path.txt" "$m/oncology/DOE_JANE_1234567/pathology.txt"
as alice sh -c "echo x > '$m/oncology/DOE_JANE_1234567/tmp.txt'"
as alice rm "$m/oncology/DOE_JANE_1234567/tmp.txt"
login bob >/dev/null 2>&1 || true
as bob ls "$m/oncology" >/dev/null 2>&1 && fail "bob lists a folder he has no grant for"
# Where the daemon checks walks (FV_WALK_CHECK=daemon) it refuses and records
# this one; the kernel's access list refuses it without the daemon.
login dave --break-glass --reason "code blue, bed 4" >/dev/null
# Breaking the glass is loudly audited: an alert (the reason stays in the
# sealed trail), and the session stays usable.
glass=$(grep '"rule":"break-glass"' "$d/cache/alerts.log" || true)
echo "$glass" | grep -q '"user":"dave".*"locked":false' || { echo "$glass"; fail "breaking the glass raised no alert"; }
fv sessions --mount "$m" > "$FV_TMP/sessions"
grep "user=dave" "$FV_TMP/sessions" | grep -q BREAK-GLASS || { cat "$FV_TMP/sessions"; fail "dave's break-glass session is not live"; }
! grep -A1 "user=dave" "$FV_TMP/sessions" | grep -q LOCKED || { cat "$FV_TMP/sessions"; fail "breaking the glass locked dave"; }
adm grant --user bob --folder oncology --rights r >/dev/null
sleep 1.5   # the daemon adopts the new policy
login bob >/dev/null
# alice's re-read is served from the page cache; bob's first read of the
# same file must still reach the daemon (and the trail), not alice's pages.
as alice sh -c "echo 'ward round' > '$m/oncology/DOE_JANE_1234567/note.txt'"
as alice cat "$m/oncology/DOE_JANE_1234567/note.txt" >/dev/null
as alice cat "$m/oncology/DOE_JANE_1234567/note.txt" >/dev/null
as bob cat "$m/oncology/DOE_JANE_1234567/note.txt" >/dev/null
# The kernel refuses walks into a folder by users without a session (its
# access list); what reaches the daemon and is refused there is recorded:
# bob (read-only) opening a file whose mode lets everyone write.
as alice sh -c "echo shared > '$m/oncology/DOE_JANE_1234567/shared.txt'; chmod 666 '$m/oncology/DOE_JANE_1234567/shared.txt'"
if as bob sh -c "echo x >> '$m/oncology/DOE_JANE_1234567/shared.txt'" 2>/dev/null; then fail "bob (r) wrote"; fi
as alice "$FOGVAULT" logout --mount "$m" >/dev/null
# A session that expires ends in the trail too.
bobs() { fv sessions --mount "$m" | grep -c "user=bob" || true; }
before=$(bobs)
login bob --ttl 1 >/dev/null
for _ in $(seq 40); do [ "$(bobs)" -le "$before" ] && break; sleep 0.25; done
[ "$(bobs)" -le "$before" ] || { fv sessions --mount "$m"; fail "bob's 1-second session did not expire"; }
sleep 1.5   # the daemon drops expired sessions (and records it) every 0.5 s
unmount_vault "$d"

fv audit --repo "$repo" --cache "$d/cache" --json > "$FV_TMP/audit.json"
python3 - "$FV_TMP/audit.json" <<'PY' || fail "operation types missing from the audit trail"
import json, os, sys
recs = json.load(open(sys.argv[1]))
def has(op, user=None, path=None, detail=None):
    for r in recs:
        if r["op"] == op and (user is None or r["user"] == user) \
           and (path is None or (r["path"] or "").endswith(path)) \
           and (detail is None or detail in (r["detail"] or "")):
            return True
    sys.exit(f"no {op} record (user={user}, path={path}, detail={detail})")
P = "/oncology/DOE_JANE_1234567"
has("login", "alice")
has("create", "alice", P)
has("create", "alice", P + "/path.txt")
has("open", "alice", P + "/path.txt", "read")
has("read", "alice", P + "/path.txt")
has("write", "alice", P + "/path.txt")
has("permission", "alice", P + "/path.txt", "chmod")
has("rename", "alice", P + "/path.txt", "pathology.txt")
has("open", "bob", P + "/note.txt", "read")
has("read", "bob", P + "/note.txt")
has("delete", "alice", P + "/tmp.txt")
has("denied", "bob", P + "/shared.txt")
if os.environ.get("FV_WALK_CHECK") == "daemon":
    has("denied", None, "/oncology")
has("break-glass", "dave", None, "code blue")
has("alert", "dave", None, "break-glass: emergency access to 1 folder(s)")
has("policy-change", None, None, "policy v")
has("logout", "alice")
has("logout", "bob", None, "expired")
has("mount"); has("unmount")
seqs = [r["seq"] for r in recs]
assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers are not 1..n"
print(f"  {len(recs)} records, every operation type present")
PY
fv audit --repo "$repo" --cache "$d/cache" --user alice --patient DOE_JANE_1234567 > "$FV_TMP/filtered"
grep -c "pathology.txt" "$FV_TMP/filtered" >/dev/null || fail "--patient filter lost records"
! grep -c " user=dave " "$FV_TMP/filtered" >/dev/null || fail "--user filter let other users through"
fv audit --repo "$repo" --cache "$d/cache" --verify > "$FV_TMP/verify.ok" || { cat "$FV_TMP/verify.ok"; fail "verify of an intact trail"; }
for needle in DOE_JANE biopsy pathology "code blue"; do
    if grep -rqaF "$needle" "$d/cache" "$(store_dir "$d")"; then fail "'$needle' readable on disk"; fi
done
pass "every operation type is recorded with its user and file; filters work; nothing readable on disk"

# Tampering, one case at a time, each undone before the next.
log="$d/cache/audit/log"
cp "$log" "$FV_TMP/log.orig"
frames() { # frames LOG OUT MODE → rewrite the log's frames (drop / swap / flip one in the middle)
    python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
b = open(src, "rb").read(); fr = []; i = 0
while i + 4 <= len(b):
    n = struct.unpack_from("<I", b, i)[0]; fr.append(b[i:i + 4 + n]); i += 4 + n
k = len(fr) // 2
if mode == "drop": del fr[k]
elif mode == "swap": fr[k], fr[k + 1] = fr[k + 1], fr[k]
elif mode == "flip": x = bytearray(fr[k]); x[len(x) // 2] ^= 1; fr[k] = bytes(x)
elif mode == "truncate": fr = fr[:k]
open(dst, "wb").write(b"".join(fr))
PY
}
expect_caught() { # what
    if fv audit --repo "$repo" --cache "$d/cache" --verify > "$FV_TMP/v.out" 2>&1; then
        cat "$FV_TMP/v.out"; fail "audit --verify missed: $1"
    fi
    grep -c "DAMAGED" "$FV_TMP/v.out" >/dev/null || { cat "$FV_TMP/v.out"; fail "no finding named for: $1"; }
}
for mode in drop swap flip truncate; do
    frames "$FV_TMP/log.orig" "$log" "$mode"
    expect_caught "fog node's log: $mode a record"
    cp "$FV_TMP/log.orig" "$log"
done
# The store's copy, altered through the store (files, or signed S3 requests).
seg=$(store_ls "$d" audit/seg/ | head -1)
[ -n "$seg" ] || fail "no audit segment in the store"
store_get "$d" "$seg" "$FV_TMP/seg.orig"
for mode in drop swap flip truncate; do
    frames "$FV_TMP/seg.orig" "$FV_TMP/seg.bad" "$mode"
    store_put "$d" "$seg" "$FV_TMP/seg.bad"
    expect_caught "store's copy: $mode a record"
    store_put "$d" "$seg" "$FV_TMP/seg.orig"
done
cp=$(store_ls "$d" audit/checkpoint/ | tail -1)
[ -n "$cp" ] || fail "no audit checkpoint in the store"
store_get "$d" "$cp" "$FV_TMP/cp.orig"
sed 's/"last":[0-9]*/"last":1/' "$FV_TMP/cp.orig" > "$FV_TMP/cp.bad"
cmp -s "$FV_TMP/cp.orig" "$FV_TMP/cp.bad" && fail "could not alter the checkpoint"
store_put "$d" "$cp" "$FV_TMP/cp.bad"
expect_caught "store's checkpoint altered"
store_put "$d" "$cp" "$FV_TMP/cp.orig"
fv audit --repo "$repo" --cache "$d/cache" --verify >/dev/null || fail "verify after undoing every tampering"
pass "removed, reordered, altered or truncated records are caught in the fog node's and the store's copy; forged checkpoints too"

# kill -9 during heavy access: every completed operation has its record.
mount_vault "$d"
python3 - "$m" "$FV_TMP/done" <<'PY' &
import os, sys
root, done = sys.argv[1], sys.argv[2]
os.makedirs(f"{root}/busy", exist_ok=True)
with open(done, "w") as man:
    i = 0
    try:
        while True:
            p = f"{root}/busy/f{i:05}"
            with open(p, "wb") as f:
                f.write(b"x" * 3000)
            with open(p, "rb") as f:
                f.read()
            man.write(f"/busy/f{i:05}\n"); man.flush()
            i += 1
    except OSError:
        pass
PY
writer=$!
sleep 3
kill9_vault "$d"
wait "$writer" || true
n=$(wc -l < "$FV_TMP/done")
[ "$n" -gt 50 ] || fail "only $n operations before the crash"
mount_vault "$d"
unmount_vault "$d"
fv audit --repo "$repo" --cache "$d/cache" --json > "$FV_TMP/after.json"
python3 - "$FV_TMP/after.json" "$FV_TMP/done" <<'PY' || fail "records lost across kill -9"
import json, sys
recs = json.load(open(sys.argv[1]))
created = {r["path"] for r in recs if r["op"] == "create"}
read = {r["path"] for r in recs if r["op"] == "read"}
done = [l.strip() for l in open(sys.argv[2]) if l.strip()]
lost = [p for p in done if p not in created or p not in read]
assert not lost, f"{len(lost)} of {len(done)} completed operations have no record, e.g. {lost[:3]}"
print(f"  all {len(done)} completed create+read operations recorded")
PY
fv audit --repo "$repo" --cache "$d/cache" --verify >/dev/null || fail "verify after kill -9"
pass "kill -9 during heavy access loses no record of a completed operation; the trail still verifies"

# The fog node keeps only the newest uploaded records on its disk
# (--audit-keep-local); older ones are read from the store, and the store's
# copy is pinned to where the node's copy now begins.
segs_before=$(store_ls "$d" audit/seg/ | wc -l)
[ "$segs_before" -ge 3 ] || fail "only $segs_before audit segments in the store before the trim test"
export FOGVAULT_LOG=warn,fogvault::audit=info   # the mount log counts the trim steps
mount_vault "$d" --audit-keep-local 1K
unset FOGVAULT_LOG
python3 - "$m" <<'PY'
import os, sys
root = sys.argv[1]
for name in sorted(os.listdir(f"{root}/busy"))[:1500]:
    with open(f"{root}/busy/{name}", "rb") as f:
        f.read()
PY
sleep 3   # one upload tick
unmount_vault "$d"
[ -f "$d/cache/audit/base" ] || fail "no audit base after uploads with --audit-keep-local 1K"
used_kib=$(du -k "$log" | cut -f1)
size_kib=$(( $(stat -c %s "$log") / 1024 ))
[ $((used_kib * 2)) -lt "$size_kib" ] || fail "the audit log still uses $used_kib of $size_kib KiB on disk"
# The store's segments and checkpoints below the base are merged: one per trim step.
base_seq=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seq"])' "$d/cache/audit/base")
below() { # below PREFIX → objects under PREFIX named by a sequence number <= the base's
    local n=0 name
    for name in $(store_ls "$d" "$1"); do [ $((16#${name##*/})) -le "$base_seq" ] && n=$((n + 1)); done
    echo "$n"
}
trims=$(grep -c "gave back the disk space" "$d/mount.log")
[ "$(below audit/seg/)" -le "$trims" ] || fail "$(below audit/seg/) segments below the base after $trims trims ($segs_before before)"
[ "$(below audit/checkpoint/)" -le "$trims" ] || fail "$(below audit/checkpoint/) checkpoints below the base after $trims trims"
fv audit --repo "$repo" --cache "$d/cache" --verify > "$FV_TMP/v.trim" || { cat "$FV_TMP/v.trim"; fail "verify of a trimmed trail"; }
grep -q "older ones in the store only" "$FV_TMP/v.trim" || { cat "$FV_TMP/v.trim"; fail "verify does not say where the node's copy begins"; }
fv audit --repo "$repo" --cache "$d/cache" --json > "$FV_TMP/trimmed.json"
python3 - "$FV_TMP/audit.json" "$FV_TMP/trimmed.json" <<'PY' || fail "audit shows a trimmed trail incompletely"
import json, sys
before, after = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert [r["seq"] for r in after] == list(range(1, len(after) + 1)), "sequence numbers are not 1..n"
assert after[:len(before)] == before, "the records given up locally differ when read from the store"
PY
store_save "$d" audit/ "$FV_TMP/audit-objects"
for name in $(store_ls "$d" audit/); do store_rm "$d" "$name"; done
expect_caught "every audit object deleted from the store"
store_restore "$d" audit/ "$FV_TMP/audit-objects"
fv audit --repo "$repo" --cache "$d/cache" --verify >/dev/null || fail "verify after restoring the store's audit objects"
pass "uploaded audit records leave the node's disk ($used_kib of $size_kib KiB used; $segs_before store segments merged in $trims steps) and are read back from the store; a store that drops them is caught"

# A node that lost its audit state starts a new chain at record 1: its
# uploads are refused rather than replacing the store's segments.
first_seg=$(store_ls "$d" audit/seg/ | head -1)
store_get "$d" "$first_seg" "$FV_TMP/first-seg.before"
rm -f "$d/cache/audit/log" "$d/cache/audit/base" "$d/cache/audit/uploaded"
mount_vault "$d"
cat "$m/busy/f00001" >/dev/null
umount "$m"
rc=0; wait_exit "$MOUNT_PID" 120 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "the daemon's exit ($rc) does not report the refused audit upload"
store_get "$d" "$first_seg" "$FV_TMP/first-seg.after"
cmp -s "$FV_TMP/first-seg.before" "$FV_TMP/first-seg.after" || fail "a node without audit state overwrote the store's first segment"
grep -q "holds other records" "$d/mount.log" || fail "the refused audit upload is not reported"
pass "a node that lost its audit state cannot overwrite the store's trail"
