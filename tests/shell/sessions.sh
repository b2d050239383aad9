#!/usr/bin/env bash
# Identity-based login over the daemon's control socket with real Unix users:
# sessions bound to the caller's uid, listed without secrets, ended by logout;
# keys from another authority, wrong key passphrases and malformed handshake
# messages are refused with clear errors. (Folder access rules that use these
# sessions are not built yet.)
source "$(dirname "$0")/lib.sh"

for u in alice bob; do id "$u" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$u"; done
chmod 755 "$FV_TMP"
as() { local who="$1"; shift; setpriv --reuid "$who" --regid "$who" --init-groups -- "$@"; }

export FOGVAULT_ADMIN_PASSPHRASE="admin pass"
d="$FV_TMP/s"; mkdir -p "$d/mnt" "$FV_TMP/keys"; chmod 755 "$d" "$FV_TMP/keys"
repo=$(repo_of "$d")
fv init --repo "$repo" --admin-key "$FV_TMP/admin.key" >/dev/null
[ "$(stat -c %a "$FV_TMP/admin.key")" = 600 ] || fail "admin key file must be 0600"
FOGVAULT_KEY_PASSPHRASE=alice-pw fv admin user add alice --role physician --key-out "$FV_TMP/keys/alice.key" --admin-key "$FV_TMP/admin.key" --repo "$repo" >/dev/null
FOGVAULT_KEY_PASSPHRASE=bob-pw fv admin user add bob --role nurse --key-out "$FV_TMP/keys/bob.key" --admin-key "$FV_TMP/admin.key" --repo "$repo" >/dev/null
chown alice "$FV_TMP/keys/alice.key"; chown bob "$FV_TMP/keys/bob.key"
# A key issued by another authority.
fv init --repo "$(repo_of "$FV_TMP/other")" --admin-key "$FV_TMP/other-admin.key" >/dev/null
FOGVAULT_KEY_PASSPHRASE=bob-pw fv admin user add bob --role nurse --key-out "$FV_TMP/keys/bob-foreign.key" --admin-key "$FV_TMP/other-admin.key" --repo "$(repo_of "$FV_TMP/other")" >/dev/null
chown bob "$FV_TMP/keys/bob-foreign.key"
if FOGVAULT_ADMIN_PASSPHRASE=wrong fv admin user add eve --role x --key-out "$FV_TMP/keys/eve.key" --admin-key "$FV_TMP/admin.key" --repo "$repo" 2>"$FV_TMP/err"; then fail "wrong admin passphrase accepted"; fi
grep -q "wrong passphrase for key file" "$FV_TMP/err" || fail "unclear admin passphrase error"
pass "admin key and identity keys issued; wrong admin passphrase refused"

# Whoever may write in the control socket's directory could swap the socket.
mkdir -p /run/fogvault
chmod 777 /run/fogvault
rc=0; timeout 20 "$FOGVAULT" mount --repo "$repo" --cache "$d/cache" --allow-other "$d/mnt" 2>"$FV_TMP/err" || rc=$?
chmod 755 /run/fogvault
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$FV_TMP/err"; fail "mounted with a world-writable socket directory (exit $rc)"; }
grep -q "/run/fogvault must be a directory owned by uid 0 and writable by nobody else" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear socket directory error"; }
! mountpoint -q "$d/mnt" || fail "the refused mount stayed mounted"
pass "a control socket directory others may write in is refused with a clear error"

mount_vault "$d" --allow-other
m="$d/mnt"
alice_uid=$(id -u alice)
as alice env FOGVAULT_KEY_PASSPHRASE=alice-pw "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/alice.key" > "$FV_TMP/login.out" || fail "alice login failed"
grep -q "for alice (uid $alice_uid)" "$FV_TMP/login.out" || { cat "$FV_TMP/login.out"; fail "login output"; }
pass "alice logs in with her identity key; the session is bound to her uid"

[ "$(as alice "$FOGVAULT" sessions --mount "$m" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] || fail "alice sees her session"
[ "$(as bob "$FOGVAULT" sessions --mount "$m" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ] || fail "bob must not see alice's session"
fv sessions --mount "$m" | grep -c >/dev/null "user=alice  uid=$alice_uid" || fail "root lists all sessions"
fv sessions --mount "$m" --json > "$FV_TMP/sessions.json"
! grep -qiE "key|secret" "$FV_TMP/sessions.json" || fail "session listing shows secrets"
pass "sessions lists only the caller's sessions (root: all), no secrets"

if as bob env FOGVAULT_KEY_PASSPHRASE=bob-pw "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/bob-foreign.key" 2>"$FV_TMP/err"; then fail "foreign key accepted"; fi
grep -q "failed authentication\|refused" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear foreign-key error"; }
if as bob env FOGVAULT_KEY_PASSPHRASE=nope "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/bob.key" 2>"$FV_TMP/err"; then fail "wrong key passphrase accepted"; fi
grep -q "wrong passphrase" "$FV_TMP/err" || fail "unclear key passphrase error"
if as bob env FOGVAULT_KEY_PASSPHRASE=alice-pw "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/alice.key" 2>"$FV_TMP/err"; then fail "bob used alice's key file"; fi
pass "a key from another authority, a wrong key passphrase, and someone else's key file are refused"

# Malformed and truncated handshake messages: errors, no crash, the mount keeps working.
sock=$(sed -n "s/^fogvault: control socket //p" "$d/mount.log" | tail -1)
[ -S "$sock" ] || fail "control socket not found"
python3 - "$sock" <<'PY'
import os, socket, struct, sys
for payload in [b"", b"\x01", b"\x01FVHS\x01\x01" + os.urandom(40), b"\x01" + os.urandom(300), b"\x07junk", b"\x02"]:
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
    s.sendall(struct.pack("<I", len(payload)) + payload)
    try:
        n = s.recv(4)
    except socket.timeout:
        n = b""
    s.close()
# An oversized length prefix is refused too.
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1]); s.sendall(struct.pack("<I", 1 << 30)); s.close()
PY
kill -0 "$MOUNT_PID" || fail "daemon died on malformed control messages"
echo ok > "$m/still-works.txt" && grep -q ok "$m/still-works.txt" || fail "mount broken after malformed messages"
as alice "$FOGVAULT" sessions --mount "$m" | grep -c >/dev/null "user=alice" || fail "alice's session lost"
pass "malformed handshake messages are refused; daemon and mount unaffected"

[ "$(as bob "$FOGVAULT" logout --mount "$m")" = "ended 0 session(s)" ] || fail "bob's logout must not end alice's session"
fv sessions --mount "$m" | grep -c >/dev/null "user=alice" || fail "alice's session gone after bob's logout"
[ "$(as alice "$FOGVAULT" logout --mount "$m")" = "ended 1 session(s)" ] || fail "alice logout"
fv sessions --mount "$m" | grep -c >/dev/null "no active sessions" || fail "session still listed after logout"
pass "logout ends only the caller's sessions"

# Login flooding: a user starts handshakes as fast as the socket answers,
# claiming to be alice (message 1 is not authenticated). The fog node's
# replay cache is bounded for everyone, so each uid with an account gets a
# share (1000 per 5 minutes) and uids without one share a single share:
# past it the flooder is refused with a clear message, and alice, whose
# name the flood used, still logs in.
flood() { # flood UID MIN MAX WHY: handshakes answered before the refusal WHY
    setpriv --reuid "$1" --regid "$1" --clear-groups -- /usr/bin/python3 - "$sock" "$2" "$3" "$4" <<'PY' \
        || fail "flooding handshakes as uid $1 were not answered as expected"
import os, socket, struct, sys
lo, hi, expect = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
G1 = bytes.fromhex("97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb")
def start():  # message 1 claiming alice, then hang up after message 2
    msg1 = b"FVHS\x01\x01" + bytes([5]) + b"alice" + G1 + os.urandom(32)
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
    s.sendall(struct.pack("<I", 1 + len(msg1)) + b"\x01" + msg1)
    n = struct.unpack("<I", s.recv(4, socket.MSG_WAITALL))[0]
    reply = s.recv(n, socket.MSG_WAITALL)
    s.close()
    return reply
answered = 0
while True:
    reply = start()
    if reply[0] != 0:
        break
    answered += 1
    assert answered <= hi, f"more than {hi} handshakes answered"
why = reply[1:].decode()
assert lo <= answered <= hi and expect in why, (answered, why)
print(f"  uid {os.getuid()}: {answered} handshakes answered, then: {why}")
PY
}
flood "$(id -u bob)" 995 1000 "too many logins from uid"   # bob's earlier tries count too
flood 4000001 1000 1000 "too many logins from uids without an account"
flood 4000002 0 0 "too many logins from uids without an account"
if as bob env FOGVAULT_KEY_PASSPHRASE=bob-pw "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/bob.key" 2>"$FV_TMP/err"; then fail "bob logged in past his handshake budget"; fi
grep -q "too many logins from uid" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear flooding refusal"; }
as alice env FOGVAULT_KEY_PASSPHRASE=alice-pw "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/alice.key" >/dev/null \
    || fail "alice cannot log in while bob floods"
[ "$(as alice "$FOGVAULT" logout --mount "$m")" = "ended 1 session(s)" ] || fail "alice logout after the flood"
kill -0 "$MOUNT_PID" || fail "daemon died under a login flood"
pass "a uid flooding the control socket with handshakes is cut off at its share (uids without an account share one); other users still log in"
unmount_vault "$d"
[ ! -e "$sock" ] || fail "control socket left behind after unmount"

# A repository without an admin authority has no control socket: a clear error.
d2=$(new_repo plain)
mount_vault "$d2"
if FOGVAULT_KEY_PASSPHRASE=alice-pw fv login --mount "$d2/mnt" --key "$FV_TMP/keys/alice.key" 2>"$FV_TMP/err"; then fail "login without authority"; fi
grep -q "no fogvault daemon with sessions" "$FV_TMP/err" || { cat "$FV_TMP/err"; fail "unclear no-authority error"; }
unmount_vault "$d2"
pass "login on a vault without an admin authority fails clearly"
