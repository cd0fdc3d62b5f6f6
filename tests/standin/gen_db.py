#!/usr/bin/env python3
"""Generate a realistic ai-memory v0.6.4 (schema 20) SQLite DB (facts §2.6).

    python tests/standin/gen_db.py PATH --rows 5000 [--size-mb 64] [--seed 0]
                                  [--archived N] [--links N] [--namespaces N]
                                  [--pending N] [--sync-peers N]

Importable: ``generate(path, rows, size_mb=None, seed=0, ...) -> dict`` (summary counts).

The schema is the exact v20 DDL used by the stand-in (``aimem_standin.db.SCHEMA_V20``):
generated columns ``scope_idx``/``agent_id_idx``, UNIQUE ``idx_memories_title_ns``, the FTS5 content table with
the ``memories_ai``/``memories_ad``/``memories_au`` triggers, ``memory_links`` with FK cascade,
``archived_memories``, ``namespace_meta``, ``pending_actions``, ``sync_state``, ``subscriptions``,
``entity_aliases``, ``audit_log`` and ``schema_version`` = 20 (single row; ``user_version`` 0).
The result is in WAL mode, fully checkpointed (no ``-wal`` content left behind).

Tier mix: ~20 % short, ~40 % mid, ~40 % long.  ``long`` rows never expire (NULL); about half of
the short/mid rows have ``expires_at`` NULL (the rows the v54 #1466 backfill will touch), the rest
carry ``created_at`` + TTL.  ``size_mb`` pads the ``content`` column (adaptively, so the final file
lands within a few percent of the target).  Deterministic for a given ``seed`` except for the
time base (``now``), which can be pinned with ``now=``.
"""
import argparse
import datetime
import json
import os
import random
import sqlite3
import struct
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from aimem_standin import db as dbm  # noqa: E402

MiB = 1024 * 1024
NAMESPACES = ["global", "proj-alpha", "proj-beta", "ops", "research", "infra", "personal",
              "team-sync", "archive-2025", "scratch"]
RELATIONS = ["related_to", "supersedes", "derived_from", "contradicts", "part_of"]
SOURCES = ["api", "mcp", "cli", "import", "consolidation"]
AGENTS = ["claude-code", "cursor", "host:build01:pid-4242-1a2b3c4d", "ops-bot", None]
EMBED_DIM = 384


def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ts(dt):
    return dbm.rfc3339(dt)


def _vocab(rng, n=3000):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def generate(path, rows, size_mb=None, seed=0, archived=None, links=None, namespaces=5,
             pending=2, sync_peers=0, embeddings=True, now=None):
    """Create ``path`` (must not exist) and return a summary dict."""
    if os.path.exists(path):
        raise FileExistsError("%s already exists; refusing to overwrite" % path)
    if rows < 1:
        raise ValueError("rows must be >= 1")
    t0 = time.monotonic()
    rng = random.Random(seed)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if isinstance(namespaces, int):
        nss = NAMESPACES[:max(1, min(namespaces, len(NAMESPACES)))]
    else:
        nss = list(namespaces)
    archived = rows // 20 if archived is None else archived
    links = rows // 4 if links is None else links
    vocab = _vocab(rng)
    corpus = " ".join(rng.choice(vocab) for _ in range(200000))

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = MEMORY")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(dbm.SCHEMA_V20)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]

    def db_bytes():
        return conn.execute("PRAGMA page_count").fetchone()[0] * page_size

    target = int(size_mb * MiB) if size_mb else None
    base_len = 160
    pad_len = 0
    if target:
        # conservative first guess (content + FTS + indexes ~ 3x); refined after every batch
        pad_len = max(0, int(target / rows / 3.0) - base_len)

    ids = []
    tier_counts = {"short": 0, "mid": 0, "long": 0}
    null_expiry = {"short": 0, "mid": 0}

    def make_row(i):
        tier = rng.choices(("short", "mid", "long"), weights=(2, 4, 4))[0]
        ns = nss[i % len(nss)] if i < len(nss) else rng.choice(nss)
        created = now - datetime.timedelta(seconds=rng.randint(3600, 120 * 86400),
                                           microseconds=rng.randint(0, 999999))
        updated = created + datetime.timedelta(seconds=rng.randint(0, 86400))
        if updated > now:
            updated = now
        accessed = None if rng.random() < 0.3 else _ts(updated)
        if tier == "long":
            expires = None
        elif rng.random() < 0.5:
            expires = None
            null_expiry[tier] += 1
        else:
            ttl = dbm.SHORT_TTL if tier == "short" else dbm.MID_TTL
            expires = _ts(created + ttl)
        tier_counts[tier] += 1
        mid = _uuid(rng)
        ids.append(mid)
        words = [rng.choice(vocab) for _ in range(4)]
        title = "%s %s %s #%d" % (words[0].capitalize(), words[1], words[2], i)
        off = rng.randrange(0, len(corpus) - base_len - pad_len - 1)
        content = corpus[off:off + base_len + pad_len]
        tags = json.dumps(sorted(set(rng.sample(vocab[:40], rng.randint(0, 4)))))
        meta = {}
        agent = rng.choice(AGENTS)
        if agent:
            meta["agent_id"] = agent
        if rng.random() < 0.4:
            meta["scope"] = rng.choice(["private", "team", "unit", "org", "collective"])
        emb = dim = None
        if embeddings and rng.random() < 0.6:
            dim = EMBED_DIM
            # f32 little-endian vector; a few random leading components keep rows distinct
            emb = struct.pack("<8f", *[rng.uniform(-1, 1) for _ in range(8)]) + \
                b"\x00" * (dim * 4 - 32)
        return (mid, tier, ns, title, content, tags, rng.randint(1, 10),
                round(rng.uniform(0.5, 1.0), 3), rng.choice(SOURCES), rng.randint(0, 50),
                _ts(created), _ts(updated), accessed, expires,
                json.dumps(meta, sort_keys=True), emb, dim)

    ins = ("INSERT INTO memories (id, tier, namespace, title, content, tags, priority, "
           "confidence, source, access_count, created_at, updated_at, last_accessed_at, "
           "expires_at, metadata, embedding, embedding_dim) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    standard_ns = [n for n in nss if n != "global"][:1] if rows >= 2 else []
    regular = rows - len(standard_ns)
    conn.execute("BEGIN")
    done = 0
    batch = max(1, min(5000, regular // 10)) if target else 5000
    content_total = 0
    start_bytes = db_bytes()
    while done < regular:
        n = min(batch, regular - done)
        rows_batch = [make_row(done + k) for k in range(n)]
        content_total += sum(len(r[4]) for r in rows_batch)
        conn.executemany(ins, rows_batch)
        done += n
        if not target or done >= regular:
            continue
        # commit per batch: FTS5 only flushes its pending index at commit, so the page count
        # is a usable size measure only then (journal_mode=MEMORY + synchronous=OFF: cheap)
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        now_bytes = db_bytes()
        ratio = (now_bytes - start_bytes) / float(max(1, content_total))  # all-in bytes/char
        want_content = (target - now_bytes) / ratio
        pad_len = max(0, min(int(want_content / (regular - done)) - base_len,
                             len(corpus) - base_len - 2))

    # links
    link_rows = set()
    while len(link_rows) < min(links, len(ids) * (len(ids) - 1)):
        a, b = rng.sample(ids, 2) if len(ids) > 1 else (ids[0], ids[0])
        if a == b:
            break
        link_rows.add((a, b, rng.choice(RELATIONS)))
    conn.executemany(
        "INSERT INTO memory_links (source_id, target_id, relation, created_at, valid_from, "
        "observed_by) VALUES (?,?,?,?,?,?)",
        [(a, b, r, _ts(now - datetime.timedelta(days=rng.randint(0, 60))),
          None if rng.random() < 0.7 else _ts(now - datetime.timedelta(days=90)),
          rng.choice(AGENTS)) for a, b, r in sorted(link_rows)])

    # archived memories (already GC'd rows)
    arch = []
    for i in range(archived):
        tier = rng.choice(("short", "mid"))
        created = now - datetime.timedelta(days=rng.randint(10, 200))
        exp = created + (dbm.SHORT_TTL if tier == "short" else dbm.MID_TTL)
        arch.append((_uuid(rng), tier, rng.choice(nss), "archived note %d" % i,
                     corpus[i % 1000:(i % 1000) + 120], "[]", 5, 1.0, "api", 0, _ts(created),
                     _ts(created), None, _ts(exp), "{}", _ts(exp + datetime.timedelta(hours=1)),
                     "ttl_expired", None, None, tier, _ts(exp)))
    conn.executemany("INSERT INTO archived_memories VALUES (%s)" % ",".join("?" * 21), arch)

    # namespace metadata: the first non-global namespace gets a standard memory + policy
    for ns in nss:
        parent = None if ns == "global" else ("global" if rng.random() < 0.5 else None)
        std = None
        if ns in standard_ns:
            std = _uuid(rng)
            gov = {"governance": {"write": "any", "promote": "approve", "delete": "owner",
                                  "approver": "human"}, "agent_id": "ops-bot"}
            conn.execute(ins, (std, "long", ns, "namespace standard: %s" % ns,
                               "Policies for %s" % ns, '["standard"]', 9, 1.0, "api", 0,
                               _ts(now), _ts(now), None, None, json.dumps(gov), None, None))
            tier_counts["long"] += 1
        conn.execute("INSERT INTO namespace_meta VALUES (?,?,?,?)", (ns, std, _ts(now), parent))

    for i in range(pending):
        conn.execute(
            "INSERT INTO pending_actions (id, action_type, memory_id, namespace, payload, "
            "requested_by, requested_at) VALUES (?,?,?,?,?,?,?)",
            (_uuid(rng), rng.choice(["delete", "promote"]), rng.choice(ids), rng.choice(nss),
             "{}", "claude-code", _ts(now - datetime.timedelta(minutes=5 + i))))
    for i in range(sync_peers):
        conn.execute("INSERT INTO sync_state VALUES (?,?,?,?,?)",
                     ("ops-bot", "peer-%d" % i, _ts(now), _ts(now), _ts(now)))
    conn.execute(
        "INSERT INTO subscriptions (id, url, events, secret_hash, namespace_filter, created_by, "
        "created_at, dispatch_count, failure_count, event_types) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (_uuid(rng), "http://127.0.0.1:9/hook", "*", "sha256:" + "ab" * 32, None, "ops-bot",
         _ts(now - datetime.timedelta(days=30)), 200, 2, '["memory.created"]'))
    conn.executemany("INSERT INTO entity_aliases VALUES (?,?,?)",
                     [("ent-%d" % i, "alias-%s" % rng.choice(vocab), _ts(now))
                      for i in range(5)])
    conn.executemany(
        "INSERT INTO audit_log (agent_id, event_type, requested_family, granted, "
        "attestation_tier, timestamp) VALUES (?,?,?,?,?,?)",
        [(rng.choice(AGENTS[:-1]), "capability_request", "memory.write", 1, "self_signed",
          _ts(now - datetime.timedelta(hours=i))) for i in range(10)])
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version (version) VALUES (20)")
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
    conn.close()
    return {"path": path, "memories": total, "tiers": tier_counts,
            "null_expiry": dict(null_expiry), "links": len(link_rows), "archived": archived,
            "namespaces": nss, "bytes": os.path.getsize(path),
            "seconds": round(time.monotonic() - t0, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Generate a realistic ai-memory v0.6.4 (v20) DB")
    ap.add_argument("path")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--size-mb", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--archived", type=int, default=None)
    ap.add_argument("--links", type=int, default=None)
    ap.add_argument("--namespaces", type=int, default=5)
    ap.add_argument("--pending", type=int, default=2)
    ap.add_argument("--sync-peers", type=int, default=0)
    ap.add_argument("--no-embeddings", action="store_true")
    a = ap.parse_args(argv)
    try:
        res = generate(a.path, a.rows, a.size_mb, a.seed, a.archived, a.links, a.namespaces,
                       a.pending, a.sync_peers, not a.no_embeddings)
    except (FileExistsError, ValueError) as e:
        print("gen_db: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
