"""``restore --from <file|dir> [--skip-verify]`` (facts §2.9).

Checks the manifest sha256, renames the current DB to ``<stem>.pre-restore-<ts>.db`` and copies the
snapshot into place.  The ``-wal`` / ``-shm`` sidecars of the old DB are deliberately left where
they are (upstream behaviour): a stale WAL of a daemon killed without checkpoint then sits next to
the restored file and is replayed by the next command that opens the DB.  The stand-in therefore
does not open the DB itself (opening and closing would checkpoint and delete the sidecars and hide
exactly that hazard).
"""
import datetime
import json
import os
import shutil

from aimem_standin.common import AppError, ArgSpec
from aimem_standin.cmd_backup import list_snapshots, manifest_path_for, sha256_file

OWN_JSON = False
USAGE = "ai-memory restore --from <FROM> [OPTIONS]"
HELP = ("Restore a snapshot written by `backup`\n\nOptions:\n"
        "      --from <FROM>   Snapshot file or backup directory (newest snapshot)\n"
        "      --skip-verify   Do not check the manifest sha256")
SPEC = ArgSpec(USAGE, flags=["--skip-verify"], options={"--from": "FROM"}, required=["--from"])


def run(ctx, argv):
    a = SPEC.parse(argv)
    src = a["--from"]
    if os.path.isdir(src):
        snaps = list_snapshots(src)
        if not snaps:
            raise AppError("no ai-memory-*.db snapshot found in %s" % src)
        snap = os.path.join(src, snaps[-1])
    elif os.path.isfile(src):
        snap = src
    else:
        raise AppError("restore source %s does not exist" % src)
    if not a["--skip-verify"]:
        mpath = manifest_path_for(snap)
        try:
            with open(mpath) as fh:
                manifest = json.load(fh)
        except (OSError, ValueError) as e:
            raise AppError("read manifest %s: %s (pass --skip-verify to restore without "
                           "verification)" % (mpath, getattr(e, "strerror", None) or e))
        actual = sha256_file(snap)
        if manifest.get("sha256") != actual:
            raise AppError("sha256 mismatch for %s: manifest says %s, file is %s"
                           % (snap, manifest.get("sha256"), actual))
    target = ctx.db_path()
    ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    aside = None
    if os.path.exists(target):
        stem = target[:-3] if target.endswith(".db") else target
        aside = "%s.pre-restore-%s.db" % (stem, ts)
        os.rename(target, aside)
    try:
        shutil.copyfile(snap, target)
    except OSError as e:
        raise AppError("copy %s -> %s: %s" % (snap, target, e.strerror or e))
    if ctx.opts.json:
        ctx.out(json.dumps({"restored_from": snap, "db": target, "pre_restore": aside,
                            "verified": not a["--skip-verify"]}, indent=2))
    else:
        ctx.out("Restored: %s -> %s" % (snap, target))
        if aside:
            ctx.out("Previous DB moved to: %s" % aside)
    return 0
