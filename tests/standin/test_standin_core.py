"""Tests of the stand-in core (packed binaries run as subprocesses with HOME=tmp)."""
import datetime
import hashlib
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import gen_db  # noqa: E402
from standin_build import clean_env  # noqa: E402
from fake_llm import fake_llm, fake_llm_handle  # noqa: E402

ALL_BUILDS = ("0.6.4", "0.7.0", "0.7.0-tag", "0.7.0-sal")
SECTIONS_064 = ["Storage", "Index", "Recall", "Governance", "Sync", "Webhook", "Capabilities"]
SECTIONS_TAG = SECTIONS_064 + ["Reflection Health"]
SECTIONS_070 = SECTIONS_TAG + ["LLM Reachability (#1146)"]
OLD_COLUMNS = ["id", "tier", "namespace", "title", "content", "tags", "priority", "confidence",
               "source", "access_count", "created_at", "updated_at", "last_accessed_at",
               "expires_at", "metadata", "embedding", "scope_idx", "agent_id_idx",
               "embedding_dim"]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ----------------------------------------------------------------------------- helpers
def cfg_path(home):
    return os.path.join(str(home), ".config", "ai-memory", "config.toml")


def write_cfg(home, text):
    p = cfg_path(home)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as fh:
        fh.write(text)
    return p


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sqlq(path, sql, args=()):
    c = sqlite3.connect(path)
    try:
        rows = c.execute(sql, args).fetchall()
        c.commit()
        return rows
    finally:
        c.close()


def memories_snapshot(path):
    c = sqlite3.connect(path)
    try:
        rows = c.execute("SELECT %s FROM memories ORDER BY id" % ", ".join(OLD_COLUMNS)).fetchall()
    finally:
        c.close()
    return [dict(zip(OLD_COLUMNS, r)) for r in rows]


def doctor_json(run, build, *args, **kw):
    r = run(build, "doctor", "--json", *args, **kw)
    return r, json.loads(r.stdout)


def make_v20(tmp_path, rows=300, name="mem.db", **kw):
    p = str(tmp_path / name)
    gen_db.generate(p, rows, seed=7, **kw)
    return p


# ----------------------------------------------------------------------------- preamble / CLI
@pytest.mark.parametrize("build,ver", [("0.6.4", "0.6.4"), ("0.7.0", "0.7.0"),
                                       ("0.7.0-tag", "0.7.0"), ("0.7.0-sal", "0.7.0")])
def test_version_flags(run_standin, build, ver):
    for flag in ("--version", "-V"):
        r = run_standin(build, flag)
        assert r.returncode == 0
        assert r.stdout == "ai-memory %s\n" % ver


def test_template_written_on_first_call_then_loaded(run_standin, tmp_path):
    home = tmp_path / "h1"
    home.mkdir()
    r = run_standin("0.6.4", "--version", home=home)
    assert r.returncode == 0
    p = cfg_path(home)
    text = open(p).read()
    assert text.strip(), "template must not be empty"
    assert all(not l.strip() or l.lstrip().startswith("#") for l in text.splitlines())
    assert "loaded config" not in r.stderr  # step 1 ran before the template existed
    r2 = run_standin("0.6.4", "--version", home=home)
    assert r2.stderr.splitlines()[0] == "ai-memory: loaded config from %s" % p
    assert r2.stdout == "ai-memory 0.6.4\n"
    # AI_MEMORY_NO_CONFIG: template still written, nothing loaded
    home2 = tmp_path / "h2"
    home2.mkdir()
    r3 = run_standin("0.7.0", "--version", home=home2, env={"AI_MEMORY_NO_CONFIG": "1"})
    assert os.path.isfile(cfg_path(home2)) and r3.stderr == ""
    r4 = run_standin("0.7.0", "--version", home=home2, env={"AI_MEMORY_NO_CONFIG": "1"})
    assert "loaded config" not in r4.stderr


def test_config_parse_error_falls_back_to_defaults(run_standin, tmp_path):
    home = tmp_path / "home"
    p = write_cfg(home, 'db = "%s"\nthis is not toml\n' % (tmp_path / "cfg.db"))
    r, rep = doctor_json(run_standin, "0.6.4")
    assert r.stderr.startswith("ai-memory: config parse error (%s): " % p)
    assert rep["source"] == "ai-memory.db"  # config db ignored -> CWD default
    assert r.returncode == 0


@pytest.mark.parametrize("llm_block,needle", [
    ('[llm]\nbackend = "ollama"\napi_key = "sk-live-123"\n', "inline `api_key"),
    ('[llm]\napi_key_env = "K"\napi_key_file = "/k"\n', "mutually exclusive"),
    ('[llm.auto_tag]\napi_key_env = "K"\napi_key_file = "/k"\n', "[llm.auto_tag]"),
])
def test_v070_load_time_rejections(run_standin, tmp_path, llm_block, needle):
    home = tmp_path / "home"
    dbp = tmp_path / "cfg.db"
    p = write_cfg(home, 'db = "%s"\napi_key = "top-level-is-fine"\n%s' % (dbp, llm_block))
    r, rep = doctor_json(run_standin, "0.7.0")
    lines = r.stderr.splitlines()
    assert lines[0].startswith("ai-memory: config rejected (%s): " % p) and needle in lines[0]
    assert lines[1].startswith("ai-memory: falling back to default config — fix the issue")
    assert "sk-live-123" not in r.stderr
    assert rep["source"] == "ai-memory.db"  # defaults: config db dropped
    # the tag build and 0.6.4 have no such validation: same file loads, config db is used
    for build in ("0.6.4", "0.7.0-tag"):
        r2, rep2 = doctor_json(run_standin, build)
        assert r2.stderr.splitlines()[0] == "ai-memory: loaded config from %s" % p
        assert rep2["source"] == str(dbp)


def test_permissions_mode_wrong_case_is_parse_error_on_v070_only(run_standin, tmp_path):
    home = tmp_path / "home"
    p = write_cfg(home, '[permissions]\nmode = "Enforce"\n')
    r = run_standin("0.7.0", "--version")
    assert r.stderr.startswith("ai-memory: config parse error (%s): " % p)
    assert "unknown variant `Enforce`" in r.stderr
    r = run_standin("0.6.4", "--version")
    assert r.stderr == "ai-memory: loaded config from %s\n" % p


@pytest.mark.parametrize("build,sub", [
    ("0.6.4", s) for s in ("config", "identity", "governance", "verify-signed-events-chain",
                           "schema-init", "namespace")
] + [("0.7.0-tag", "config"), ("0.7.0", "schema-init"), ("0.7.0-tag", "schema-init"),
     ("0.7.0", "start"), ("0.7.0", "daemon")])
def test_unknown_subcommand_exit_2(run_standin, build, sub):
    r = run_standin(build, sub, "--help")
    assert r.returncode == 2
    assert r.stdout == ""
    err = [l for l in r.stderr.splitlines() if not l.startswith("ai-memory: ")]
    assert err[0] == "error: unrecognized subcommand '%s'" % sub
    assert "Usage: ai-memory [OPTIONS] <COMMAND>" in r.stderr


@pytest.mark.parametrize("build,sub", [("0.7.0", "config"), ("0.7.0-sal", "config"),
                                       ("0.7.0-sal", "schema-init"), ("0.6.4", "doctor"),
                                       ("0.7.0-tag", "identity"), ("0.6.4", "sync-daemon")])
def test_known_subcommand_help_exit_0(run_standin, build, sub):
    r = run_standin(build, sub, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: ai-memory %s" % sub)


def test_recognised_but_not_implemented_and_bad_flags(run_standin):
    r = run_standin("0.6.4", "store", "--title", "x")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == "Error: store is not implemented by the stand-in"
    r = run_standin("0.7.0", "--bogus", "stats")
    assert r.returncode == 2
    assert "error: unexpected argument '--bogus' found" in r.stderr
    r = run_standin("0.7.0", "stats", "--bogus")
    assert r.returncode == 2
    assert "error: unexpected argument '--bogus' found" in r.stderr
    r = run_standin("0.7.0", "backup", "--keep")
    assert r.returncode == 2 and "a value is required for '--keep <KEEP>'" in r.stderr
    r = run_standin("0.7.0")
    assert r.returncode == 2


# ----------------------------------------------------------------------------- DB / migration
def test_fresh_db_created_per_build(run_standin, tmp_path):
    for build, target in (("0.6.4", 20), ("0.7.0-tag", 42), ("0.7.0", 54)):
        p = str(tmp_path / ("fresh-%s.db" % build))
        r = run_standin(build, "--db", p, "stats", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["total"] == 0
        assert sqlq(p, "SELECT version FROM schema_version") == [(target,)]
        assert sqlq(p, "PRAGMA user_version") == [(0,)]
        assert sqlq(p, "PRAGMA journal_mode") == [("wal",)]


def test_v20_to_v54_migration_preserves_rows_and_backfills_expiry(run_standin, tmp_path):
    p = make_v20(tmp_path)
    before = memories_snapshot(p)
    links = sqlq(p, "SELECT * FROM memory_links ORDER BY 1, 2, 3")
    archived = sqlq(p, "SELECT * FROM archived_memories ORDER BY id")
    assert sqlq(p, "SELECT version FROM schema_version") == [(20,)]
    r = run_standin("0.7.0", "stats", "--db", p)  # global option after the subcommand
    assert r.returncode == 0, r.stderr
    assert sqlq(p, "SELECT version FROM schema_version") == [(54,)]
    assert sqlq(p, "PRAGMA user_version") == [(0,)]
    after = dict((m["id"], m) for m in memories_snapshot(p))
    assert len(after) == len(before)
    changed = {"short": 0, "mid": 0}
    for old in before:
        new = after[old["id"]]
        for col in OLD_COLUMNS:
            if col != "expires_at":
                assert new[col] == old[col], (old["id"], col)
        if old["expires_at"] is not None or old["tier"] == "long":
            assert new["expires_at"] == old["expires_at"]
        else:
            ttl = datetime.timedelta(hours=6) if old["tier"] == "short" else \
                datetime.timedelta(days=7)
            created = datetime.datetime.fromisoformat(old["created_at"])
            assert datetime.datetime.fromisoformat(new["expires_at"]) == created + ttl
            changed[old["tier"]] += 1
    assert changed["short"] > 0 and changed["mid"] > 0
    assert sqlq(p, "SELECT * FROM memory_links ORDER BY 1, 2, 3") == links
    assert sqlq(p, "SELECT * FROM archived_memories ORDER BY id") == archived
    tables = set(r[0] for r in sqlq(p, "SELECT name FROM sqlite_master WHERE type='table'"))
    for t in ("signed_events", "governance_rules", "memory_transcripts", "skills",
              "federation_nonce_cache", "transcript_line_dedup", "agent_quotas"):
        assert t in tables
    assert sqlq(p, "SELECT id, enabled FROM governance_rules ORDER BY id") == [
        ("R001", 0), ("R002", 0), ("R003", 0), ("R004", 0)]
    cols = [r[1] for r in sqlq(p, "PRAGMA table_info(memories)")]
    for c in ("memory_kind", "citations", "confidence_source", "encrypted_envelope", "version"):
        assert c in cols
    assert sqlq(p, "SELECT name FROM sqlite_master WHERE name='memories_ck_tier_ins'")
    assert sqlq(p, "INSERT INTO memories_fts(memories_fts) VALUES('integrity-check')") == []
    # no backup/snapshot of any kind next to the DB
    assert sorted(n for n in os.listdir(str(tmp_path)) if n.startswith("mem.db")) in (
        ["mem.db"], ["mem.db", "mem.db-shm", "mem.db-wal"])
    assert not [n for n in os.listdir(str(tmp_path)) if "bak" in n or "pre-" in n]


def test_tag_build_stops_at_42_without_backfill(run_standin, tmp_path):
    p = make_v20(tmp_path)
    before = memories_snapshot(p)
    r = run_standin("0.7.0-tag", "--db", p, "stats")
    assert r.returncode == 0, r.stderr
    assert sqlq(p, "SELECT version FROM schema_version") == [(42,)]
    assert memories_snapshot(p) == before  # expires_at untouched too
    cols = [r[1] for r in sqlq(p, "PRAGMA table_info(memories)")]
    assert "citations" in cols and "encrypted_envelope" not in cols
    # the branch build continues 42 -> 54 and only then backfills
    r = run_standin("0.7.0", "--db", p, "stats")
    assert sqlq(p, "SELECT version FROM schema_version") == [(54,)]
    assert sqlq(p, "SELECT COUNT(*) FROM memories WHERE tier IN ('short','mid') AND "
                   "expires_at IS NULL") == [(0,)]


def test_064_opens_v54_db_silently_and_boot_warns(run_standin, tmp_path):
    p = make_v20(tmp_path, rows=50)
    assert run_standin("0.7.0", "--db", p, "stats").returncode == 0
    r = run_standin("0.6.4", "--db", p, "stats", "--json")
    assert r.returncode == 0
    assert "Error" not in r.stderr and "refus" not in r.stderr
    assert json.loads(r.stdout)["total"] == 50
    assert sqlq(p, "SELECT version FROM schema_version") == [(54,)]
    r = run_standin("0.6.4", "--db", p, "boot", "--format", "json")
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 1
    b = json.loads(r.stdout)
    assert list(b)[:14] == ["status", "version", "db_path", "schema_version",
                            "schema_supported", "total_memories", "tier", "embedder",
                            "reranker", "llm", "latency_ms", "namespace", "count", "note"]
    assert b["status"] == "warn" and b["schema_supported"] is False
    assert b["schema_version"] == "v54" and b["total_memories"] == "50"
    assert b["note"] == ("db schema v54 unsupported by binary 0.6.4 (supports v16..v20); "
                         "proceeding with degraded context. Run `ai-memory doctor` and "
                         "consider upgrading.")
    r = run_standin("0.7.0", "--db", p, "boot", "--format", "json")
    b = json.loads(r.stdout)
    assert b["schema_supported"] is True and b["status"] in ("ok", "info")
    assert b["schema_version"] == "v54"


def test_failed_ladder_rolls_back_completely(run_standin, tmp_path):
    p = make_v20(tmp_path, rows=40)
    sqlq(p, "ALTER TABLE memories ADD COLUMN citations TEXT")  # v27 arm will collide
    cols_before = [r[1] for r in sqlq(p, "PRAGMA table_info(memories)")]
    r = run_standin("0.7.0", "--db", p, "stats")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("Error: open db at %s: " % p)
    assert "duplicate column name: citations" in r.stderr
    assert sqlq(p, "SELECT version FROM schema_version") == [(20,)]
    assert [r[1] for r in sqlq(p, "PRAGMA table_info(memories)")] == cols_before
    assert not sqlq(p, "SELECT name FROM sqlite_master WHERE name='signed_events'")


def test_boot_text_and_disabled(run_standin, tmp_path):
    p = make_v20(tmp_path, rows=20, namespaces=1)
    r = run_standin("0.6.4", "--db", p, "boot")
    lines = r.stdout.splitlines()
    assert r.returncode == 0
    assert lines[0] == "# ai-memory boot: ok"
    assert lines[1] == "#   version:    0.6.4"
    assert lines[2] == "#   db:         %s (schema=v20, 20 memories)" % p
    assert lines[3].startswith("#   tier:       ")
    assert lines[4].startswith("#   latency:    ") and lines[4].endswith("ms")
    assert lines[5].startswith("#   namespace:  global")
    assert any(l.startswith("- [") for l in lines[6:])
    r = run_standin("0.7.0", "--db", p, "boot", env={"AI_MEMORY_BOOT_ENABLED": "off"})
    assert r.returncode == 0 and r.stdout == ""
    assert [l for l in r.stderr.splitlines() if not l.startswith("ai-memory: ")] == []
    assert sqlq(p, "SELECT version FROM schema_version") == [(20,)]  # disabled: DB untouched
    write_cfg(tmp_path / "home", "[boot]\nenabled = false\n")
    r = run_standin("0.6.4", "--db", p, "boot")
    assert r.returncode == 0 and r.stdout == ""
    # DB that cannot be opened: still exit 0, status warn
    r = run_standin("0.6.4", "--db", str(tmp_path / "nope" / "x.db"), "boot", "--format",
                    "json", env={"AI_MEMORY_NO_CONFIG": "1"})
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "warn"


# ----------------------------------------------------------------------------- doctor
@pytest.mark.parametrize("build,names", [("0.6.4", SECTIONS_064), ("0.7.0-tag", SECTIONS_TAG),
                                         ("0.7.0", SECTIONS_070), ("0.7.0-sal", SECTIONS_070)])
def test_doctor_json_shape(run_standin, tmp_path, build, names):
    r, rep = doctor_json(run_standin, build)
    assert r.returncode == 0, r.stderr
    assert list(rep) == ["mode", "source", "generated_at", "sections", "overall"]
    assert rep["mode"] == "local" and rep["source"] == "ai-memory.db"
    assert os.path.isfile(str(tmp_path / "ai-memory.db"))  # created in the CWD
    assert rep["generated_at"].endswith("+00:00")
    assert [s["name"] for s in rep["sections"]] == names
    for s in rep["sections"]:
        assert list(s)[:3] == ["name", "severity", "facts"]
        assert set(s) <= {"name", "severity", "facts", "note"}
        assert s["severity"] in ("info", "warning", "critical", "notavailable")
        assert all(isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f)
                   for f in s["facts"])
        if "note" in s:
            assert s["note"]
    sev = dict((s["name"], s["severity"]) for s in rep["sections"])
    assert sev.pop("Sync") == "notavailable" and sev.pop("Capabilities") == "notavailable"
    assert set(sev.values()) == {"info"}
    assert rep["overall"] == "info"
    assert "note" not in rep["sections"][0]
    gov = dict(rep["sections"][3]["facts"])
    assert ("permissions_mode" in gov) == (build != "0.6.4")
    assert ("decisions::enforce" in gov) == (build != "0.6.4")


def test_doctor_json_only_after_subcommand(run_standin):
    r = run_standin("0.7.0", "--json", "doctor")
    assert r.returncode == 0
    assert r.stdout.startswith("ai-memory doctor — local mode")
    with pytest.raises(ValueError):
        json.loads(r.stdout)


def test_doctor_permissions_mode_resolution(run_standin, tmp_path):
    def mode(env=None):
        r, rep = doctor_json(run_standin, "0.7.0", env=env)
        return dict(rep["sections"][3]["facts"])["permissions_mode"], r.stderr
    assert mode()[0] == "enforce"
    assert mode({"AI_MEMORY_PERMISSIONS_MODE": "ADVISORY"})[0] == "advisory"  # lowercased
    write_cfg(tmp_path / "home", '[permissions]\nmode = "off"\n')
    assert mode()[0] == "off"
    m, err = mode({"AI_MEMORY_PERMISSIONS_MODE": " advisory"})  # not trimmed -> invalid
    assert m == "off"
    assert ('ai-memory: AI_MEMORY_PERMISSIONS_MODE=" advisory" is not a valid mode (expected '
            'enforce / advisory / off); falling back to config.toml') in err.splitlines()


def test_doctor_llm_dead_endpoint_is_critical(run_standin, tmp_path):
    url = "http://127.0.0.1:%d" % closed_port()
    write_cfg(tmp_path / "home", '[llm]\nbackend = "ollama"\nmodel = "m"\nbase_url = "%s"\n' % url)
    r, rep = doctor_json(run_standin, "0.7.0")
    assert r.returncode == 2
    llm = rep["sections"][-1]
    assert llm["name"] == "LLM Reachability (#1146)" and llm["severity"] == "critical"
    facts = dict(llm["facts"])
    assert facts["config_source"] == "config" and facts["probe_url"] == url + "/api/tags"
    assert "error" in facts and "http_status" not in facts
    assert rep["overall"] == "critical"
    # 0.6.4 and the tag build have no LLM section: the same config is fine there
    for build in ("0.6.4", "0.7.0-tag"):
        r, rep = doctor_json(run_standin, build)
        assert r.returncode == 0 and rep["overall"] == "info"


@pytest.mark.parametrize("status,severity,rc,rc_fail_on_warn", [
    (200, "info", 0, 0), (503, "warning", 0, 1), (429, "warning", 0, 1), (404, "critical", 2, 2)])
def test_doctor_llm_fake_endpoint(run_standin, tmp_path, status, severity, rc, rc_fail_on_warn):
    with fake_llm_handle(status=status) as h:
        write_cfg(tmp_path / "home", 'llm_model = "gemma4:e2b"\nollama_url = "%s"\n' % h.url)
        r, rep = doctor_json(run_standin, "0.7.0")
        assert r.returncode == rc
        llm = dict(rep["sections"][-1]["facts"])
        assert rep["sections"][-1]["severity"] == severity
        assert llm["config_source"] == "legacy" and llm["http_status"] == str(status)
        assert [p for p, _ in h.requests] == ["/api/tags"]
        r2 = run_standin("0.7.0", "doctor", "--fail-on-warn")
        assert r2.returncode == rc_fail_on_warn
        assert "[%s] LLM Reachability (#1146)" % {"info": "INFO", "warning": "WARN",
                                                  "critical": "CRIT"}[severity] in r2.stdout


def test_doctor_llm_env_overrides_and_compiled_default(run_standin, tmp_path):
    r, rep = doctor_json(run_standin, "0.7.0")
    llm = rep["sections"][-1]
    assert dict(llm["facts"])["config_source"] == "compiled-default"
    assert "probe_url" not in dict(llm["facts"]) and llm["severity"] == "info"
    with fake_llm() as url:
        r, rep = doctor_json(run_standin, "0.7.0", env={"AI_MEMORY_LLM_BASE_URL": url})
        facts = dict(rep["sections"][-1]["facts"])
        assert facts["config_source"] == "env" and facts["base_url"] == url
        assert r.returncode == 0


def test_doctor_db_directory_missing(run_standin, tmp_path):
    p = str(tmp_path / "missing-dir" / "x.db")
    r, rep = doctor_json(run_standin, "0.7.0", "--db", p)
    assert r.returncode == 2
    assert len(rep["sections"]) == 1
    s = rep["sections"][0]
    assert s["name"] == "Storage" and s["severity"] == "critical"
    assert [f[0] for f in s["facts"]] == ["error"]
    assert s["note"] == "could not open database at %s — every other section is N/A" % p
    assert not os.path.exists(os.path.dirname(p))


def test_doctor_remote_nothing_listening(run_standin):
    url = "http://127.0.0.1:%d" % closed_port()
    r, rep = doctor_json(run_standin, "0.6.4", "--remote", url)
    assert r.returncode == 2
    assert rep["mode"] == "remote"
    assert rep["source"] == "%s (local db reference: ai-memory.db)" % url
    assert [s["name"] for s in rep["sections"]] == [
        "Capabilities", "Recall", "Storage", "Index", "Governance", "Sync", "Webhook"]
    assert rep["sections"][0]["severity"] == "critical"
    assert rep["sections"][0]["note"] == "could not reach %s" % url


def test_doctor_critical_storage_and_pending(run_standin, tmp_path):
    p = make_v20(tmp_path, rows=30, pending=0)
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)).isoformat()
    sqlq(p, "INSERT INTO pending_actions (id, action_type, namespace, requested_by, "
            "requested_at) VALUES ('p1', 'delete', 'global', 'a', ?)", (old,))
    r, rep = doctor_json(run_standin, "0.6.4", "--db", p)
    assert r.returncode == 2
    gov = rep["sections"][3]
    assert gov["severity"] == "critical"
    assert int(dict(gov["facts"])["oldest_pending_age_secs"]) > 86400


# ----------------------------------------------------------------------------- serve / mcp
def _start(bin_path, args, env, timeout=10):
    """Start a daemon, collect stdout lines (reader thread) until the listening banner."""
    proc = subprocess.Popen([bin_path] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    q = queue.Queue()

    def reader():
        for line in proc.stdout:
            q.put(line.rstrip("\n"))
        q.put(None)
    threading.Thread(target=reader, daemon=True).start()
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        lines.append(line)
        if "listening on" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("serve did not start: %r %r" % (lines, proc.stderr.read()))


def _get(url):
    try:
        with NO_PROXY.open(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def _db_fds(pid):
    fd_dir = "/proc/%d/fd" % pid
    out = []
    for fd in os.listdir(fd_dir):
        try:
            out.append(os.readlink(os.path.join(fd_dir, fd)))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("build", ["0.6.4", "0.7.0"])
def test_serve_health_and_sigint_checkpoint(standin_bins, tmp_path, build):
    home = tmp_path / "home"
    home.mkdir()
    db = str(tmp_path / "serve.db")
    proc, lines = _start(standin_bins[build], ["--db", db, "serve", "--port", "0"],
                         clean_env(home))
    try:
        port = int(lines[-1].rsplit(":", 1)[1])
        assert lines[-1] == "ai-memory listening on http://127.0.0.1:%d" % port
        assert "database: %s" % db in lines
        assert (("permissions: enforce" in lines) == (build == "0.7.0"))
        status, body = _get("http://127.0.0.1:%d/api/v1/health" % port)
        assert status == 200
        assert list(body) == ["status", "service", "version", "embedder_ready",
                              "federation_enabled"]
        assert body["status"] == "ok" and body["service"] == "ai-memory"
        assert body["version"] == ("0.6.4" if build == "0.6.4" else "0.7.0")
        assert db in _db_fds(proc.pid)
        assert os.path.getsize(db + "-wal") > 0
        r = subprocess.run([standin_bins[build], "doctor", "--json", "--remote",
                            "http://127.0.0.1:%d" % port], env=clean_env(home),
                           capture_output=True, text=True, timeout=20)
        rep = json.loads(r.stdout)
        assert r.returncode == 0 and rep["mode"] == "remote"
        assert rep["sections"][0]["severity"] == "info"
        assert dict(rep["sections"][2]["facts"])["total_memories"] == "0"
        if build == "0.7.0":
            kd = home / ".config" / "ai-memory" / "keys"
            assert oct(os.stat(str(kd / "daemon.pub")).st_mode & 0o777) == "0o644"
            assert oct(os.stat(str(kd / "daemon.priv")).st_mode & 0o777) == "0o600"
            assert any(l.startswith("WARN auto-generated identity keypair at ") for l in lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not os.path.exists(db + "-wal") or os.path.getsize(db + "-wal") == 0
    expected = 20 if build == "0.6.4" else 54
    assert sqlq(db, "SELECT version FROM schema_version") == [(expected,)]
    if build == "0.7.0":
        assert sqlq(db, "SELECT sequence, agent_id, event_type FROM signed_events") == [
            (1, "daemon", "daemon_start")]


def test_serve_sigterm_leaves_wal(standin_bins, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    db = str(tmp_path / "serve.db")
    proc, lines = _start(standin_bins["0.6.4"], ["serve", "--port", "0", "--db", db],
                         clean_env(home))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert os.path.getsize(db + "-wal") > 0  # no checkpoint on SIGTERM
    assert sqlq(db, "SELECT version FROM schema_version") == [(20,)]  # WAL replay works


def test_serve_ignore_sigint_hook(standin_bins, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, {"AIMEM_STANDIN_IGNORE_SIGINT": "1"})
    proc, _ = _start(standin_bins["0.7.0"], ["--db", str(tmp_path / "x.db"), "serve",
                                            "--port", "0"], env)
    try:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.8)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_serve_v070_refuses_keyless_non_loopback(run_standin, tmp_path):
    r = run_standin("0.7.0", "--db", str(tmp_path / "x.db"), "serve", "--host", "0.0.0.0")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith(
        'Error: refusing to bind to non-loopback address "0.0.0.0" without an API key')
    assert not os.path.exists(str(tmp_path / "x.db"))  # refused before touching the DB
    r = run_standin("0.7.0-tag", "--db", str(tmp_path / "x.db"), "serve",
                    env={"AI_MEMORY_REQUIRE_API_KEY": "1"})
    assert r.returncode == 1 and "without an API key" in r.stderr


def test_mcp_holds_db_until_eof(standin_bins, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    db = str(tmp_path / "mcp.db")
    proc = subprocess.Popen([standin_bins["0.7.0"], "--db", db, "mcp"], env=clean_env(home),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                     "params": {}}) + "\n")
        proc.stdin.flush()
        resp = json.loads(proc.stdout.readline())
        assert resp["id"] == 1 and resp["result"]["serverInfo"]["name"] == "ai-memory"
        assert db in _db_fds(proc.pid)
        assert sqlq(db, "SELECT version FROM schema_version") == [(54,)]
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# ----------------------------------------------------------------------------- backup / restore
def test_backup_and_restore_roundtrip(run_standin, tmp_path):
    p = make_v20(tmp_path, rows=60)
    bdir = tmp_path / "backups"
    r = run_standin("0.6.4", "--db", p, "backup", "--to", bdir)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [l[:10] for l in lines] == ["Snapshot: ", "Manifest: ", "SHA-256 : ", "Bytes   : "]
    snap = lines[0][10:]
    assert os.path.basename(snap).startswith("ai-memory-") and snap.endswith("Z.db")
    man = json.load(open(lines[1][10:]))
    assert list(man) == ["snapshot", "sha256", "bytes", "source_db", "version", "created_at"]
    assert man["version"] == "0.6.4" and man["source_db"] == p
    assert man["sha256"] == hashlib.sha256(open(snap, "rb").read()).hexdigest()
    assert man["bytes"] == os.path.getsize(snap) == int(lines[3][10:])
    assert sqlq(snap, "SELECT COUNT(*) FROM memories") == [(60,)]
    assert sqlq(snap, "SELECT version FROM schema_version") == [(20,)]
    # damage the live DB, leave a fake sidecar, restore
    sqlq(p, "DELETE FROM memories")
    with open(p + "-shm", "wb") as fh:
        fh.write(b"stale-sidecar")
    r = run_standin("0.6.4", "--db", p, "restore", "--from", bdir)
    assert r.returncode == 0, r.stderr
    asides = [n for n in os.listdir(str(tmp_path)) if ".pre-restore-" in n]
    assert len(asides) == 1 and asides[0].startswith("mem.pre-restore-")
    assert asides[0].endswith("Z.db")
    assert open(p + "-shm", "rb").read() == b"stale-sidecar"  # sidecars left alone
    os.unlink(p + "-shm")
    assert sqlq(p, "SELECT COUNT(*) FROM memories") == [(60,)]
    assert sqlq(os.path.join(str(tmp_path), asides[0]), "SELECT COUNT(*) FROM memories") == [(0,)]


def test_backup_json_keep_refuse_and_v070_migrates_source(run_standin, tmp_path):
    p = make_v20(tmp_path, rows=10)
    bdir = tmp_path / "b"
    bdir.mkdir()
    for old in ("ai-memory-2020-01-01T000000Z", "ai-memory-2020-01-02T000000Z"):
        (bdir / (old + ".db")).write_bytes(b"x")
        (bdir / (old + ".manifest.json")).write_text("{}")
    r = run_standin("0.7.0", "--db", p, "--json", "backup", "--to", bdir, "--keep", "1")
    assert r.returncode == 0, r.stderr
    man = json.loads(r.stdout)
    assert man["version"] == "0.7.0"
    assert sorted(os.listdir(str(bdir))) == sorted(
        [man["snapshot"], man["snapshot"][:-3] + ".manifest.json"])
    # v0.7.0's backup migrates the source first, the snapshot is v54
    assert sqlq(p, "SELECT version FROM schema_version") == [(54,)]
    assert sqlq(str(bdir / man["snapshot"]), "SELECT version FROM schema_version") == [(54,)]
    # refuses to overwrite an existing snapshot (pre-create the next few seconds' names)
    now = datetime.datetime.now(datetime.timezone.utc)
    for s in range(0, 4):
        ts = (now + datetime.timedelta(seconds=s)).strftime("%Y-%m-%dT%H%M%SZ")
        (bdir / ("ai-memory-%s.db" % ts)).write_bytes(b"y")
    r = run_standin("0.6.4", "--db", p, "backup", "--to", bdir)
    assert r.returncode == 1 and "already exists; refusing to overwrite" in r.stderr


def test_restore_sha_mismatch_leaves_db(run_standin, tmp_path):
    p = make_v20(tmp_path, rows=10)
    bdir = tmp_path / "b"
    r = run_standin("0.6.4", "--db", p, "backup", "--to", bdir)
    snap = r.stdout.splitlines()[0][10:]
    with open(snap, "ab") as fh:
        fh.write(b"\0")
    r = run_standin("0.6.4", "--db", p, "restore", "--from", snap)
    assert r.returncode == 1 and "sha256 mismatch" in r.stderr
    assert not [n for n in os.listdir(str(tmp_path)) if "pre-restore" in n]
    r = run_standin("0.6.4", "--db", p, "restore", "--from", snap, "--skip-verify")
    assert r.returncode == 0
    r = run_standin("0.6.4", "restore")
    assert r.returncode == 2 and "--from <FROM>" in r.stderr
