"""aimem.fleet.upgrade / secure / rollback over SSH on a 3-host test fleet whose config.toml is
NFS-shared (one file in the fleet's shared dir, symlinked from every host), with h1 as leader.

The order of the tests is the life of a fleet: check mode first (nothing may change), the
upgrade, the idempotent second run, the secure flip, then a rollback of one host.
"""
import json
import os
import re

import pytest

from rolelib import ROOT, SeededFleet

PLAYBOOKS = os.path.join(ROOT, "playbooks")
DB = "/var/lib/ai-memory/ai-memory.db"
CFG = "/var/lib/ai-memory/.config/ai-memory/config.toml"
ENV = "/etc/ai-memory/env"
BIN = "/usr/local/bin/ai-memory"
STAGED = {"AI_MEMORY_FED_REQUIRE_SIG": "0", "AI_MEMORY_FED_REQUIRE_NONCE": "0",
          "AI_MEMORY_PERMISSIONS_MODE": "advisory", "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR": "1",
          "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL": "1"}
SECURE = {"AI_MEMORY_FED_REQUIRE_SIG": "1", "AI_MEMORY_FED_REQUIRE_NONCE": "1",
          "AI_MEMORY_PERMISSIONS_MODE": "enforce", "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR": "0",
          "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL": "0", "AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS": "0"}


@pytest.fixture(scope="module")
def sf():
    s = SeededFleet("fpup", 3, shared=True, rows=250)
    shared = s.fleet.shared_dir[0]   # (path inside the hosts, backing dir on the controller)
    # One config.toml for the fleet, on the share, linked from every host's HOME (NFS-shared config).
    s.exec("h1", "cp -p %s %s/config.toml && chown aimem:aimem %s && chmod 0750 %s" % (CFG, shared, shared, shared))
    for h in s.hosts:
        s.exec(h, "ln -sfn %s/config.toml %s && chown -h aimem:aimem %s" % (shared, CFG, CFG))
    s.shared = shared
    s.memories = {h: s.sql(h, DB, "SELECT id || '|' || content FROM memories ORDER BY id") for h in s.hosts}
    s.original = {h: {"bin": s.digest(h, BIN), "env": s.digest(h, ENV)} for h in s.hosts}
    s.original_config = s.digest("h1", shared + "/config.toml")
    yield s
    s.down()


def _vars(extra=None):
    v = {"aimem_config_shared": True, "aimem_config_leader": "h1", "aimem_hosts": "fleet"}
    v.update(extra or {})
    return v


def _daemon_pid(sf, host):
    return sf.exec(host, "cat /run/ai-memory.pid", check=False).stdout.strip()


def _proc_env(sf, host):
    pid = _daemon_pid(sf, host)
    raw = sf.exec(host, "tr '\\0' '\\n' < /proc/%s/environ" % pid).stdout
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def _report(sf):
    with open(os.path.join(sf.vars["aimem_controller_dir"], "report", "latest", "report.json")) as f:
        return json.load(f)


def test_check_diff_on_the_unupgraded_fleet_changes_nothing_and_shows_the_diffs(sf):
    before = {h: (sf.digest(h, BIN), sf.digest(h, ENV), sf.digest(h, DB), _daemon_pid(sf, h)) for h in sf.hosts}
    r = sf.play(os.path.join(PLAYBOOKS, "upgrade.yml"), extra=_vars(), check=True, diff=True)
    assert r.rc == 0, r.output
    after = {h: (sf.digest(h, BIN), sf.digest(h, ENV), sf.digest(h, DB), _daemon_pid(sf, h)) for h in sf.hosts}
    assert after == before
    assert sf.digest("h1", sf.shared + "/config.toml") == sf.original_config
    assert sf.exec("h1", "ls %s | grep -c bak || true" % sf.shared).stdout.strip() == "0"
    # the config diff (v1 -> v2) and the env diff are shown
    assert "schema_version = 2" in r.stdout and "+AI_MEMORY_FED_REQUIRE_SIG=0" in r.stdout
    assert all(r.recap[h]["failed"] == 0 for h in sf.hosts)


def test_upgrade_migrates_the_shared_config_once_and_every_host(sf):
    r = sf.play(os.path.join(PLAYBOOKS, "upgrade.yml"), extra=_vars())
    assert r.rc == 0, r.output
    for h in sf.hosts:
        assert sf.exec(h, [BIN, "--version"]).stdout.strip() == "ai-memory 0.7.0"
        assert sf.sql(h, DB, "SELECT max(version) FROM schema_version") == "54"
        assert sf.sql(h, DB, "SELECT id || '|' || content FROM memories ORDER BY id") == sf.memories[h]
        assert sf.exec(h, "test -L %s && readlink %s" % (CFG, CFG)).stdout.strip() == sf.shared + "/config.toml"
        env = dict(l.split("=", 1) for l in sf.exec(h, ["cat", ENV]).stdout.splitlines() if "=" in l and not l.startswith("#"))
        assert {k: env.get(k) for k in STAGED} == STAGED
        assert _proc_env(sf, h)["AI_MEMORY_PERMISSIONS_MODE"] == "advisory"
    # exactly one config backup, on the share, and the v2 file
    backups = sf.exec("h1", "ls %s" % sf.shared).stdout.split()
    assert len([b for b in backups if b.startswith("config.toml.bak.")]) == 1, backups
    assert "schema_version = 2" in sf.exec("h1", ["cat", sf.shared + "/config.toml"]).stdout
    rep = _report(sf)
    assert rep["summary"]["ok"] is True and rep["summary"]["hosts"] == 3
    for row in rep["hosts"]:
        assert row["status"] == "upgraded" and row["version_before"] == "0.6.4" and row["version_after"] == "0.7.0"
        assert row["schema_before"] == 20 and row["schema_after"] == 54 and row["digest_equal"] is True
        assert row["memories_before"] == row["memories_after"] == 250
        assert re.match(r"^[0-9a-f]{64}$", row["snapshot_sha256"]) and row["snapshot"].startswith(DB + ".pre-migration-v20-to-v54-")
    text = open(os.path.join(sf.vars["aimem_controller_dir"], "report", "latest", "report.txt")).read()
    assert "0.6.4 -> 0.7.0" in text and "3 host(s): upgraded 3" in text


def test_second_upgrade_run_changes_nothing(sf):
    pids = {h: _daemon_pid(sf, h) for h in sf.hosts}
    r = sf.play(os.path.join(PLAYBOOKS, "upgrade.yml"), extra=_vars())
    assert r.rc == 0, r.output
    assert r.changed() == {h: 0 for h in sf.hosts}, r.stdout[-3000:]
    assert {h: _daemon_pid(sf, h) for h in sf.hosts} == pids
    assert all(row["status"] == "up-to-date" for row in _report(sf)["hosts"])


def test_secure_flips_every_flag_and_the_daemons_see_them(sf):
    r = sf.play(os.path.join(PLAYBOOKS, "secure.yml"), extra=_vars())
    assert r.rc == 0, r.output
    for h in sf.hosts:
        env = dict(l.split("=", 1) for l in sf.exec(h, ["cat", ENV]).stdout.splitlines() if "=" in l and not l.startswith("#"))
        assert {k: env.get(k) for k in SECURE} == SECURE
        penv = _proc_env(sf, h)
        assert {k: penv.get(k) for k in SECURE} == SECURE
        st = sf.exec(h, "stat -c '%a %U' " + ENV).stdout.split()
        assert st[1] == "root" and int(st[0], 8) & 0o007 == 0
    r2 = sf.play(os.path.join(PLAYBOOKS, "secure.yml"), extra=_vars())
    assert r2.rc == 0 and r2.changed() == {h: 0 for h in sf.hosts}, r2.output
    # a later upgrade run never re-stages a secured host
    r3 = sf.play(os.path.join(PLAYBOOKS, "upgrade.yml"), extra=_vars())
    assert r3.rc == 0 and r3.changed() == {h: 0 for h in sf.hosts}, r3.stdout[-3000:]


def test_rollback_returns_a_host_to_0_6_4_with_its_rows_and_config(sf):
    r = sf.play(os.path.join(PLAYBOOKS, "rollback.yml"), extra=_vars(), limit="h3")
    assert r.rc == 0, r.output
    assert sf.exec("h3", [BIN, "--version"]).stdout.strip() == "ai-memory 0.6.4"
    assert sf.digest("h3", BIN) == sf.original["h3"]["bin"]
    assert sf.sql("h3", DB, "SELECT max(version) FROM schema_version") == "20"
    assert sf.sql("h3", DB, "SELECT id || '|' || content FROM memories ORDER BY id") == sf.memories["h3"]
    assert sf.exec("h3", "curl -s http://127.0.0.1:9077/api/v1/health").stdout.count('"0.6.4"') == 1
    # the shared config went back to the v1 file (restored once, on the leader's share)
    assert sf.digest("h1", sf.shared + "/config.toml") == sf.original_config
    r2 = sf.play(os.path.join(PLAYBOOKS, "rollback.yml"), extra=_vars(), limit="h3")
    assert r2.rc == 0 and r2.changed() == {"h3": 0}, r2.output
