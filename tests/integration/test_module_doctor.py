"""aimem.fleet.aimem_doctor through real ``ansible-playbook -c local`` runs against the stand-in
builds (0.6.4, 0.7.0 branch, 0.7.0 tag). Every DB assertion reads the SQLite file itself."""
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from helpers import ROOT, run_playbook

STANDIN = os.path.join(ROOT, "tests", "standin")
LLM = "LLM Reachability (#1146)"


# ------------------------------------------------------------------------------------------ fixtures
if STANDIN not in sys.path:
    sys.path.insert(0, STANDIN)

def _load(name, filename):
    """Import a tests/standin script by path (``build`` would clash with PyPI's ``build``)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(STANDIN, filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


standin_build = _load("aimem_standin_build_for_doctor_tests", "build.py")  # its conftest: use build_all
import fake_llm  # noqa: E402
import gen_db  # noqa: E402
from aimem_standin import signed_events  # noqa: E402


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    """build -> stand-in executable (0.6.4, 0.7.0 branch, 0.7.0-tag), built once per module."""
    return standin_build.build_all(str(tmp_path_factory.mktemp("standin")))["bins"]


class Host(object):
    """A service user's HOME with its DB under data/."""

    def __init__(self, root):
        self.home = str(root / "svc")
        self.db = os.path.join(self.home, "data", "ai-memory.db")
        os.makedirs(os.path.dirname(self.db))
        self.config = os.path.join(self.home, ".config", "ai-memory", "config.toml")

    def write_config(self, text):
        os.makedirs(os.path.dirname(self.config), exist_ok=True)
        with open(self.config, "w") as f:
            f.write(text)

    def create_db(self, binary):
        """Create an empty DB with a stand-in build (0.6.4 -> v20, 0.7.0 -> v54)."""
        subprocess.run([binary, "--db", self.db, "boot", "--format", "json", "--quiet"], check=True,
                       env=dict(os.environ, HOME=self.home), cwd=self.home, capture_output=True)

    def generate_v20(self, rows=300):
        """A realistic v0.6.4 DB (tests/standin/gen_db.py), with rows the v54 backfill would touch."""
        gen_db.generate(self.db, rows, pending=0)

    def version(self):
        conn = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True)
        try:
            return conn.execute("SELECT COALESCE(MAX(version),0) FROM schema_version").fetchone()[0]
        finally:
            conn.close()

    def sha(self):
        with open(self.db, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def files(self):
        return sorted(os.listdir(os.path.dirname(self.db)))

    def task(self, binary, **kw):
        args = {"binary": binary, "db": self.db, "environment": {"HOME": self.home}}
        args.update(kw)
        return args


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _failed(r, name):
    return r.status(name) in ("failed", "ignored")


def _t(name, args, **extra):
    task = {"name": name, "aimem.fleet.aimem_doctor": args, "ignore_errors": True}
    task.update(extra)
    return task


# ------------------------------------------------------------------------------------------ tests
def test_healthy_070_gate_passes_probe_tells_branch_from_tag_and_check_mode_touches_nothing(tmp_path, bins):
    with fake_llm.fake_llm_handle(status=200) as llm_endpoint:
        _healthy(tmp_path, bins, llm_endpoint)


def _healthy(tmp_path, bins, llm_endpoint):
    ollama = llm_endpoint.url
    h = Host(tmp_path)
    h.write_config('[llm]\nbackend = "ollama"\nmodel = "gemma4:e2b"\nbase_url = "%s"\n' % ollama)
    h.create_db(bins["0.7.0"])
    sha, files = h.sha(), h.files()
    secret = "sk-doctor-test-5f1b2c"
    r = run_playbook(tmp_path, [
        _t("check", h.task(bins["0.7.0"]), check_mode=True),
        _t("tag build probe", h.task(bins["0.7.0-tag"]), check_mode=True),
    ])
    assert r.rc == 0, r.output
    check = r.task("check")
    assert check["skipped_in_check_mode"] is True and check["changed"] is False
    assert check["would_run"] == [[bins["0.7.0"], "--db", h.db, "doctor", "--json"]]
    assert "sections" not in check
    tag = r.task("tag build probe")
    branch_bin, tag_bin = check["binary"], tag["binary"]
    assert branch_bin["version"] == tag_bin["version"] == "0.7.0"
    assert branch_bin["capabilities"]["config_migrate"] is True
    assert tag_bin["capabilities"]["config_migrate"] is False
    assert branch_bin["capabilities"]["verify_signed_events_chain"] is True
    assert (branch_bin["schema_version"], tag_bin["schema_version"]) == (54, 42)
    # v54 DB vs the tag build (v42): newer than it supports -> reported, not refused
    assert tag["db"]["schema_action"] == "newer" and tag["db"]["schema_supported"] is False
    assert any("newer than" in w for w in tag.get("warnings", [])), tag
    # check mode (and the probes) left the DB and its directory alone; no probe dir left in HOME
    assert h.sha() == sha and h.files() == files
    assert not [n for n in os.listdir(h.home) if n.startswith(".aimem-doctor-probe-")]

    r = run_playbook(tmp_path, [
        _t("gate", h.task(bins["0.7.0"], secret_environment={"AI_MEMORY_LLM_API_KEY": secret})),
    ])
    assert r.rc == 0, r.output
    res = r.task("gate")
    assert not _failed(r, "gate"), res
    assert res["changed"] is False and res["migrated"] is False
    assert res["overall"] == "info" and res["gate"]["passed"] is True
    assert len(res["sections"]) == 9
    llm = [s for s in res["sections"] if s["name"] == LLM][0]
    assert llm["severity"] == "info" and llm["facts"]["base_url"] == ollama
    assert [p for p, _hdrs in llm_endpoint.requests] == ["/api/tags"]  # the binary really probed it
    assert llm["facts"]["key_source"] == "process-env"  # the secret reached the binary...
    assert secret not in json.dumps(r.results) and secret not in r.stdout  # ...but is never shown
    assert res["environment_keys"] == ["AI_MEMORY_LLM_API_KEY", "HOME"]
    assert res["db"]["schema_version_before"] == res["db"]["schema_version_after"] == 54
    assert h.version() == 54


def test_dead_llm_fails_naming_the_section_and_passes_when_ignored(tmp_path, bins):
    h = Host(tmp_path)
    dead = "http://127.0.0.1:%d" % _free_port()
    h.write_config('llm_model = "gemma4:e2b"\nollama_url = "%s"\n' % dead)
    h.create_db(bins["0.7.0"])
    with fake_llm.fake_llm(status=503) as overloaded:
        env503 = {"HOME": h.home, "AI_MEMORY_LLM_BASE_URL": overloaded}
        r = run_playbook(tmp_path, [
            _t("strict", h.task(bins["0.7.0"])),
            _t("ignored", h.task(bins["0.7.0"], ignore_sections=[LLM, "No Such Section"])),
            _t("report only", h.task(bins["0.7.0"], fail_on="never")),
            _t("503 vs warning", h.task(bins["0.7.0"], environment=env503, fail_on="warning")),
            _t("503 vs critical", h.task(bins["0.7.0"], environment=env503)),
        ])
    strict = r.task("strict")
    assert _failed(r, "strict")
    assert "LLM Reachability (#1146) [critical]" in strict["msg"]
    assert dead in strict["msg"] and "ignore_sections" in strict["msg"]
    assert strict["critical_sections"] == [LLM] and strict["failing_sections"] == [LLM]
    assert len(strict["sections"]) == 9 and strict["doctor_rc"] == 2  # full report kept on failure
    ignored = r.task("ignored")
    assert not _failed(r, "ignored"), ignored
    assert ignored["overall"] == "critical" and ignored["effective_overall"] == "info"
    assert ignored["gate"]["ignored_sections"] == [LLM]
    assert any("No Such Section" in w for w in ignored.get("warnings", []))
    only = r.task("report only")
    assert not _failed(r, "report only") and only["critical_sections"] == [LLM]
    # 503 from the endpoint is a WARN (facts 3.5): fails fail_on=warning only
    warn = r.task("503 vs warning")
    assert _failed(r, "503 vs warning") and warn["warning_sections"] == [LLM]
    assert "LLM Reachability (#1146) [warning]" in warn["msg"] and overloaded in warn["msg"]
    assert not _failed(r, "503 vs critical") and r.task("503 vs critical")["overall"] == "warning"


def test_refuses_070_on_v20_db_then_migrates_only_when_allowed(tmp_path, bins):
    h = Host(tmp_path)
    h.generate_v20()
    assert h.version() == 20
    sha, files = h.sha(), h.files()
    r = run_playbook(tmp_path, [
        _t("refused", h.task(bins["0.7.0"])),
        _t("refused in check mode", h.task(bins["0.7.0"]), check_mode=True),
        _t("would migrate", h.task(bins["0.7.0"], allow_migration=True), check_mode=True),
        _t("old binary, chain", h.task(bins["0.6.4"], verify_chain=True)),
    ])
    refused = r.task("refused")
    assert _failed(r, "refused")
    assert "refusing to run" in refused["msg"] and "schema v20" in refused["msg"]
    assert "allow_migration: true" in refused["msg"] and h.db in refused["msg"]
    assert _failed(r, "refused in check mode")
    would = r.task("would migrate")
    assert not _failed(r, "would migrate") and would["changed"] is True
    assert would["skipped_in_check_mode"] is True and would["db"]["schema_action"] == "migrate"
    old = r.task("old binary, chain")
    assert _failed(r, "old binary, chain") and "no verify-signed-events-chain" in old["msg"]
    assert old["binary"]["capabilities"] == {"config_migrate": False, "verify_signed_events_chain": False,
                                             "identity": False, "governance_migrate": False}
    # nothing opened the DB with a binary: still v20, byte-identical, no sidecars created
    assert h.version() == 20 and h.sha() == sha and h.files() == files

    r = run_playbook(tmp_path, [_t("migrate", h.task(bins["0.7.0"], allow_migration=True))])
    res = r.task("migrate")
    assert not _failed(r, "migrate"), r.output
    assert res["changed"] is True and res["migrated"] is True
    assert (res["db"]["schema_version_before"], res["db"]["schema_version_after"]) == (20, 54)
    assert h.version() == 54

    r = run_playbook(tmp_path, [_t("again", h.task(bins["0.7.0"], allow_migration=True))])
    again = r.task("again")
    assert not _failed(r, "again") and again["changed"] is False and h.version() == 54
    assert "changed=0" in r.stdout


def test_verify_chain_gates_on_chain_holds_and_signatures(tmp_path, bins):
    h = Host(tmp_path)
    h.create_db(bins["0.7.0"])
    conn = sqlite3.connect(h.db)
    for i in range(3):
        signed_events.append_event(conn, "agent-a", "memory.store", b"payload-%d" % i)
    conn.commit()
    conn.close()
    r = run_playbook(tmp_path, [
        _t("chain", h.task(bins["0.7.0"], verify_chain=True, require_signatures=True)),
        _t("bad args", h.task(bins["0.7.0"], require_signatures=True)),
    ])
    chain = r.task("chain")
    assert not _failed(r, "chain"), chain
    assert chain["chain"] == {"rows_checked": 3, "chain_break": None, "signature_failures": [],
                              "chain_holds": True}
    assert "require_signatures needs verify_chain" in r.task("bad args")["msg"]

    conn = sqlite3.connect(h.db)
    signed_events.tamper(conn, 2)
    conn.commit()
    conn.close()
    r = run_playbook(tmp_path, [_t("broken", h.task(bins["0.7.0"], verify_chain=True, fail_on="never"))])
    broken = r.task("broken")
    assert _failed(r, "broken")
    assert broken["chain"]["chain_holds"] is False
    assert "chain breaks at sequence=%s" % broken["chain"]["chain_break"] in broken["msg"]
    assert broken["gate"]["passed"] is False


def test_missing_db_is_refused_and_not_created(tmp_path, bins):
    h = Host(tmp_path)
    missing = os.path.join(h.home, "data", "typo.db")
    r = run_playbook(tmp_path, [
        _t("missing", dict(h.task(bins["0.7.0"]), db=missing)),
        _t("bool env", dict(h.task(bins["0.7.0"]), environment={"HOME": h.home, "AI_MEMORY_FED_REQUIRE_SIG": False})),
    ])
    res = r.task("missing")
    assert _failed(r, "missing") and missing in res["msg"] and "would create an empty DB" in res["msg"]
    assert not os.path.exists(missing)
    assert "quote it" in r.task("bool env")["msg"]


def test_binary_opens_exactly_the_checked_db_even_when_it_rejects_the_config(tmp_path, bins):
    """The branch build rejects a config with api_key_env + api_key_file (facts 1.10) and falls back
    to ./ai-memory.db; the module read the config's `db`. The binary must still open that file,
    never migrate the unchecked v20 ./ai-memory.db."""
    h = Host(tmp_path)
    h.create_db(bins["0.7.0"])  # the configured DB, v54
    stray = os.path.join(h.home, "ai-memory.db")
    gen_db.generate(stray, 50, pending=0)  # a v20 DB where the binary's fallback would look
    h.write_config('db = "%s"\n[llm]\nbackend = "ollama"\napi_key_env = "K"\napi_key_file = "/nope"\n' % h.db)
    with open(stray, "rb") as f:
        stray_sha = f.read()
    home_files = sorted(os.listdir(h.home))
    args = {"binary": bins["0.7.0"], "environment": {"HOME": h.home}}  # no `db`: resolved like the binary
    r = run_playbook(tmp_path, [_t("resolved", args), _t("resolved chain", dict(args, verify_chain=True))])
    for name in ("resolved", "resolved chain"):
        res = r.task(name)
        assert res["db"]["path"] == h.db and res["db"]["origin"] == "config db", res
        assert res["source"] == h.db, res
    assert sorted(os.listdir(h.home)) == home_files  # no sidecar appeared next to the stray DB
    with open(stray, "rb") as f:
        assert f.read() == stray_sha
    conn = sqlite3.connect("file:%s?mode=ro" % stray, uri=True)
    try:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 20
    finally:
        conn.close()
    with open(stray, "rb") as f:
        assert f.read() == stray_sha


def test_remote_chain_against_missing_db_is_refused_and_not_created(tmp_path, bins):
    h = Host(tmp_path)
    url = "http://127.0.0.1:%d" % _free_port()
    r = run_playbook(tmp_path, [_t("remote chain", h.task(bins["0.7.0"], remote=url, verify_chain=True))])
    res = r.task("remote chain")
    assert _failed(r, "remote chain")
    assert h.db in res["msg"] and "verify_chain: false" in res["msg"], res["msg"]
    assert not os.path.exists(h.db)
    assert res["commands"] and not any("verify-signed-events-chain" in c and "--help" not in c
                                       for c in res["commands"])


def test_probes_and_check_mode_write_nothing_real_and_env_secrets_are_masked(tmp_path, bins):
    h = Host(tmp_path)
    h.create_db(bins["0.7.0"])
    audit = os.path.join(h.home, "audit")
    state = os.path.join(h.home, "state")
    secret = "sk-plain-env-91c7d0e4"
    env = {"HOME": h.home, "AI_MEMORY_AUDIT_DIR": audit, "XDG_STATE_HOME": state,
           "AI_MEMORY_LLM_API_KEY": secret}
    home_before = sorted(os.listdir(h.home))
    sha = h.sha()
    r = run_playbook(tmp_path, [_t("check", h.task(bins["0.7.0"], environment=env), check_mode=True)])
    res = r.task("check")
    assert not _failed(r, "check"), res
    assert res["skipped_in_check_mode"] is True
    # the preamble of the probes went to the scratch dir only
    assert not os.path.exists(audit) and not os.path.exists(state)
    assert sorted(os.listdir(h.home)) == home_before and h.sha() == sha
    # a secret passed in `environment` (not secret_environment) is masked everywhere, invocation included
    assert secret not in json.dumps(r.results) and secret not in r.stdout
    assert any("looks like a secret" in w for w in res.get("warnings", []))


def test_probe_only_needs_no_db_and_tells_branch_from_tag_without_touching_home(tmp_path, bins):
    """probe_only: version, capabilities and target schema of a binary on a host with NO database;
    nothing is resolved, created or left in HOME, and the task never reports changed."""
    home = tmp_path / "svc"
    home.mkdir()
    home_before = sorted(os.listdir(str(home)))
    env = {"HOME": str(home)}
    r = run_playbook(tmp_path, [
        _t("branch", {"binary": bins["0.7.0"], "probe_only": True, "environment": env}),
        _t("tag", {"binary": bins["0.7.0-tag"], "probe_only": True, "environment": env}),
        _t("tag check mode", {"binary": bins["0.7.0-tag"], "probe_only": True, "environment": env},
           check_mode=True),
        _t("with db", {"binary": bins["0.7.0"], "probe_only": True, "environment": env,
                       "db": str(home / "ai-memory.db")}),
    ])
    branch, tag, tag_check = r.task("branch"), r.task("tag"), r.task("tag check mode")
    for name, res in (("branch", branch), ("tag", tag), ("tag check mode", tag_check)):
        assert not _failed(r, name), res
        assert res["changed"] is False, res
        assert "db" not in res and "gate" not in res and "sections" not in res, res
        assert res["binary"]["version"] == "0.7.0", res
        # only probes ran: --version, four `<sub> --help` and boot against the scratch DB
        assert len(res["commands"]) == 6, res["commands"]
        assert not any("doctor" in c for c in res["commands"]), res["commands"]
    assert branch["binary"]["capabilities"]["config_migrate"] is True
    assert tag["binary"]["capabilities"]["config_migrate"] is False
    assert tag_check["binary"]["capabilities"]["config_migrate"] is False
    assert (branch["binary"]["schema_version"], tag["binary"]["schema_version"]) == (54, 42)
    assert branch["binary"]["path"] == bins["0.7.0"]
    # combining probe_only with a DB option is refused, naming the option
    with_db = r.task("with db")
    assert _failed(r, "with db") and "probe_only" in with_db["msg"] and "db" in with_db["msg"], with_db
    # nothing created in HOME: no DB, no config template, no probe scratch dir
    assert sorted(os.listdir(str(home))) == home_before == []
