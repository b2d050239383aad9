#!/usr/bin/env python3
"""Can decoy patients be told from real ones on the mount? (stat only: no file is opened)

    decoy_check.py FOLDER DECOY_NAMES_FILE

For every patient directory of FOLDER, gathers what a user of the mount sees:
the name's shape, listing position, inode number, owner, mode, times (and how
one patient's times cluster), file count, file names, sizes. Categorical features must take the same values for
decoys as for real patients; for every numeric feature, no threshold may
separate all decoys from all real patients. Exit 1 naming each feature that
distinguishes them.
"""
import os
import re
import sys

folder, names_file = sys.argv[1], sys.argv[2]
decoys = {line.strip().rsplit("/", 1)[-1] for line in open(names_file) if "/" in line}
order = os.listdir(folder)  # readdir order, as `ls -f` shows it


def features(name):
    p = os.path.join(folder, name)
    st = os.lstat(p)
    files, sizes, modes, times = [], [], set(), []
    same_times_as_dir = False
    for dp, dns, fns in os.walk(p):
        for dn in dns:
            s = os.lstat(os.path.join(dp, dn))
            same_times_as_dir |= (s.st_mtime_ns, s.st_ctime_ns) == (st.st_mtime_ns, st.st_ctime_ns)
        for f in fns:
            s = os.lstat(os.path.join(dp, f))
            files.append(os.path.relpath(os.path.join(dp, f), p).split("/")[0] + "/" + re.sub(r"\d", "9", f))
            sizes.append(s.st_size)
            modes.add(s.st_mode)
            times.append((s.st_mtime, s.st_ctime, s.st_atime))
    return {
        "cat:name shape": re.sub(r"[A-Z]+", "A", re.sub(r"\d", "9", name)),
        "cat:dir mode": st.st_mode,
        "cat:owner": (st.st_uid, st.st_gid),
        "cat:file modes": tuple(sorted(modes)),
        "cat:file kinds": tuple(sorted(set(files))),
        "num:listing position": order.index(name),
        "num:inode": st.st_ino,
        "num:dir mtime": st.st_mtime,
        "num:dir ctime": st.st_ctime,
        "num:dir atime": st.st_atime,
        "num:file count": len(files),
        "num:total size": sum(sizes),
        "num:largest file": max(sizes),
        "num:smallest file": min(sizes),
        "num:oldest file mtime": min(t[0] for t in times),
        "num:newest file ctime": max(t[1] for t in times),
        # One patient's records are imported together: how its times cluster.
        "num:file mtime spread": max(t[0] for t in times) - min(t[0] for t in times),
        "num:file ctime spread": max(t[1] for t in times) - min(t[1] for t in times),
        "num:dir mtime - oldest file mtime": st.st_mtime - min(t[0] for t in times),
        "num:dir ctime - oldest file ctime": st.st_ctime - min(t[1] for t in times),
        "cat:a subdirectory has the patient directory's exact times": same_times_as_dir,
    }


patients = [n for n in order if os.path.isdir(os.path.join(folder, n))]
real = [features(n) for n in patients if n not in decoys]
fake = [features(n) for n in patients if n in decoys]
if len(fake) != len(decoys) or not real:
    sys.exit(f"expected {len(decoys)} decoys and some real patients, found {len(fake)} and {len(real)}")
problems = []
for key in real[0]:
    r = [f[key] for f in real]
    d = [f[key] for f in fake]
    if key.startswith("cat:"):
        if not set(d) <= set(r):
            problems.append(f"{key}: decoys show {sorted(set(d) - set(r))[:3]}, real patients never do")
    elif min(d) > max(r) or max(d) < min(r):
        problems.append(f"{key}: decoys {min(d)}..{max(d)} vs real {min(r)}..{max(r)} (separable)")
for p in problems:
    print("DISTINGUISHABLE", p)
print(f"{len(real)} real and {len(fake)} decoy patients compared on {len(real[0])} features; "
      f"{len(problems)} distinguishing")
sys.exit(1 if problems else 0)
