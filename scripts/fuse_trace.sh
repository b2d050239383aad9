#!/usr/bin/env bash
# Which FUSE requests a command causes, and how long each waits for the
# daemon: the kernel's fuse_request_send/fuse_request_end tracepoints while
# COMMAND runs, summed per opcode (count, per item, mean/p50/p99 latency).
# Run as root against a mounted vault (any FUSE file system, in fact).
# Not part of CI.
#
#   scripts/fuse_trace.sh ITEMS COMMAND [ARGS...]
#   scripts/fuse_trace.sh 20000 tar xf tree.tar -C /mnt/vault/t
#
# ITEMS divides the counts (files in the tree, operations in a loop).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 ITEMS COMMAND [ARGS...]" >&2; exit 2; }
items=$1; shift
T=/sys/kernel/tracing
[ -d $T/events ] || mount -t tracefs nodev $T
[ -d $T/events/fuse ] || { echo "this kernel has no fuse tracepoints" >&2; exit 1; }
out=$(mktemp)
trap 'echo 0 >$T/events/fuse/enable; rm -f "$out"' EXIT
echo 65536 >$T/buffer_size_kb
echo >$T/trace
echo 1 >$T/events/fuse/enable
echo 1 >$T/tracing_on
"$@"
echo 0 >$T/events/fuse/enable
cp $T/trace "$out"
python3 - "$out" "$items" <<'PY'
import collections, re, sys
sent, waits = {}, collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.search(r"\s(\d+\.\d+): fuse_request_send: connection \d+ req (\d+) opcode \d+ \((\w+)\)", line)
    if m:
        sent[m.group(2)] = (float(m.group(1)), m.group(3).removeprefix("FUSE_"))
        continue
    m = re.search(r"\s(\d+\.\d+): fuse_request_end: connection \d+ req (\d+)", line)
    if m and m.group(2) in sent:
        t, op = sent.pop(m.group(2))
        waits[op].append(float(m.group(1)) - t)
items = int(sys.argv[2])
print(f"{'request':<14}{'count':>9}{'per item':>10}{'mean us':>9}{'p50 us':>8}{'p99 us':>9}{'total s':>9}")
for op, w in sorted(waits.items(), key=lambda kv: -sum(kv[1])):
    w.sort()
    print(f"{op:<14}{len(w):>9}{len(w) / items:>10.2f}{sum(w) / len(w) * 1e6:>9.1f}"
          f"{w[len(w) // 2] * 1e6:>8.1f}{w[int(len(w) * .99)] * 1e6:>9.1f}{sum(w):>9.2f}")
if sent:
    print(f"({len(sent)} requests without a reply in the trace: the buffer overflowed or they were interrupted)")
PY
