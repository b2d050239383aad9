#!/usr/bin/env bash
# Insider data theft, with real Unix users on a real mount:
#   importer (rw) loads a department of real patients; the fog node plants
#   decoys beside them; a physician opening three patients and a whole CT
#   study raises nothing; a thief's `cp -r` and another's `tar` of the whole
#   department are alerted and locked within seconds, before they read more
#   than a configured fraction of the real patients; opening one decoy
#   alerts; alerts reach the alerts file and a webhook; the admin unlocks.
source "$(dirname "$0")/lib.sh"

REAL=30
DECOYS=10
BULK=5                     # patients within 60 s that count as a bulk copy
MAX_FRACTION_PCT=30        # a thief may not get more than this share of real patients

users="importer phys thief1 thief2 curious relogger"
for u in $users; do id "$u" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$u"; done
chmod 755 "$FV_TMP"
as() { local who="$1"; shift; setpriv --reuid "$who" --regid "$who" --init-groups -- "$@"; }
export FOGVAULT_ADMIN_PASSPHRASE="admin pass"
d="$FV_TMP/v"; mkdir -p "$d/mnt" "$FV_TMP/keys"; chmod 755 "$d" "$FV_TMP/keys"
fv init --repo "$(repo_of "$d")" --admin-key "$FV_TMP/admin.key" >/dev/null
adm() { fv admin "$@" --repo "$(repo_of "$d")" --admin-key "$FV_TMP/admin.key"; }
for u in $users; do
    FOGVAULT_KEY_PASSPHRASE="$u-pw" adm user add "$u" --role staff --key-out "$FV_TMP/keys/$u.key" >/dev/null
    chown "$u" "$FV_TMP/keys/$u.key"
done
adm folder create cardiology >/dev/null
adm grant --user importer --folder cardiology --rights rw >/dev/null
for u in phys thief1 thief2 curious relogger; do adm grant --user "$u" --folder cardiology --rights r >/dev/null; done

# A webhook receiver on loopback records every alert it is sent.
port=$(free_ports 1)
python3 - "$port" "$FV_TMP/webhook.jsonl" <<'PY' &
import http.server, sys
out = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(204); self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
FV_PIDS+=($!)
adm alerts set --bulk-patients "$BULK" --bulk-secs 60 --lock on --webhook "http://127.0.0.1:$port/alert" >/dev/null
pass "policy: bulk copy = $BULK patients in 60 s, lock on alert, webhook on loopback"

mount_vault "$d" --allow-other
m="$d/mnt"
login() { local u="$1"; shift; as "$u" env FOGVAULT_KEY_PASSPHRASE="$u-pw" "$FOGVAULT" login --mount "$m" --key "$FV_TMP/keys/$u.key" "$@"; }
alerts() { cat "$d/cache/alerts.log" 2>/dev/null || true; }

# Real patients (synthetic, same generator as the decoys) loaded by the importer.
fv synth-patients --out "$FV_TMP/real" --count "$REAL" --seed 42 >/dev/null
chmod -R a+rX "$FV_TMP/real"
dcmdump "$(find "$FV_TMP/real" -name 'IMG0001.dcm' | head -1)" | grep -c >/dev/null "PatientName" || fail "generated CT slice is not readable DICOM"
login importer >/dev/null
as importer sh -c "cp -a '$FV_TMP/real/'* '$m/cardiology/'"
adm decoys plant --folder cardiology --count "$DECOYS" >/dev/null
for _ in $(seq 100); do [ "$(adm decoys list | grep -c /)" -eq "$DECOYS" ] && break; sleep 0.2; done
adm decoys list > "$FV_TMP/decoys.txt"
[ "$(grep -c / "$FV_TMP/decoys.txt")" -eq "$DECOYS" ] || { cat "$FV_TMP/decoys.txt"; fail "the fog node did not plant $DECOYS decoys"; }
as importer "$FOGVAULT" logout --mount "$m" >/dev/null
[ -z "$(alerts)" ] || { alerts; fail "importing a department raised an alert"; }
n=$(ls "$FV_TMP/real" | wc -l)
pass "importer loaded $n real patients (no alert); the fog node planted $DECOYS decoys; only the admin key lists them"

# Indistinguishable on the mount (stat only, nothing opened) and in the store.
login phys >/dev/null
cp "$(dirname "$0")/../tools/decoy_check.py" "$FV_TMP/"; chmod 644 "$FV_TMP/decoys.txt"
as phys /usr/bin/python3 "$FV_TMP/decoy_check.py" "$m/cardiology" "$FV_TMP/decoys.txt" > "$FV_TMP/check.out" \
    || { cat "$FV_TMP/check.out"; fail "decoys can be told from real patients"; }
tail -1 "$FV_TMP/check.out"
store=$(store_dir "$d")
for p in $(ls "$FV_TMP/real") $(cut -d/ -f2 "$FV_TMP/decoys.txt"); do
    if grep -rqaF "$p" "$store" "$d/cache"; then fail "patient name $p readable in the store or cache"; fi
done
store_ls "$d" | sed 's|/.*||' | sort -u > "$FV_TMP/kinds"
grep -vxE 'config|packs|meta|audit|policy|decoys' "$FV_TMP/kinds" && fail "unexpected object kinds in the store"
[ -z "$(alerts)" ] || { alerts; fail "stat-only listing raised an alert"; }
pass "decoys match real patients on every feature a user or the store sees; no patient name on disk"

# Normal clinical work raises nothing: three patients, and one whole CT study read slice by slice.
for p in $(ls "$FV_TMP/real" | head -3); do as phys cat "$m/cardiology/$p/report.txt" >/dev/null || fail "physician cannot read $p"; done
study=$(ls "$FV_TMP/real" | sed -n 2p)
for f in $(ls "$FV_TMP/real/$study/CT"); do
    as phys dcmdump "$m/cardiology/$study/CT/$f" >/dev/null || fail "dcmdump of $study/CT/$f"
done
as phys cat "$m/cardiology/$study/fhir-diagnosticreport.json" >/dev/null
sleep 1
[ -z "$(alerts)" ] || { alerts; fail "a physician's normal work raised an alert"; }
pass "a physician opening 3 patients and a full CT study raises nothing"

# Thief 1: cp -r of the whole department.
thief() { # USER CMD... → runs the copy, records the time it took
    local u="$1"; shift
    login "$u" >/dev/null
    local start; start=$(date +%s.%N)
    as "$u" "$@" >"$FV_TMP/$u.out" 2>&1 || true
    echo "$start" > "$FV_TMP/$u.start"
}
check_thief() { # USER LOOTDIR
    local u="$1" loot="$2"
    local line; line=$(alerts | grep "\"user\":\"$u\"" | head -1)
    [ -n "$line" ] || { alerts; cat "$FV_TMP/$u.out" | tail -5; fail "$u's bulk copy raised no alert"; }
    echo "$line" | grep -c '"locked":true' >/dev/null || fail "$u was not locked: $line"
    local t; t=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["time"])')
    python3 - "$t" "$(cat "$FV_TMP/$u.start")" <<'PY' || fail "$u: alert came too late"
import sys
alert, start = float(sys.argv[1]), float(sys.argv[2])
assert alert - int(start) <= 5, f"alert {alert - start:.1f} s after the copy started"
PY
    # How many real patients did the copy get completely?
    local got=0 p
    for p in $(ls "$FV_TMP/real"); do
        if [ -d "$loot/$p" ] && diff -rq "$FV_TMP/real/$p" "$loot/$p" >/dev/null 2>&1; then got=$((got + 1)); fi
    done
    [ $((got * 100)) -le $((MAX_FRACTION_PCT * REAL)) ] || fail "$u got $got of $REAL real patients before the lock"
    if as "$u" ls "$m/cardiology" >/dev/null 2>&1; then fail "$u still lists the folder after the lock"; fi
    if login "$u" >/dev/null 2>&1; then fail "$u logged in again while locked"; fi
    echo "  $u: alert $(echo "$line" | python3 -c 'import json,sys; a=json.load(sys.stdin); print(a["rule"], a["detail"])'); $got of $REAL real patients copied whole"
}
mkdir -p "$FV_TMP/loot1" "$FV_TMP/loot2"; chown thief1 "$FV_TMP/loot1"; chown thief2 "$FV_TMP/loot2"
thief thief1 cp -r "$m/cardiology" "$FV_TMP/loot1/"
check_thief thief1 "$FV_TMP/loot1/cardiology"
fv sessions --mount "$m" > "$FV_TMP/sessions"
grep -A1 "user=thief1" "$FV_TMP/sessions" | grep -c LOCKED >/dev/null || { cat "$FV_TMP/sessions"; fail "sessions does not show thief1 locked"; }
pass "cp -r of the department: alerted within 5 s, locked, at most $MAX_FRACTION_PCT% of real patients taken"
thief thief2 sh -c "cd '$m' && tar cf '$FV_TMP/loot2/dept.tar' cardiology"
mkdir -p "$FV_TMP/loot2/x"; tar xf "$FV_TMP/loot2/dept.tar" -C "$FV_TMP/loot2/x" 2>/dev/null || true
check_thief thief2 "$FV_TMP/loot2/x/cardiology"
pass "tar of the department: alerted within 5 s, locked, at most $MAX_FRACTION_PCT% of real patients taken"

# Opening a single decoy alerts at once.
login curious >/dev/null
decoy=$(head -1 "$FV_TMP/decoys.txt")
as curious cat "$m/$decoy/report.txt" >/dev/null 2>&1 || true
line=$(alerts | grep '"user":"curious"' | head -1)
echo "$line" | grep -c '"rule":"decoy"' >/dev/null || { alerts; fail "opening a decoy raised no decoy alert"; }
pass "opening one decoy raises a decoy alert"

# Logging in again does not start the count afresh: four patients, a new
# login, four more (all real, within the bulk window) are a bulk copy.
login relogger >/dev/null
for p in $(ls "$FV_TMP/real" | sed -n 10,13p); do as relogger cat "$m/cardiology/$p/report.txt" >/dev/null; done
[ -z "$(alerts | grep '"user":"relogger"')" ] || fail "four patients alerted"
as relogger "$FOGVAULT" logout --mount "$m" >/dev/null
login relogger >/dev/null
for p in $(ls "$FV_TMP/real" | sed -n 14,17p); do as relogger cat "$m/cardiology/$p/report.txt" >/dev/null 2>&1 || true; done
for _ in $(seq 20); do alerts | grep -q '"user":"relogger"' && break; sleep 0.25; done
alerts | grep '"user":"relogger"' | grep -q '"rule":"bulk-copy"' || { alerts; fail "a new login reset the bulk-copy count"; }
pass "logging in again between bursts does not reset the insider profile"

# Every alert also went to the webhook, and the audit trail has them.
for _ in $(seq 50); do [ "$(wc -l < "$FV_TMP/webhook.jsonl" 2>/dev/null || echo 0)" -ge 3 ] && break; sleep 0.2; done
for u in thief1 thief2 curious; do
    grep -c "\"user\":\"$u\"" "$FV_TMP/webhook.jsonl" >/dev/null || { cat "$FV_TMP/webhook.jsonl"; fail "no webhook alert for $u"; }
done
fv audit --repo "$(repo_of "$d")" --cache "$d/cache" --user thief1 > "$FV_TMP/audit.thief1"
grep -c " alert " "$FV_TMP/audit.thief1" >/dev/null || fail "the audit trail lacks thief1's alert"
grep -c " session-locked " "$FV_TMP/audit.thief1" >/dev/null || fail "the audit trail lacks thief1's lock"
! grep -rqaF -e "$(head -1 "$FV_TMP/decoys.txt" | cut -d/ -f2)" "$d/cache/alerts.log" || fail "the alerts file names a patient"
pass "alerts reach the webhook and the audit trail; the alerts file names no patient"

# The admin lifts the lock.
adm unlock thief1 >/dev/null
for _ in $(seq 30); do login thief1 >/dev/null 2>&1 && break; sleep 0.2; done
as thief1 ls "$m/cardiology" >/dev/null || fail "thief1 still locked after the admin's unlock"
pass "admin unlock lets the user back in"
unmount_vault "$d"
