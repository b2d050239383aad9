#!/usr/bin/env bash
# Login to first byte: identity-based handshake over the control socket,
# then the first byte of an already-cached file. Prints the median over N runs
# and appends it to bench-out/results.md. Run as root (part of scripts/bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
FOGVAULT=${FOGVAULT:-$PWD/target/release/fogvault}
N=${LOGIN_RUNS:-20}
W=$(mktemp -d /var/tmp/fvlogin.XXXXXX)
export FOGVAULT_PASSPHRASE=bench FOGVAULT_ADMIN_PASSPHRASE=bench-admin FOGVAULT_KEY_PASSPHRASE=bench-user
cleanup() { mountpoint -q "$W/mnt" && umount "$W/mnt"; sleep 0.3; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/mnt"
"$FOGVAULT" init --repo "$W/repo" --admin-key "$W/admin.key" >/dev/null
"$FOGVAULT" admin user add alice --role physician --key-out "$W/alice.key" --admin-key "$W/admin.key" >/dev/null
"$FOGVAULT" mount --repo "$W/repo" --cache "$W/cache" "$W/mnt" 2>"$W/log" &
for _ in $(seq 100); do mountpoint -q "$W/mnt" && break; sleep 0.1; done
head -c 1048576 /dev/urandom > "$W/mnt/report.dcm"
cat "$W/mnt/report.dcm" >/dev/null   # cached
times=()
for _ in $(seq "$N"); do
    "$FOGVAULT" logout --mount "$W/mnt" >/dev/null
    s=$(date +%s%N)
    "$FOGVAULT" login --mount "$W/mnt" --key "$W/alice.key" >/dev/null
    head -c 1 "$W/mnt/report.dcm" >/dev/null
    e=$(date +%s%N)
    times+=($(( (e - s) / 1000 )))
done
med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
line="login to first byte (cached file, median of $N): $(awk -v u="$med" 'BEGIN {printf "%.1f ms", u/1000}') — includes Argon2id unsealing of the key file (64 MiB, t=3)"
echo "$line"
mkdir -p bench-out
printf '\n## Login\n\n%s\n' "$line" >> bench-out/results.md
