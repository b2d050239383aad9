#!/usr/bin/env bash
# The vault on a three-node Garage cluster (replication_factor 3, one zone a
# node, default consistency: writes and reads need 2 of 3 nodes), all on
# loopback. fogvault talks to node 1's S3 API; node 3, a storage replica, is
# killed with SIGKILL in the middle of a write workload (files written and
# fsynced, a tree copied with cp -a):
#   - the workload completes with no error, and the uploads go on with a node
#     down (the journal drains, a clean unmount exits 0);
#   - verify --deep passes, and a fog node rebuilt from the cluster alone
#     (fogvault recover) reads every fsynced file byte-identical;
#   - node 3 restarts, catches up its replicas, and verify passes again, also
#     with node 2 killed afterwards (so node 3 serves as one of the quorum).
# The local-store setting is irrelevant: this suite always runs on Garage.
FV_STORE=local   # lib.sh must not start its single-node Garage: this suite runs three
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/garage.sh"

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
base=$(free_ports 32)   # node i: S3 on base+10i, RPC on the next port
node_dir() { echo "$FV_TMP/garage$1"; }
port_of() { echo $((base + 10 * $1)); }
declare -A node_pid node_id
start_node() {
    garage_node_start "$(node_dir "$1")"
    node_pid[$1]=$GARAGE_PID
    node_id[$1]=$GARAGE_NODE
}
kill_node() {
    kill -9 "${node_pid[$1]}"
    wait "${node_pid[$1]}" 2>/dev/null || true
}
# rpc_timeout_msec: a node that learns of a block it lacks fetches it after
# 2 RPC timeouts; Garage's default (300 s) would hold node 3's catch-up for
# 10 minutes.
for i in 1 2 3; do
    garage_config "$(node_dir "$i")" "$(port_of "$i")" 3 "$secret" "rpc_timeout_msec = 10000"
    start_node "$i"
done
cli() { echo "$(garage_bin) -c $(node_dir "$1")/garage.toml"; }
GARAGE=$(cli 1)
for i in 2 3; do $GARAGE node connect "${node_id[$i]}" >/dev/null; done
for i in 1 2 3; do $GARAGE layout assign -z "dc$i" -c 10G "${node_id[$i]%%@*}" >/dev/null; done
$GARAGE layout apply --version 1 >/dev/null
garage_access "$(port_of 1)"
# A returning node fetches the blocks it missed at full speed (the default
# pauses between blocks would take minutes for the few hundred MB here).
$GARAGE worker set -a resync-tranquility 0 >/dev/null
$GARAGE worker set -a resync-worker-count 4 >/dev/null
# healthy N [NODE] → true when NODE (1 by default) sees N nodes up with a role
healthy() {
    local n
    n=$($(cli "${2:-1}") status 2>/dev/null | sed -n '/HEALTHY NODES/,/FAILED NODES/p' | grep -c ' dc[123] ' || true)
    [ "$n" -eq "$1" ]
}
# The layout reaches every node; then a PUT and GET through node 1 must work.
for _ in $(seq 1 100); do healthy 3 && break; sleep 0.2; done
healthy 3 || { $GARAGE status >&2; fail "the cluster did not come up with 3 healthy nodes"; }
echo probe > "$FV_TMP/probe"
for _ in $(seq 1 50); do s3_req PUT probe --data-binary "@$FV_TMP/probe" -o /dev/null 2>/dev/null && break; sleep 0.2; done
[ "$(s3_req GET probe)" = probe ] || fail "the cluster does not take a PUT"
s3_req DELETE probe -o /dev/null
pass "3-node Garage cluster up (replication factor 3, zones dc1-dc3)"

FV_STORE=s3   # from here on repo_of and store_* use the cluster's bucket
d=$(new_repo vault)
mount_vault "$d"
m="$d/mnt"

# A tree to copy (cp -a) during the kill: 240 files, 4 KB to 400 KB, in 12 directories.
python3 - "$FV_TMP/tree" <<'PY'
import os, random, sys
rnd = random.Random(3)
for i in range(240):
    d = os.path.join(sys.argv[1], f"series{i % 12:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"img{i:04}.dcm"), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(4_000, 400_000)))
PY

# The writer fsyncs file after file for 10 s; a file goes into the manifest
# only after its fsync returned, a failed write or fsync into the error list.
python3 - "$m/records" "$FV_TMP/manifest" "$FV_TMP/write-errors" 10 <<'PY' &
import hashlib, os, random, sys, time
root, manifest, errors, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
os.makedirs(root, exist_ok=True)
rnd = random.Random(11)
end = time.monotonic() + secs
i = 0
with open(manifest, "w") as man, open(errors, "w") as err:
    while time.monotonic() < end:
        data = os.urandom(rnd.choice([20_000, 200_000, 800_000, 1_500_000]))
        path = os.path.join(root, f"r{i:05}.bin")
        try:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if i % 4 == 3:  # rewrite the middle in place, fsync again
                patch = os.urandom(min(len(data) // 2, 8192))
                with open(path, "r+b") as f:
                    f.seek(len(data) // 3); f.write(patch); f.flush(); os.fsync(f.fileno())
                data = data[:len(data) // 3] + patch + data[len(data) // 3 + len(patch):]
        except OSError as e:
            err.write(f"{path} {e}\n"); err.flush()
        else:
            man.write(f"{path} {hashlib.sha256(data).hexdigest()}\n"); man.flush()
        i += 1
        time.sleep(0.02)
PY
writer=$!
sleep 3
cp -a "$FV_TMP/tree" "$m/tree" &
copier=$!
sleep 1
packs_at_kill=$(store_ls "$d" packs/ | wc -l)
kill_node 3
kill -0 "$writer" 2>/dev/null || fail "the writer finished before node 3 was killed: not a mid-workload kill"
killed_at=$(date +%s)
rc=0; wait "$copier" || rc=$?
[ "$rc" -eq 0 ] || fail "cp -a failed with exit $rc while node 3 was down"
rc=0; wait "$writer" || rc=$?
[ "$rc" -eq 0 ] || fail "the writer crashed (exit $rc)"
[ ! -s "$FV_TMP/write-errors" ] || { cat "$FV_TMP/write-errors" >&2; fail "writes or fsyncs failed with one node of three down"; }
n=$(wc -l < "$FV_TMP/manifest")
[ "$n" -gt 20 ] || fail "the writer completed only $n files"
diff -r "$FV_TMP/tree" "$m/tree" || fail "the copied tree differs"
pass "write workload completed with node 3 killed after ${packs_at_kill} packs: $n files fsynced, a 240-file tree copied, no errors"

# Everything reaches the cluster with node 3 still down: a clean unmount
# uploads what is left and exits 0, leaving nothing in the journal.
FV_UNMOUNT_TIMEOUT=180 unmount_vault "$d"
[ -z "$(ls "$d/cache/staging/" | grep '\.data$' || true)" ] || fail "packs left in the upload journal after a clean unmount"
packs_now=$(store_ls "$d" packs/ | wc -l)
[ "$packs_now" -gt "$packs_at_kill" ] || fail "no pack was uploaded after node 3 was killed ($packs_at_kill before, $packs_now after)"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep with node 3 down"
pass "all uploads done with node 3 down ($((packs_now - packs_at_kill)) packs after the kill); verify --deep clean"

# check_all CACHE WHAT → mount with CACHE, every fsynced file and the tree identical
check_all() {
    "$FOGVAULT" mount --repo "$(repo_of "$d")" --cache "$1" "$m" >>"$d/mount.log" 2>&1 &
    MOUNT_PID=$!; FV_PIDS+=("$MOUNT_PID")
    local i bad=0 path sum got
    for i in $(seq 1 100); do mountpoint -q "$m" && break; sleep 0.1; done
    mountpoint -q "$m" || { tail -n 20 "$d/mount.log" >&2; fail "mount with $1 did not come up ($2)"; }
    while read -r path sum; do
        got=$(sha256sum "$path" 2>/dev/null | cut -d' ' -f1 || true)
        [ "$got" = "$sum" ] || { echo "lost or damaged: $path" >&2; bad=$((bad + 1)); }
    done < "$FV_TMP/manifest"
    [ "$bad" -eq 0 ] || fail "$bad of $n fsynced files lost or damaged ($2)"
    diff -r "$FV_TMP/tree" "$m/tree" || fail "the copied tree differs ($2)"
    unmount_vault "$d"
}
fv recover --repo "$(repo_of "$d")" --cache "$d/cache-recovered" >/dev/null || fail "recover from the cluster with node 3 down"
check_all "$d/cache-recovered" "node recovered from the cluster, node 3 down"
pass "a fog node rebuilt from the cluster alone (node 3 down) reads all $n fsynced files and the tree byte-identical"

# Node 3 comes back and catches up: every block of every pack lands in its
# data directory. Garage cuts an object into 1 MiB blocks and names a block
# by the first 32 bytes of its BLAKE2b-512 hash (data/ab/cd/<hash>).
store_ls "$d" packs/ > "$FV_TMP/packs.txt"
: > "$FV_TMP/blocks.txt"
while read -r pack; do
    store_get "$d" "$pack" "$FV_TMP/pack.tmp"
    python3 - "$FV_TMP/pack.tmp" >> "$FV_TMP/blocks.txt" <<'PY'
import hashlib, sys
data = open(sys.argv[1], "rb").read()
for off in range(0, len(data), 1 << 20):
    print(hashlib.blake2b(data[off:off + (1 << 20)]).hexdigest()[:64])
PY
done < "$FV_TMP/packs.txt"
rm -f "$FV_TMP/pack.tmp"
missing_on() { # NODE → how many pack blocks its data directory lacks
    local dir; dir="$(node_dir "$1")/data"
    python3 - "$dir" "$FV_TMP/blocks.txt" <<'PY'
import os, sys
d = sys.argv[1]
print(sum(not os.path.exists(os.path.join(d, h[:2], h[2:4], h)) for h in open(sys.argv[2]).read().split()))
PY
}
nblocks=$(wc -l < "$FV_TMP/blocks.txt")
[ "$(missing_on 1)" -eq 0 ] || fail "node 1 lacks $(missing_on 1) of $nblocks pack blocks (block naming not understood?)"
missed=$(missing_on 3)
[ "$missed" -gt 0 ] || fail "node 3 already holds every block: it missed nothing while it was down?"
start_node 3
for _ in $(seq 1 150); do healthy 3 && healthy 3 3 && break; sleep 0.2; done
healthy 3 && healthy 3 3 || { $GARAGE status >&2; $(cli 3) status >&2; fail "node 3 did not rejoin"; }
# What an operator runs after a node outage (Garage's durability guide): a
# full sync of the metadata tables, so that node 3 learns of every block it
# missed now rather than at the hourly sync (its own sync at startup may run
# before it is connected), then block repairs on node 3 (below), which queue
# every block it should hold: a block whose reference reached node 3 just
# before the kill, but whose resync entry had not been written yet, is
# otherwise never fetched.
$GARAGE repair -a --yes tables >/dev/null
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify --deep after node 3 restarted"
start=$(date +%s)
for i in $(seq 0 179); do
    [ "$(missing_on 3)" -eq 0 ] && break
    [ $((i % 30)) -ne 15 ] || $(cli 3) repair --yes blocks >/dev/null
    sleep 1
done
if [ "$(missing_on 3)" -ne 0 ]; then
    $(cli 3) status >&2; $(cli 3) block list-errors >&2
    fail "node 3 still lacks $(missing_on 3) of $nblocks pack blocks 180 s after its restart"
fi
pass "node 3 restarted and rejoined; verify --deep clean; it fetched the $missed of $nblocks pack blocks it had missed in $(( $(date +%s) - start )) s"

# With node 2 down now, node 3 is one of the two nodes every read needs.
# The rebuilt fog node serves from here on: it continued the repository's
# audit trail, so the old node's would now fork it (its uploads are refused).
kill_node 2
fv verify --repo "$(repo_of "$d")" --cache "$d/cache-recovered" --deep >/dev/null || fail "verify --deep with node 2 down after node 3's return"
check_all "$d/cache-recovered" "node 2 down after node 3's return"
start_node 2
pass "with node 2 killed after node 3's return, verify --deep is clean and every file reads back"
