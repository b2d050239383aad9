#!/usr/bin/env bash
# Login to first byte (issue 4): `fogvault login` (key-file unsealing, the
# identity-based handshake over the control socket, folder-key hand-over),
# then the first byte of an already-cached 1 MiB file in a vault folder.
#
# Setup: init with an admin authority, enrol alice, create the vault folder
# cardiology, grant alice rw, mount with --allow-other, log in once, write
# $MNT/cardiology/report.dcm (1 MiB random), read it once.
# Then LOGIN_RUNS times (default 20), interleaved:
#   A. logout (untimed; checked: the file is EACCES again); time `fogvault login`;
#      time open + read(1) of the file
#   B. time `fogvault login` against a directory with no daemon: the same
#      process start, key-file read, Argon2id unsealing and identity-key check,
#      then it fails at the connect (checked) -- "everything before the socket"
#   C. time `fogvault --version`: a bare start of the binary
#   D. (if strace is installed) logout, then `fogvault login` under strace with a
#      seccomp filter that stops only at connect and exit_group: the time from
#      its connect() to the control socket to exit_group, plus a first byte
#      read right after -- the part of A after the key file, measured directly
# The loop runs in one python process; logins are fork+exec'd from it and their
# CPU time comes from wait4 rusage. The first byte is read with os.open/os.read
# (no extra process). The daemon's CPU per iteration is the delta of its
# /proc/PID/stat utime+stime over the A phases, divided by N.
# Prints medians and appends them to bench-out/results.md. Run as root
# (part of scripts/bench.sh). FOGVAULT=PATH selects the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
FOGVAULT=${FOGVAULT:-$PWD/target/release/fogvault}
N=${LOGIN_RUNS:-20}
OUT=${BENCH_OUT:-$PWD/bench-out}
[ "$(id -u)" -eq 0 ] || { echo "bench_login.sh: run as root" >&2; exit 2; }
[ -x "$FOGVAULT" ] || { echo "bench_login.sh: $FOGVAULT not built" >&2; exit 2; }
W=$(mktemp -d /var/tmp/fvlogin.XXXXXX)
export FOGVAULT_PASSPHRASE=bench FOGVAULT_ADMIN_PASSPHRASE=bench-admin FOGVAULT_KEY_PASSPHRASE=bench-user
PID=""
cleanup() {
    if mountpoint -q "$W/mnt" 2>/dev/null; then umount "$W/mnt" 2>/dev/null || umount -l "$W/mnt" 2>/dev/null || true; fi
    [ -n "$PID" ] && wait "$PID" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/mnt" "$W/no-daemon"
adm() { "$FOGVAULT" admin "$@" --repo "$W/repo" --admin-key "$W/admin.key" >/dev/null; }
"$FOGVAULT" init --repo "$W/repo" --admin-key "$W/admin.key" >/dev/null
adm user add alice --role physician --key-out "$W/alice.key"
adm folder create cardiology
adm grant --user alice --folder cardiology --rights rw
"$FOGVAULT" mount --repo "$W/repo" --cache "$W/cache" --allow-other "$W/mnt" 2>"$W/log" &
PID=$!
for _ in $(seq 100); do mountpoint -q "$W/mnt" && break; kill -0 "$PID" || { cat "$W/log" >&2; exit 1; }; sleep 0.1; done
mountpoint -q "$W/mnt" || { cat "$W/log" >&2; echo "bench_login.sh: mount did not come up" >&2; exit 1; }
"$FOGVAULT" login --mount "$W/mnt" --key "$W/alice.key" >/dev/null
F=$W/mnt/cardiology/report.dcm
head -c 1048576 /dev/urandom > "$F"
cat "$F" >/dev/null   # read once: cached

python3 - "$FOGVAULT" "$W/mnt" "$W/alice.key" "$F" "$W/no-daemon" "$N" "$PID" >"$W/res" <<'EOF'
import os, subprocess, sys, time, statistics
fv, mnt, key, f, nod, n, pid = sys.argv[1:]
n, tick = int(n), os.sysconf("SC_CLK_TCK")
devnull = os.open(os.devnull, os.O_RDWR)

def run(args, expect_ok=True, errfile=None):
    """fork+exec args; return (wall s, child user+sys CPU s, exit status)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdin=devnull, stdout=devnull, stderr=errfile or devnull)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if expect_ok and p.returncode != 0:
        sys.exit(f"{args} failed ({p.returncode})")
    return wall, ru.ru_utime + ru.ru_stime, p.returncode

def daemon_cpu():
    with open(f"/proc/{pid}/stat") as s:
        fields = s.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick   # utime, stime

# B must fail at the connect, i.e. after unsealing the key file.
with open(os.path.join(nod, "err"), "w+") as e:
    _, _, rc = run([fv, "login", "--mount", nod, "--key", key], expect_ok=False, errfile=e)
    e.seek(0); msg = e.read()
    if rc == 0 or "no fogvault daemon" not in msg:
        sys.exit(f"unsealing-only login did not fail at the connect: rc={rc} {msg!r}")

import re, shutil
strace = shutil.which("strace")
trace = os.path.join(nod, "trace")

def after_connect():
    """D: a login under strace (seccomp filter: only connect and exit_group stop
    the process); the time from its connect() to the control socket until
    exit_group, plus the first byte read after it."""
    run([fv, "logout", "--mount", mnt])
    run([strace, "-f", "--seccomp-bpf", "-ttt", "-e", "trace=connect,exit_group", "-o", trace,
         fv, "login", "--mount", mnt, "--key", key])
    t0 = time.perf_counter()
    fd = os.open(f, os.O_RDONLY); os.read(fd, 1); os.close(fd)
    t1 = time.perf_counter()
    c = e = None
    for line in open(trace):
        m = re.match(r"\d+\s+([\d.]+) (connect|exit_group)\(", line)
        if m and m.group(2) == "connect" and "/run/fogvault/" in line and c is None:
            c = float(m.group(1))
        elif m and m.group(2) == "exit_group":
            e = float(m.group(1))
    if c is None or e is None:
        sys.exit(f"cannot find connect/exit_group in the strace output: {open(trace).read()!r}")
    return e - c + (t1 - t0)

login_w, login_cpu, fb, total, unseal_w, unseal_cpu, bare, sock = [], [], [], [], [], [], [], []
dcpu = 0.0
rest = []
for _ in range(n):
    run([fv, "logout", "--mount", mnt])
    try:   # logout took effect: the folder is closed to us again
        os.close(os.open(f, os.O_RDONLY)); sys.exit("the file is readable after logout")
    except PermissionError:
        pass
    c0 = daemon_cpu()
    w, cpu, _ = run([fv, "login", "--mount", mnt, "--key", key])
    t0 = time.perf_counter()
    fd = os.open(f, os.O_RDONLY)
    b = os.read(fd, 1)
    os.close(fd)
    t1 = time.perf_counter()
    dcpu += daemon_cpu() - c0
    assert len(b) == 1
    login_w.append(w); login_cpu.append(cpu); fb.append(t1 - t0); total.append(w + (t1 - t0))
    w, cpu, _ = run([fv, "login", "--mount", nod, "--key", key], expect_ok=False)
    unseal_w.append(w); unseal_cpu.append(cpu); rest.append(total[-1] - w)
    bare.append(run([fv, "--version"])[0])
    if strace:
        sock.append(after_connect())

ms = lambda xs: statistics.median(xs) * 1000
print(f"total {ms(total):.1f}")
print(f"login {ms(login_w):.1f}")
print(f"login_cpu {ms(login_cpu):.1f}")
print(f"first_byte {ms(fb):.2f}")
print(f"unseal {ms(unseal_w):.1f}")
print(f"unseal_cpu {ms(unseal_cpu):.1f}")
print(f"bare {ms(bare):.1f}")
print(f"daemon_cpu {dcpu / n * 1000:.1f}")
print(f"rest {ms(rest):.1f}")
print(f"sock {ms(sock):.1f}" if sock else "sock n/a")
print(f"total_min {min(total) * 1000:.1f}")
print(f"total_max {max(total) * 1000:.1f}")
EOF
g() { awk -v k="$1" '$1 == k {print $2}' "$W/res"; }
kdf=$(python3 -c 'import json,sys; k=json.load(open(sys.argv[1]))["kdf"]
print("%s %d MiB, t=%d, p=%d" % (k["algorithm"], k["m_cost_kib"] // 1024, k["t_cost"], k["p_cost"]))' "$W/alice.key")
report=$(cat <<EOT
Login to first byte, median of $N (range $(g total_min)–$(g total_max) ms): **$(g total) ms** = \`fogvault login\` $(g login) ms (client CPU $(g login_cpu) ms) + open and read(1) of the cached file $(g first_byte) ms.
- Before the socket (same binary, same key file, no daemon: process start, key-file read, unsealing with the key file's KDF ($kdf), identity-key pairing check, failed connect): **$(g unseal) ms** (client CPU $(g unseal_cpu) ms); a bare \`fogvault --version\` takes $(g bare) ms.
- After the key file (one more login per iteration, under \`strace -f --seccomp-bpf -e trace=connect,exit_group\`, which stops only at those two calls): from its connect() to the control socket to its exit_group -- handshake, folder-key hand-over, folder unlock in the daemon -- plus the first byte read right after: **$(g sock) ms**.
- The same by subtraction (A's total minus B of the same iteration, median; a difference of two figures of ~$(g unseal) ms that vary by several ms, so only a rough check, it can even come out negative): $(g rest) ms.
- Daemon CPU per iteration (logout + login + first byte, all daemon threads incl. the 0.5 s policy ticker): $(g daemon_cpu) ms (from /proc utime+stime, 10 ms ticks, averaged over $N).
- "Cached": the file was written and read once through the mount before; each logout was checked to make it EACCES again, so every measured open passed the daemon's session gate (the byte itself may come from the kernel page cache or the daemon's chunk cache).
EOT
)
echo "$report"
mkdir -p "$OUT"
printf '\n## Login (issue 4)\n\n`scripts/bench_login.sh` (LOGIN_RUNS=%s), run as root.\n\n%s\n' "$N" "$report" >> "$OUT/results.md"
