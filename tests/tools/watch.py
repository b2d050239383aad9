#!/usr/bin/env python3
"""watch.py DIR [SECS]: put an inotify watch on DIR (fails with the errno,
e.g. "Permission denied", if the kernel refuses it); with SECS, print the
names of the entries created or opened in DIR during SECS seconds."""
import ctypes
import os
import select
import struct
import sys
import time

IN_OPEN, IN_CREATE = 0x20, 0x100
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(sys.argv[1]), IN_OPEN | IN_CREATE) < 0:
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e), sys.argv[1])
end = time.monotonic() + float(sys.argv[2]) if len(sys.argv) > 2 else 0
while time.monotonic() < end:
    if not select.select([fd], [], [], max(0.0, end - time.monotonic()))[0]:
        continue
    buf = os.read(fd, 65536)
    at = 0
    while at < len(buf):
        _wd, _mask, _cookie, n = struct.unpack_from("iIII", buf, at)
        name = buf[at + 16 : at + 16 + n].rstrip(b"\0")
        if name:
            print(name.decode(errors="replace"), flush=True)
        at += 16 + n
