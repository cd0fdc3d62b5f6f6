"""SQLite open + fake migration ladder (facts §2.1-§2.6, §9).

* ``schema_version(version)`` holds one row; ``PRAGMA user_version`` is never touched (stays 0).
* ``open_db`` = WAL, busy_timeout 5000, synchronous NORMAL, foreign_keys ON, the v20 ``SCHEMA``
  batch (all ``IF NOT EXISTS``), then ``migrate`` to the build's target.
* ``migrate``: stored >= target -> return untouched (never refuse a newer DB).  Otherwise the whole
  ladder runs in ONE ``BEGIN EXCLUSIVE`` transaction, rolled back completely on any error.
* The v54 arm is the #1466 TTL backfill (short +6 h, mid +7 d, long stays NULL; only rows whose
  ``expires_at`` IS NULL).  The tag build (target 42) never reaches it.
* Never any backup / snapshot.
* v0.7.0 builds then install the R1-M2 CHECK triggers (sentinel ``memories_ck_tier_ins``) in a
  separate ``BEGIN IMMEDIATE`` transaction.
"""
import datetime
import os
import sqlite3

V20 = 20
SHORT_TTL = datetime.timedelta(hours=6)
MID_TTL = datetime.timedelta(days=7)


class DbError(Exception):
    pass


# ----------------------------------------------------------------------------- v0.6.4 SCHEMA (v20)
SCHEMA_V20 = """
CREATE TABLE IF NOT EXISTS memories (
    id               TEXT PRIMARY KEY,
    tier             TEXT NOT NULL,
    namespace        TEXT NOT NULL DEFAULT 'global',
    title            TEXT NOT NULL,
    content          TEXT NOT NULL,
    tags             TEXT NOT NULL DEFAULT '[]',
    priority         INTEGER NOT NULL DEFAULT 5,
    confidence       REAL NOT NULL DEFAULT 1.0,
    source           TEXT NOT NULL DEFAULT 'api',
    access_count     INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    last_accessed_at TEXT,
    expires_at       TEXT,
    metadata         TEXT NOT NULL DEFAULT '{}',
    embedding        BLOB,
    scope_idx        TEXT GENERATED ALWAYS AS
                     (COALESCE(json_extract(metadata, '$.scope'), 'private')) VIRTUAL,
    agent_id_idx     TEXT GENERATED ALWAYS AS (json_extract(metadata, '$.agent_id')) VIRTUAL,
    embedding_dim    INTEGER
);
CREATE INDEX IF NOT EXISTS idx_memories_tier ON memories(tier);
CREATE INDEX IF NOT EXISTS idx_memories_namespace ON memories(namespace);
CREATE INDEX IF NOT EXISTS idx_memories_priority ON memories(priority DESC);
CREATE INDEX IF NOT EXISTS idx_memories_expires ON memories(expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS idx_memories_title_ns ON memories(title, namespace);
CREATE INDEX IF NOT EXISTS idx_memories_scope_idx ON memories(scope_idx);
CREATE INDEX IF NOT EXISTS idx_memories_agent_id_idx ON memories(agent_id_idx);

CREATE TABLE IF NOT EXISTS memory_links (
    source_id   TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    target_id   TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    relation    TEXT NOT NULL DEFAULT 'related_to',
    created_at  TEXT NOT NULL,
    valid_from  TEXT,
    valid_until TEXT,
    observed_by TEXT,
    signature   BLOB,
    PRIMARY KEY (source_id, target_id, relation)
);
CREATE INDEX IF NOT EXISTS idx_links_target ON memory_links(target_id);

CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    title, content, tags, content=memories, content_rowid=rowid
);
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, title, content, tags)
    VALUES (new.rowid, new.title, new.content, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, title, content, tags)
    VALUES ('delete', old.rowid, old.title, old.content, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, title, content, tags)
    VALUES ('delete', old.rowid, old.title, old.content, old.tags);
    INSERT INTO memories_fts(rowid, title, content, tags)
    VALUES (new.rowid, new.title, new.content, new.tags);
END;

CREATE TABLE IF NOT EXISTS archived_memories (
    id                  TEXT PRIMARY KEY,
    tier                TEXT NOT NULL,
    namespace           TEXT NOT NULL DEFAULT 'global',
    title               TEXT NOT NULL,
    content             TEXT NOT NULL,
    tags                TEXT NOT NULL DEFAULT '[]',
    priority            INTEGER NOT NULL DEFAULT 5,
    confidence          REAL NOT NULL DEFAULT 1.0,
    source              TEXT NOT NULL DEFAULT 'api',
    access_count        INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    last_accessed_at    TEXT,
    expires_at          TEXT,
    metadata            TEXT NOT NULL DEFAULT '{}',
    archived_at         TEXT NOT NULL,
    archive_reason      TEXT NOT NULL DEFAULT 'ttl_expired',
    embedding           BLOB,
    embedding_dim       INTEGER,
    original_tier       TEXT,
    original_expires_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_archived_namespace ON archived_memories(namespace);

CREATE TABLE IF NOT EXISTS namespace_meta (
    namespace        TEXT PRIMARY KEY,
    standard_id      TEXT,
    updated_at       TEXT NOT NULL,
    parent_namespace TEXT
);

CREATE TABLE IF NOT EXISTS pending_actions (
    id           TEXT PRIMARY KEY,
    action_type  TEXT NOT NULL,
    memory_id    TEXT,
    namespace    TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    decided_by   TEXT,
    decided_at   TEXT,
    approvals    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS idx_pending_status ON pending_actions(status);

CREATE TABLE IF NOT EXISTS sync_state (
    agent_id       TEXT NOT NULL,
    peer_id        TEXT NOT NULL,
    last_seen_at   TEXT,
    last_pulled_at TEXT,
    last_pushed_at TEXT,
    PRIMARY KEY (agent_id, peer_id)
);

CREATE TABLE IF NOT EXISTS subscriptions (
    id                 TEXT PRIMARY KEY,
    url                TEXT NOT NULL,
    events             TEXT NOT NULL DEFAULT '*',
    secret_hash        TEXT,
    namespace_filter   TEXT,
    agent_filter       TEXT,
    created_by         TEXT,
    created_at         TEXT NOT NULL,
    last_dispatched_at TEXT,
    dispatch_count     INTEGER NOT NULL DEFAULT 0,
    failure_count      INTEGER NOT NULL DEFAULT 0,
    event_types        TEXT
);

CREATE TABLE IF NOT EXISTS entity_aliases (
    entity_id  TEXT NOT NULL,
    alias      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (entity_id, alias)
);

CREATE TABLE IF NOT EXISTS audit_log (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id         TEXT,
    event_type       TEXT NOT NULL,
    requested_family TEXT,
    granted          INTEGER,
    attestation_tier TEXT,
    timestamp        TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
"""

# ----------------------------------------------------------------------------- fake v21..v54 ladder
_GOV_RULES_SEED = (
    "INSERT OR IGNORE INTO governance_rules (id, name, description, enabled, created_at) VALUES "
    "('R001', 'require-approval-delete', 'deletes in governed namespaces need approval', 0, "
    "strftime('%Y-%m-%dT%H:%M:%S+00:00','now')),"
    "('R002', 'deny-cross-namespace-promote', 'no promotion across namespaces', 0, "
    "strftime('%Y-%m-%dT%H:%M:%S+00:00','now')),"
    "('R003', 'signed-federation-only', 'federated writes must be signed', 0, "
    "strftime('%Y-%m-%dT%H:%M:%S+00:00','now')),"
    "('R004', 'quota-enforce', 'per-agent quotas are enforced', 0, "
    "strftime('%Y-%m-%dT%H:%M:%S+00:00','now'))"
)

LADDER = [
    (21, ["""CREATE TABLE signed_events (
            id           TEXT PRIMARY KEY,
            agent_id     TEXT NOT NULL,
            event_type   TEXT NOT NULL,
            payload_hash BLOB NOT NULL,
            signature    BLOB,
            attest_level TEXT NOT NULL DEFAULT 'unsigned',
            timestamp    TEXT NOT NULL)"""]),
    (22, ["ALTER TABLE memories ADD COLUMN reflection_depth INTEGER NOT NULL DEFAULT 0"]),
    (23, ["ALTER TABLE memories ADD COLUMN memory_kind TEXT NOT NULL DEFAULT 'observation'"]),
    (24, ["ALTER TABLE memories ADD COLUMN atomised_into TEXT",
          "ALTER TABLE memories ADD COLUMN atom_of TEXT"]),
    (25, ["ALTER TABLE memories ADD COLUMN entity_id TEXT",
          "ALTER TABLE memories ADD COLUMN mentioned_entity_id TEXT"]),
    (26, ["ALTER TABLE memories ADD COLUMN persona_version INTEGER"]),
    (27, ["ALTER TABLE memories ADD COLUMN citations TEXT NOT NULL DEFAULT '[]'"]),
    (28, ["ALTER TABLE signed_events ADD COLUMN prev_hash BLOB",
          "ALTER TABLE signed_events ADD COLUMN sequence INTEGER",
          "CREATE UNIQUE INDEX idx_signed_events_sequence ON signed_events(sequence)"]),
    (29, ["""CREATE TABLE signed_events_dlq (
            id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT, agent_id TEXT,
            event_type TEXT, payload BLOB, error TEXT, created_at TEXT NOT NULL)"""]),
    (30, ["""CREATE TABLE subscription_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, subscription_id TEXT NOT NULL,
            event_type TEXT NOT NULL, payload TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL, delivered_at TEXT)""",
          """CREATE TABLE subscription_dlq (
            id INTEGER PRIMARY KEY AUTOINCREMENT, subscription_id TEXT NOT NULL,
            event_type TEXT NOT NULL, payload TEXT NOT NULL DEFAULT '{}', error TEXT,
            failed_at TEXT NOT NULL)"""]),
    (31, ["""CREATE TABLE agent_quotas (
            agent_id TEXT PRIMARY KEY, max_memories INTEGER, max_bytes INTEGER,
            used_memories INTEGER NOT NULL DEFAULT 0, used_bytes INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT)"""]),
    (32, ["""CREATE TABLE governance_rules (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
            enabled INTEGER NOT NULL DEFAULT 0, params TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL, updated_at TEXT)""", _GOV_RULES_SEED]),
    (33, ["""CREATE TABLE memory_transcripts (
            id TEXT PRIMARY KEY, namespace TEXT NOT NULL DEFAULT 'global', source TEXT,
            content BLOB, compressed INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
            expires_at TEXT)""",
          """CREATE TABLE memory_transcript_links (
            memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            transcript_id TEXT NOT NULL REFERENCES memory_transcripts(id) ON DELETE CASCADE,
            span_start INTEGER, span_end INTEGER,
            PRIMARY KEY (memory_id, transcript_id))"""]),
    (34, ["ALTER TABLE memories ADD COLUMN source_uri TEXT",
          "ALTER TABLE memories ADD COLUMN source_span TEXT"]),
    (35, ["ALTER TABLE memories ADD COLUMN confidence_source TEXT NOT NULL "
          "DEFAULT 'caller_provided'",
          "ALTER TABLE memories ADD COLUMN confidence_signals TEXT",
          "ALTER TABLE memories ADD COLUMN confidence_decayed_at TEXT"]),
    (36, ["""CREATE TABLE skills (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, namespace TEXT NOT NULL DEFAULT 'global',
            description TEXT, body TEXT NOT NULL DEFAULT '', version INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            UNIQUE (name, namespace))""",
          """CREATE TABLE skill_resources (
            skill_id TEXT NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
            path TEXT NOT NULL, content BLOB, PRIMARY KEY (skill_id, path))"""]),
    (37, ["""CREATE TABLE offloaded_blobs (
            hash TEXT PRIMARY KEY, size_bytes INTEGER NOT NULL, location TEXT NOT NULL,
            created_at TEXT NOT NULL)"""]),
    (38, ["""CREATE TABLE confidence_shadow_observations (
            id INTEGER PRIMARY KEY AUTOINCREMENT, memory_id TEXT NOT NULL,
            caller_confidence REAL, computed_confidence REAL, observed_at TEXT NOT NULL)"""]),
    (39, ["""CREATE TABLE recall_observations (
            id INTEGER PRIMARY KEY AUTOINCREMENT, query_hash TEXT NOT NULL,
            memory_id TEXT, rank INTEGER, score REAL, observed_at TEXT NOT NULL)"""]),
    (40, ["""CREATE TABLE federation_push_dlq (
            id INTEGER PRIMARY KEY AUTOINCREMENT, peer_id TEXT NOT NULL, payload BLOB,
            error TEXT, attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL)"""]),
    (41, ["""CREATE TABLE federation_nonce_cache (
            peer_id TEXT NOT NULL, nonce TEXT NOT NULL, seen_at TEXT NOT NULL,
            PRIMARY KEY (peer_id, nonce))"""]),
    (42, ["""CREATE TABLE transcript_line_dedup (
            transcript_id TEXT NOT NULL, line_hash TEXT NOT NULL, first_seen_at TEXT NOT NULL,
            PRIMARY KEY (transcript_id, line_hash))"""]),
    (44, ["ALTER TABLE memories ADD COLUMN encrypted_envelope BLOB"]),
    (45, ["ALTER TABLE memories ADD COLUMN version BIGINT NOT NULL DEFAULT 1"]),
    # v47: memory_links rebuilt (the v0.7 temporal-validity CHECK); rows are copied verbatim
    (47, ["""CREATE TABLE memory_links_v47 (
            source_id   TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            target_id   TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            relation    TEXT NOT NULL DEFAULT 'related_to' CHECK (relation <> ''),
            created_at  TEXT NOT NULL,
            valid_from  TEXT,
            valid_until TEXT,
            observed_by TEXT,
            signature   BLOB,
            PRIMARY KEY (source_id, target_id, relation))""",
          "INSERT INTO memory_links_v47 SELECT source_id, target_id, relation, created_at, "
          "valid_from, valid_until, observed_by, signature FROM memory_links",
          "DROP TABLE memory_links",
          "ALTER TABLE memory_links_v47 RENAME TO memory_links",
          "CREATE INDEX IF NOT EXISTS idx_links_target ON memory_links(target_id)"]),
    (54, ["BACKFILL_EXPIRES_1466"]),
]

R1M2_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS memories_ck_tier_ins BEFORE INSERT ON memories
       WHEN NEW.tier NOT IN ('short', 'mid', 'long')
       BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: memories.tier'); END""",
    """CREATE TRIGGER IF NOT EXISTS memories_ck_tier_upd BEFORE UPDATE OF tier ON memories
       WHEN NEW.tier NOT IN ('short', 'mid', 'long')
       BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: memories.tier'); END""",
    """CREATE TRIGGER IF NOT EXISTS memories_ck_priority_ins BEFORE INSERT ON memories
       WHEN NEW.priority < 1 OR NEW.priority > 10
       BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: memories.priority'); END""",
]


# ----------------------------------------------------------------------------- helpers
def parse_rfc3339(text):
    if not isinstance(text, str) or not text:
        return None
    t = text.strip()
    if t.endswith("Z") or t.endswith("z"):
        t = t[:-1] + "+00:00"
    # fromisoformat (3.8+) accepts at most 6 fractional digits
    if "." in t:
        head, _, frac = t.partition(".")
        digits = ""
        rest = ""
        for idx, ch in enumerate(frac):
            if ch.isdigit():
                digits += ch
            else:
                rest = frac[idx:]
                break
        t = head + "." + (digits[:6].ljust(6, "0")) + rest
    try:
        dt = datetime.datetime.fromisoformat(t)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def rfc3339(dt):
    """chrono::DateTime<Utc>::to_rfc3339(): +00:00 offset, fraction only when non-zero."""
    return dt.astimezone(datetime.timezone.utc).isoformat()


def now_rfc3339():
    return rfc3339(datetime.datetime.now(datetime.timezone.utc))


def schema_version(conn):
    try:
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)


def _backfill_1466(conn):
    rows = conn.execute(
        "SELECT id, tier, created_at FROM memories "
        "WHERE expires_at IS NULL AND tier IN ('short', 'mid')").fetchall()
    updates = []
    for mid, tier, created in rows:
        dt = parse_rfc3339(created)
        if dt is None:
            continue
        updates.append((rfc3339(dt + (SHORT_TTL if tier == "short" else MID_TTL)), mid))
    conn.executemany("UPDATE memories SET expires_at = ? WHERE id = ? AND expires_at IS NULL",
                     updates)


def migrate(conn, target):
    """Return (from_version, to_version).  Raises sqlite3.Error after a full ROLLBACK."""
    current = schema_version(conn)
    if current >= target:
        return current, current
    conn.execute("BEGIN EXCLUSIVE")
    try:
        for version, stmts in LADDER:
            if current < version <= target:
                for sql in stmts:
                    if sql == "BACKFILL_EXPIRES_1466":
                        _backfill_1466(conn)
                    else:
                        conn.execute(sql)
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise
    return current, target


def _install_r1m2(conn):
    have = conn.execute("SELECT 1 FROM sqlite_master WHERE type='trigger' AND "
                        "name='memories_ck_tier_ins'").fetchone()
    if have:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in R1M2_TRIGGERS:
            conn.execute(sql)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def connect(path):
    """Configured connection (no schema work).  Autocommit mode; explicit transactions."""
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def open_db(path, build):
    """db::open(): creates a missing file, WAL, SCHEMA batch, migrate, (v0.7) R1-M2 triggers."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise DbError("unable to open database file: directory %s does not exist" % d)
    try:
        conn = connect(path)
    except sqlite3.Error as e:
        raise DbError(str(e))
    try:
        conn.executescript(SCHEMA_V20)
        migrate(conn, build.schema_target)
        if build.is_v07:
            _install_r1m2(conn)
    except sqlite3.Error as e:
        conn.close()
        raise DbError(str(e))
    return conn


def create_v20(path):
    """A fresh, empty v0.6.4 DB (schema_version = 20); used by gen_db and tests."""
    conn = connect(path)
    conn.executescript(SCHEMA_V20)
    if schema_version(conn) < V20:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (V20,))
        conn.execute("COMMIT")
    return conn


def table_names(conn):
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]


def columns(conn, table):
    return [r[1] for r in conn.execute("PRAGMA table_xinfo(%s)" % table)]
