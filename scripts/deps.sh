#!/usr/bin/env bash
# Idempotent installation of everything the demo and the tests need on Debian 12 (as root).
# Usage: scripts/deps.sh [base|test|bench|s3]...   (base is always included; bench_s3.sh needs bench s3)
set -euo pipefail

want_pkgs=(fuse3 rsync pkg-config build-essential python3 python3-pip python3-venv attr acl psmisc)
for group in "$@"; do
    case "$group" in
        base) ;;
        test) want_pkgs+=(dcmtk orthanc xfsprogs e2fsprogs util-linux) ;;
        bench) want_pkgs+=(gocryptfs restic time hyperfine rclone) ;;   # rclone: scripts/bench_s3.sh (crypt + s3 backends)
        s3) want_pkgs+=(curl ca-certificates) ;;
        *) echo "deps.sh: unknown group $group" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust toolchain (present on the CI image; installed here for a bare Debian 12).
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
        apt-get install -y -qq curl ca-certificates >/dev/null
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    }
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# Python packages for the DICOM tests (a venv keeps Debian's Python clean).
for group in "$@"; do
    if [ "$group" = test ]; then
        venv=/opt/fogvault-venv
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/python" -c 'import pydicom, numpy' 2>/dev/null || "$venv/bin/pip" install -q pydicom numpy
    fi
done

# Garage, the S3 server the tests start on loopback (built from crates.io; ~10 min the first time).
GARAGE_VERSION=2.5.0
for group in "$@"; do
    if [ "$group" = s3 ]; then
        if ! "$HOME/.cargo/bin/garage" --version 2>/dev/null | grep -qF "$GARAGE_VERSION"; then
            echo "deps.sh: building garage $GARAGE_VERSION (first time only)"
            cargo install -q garage --version "$GARAGE_VERSION" --locked --no-default-features --features lmdb,bundled-libs
        fi
    fi
done
