#!/usr/bin/env python3
"""Small Orthanc REST helper for tests/shell/dicom.sh (stdlib + pydicom only).

  orthanc_check.py wait   URL [--timeout S]              poll GET /system until it answers
  orthanc_check.py upload URL FILE...                    POST /instances, expect Status=Success
  orthanc_check.py count  URL --instances N [--studies N]
  orthanc_check.py fetch  URL [--dataset DIR]... [--exact DIR]... [--save DIR]

`fetch` downloads every instance (GET /instances/{id}/file), matches it to an original
file by SOPInstanceUID and compares:
  --dataset DIR  originals sent by C-STORE: the DICOM data set (everything after the
                 File Meta Information group 0002, which the receiver rebuilds by
                 protocol) must be byte-identical, and the meta header must carry the
                 same SOP class / instance UID and transfer syntax;
  --exact DIR    originals uploaded via REST: the whole file must be byte-identical.
It also asks Orthanc to re-check the MD5 it recorded at ingest against the stored
attachment (POST /instances/{id}/attachments/dicom/verify-md5). Every original must
be matched exactly once and Orthanc must hold no other instance.
"""
import argparse
import glob
import hashlib
import io
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request

import pydicom


def http(url, data=None, method=None, timeout=60):
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/dicom")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:  # 4xx/5xx: let the caller report it
        return e.code, e.read()


def get_json(url):
    st, body = http(url)
    if st != 200:
        raise SystemExit("GET %s -> HTTP %d" % (url, st))
    return json.loads(body)


def meta_end(buf, what):
    """Offset of the first data-set byte of a Part 10 file (explicit-length meta group)."""
    if len(buf) < 144 or buf[128:132] != b"DICM":
        raise SystemExit("%s: not a DICOM Part 10 file (len %d)" % (what, len(buf)))
    grp, elt, vr, vl = struct.unpack("<HH2sH", buf[132:140])
    if (grp, elt, vr, vl) != (2, 0, b"UL", 4):
        raise SystemExit("%s: no FileMetaInformationGroupLength at offset 132" % what)
    (glen,) = struct.unpack("<I", buf[140:144])
    return 144 + glen


def meta_of(buf):
    ds = pydicom.dcmread(io.BytesIO(buf), stop_before_pixels=True)
    m = ds.file_meta
    return str(ds.SOPInstanceUID), (str(m.MediaStorageSOPClassUID), str(m.MediaStorageSOPInstanceUID),
                                     str(m.TransferSyntaxUID))


def cmd_wait(a):
    deadline = time.time() + a.timeout
    last = None
    while time.time() < deadline:
        try:
            st, body = http(a.url + "/system", timeout=2)
            if st == 200 and b"Version" in body:
                return 0
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.2)
    print("orthanc did not answer on %s within %ss (%s)" % (a.url, a.timeout, last), file=sys.stderr)
    return 1


def cmd_upload(a):
    for f in a.files:
        with open(f, "rb") as fh:
            st, body = http(a.url + "/instances", data=fh.read(), method="POST")
        status = json.loads(body).get("Status")
        if st != 200 or status != "Success":
            print("upload %s: HTTP %d status %r" % (f, st, status), file=sys.stderr)
            return 1
    return 0


def cmd_count(a):
    n = len(get_json(a.url + "/instances"))
    ok = n == a.instances
    msg = "instances=%d (want %d)" % (n, a.instances)
    if a.studies is not None:
        s = len(get_json(a.url + "/studies"))
        ok = ok and s == a.studies
        msg += " studies=%d (want %d)" % (s, a.studies)
    print(msg)
    return 0 if ok else 1


def cmd_fetch(a):
    originals = {}  # SOPInstanceUID -> (path, mode)
    for mode, dirs in (("dataset", a.dataset), ("exact", a.exact)):
        for d in dirs:
            for p in sorted(glob.glob(os.path.join(d, "*.dcm"))):
                ds = pydicom.dcmread(p, stop_before_pixels=True)
                uid = str(ds.SOPInstanceUID)
                if uid in originals:
                    raise SystemExit("duplicate SOPInstanceUID %s in %s and %s" % (uid, originals[uid][0], p))
                originals[uid] = (p, mode)
    if a.save:
        os.makedirs(a.save, exist_ok=True)
    ids = get_json(a.url + "/instances")
    seen, errors, nbytes = set(), [], 0
    for iid in ids:
        st, buf = http("%s/instances/%s/file" % (a.url, iid))
        if st != 200:
            errors.append("%s: GET file -> HTTP %d" % (iid, st))
            continue
        nbytes += len(buf)
        if a.save:
            with open(os.path.join(a.save, iid + ".dcm"), "wb") as fh:
                fh.write(buf)
        uid, meta = meta_of(buf)
        if uid not in originals:
            errors.append("%s: unexpected SOPInstanceUID %s" % (iid, uid))
            continue
        if uid in seen:
            errors.append("%s: SOPInstanceUID %s seen twice" % (iid, uid))
        seen.add(uid)
        path, mode = originals[uid]
        with open(path, "rb") as fh:
            orig = fh.read()
        if mode == "exact":
            if buf != orig:
                errors.append("%s (%s): downloaded file differs from original (%d vs %d bytes, md5 %s vs %s)" % (
                    iid, path, len(buf), len(orig), hashlib.md5(buf).hexdigest(), hashlib.md5(orig).hexdigest()))
        else:
            ob, db = orig[meta_end(orig, path):], buf[meta_end(buf, iid):]
            if ob != db:
                first = next((i for i in range(min(len(ob), len(db))) if ob[i] != db[i]), min(len(ob), len(db)))
                errors.append("%s (%s): data set differs (%d vs %d bytes, first difference at data-set offset %d)" % (
                    iid, path, len(db), len(ob), first))
            _, ometa = meta_of(orig)
            if meta != ometa:
                errors.append("%s (%s): meta header %r != original %r" % (iid, path, meta, ometa))
        st, body = http("%s/instances/%s/attachments/dicom/verify-md5" % (a.url, iid), data=b"", method="POST")
        if st != 200:
            errors.append("%s: verify-md5 -> HTTP %d %r" % (iid, st, body[:200]))
    missing = sorted(set(originals) - seen)
    for uid in missing:
        errors.append("original %s (SOPInstanceUID %s) not in Orthanc" % (originals[uid][0], uid))
    for e in errors[:20]:
        print("  " + e, file=sys.stderr)
    if len(errors) > 20:
        print("  ... %d more" % (len(errors) - 20), file=sys.stderr)
    n_ds = sum(1 for u in seen if originals[u][1] == "dataset")
    n_ex = len(seen) - n_ds
    print("fetched %d instances (%d bytes); matched by SOPInstanceUID: %d data-set comparisons, "
          "%d whole-file comparisons; %d errors" % (len(ids), nbytes, n_ds, n_ex, len(errors)))
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wait"); p.add_argument("url"); p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("upload"); p.add_argument("url"); p.add_argument("files", nargs="+")
    p = sub.add_parser("count"); p.add_argument("url"); p.add_argument("--instances", type=int, required=True)
    p.add_argument("--studies", type=int)
    p = sub.add_parser("fetch"); p.add_argument("url")
    p.add_argument("--dataset", action="append", default=[]); p.add_argument("--exact", action="append", default=[])
    p.add_argument("--save")
    a = ap.parse_args()
    return {"wait": cmd_wait, "upload": cmd_upload, "count": cmd_count, "fetch": cmd_fetch}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
