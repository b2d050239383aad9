#!/usr/bin/env bash
# fogvault demo on the embedded default (a local directory as the "cloud"):
# builds fogvault, creates a local vault, mounts a demo EMR folder, fills it
# with synthetic patients (a CT study, reports, FHIR/HL7 files), and prints
# the dedup figures. Two clinicians with different rights show the vault
# folder and the session login; the fog node plants decoy patients, and a
# simulated insider copying the department is caught and locked within
# seconds. The mount stays up for you to explore.
# Run as root on Debian 12. Re-running reuses the same vault.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

DEMO=${FOGVAULT_DEMO_DIR:-/var/tmp/fogvault-demo}
MNT=${FOGVAULT_DEMO_MNT:-$DEMO/emr}
if [ -z "${FOGVAULT_PASSPHRASE:-}" ]; then
    export FOGVAULT_PASSPHRASE="demo passphrase - change me"
    echo "note: using the demo passphrase (set FOGVAULT_PASSPHRASE to choose your own)"
fi

echo "== installing dependencies (idempotent)"
scripts/deps.sh test
echo "== building fogvault"
cargo build --release --locked -q
FV="$PWD/target/release/fogvault"
PY=/opt/fogvault-venv/bin/python

# Demo identities (synthetic): the admin, and two clinicians with Unix accounts.
export FOGVAULT_ADMIN_PASSPHRASE=${FOGVAULT_ADMIN_PASSPHRASE:-demo admin passphrase}
for u in alice bob mallory; do id "$u" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$u"; done
as() { local who="$1"; shift; setpriv --reuid "$who" --regid "$who" --init-groups -- "$@"; }

# Vaults from an older fogvault use an older index layout: start afresh.
if [ -e "$DEMO/repo/config" ] && [ "$(cat "$DEMO/format" 2>/dev/null)" != 3 ]; then
    if mountpoint -q "$MNT"; then umount "$MNT"; sleep 1; fi
    echo "note: replacing the demo vault from an older fogvault version"
    rm -rf "$DEMO/repo" "$DEMO/cache" "$DEMO/admin.key" "$DEMO/keys"
fi
mkdir -p "$DEMO" "$MNT" "$DEMO/keys"
chmod 755 "$DEMO" "$DEMO/keys"
if mountpoint -q "$MNT"; then umount "$MNT"; sleep 1; fi
adm() { "$FV" admin "$@" --repo "$DEMO/repo" --admin-key "$DEMO/admin.key"; }
if [ ! -e "$DEMO/repo/config" ]; then
    "$FV" init --repo "$DEMO/repo" --admin-key "$DEMO/admin.key"
    echo "== enrolling alice (physician) and bob (nurse); cardiology is a vault folder"
    FOGVAULT_KEY_PASSPHRASE=alice-demo adm user add alice --role physician --key-out "$DEMO/keys/alice.key"
    FOGVAULT_KEY_PASSPHRASE=bob-demo adm user add bob --role nurse --key-out "$DEMO/keys/bob.key"
    FOGVAULT_KEY_PASSPHRASE=mallory-demo adm user add mallory --role clerk --key-out "$DEMO/keys/mallory.key"
    chown alice "$DEMO/keys/alice.key"; chown bob "$DEMO/keys/bob.key"; chown mallory "$DEMO/keys/mallory.key"
    adm folder create cardiology
    adm grant --user alice --folder cardiology --rights rw
    adm grant --user bob --folder cardiology --rights r
    adm grant --user mallory --folder cardiology --rights r
    echo 3 > "$DEMO/format"
fi
"$FV" mount --repo "$DEMO/repo" --cache "$DEMO/cache" --allow-other "$MNT" >"$DEMO/mount.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do mountpoint -q "$MNT" && break; kill -0 "$pid" || { cat "$DEMO/mount.log"; exit 1; }; sleep 0.1; done
for _ in $(seq 1 50); do ls "$MNT" 2>/dev/null | grep -qx cardiology && break; sleep 0.1; done
echo "== vault mounted at $MNT (daemon pid $pid, log $DEMO/mount.log)"
login() { as "$1" env FOGVAULT_KEY_PASSPHRASE="$1-demo" "$FV" login --mount "$MNT" --key "$DEMO/keys/$1.key"; }

if [ ! -d "$MNT/radiology" ]; then
    echo "== writing synthetic EMR records (no real patient data)"
    mkdir -p "$MNT/radiology/patient-0001/ct-chest" "$MNT/oncology/patient-0003"
    "$PY" tests/tools/gen_ct.py "$MNT/radiology/patient-0001/ct-chest" --seed 1 --slices 120 >/dev/null
    # The same study referred to two other departments: stored once.
    cp -a "$MNT/radiology/patient-0001/ct-chest" "$MNT/oncology/patient-0003/staging-ct"
    chmod -R a+rX "$MNT/radiology"
    printf '{"resourceType":"Observation","status":"final","code":{"text":"synthetic"}}\n' > "$MNT/oncology/patient-0003/observation.json"
fi
echo "== before login, the vault folder is closed to everyone:"
as alice ls "$MNT/cardiology" 2>&1 | sed 's/^/   alice$ /' || true
echo "== alice (physician, rw) logs in and files a referral in cardiology"
login alice | sed 's/^/   /'
if ! as alice test -d "$MNT/cardiology/patient-0002"; then
    as alice mkdir -p "$MNT/cardiology/patient-0002"
    as alice cp -r "$MNT/radiology/patient-0001/ct-chest" "$MNT/cardiology/patient-0002/referral-ct"
    as alice sh -c "printf 'MSH|^~\\&|HIS|FOG|LAB|FOG|20260101120000||ORU^R01|1|P|2.5\nPID|1||SYNTH-0002||DOE^JANE^SYNTHETIC\n' > '$MNT/cardiology/patient-0002/labs.hl7'"
    echo "== alice files 12 more (synthetic) cardiology patients; the admin asks the fog node for 6 decoys"
    "$FV" synth-patients --out "$DEMO/incoming" --count 12 --seed 2026 >/dev/null
    chmod -R a+rX "$DEMO/incoming"
    as alice sh -c "cp -a '$DEMO/incoming/'* '$MNT/cardiology/'"
    rm -rf "$DEMO/incoming"
    adm decoys plant --folder cardiology --count 6 | sed 's/^/   /'
    for _ in $(seq 1 50); do adm decoys list | grep -c / >/dev/null && break; sleep 0.2; done
fi
as alice ls "$MNT/cardiology/patient-0002" | sed 's/^/   alice$ /'
echo "== bob (nurse, read-only) logs in: he can read, not write"
login bob | sed 's/^/   /'
as bob dcmdump "$MNT/cardiology/patient-0002/referral-ct/CT000001.dcm" 2>/dev/null | grep -m1 "PatientName" | sed 's/^/   bob$ dcmdump: /' || true
as bob touch "$MNT/cardiology/patient-0002/bob-note.txt" 2>&1 | sed 's/^/   bob$ /' || true
echo "== active sessions"
"$FV" sessions --mount "$MNT" | sed 's/^/   /'
echo "== the cardiology department as a user sees it (which are decoys? only the admin key can tell):"
as alice ls "$MNT/cardiology" | sed 's/^/   alice$ ls: /' | head -20
adm unlock mallory >/dev/null 2>&1 || true   # a re-run starts her unlocked
sleep 1
echo "== a simulated insider: mallory (clerk, read grant) logs in and copies the whole department"
as mallory env FOGVAULT_KEY_PASSPHRASE=mallory-demo "$FV" login --mount "$MNT" --key "$DEMO/keys/mallory.key" 2>&1 | sed 's/^/   /' || true
loot=$(mktemp -d /tmp/mallory-loot.XXXXXX); chown mallory "$loot"
as mallory cp -r "$MNT/cardiology" "$loot/" 2>&1 | tail -2 | sed 's/^/   mallory$ cp: /' || true
echo "   copied before the lock: $(find "$loot" -type f 2>/dev/null | wc -l) files; mallory now:"
as mallory ls "$MNT/cardiology" 2>&1 | sed 's/^/   mallory$ /' || true
rm -rf "$loot"
echo "== the alert (alerts file; also syslog/journald and the policy's webhook), no patient named:"
tail -2 "$DEMO/cache/alerts.log" 2>/dev/null | sed 's/^/   /' || true
echo "== the audit trail of that session (sealed on disk; needs the operator passphrase):"
"$FV" audit --repo "$DEMO/repo" --cache "$DEMO/cache" --user mallory | grep -E " (login|alert|session-locked) " | tail -3 | sed 's/^/   /' || true
echo "   (lift the lock: $FV admin unlock mallory --repo $DEMO/repo --admin-key $DEMO/admin.key)"
sync
echo "== what the cloud sees (ciphertext packs and the sealed, signed policy only)"
find "$DEMO/repo" -type f | head -6
echo "== dedup figures (the CT study is stored once across departments and the vault folder)"
"$FV" stats --repo "$DEMO/repo" --cache "$DEMO/cache"
cat <<EOT

The vault stays mounted at $MNT. Try: ls -R $MNT/radiology; dcmdump $MNT/radiology/patient-0001/ct-chest/CT000001.dcm | head
As alice:         setpriv --reuid alice --regid alice --init-groups ls $MNT/cardiology/patient-0002
Sessions:         $FV sessions --mount $MNT      (logout: $FV logout --mount $MNT, as that user)
The policy:       $FV admin policy show --repo $DEMO/repo --admin-key $DEMO/admin.key
Check integrity:  $FV verify --repo $DEMO/repo --cache $DEMO/cache --deep
Audit trail:      $FV audit --repo $DEMO/repo --cache $DEMO/cache [--verify] [--user U] [--patient DIR]
Decoys:           $FV admin decoys list --repo $DEMO/repo --admin-key $DEMO/admin.key
Unmount:          umount $MNT
(commands that unlock the vault read FOGVAULT_PASSPHRASE or prompt for it; the demo key passphrases are alice-demo and bob-demo)
EOT
