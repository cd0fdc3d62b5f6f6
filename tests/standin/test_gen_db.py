"""Tests of gen_db.py: a realistic v0.6.4 (schema 20) DB per facts §2.6."""
import datetime
import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest

import gen_db

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
EXPECTED_COLUMNS = {
    "memories": ["id", "tier", "namespace", "title", "content", "tags", "priority",
                 "confidence", "source", "access_count", "created_at", "updated_at",
                 "last_accessed_at", "expires_at", "metadata", "embedding", "scope_idx",
                 "agent_id_idx", "embedding_dim"],
    "memory_links": ["source_id", "target_id", "relation", "created_at", "valid_from",
                     "valid_until", "observed_by", "signature"],
    "archived_memories": ["id", "tier", "namespace", "title", "content", "tags", "priority",
                          "confidence", "source", "access_count", "created_at", "updated_at",
                          "last_accessed_at", "expires_at", "metadata", "archived_at",
                          "archive_reason", "embedding", "embedding_dim", "original_tier",
                          "original_expires_at"],
    "namespace_meta": ["namespace", "standard_id", "updated_at", "parent_namespace"],
    "pending_actions": ["id", "action_type", "memory_id", "namespace", "payload",
                        "requested_by", "requested_at", "status", "decided_by", "decided_at",
                        "approvals"],
    "sync_state": ["agent_id", "peer_id", "last_seen_at", "last_pulled_at", "last_pushed_at"],
    "subscriptions": ["id", "url", "events", "secret_hash", "namespace_filter", "agent_filter",
                      "created_by", "created_at", "last_dispatched_at", "dispatch_count",
                      "failure_count", "event_types"],
    "entity_aliases": ["entity_id", "alias", "created_at"],
    "audit_log": ["id", "agent_id", "event_type", "requested_family", "granted",
                  "attestation_tier", "timestamp"],
    "schema_version": ["version"],
}


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("gen") / "v20.db")
    summary = gen_db.generate(p, 500, seed=3, now=NOW)
    return p, summary


def q(path, sql, args=()):
    c = sqlite3.connect(path)
    try:
        rows = c.execute(sql, args).fetchall()
        c.commit()
        return rows
    finally:
        c.close()


def test_schema_matches_v20(small_db):
    p, _ = small_db
    for table, cols in EXPECTED_COLUMNS.items():
        assert [r[1] for r in q(p, "PRAGMA table_xinfo(%s)" % table)] == cols, table
    hidden = dict((r[1], r[6]) for r in q(p, "PRAGMA table_xinfo(memories)"))
    assert hidden["scope_idx"] == 2 and hidden["agent_id_idx"] == 2  # VIRTUAL generated
    assert q(p, "SELECT version FROM schema_version") == [(20,)]
    assert q(p, "PRAGMA user_version") == [(0,)]
    assert q(p, "PRAGMA journal_mode") == [("wal",)]
    assert q(p, "PRAGMA integrity_check") == [("ok",)]
    idx = q(p, "SELECT sql FROM sqlite_master WHERE name='idx_memories_title_ns'")[0][0]
    assert idx.startswith("CREATE UNIQUE INDEX") and "(title, namespace)" in idx
    trig = set(r[0] for r in q(p, "SELECT name FROM sqlite_master WHERE type='trigger'"))
    assert {"memories_ai", "memories_ad", "memories_au"} <= trig
    fts = q(p, "SELECT sql FROM sqlite_master WHERE name='memories_fts'")[0][0]
    assert "fts5" in fts and "content=memories" in fts
    assert q(p, "INSERT INTO memories_fts(memories_fts) VALUES('integrity-check')") == []
    assert not os.path.exists(p + "-wal") or os.path.getsize(p + "-wal") == 0


def test_data_mix(small_db):
    p, s = small_db
    assert q(p, "SELECT COUNT(*) FROM memories") == [(500,)] and s["memories"] == 500
    tiers = dict(q(p, "SELECT tier, COUNT(*) FROM memories GROUP BY tier"))
    assert set(tiers) == {"short", "mid", "long"} and all(v > 30 for v in tiers.values())
    assert q(p, "SELECT COUNT(*) FROM memories WHERE tier='long' AND expires_at IS NOT NULL"
             ) == [(0,)]
    for tier in ("short", "mid"):
        null, setv = q(p, "SELECT SUM(expires_at IS NULL), SUM(expires_at IS NOT NULL) FROM "
                          "memories WHERE tier=?", (tier,))[0]
        assert null > 0 and setv > 0
    assert q(p, "SELECT COUNT(*) FROM memory_links")[0][0] == s["links"] == 125
    assert q(p, "SELECT COUNT(*) FROM archived_memories")[0][0] == 25
    assert q(p, "SELECT COUNT(DISTINCT namespace) FROM memories")[0][0] == 5
    std = q(p, "SELECT standard_id FROM namespace_meta WHERE standard_id IS NOT NULL")
    assert len(std) == 1
    assert q(p, "SELECT json_extract(metadata, '$.governance.approver') FROM memories "
                "WHERE id=?", (std[0][0],)) == [("human",)]
    assert q(p, "SELECT COUNT(*) FROM memories WHERE scope_idx != 'private'")[0][0] > 0
    assert q(p, "SELECT COUNT(*) FROM memories WHERE agent_id_idx IS NOT NULL")[0][0] > 0
    assert q(p, "SELECT COUNT(*) FROM memories WHERE embedding IS NOT NULL AND "
                "length(embedding) != embedding_dim * 4") == [(0,)]
    word = q(p, "SELECT title FROM memories LIMIT 1")[0][0].split()[1]
    assert q(p, "SELECT COUNT(*) FROM memories_fts WHERE memories_fts MATCH ?", (word,))[0][0] > 0


def test_fk_cascade_and_unique_title(small_db, tmp_path):
    p, _ = small_db
    c = sqlite3.connect(p)
    try:
        c.execute("PRAGMA foreign_keys = ON")
        src = c.execute("SELECT source_id FROM memory_links LIMIT 1").fetchone()[0]
        n = c.execute("SELECT COUNT(*) FROM memory_links WHERE source_id=? OR target_id=?",
                      (src, src)).fetchone()[0]
        assert n > 0
        title, ns = c.execute("SELECT title, namespace FROM memories LIMIT 1").fetchone()
        with pytest.raises(sqlite3.IntegrityError):
            c.execute("INSERT INTO memories (id, tier, namespace, title, content, created_at, "
                      "updated_at) VALUES ('dup', 'long', ?, ?, 'x', 't', 't')", (ns, title))
        c.execute("DELETE FROM memories WHERE id=?", (src,))
        assert c.execute("SELECT COUNT(*) FROM memory_links WHERE source_id=? OR target_id=?",
                         (src, src)).fetchone()[0] == 0
    finally:
        c.rollback()
        c.close()


def test_deterministic_for_seed_and_now(tmp_path):
    def digest(path):
        c = sqlite3.connect(path)
        h = hashlib.sha256()
        for r in c.execute("SELECT * FROM memories ORDER BY id"):
            h.update(repr(r).encode())
        for r in c.execute("SELECT * FROM memory_links ORDER BY 1, 2, 3"):
            h.update(repr(r).encode())
        c.close()
        return h.hexdigest()
    a, b, c = (str(tmp_path / n) for n in ("a.db", "b.db", "c.db"))
    gen_db.generate(a, 200, seed=11, now=NOW)
    gen_db.generate(b, 200, seed=11, now=NOW)
    gen_db.generate(c, 200, seed=12, now=NOW)
    assert digest(a) == digest(b) != digest(c)
    with pytest.raises(FileExistsError):
        gen_db.generate(a, 10)


def test_size_target(tmp_path):
    p = str(tmp_path / "big.db")
    s = gen_db.generate(p, 2000, size_mb=8, seed=1)
    target = 8 * 1024 * 1024
    assert abs(os.path.getsize(p) - target) < 0.1 * target, s
    assert s["seconds"] < 10


def test_cli(tmp_path):
    p = str(tmp_path / "cli.db")
    here = os.path.dirname(os.path.abspath(gen_db.__file__))
    r = subprocess.run([sys.executable, os.path.join(here, "gen_db.py"), p, "--rows", "50",
                        "--sync-peers", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert q(p, "SELECT COUNT(*) FROM memories") == [(50,)]
    assert q(p, "SELECT COUNT(*) FROM sync_state") == [(2,)]
    r = subprocess.run([sys.executable, os.path.join(here, "gen_db.py"), p, "--rows", "5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "already exists" in r.stderr
