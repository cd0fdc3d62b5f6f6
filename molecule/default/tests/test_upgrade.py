"""Molecule verify (testinfra, ansible backend over molecule's inventory): the real outcome of
aimem.fleet.upgrade on every host of the test fleet, read from the hosts themselves.

Run by ``molecule verify`` / ``molecule test`` (cwd molecule/default); not collected by ``make test``.
"""
import hashlib
import json
import os
import re
import shlex
import tomllib

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("fleet")

HOME = "/var/lib/ai-memory"
BINARY = "/usr/local/bin/ai-memory"
CONFIG = HOME + "/.config/ai-memory/config.toml"
KEY_DIR = HOME + "/.config/ai-memory/keys"
DB = HOME + "/ai-memory.db"
ENV_FILE = "/etc/ai-memory/env"
WORK_DIR = HOME + "/.aimem-fleet"
PIDFILE = "/run/ai-memory.pid"
USER = "aimem"
TARGET = "0.7.0"
TARGET_SCHEMA = 54
SOURCE_SCHEMA = 20
SEED_ROWS = 200          # prepare.yml: seed_rows
LEGACY_KEYS = ("llm_model", "ollama_url", "embed_url", "embedding_model", "cross_encoder",
               "default_namespace", "archive_on_gc", "archive_max_days", "max_memory_mb", "auto_tag_model")
STAGED = {
    "AI_MEMORY_FED_REQUIRE_SIG": "0",
    "AI_MEMORY_FED_REQUIRE_NONCE": "0",
    "AI_MEMORY_PERMISSIONS_MODE": "advisory",
    "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR": "1",
    "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL": "1",
}


def _name(host):
    return host.backend.get_hostname()


def _run(host, cmd):
    r = host.run(cmd)
    assert r.rc == 0, "%s: `%s` failed rc=%d: %s %s" % (_name(host), cmd, r.rc, r.stdout, r.stderr)
    return r.stdout


def _sql(host, db, query, json_mode=False):
    argv = ["sqlite3", "-readonly"] + (["-json"] if json_mode else []) + [db, query]
    return _run(host, " ".join(shlex.quote(a) for a in argv))


def _content_digest(host, db):
    """aimem_schema's content_digest (plugins/module_utils/sqlite_schema.py), computed here from the
    rows read on the host: sha256 over compact JSON [id, content, metadata] + newline per memory,
    ordered by id. Returns (hexdigest, rows, the rows themselves)."""
    out = _sql(host, db, "SELECT id, content, metadata FROM memories ORDER BY id", json_mode=True)
    rows = json.loads(out) if out.strip() else []
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["id"], r["content"], r["metadata"]], ensure_ascii=False,
                            separators=(",", ":")).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest(), len(rows), rows


def _snapshots(host):
    out = _run(host, "ls -1 %s.pre-migration-v%d-to-v%d-*.bak 2>/dev/null || true" % (DB, SOURCE_SCHEMA, TARGET_SCHEMA))
    return [line for line in out.splitlines() if line.strip()]


def test_binary_is_070(host):
    out = _run(host, BINARY + " --version")
    assert out.split() == ["ai-memory", TARGET], "%s: %s --version printed %r" % (_name(host), BINARY, out)
    f = host.file(BINARY)
    assert f.user == "root" and f.mode == 0o755


def test_config_is_v2(host):
    f = host.file(CONFIG)
    assert f.exists and f.user == USER, "%s: %s missing or not owned by %s" % (_name(host), CONFIG, USER)
    assert f.mode & 0o077 == 0, "%s: %s mode %o is readable by others" % (_name(host), CONFIG, f.mode)
    doc = tomllib.loads(f.content_string)
    assert type(doc.get("schema_version")) is int and doc["schema_version"] == 2, doc
    present = [k for k in LEGACY_KEYS if k in doc]
    assert not present, "%s: legacy top-level keys left in %s: %s" % (_name(host), CONFIG, present)
    # the v1 values of the seed (tests/playbooks/templates/config-v1.toml.j2), moved to the v2 sections
    assert doc["llm"]["backend"] == "ollama"
    assert doc["llm"]["model"] == "gemma3:4b"
    assert doc["llm"]["base_url"] == "http://127.0.0.1:11434"
    assert doc["llm"]["auto_tag"] == {"model": "gemma3:1b"}
    # aimem_config_migrate keeps v0.6.4's embeddings fallback to ollama_url (documented improvement
    # over upstream, which would leave embeddings on http://localhost:11434)
    assert doc["embeddings"] == {"backend": "ollama", "model": "nomic-embed-text", "url": "http://127.0.0.1:11434"}
    assert doc["reranker"] == {"enabled": True, "model": "ms-marco-MiniLM-L-6-v2"}
    assert doc["storage"] == {"default_namespace": _name(host), "archive_on_gc": True,
                              "archive_max_days": 90, "max_memory_mb": 512}
    # kept unchanged
    assert doc["db"] == DB and doc["tier"] == "semantic" and doc["ttl"]["short_hours"] == 6
    # the v1 file was backed up next to it before the rewrite
    backups = _run(host, "ls -1 %s.bak.* 2>/dev/null || true" % CONFIG).split()
    assert backups, "%s: no backup %s.bak.* of the v1 config" % (_name(host), CONFIG)
    assert any("ollama_url" in host.file(b).content_string for b in backups)


def test_env_file_staged_posture(host):
    f = host.file(ENV_FILE)
    assert f.exists, "%s: %s missing" % (_name(host), ENV_FILE)
    assert f.user == "root", "%s: %s owned by %s" % (_name(host), ENV_FILE, f.user)
    assert f.mode == 0o640, "%s: %s mode %o, expected 0640" % (_name(host), ENV_FILE, f.mode)
    assert f.mode & 0o007 == 0
    values = {}
    for line in f.content_string.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, sep, v = line.partition("=")
            assert sep, "%s: %s line %r is not KEY=VALUE" % (_name(host), ENV_FILE, line)
            assert k not in values, "%s: %s sets %s twice" % (_name(host), ENV_FILE, k)
            values[k] = v
    for k, v in STAGED.items():
        assert values.get(k) == v, "%s: %s has %s=%r, expected %r" % (_name(host), ENV_FILE, k, values.get(k), v)
    assert values.get("AI_MEMORY_DB") == DB, "the seed's AI_MEMORY_DB line was not kept"


def test_db_migrated_to_54(host):
    f = host.file(DB)
    assert f.user == USER and f.mode == 0o600
    assert _sql(host, DB, "SELECT COALESCE(MAX(version), 0) FROM schema_version").strip() == str(TARGET_SCHEMA)


def test_memories_equal_the_snapshot(host):
    snaps = _snapshots(host)
    assert len(snaps) == 1, "%s: expected exactly one pre-migration snapshot, found %s" % (_name(host), snaps)
    snap = snaps[0]
    assert _sql(host, snap, "SELECT COALESCE(MAX(version), 0) FROM schema_version").strip() == str(SOURCE_SCHEMA)
    assert host.file(snap).mode & 0o077 == 0, "%s: snapshot %s is readable by others" % (_name(host), snap)
    live_digest, live_n, live_rows = _content_digest(host, DB)
    snap_digest, snap_n, snap_rows = _content_digest(host, snap)
    assert live_n == snap_n == SEED_ROWS, (live_n, snap_n)
    assert live_rows == snap_rows
    assert live_digest == snap_digest
    # the drain role recorded the same snapshot and digest (host state contract)
    drain = json.loads(host.file(WORK_DIR + "/drain.json").content_string)
    assert drain["snapshot"] == snap and drain["db"] == DB
    assert drain["content_digest"] == snap_digest
    assert drain["schema_before"] == SOURCE_SCHEMA
    assert _run(host, "sha256sum " + shlex.quote(snap)).split()[0] == drain["sha256"]


def _keys(host):
    agent = "ai:daemon@" + _name(host)
    return agent, KEY_DIR + "/" + agent + ".priv", KEY_DIR + "/" + agent + ".pub"


def test_identity_keys(host):
    agent, priv, pub = _keys(host)
    p = host.file(priv)
    assert p.exists and p.user == USER and p.mode == 0o600, "%s: %s (%s)" % (_name(host), priv, agent)
    q = host.file(pub)
    assert q.exists and q.user == USER and q.mode == 0o644, "%s: %s" % (_name(host), pub)
    assert p.size == 32 and q.size == 32
    # every peer's public key is enrolled here, byte for byte
    peers = 0
    for peer_name in testinfra_hosts:
        peer = testinfra.get_host("ansible://" + peer_name, ansible_inventory=INVENTORY)
        if _name(peer) == _name(host):
            continue
        _agent, _priv, peer_pub = _keys(peer)
        theirs = _run(peer, "sha256sum " + shlex.quote(peer_pub)).split()[0]
        enrolled = host.file(KEY_DIR + "/" + os.path.basename(peer_pub))
        assert enrolled.exists, "%s: peer key %s of %s missing" % (_name(host), peer_pub, _name(peer))
        assert _run(host, "sha256sum " + shlex.quote(enrolled.path)).split()[0] == theirs
        peers += 1
    assert peers == len(testinfra_hosts) - 1 >= 1


def test_daemon_runs_070(host):
    pid = host.file(PIDFILE).content_string.strip()
    assert re.match(r"^[0-9]+$", pid), "%s: %s holds %r" % (_name(host), PIDFILE, pid)
    proc = host.file("/proc/%s/status" % pid)
    assert proc.exists, "%s: daemon pid %s from %s is not running" % (_name(host), pid, PIDFILE)
    uid = re.search(r"^Uid:\s+(\d+)", proc.content_string, re.M).group(1)
    assert int(uid) == host.user(USER).uid
    # the daemon runs the installed 0.7.0 binary with the staged posture in its environment
    cmdline = host.file("/proc/%s/cmdline" % pid).content_string.split("\0")
    assert BINARY in cmdline and "serve" in cmdline, "%s: daemon runs %s" % (_name(host), cmdline)
    environ = dict(e.partition("=")[::2] for e in host.file("/proc/%s/environ" % pid).content_string.split("\0") if "=" in e)
    for k, v in STAGED.items():
        assert environ.get(k) == v, "%s: daemon env %s=%r" % (_name(host), k, environ.get(k))
    out = _run(host, "python3 -c " + shlex.quote(
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9077/api/v1/health', timeout=5).read().decode())"))
    health = json.loads(out)
    assert health["version"] == TARGET, health


@pytest.mark.parametrize("name", ["install", "config", "security"])
def test_host_state_records(host, name):
    """The upgrade roles recorded what they changed (root-only 0600 files, the rollback contract)."""
    f = host.file("%s/%s.json" % (WORK_DIR, name))
    assert f.exists, "%s: %s/%s.json missing" % (_name(host), WORK_DIR, name)
    assert f.mode == 0o600 and f.user == "root"
    rec = json.loads(f.content_string)
    if name == "install":
        assert rec["version"] == TARGET and rec["binary"] == BINARY
        assert rec["previous_version"] == "0.6.4"
        assert _run(host, "sha256sum " + BINARY).split()[0] == rec["binary_sha256"]
        assert _run(host, shlex.quote(rec["previous_binary"]) + " --version").split() == ["ai-memory", "0.6.4"]
    elif name == "config":
        assert rec["config"] == CONFIG and rec.get("backup_file")
    else:
        assert rec["posture"] == "staged" and rec["env_file"] == ENV_FILE
