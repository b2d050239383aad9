#!/usr/bin/env bash
# Clean shutdown on SIGINT, SIGTERM and `fusermount3 -u`: the daemon commits
# open files, drains the upload journal and exits 0; everything is readable
# after a remount and verify passes.
source "$(dirname "$0")/lib.sh"

d=$(new_repo shut)
m="$d/mnt"
head -c 20000000 /dev/urandom > "$FV_TMP/data.bin"
i=0
for how in INT TERM fusermount; do
    i=$((i + 1))
    mount_vault "$d"
    cp "$FV_TMP/data.bin" "$m/f$i.bin"
    # A file still open for writing while the stop arrives must be committed too.
    exec 7>"$m/open$i.txt"
    echo "written before $how" >&7
    exec 7>&-
    case "$how" in
        INT|TERM) kill -s "$how" "$MOUNT_PID" ;;
        fusermount) fusermount3 -u "$m" ;;
    esac
    rc=0
    wait "$MOUNT_PID" || rc=$?
    [ "$rc" -eq 0 ] || { cat "$d/mount.log"; fail "daemon exited $rc after $how"; }
    mountpoint -q "$m" && fail "still mounted after $how"
    [ -z "$(ls -A "$d/cache/staging")" ] || fail "upload journal not drained after $how"
    grep -q "unmounted cleanly" "$d/mount.log" || fail "no clean-unmount message after $how"
    pass "stop by $how: clean exit 0, journal drained"
done
mount_vault "$d"
for j in 1 2 3; do
    cmp "$FV_TMP/data.bin" "$m/f$j.bin" || fail "f$j.bin differs after remount"
    grep -q "written before" "$m/open$j.txt" || fail "open$j.txt lost"
done
unmount_vault "$d"
fv verify --repo "$(repo_of "$d")" --cache "$d/cache" --deep >/dev/null || fail "verify after signal shutdowns"
pass "data intact after each kind of shutdown; verify --deep clean"
