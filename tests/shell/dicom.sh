#!/usr/bin/env bash
# Imaging-tools test: a synthetic CT study written to and read back from a real fogvault
# mount by pydicom, DCMTK (dcmdump, dcmj2pnm, storescu) and Orthanc (storage + SQLite
# index on the mount), across unmount/remount cycles. Needs `scripts/deps.sh test`.
# Knobs: DICOM_SEED, DICOM_SLICES (>=200 by default), FV_ORTHANC_HTTP_PORT, FV_ORTHANC_DICOM_PORT.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

TOOLS="$HERE/../tools"
PY=${FV_PYTHON:-/opt/fogvault-venv/bin/python}
SEED=${DICOM_SEED:-20240611}
SLICES=${DICOM_SLICES:-200}
EXTRA_SLICES=16                      # second study, uploaded over REST (whole-file identity)
HTTP_PORT=${FV_ORTHANC_HTTP_PORT:-8043}
DICOM_PORT=${FV_ORTHANC_DICOM_PORT:-4343}
URL="http://127.0.0.1:$HTTP_PORT"

for t in dcmdump dcmj2pnm storescu /usr/sbin/Orthanc; do
    command -v "$t" >/dev/null || fail "$t missing (run scripts/deps.sh test)"
done
"$PY" -c 'import pydicom, numpy' 2>/dev/null || fail "$PY lacks pydicom/numpy (run scripts/deps.sh test)"
[ -x "$FOGVAULT" ] || fail "no fogvault binary at $FOGVAULT (cargo build --release)"

# --- Orthanc process management (killed before lib.sh unmounts, on any exit) --------------
ORTHANC_PID=
ORTHANC_LOG="$FV_TMP/orthanc.log"
stop_orthanc() {  # graceful: SIGTERM, wait up to 30 s; non-zero if it failed or had to be killed
    [ -n "$ORTHANC_PID" ] || return 0
    local pid=$ORTHANC_PID i
    ORTHANC_PID=
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" 2>/dev/null || rc=$?
            [ "$rc" -eq 0 ] || { echo "Orthanc exited with status $rc" >&2; return 1; }
            return 0
        fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
}
on_exit() {
    local rc=$?
    stop_orthanc || true
    if [ "$rc" -ne 0 ] && [ -s "$ORTHANC_LOG" ]; then
        echo "--- last lines of orthanc.log ---" >&2
        tail -n 25 "$ORTHANC_LOG" >&2 || true
    fi
    cleanup
}
trap on_exit EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_orthanc() {
    port_busy "$HTTP_PORT" && fail "port $HTTP_PORT already in use (set FV_ORTHANC_HTTP_PORT)"
    port_busy "$DICOM_PORT" && fail "port $DICOM_PORT already in use (set FV_ORTHANC_DICOM_PORT)"
    echo "=== start $(date +%T)" >>"$ORTHANC_LOG"
    /usr/sbin/Orthanc "$FV_TMP/orthanc.json" >>"$ORTHANC_LOG" 2>&1 &
    ORTHANC_PID=$!
    "$PY" "$TOOLS/orthanc_check.py" wait "$URL" --timeout 60 || fail "Orthanc did not become ready"
    kill -0 "$ORTHANC_PID" 2>/dev/null || fail "Orthanc exited during startup"
}
# Orthanc logs errors (e.g. SQLite or storage-area I/O failures) as lines starting "E<mmdd>".
orthanc_log_clean() {
    ! grep -qE '^E[0-9]{4} ' "$ORTHANC_LOG" || { grep -E '^E[0-9]{4} ' "$ORTHANC_LOG" | head >&2; fail "Orthanc logged errors ($1)"; }
}

# --- 1. generate the study onto a fresh mount, compare with a local copy ------------------
D=$(new_repo dicom)
MNT="$D/mnt"
REF="$FV_TMP/ref"            # same seed, generated on local disk
mount_vault "$D"

"$PY" "$TOOLS/gen_ct.py" "$REF" --seed "$SEED" --slices "$SLICES" &
ref_pid=$!
"$PY" "$TOOLS/gen_ct.py" "$MNT/study" --seed "$SEED" --slices "$SLICES" \
    || fail "gen_ct.py failed writing onto the mount"
wait "$ref_pid" || fail "gen_ct.py failed writing to local disk"
n=$(find "$MNT/study" -name '*.dcm' | wc -l)
[ "$n" -eq "$SLICES" ] || fail "expected $SLICES slices on the mount, found $n"
pass "generated $SLICES-slice synthetic CT study (512x512 int16) onto the mount"

unmount_vault "$D"
mount_vault "$D"
pass "unmount + remount"

# --- 2. DCMTK reads every file back ------------------------------------------------------
err="$FV_TMP/dcmdump.err"
for f in "$MNT"/study/*.dcm; do
    dcmdump "$f" >/dev/null 2>"$err" || { cat "$err" >&2; fail "dcmdump failed on $f"; }
    ! grep -qE '^[EF]:' "$err" || { cat "$err" >&2; fail "dcmdump reported errors on $f"; }
done
pass "dcmdump parses all $SLICES files on the remounted vault"

mid=$(printf '%s/study/CT%06d.dcm' "$MNT" $(( (SLICES + 1) / 2 )))
dcmj2pnm --write-png +Wi 2 "$mid" "$FV_TMP/slice.png" || fail "dcmj2pnm failed on $mid"
dcmj2pnm --write-png +Wi 2 "$mid" "$MNT/slice.png" || fail "dcmj2pnm failed writing a PNG onto the mount"
# dcmj2pnm stamps the render time into the PNG (tIME), so the two renders are
# compared by header and decoded pixels, not byte for byte.
"$PY" - "$FV_TMP/slice.png" "$MNT/slice.png" <<'EOF' || fail "rendered PNGs are invalid or differ in pixels"
import struct, sys, zlib
seen = []
for path in sys.argv[1:]:
    b = open(path, "rb").read()
    assert len(b) > 1000 and b[:8] == b"\x89PNG\r\n\x1a\n", (path, len(b))
    pos, idat, chunks = 8, b"", []
    while pos < len(b):
        ln, typ = struct.unpack(">I4s", b[pos:pos + 8])
        data = b[pos + 8:pos + 8 + ln]
        crc, = struct.unpack(">I", b[pos + 8 + ln:pos + 12 + ln])
        assert zlib.crc32(typ + data) == crc, (path, typ, "bad CRC")
        chunks.append(typ)
        if typ == b"IHDR":
            w, h = struct.unpack(">II", data[:8])
            assert (w, h) == (512, 512), (path, w, h)
        if typ == b"IDAT":
            idat += data
        pos += 12 + ln
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", (path, chunks)
    raw = zlib.decompress(idat)
    assert len(set(raw)) > 16, (path, "image looks blank")
    seen.append((b[8:33], raw))
assert seen[0] == seen[1], "the PNG rendered onto the mount differs from the local render"
EOF
pass "dcmj2pnm renders slice $(basename "$mid") with its lung VOI window to a valid PNG (also written onto the mount)"

diff -r "$REF" "$MNT/study" >"$FV_TMP/diff.out" 2>&1 || { head -20 "$FV_TMP/diff.out" >&2; fail "mount copy differs from local copy"; }
nfiles=$(find "$REF" -type f | wc -l)
pass "all $nfiles files (slices + reports) byte-identical to a local copy with the same seed"

# --- 3. Orthanc with its storage and SQLite index on the mount ---------------------------
mkdir -p "$MNT/orthanc/storage" "$MNT/orthanc/index"
cat >"$FV_TMP/orthanc.json" <<EOF
{
  "Name": "fogvault-test",
  "StorageDirectory": "$MNT/orthanc/storage",
  "IndexDirectory": "$MNT/orthanc/index",
  "StorageCompression": false,
  "Plugins": [],
  "HttpServerEnabled": true,
  "HttpPort": $HTTP_PORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "OrthancExplorerEnabled": false,
  "WebDavEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "ORTHANC",
  "DicomPort": $DICOM_PORT,
  "DicomCheckCalledAet": true,
  "DicomAlwaysAllowStore": false,
  "DicomCheckModalityHost": true,
  "DicomModalities": { "fvtest": [ "FVTEST", "127.0.0.1", 4344 ] },
  "SaveJobs": false,
  "OverwriteInstances": false
}
EOF
start_orthanc
pass "Orthanc started (storage + index on the mount, HTTP $HTTP_PORT, DICOM $DICOM_PORT)"

storescu -aet FVTEST -aec ORTHANC 127.0.0.1 "$DICOM_PORT" "$MNT"/study/*.dcm >"$FV_TMP/storescu.log" 2>&1 \
    || { tail -20 "$FV_TMP/storescu.log" >&2; fail "storescu C-STORE failed"; }
! grep -qE '^[EF]:' "$FV_TMP/storescu.log" || { grep -E '^[EF]:' "$FV_TMP/storescu.log" | head >&2; fail "storescu reported errors"; }
"$PY" "$TOOLS/orthanc_check.py" count "$URL" --instances "$SLICES" --studies 1 >/dev/null \
    || fail "Orthanc does not hold all $SLICES instances after C-STORE"
pass "storescu sent $SLICES instances by C-STORE; REST API lists all of them"

REF2="$FV_TMP/ref2"
"$PY" "$TOOLS/gen_ct.py" "$REF2" --seed $((SEED + 1)) --slices "$EXTRA_SLICES" --no-reports
"$PY" "$TOOLS/orthanc_check.py" upload "$URL" "$REF2"/*.dcm || fail "REST upload failed"
"$PY" "$TOOLS/orthanc_check.py" count "$URL" --instances $((SLICES + EXTRA_SLICES)) --studies 2 >/dev/null \
    || fail "Orthanc does not hold all instances after REST upload"
pass "second study ($EXTRA_SLICES instances) uploaded over REST"

stop_orthanc || fail "Orthanc did not stop cleanly on SIGTERM"
orthanc_log_clean "first run"
unmount_vault "$D"
mount_vault "$D"
start_orthanc
pass "Orthanc stopped, vault unmounted + remounted, Orthanc restarted"

"$PY" "$TOOLS/orthanc_check.py" count "$URL" --instances $((SLICES + EXTRA_SLICES)) --studies 2 \
    || fail "Orthanc index lost instances across the remount"
"$PY" "$TOOLS/orthanc_check.py" fetch "$URL" --dataset "$REF" --exact "$REF2" \
    || fail "instances downloaded from Orthanc differ from the originals"
pass "every instance downloaded back via REST: C-STORE'd data sets and REST-uploaded files byte-identical, stored MD5s verify"

stop_orthanc || fail "Orthanc did not stop cleanly on SIGTERM"
orthanc_log_clean "second run"
unmount_vault "$D"
"$FOGVAULT" verify --repo "$(repo_of "$D")" --cache "$D/cache" >"$FV_TMP/verify.out" 2>&1 \
    || { cat "$FV_TMP/verify.out" >&2; fail "fogvault verify reports problems"; }
pass "fogvault verify is clean after the imaging workload"
