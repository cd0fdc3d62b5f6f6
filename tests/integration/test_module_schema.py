"""aimem.fleet.aimem_schema through real ``ansible-playbook -i localhost, -c local`` runs.

Every assertion reads the files themselves (directory listings, sha256, SQLite rows), not only
the module's own report.
"""
import hashlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from helpers import ROOT, run_playbook

STANDIN = os.path.join(ROOT, "tests", "standin")
M = "aimem.fleet.aimem_schema"

WRITER = r"""
import sqlite3, sys, os
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("INSERT INTO memories(id, tier, namespace, title, content, created_at, updated_at)"
          " VALUES ('wal-row', 'mid', 'global', 'in the wal', 'only in the -wal',"
          " '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
c.commit()
os._exit(0)
"""


# ------------------------------------------------------------------------------------------ fixtures
def _import_standin_fixtures():
    """Expose tests/standin/conftest.py's fixtures (``standin_bins``) to this module when present."""
    path = os.path.join(STANDIN, "conftest.py")
    if not os.path.isfile(path):
        return
    if STANDIN not in sys.path:
        sys.path.insert(0, STANDIN)
    spec = importlib.util.spec_from_file_location("aimem_standin_conftest_schema", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in dir(mod):
        obj = getattr(mod, name)
        if hasattr(obj, "_fixture_function_marker") or type(obj).__name__ == "FixtureFunctionDefinition":
            globals().setdefault(name, obj)


_import_standin_fixtures()


@pytest.fixture(scope="module")
def bins(request, tmp_path_factory):
    """build -> stand-in executable (shared ``standin_bins`` fixture, else built here)."""
    try:
        return request.getfixturevalue("standin_bins")
    except pytest.FixtureLookupError:
        if STANDIN not in sys.path:
            sys.path.insert(0, STANDIN)
        import build
        return build.build_all(str(tmp_path_factory.mktemp("standin")))["bins"]


def _gen():
    if STANDIN not in sys.path:
        sys.path.insert(0, STANDIN)
    import gen_db
    return gen_db


@pytest.fixture
def v20(tmp_path):
    """A stand-in-generated v20 DB with one row left un-checkpointed in its -wal."""
    d = tmp_path / "data"
    d.mkdir()
    db = str(d / "ai-memory.db")
    _gen().generate(db, 40, seed=3)
    subprocess.check_call([sys.executable, "-c", WRITER, db])
    assert os.path.getsize(db + "-wal") > 0
    return db


def snapshot_state(directory):
    """name -> sha256 of every file except the -shm (shared memory, not content)."""
    out = {}
    for name in sorted(os.listdir(directory)):
        p = os.path.join(directory, name)
        if os.path.isfile(p) and not name.endswith("-shm"):
            with open(p, "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _home(tmp_path):
    """A private HOME (the binaries write ~/.config/ai-memory/config.toml on every call, facts 1.2)."""
    home = tmp_path / "home-init"
    home.mkdir(exist_ok=True)
    env = {k: None for k in os.environ if k.startswith("AI_MEMORY")}
    env["HOME"] = str(home)
    return env


def rows(db, sql):
    c = sqlite3.connect("file:%s?mode=ro&immutable=1" % db, uri=True)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


# ------------------------------------------------------------------------------------------ tests
def test_inspect_reports_and_writes_nothing(tmp_path, v20):
    before = snapshot_state(os.path.dirname(v20))
    r = run_playbook(tmp_path, [{"name": "inspect", M: {"db": v20, "expect_version": 20}}])
    assert r.rc == 0, r.output
    res = r.task("inspect")
    assert res["changed"] is False
    assert res["schema_version"] == 20 and res["schema_release"] == "v0.6.4"
    assert res["integrity"] == "ok" and res["wal_present"] is True
    assert res["counts"]["memories"] == 41  # 40 generated + the WAL row
    assert res["holders"] == [] and res["holders_complete"] is True
    assert snapshot_state(os.path.dirname(v20)) == before


def test_missing_db_fails_naming_path_and_creates_nothing(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    db = str(d / "ai-memory.db")
    r = run_playbook(tmp_path, [{"name": "inspect", M: {"db": db}}])
    assert r.rc != 0
    res = r.task("inspect")
    assert r.status("inspect") == "failed"
    assert db in res["msg"] and "AI_MEMORY_DB" in res["hint"]
    assert os.listdir(str(d)) == []


def test_expect_version_mismatch_fails(tmp_path, v20):
    r = run_playbook(tmp_path, [{"name": "inspect", M: {"db": v20, "expect_version": 54}}])
    assert r.rc != 0
    assert "expected v54" in r.task("inspect")["msg"]


def test_snapshot_check_mode_then_real_then_idempotent_then_restore(tmp_path, v20):
    data = os.path.dirname(v20)
    os.chmod(v20, 0o640)
    before = snapshot_state(data)
    task = {"name": "snap", M: {"db": v20, "state": "snapshot"}}

    # check mode: reports the would-be path, writes nothing
    r = run_playbook(tmp_path, [task], check=True, diff=True)
    assert r.rc == 0, r.output
    would = r.task("snap")
    assert would["changed"] is True
    assert os.path.dirname(would["snapshot"]) == data
    assert os.path.basename(would["snapshot"]).startswith("ai-memory.db.pre-migration-v20-to-v54-")
    assert not os.path.exists(would["snapshot"])
    assert snapshot_state(data) == before

    # real run: the same path, verified, WAL row included, manifest next to it
    r = run_playbook(tmp_path, [task])
    assert r.rc == 0, r.output
    snap = r.task("snap")
    assert snap["changed"] is True and snap["snapshot"] == would["snapshot"]
    assert rows(snap["snapshot"], "SELECT content FROM memories WHERE id='wal-row'") == [("only in the -wal",)]
    with open(snap["snapshot"], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == snap["sha256"]
    manifest = json.load(open(snap["manifest"]))
    assert manifest["sha256"] == snap["sha256"] and manifest["counts"] == snap["counts"]
    assert oct(os.stat(snap["snapshot"]).st_mode & 0o777) == "0o640"
    assert {k: v for k, v in snapshot_state(data).items() if k in before} == before  # source untouched

    # second run: changed=0, nothing new on disk
    after_first = snapshot_state(data)
    r = run_playbook(tmp_path, [task])
    assert r.rc == 0, r.output
    assert r.task("snap")["changed"] is False and r.task("snap")["snapshot"] == snap["snapshot"]
    assert "changed=0" in r.stdout
    assert snapshot_state(data) == after_first

    # the upgrade happens: the DB moves on (v54 stamp, expires_at backfill, a stale -wal)
    c = sqlite3.connect(v20)
    c.execute("UPDATE memories SET expires_at='2026-01-01T06:00:00Z' WHERE tier!='long'")
    c.execute("DELETE FROM schema_version")
    c.execute("INSERT INTO schema_version VALUES (54)")
    c.commit()
    c.close()
    subprocess.check_call([sys.executable, "-c", WRITER.replace("wal-row", "wal-row-2").replace("in the wal", "in the wal 2"), v20])

    restore = {"name": "restore", M: {"db": v20, "state": "restore", "restore_from": snap["snapshot"],
                                      "expect_version": 20}}
    state_before_restore = snapshot_state(data)
    r = run_playbook(tmp_path, [restore], check=True, diff=True)
    assert r.rc == 0, r.output
    assert r.task("restore")["changed"] is True
    assert snapshot_state(data) == state_before_restore

    r = run_playbook(tmp_path, [restore])
    assert r.rc == 0, r.output
    res = r.task("restore")
    assert res["changed"] is True and res["replaced"].startswith(v20 + ".replaced-")
    assert not os.path.exists(v20 + "-wal") and not os.path.exists(v20 + "-shm")
    assert os.path.exists(res["replaced"]) and os.path.exists(res["replaced"] + "-wal")
    assert rows(v20, "SELECT MAX(version) FROM schema_version") == [(20,)]
    assert rows(v20, "SELECT COUNT(*) FROM memories WHERE id='wal-row-2'") == [(0,)]
    assert oct(os.stat(v20).st_mode & 0o777) == "0o640"

    r = run_playbook(tmp_path, [restore])
    assert r.rc == 0, r.output
    assert r.task("restore")["changed"] is False


def test_snapshot_refuses_migrated_db(tmp_path, v20):
    c = sqlite3.connect(v20)
    c.execute("DELETE FROM schema_version")
    c.execute("INSERT INTO schema_version VALUES (54)")
    c.commit()
    c.close()
    before = snapshot_state(os.path.dirname(v20))
    r = run_playbook(tmp_path, [{"name": "snap", M: {"db": v20, "state": "snapshot"}}])
    assert r.rc != 0
    res = r.task("snap")
    assert v20 in res["msg"] and "allow_migrated" in res["hint"]
    assert snapshot_state(os.path.dirname(v20)) == before


def test_v070_standin_migrates_and_nothing_is_lost(tmp_path, v20, bins):
    """v20 DB -> our snapshot -> the 0.7.0 stand-in's doctor migrates it -> inspect proves v54 with
    the same content digest and counts as the snapshot."""
    r = run_playbook(tmp_path, [{"name": "snap", M: {"db": v20, "state": "snapshot"}}])
    assert r.rc == 0, r.output
    snap = r.task("snap")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_MEMORY")}
    env["HOME"] = str(home)
    doc = subprocess.run([bins["0.7.0"], "--db", v20, "doctor", "--json"], env=env, cwd=str(home),
                         capture_output=True, text=True, timeout=60)
    assert doc.returncode == 0, doc.stderr
    json.loads(doc.stdout)
    assert rows(v20, "SELECT MAX(version) FROM schema_version") == [(54,)]

    r = run_playbook(tmp_path, [{"name": "after", M: {"db": v20, "expect_version": 54}}])
    assert r.rc == 0, r.output
    after = r.task("after")
    assert after["schema_version"] == 54 and after["schema_release"] == "v0.7.0 release/v0.7.0 build"
    assert after["content_digest"] == snap["content_digest"]
    assert after["counts"] == snap["counts"]
    # the backfill really did change expires_at, which the digest leaves out on purpose
    assert rows(snap["snapshot"], "SELECT COUNT(*) FROM memories WHERE tier!='long' AND expires_at IS NULL")[0][0] > 0
    assert rows(v20, "SELECT COUNT(*) FROM memories WHERE tier!='long' AND expires_at IS NULL") == [(0,)]
    # and the snapshot still is the v20 DB
    assert rows(snap["snapshot"], "SELECT MAX(version) FROM schema_version") == [(20,)]


def test_init_refuses_release_build_without_schema_init(tmp_path, v20, bins):
    url = "postgres://aimem:s3cret-pw@127.0.0.1:1/aimem"
    r = run_playbook(tmp_path, [{"name": "init", M: {"state": "init", "store_url": url,
                                                     "binary": bins["0.7.0"]}}], env=_home(tmp_path))
    assert r.rc != 0
    res = r.task("init")
    assert "schema-init" in res["msg"] and "sal,sal-postgres" in res["msg"]
    assert "s3cret-pw" not in r.stdout + r.stderr + json.dumps(r.results)


def test_init_sqlite_store_with_sal_build(tmp_path, v20, bins):
    if "0.7.0-sal" not in bins:
        pytest.fail("the stand-in has no 0.7.0-sal build (needed for schema-init)")
    url = "sqlite://" + v20
    task = {"name": "init", M: {"state": "init", "store_url": url, "binary": bins["0.7.0-sal"],
                                "expect_version": 54}}
    before = snapshot_state(os.path.dirname(v20))
    env = _home(tmp_path)
    r = run_playbook(tmp_path, [task], check=True, env=env)
    assert r.rc == 0, r.output
    assert r.task("init")["changed"] is True
    assert snapshot_state(os.path.dirname(v20)) == before
    assert os.listdir(env["HOME"]) == []  # the binary did not run (it would write its config template)
    r = run_playbook(tmp_path, [task], env=env)
    assert r.rc == 0, r.output
    res = r.task("init")
    assert res["changed"] is True and res["schema_init"]["schema_version"] == 54
    assert rows(v20, "SELECT MAX(version) FROM schema_version") == [(54,)]
    r = run_playbook(tmp_path, [task], env=env)
    assert r.rc == 0, r.output
    assert r.task("init")["changed"] is False


def test_postgres_url_on_sal_build_without_postgres_is_clear(tmp_path, bins):
    url = "postgresql://u:pw-hidden@127.0.0.1:1/db"
    r = run_playbook(tmp_path, [{"name": "init", M: {"state": "init", "store_url": url,
                                                     "binary": bins["0.7.0-sal"]}}], env=_home(tmp_path))
    assert r.rc != 0
    res = r.task("init")
    assert "sal-postgres" in res["msg"]
    assert "pw-hidden" not in r.stdout + r.stderr + json.dumps(r.results)


def test_init_url_password_containing_at_sign_never_leaks(tmp_path, bins):
    # an unencoded '@' in the password is accepted by URL parsers (userinfo ends at the last '@')
    url = "postgres://aimem:p@ss-hidden-tail@127.0.0.1:1/aimem"
    r = run_playbook(tmp_path, [{"name": "init", M: {"state": "init", "store_url": url,
                                                     "binary": bins["0.7.0"]}}], env=_home(tmp_path))
    assert r.rc != 0
    assert "schema-init" in r.task("init")["msg"]
    assert "ss-hidden-tail" not in r.stdout + r.stderr + json.dumps(r.results)


def test_init_on_a_sqlite_store_that_is_no_db_fails_naming_it(tmp_path):
    d = tmp_path / "store"
    d.mkdir()
    bad = d / "not-a.db"
    bad.write_bytes(b"garbage" * 1000)
    r = run_playbook(tmp_path, [{"name": "init", M: {"state": "init", "store_url": "sqlite://%s" % bad,
                                                     "binary": "/bin/true"}}], check=True)
    assert r.rc != 0
    res = r.task("init")
    assert str(bad) in res["msg"] and res.get("hint"), res
    assert "Traceback" not in json.dumps(res) and "MODULE FAILURE" not in res["msg"]
    assert bad.read_bytes() == b"garbage" * 1000


@pytest.mark.parametrize("output, needle", [("not json at all", "no JSON"),
                                            ('{"schema_version": 41, "kind": "postgres"}', "expected 54")])
def test_init_bad_schema_init_output_fails_with_a_fix(tmp_path, output, needle):
    fake = tmp_path / "ai-memory-fake"
    fake.write_text("#!/bin/sh\ncat <<'OUT'\n%s\nOUT\n" % output)
    fake.chmod(0o755)
    r = run_playbook(tmp_path, [{"name": "init", M: {"state": "init", "binary": str(fake),
                                                     "store_url": "postgres://u:pw-x@127.0.0.1:1/db",
                                                     "expect_version": 54}}])
    assert r.rc != 0
    res = r.task("init")
    assert needle in res["msg"] and str(fake) in res["msg"]
    assert "sal" in res.get("hint", "") or "expect_version" in res.get("hint", ""), res
    assert "pw-x" not in r.stdout + r.stderr + json.dumps(r.results)
