#!/usr/bin/env bash
# fogvault demo on the embedded default (a local directory as the "cloud"):
# builds fogvault, creates a local vault, mounts a demo EMR folder, fills it
# with synthetic patients (a CT study, reports, FHIR/HL7 files), and prints
# the dedup figures. The mount stays up for you to explore.
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

mkdir -p "$DEMO" "$MNT"
if mountpoint -q "$MNT"; then umount "$MNT"; sleep 1; fi
if [ ! -e "$DEMO/repo/config" ]; then
    "$FV" init --repo "$DEMO/repo"
fi
"$FV" mount --repo "$DEMO/repo" --cache "$DEMO/cache" --allow-other "$MNT" >"$DEMO/mount.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do mountpoint -q "$MNT" && break; kill -0 "$pid" || { cat "$DEMO/mount.log"; exit 1; }; sleep 0.1; done
echo "== vault mounted at $MNT (daemon pid $pid, log $DEMO/mount.log)"

if [ ! -d "$MNT/cardiology" ]; then
    echo "== writing synthetic EMR records (no real patient data)"
    mkdir -p "$MNT/radiology/patient-0001/ct-chest" "$MNT/cardiology/patient-0002" "$MNT/oncology/patient-0003"
    "$PY" tests/tools/gen_ct.py "$MNT/radiology/patient-0001/ct-chest" --seed 1 --slices 120 >/dev/null
    # The same study referred to two other departments: stored once.
    cp -a "$MNT/radiology/patient-0001/ct-chest" "$MNT/cardiology/patient-0002/referral-ct"
    cp -a "$MNT/radiology/patient-0001/ct-chest" "$MNT/oncology/patient-0003/staging-ct"
    for p in cardiology/patient-0002 oncology/patient-0003; do
        printf 'MSH|^~\\&|HIS|FOG|LAB|FOG|20260101120000||ORU^R01|%s|P|2.5\nPID|1||SYNTH-%s||DOE^JANE^SYNTHETIC\n' "$RANDOM" "$RANDOM" > "$MNT/$p/labs.hl7"
        printf '{"resourceType":"Observation","status":"final","code":{"text":"synthetic"}}\n' > "$MNT/$p/observation.json"
    done
fi
sync
echo "== what the mount shows"
find "$MNT" -maxdepth 3 | head -20
echo "== what the cloud sees (ciphertext packs only)"
find "$DEMO/repo" -type f | head -5
echo "== dedup figures"
"$FV" stats --repo "$DEMO/repo" --cache "$DEMO/cache"
cat <<EOT

The vault stays mounted at $MNT. Try: ls -R $MNT; dcmdump $MNT/radiology/patient-0001/ct-chest/CT000001.dcm | head
Check integrity:  $FV verify --repo $DEMO/repo --cache $DEMO/cache --deep
Unmount:          umount $MNT
(commands that unlock the vault read FOGVAULT_PASSPHRASE or prompt for it)
EOT
