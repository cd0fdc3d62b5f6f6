"""``backup --to <dir> [--keep N]`` (facts §2.9; identical in v0.6.4 and v0.7.0).

Opens (and therefore migrates) the source DB first, then ``VACUUM INTO``
``<dir>/ai-memory-<%Y-%m-%dT%H%M%SZ>.db`` plus ``ai-memory-<ts>.manifest.json``.
"""
import datetime
import hashlib
import json
import os
import re

from aimem_standin.common import AppError, ArgSpec, parse_int
from aimem_standin import db as dbm

OWN_JSON = False
USAGE = "ai-memory backup [OPTIONS]"
HELP = ("Snapshot the database with VACUUM INTO\n\nOptions:\n"
        "      --to <TO>      Destination directory [default: ./backups]\n"
        "      --keep <KEEP>  Snapshots to keep [default: 48]")
SPEC = ArgSpec(USAGE, options={"--to": "TO", "--keep": "KEEP"})
SNAP_RE = re.compile(r"^ai-memory-(\d{4}-\d{2}-\d{2}T\d{6}Z)\.db$")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path_for(snapshot):
    base = snapshot[:-3] if snapshot.endswith(".db") else snapshot
    return base + ".manifest.json"


def list_snapshots(directory):
    names = [n for n in os.listdir(directory) if SNAP_RE.match(n)]
    return sorted(names)


def run(ctx, argv):
    a = SPEC.parse(argv)
    to = a["--to"] or "./backups"
    keep = parse_int(a["--keep"], "--keep <KEEP>", USAGE, lo=0) if a["--keep"] else 48
    src = ctx.db_path()
    conn = ctx.open_db(src)
    try:
        try:
            os.makedirs(to, exist_ok=True)
        except OSError as e:
            raise AppError("create backup dir %s: %s" % (to, e.strerror or e))
        now = datetime.datetime.now(datetime.timezone.utc)
        ts = now.strftime("%Y-%m-%dT%H%M%SZ")
        snap = os.path.join(to, "ai-memory-%s.db" % ts)
        if os.path.exists(snap):
            raise AppError("snapshot %s already exists; refusing to overwrite" % snap)
        try:
            conn.execute("VACUUM INTO ?", (snap,))
        except Exception as e:
            raise AppError("VACUUM INTO %s: %s" % (snap, e))
    finally:
        conn.close()
    digest = sha256_file(snap)
    size = os.path.getsize(snap)
    manifest = {"snapshot": os.path.basename(snap), "sha256": digest, "bytes": size,
                "source_db": src, "version": ctx.build.version,
                "created_at": dbm.rfc3339(now)}
    mpath = manifest_path_for(snap)
    with open(mpath, "w") as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
    # rotation: keep the newest N snapshots (and their manifests)
    if keep >= 1:
        snaps = list_snapshots(to)
        for old in snaps[:-keep] if len(snaps) > keep else []:
            for p in (os.path.join(to, old), manifest_path_for(os.path.join(to, old))):
                try:
                    os.unlink(p)
                except OSError:
                    pass
    if ctx.opts.json:
        ctx.out(json.dumps(manifest, indent=2))
    else:
        ctx.out("Snapshot: %s" % snap)
        ctx.out("Manifest: %s" % mpath)
        ctx.out("SHA-256 : %s" % digest)
        ctx.out("Bytes   : %d" % size)
    return 0
