#!/usr/bin/env bash
# POSIX conformance: run pjdfstest (the Rust port, crates.io `pjdfstest`) on a
# fogvault mount. Needs root (the suite switches uids, creates device nodes
# and remounts read-only) and cargo (to install pjdfstest on a fresh machine).
# Exits non-zero if any pjdfstest test case fails. Cases pjdfstest skips
# because a feature is not enabled in pjdfstest.toml or the file system does
# not report a limit are listed by name but do not fail the run.
#
# Environment: FOGVAULT (binary), PJDFSTEST (use this pjdfstest binary
# instead of installing one), PJDFSTEST_PATTERNS (run only matching cases).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PJDFSTEST_VERSION=0.2.2
CONFIG="$HERE/pjdfstest.toml"

[ "$(id -u)" -eq 0 ] || fail "pjdfstest.sh must run as root (uid switching, mknod, remount)"
[ -x "$FOGVAULT" ] || fail "fogvault binary not found at $FOGVAULT (cargo build --release)"

# Install pjdfstest once: an installed binary of the pinned version is reused.
if [ -z "${PJDFSTEST:-}" ]; then
    PJDFSTEST="${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest"
    if [ "$("$PJDFSTEST" --version 2>/dev/null)" != "pjdfstest $PJDFSTEST_VERSION" ]; then
        command -v cargo >/dev/null || fail "cargo is needed to install pjdfstest"
        cargo install pjdfstest --version "$PJDFSTEST_VERSION" --locked || fail "cargo install pjdfstest failed"
    fi
fi
[ -x "$PJDFSTEST" ] || fail "pjdfstest not found at $PJDFSTEST"

# pjdfstest switches to the users `nobody` and `tests` (its defaults); create
# the second one if this machine lacks it.
getent passwd nobody >/dev/null || fail "user nobody is missing"
if ! getent passwd tests >/dev/null; then
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin tests \
        || fail "cannot create the pjdfstest user 'tests'"
fi

d=$(new_repo pjdfs)
# The switched-to uids must be able to reach the mount point (mktemp makes 0700).
chmod 0755 "$FV_TMP" "$d"
# allow_other: the kernel must let the switched-to uids into the mount.
mount_vault "$d" --allow-other
work="$d/mnt/pjdfstest"
mkdir -m 0755 "$work"
# A directory on another file system for the EXDEV cases.
secondary="$FV_TMP/secondary"
mkdir -m 0755 "$secondary"

# The EROFS cases run `mount -o remount,ro|rw` on the mount point. fuser
# mounts with fstype "fuse" (not "fuse.fogvault"), so mount(8) would hand the
# remount to the mount.fuse helper, which tries to run a program named after
# the source. The kernel does the remount itself: a shim adds -i (no helpers).
real_mount=$(command -v mount) || fail "mount(8) not found"
mkdir "$FV_TMP/bin"
printf '#!/bin/sh\nexec %s -i "$@"\n' "$real_mount" >"$FV_TMP/bin/mount"
chmod 0755 "$FV_TMP/bin/mount"

# run_pass NAME CONFIG [PATTERN...] → runs pjdfstest, fails the script on any failure
run_pass() {
    local name="$1" config="$2"
    shift 2
    local log="$FV_TMP/pjdfstest-$name.log" rc=0 summary
    (cd "$work" && PATH="$FV_TMP/bin:$PATH" NO_COLOR=1 RUST_BACKTRACE=0 \
        "$PJDFSTEST" -c "$config" -p "$work" -s "$secondary" "$@") >"$log" 2>&1 || rc=$?
    summary=$(grep -E '^Summary: ' "$log" || true)
    if [ "$rc" -ne 0 ] || [ -z "$summary" ]; then
        # Failing cases and their messages (pjdfstest indents a case's details).
        grep -vE ' (ok|skipped)$|^$' "$log" >&2 || true
        echo "${summary:-pjdfstest produced no summary (exit $rc)}" >&2
        fail "pjdfstest ($name) reported failures"
    fi
    # Name every skipped case so a disabled feature never goes unnoticed; the
    # EROFS cases skipped by the main pass ran in their own pass.
    local skipped
    skipped=$(grep -E ' skipped$' "$log" | sed 's/ \{2,\}skipped$//' || true)
    [ "$name" != main ] || skipped=$(grep -v '::erofs_' <<<"$skipped" || true)
    [ -z "$skipped" ] || sed 's/^/skipped: /' <<<"$skipped"
    echo "$name: $summary"
}

if [ -n "${PJDFSTEST_PATTERNS:-}" ]; then
    # shellcheck disable=SC2086 # patterns are a word list
    run_pass selected "$CONFIG" $PJDFSTEST_PATTERNS
else
    # pjdfstest 0.2.2 leaks descriptors opened for writing (e.g. in the open
    # and posix_fallocate cases) until it exits, and the kernel refuses a
    # read-only remount while a file is open for writing (EBUSY, on tmpfs
    # too). So the EROFS cases run in a fresh process first, then the rest
    # with remounts disabled so they are not run twice.
    run_pass erofs "$CONFIG" erofs
    main_config="$FV_TMP/pjdfstest-main.toml"
    sed 's/^allow_remount = true$/allow_remount = false/' "$CONFIG" >"$main_config"
    grep -q '^allow_remount = false$' "$main_config" || fail "cannot derive the main-pass config"
    run_pass main "$main_config"
fi

unmount_vault "$d"
pass "pjdfstest"
