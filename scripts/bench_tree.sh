# The small-file tree of the untar benchmarks (scripts/bench.sh 4a, scripts/bench_s3.sh). Source it.
#
# make_tree_tar TAR N [LOG]: unless TAR exists, builds it as a tarball of the first N real files
# (< 8 MiB each, readable, path ≤ 150 bytes: rclone crypt turns longer paths into object keys past
# Garage's 511-byte limit, and that upload fails in scripts/bench_s3.sh) found under the cargo registry, /usr/lib/python3*, /usr/share/{doc,perl,
# perl5,locale,man} and /usr/share. The file lists are kept next to TAR (tree.all, tree.list);
# tar's warnings go to LOG (default /dev/null). Returns non-zero if tar fails.
make_tree_tar() {
    local tar=$1 n=$2 log=${3:-/dev/null} dir cand=() d rc=0
    [ -f "$tar" ] && return 0
    dir=$(dirname "$tar")
    mkdir -p "$dir"
    for d in "$HOME"/.cargo/registry/src /usr/lib/python3 /usr/lib/python3.[0-9]* /usr/share/doc \
             /usr/share/perl /usr/share/perl5 /usr/share/locale /usr/share/man /usr/share; do
        [ -d "$d" ] && cand+=("$d")
    done
    { find "${cand[@]}" -type f -size -8M -readable 2>/dev/null || true; } | awk '!seen[$0]++ && length($0) <= 150' >"$dir/tree.all"
    sed -n "1,${n}p" "$dir/tree.all" >"$dir/tree.list"
    tar cf "$tar.tmp" --ignore-failed-read -T "$dir/tree.list" 2>>"$log" || rc=$?
    [ "$rc" -le 1 ] || { echo "make_tree_tar: building $tar failed" >&2; return 1; }
    mv "$tar.tmp" "$tar"
}
