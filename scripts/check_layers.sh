#!/usr/bin/env bash
# Fails when a module outside its home uses fuser, object_store or LMDB (DESIGN.md section 6).
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
check() { # crate-regex home-dir
    local pattern="$1" home="$2" hits
    hits=$(grep -rnE "$pattern" src --include='*.rs' | grep -v "^src/$home/" || true)
    if [ -n "$hits" ]; then
        echo "layering violation: only src/$home/ may use this crate:" >&2
        echo "$hits" >&2
        status=1
    fi
}
check '(^|[^a-z_])fuser::|extern crate fuser|use fuser' fuse_adapter
check 'object_store' chunk_store
check '(^|[^a-z_])lmdb(::|_sys|[^a-z_-])|lmdb-rkv' metadata
[ "$status" -eq 0 ] && echo "layering ok"
exit "$status"
