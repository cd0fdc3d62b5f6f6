"""Unit tests of module_utils/sqlite_schema.py on small v20-like DBs built here.

The DBs are in WAL mode with rows left in an un-checkpointed ``-wal`` (written by a child process
that exits without closing, like a daemon stopped with SIGTERM), ``schema_version`` holds one row
and ``PRAGMA user_version`` stays 0 (facts 2.1, 2.6, 2.9).
"""
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import sqlite_schema as ss

V20_SCHEMA = """
CREATE TABLE memories (
    id TEXT PRIMARY KEY, tier TEXT NOT NULL, namespace TEXT NOT NULL DEFAULT 'global',
    title TEXT NOT NULL, content TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]',
    priority INTEGER NOT NULL DEFAULT 5, confidence REAL NOT NULL DEFAULT 1.0,
    source TEXT NOT NULL DEFAULT 'api', access_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, last_accessed_at TEXT, expires_at TEXT,
    metadata TEXT NOT NULL DEFAULT '{}', embedding BLOB,
    scope_idx TEXT GENERATED ALWAYS AS (COALESCE(json_extract(metadata, '$.scope'), 'private')) VIRTUAL,
    agent_id_idx TEXT GENERATED ALWAYS AS (json_extract(metadata, '$.agent_id')) VIRTUAL,
    embedding_dim INTEGER
);
CREATE UNIQUE INDEX idx_memories_title_ns ON memories(title, namespace);
CREATE TABLE memory_links (
    source_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    target_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    relation TEXT NOT NULL DEFAULT 'related_to', created_at TEXT NOT NULL,
    valid_from TEXT, valid_until TEXT, observed_by TEXT, signature BLOB,
    PRIMARY KEY (source_id, target_id, relation)
);
CREATE VIRTUAL TABLE memories_fts USING fts5(title, content, tags, content=memories, content_rowid=rowid);
CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, title, content, tags) VALUES (new.rowid, new.title, new.content, new.tags);
END;
CREATE TABLE archived_memories (
    id TEXT PRIMARY KEY, tier TEXT NOT NULL, namespace TEXT NOT NULL, title TEXT NOT NULL,
    content TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL,
    expires_at TEXT, metadata TEXT NOT NULL DEFAULT '{}', archived_at TEXT NOT NULL,
    archive_reason TEXT NOT NULL DEFAULT 'ttl_expired', original_tier TEXT, original_expires_at TEXT
);
CREATE TABLE namespace_meta (namespace TEXT PRIMARY KEY, standard_id TEXT, updated_at TEXT,
                             parent_namespace TEXT) WITHOUT ROWID;
CREATE TABLE schema_version (version INTEGER NOT NULL);
"""

WRITER = r"""
import sqlite3, sys, os
db, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db)
c.execute("PRAGMA wal_autocheckpoint=0")
for i in range(start, start + n):
    c.execute("INSERT INTO memories(id, tier, namespace, title, content, created_at, updated_at, metadata)"
              " VALUES (?, 'mid', 'wal-ns', ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '{}')",
              ("m%05d" % i, "t%d" % i, "wal content %d" % i))
c.commit()
os._exit(0)   # like SIGTERM: no checkpoint, the rows stay in the -wal
"""


def _row(i, ns="global", tier="long"):
    return ("m%05d" % i, tier, ns, "title %d" % i, "content %d \u00e9\n" % i,
            '["t"]', "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
            json.dumps({"agent_id": "a%d" % (i % 3), "scope": "private"}), bytes([i % 256]) * 8)


def make_v20(path, rows=20, wal_rows=0, version=20, user_version=0, with_table=True):
    """A v20-like ai-memory DB; ``wal_rows`` more rows are left un-checkpointed in the -wal."""
    path = str(path)
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.executescript(V20_SCHEMA if with_table else V20_SCHEMA.replace(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);", ""))
    for i in range(rows):
        c.execute("INSERT INTO memories(id, tier, namespace, title, content, tags, created_at, updated_at,"
                  " metadata, embedding) VALUES (?,?,?,?,?,?,?,?,?,?)", _row(i, ns="ns%d" % (i % 4)))
    for i in range(1, rows):
        c.execute("INSERT INTO memory_links(source_id, target_id, created_at) VALUES (?,?,?)",
                  ("m%05d" % (i - 1), "m%05d" % i, "2026-01-01T00:00:00Z"))
    c.execute("INSERT INTO archived_memories(id, tier, namespace, title, content, created_at, archived_at)"
              " VALUES ('old1', 'short', 'global', 'gone', 'archived', '2025-01-01T00:00:00Z',"
              " '2025-02-01T00:00:00Z')")
    c.execute("INSERT INTO namespace_meta VALUES ('ns0', 'm00000', '2026-01-01T00:00:00Z', NULL)")
    if with_table:
        c.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
    if user_version:
        c.execute("PRAGMA user_version=%d" % user_version)
    c.commit()
    c.close()  # last connection: checkpoint, -wal removed
    if wal_rows:
        write_wal(path, rows, wal_rows)
    return path


def write_wal(path, start, n):
    subprocess.check_call([sys.executable, "-c", WRITER, str(path), str(start), str(n)])
    assert os.path.getsize(str(path) + "-wal") > 0


def listing(d):
    return sorted(os.listdir(str(d)))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def rw_exec(path, *sql):
    """Write with a normal connection (then close: checkpoint)."""
    c = sqlite3.connect(str(path))
    for s in sql:
        c.execute(s)
    c.commit()
    c.close()


# ---------------------------------------------------------------------------------- reading
def test_version_read_from_table_with_user_version_zero(tmp_path):
    db = make_v20(tmp_path / "a.db")
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 0
    info = ss.inspect(db)
    assert info["schema_version"] == 20 and info["schema_table"] is True
    assert info["schema_known"] is True and info["schema_release"] == "v0.6.4"
    assert info["integrity"] == "ok" and info["integrity_ok"] is True


def test_user_version_is_ignored(tmp_path):
    db = make_v20(tmp_path / "a.db", version=54, user_version=7)
    assert ss.inspect(db)["schema_version"] == 54


def test_no_schema_table_and_unknown_version(tmp_path):
    info = ss.inspect(make_v20(tmp_path / "none.db", with_table=False))
    assert info["schema_version"] == 0 and info["schema_table"] is False and info["schema_known"] is False
    info = ss.inspect(make_v20(tmp_path / "v33.db", version=33))
    assert info["schema_version"] == 33 and info["schema_known"] is False and info["schema_release"] is None


def test_counts(tmp_path):
    db = make_v20(tmp_path / "a.db", rows=12, wal_rows=3)
    info = ss.inspect(db)
    # 12 checkpointed + 3 in the WAL; namespaces ns0..ns3 + wal-ns
    assert info["counts"] == {"memories": 15, "archived_memories": 1, "memory_links": 11, "namespaces": 5}
    assert info["wal_present"] is True and info["wal_bytes"] > 0
    assert info["content_digest_rows"] == 15


def test_missing_db_fails_without_creating(tmp_path):
    db = tmp_path / "sub" / "ai-memory.db"
    os.makedirs(str(db.parent))
    with pytest.raises(ss.SchemaError) as ei:
        ss.inspect(str(db))
    assert str(db) in str(ei.value) and "AI_MEMORY_DB" in ei.value.hint and "tilde" in ei.value.hint
    assert listing(db.parent) == []


def test_inspect_writes_and_creates_nothing(tmp_path):
    db = make_v20(tmp_path / "a.db")
    before_sha, before_mtime = sha(db), os.stat(db).st_mtime_ns
    assert listing(tmp_path) == ["a.db"]
    info = ss.inspect(db)
    assert info["open_mode"] == "ro-immutable"
    assert listing(tmp_path) == ["a.db"]  # a plain mode=ro open would have created -wal and -shm
    assert sha(db) == before_sha and os.stat(db).st_mtime_ns == before_mtime


def test_inspect_reads_wal_without_checkpointing(tmp_path):
    db = make_v20(tmp_path / "a.db", rows=5, wal_rows=4)
    os.unlink(db + "-shm")  # crashed writer, -shm gone: we must create one to read, then remove it
    main_sha, wal_sha = sha(db), sha(db + "-wal")
    info = ss.inspect(db)
    assert info["open_mode"] == "ro" and info["counts"]["memories"] == 9
    assert listing(tmp_path) == ["a.db", "a.db-wal"]
    assert sha(db) == main_sha and sha(db + "-wal") == wal_sha


def test_digest_ignores_expires_at_but_sees_content_and_metadata(tmp_path):
    db = make_v20(tmp_path / "a.db")
    d0 = ss.inspect(db, with_db_digest=True)
    rw_exec(db, "UPDATE memories SET expires_at='2026-01-01T06:00:00Z' WHERE id='m00001'")
    d1 = ss.inspect(db, with_db_digest=True)
    assert d1["content_digest"] == d0["content_digest"]
    assert d1["db_digest"] != d0["db_digest"]  # the whole-DB digest sees every change
    rw_exec(db, "UPDATE memories SET content='changed' WHERE id='m00001'")
    d2 = ss.inspect(db)
    assert d2["content_digest"] != d1["content_digest"]
    rw_exec(db, "UPDATE memories SET content='content 1 \u00e9\n', metadata='{\"scope\":\"x\"}' WHERE id='m00001'")
    d3 = ss.inspect(db)
    assert d3["content_digest"] not in (d1["content_digest"], d2["content_digest"])


def test_digest_equal_after_v54_like_migration(tmp_path):
    """Adding columns/tables and backfilling expires_at keeps the content digest (what v54 does)."""
    db = make_v20(tmp_path / "a.db")
    before = ss.inspect(db)
    rw_exec(db, "ALTER TABLE memories ADD COLUMN memory_kind TEXT NOT NULL DEFAULT 'observation'",
            "CREATE TABLE signed_events (id TEXT PRIMARY KEY)",
            "UPDATE memories SET expires_at = created_at WHERE tier IN ('mid','short') AND expires_at IS NULL",
            "DELETE FROM schema_version", "INSERT INTO schema_version VALUES (54)")
    after = ss.inspect(db)
    assert after["schema_version"] == 54 and after["schema_release"].startswith("v0.7.0")
    assert after["content_digest"] == before["content_digest"] and after["counts"] == before["counts"]


# ---------------------------------------------------------------------------------- holders
def test_holders_finds_a_child_holding_the_db(tmp_path):
    db = make_v20(tmp_path / "a.db")
    child = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3,sys;c=sqlite3.connect(sys.argv[1]);"
                               "c.execute('select count(*) from memories').fetchone();"
                               "print('ready',flush=True);sys.stdin.read()", db],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready"
        holders, complete = ss.find_holders([db, db + "-wal", db + "-shm"])
        mine = [h for h in holders if h["pid"] == child.pid]
        assert len(mine) == 1, holders
        assert mine[0]["cmdline"][0] == sys.executable and mine[0]["cmdline"][-1] == db
        assert db in mine[0]["files"] and mine[0]["comm"].startswith("python")
        assert "environ" not in mine[0]
        assert [h["pid"] for h in ss.inspect(db)["holders"]] == [child.pid]
    finally:
        child.stdin.close()
        child.wait(10)
    assert ss.find_holders([db])[0] == []


# ---------------------------------------------------------------------------------- snapshot
def test_snapshot_includes_wal_rows_a_cp_misses(tmp_path):
    db = make_v20(tmp_path / "a.db", rows=10, wal_rows=5)
    res = ss.take_snapshot(db)
    assert res["changed"] is True and res["counts"]["memories"] == 15
    snap = res["snapshot"]
    c = sqlite3.connect("file:%s?mode=ro&immutable=1" % snap, uri=True)
    assert c.execute("SELECT COUNT(*) FROM memories WHERE namespace='wal-ns'").fetchone()[0] == 5
    c.close()
    naive = str(tmp_path / "cp-copy.db")
    shutil.copyfile(db, naive)  # what `cp` of the main file gives
    c = sqlite3.connect("file:%s?mode=ro&immutable=1" % naive, uri=True)
    assert c.execute("SELECT COUNT(*) FROM memories").fetchone()[0] == 10
    c.close()
    assert os.path.getsize(db + "-wal") > 0  # the source WAL was not checkpointed by us


def test_snapshot_equal_to_source_named_and_restricted(tmp_path):
    db = make_v20(tmp_path / "a.db", rows=8, wal_rows=2)
    os.chmod(db, 0o640)
    src = ss.inspect(db, with_db_digest=True)
    res = ss.take_snapshot(db)
    token = src["db_digest"][:12]
    assert res["snapshot"] == "%s.pre-migration-v20-to-v54-%s.bak" % (db, token)
    assert res["from_version"] == 20 and res["to_version"] == 54
    snap = ss.inspect(res["snapshot"], with_db_digest=True, with_holders=False)
    for key in ("schema_version", "counts", "content_digest", "db_digest"):
        assert snap[key] == src[key], key
    assert snap["integrity"] == "ok"
    man = json.load(open(res["manifest"]))
    assert man["sha256"] == sha(res["snapshot"]) == res["sha256"]
    assert man["counts"] == src["counts"] and man["content_digest"] == src["content_digest"]
    assert man["schema_version"] == 20 and man["source_db"] == db and man["created_at"].endswith("Z")
    for p in (res["snapshot"], res["manifest"]):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert [f for f in listing(tmp_path) if ".tmp" in f] == []


def test_snapshot_mode_never_wider_than_db(tmp_path):
    db = make_v20(tmp_path / "a.db")
    os.chmod(db, 0o600)
    res = ss.take_snapshot(db, snapshot_dir=str(tmp_path))
    assert stat.S_IMODE(os.stat(res["snapshot"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(res["manifest"]).st_mode) == 0o600


def test_snapshot_idempotent_and_new_content_new_file(tmp_path):
    db = make_v20(tmp_path / "a.db", wal_rows=2)
    first = ss.take_snapshot(db)
    files = listing(tmp_path)
    mtime = os.stat(first["snapshot"]).st_mtime_ns
    second = ss.take_snapshot(db)
    assert second["changed"] is False and second["snapshot"] == first["snapshot"]
    assert second["sha256"] == first["sha256"]
    assert listing(tmp_path) == files and os.stat(first["snapshot"]).st_mtime_ns == mtime
    rw_exec(db, "UPDATE memories SET title='renamed' WHERE id='m00003'")  # not in content_digest
    third = ss.take_snapshot(db)
    assert third["changed"] is True and third["snapshot"] != first["snapshot"]
    assert os.path.exists(first["snapshot"])  # older snapshots are kept


def test_tampered_snapshot_is_not_accepted_as_done(tmp_path):
    db = make_v20(tmp_path / "a.db")
    res = ss.take_snapshot(db)
    with open(res["snapshot"], "r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    with pytest.raises(ss.SchemaError) as ei:
        ss.take_snapshot(db)
    assert res["snapshot"] in str(ei.value) and "aside" in ei.value.hint


def test_snapshot_without_manifest_is_reverified_and_manifest_rewritten(tmp_path):
    db = make_v20(tmp_path / "a.db")
    res = ss.take_snapshot(db)
    os.unlink(res["manifest"])
    again = ss.take_snapshot(db)
    assert again["changed"] is True and again["snapshot"] == res["snapshot"]
    assert json.load(open(res["manifest"]))["sha256"] == res["sha256"]


def test_explicit_snapshot_path_with_other_content_is_never_overwritten(tmp_path):
    db = make_v20(tmp_path / "a.db")
    target = tmp_path / "snap.bak"
    other = make_v20(tmp_path / "other.db", rows=3)
    shutil.copyfile(other, str(target))
    before = sha(str(target))
    with pytest.raises(ss.SchemaError) as ei:
        ss.take_snapshot(db, snapshot_path=str(target))
    assert str(target) in str(ei.value)
    assert sha(str(target)) == before


def test_snapshot_check_mode_writes_nothing(tmp_path):
    db = make_v20(tmp_path / "a.db", wal_rows=2)
    files = listing(tmp_path)
    res = ss.take_snapshot(db, check_mode=True)
    assert res["changed"] is True and ".pre-migration-v20-to-v54-" in res["snapshot"]
    assert listing(tmp_path) == files and not os.path.exists(res["snapshot"])


def test_refuses_already_migrated_db_unless_allowed(tmp_path):
    db = make_v20(tmp_path / "a.db", version=54)
    with pytest.raises(ss.SchemaError) as ei:
        ss.take_snapshot(db, target_version=54)
    assert "v54" in str(ei.value) and "allow_migrated" in ei.value.hint
    assert listing(tmp_path) == ["a.db"]
    res = ss.take_snapshot(db, target_version=54, allow_migrated=True)
    assert os.path.basename(res["snapshot"]).startswith("a.db.pre-migration-v54-to-v54-")


def test_expect_version_mismatch(tmp_path):
    db = make_v20(tmp_path / "a.db", version=42)
    with pytest.raises(ss.SchemaError) as ei:
        ss.take_snapshot(db, expect_version=20)
    assert "v42" in str(ei.value) and "expected v20" in str(ei.value)


def test_free_space_refusal(tmp_path, monkeypatch):
    db = make_v20(tmp_path / "a.db", rows=50)
    files = listing(tmp_path)

    class Vfs(object):
        f_bavail = 10
        f_frsize = 4096

    monkeypatch.setattr(ss.os, "statvfs", lambda d: Vfs())
    for check_mode in (True, False):
        with pytest.raises(ss.SchemaError) as ei:
            ss.take_snapshot(db, check_mode=check_mode)
        msg = str(ei.value)
        assert str(tmp_path) in msg and "40960 free" in msg
        assert "%d bytes needed" % ss.space_needed(os.path.getsize(db)) in msg
    assert listing(tmp_path) == files


def test_failed_verification_removes_temp_and_keeps_source(tmp_path, monkeypatch):
    db = make_v20(tmp_path / "a.db", wal_rows=2)
    files = listing(tmp_path)
    shas = {f: sha(str(tmp_path / f)) for f in files if not f.endswith("-shm")}
    monkeypatch.setattr(ss, "_same", lambda a, b: False)
    with pytest.raises(ss.SchemaError) as ei:
        ss.take_snapshot(db)
    assert "holders" in ei.value.hint
    assert listing(tmp_path) == files
    assert {f: sha(str(tmp_path / f)) for f in shas} == shas


# ---------------------------------------------------------------------------------- restore
def _migrate_like_v070(db):
    """Change the DB the way the upgrade would, leaving WAL content behind (daemon SIGTERMed)."""
    rw_exec(db, "UPDATE memories SET expires_at='2026-01-01T06:00:00Z'",
            "DELETE FROM schema_version", "INSERT INTO schema_version VALUES (54)")
    write_wal(db, 1000, 3)


def test_restore_removes_sidecars_and_keeps_replaced(tmp_path):
    db = make_v20(tmp_path / "a.db", rows=6, wal_rows=2)
    os.chmod(db, 0o640)
    snap = ss.take_snapshot(db)
    original = ss.inspect(db, with_db_digest=True)
    _migrate_like_v070(db)
    assert os.path.exists(db + "-wal") and os.path.exists(db + "-shm")
    migrated = ss.inspect(db, with_db_digest=True)
    assert migrated["schema_version"] == 54 and migrated["counts"]["memories"] == 11
    res = ss.restore(db, snap["snapshot"])
    assert res["changed"] is True and res["manifest_checked"] is True
    assert not os.path.exists(db + "-wal") and not os.path.exists(db + "-shm")
    now = ss.inspect(db, with_db_digest=True)
    assert now["db_digest"] == original["db_digest"] and now["schema_version"] == 20
    assert now["counts"]["memories"] == 8
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o640
    aside = res["replaced"]
    assert aside.startswith(db + ".replaced-")
    assert sorted(m["to"] for m in res["sidecars_moved"]) == [aside + "-shm", aside + "-wal"]
    # the replaced DB and its WAL are kept together: it still reads as the migrated DB
    kept = ss.inspect(aside, with_db_digest=True)
    assert kept["db_digest"] == migrated["db_digest"] and kept["counts"]["memories"] == 11
    assert os.path.exists(snap["snapshot"])  # the snapshot itself stays
    again = ss.restore(db, snap["snapshot"])
    assert again["changed"] is False
    assert len([f for f in listing(tmp_path) if ".replaced-" in f and not f.endswith(("-wal", "-shm"))]) == 1


def test_restore_check_mode_changes_nothing(tmp_path):
    db = make_v20(tmp_path / "a.db")
    snap = ss.take_snapshot(db)
    _migrate_like_v070(db)
    files = listing(tmp_path)
    shas = {f: sha(str(tmp_path / f)) for f in files if not f.endswith("-shm")}
    res = ss.restore(db, snap["snapshot"], check_mode=True)
    assert res["changed"] is True and res["replaced"].startswith(db + ".replaced-")
    assert listing(tmp_path) == files
    assert {f: sha(str(tmp_path / f)) for f in shas} == shas


def test_restore_refuses_a_tampered_snapshot(tmp_path):
    db = make_v20(tmp_path / "a.db")
    snap = ss.take_snapshot(db)
    _migrate_like_v070(db)
    with open(snap["snapshot"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(ss.SchemaError) as ei:
        ss.restore(db, snap["snapshot"])
    assert "does not match its manifest" in str(ei.value)
    assert ss.inspect(db)["schema_version"] == 54  # untouched


def test_restore_refuses_while_held(tmp_path):
    db = make_v20(tmp_path / "a.db")
    snap = ss.take_snapshot(db)
    rw_exec(db, "DELETE FROM memories WHERE id='m00002'")
    child = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3,sys;c=sqlite3.connect(sys.argv[1]);"
                               "c.execute('select 1 from memories').fetchone();"
                               "print('ready',flush=True);sys.stdin.read()", db],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready"
        with pytest.raises(ss.SchemaError) as ei:
            ss.restore(db, snap["snapshot"])
        assert "pid %d" % child.pid in str(ei.value) and "stop the ai-memory daemon" in ei.value.hint
    finally:
        child.stdin.close()
        child.wait(10)
    assert ss.restore(db, snap["snapshot"])["changed"] is True


def test_restore_into_missing_db_and_upstream_manifest(tmp_path):
    """An ``ai-memory backup`` snapshot with its ``.manifest.json`` restores to a missing path."""
    src = make_v20(tmp_path / "src.db")
    snapdir = tmp_path / "backups"
    snapdir.mkdir()
    snapfile = str(snapdir / "ai-memory-2026-06-01T224038Z.db")
    c = sqlite3.connect(src)
    c.execute("VACUUM INTO ?", (snapfile,))
    c.close()
    with open(str(snapdir / "ai-memory-2026-06-01T224038Z.manifest.json"), "w") as f:
        json.dump({"snapshot": snapfile, "sha256": "0" * 64, "bytes": 1}, f)
    target = str(tmp_path / "restored.db")
    with pytest.raises(ss.SchemaError):
        ss.restore(target, snapfile)  # wrong sha256 in upstream's manifest
    assert not os.path.exists(target)
    with open(str(snapdir / "ai-memory-2026-06-01T224038Z.manifest.json"), "w") as f:
        json.dump({"snapshot": snapfile, "sha256": sha(snapfile), "bytes": 1}, f)
    res = ss.restore(target, snapfile)
    assert res["changed"] is True and res["replaced"] is None
    assert ss.inspect(target)["content_digest"] == ss.inspect(src)["content_digest"]


def test_snapshot_or_restore_onto_the_db_itself_is_refused(tmp_path):
    db = make_v20(tmp_path / "a.db", wal_rows=1)
    files = {f: sha(str(tmp_path / f)) for f in listing(tmp_path) if not f.endswith("-shm")}
    with pytest.raises(ss.SchemaError):
        ss.take_snapshot(db, snapshot_path=db)
    with pytest.raises(ss.SchemaError):
        ss.take_snapshot(db, snapshot_path=db + "-wal")
    with pytest.raises(ss.SchemaError):
        ss.restore(db, db)
    assert {f: sha(str(tmp_path / f)) for f in files} == files


@pytest.mark.parametrize("damage", ["malformed", "not-a-database"])
def test_restore_replaces_a_damaged_db_and_keeps_it_aside(tmp_path, damage):
    """A rollback must work exactly when the live DB is damaged; the damaged file is kept aside."""
    db = make_v20(tmp_path / "a.db", rows=300)
    snap = ss.take_snapshot(db)
    original = ss.inspect(db, with_db_digest=True)
    if damage == "malformed":
        with open(db, "r+b") as f:
            f.seek(4096 * 2)
            f.write(b"\xff" * 4096 * 4)
    else:
        with open(db, "wb") as f:
            f.write(b"garbage" * 1000)
    damaged_sha = sha(db)
    res = ss.restore(db, snap["snapshot"])
    assert res["changed"] is True
    assert res["before"]["schema_version"] is None and res["before"]["error"]
    now = ss.inspect(db, with_db_digest=True)
    assert now["db_digest"] == original["db_digest"] and now["integrity_ok"] is True
    assert sha(res["replaced"]) == damaged_sha


def test_holders_incomplete_when_fd_links_cannot_be_read(tmp_path):
    """An fd table that lists but whose links cannot be read (no CAP_SYS_PTRACE) proves nothing."""
    proc = tmp_path / "proc"
    fd = proc / "4242" / "fd"
    fd.mkdir(parents=True)
    (proc / "4242" / "comm").write_text("ai-memory\n")
    (proc / "4242" / "cmdline").write_bytes(b"ai-memory\0mcp\0")
    (fd / "3").write_text("")  # a regular file: os.readlink raises EINVAL, which is not a refusal

    holders, complete = ss.find_holders([str(tmp_path / "db")], proc=str(proc), exclude_pids=())
    assert holders == [] and complete is True

    real_readlink = os.readlink

    def denied(path, *a, **kw):
        if str(path).startswith(str(fd)):
            raise OSError(errno.EACCES, "Permission denied", str(path))
        return real_readlink(path, *a, **kw)

    import unittest.mock as mock
    with mock.patch.object(ss.os, "readlink", denied):
        holders, complete = ss.find_holders([str(tmp_path / "db")], proc=str(proc), exclude_pids=())
    assert holders == [] and complete is False


def test_unreadable_fd_tables_of_unrelated_processes_do_not_count(tmp_path):
    """A setuid sshd / su (or another user's shell) whose fds root cannot read cannot void the proof;
    an unreadable process named ai-memory or running as the DB's owner does."""
    db = tmp_path / "ai-memory.db"
    db.write_bytes(b"")
    if os.geteuid() == 0:  # the DB of a service user (a root-owned DB only counts ai-memory names)
        os.chown(str(db), 4242, -1)
    owner = os.stat(str(db)).st_uid
    proc = tmp_path / "proc"
    for pid, comm, uid in (("100", "sshd", owner + 1), ("200", "bash", owner)):
        (proc / pid / "fd").mkdir(parents=True)
        (proc / pid / "comm").write_text(comm + "\n")
        (proc / pid / "cmdline").write_bytes(comm.encode() + b"\0")
        (proc / pid / "status").write_text("Name:\t%s\nUid:\t%d\t%d\t%d\t%d\n" % (comm, uid, uid, uid, uid))
    real_listdir = os.listdir

    def denied_for(pids):
        def listdir(path):
            if any(str(path) == str(proc / p / "fd") for p in pids):
                raise OSError(errno.EACCES, "Permission denied", str(path))
            return real_listdir(path)
        return listdir

    import unittest.mock as mock
    with mock.patch.object(ss.os, "listdir", denied_for(["100"])):
        assert ss.find_holders([str(db)], proc=str(proc), exclude_pids=()) == ([], True)
    with mock.patch.object(ss.os, "listdir", denied_for(["100", "200"])):
        assert ss.find_holders([str(db)], proc=str(proc), exclude_pids=()) == ([], False)
