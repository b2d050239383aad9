#!/usr/bin/env bash
# Vault folders and the signed policy with real Unix users (setpriv):
#   alice (physician, cardiology rw, oncology rw), bob (nurse, cardiology r),
#   carol (clerk, no grants), dave (emergency role), erin (oncology rw).
# Before login nobody sees anything in a folder; after it exactly the grant;
# sessions do not leak across uids; logout, expiry and live revocation end
# access; renames across folders give EXDEV; dedup works across folders with
# the first writer logged out; rolled-back or altered policies are refused;
# break-glass works and is listed; a stolen disk shows no names or content.
source "$(dirname "$0")/lib.sh"

users="alice bob carol dave erin"
for u in $users; do id "$u" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$u"; done
chmod 755 "$FV_TMP"
as() { local who="$1"; shift; setpriv --reuid "$who" --regid "$who" --init-groups -- "$@"; }
export FOGVAULT_ADMIN_PASSPHRASE="admin pass"
d="$FV_TMP/f"; mkdir -p "$d/mnt" "$FV_TMP/keys"; chmod 755 "$d" "$FV_TMP/keys"
repo=$(repo_of "$d")
fv init --repo "$repo" --admin-key "$FV_TMP/admin.key" >/dev/null
adm() { fv admin "$@" --repo "$repo" --admin-key "$FV_TMP/admin.key"; }
for spec in alice:physician bob:nurse carol:clerk dave:emergency erin:physician; do
    u=${spec%%:*}
    FOGVAULT_KEY_PASSPHRASE="$u-pw" adm user add "$u" --role "${spec#*:}" --key-out "$FV_TMP/keys/$u.key" >/dev/null
    chown "$u" "$FV_TMP/keys/$u.key"
done
adm folder create cardiology >/dev/null
adm folder create wards/oncology >/dev/null
adm grant --user alice --folder cardiology --rights rw >/dev/null
adm grant --user alice --folder wards/oncology --rights rw >/dev/null
adm grant --user bob --folder cardiology --rights r >/dev/null
adm grant --user erin --folder wards/oncology --rights rw >/dev/null
if adm grant --user nobody --folder cardiology --rights r 2>/dev/null; then fail "grant to an unknown user"; fi
if adm grant --user bob --folder nowhere --rights r 2>/dev/null; then fail "grant on an unknown folder"; fi
if adm grant --user bob --folder cardiology --rights x 2>/dev/null; then fail "bad rights accepted"; fi
adm policy show > "$FV_TMP/policy.txt"
grep -q "user:bob r /cardiology" "$FV_TMP/policy.txt" || { cat "$FV_TMP/policy.txt"; fail "policy show"; }
adm policy show --json | python3 -c 'import json,sys; p=json.load(sys.stdin); assert p["version"]==11, p["version"]' || fail "policy versions"
pass "admin enrols users, creates folders, grants rights; policy v11 shown without keys"

# A private directory left by a daemon that died before binding its vault
# root is cleared by the next kernel-checked mount.
stale="/run/fogvault/fuse-$(( $(cat /proc/sys/kernel/pid_max) + 1 ))-1"
mkdir -p "$stale"
mount_vault "$d" --allow-other
m="$d/mnt"
if [ "${FV_WALK_CHECK:-kernel}" = kernel ]; then [ -e "$stale" ] && fail "an abandoned private mount directory was left"; fi
rm -rf "$stale"
login() { local u="$1"; shift; as "$u" env FOGVAULT_KEY_PASSPHRASE="$u-pw" "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/$u.key" "$@"; }
denied() { # denied USER CMD... → the command must fail with "Permission denied"
    local u="$1"; shift
    if as "$u" "$@" >"$FV_TMP/out" 2>&1; then cat "$FV_TMP/out"; fail "$u: '$*' should be denied"; fi
    grep -q "Permission denied" "$FV_TMP/out" || { cat "$FV_TMP/out"; fail "$u: '$*' failed without EACCES"; }
}
ls "$m" | grep -qx cardiology && ls "$m/wards" | grep -qx oncology || fail "folders not created on the mount"
for u in alice bob carol; do denied "$u" ls "$m/cardiology"; denied "$u" touch "$m/cardiology/x"; done
denied root ls "$m/cardiology"
# Walks into folders are checked by the kernel (an access list on each folder
# root; the default) or, with FV_WALK_CHECK=daemon, by the daemon (a gated
# LOOKUP on every walk, which keeps root out too).
kernel_walks() { [ "${FV_WALK_CHECK:-kernel}" = kernel ]; }
if kernel_walks; then
    # The vault root is bound on the mountpoint from a private, detached
    # mount (so its access list is cached like any other inode's).
    grep -q " /run/fogvault/fuse-" /proc/self/mountinfo && fail "the private FUSE mount is still attached"
    findmnt -n -o SOURCE -T "$m" | grep -q '\[/vault\]' || { findmnt -T "$m"; fail "the mountpoint is not the bound vault root"; }
else
    denied root stat "$m/cardiology"
    findmnt -n -o SOURCE -T "$m" | grep -q '\[' && { findmnt -T "$m"; fail "a daemon-checked mount is a bind mount"; }
fi
pass "before login nobody (not even root) lists or writes a vault folder, and no user enters it"

# The kernel checks walks into a folder against the folder root's access
# list, which names the uids with live sessions (readers r-x, writers rwx);
# the root's mode shows the list's mask and nothing for others. Nobody may
# change the list.
acl_of() { # acl_of PATH → "tag:id:perm" lines of its POSIX access list
    python3 - "$1" <<'PY'
import os, struct, sys
v = os.getxattr(sys.argv[1], "system.posix_acl_access")
names = {1: "user", 2: "user", 4: "group", 0x10: "mask", 0x20: "other"}
for i in range(4, len(v), 8):
    tag, perm, uid = struct.unpack("<HHI", v[i:i + 8])
    who = str(uid) if tag in (2, 8) else ""
    print(f"{names.get(tag, tag)}:{who}:{perm:o}")
PY
}
uid_of() { id -u "$1"; }
if kernel_walks; then
    acl_of "$m/cardiology" > "$FV_TMP/acl0"
    grep -q "^user:[0-9]" "$FV_TMP/acl0" && { cat "$FV_TMP/acl0"; fail "a folder root names users before any login"; }
    grep -qx "other::0" "$FV_TMP/acl0" || { cat "$FV_TMP/acl0"; fail "others may walk into a folder"; }
    [ "$(stat -c %a "$m/cardiology")" = 770 ] || fail "folder root mode is $(stat -c %a "$m/cardiology"), not 770"
    python3 - "$m/cardiology" "$(uid_of carol)" <<'PY' || fail "the folder root's access list could be changed"
import errno, os, struct, sys
entries = [(1, 7, 2**32 - 1), (2, 7, int(sys.argv[2])), (4, 0, 2**32 - 1), (0x10, 7, 2**32 - 1), (0x20, 0, 2**32 - 1)]
blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
try:
    os.setxattr(sys.argv[1], "system.posix_acl_access", blob)
    sys.exit("setting an access list succeeded")
except OSError as e:
    assert e.errno == errno.EOPNOTSUPP, e
PY
    pass "folder roots carry a kernel access list with no users before login; nobody can set one"
fi

login alice >/dev/null
as alice sh -c "echo 'ECG: sinus rhythm, patient-marker-7781' > '$m/cardiology/ecg-report-7781.txt'"
python3 "$(dirname "$0")/../tools/gen_ct.py" "$FV_TMP/ct" 4 >/dev/null 2>&1 || head -c 6000000 /dev/urandom > "$FV_TMP/ct.bin"
head -c 8000000 /dev/urandom > "$FV_TMP/scan.bin"
chmod 644 "$FV_TMP/scan.bin"
as alice cp "$FV_TMP/scan.bin" "$m/cardiology/scan.bin"
as alice mkdir "$m/cardiology/echo"
as alice cmp "$FV_TMP/scan.bin" "$m/cardiology/scan.bin" || fail "alice reads back"
as alice ls "$m/cardiology" | grep -c >/dev/null ecg-report-7781.txt || fail "alice lists"
as alice stat "$m/cardiology/scan.bin" >/dev/null
if kernel_walks; then
    acl_of "$m/cardiology" | grep -qx "user:$(uid_of alice):7" || { acl_of "$m/cardiology"; fail "alice's uid is not in the folder's access list"; }
else
    [ "$(as alice stat -c %a "$m/cardiology")" = 777 ] || fail "a daemon-checked folder root shows mode $(as alice stat -c %a "$m/cardiology")"
fi
as alice sh -c "umask 027; echo x > '$m/cardiology/umask.txt'; mkdir '$m/cardiology/umask.d'"
modes=$(as alice stat -c %a "$m/cardiology/umask.txt" "$m/cardiology/umask.d" | tr '\n' ' ')
[ "$modes" = "640 750 " ] || fail "the umask is not applied: $modes"
as alice rm -r "$m/cardiology/umask.txt" "$m/cardiology/umask.d"
pass "alice (rw) writes, lists and reads back in cardiology; her uid is in its access list; umask applies"

denied bob cat "$m/cardiology/ecg-report-7781.txt"
denied carol cat "$m/cardiology/ecg-report-7781.txt"
denied carol stat "$m/cardiology/scan.bin"
denied root cat "$m/cardiology/scan.bin"
kernel_walks || denied root stat "$m/cardiology/scan.bin"
pass "alice's session does not leak to bob, carol or root"

# A process that may read a folder root may watch it with inotify, which the
# kernel allows without asking the daemon and which reports the names of the
# entries others create and open there. The root's access list keeps carol
# out, also right after alice walked it (its dentry is cached).
watch="$(dirname "$0")/../tools/watch.py"
as alice stat "$m/cardiology" >/dev/null
denied carol ls "$m/cardiology"
kernel_walks || denied carol stat "$m/cardiology"
denied carol /usr/bin/python3 "$watch" "$m/cardiology"
as carol /usr/bin/python3 "$watch" "$m/cardiology" 3 > "$FV_TMP/carol.watch" 2>/dev/null &
watcher=$!
sleep 0.5
as alice sh -c "echo 'note' > '$m/cardiology/watched-name-5512.txt'"
wait "$watcher" || true
! grep -q "watched-name" "$FV_TMP/carol.watch" || fail "carol's inotify watch saw a name alice created"
as alice /usr/bin/python3 "$watch" "$m/cardiology" 2 > "$FV_TMP/alice.watch" &
watcher=$!
sleep 0.5
as alice cat "$m/cardiology/watched-name-5512.txt" >/dev/null
wait "$watcher" || fail "alice could not watch her own folder"
grep -q "watched-name-5512.txt" "$FV_TMP/alice.watch" || fail "alice's watch saw nothing"
as alice rm "$m/cardiology/watched-name-5512.txt"
pass "carol cannot reach or inotify-watch the folder root; alice can"

# Entries inside a folder may sit in the kernel's dentry cache (shared by all
# uids); every walk from outside passes the folder root, whose access list
# the kernel checks, also right after alice used a deep path, and after a
# rename lifts a deep entry to the first level. Root passes any access list
# (root on the fog node is trusted) but still cannot list or open.
as alice mkdir -p "$m/cardiology/p-4410/study-1"
as alice cp "$FV_TMP/scan.bin" "$m/cardiology/p-4410/study-1/img-1.dcm"
as alice stat "$m/cardiology/p-4410/study-1/img-1.dcm" >/dev/null
as alice cat "$m/cardiology/p-4410/study-1/img-1.dcm" >/dev/null
denied carol stat "$m/cardiology/p-4410/study-1/img-1.dcm"
denied root ls "$m/cardiology/p-4410/study-1"
kernel_walks || denied root stat "$m/cardiology/p-4410/study-1"
as alice mv "$m/cardiology/p-4410/study-1/img-1.dcm" "$m/cardiology/lifted.dcm"
as alice stat "$m/cardiology/lifted.dcm" >/dev/null
denied carol stat "$m/cardiology/lifted.dcm"
denied root cat "$m/cardiology/lifted.dcm"
as alice mv "$m/cardiology/p-4410" "$m/cardiology/echo/p-4410"
as alice stat "$m/cardiology/echo/p-4410/study-1" >/dev/null
as alice mv "$m/cardiology/echo/p-4410" "$m/cardiology/p-4410"
denied carol stat "$m/cardiology/p-4410/study-1"
as alice rm "$m/cardiology/lifted.dcm"
pass "cached deep entries do not let carol or root past the folder's first level"

login bob >/dev/null
as bob grep -q "sinus rhythm" "$m/cardiology/ecg-report-7781.txt" || fail "bob reads"
as bob cmp -s "$FV_TMP/scan.bin" "$m/cardiology/scan.bin" || fail "bob reads the scan"
denied bob sh -c "echo x >> '$m/cardiology/ecg-report-7781.txt'"
denied bob touch "$m/cardiology/new.txt"
denied bob rm "$m/cardiology/scan.bin"
denied bob mkdir "$m/cardiology/d"
denied bob ls "$m/wards/oncology"
pass "bob (r) reads cardiology, every write is refused, oncology is closed"

login carol > "$FV_TMP/carol.out"
denied carol ls "$m/cardiology"
! grep -q "ecg-report" "$FV_TMP/out" || fail "carol saw a name"
denied carol cat "$m/cardiology/ecg-report-7781.txt"
pass "carol (no grants) logs in and still gets EACCES, no names"

# Renames across folders (and into/out of them) are EXDEV.
as alice /usr/bin/python3 - "$m" <<'PY' || fail "EXDEV across folders"
import errno, os, sys
m = sys.argv[1]
open(f"{m}/cardiology/move-me.txt", "w").write("x")
for src, dst in [(f"{m}/cardiology/move-me.txt", f"{m}/wards/oncology/moved.txt")]:
    try:
        os.rename(src, dst); sys.exit("rename across folders succeeded")
    except OSError as e:
        assert e.errno == errno.EXDEV, e
try:
    os.link(f"{m}/cardiology/move-me.txt", f"{m}/wards/oncology/linked.txt"); sys.exit("link across folders")
except OSError as e:
    assert e.errno == errno.EXDEV, e
PY
mkdir -p "$m/public" && echo pub > "$m/public/leaflet.txt" && chmod -R a+rwX "$m/public"
as alice /usr/bin/python3 -c "
import errno, os, sys
try:
    os.rename('$m/public/leaflet.txt', '$m/cardiology/leaflet.txt'); sys.exit('rename into a folder succeeded')
except OSError as e:
    assert e.errno == errno.EXDEV, e
" || fail "EXDEV into a folder"
as alice mv "$m/cardiology/move-me.txt" "$m/wards/oncology/moved.txt" || fail "mv falls back to copy"
pass "rename and link across vault folders give EXDEV (mv copies instead)"

# A folder path squatted before the folder is created: a symlink out of the
# vault is not followed (no folder there, and no session is offered it); an
# empty directory is replaced by a new, root-owned one, so its maker can
# neither lock the others out nor keep an inotify watch on the folder.
as carol ln -s /tmp "$m/public/radiology"
as carol mkdir "$m/public/pathology"
as carol /usr/bin/python3 "$watch" "$m/public/pathology" 12 > "$FV_TMP/squat.watch" 2>&1 &
squatter=$!
sleep 0.5
adm folder create public/radiology >/dev/null
adm folder create public/pathology >/dev/null
adm grant --user alice --folder public/radiology --rights rw >/dev/null
adm grant --user alice --folder public/pathology --rights rw >/dev/null
# The daemon follows the policy within a tick or two.
for _ in $(seq 40); do
    login alice > "$FV_TMP/alice-folders.out"
    grep -q "public/pathology" "$FV_TMP/alice-folders.out" && break
    sleep 0.25
done
grep -q "public/pathology" "$FV_TMP/alice-folders.out" || { cat "$FV_TMP/alice-folders.out"; fail "alice is not offered the squatted folder"; }
denied root ls "$m/public/pathology"
kernel_walks || denied root stat "$m/public/pathology"
if grep -q "public/radiology" "$FV_TMP/alice-folders.out"; then fail "alice is offered a folder path that leads out of the vault"; fi
want=root:777; kernel_walks && want=root:770
[ "$(as alice stat -c %U:%a "$m/public/pathology")" = "$want" ] || fail "the folder root still belongs to its squatter"
if as carol chmod 000 "$m/public/pathology" 2>/dev/null; then fail "carol changed the mode of a folder root"; fi
as alice sh -c "echo x > '$m/public/pathology/squat-name-3391.txt'"
as alice cat "$m/public/pathology/squat-name-3391.txt" >/dev/null
wait "$squatter" || true
! grep -q "squat-name" "$FV_TMP/squat.watch" || fail "the squatter's watch saw a name in the folder"
[ -L "$m/public/radiology" ] || fail "the squatted path changed"
pass "a squatted folder path is never offered; a squatted directory is replaced by a root-owned one its maker cannot watch"

# Dedup across folders and users, with the first writer logged out.
before=$(fv stats --repo "$repo" --cache "$d/cache" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
as alice "$FOGVAULT" logout --mount "$m" >/dev/null
login erin >/dev/null
as erin cp "$FV_TMP/scan.bin" "$m/wards/oncology/same-scan.bin"
sync
cp "$FV_TMP/scan.bin" "$m/public/same-scan.bin"
after=$(fv stats --repo "$repo" --cache "$d/cache" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
[ $((after - before)) -lt 1000000 ] || fail "the same 8 MB in a second folder added $((after - before)) bytes"
as erin cmp "$FV_TMP/scan.bin" "$m/wards/oncology/same-scan.bin" || fail "erin reads her copy"
pass "the same scan in two folders (first writer logged out) and the root is stored once (+$((after - before)) bytes)"

# Logout and expiry.
if kernel_walks && acl_of "$m/cardiology" | grep -q "^user:$(uid_of alice):"; then
    fail "alice's uid is still in the access list after logout"
fi
denied alice ls "$m/cardiology"
login alice --ttl 2 >/dev/null
as alice ls "$m/cardiology" >/dev/null || fail "alice after re-login"
sleep 3
denied alice ls "$m/cardiology"
pass "logout and session expiry remove access at once"

# Live revocation: bob keeps reading until the admin revokes, then EACCES within seconds.
as bob cat "$m/cardiology/ecg-report-7781.txt" >/dev/null || fail "bob before revoke"
store_get "$d" policy/current "$FV_TMP/policy-before-revoke"
adm revoke bob --folder cardiology > "$FV_TMP/revoke.out"
grep -q "1 folder key(s) rotated" "$FV_TMP/revoke.out" || { cat "$FV_TMP/revoke.out"; fail "revoke must rotate the key"; }
for i in $(seq 1 20); do as bob cat "$m/cardiology/ecg-report-7781.txt" >/dev/null 2>&1 || break; sleep 0.25; done
denied bob cat "$m/cardiology/ecg-report-7781.txt"
login alice >/dev/null
as alice grep -q "sinus rhythm" "$m/cardiology/ecg-report-7781.txt" || fail "alice reads after the key rotation"
adm policy show > "$FV_TMP/policy2.txt"; grep -q "/cardiology key v2" "$FV_TMP/policy2.txt" || { cat "$FV_TMP/policy2.txt"; fail "cardiology key not rotated"; }
pass "revoking bob's grant ends his access live; the folder key rotates and alice's new key re-seals the folder"

adm revoke carol >/dev/null
for i in $(seq 1 20); do fv sessions --mount "$m" | grep -c >/dev/null "user=carol" || break; sleep 0.25; done
! fv sessions --mount "$m" | grep -c >/dev/null "user=carol" || fail "carol's session survived her revocation"
if login carol 2>"$FV_TMP/err"; then fail "revoked carol logged in"; fi
grep -q "revoked" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear revoked-login error"; }
pass "revoking a user ends her sessions and her key file no longer logs in"

# A rolled-back policy in the store (bob's old grant) is refused, live and at mount.
store_put "$d" policy/current "$FV_TMP/policy-before-revoke"
sleep 1.5
grep -q "refusing a rolled-back policy" "$d/mount.log" || { cat "$d/mount.log"; fail "rollback not reported"; }
login bob >/dev/null
denied bob cat "$m/cardiology/ecg-report-7781.txt"
pass "a rolled-back policy object is refused by the running daemon"

# Break-glass: dave (emergency role) opens cardiology with a reason; carol may not.
if login dave --break-glass 2>/dev/null; then fail "break-glass without a reason"; fi
denied dave ls "$m/cardiology"
login dave --break-glass --reason "code blue, bed 4" > "$FV_TMP/bg.out"
grep -q "BREAK-GLASS" "$FV_TMP/bg.out" || fail "break-glass login output"
as dave grep -q "sinus rhythm" "$m/cardiology/ecg-report-7781.txt" || fail "dave reads under break-glass"
fv sessions --mount "$m" | grep "user=dave" | grep -c >/dev/null "BREAK-GLASS" || fail "break-glass not listed"
store_ls "$d" breakglass/ > "$FV_TMP/bg-objects"
[ -s "$FV_TMP/bg-objects" ] || fail "break-glass not recorded in the store"
while read -r obj; do
    store_get "$d" "$obj" "$FV_TMP/bg-object"
    ! grep -c "code blue" "$FV_TMP/bg-object" >/dev/null || fail "break-glass record $obj is plaintext"
done < "$FV_TMP/bg-objects"
adm break-glass list > "$FV_TMP/bg-list.txt"
grep -c >/dev/null "user=dave" "$FV_TMP/bg-list.txt" && grep -c >/dev/null "reason: code blue, bed 4" "$FV_TMP/bg-list.txt" \
    || { cat "$FV_TMP/bg-list.txt"; fail "admin break-glass list"; }
if login erin --break-glass --reason "curious" 2>"$FV_TMP/err"; then fail "erin (not emergency) broke the glass"; fi
grep -q "not in an emergency role" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear break-glass refusal"; }
pass "break-glass: emergency role with a reason gets in, is listed and recorded (sealed); others are refused"

unmount_vault "$d"
if mount_vault_expect_fail=1 fv mount --repo "$repo" --cache "$d/cache" --allow-other "$m" 2>"$FV_TMP/err"; then fail "mounted with a rolled-back policy"; fi
grep -q "rollback refused" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear rollback error at mount"; }
latest=$(store_ls "$d" policy/v/ | tail -1)
[ -n "$latest" ] || fail "no policy versions in the store"
store_get "$d" "$latest" "$FV_TMP/policy-latest"
cp "$FV_TMP/policy-latest" "$FV_TMP/policy-altered"
python3 - "$FV_TMP/policy-altered" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); s = bytearray.fromhex(p["sealed"]); s[40] ^= 1; p["sealed"] = s.hex()
json.dump(p, open(sys.argv[1], "w"))
PY
store_put "$d" policy/current "$FV_TMP/policy-altered"
if fv mount --repo "$repo" --cache "$d/cache" --allow-other "$m" 2>"$FV_TMP/err"; then fail "mounted with an altered policy"; fi
grep -q "signature does not verify" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear altered-policy error"; }
store_put "$d" policy/current "$FV_TMP/policy-latest"
pass "at mount, a rolled-back or altered policy is refused with a clear error"

# Stolen disk: nothing readable in the store or the fog node's cache/LMDB.
for needle in ecg-report-7781 sinus patient-marker-7781 cardiology oncology same-scan "code blue"; do
    if grep -rqaF "$needle" "$(store_dir "$d")" "$d/cache"; then fail "found '$needle' on disk"; fi
done
python3 - "$FV_TMP/scan.bin" "$(store_dir "$d")" "$d/cache" <<'PY'
import os, sys
probe = open(sys.argv[1], "rb").read()[4096:4096 + 64]
for root in sys.argv[2:]:
    for dp, _, fs in os.walk(root):
        for f in fs:
            with open(os.path.join(dp, f), "rb") as fh:
                if probe in fh.read():
                    sys.exit(f"scan bytes found in {f}")
PY
pass "stolen disk: no folder names, file names or content in store, cache or LMDB"

# Remount: the folders are still there and still locked.
mount_vault "$d" --allow-other
denied alice ls "$m/cardiology"
login alice >/dev/null
as alice cmp "$FV_TMP/scan.bin" "$m/cardiology/scan.bin" || fail "scan after remount"
unmount_vault "$d"
pass "after a remount the folders are locked again until login"

# A lost fog node rebuilt from the store alone: folder records come back
# still sealed (locked until a login supplies the key), then read as before.
fv recover --repo "$repo" --cache "$d/cache-recovered" >/dev/null || fail "recover of a vault with folders"
for needle in ecg-report-7781 cardiology oncology; do
    if grep -rqaF "$needle" "$d/cache-recovered"; then fail "found '$needle' in the recovered cache"; fi
done
"$FOGVAULT" mount --repo "$repo" --cache "$d/cache-recovered" --allow-other "$m" >>"$d/mount.log" 2>&1 &
MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
for _ in $(seq 100); do mountpoint -q "$m" && break; sleep 0.1; done
denied alice ls "$m/cardiology"
login alice >/dev/null
as alice cmp "$FV_TMP/scan.bin" "$m/cardiology/scan.bin" || fail "scan on the recovered node"
as alice cat "$m/cardiology/ecg-report-7781.txt" | grep -c >/dev/null patient-marker-7781 || fail "report on the recovered node"
denied bob touch "$m/cardiology/bob-was-here"
unmount_vault "$d"
pass "a fog node recovered from the store keeps folders sealed until login, then serves them"
