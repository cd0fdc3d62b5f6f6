"""Role aimem.fleet.preflight on a 2-host test fleet seeded with ai-memory 0.6.4 (tests/roles/rolelib.py).

Both hosts pass a check-mode and a real run (schema 20, 0.6.4, needs_upgrade). Then each run gives the
two hosts a different fault - a missing DB, a broken TOML config, a wrong aimem_service_home, an
unknown schema (v60, on a copy of the DB), a missing pin, the tilde trap - and every fault fails (or, for the tilde trap, is detected) naming the host and the fix while nothing on
either host changes (digests before/after). Per-host settings come from an extra inventory's
group_vars/host_vars (extra vars would win over host vars)."""
import json
import os
import time

import pytest

from rolelib import SeededFleet

PLAYBOOK = "tests/roles/playbooks/preflight.yml"
HOME = "/var/lib/ai-memory"
DB = HOME + "/ai-memory.db"
CFG = HOME + "/.config/ai-memory/config.toml"
ENV = "/etc/ai-memory/env"
TRIPLE = "x86_64-unknown-linux-gnu" if os.uname().machine == "x86_64" else "aarch64-unknown-linux-gnu"
SHOW = "Show the preflight result"
GATHER = "The facts were gathered (the DB exists)"
T_USER = "The service user exists and its HOME is aimem_service_home"
T_SCHEMA = "The DB schema is the source or the target schema"
T_CONFIG = "The config parses"
T_PIN = "The release asset for this host is pinned by sha256"
WAIT_HEALTH = ("python3 -c \"import time,urllib.request as u\n"
               "for i in range(100):\n"
               "  try:\n"
               "    u.urlopen('http://127.0.0.1:9077/api/v1/health', timeout=1); break\n"
               "  except Exception: time.sleep(0.1)\n"
               "else: raise SystemExit('daemon did not come up')\"")


@pytest.fixture(scope="module")
def sf():
    t0 = time.monotonic()
    fleet = SeededFleet("rpre", 2)
    fleet.timings = {"up+seed": time.monotonic() - t0}
    yield fleet
    fleet.down()
    print("\npreflight role timings (s): %s" % ", ".join("%s=%.1f" % kv for kv in fleet.timings.items()))


def _play(sf, label, host_vars=None, check=False, playbook=PLAYBOOK):
    """The role on both hosts; ``host_vars`` {host: {var: value}} through an extra inventory."""
    d = os.path.join(sf.tmp, "inv-%s" % label)
    os.makedirs(os.path.join(d, "group_vars"))
    os.makedirs(os.path.join(d, "host_vars"))
    with open(os.path.join(d, "hosts.ini"), "w") as f:
        f.write("[fleet]\n%s\n" % "\n".join(sf.hosts))
    with open(os.path.join(d, "group_vars", "all.json"), "w") as f:
        json.dump(sf.vars, f)
    for h, v in (host_vars or {}).items():
        with open(os.path.join(d, "host_vars", "%s.json" % h), "w") as f:
            json.dump(v, f)
    t0 = time.monotonic()
    r = sf.play(playbook, use_vars=False, check=check, args=["-i", os.path.join(d, "hosts.ini")])
    sf.timings[label] = time.monotonic() - t0
    return r


def _state(sf, host):
    """Every file the install consists of (paths, types, modes, owners, sha256); the -shm index and the
    daemon's log are left out (readers and the daemon legitimately touch them)."""
    return sf.exec(host, (
        "find %s /etc/ai-memory /root -xdev \\( -name '*-shm' -o -name '*.log' \\) -prune -o "
        "-printf '%%p %%y %%m %%u\\n' | sort; "
        "find %s /etc/ai-memory -xdev -type f ! -name '*-shm' ! -name '*.log' -exec sha256sum {} + | sort; "
        "sha256sum /usr/local/bin/ai-memory") % (HOME, HOME)).stdout


def _failed(r, task, host):
    found = [x for x in r.results if x["task"] == task and x["host"] == host]
    assert len(found) == 1, "task %r on %s ran %d times\n%s" % (task, host, len(found), r.output)
    assert found[0]["status"] == "failed", "%s on %s: %s\n%s" % (task, host, found[0]["status"], r.output)
    return found[0]["result"]["msg"]


def _shown(r, host):
    return r.task(SHOW, host)["msg"]


def test_seeded_hosts_pass_real_and_check_mode_change_nothing(sf):
    before = dict((h, _state(sf, h)) for h in sf.hosts)
    # the collection's own playbook, in check mode
    r = _play(sf, "check", check=True, playbook="playbooks/preflight.yml")
    assert r.rc == 0, r.output
    assert dict((h, _state(sf, h)) for h in sf.hosts) == before
    for h in sf.hosts:
        summary = r.task("Summary of this host", h)["msg"]
        assert summary.startswith("%s: ai-memory 0.6.4 (%s), DB %s from AI_MEMORY_DB of the running daemon"
                                  % (h, TRIPLE, DB)), summary
        assert "schema v20" in summary and "needs the upgrade" in summary and "tilde" not in summary
    r = _play(sf, "real")
    assert r.rc == 0, r.output
    assert r.changed() == {"h1": 0, "h2": 0}
    assert dict((h, _state(sf, h)) for h in sf.hosts) == before
    for h in sf.hosts:
        shown = _shown(r, h)
        res = shown["result"]
        assert res["schema_before"] == 20 and res["version_before"] == "0.6.4" and res["needs_upgrade"] is True
        assert shown["needs_upgrade"] is True and shown["pin_env"] is False and shown["db_path"] == DB
        assert res["db_path"] == DB and res["db_pin_env"] is False and res["triple"] == TRIPLE
        assert res["db_source"].startswith("AI_MEMORY_DB of the running daemon (pid ")
        assert res["config_path"] == CFG and res["daemon_running"] is True
        # counts as the DB itself says
        assert res["counts_before"]["memories"] == int(sf.sql(h, DB, "SELECT COUNT(*) FROM memories"))
        assert res["binary_sha256"] == sf.digest(h, "/usr/local/bin/ai-memory")


def test_missing_db_and_broken_config(sf):
    sf.exec("h1", "mv %s %s.rpre-aside" % (DB, DB))
    sf.exec("h2", "cp -p %s %s.rpre-keep && printf 'db = \"%s\"\\ntier = \"semantic\"\\n[ttl\\nshort_hours = 6\\n' > %s"
            % (CFG, CFG, DB, CFG))
    try:
        before = dict((h, _state(sf, h)) for h in sf.hosts)
        r = _play(sf, "faults-1")
        after = dict((h, _state(sf, h)) for h in sf.hosts)
    finally:
        sf.exec("h1", "mv %s.rpre-aside %s" % (DB, DB))
        sf.exec("h2", "mv %s.rpre-keep %s" % (CFG, CFG))
    assert r.rc != 0 and r.recap["h1"]["failed"] == 1 and r.recap["h2"]["failed"] == 1
    assert after == before
    msg = _failed(r, GATHER, "h1")
    assert msg.startswith("h1: ") and "database %s" % DB in msg and "does not exist" in msg
    assert "AI_MEMORY_DB of the running daemon" in msg and "fix:" in msg and "aimem_db_path" in msg
    msg = _failed(r, T_CONFIG, "h2")
    assert msg.startswith("h2: ") and CFG in msg and "line 3" in msg and "Fix the file" in msg


def test_wrong_home_and_unknown_schema_on_a_copy(sf):
    c60 = HOME + "/rpre-v60.db"
    sf.exec("h2", "cp %s %s && sqlite3 %s 'UPDATE schema_version SET version=60'" % (DB, c60, c60))
    try:
        before = dict((h, _state(sf, h)) for h in sf.hosts)
        r = _play(sf, "faults-2", host_vars={"h1": {"aimem_service_home": "/srv/wrong-home"},
                                            "h2": {"aimem_db_path": c60}})
        after = dict((h, _state(sf, h)) for h in sf.hosts)
        assert sf.sql("h2", c60, "SELECT version FROM schema_version") == "60"
    finally:
        sf.exec("h2", "rm -f %s" % c60)
    assert r.rc != 0 and r.recap["h1"]["failed"] == 1 and r.recap["h2"]["failed"] == 1
    assert after == before
    msg = _failed(r, T_SCHEMA, "h2")
    assert msg.startswith("h2: ") and c60 in msg and "schema v60" in msg and "Nothing was changed" in msg
    msg = _failed(r, T_USER, "h1")
    assert msg.startswith("h1: ") and "/srv/wrong-home" in msg and "passwd home of aimem is %s" % HOME in msg
    assert "Fix aimem_service_home" in msg
    assert sf.exec("h1", "test -e /srv/wrong-home", check=False).returncode != 0


def test_tilde_trap_is_detected_and_a_missing_pin_refused(sf):
    literal = HOME + "/~/.claude/ai-memory.db"
    sf.exec("h1", (
        "/etc/init.d/ai-memory stop && cp -p {env} {home}/.rpre-env.keep && cp -p {cfg} {cfg}.rpre-keep && "
        "printf '# AI_MEMORY_DB not set: the config decides\\n' > {env} && "
        "sed -i 's|^db = .*|db = \"~/.claude/ai-memory.db\"|' {cfg} && "
        "mkdir -p '{home}/~/.claude' && mv {db} '{lit}' && "
        "for s in -wal -shm; do [ -e {db}$s ] && mv {db}$s '{lit}'$s; done; "
        "chown -R aimem:aimem '{home}/~' && /etc/init.d/ai-memory start").format(
            env=ENV, home=HOME, cfg=CFG, db=DB, lit=literal))
    try:
        sf.exec("h1", WAIT_HEALTH)
        before = dict((h, _state(sf, h)) for h in sf.hosts)
        # h2: no pin for its triple (only for another one)
        r = _play(sf, "tilde+pin", host_vars={"h2": {"aimem_release_sha256": {"aarch64-apple-darwin": "0" * 64}}})
        after = dict((h, _state(sf, h)) for h in sf.hosts)
    finally:
        sf.exec("h1", (
            "/etc/init.d/ai-memory stop; for s in '' -wal -shm; do [ -e '{lit}'$s ] && mv '{lit}'$s {db}$s; done; "
            "rm -rf '{home}/~' && mv {home}/.rpre-env.keep {env} && mv {cfg}.rpre-keep {cfg} && "
            "/etc/init.d/ai-memory start").format(env=ENV, home=HOME, cfg=CFG, db=DB, lit=literal))
        sf.exec("h1", WAIT_HEALTH)
    assert after == before
    assert r.recap["h1"]["failed"] == 0 and r.recap["h2"]["failed"] == 1, r.output
    msg = _failed(r, T_PIN, "h2")
    assert msg.startswith("h2: ") and TRIPLE in msg and "add it to aimem_release_sha256" in msg
    assert "pins for: aarch64-apple-darwin" in msg
    shown = _shown(r, "h1")
    res = shown["result"]
    assert shown["db_path"] == literal and res["db_path"] == literal and res["db_source"] == "config db"
    assert shown["pin_env"] is True and res["db_pin_env"] is True
    assert res["v070_db_path"] == HOME + "/.claude/ai-memory.db"
    assert res["schema_before"] == 20 and res["counts_before"]["memories"] > 0
    gathered = r.task("Gather the facts of the ai-memory install", "h1")
    assert "tilde trap: v0.7.0 would open %s/.claude/ai-memory.db" % HOME in gathered["msg"]
    assert sf.exec("h1", "test -e %s/.claude" % HOME, check=False).returncode != 0
