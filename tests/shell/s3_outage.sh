#!/usr/bin/env bash
# The cloud goes away (Garage frozen with SIGSTOP: connections hang): writes
# go on into the local upload journal and fsync stays durable; beyond the
# journal limit writers get ENOSPC; a daemon crash during the outage loses
# nothing; when the cloud returns the journal drains and every fsynced byte
# is there, verified.
FV_STORE=s3
source "$(dirname "$0")/lib.sh"

d=$(new_repo outage)
repo=$(repo_of "$d")
mount_vault "$d" --journal-limit 96M
m="$d/mnt"
head -c 20000000 /dev/urandom > "$FV_TMP/before.bin"
cp "$FV_TMP/before.bin" "$m/before.bin"
sync

kill -STOP "$GARAGE_PID"
trap 'kill -CONT "$GARAGE_PID" 2>/dev/null; cleanup' EXIT
start=$(date +%s)
for i in 1 2 3 4; do
    head -c 12000000 /dev/urandom > "$FV_TMP/during$i.bin"
    timeout 120 python3 - "$FV_TMP/during$i.bin" "$m/during$i.bin" <<'PY' || fail "write $i during the outage failed"
import os, sys
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data); os.fsync(fd); os.close(fd)
PY
done
took=$(( $(date +%s) - start ))
ls "$d/cache/staging/" | grep -c >/dev/null '\.data$' || fail "nothing in the upload journal during the outage"
pass "48 MB written and fsynced with the store unreachable (${took} s)"

# Beyond the journal limit: ENOSPC, not a hang and not loss; a streaming
# writer that never fsyncs hears it from write(2) too, not only at close
# (its background commits fail; the next buffer commits in front).
past_limit() { # past_limit fsync|stream
    timeout 120 python3 - "$m/too-much.bin" "$1" <<'PY'
import errno, os, sys
path, mode = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    for _ in range(40):
        os.write(fd, os.urandom(8 << 20))
        if mode == "fsync":
            os.fsync(fd)
    sys.exit(f"wrote 320 MB into a 96 MB journal ({mode}) without ENOSPC")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
finally:
    try:
        os.close(fd)
    except OSError:
        pass
PY
    rm -f "$m/too-much.bin"
}
past_limit fsync || fail "writing past the journal limit did not give ENOSPC"
past_limit stream || fail "a streaming writer past the journal limit did not get ENOSPC from write(2)"
pass "writes past the journal limit get ENOSPC (with fsync, and from write(2) when streaming)"

# Crash during the outage, then the cloud comes back.
kill9_vault "$d"
kill -CONT "$GARAGE_PID"
mount_vault "$d" --journal-limit 96M
for i in $(seq 1 120); do
    [ -z "$(ls "$d/cache/staging/" | grep '\.data$' || true)" ] && break
    sleep 0.5
done
[ -z "$(ls "$d/cache/staging/" | grep '\.data$' || true)" ] || fail "the journal did not drain after the store came back"
cmp "$FV_TMP/before.bin" "$m/before.bin" || fail "before.bin differs"
for i in 1 2 3 4; do cmp "$FV_TMP/during$i.bin" "$m/during$i.bin" || fail "during$i.bin differs after the outage"; done
unmount_vault "$d"
fv verify --repo "$repo" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after the outage"
pass "after a crash during the outage and the store's return, the journal drains and every fsynced byte is intact"
