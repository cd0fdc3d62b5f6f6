"""Faults found after the start (cases 9 and 14): the doctor reports critical (the configured
Ollama endpoint is down), and a v0.6.4 daemon started again by an old unit on the v54 DB.
"""
import os
import time

import pytest

from faultlib import (BIN, CFG, DB, ENV, HOME, PLAYBOOKS, WORK, assert_as_it_was, assert_failed_clearly,
                      assert_upgraded, converge, daemon_pid, fault_fleet, health_version, host_state, memories,
                      report_row, upgrade)

LLM_SECTION = "LLM Reachability (#1146)"


def stop_ollama(sf, host):
    sf.exec(host, "start-stop-daemon --stop --quiet --oknodo --pidfile /run/fake-ollama.pid --remove-pidfile")
    assert sf.exec(host, "curl -s -m 2 http://127.0.0.1:11434/api/tags", check=False).returncode != 0


@pytest.fixture(scope="module")
def sf():
    s = fault_fleet("fver", 3, rows=100)
    s.original = {h: host_state(s, h) for h in s.hosts}
    yield s
    s.down()


def test_case09_doctor_critical_after_the_start_fails_the_host_and_rolls_it_back(sf):
    stop_ollama(sf, "h1")
    before = host_state(sf, "h1")
    r = upgrade(sf, limit="h1")
    final = assert_failed_clearly(r, "h1", r"doctor", LLM_SECTION.split(" (")[0], r"critical",
                                  r"aimem_verify_ignore_sections", r"rolled back")
    assert "ai-memory 0.6.4 runs again" in " ".join(final.split())
    # as it was: v0.6.4 serving (a new pid) on its v20 DB restored from the snapshot, same config/env
    assert_as_it_was(sf, "h1", before, same_pid=False, rolled_back=True)
    row = report_row(sf, "h1")
    assert row["status"] == "failed" and row["doctor_overall"] == "critical", row


def test_case09_without_automatic_rollback_the_host_is_left_drained_and_rollback_restores_it(sf):
    stop_ollama(sf, "h2")
    before = host_state(sf, "h2")
    r = upgrade(sf, limit="h2", extra={"aimem_rollback_on_failure": False})
    final = assert_failed_clearly(r, "h2", LLM_SECTION.split(" (")[0], r"left\s+drained", r"aimem\.fleet\.rollback")
    assert daemon_pid(sf, "h2") == "" and health_version(sf, "h2") is None       # drained, never half-started
    assert sf.sql("h2", DB, "SELECT max(version) FROM schema_version") == "54"
    assert memories(sf, "h2") == sf.baseline["h2"]                               # nothing lost
    rb = sf.play(os.path.join(PLAYBOOKS, "rollback.yml"), limit="h2")
    assert rb.rc == 0, rb.output[-5000:]
    assert_as_it_was(sf, "h2", before, same_pid=False, rolled_back=True)
    assert "rolled back" not in final


def test_case09_per_section_policy_lets_the_upgrade_through_with_ollama_down(sf):
    # the operator decides the LLM section does not gate this fleet (Ollama is down on purpose)
    r = converge(sf, ["h1", "h2"], extra={"aimem_verify_ignore_sections": [LLM_SECTION]})
    for h in ("h1", "h2"):
        assert r.recap[h]["failed"] == 0
        assert_upgraded(sf, h)
        assert report_row(sf, h)["status"] == "upgraded"
    # Ollama is still down: only the ignored section was critical
    assert sf.exec("h1", "curl -s -m 2 http://127.0.0.1:11434/api/tags", check=False).returncode != 0


def test_case14_old_v064_daemon_started_again_after_the_upgrade_is_detected_by_verify(sf):
    r = upgrade(sf, limit="h3")
    assert r.rc == 0, r.output[-4000:]
    assert_upgraded(sf, "h3")
    # an old unit: v0.6.4 from its own directory, started on the (now v54) DB - it opens it silently
    sf.exec("h3", "/etc/init.d/ai-memory stop && mkdir -p /opt/ai-memory-0.6.4"
                  " && cp %s/bin/ai-memory-0.6.4 /opt/ai-memory-0.6.4/ai-memory"
                  " && start-stop-daemon --start --quiet --background --make-pidfile --pidfile /run/ai-memory.pid"
                  " --chuid aimem --chdir %s --startas /usr/bin/env -- AI_MEMORY_DB=%s HOME=%s"
                  " /opt/ai-memory-0.6.4/ai-memory serve" % (WORK, HOME, DB, HOME))
    for _ in range(100):
        if health_version(sf, "h3") == "0.6.4":
            break
        time.sleep(0.1)
    assert health_version(sf, "h3") == "0.6.4"
    old_pid = daemon_pid(sf, "h3")
    r = upgrade(sf, limit="h3")
    final = assert_failed_clearly(r, "h3", r"0\.6\.4", r"/opt/ai-memory-0\.6\.4/ai-memory|pid %s" % old_pid, r"Fix")
    # the v54 DB is not left to the old binary: the old daemon is stopped, the rows are intact
    assert sf.exec("h3", "kill -0 %s" % old_pid, check=False).returncode != 0, final
    assert sf.sql("h3", DB, "SELECT max(version) FROM schema_version") == "54"
    assert memories(sf, "h3") == sf.baseline["h3"]
    # the fix: remove the old unit; the next run starts v0.7.0 again
    sf.exec("h3", "rm -rf /opt/ai-memory-0.6.4")
    r2 = upgrade(sf, limit="h3")
    assert r2.rc == 0, r2.output[-4000:]
    assert_upgraded(sf, "h3")
