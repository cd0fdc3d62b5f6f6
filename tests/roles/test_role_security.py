"""aimem.fleet.security (entry points stage / secure) against a real 2-host test fleet.

stage: check mode writes nothing; the run writes exactly the 5 staged lines (0/1 values) below a
header, keeps AI_MEMORY_DB, makes the file root:root 0640 and backs it up once; a re-run changes
nothing; YAML ``true`` in a flag var is refused by argument validation. secure: refused while the
host runs 0.6.4; after the 0.7.0 binary is in place it flips all six values, restarts the running
daemon and the new daemon's /proc/<pid>/environ has them; a daemon whose manager does not load the
env file fails naming the variables; stage after secure does not downgrade.
"""
import json
import os
import shutil
import time

import pytest

from rolelib import ROOT, SeededFleet

PLAYBOOK = os.path.join(ROOT, "tests", "roles", "playbooks", "security.yml")
ENV = "/etc/ai-memory/env"
WORK = "/var/lib/ai-memory/.aimem-fleet"
DB_LINE = "AI_MEMORY_DB=/var/lib/ai-memory/ai-memory.db"
HEADER = "# aimem.fleet security posture"
STAGED = {"AI_MEMORY_FED_REQUIRE_SIG": "0", "AI_MEMORY_FED_REQUIRE_NONCE": "0",
          "AI_MEMORY_PERMISSIONS_MODE": "advisory", "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR": "1",
          "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL": "1"}
SECURE = {"AI_MEMORY_FED_REQUIRE_SIG": "1", "AI_MEMORY_FED_REQUIRE_NONCE": "1",
          "AI_MEMORY_PERMISSIONS_MODE": "enforce", "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR": "0",
          "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL": "0", "AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS": "0"}
HOSTS = ["h1", "h2"]
TIMINGS = {}


@pytest.fixture(scope="module")
def sf():
    t0 = time.monotonic()
    fleet = SeededFleet("rsec", 2, rows=20)
    TIMINGS["fleet up + seed"] = round(time.monotonic() - t0, 1)
    yield fleet
    fleet.down()
    print("\nrsec timings (s):", TIMINGS)


def _play(sf, entry, **kw):
    t0 = time.monotonic()
    extra = dict(kw.pop("extra", {}), security_entry=entry)
    r = sf.play(PLAYBOOK, extra=extra, **kw)
    TIMINGS.setdefault("runs", []).append(round(time.monotonic() - t0, 1))
    return r


def _env(sf, host):
    return sf.exec(host, ["cat", ENV]).stdout


def _flags(text):
    """{KEY: value} of the AI_MEMORY_* security lines, and the raw list of KEY=VALUE lines."""
    lines = [ln for ln in text.splitlines() if ln.startswith("AI_MEMORY_") and not ln.startswith("AI_MEMORY_DB=")]
    return dict(ln.split("=", 1) for ln in lines), lines


def _daemon_environ(sf, host):
    pid = sf.exec(host, ["cat", "/run/ai-memory.pid"]).stdout.strip()
    raw = sf.exec(host, ["cat", "/proc/%s/environ" % pid]).stdout
    return pid, dict(x.split("=", 1) for x in raw.split("\0") if "=" in x)


def _record(sf, host):
    return json.loads(sf.exec(host, ["cat", WORK + "/security.json"]).stdout)


def test_stage_check_mode_writes_nothing(sf):
    before = {h: sf.tree_digest(h, [ENV, WORK + "/security.json"]) for h in HOSTS}
    r = _play(sf, "stage", check=True, diff=True)
    assert r.rc == 0, r.output
    assert all(r.recap[h]["changed"] > 0 for h in HOSTS), r.recap
    assert "+AI_MEMORY_FED_REQUIRE_SIG=0" in r.stdout, r.stdout   # diff mode shows the changed lines
    for h in HOSTS:
        assert sf.tree_digest(h, [ENV, WORK + "/security.json"]) == before[h]
        assert sf.exec(h, "ls %s.bak.* 2>/dev/null" % ENV, check=False).stdout == ""


def test_stage_writes_exactly_the_five_lines(sf):
    original = _env(sf, "h1")
    assert original == DB_LINE + "\n"
    r = _play(sf, "stage")
    assert r.rc == 0, r.output
    for h in HOSTS:
        text = _env(sf, h)
        flags, lines = _flags(text)
        assert flags == STAGED and len(lines) == 5, text
        assert text.splitlines()[0] == DB_LINE                    # other lines preserved, in place
        assert sum(1 for ln in text.splitlines() if ln.startswith(HEADER)) == 1
        assert len(text.splitlines()) == 7, text                  # DB line + header + 5 flags, nothing else
        assert sf.exec(h, ["stat", "-c", "%U:%G %a", ENV]).stdout.strip() == "root:root 640"
        rec = _record(sf, h)
        assert rec["posture"] == "staged" and rec["env_file"] == ENV
        assert rec["env_backup_file"].startswith(ENV + ".bak.")
        assert sf.exec(h, ["cat", rec["env_backup_file"]]).stdout == original
        assert sf.exec(h, ["stat", "-c", "%a", rec["env_backup_file"]]).stdout.strip() == "600"
        res = r.task("Show the security result", h)["aimem_security_result"]
        assert res["posture"] == "staged" and res["env_changed"] is True


def test_stage_again_changes_nothing(sf):
    digests = {h: sf.tree_digest(h, [ENV, WORK + "/security.json"]) for h in HOSTS}
    r = _play(sf, "stage")
    assert r.rc == 0, r.output
    assert r.changed() == {"h1": 0, "h2": 0}, r.recap
    for h in HOSTS:
        assert sf.tree_digest(h, [ENV, WORK + "/security.json"]) == digests[h]
        assert len(sf.exec(h, "ls %s.bak.*" % ENV).stdout.split()) == 1


@pytest.mark.parametrize("var,value,where", [
    # a real YAML boolean: ansible's argument validation maps True/False onto the "1"/"0" choices (its
    # BOOLEANS rule) without converting the variable, so the role's preflight is what refuses it
    ("aimem_security_stage_fed_require_sig", True, "Every flag is a value ai-memory parses the way it is meant"),
    ("aimem_security_stage_fed_require_nonce", False, "Every flag is a value ai-memory parses the way it is meant"),
    # a string that is not 0/1: refused by argument validation (type str, choices "0"/"1")
    ("aimem_security_stage_ssrf_guard_allow_dns_fail", "yes", "Validating arguments against arg spec 'stage'"),
])
def test_yaml_booleans_are_refused(sf, var, value, where):
    before = sf.digest("h1", ENV)
    r = _play(sf, "stage", extra={var: value}, limit="h1")
    assert r.rc != 0
    failed = [x for x in r.results if x["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["task"].startswith(where), (failed, r.stdout)
    assert "still means ON" in r.stdout, r.stdout                 # the error explains why
    if value == "yes":
        assert "Validation of arguments failed" in r.stdout and "must be one of: 0, 1" in r.stdout, r.stdout
    else:
        assert "would be written as %s (bool)" % value in r.stdout, r.stdout
    assert sf.digest("h1", ENV) == before


def test_secure_is_refused_on_0_6_4(sf):
    before = sf.digest("h1", ENV)
    r = _play(sf, "secure", limit="h1")
    assert r.rc != 0
    assert "h1: /usr/local/bin/ai-memory --version reports 'ai-memory 0.6.4'" in r.stdout, r.stdout
    assert sf.digest("h1", ENV) == before
    # the probe used the throwaway HOME next to the data, not the service user's
    assert sf.exec("h1", ["test", "-f", WORK + "/probe-home/.config/ai-memory/config.toml"], check=False).returncode == 0


def test_secure_flips_all_six_and_the_restarted_daemon_sees_them(sf):
    # the hosts now run the 0.7.0 build (started with the staged env)
    for h in HOSTS:
        shutil.copy(os.path.join(sf.out, "bin", "ai-memory-0.7.0"),
                    os.path.join(str(sf.fleet.host_dir(h)), "usrlocal", "bin", "ai-memory"))
        sf.exec(h, "/etc/init.d/ai-memory restart")
    deadline = time.monotonic() + 30
    for h in HOSTS:
        while sf.exec(h, "curl -sf http://127.0.0.1:9077/api/v1/health | grep -q '\"0.7.0\"'",
                      check=False).returncode != 0:
            assert time.monotonic() < deadline, "%s: 0.7.0 daemon did not come up" % h
            time.sleep(0.5)
    old = {h: _daemon_environ(sf, h) for h in HOSTS}
    for h in HOSTS:
        assert all(old[h][1].get(k) == v for k, v in STAGED.items()), old[h]
    first_backup = {h: _record(sf, h)["env_backup_file"] for h in HOSTS}
    r = _play(sf, "secure", diff=True)
    assert r.rc == 0, r.output
    for h in HOSTS:
        text = _env(sf, h)
        flags, lines = _flags(text)
        assert flags == SECURE and len(lines) == 6, text
        assert text.splitlines()[0] == DB_LINE
        assert sf.exec(h, ["stat", "-c", "%U:%G %a", ENV]).stdout.strip() == "root:root 640"
        pid, environ = _daemon_environ(sf, h)
        assert pid != old[h][0], "%s: daemon was not restarted" % h
        assert {k: environ.get(k) for k in SECURE} == SECURE, environ
        rec = _record(sf, h)
        assert rec == {"posture": "secure", "env_file": ENV, "env_backup_file": first_backup[h]}
        res = r.task("Show the security result", h)["aimem_security_result"]
        assert res["restarted"] is True and res["daemon_env_ok"] is True
    # second run: nothing changes, no restart
    pids = {h: _daemon_environ(sf, h)[0] for h in HOSTS}
    r2 = _play(sf, "secure")
    assert r2.rc == 0 and r2.changed() == {"h1": 0, "h2": 0}, r2.output
    assert {h: _daemon_environ(sf, h)[0] for h in HOSTS} == pids


def test_stage_after_secure_does_not_downgrade(sf):
    digests = {h: sf.tree_digest(h, [ENV, WORK + "/security.json"]) for h in HOSTS}
    r = _play(sf, "stage")
    assert r.rc == 0, r.output
    assert r.changed() == {"h1": 0, "h2": 0}, r.recap
    assert 'records the posture "secure"' in r.stdout
    for h in HOSTS:
        assert sf.tree_digest(h, [ENV, WORK + "/security.json"]) == digests[h]
        assert r.task("Show the security result", h)["aimem_security_result"]["skipped"] is True


def test_secure_fails_naming_the_values_a_daemon_does_not_see(sf):
    # h2's init script stops loading the env file: the restarted daemon lacks every value
    sf.exec("h2", "sed -i 's|^\\[ -r /etc/ai-memory/env \\].*$|: env not loaded|' /etc/init.d/ai-memory "
                  "&& /etc/init.d/ai-memory restart")
    time.sleep(1)
    r = _play(sf, "secure", limit="h2")
    assert r.rc != 0
    assert "h2: the running ai-memory daemon" in r.stdout and "AI_MEMORY_FED_REQUIRE_SIG" in r.stdout, r.stdout
    assert "AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS" in r.stdout
