# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inspect, snapshot, verify and restore an ai-memory SQLite DB without ever migrating it.

Pure Python (stdlib only, Python 3.8+), no Ansible import, so it is unit-tested on its own and
used by the ``aimem_schema`` module.

Facts this code relies on (``ai-memory-facts.md``):

* The schema version lives in the table ``schema_version`` and is read with
  ``SELECT COALESCE(MAX(version),0) FROM schema_version``; ``PRAGMA user_version`` is unused (reads 0)
  (section 2.1). Known versions: 20 (v0.6.4), 42 (the v0.7.0 *tag* build), 54 (release/v0.7.0) (2.2).
* Every ai-memory command that opens the DB migrates it and ``Connection::open`` creates a missing
  file (2.3), so this code never opens the DB read-write and never creates it.
* Upstream takes no pre-migration snapshot (2.5); the v54 arm rewrites ``expires_at`` of mid/short
  rows, so the content digest leaves ``expires_at`` out.
* A daemon stopped with SIGTERM leaves a ``-wal`` file (2.9): a plain ``cp`` of the main file
  misses those rows, the SQLite backup API reads through the WAL.

How the DB is opened for reading (nothing is ever written, no file is ever created):

* ``-wal`` and ``-shm`` both exist (a live or crashed WAL DB): ``mode=ro`` - SQLite reads the WAL
  and creates nothing.
* no ``-wal`` (or an empty one) and no hot ``-journal``: ``mode=ro&immutable=1`` - a plain
  ``mode=ro`` open of a WAL-mode DB would *create* empty ``-wal``/``-shm`` files (as root even
  owned by root), which is a write and would also defeat the "no stale sidecars" checks.
* ``-wal`` with content but no ``-shm``: ``mode=ro`` has to create the ``-shm``; it is removed
  again after the read unless another process has opened it meanwhile.
"""

from __future__ import absolute_import, division, print_function

import datetime
import errno
import hashlib
import json
import os
import pickle
import re
import sqlite3
import stat
import tempfile

try:  # Python 3
    from urllib.parse import quote as _quote
except ImportError:  # pragma: no cover - Python 2 is not a target
    from urllib import quote as _quote

from ansible_collections.aimem.fleet.plugins.module_utils.fileops import (
    FileOpError,
    atomic_write,
    file_meta,
    fsync_dir,
    restrict_mode,
    utc_timestamp,
)

__metaclass__ = type

DEFAULT_TARGET_VERSION = 54
KNOWN_VERSIONS = {
    20: "v0.6.4",
    42: "v0.7.0 tag build (ea318e24)",
    54: "v0.7.0 release/v0.7.0 build",
}
COUNT_TABLES = ("memories", "archived_memories", "memory_links")
MANIFEST_FORMAT = 1
SNAPSHOT_METHOD = "sqlite3-backup-api"
# Free space needed for a copy: size + 5 % + 16 MiB (the SQLite journal of the empty target and the
# manifest are tiny; the margin keeps the filesystem from being filled to the last block).
SPACE_MARGIN_RATIO = 0.05
SPACE_MARGIN_BYTES = 16 * 1024 * 1024
BACKUP_PAGES_PER_STEP = 16384
COPY_CHUNK = 4 * 1024 * 1024
DB_PATH_HINT = ("check the DB path the daemon really uses: --db / AI_MEMORY_DB / the config's top-level "
                "`db` (v0.6.4 does not expand `~` there, v0.7.0 does - the tilde trap, facts 2.7) and "
                "the CWD-relative default `ai-memory.db`")


class SchemaError(FileOpError):
    """A failure with the path it concerns and a hint naming the fix (see FileOpError)."""


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------
def sidecars(db):
    """The SQLite side files of ``db``."""
    return {"wal": db + "-wal", "shm": db + "-shm", "journal": db + "-journal"}


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def is_wal_mode(path):
    """True when the DB header says WAL (file format bytes 18/19 == 2).

    A rollback-journal DB (or an empty/short file) is opened ``mode=ro``, which creates nothing
    for it; only WAL-mode DBs need the immutable open to avoid creating ``-wal``/``-shm``.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except (OSError, IOError):
        return False
    return len(head) == 20 and head[18:20] == b"\x02\x02"


def _uri(path, params):
    return "file:%s?%s" % (_quote(os.path.abspath(path), safe="/"), params)


class Reader(object):
    """Context manager: a read-only connection to ``path`` that writes and creates nothing.

    ``self.open_mode`` is ``ro`` or ``ro-immutable``. Raises SchemaError for a missing file.
    """

    def __init__(self, path, trusted_static=False):
        self.path = os.path.abspath(path)
        self.trusted_static = trusted_static
        self.conn = None
        self.open_mode = None
        self._created_shm = None

    def __enter__(self):
        path = self.path
        if not os.path.exists(path):
            raise SchemaError("SQLite DB %s does not exist (not created: opening a wrong path with "
                              "ai-memory would create an empty, healthy-looking DB)" % path,
                              path=path, hint=DB_PATH_HINT)
        if not os.path.isfile(path):
            raise SchemaError("%s is not a regular file" % path, path=path, hint=DB_PATH_HINT)
        if not os.access(path, os.R_OK):
            raise SchemaError("%s is not readable by the remote user" % path, path=path,
                              hint="run the task with become: true or as the DB owner")
        side = sidecars(path)
        wal_size = _size(side["wal"])
        shm_exists = os.path.exists(side["shm"])
        journal_size = _size(side["journal"])
        if self.trusted_static or (is_wal_mode(path) and not wal_size and not journal_size and
                                   not (wal_size is not None and shm_exists)):
            self.open_mode = "ro-immutable"
            params = "mode=ro&immutable=1"
        else:
            self.open_mode = "ro"
            params = "mode=ro"
            if wal_size and not shm_exists:
                self._created_shm = side["shm"]
        try:
            self.conn = sqlite3.connect(_uri(path, params), uri=True, timeout=10,
                                        isolation_level=None, check_same_thread=False)
            # Touch the schema now so that "not a database" fails here with a clear message.
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as e:
            self._close()
            hint = "check that %s is an ai-memory SQLite DB and readable" % path
            if wal_size and not shm_exists:
                hint = ("the DB has un-checkpointed WAL content (%s) but no -shm and the directory is "
                        "not writable for the remote user; run the task as the DB owner or root "
                        "(become: true)" % side["wal"])
            elif journal_size:
                hint = ("%s is a hot rollback journal; let the v0.6.4 binary (or `sqlite3 %s "
                        "'PRAGMA quick_check'` as the DB owner) roll it back first" % (side["journal"], path))
            raise SchemaError("cannot open %s read-only: %s" % (path, e), path=path, hint=hint)
        return self

    def _close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def __exit__(self, *exc):
        self._close()
        if self._created_shm and os.path.exists(self._created_shm):
            held, _complete = find_holders([self._created_shm])
            if not held:
                try:
                    os.unlink(self._created_shm)
                except OSError:
                    pass
        return False


# --------------------------------------------------------------------------------------------
# reads
# --------------------------------------------------------------------------------------------
def _tables(conn):
    return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type='table'").fetchall())


def read_version(conn):
    """(version, has_table). Missing ``schema_version`` table -> (0, False). Never user_version."""
    if "schema_version" not in _tables(conn):
        return 0, False
    row = conn.execute("SELECT COALESCE(MAX(version),0) FROM schema_version").fetchone()
    return int(row[0] or 0), True


def count_rows(conn):
    """Row counts of the tables the upgrade must preserve; None for a missing table.

    ``namespaces`` is the number of distinct ``memories.namespace`` values (what
    ``ai-memory namespaces`` lists).
    """
    tables = _tables(conn)
    counts = {}
    for t in COUNT_TABLES:
        counts[t] = conn.execute('SELECT COUNT(*) FROM "%s"' % t).fetchone()[0] if t in tables else None
    if "memories" in tables:
        counts["namespaces"] = conn.execute("SELECT COUNT(DISTINCT namespace) FROM memories").fetchone()[0]
    else:
        counts["namespaces"] = None
    return counts


def _jsonable(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$blob": bytes(v).hex()}
    return v


def content_digest(conn):
    """sha256 over (id, content, metadata) of every memory, ordered by id.

    ``expires_at`` (which the v54 arm legitimately backfills) and every column added after v20 are
    left out, so the digest of a v20 DB equals the digest of the same DB migrated to v54 when no
    memory was lost or altered. Each row is hashed as one compact JSON array plus ``\\n``.
    Returns (hexdigest, rows) or (None, 0) without a ``memories`` table.
    """
    if "memories" not in _tables(conn):
        return None, 0
    h = hashlib.sha256()
    n = 0
    cur = conn.execute("SELECT id, content, metadata FROM memories ORDER BY id")
    while True:
        rows = cur.fetchmany(2000)
        if not rows:
            break
        for row in rows:
            h.update(json.dumps([_jsonable(v) for v in row], ensure_ascii=False,
                                separators=(",", ":")).encode("utf-8", "surrogatepass"))
            h.update(b"\n")
            n += 1
    return h.hexdigest(), n


_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", re.I | re.S)


def db_digest(conn):
    """sha256 of the whole logical DB: the schema SQL plus every row of every ordinary table.

    Used to decide whether a snapshot holds exactly the live content (snapshot idempotency, restore
    idempotency) - unlike ``content_digest`` it changes on any change anywhere. Rows are hashed in
    rowid (or primary key) order; the backup API keeps rowids, so a snapshot has the same digest
    as its source. Virtual tables are skipped (FTS5 content lives in its shadow tables, which are
    ordinary tables and hashed). The value is a fingerprint to compare with itself (same host and
    Python), not a portable format.
    """
    h = hashlib.sha256()
    schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                          "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name").fetchall()
    for row in schema:
        h.update(repr(tuple(row)).encode("utf-8", "surrogatepass"))
    h.update(b"\x00rows\x00")
    for kind, name, _tbl, sql in schema:
        if kind != "table" or (sql or "").lstrip().upper().startswith("CREATE VIRTUAL"):
            continue
        qname = '"%s"' % name.replace('"', '""')
        if _WITHOUT_ROWID.search(sql or ""):
            pk = [r[1] for r in sorted(conn.execute("PRAGMA table_info(%s)" % qname).fetchall(),
                                       key=lambda r: r[5]) if r[5]]
            order = ", ".join('"%s"' % c.replace('"', '""') for c in pk)
        else:
            order = "rowid"
        h.update(("\x00table %s\x00" % name).encode("utf-8", "surrogatepass"))
        cur = conn.execute("SELECT * FROM %s ORDER BY %s" % (qname, order))
        while True:
            rows = cur.fetchmany(2000)
            if not rows:
                break
            for r in rows:
                # pickle protocol 4 of a tuple of None/int/float/str/bytes: C-speed, unambiguous,
                # deterministic for equal values (3x faster than repr() on embedding BLOBs)
                h.update(pickle.dumps(r, 4))
    return h.hexdigest()


def integrity(conn, level="full"):
    """``PRAGMA integrity_check`` (or ``quick_check``): list of messages, ``["ok"]`` when sound."""
    pragma = "quick_check" if level == "quick" else "integrity_check"
    return [r[0] for r in conn.execute("PRAGMA %s" % pragma).fetchall()]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(COPY_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# holders
# --------------------------------------------------------------------------------------------
def find_holders(paths, proc="/proc", exclude_pids=None):
    """Processes that have any of ``paths`` open, from ``/proc/<pid>/fd``.

    Returns (holders, complete): holders is a list of ``{pid, comm, cmdline, files}`` (cmdline as a
    list, environ is never read); complete is False when the fd table of a process that could hold
    the DB could not be read - one named ai-memory, or running as the (non-root) owner of ``paths`` (run
    as root with CAP_SYS_PTRACE for a proof that nothing holds the DB). Unreadable tables of other
    processes (another user's shell, a setuid sshd or su when root lacks CAP_SYS_PTRACE) are not
    counted. The calling process is excluded.
    """
    if exclude_pids is None:
        exclude_pids = (os.getpid(),)
    targets = {}
    for p in paths:
        targets[os.path.realpath(p)] = p
        targets[os.path.abspath(p)] = p
    holders = []
    complete = True
    owners = set()
    for p in paths:
        try:
            uid = os.stat(p).st_uid
        except OSError:
            continue
        if uid != 0:  # a root-owned DB: only processes named ai-memory count (root runs everything)
            owners.add(uid)

    def could_hold(pid):
        """Whether an unreadable process may be one that holds the DB (then nothing is proven)."""
        base = os.path.join(proc, pid)
        try:
            with open(os.path.join(base, "comm"), "rb") as f:
                if b"ai-memory" in f.read():
                    return True
            with open(os.path.join(base, "cmdline"), "rb") as f:
                if b"ai-memory" in f.read():
                    return True
            with open(os.path.join(base, "status"), "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if line.startswith("Uid:"):
                        return bool(set(int(x) for x in line.split()[1:]) & owners)
        except (OSError, ValueError):
            return True
        return False

    try:
        pids = [d for d in os.listdir(proc) if d.isdigit()]
    except OSError:
        return [], False
    for pid in sorted(pids, key=int):
        if int(pid) in exclude_pids:
            continue
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM) and could_hold(pid):
                complete = False
            continue
        files = set()
        denied = False
        for fd in fds:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError as e:
                # listing an fd table can be allowed while reading its links is not (no
                # CAP_SYS_PTRACE, e.g. in a container): then nothing is proven about this process
                if e.errno in (errno.EACCES, errno.EPERM):
                    denied = True
                continue
            if link in targets:
                files.add(targets[link])
        if denied and could_hold(pid):
            complete = False
        if not files:
            continue
        comm, cmdline = "", []
        try:
            with open(os.path.join(proc, pid, "comm"), "rb") as f:
                comm = f.read().decode("utf-8", "replace").strip()
            with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
                cmdline = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            pass
        holders.append({"pid": int(pid), "comm": comm, "cmdline": cmdline, "files": sorted(files)})
    return holders, complete


# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------
def describe(conn, integrity_level="full", with_db_digest=False):
    """Version, counts, digests and integrity of an open connection (inside one read txn)."""
    conn.execute("BEGIN")
    try:
        version, has_table = read_version(conn)
        info = {
            "schema_version": version,
            "schema_table": has_table,
            "schema_known": version in KNOWN_VERSIONS,
            "schema_release": KNOWN_VERSIONS.get(version),
            "counts": count_rows(conn),
        }
        info["content_digest"], info["content_digest_rows"] = content_digest(conn)
        if with_db_digest:
            info["db_digest"] = db_digest(conn)
        if integrity_level and integrity_level != "none":
            msgs = integrity(conn, integrity_level)
            info["integrity"] = "ok" if msgs == ["ok"] else "; ".join(msgs[:20])
            info["integrity_ok"] = msgs == ["ok"]
        return info
    finally:
        conn.execute("COMMIT")


def inspect(db, integrity_level="full", with_db_digest=False, with_holders=True):
    """Everything the roles need to know about ``db`` before and after the upgrade. Read-only."""
    db = os.path.abspath(db)
    with Reader(db) as r:
        info = describe(r.conn, integrity_level, with_db_digest)
        info["open_mode"] = r.open_mode
    side = sidecars(db)
    wal = _size(side["wal"])
    info.update({
        "db": db,
        "db_bytes": _size(db),
        "wal_present": bool(wal),
        "wal_bytes": wal or 0,
        "shm_present": os.path.exists(side["shm"]),
    })
    if with_holders:
        info["holders"], info["holders_complete"] = find_holders([db, side["wal"], side["shm"]])
    return info


# --------------------------------------------------------------------------------------------
# space, names, manifests
# --------------------------------------------------------------------------------------------
def space_needed(nbytes):
    return int(nbytes * (1 + SPACE_MARGIN_RATIO)) + SPACE_MARGIN_BYTES


def check_space(directory, nbytes, what):
    """Raise SchemaError when ``directory`` lacks room for ``nbytes`` (plus margin)."""
    needed = space_needed(nbytes)
    try:
        st = os.statvfs(directory)
    except OSError as e:
        raise SchemaError("cannot stat filesystem of %s: %s" % (directory, e), path=directory,
                          hint="create %s or choose another directory" % directory)
    free = st.f_bavail * st.f_frsize
    if free < needed:
        raise SchemaError("not enough free space in %s for %s: %d bytes needed (size %d + margin), "
                          "%d free" % (directory, what, needed, nbytes, free), path=directory,
                          hint="free space on that filesystem or point snapshot_dir at a "
                               "filesystem with at least %d bytes free" % needed)
    return {"needed": needed, "free": free}


def snapshot_name(db, from_version, to_version, token, directory=None):
    """``<db>.pre-migration-v<from>-to-v<to>-<token>.bak`` (in ``directory`` if given)."""
    base = "%s.pre-migration-v%d-to-v%d-%s.bak" % (os.path.basename(db), from_version, to_version, token)
    return os.path.join(directory or os.path.dirname(os.path.abspath(db)), base)


def manifest_path(snapshot):
    return snapshot + ".json"


def upstream_manifest_path(snapshot):
    """``ai-memory backup`` writes ``ai-memory-<ts>.db`` + ``ai-memory-<ts>.manifest.json`` (2.9)."""
    stem = snapshot[:-3] if snapshot.endswith(".db") else snapshot
    return stem + ".manifest.json"


def read_manifest(snapshot):
    """Our ``<snapshot>.json``, else upstream's ``<stem>.manifest.json``, else None."""
    path = manifest_path(snapshot)
    if not os.path.exists(path):
        path = upstream_manifest_path(snapshot)
        if not os.path.exists(path):
            return None
    try:
        with open(path, "r") as f:
            data = json.load(f)
    except (OSError, IOError, ValueError) as e:
        raise SchemaError("manifest %s is unreadable: %s" % (path, e), path=path,
                          hint="move %s aside; the snapshot is then re-verified from its content" % path)
    if not isinstance(data, dict):
        raise SchemaError("manifest %s is not a JSON object" % path, path=path,
                          hint="move %s aside; the snapshot is then re-verified from its content" % path)
    return data


def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _chown(fd_or_path, uid, gid):
    try:
        if isinstance(fd_or_path, int):
            os.fchown(fd_or_path, uid, gid)
        else:
            os.chown(fd_or_path, uid, gid)
    except OSError as e:
        if e.errno != errno.EPERM:
            raise


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quiet(*paths):
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def verify_snapshot(path, manifest=None, integrity_level="full"):
    """Integrity, version, counts and digests of a snapshot file; checks the manifest if given.

    Returns the description plus ``sha256`` and ``bytes``. Raises SchemaError on any mismatch.
    """
    if not os.path.isfile(path):
        raise SchemaError("snapshot %s does not exist" % path, path=path,
                          hint="check restore_from / snapshot_path")
    digest = sha256_file(path)
    if manifest is not None and manifest.get("sha256") and manifest["sha256"] != digest:
        raise SchemaError("snapshot %s does not match its manifest: sha256 %s, manifest says %s"
                          % (path, digest, manifest["sha256"]), path=path,
                          hint="the snapshot was modified or truncated; do not use it - take a new "
                               "snapshot from the pre-migration DB or use another one")
    with Reader(path, trusted_static=True) as r:
        info = describe(r.conn, integrity_level, with_db_digest=True)
    info["sha256"] = digest
    info["bytes"] = _size(path)
    if not info.get("integrity_ok", True):
        raise SchemaError("snapshot %s fails PRAGMA integrity_check: %s" % (path, info["integrity"]),
                          path=path, hint="do not use this snapshot; take a new one")
    if manifest is not None:
        for key in ("schema_version", "content_digest", "db_digest", "counts"):
            if key in manifest and manifest[key] != info[key]:
                raise SchemaError("snapshot %s does not match its manifest (%s: %r != %r)"
                                  % (path, key, info[key], manifest[key]), path=path,
                                  hint="do not use this snapshot; take a new one")
    return info


# --------------------------------------------------------------------------------------------
# snapshot
# --------------------------------------------------------------------------------------------
def _backup(src_conn, dest_path, pages=BACKUP_PAGES_PER_STEP):
    dest = sqlite3.connect(dest_path, isolation_level=None)
    try:
        dest.execute("PRAGMA journal_mode=OFF")
        dest.execute("PRAGMA synchronous=OFF")
        src_conn.backup(dest, pages=pages)
    finally:
        dest.close()
    _fsync_path(dest_path)


def _same(info, ref):
    keys = ("schema_version", "counts", "content_digest", "db_digest")
    return all(info.get(k) == ref.get(k) for k in keys)


def take_snapshot(db, target_version=DEFAULT_TARGET_VERSION, snapshot_dir=None, snapshot_path=None,
                  allow_migrated=False, expect_version=None, check_mode=False):
    """Take (or find) the verified pre-migration snapshot of ``db``.

    The snapshot is made with the SQLite backup API from a read-only connection inside one read
    transaction (so it includes WAL content and is consistent with the digests computed in the
    same transaction), written to a temp file in the target directory, verified (integrity_check,
    version, counts, content and whole-DB digests equal to the source), then linked to its final
    name (never overwriting) and described by ``<snapshot>.json``. The token in the name is the
    first 12 hex digits of the whole-DB digest, so unchanged content maps to the same file and a
    second call returns ``changed: False`` after re-verifying the file's sha256.
    """
    db = os.path.abspath(db)
    result = {"changed": False, "db": db}
    with Reader(db) as r:
        src = r.conn
        src.execute("BEGIN")
        try:
            version, _ = read_version(src)
            source = {"schema_version": version, "counts": count_rows(src)}
            source["content_digest"], _rows = content_digest(src)
            source["db_digest"] = db_digest(src)
            result.update({"from_version": version, "to_version": target_version,
                           "counts": source["counts"], "content_digest": source["content_digest"],
                           "db_digest": source["db_digest"], "schema_version": version,
                           "open_mode": r.open_mode})
            if expect_version is not None and version != expect_version:
                raise SchemaError("%s is at schema v%d, expected v%d" % (db, version, expect_version),
                                  path=db, hint="check that this is the right DB (%s) or fix "
                                                "expect_version" % DB_PATH_HINT)
            if version >= target_version and not allow_migrated:
                raise SchemaError("%s is already at schema v%d (>= target v%d): a pre-migration snapshot "
                                  "must be taken before any v0.7.0 binary opens the DB"
                                  % (db, version, target_version), path=db,
                                  hint="restore an earlier snapshot, or set allow_migrated: true to "
                                       "snapshot the migrated DB anyway")
            directory = os.path.abspath(snapshot_dir) if snapshot_dir else os.path.dirname(db)
            if snapshot_path:
                final = os.path.abspath(snapshot_path)
                directory = os.path.dirname(final)
            else:
                final = snapshot_name(db, version, target_version, source["db_digest"][:12], directory)
            if _same_file_or_sidecar(final, db):
                raise SchemaError("snapshot path %s is the DB itself or one of its sidecars" % final,
                                  path=final, hint="choose another snapshot_path or use snapshot_dir")
            result["snapshot"] = final
            result["manifest"] = manifest_path(final)
            if not os.path.isdir(directory):
                raise SchemaError("snapshot directory %s does not exist" % directory, path=directory,
                                  hint="create it (owned like the DB) or set snapshot_dir to an existing "
                                       "directory on a filesystem with room for the DB")
            if os.path.lexists(final):
                return _existing_snapshot(final, source, result, db, check_mode)
            db_meta = file_meta(db)
            size = (_size(db) or 0) + (_size(sidecars(db)["wal"]) or 0)
            result["space"] = check_space(directory, size, "a snapshot of %s" % db)
            result["changed"] = True
            if check_mode:
                return result
            fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(final), suffix=".tmp",
                                       dir=directory)
            try:
                os.fchmod(fd, restrict_mode(db_meta[2]))
                _chown(fd, db_meta[0], db_meta[1])
                os.close(fd)
                fd = None
                _backup(src, tmp)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                _unlink_quiet(tmp, tmp + "-journal")
                raise
        finally:
            if src.in_transaction:
                src.execute("COMMIT")
    try:
        info = verify_snapshot(tmp)
        if not _same(info, source):
            raise SchemaError("snapshot of %s does not match its source (schema %r/%r, counts %r/%r)"
                              % (db, info["schema_version"], source["schema_version"], info["counts"],
                                 source["counts"]), path=db,
                              hint="something wrote to the DB during the snapshot; stop the daemon and "
                                   "every `ai-memory mcp` (see holders) and retry")
        try:
            os.link(tmp, final)
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise SchemaError("%s appeared while the snapshot was taken" % final, path=final,
                                  hint="another run is snapshotting the same DB; rerun this task")
            # filesystems without hard links: exclusive create is not possible, rename instead
            if os.path.lexists(final):
                raise
            os.rename(tmp, final)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    _unlink_quiet(tmp)
    fsync_dir(directory)
    manifest = _write_manifest(final, info, source, db, version, target_version, db_meta)
    result.update({"sha256": info["sha256"], "bytes": info["bytes"], "integrity": info["integrity"],
                   "manifest_data": manifest})
    return result


def _write_manifest(final, info, source, db, from_version, to_version, db_meta):
    manifest = {
        "format": MANIFEST_FORMAT,
        "snapshot": os.path.basename(final),
        "sha256": info["sha256"],
        "bytes": info["bytes"],
        "source_db": db,
        "schema_version": info["schema_version"],
        "from_version": from_version,
        "to_version": to_version,
        "counts": info["counts"],
        "content_digest": info["content_digest"],
        "db_digest": info["db_digest"],
        "integrity": info["integrity"],
        "method": SNAPSHOT_METHOD,
        "sqlite_version": sqlite3.sqlite_version,
        "created_at": _now_iso(),
    }
    atomic_write(manifest_path(final), json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                 mode=restrict_mode(db_meta[2]), uid=db_meta[0], gid=db_meta[1])
    return manifest


def _existing_snapshot(final, source, result, db, check_mode):
    """The snapshot name exists: prove it holds this content (then unchanged) or refuse."""
    if not os.path.isfile(final):
        raise SchemaError("%s exists and is not a regular file" % final, path=final,
                          hint="move it aside")
    manifest = read_manifest(final)
    if manifest is not None:
        # cheap path: file sha256 against the manifest, manifest digests against the live DB
        digest = sha256_file(final)
        if digest == manifest.get("sha256") and _same(manifest, source):
            result.update({"sha256": digest, "bytes": _size(final), "manifest_data": manifest,
                           "integrity": manifest.get("integrity")})
            return result
        raise SchemaError("snapshot %s exists but does not verify against %s (sha256 or content "
                          "differs from its manifest)" % (final, db), path=final,
                          hint="move %s and %s aside (never overwritten) and rerun"
                               % (final, manifest_path(final)))
    # no manifest (interrupted run): verify the file itself, then write the manifest
    info = verify_snapshot(final)
    if not _same(info, source):
        raise SchemaError("snapshot %s exists but holds different content than %s" % (final, db),
                          path=final, hint="move %s aside (it is never overwritten) and rerun" % final)
    result.update({"sha256": info["sha256"], "bytes": info["bytes"], "integrity": info["integrity"]})
    result["changed"] = True
    if not check_mode:
        meta = file_meta(final)
        result["manifest_data"] = _write_manifest(final, info, source, db, result["from_version"],
                                                  result["to_version"], meta)
    return result


# --------------------------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------------------------
def _same_file_or_sidecar(path, db):
    real = os.path.realpath(path)
    return any(real == os.path.realpath(db + suffix) for suffix in ("", "-wal", "-shm", "-journal"))


def _aside_name(db, now=None):
    base = "%s.replaced-%s" % (db, utc_timestamp(now))
    cand, n = base, 0
    while any(os.path.lexists(cand + s) for s in ("", "-wal", "-shm", "-journal")):
        n += 1
        cand = "%s.%d" % (base, n)
    return cand


def _copy_file(src, dest_fd):
    h = hashlib.sha256()
    with open(src, "rb") as f:
        while True:
            chunk = f.read(COPY_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(dest_fd, view):]
    os.fsync(dest_fd)
    return h.hexdigest()


def restore(db, snapshot, check_mode=False, allow_holders=False, expect_version=None, now=None):
    """Put ``snapshot`` back at ``db`` atomically; the replaced DB and its sidecars are kept aside.

    Steps: verify the snapshot (manifest sha256 if present, integrity_check, digests); if the live
    DB already has the same whole-DB digest and no ``-wal``/``-shm``/``-journal`` -> unchanged.
    Otherwise refuse while a process holds the DB, copy the snapshot to a temp file in the DB's
    directory (fsync, owner/mode of the replaced DB), hard-link the live DB to
    ``<db>.replaced-<UTC ts>``, rename its sidecars to ``<that>-wal``/``-shm`` (a stale WAL must
    never meet the restored file, facts 2.9), then rename the temp file over ``db``.
    """
    db = os.path.abspath(db)
    snapshot = os.path.abspath(snapshot)
    side = sidecars(db)
    result = {"changed": False, "db": db, "snapshot": snapshot}
    if _same_file_or_sidecar(snapshot, db):
        raise SchemaError("restore_from %s is the DB itself or one of its sidecars" % snapshot, path=snapshot,
                          hint="point restore_from at the pre-migration snapshot")
    manifest = read_manifest(snapshot)
    snap = verify_snapshot(snapshot, manifest)
    result.update({"schema_version": snap["schema_version"], "counts": snap["counts"],
                   "content_digest": snap["content_digest"], "db_digest": snap["db_digest"],
                   "sha256": snap["sha256"], "manifest_checked": manifest is not None})
    if expect_version is not None and snap["schema_version"] != expect_version:
        raise SchemaError("snapshot %s is at schema v%d, expected v%d" % (
            snapshot, snap["schema_version"], expect_version), path=snapshot,
            hint="pick the pre-migration snapshot (<db>.pre-migration-v20-to-v54-<token>.bak) or fix "
                 "expect_version")
    present_side = [p for k, p in sorted(side.items()) if os.path.lexists(p)]
    live = None
    if os.path.lexists(db):
        try:
            with Reader(db) as r:
                live = describe(r.conn, integrity_level="none", with_db_digest=True)
        except (SchemaError, sqlite3.DatabaseError) as e:
            if not os.path.isfile(db) or not os.access(db, os.R_OK):
                raise
            # A damaged live DB is exactly what a rollback must replace: keep it aside, unread.
            live = {"error": str(e)}
        if "error" in live:
            result["before"] = {"schema_version": None, "error": live["error"], "sidecars": present_side}
        else:
            result["before"] = {"schema_version": live["schema_version"], "counts": live["counts"],
                                "content_digest": live["content_digest"], "db_digest": live["db_digest"],
                                "sidecars": present_side}
            if live["db_digest"] == snap["db_digest"] and not present_side:
                return result
    else:
        result["before"] = {"schema_version": None, "sidecars": present_side}
    holders, complete = find_holders([db, side["wal"], side["shm"]])
    result["holders"], result["holders_complete"] = holders, complete
    if holders and not allow_holders:
        raise SchemaError("refusing to restore %s: it is open in %s" % (
            db, ", ".join("pid %d (%s)" % (h["pid"], h["comm"]) for h in holders)), path=db,
            hint="stop the ai-memory daemon and every `ai-memory mcp` / `boot` process first "
                 "(a running process would keep writing to the replaced file)")
    directory = os.path.dirname(db)
    result["space"] = check_space(directory, snap["bytes"], "restoring %s" % snapshot)
    aside = _aside_name(db, now) if live is not None or present_side else None
    result["replaced"] = aside if live is not None else None
    result["sidecars_moved"] = [{"from": p, "to": aside + p[len(db):]} for p in present_side]
    result["changed"] = True
    if check_mode:
        return result
    meta = file_meta(db) if live is not None else file_meta(snapshot)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(db), suffix=".restore.tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, meta[2])
            _chown(fd, meta[0], meta[1])
            copied = _copy_file(snapshot, fd)
        finally:
            os.close(fd)
        if copied != snap["sha256"]:
            raise SchemaError("copy of %s to %s is corrupt (sha256 %s != %s)" % (snapshot, tmp, copied,
                                                                                 snap["sha256"]),
                              path=tmp, hint="check the disk holding %s" % directory)
        if live is not None:
            try:
                os.link(db, aside)
                linked = True
            except OSError:
                linked = False
        for p in present_side:
            os.rename(p, aside + p[len(db):])
        if live is not None and not linked:
            os.rename(db, aside)
        os.rename(tmp, db)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    fsync_dir(directory)
    with Reader(db) as r:
        after = describe(r.conn, integrity_level="quick", with_db_digest=True)
    if after["db_digest"] != snap["db_digest"] or not after["integrity_ok"]:
        raise SchemaError("restored %s does not match snapshot %s" % (db, snapshot), path=db,
                          hint="the replaced DB is kept at %s; investigate the disk" % aside)
    return result
