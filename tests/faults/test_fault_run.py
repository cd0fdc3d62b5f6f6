"""Faults of the run itself (cases 7, 8 and 13): a host's sshd killed in the middle of its batch,
ansible-playbook SIGKILLed at several points, two controllers on one host at the same time.
"""
import json
import os
import re
import time

import pytest

from faultlib import (CFG, DB, ENV, WORK, assert_failed_clearly, assert_upgraded, converge, fault_fleet,
                      host_state, memories, report_row, upgrade, PLAYBOOKS)

UPGRADE = os.path.join(PLAYBOOKS, "upgrade.yml")


def wait_for(sf, host, test, what, run=None, timeout=240):
    """Poll ``test -e``-style shell ``test`` on the host (no SSH) until it holds."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if sf.exec(host, test, check=False).returncode == 0:
            return time.time() - t0
        if run is not None and not run.running():
            res = run.wait()
            raise AssertionError("the run ended before %s on %s:\n%s" % (what, host, res.output[-4000:]))
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s on %s" % (what, host))


@pytest.fixture(scope="module")
def sf():
    s = fault_fleet("frun", 5, rows=100)
    yield s
    s.down()


def test_case07_host_unreachable_mid_batch_stops_the_roll_and_the_others_stay_consistent(sf):
    hosts = ["h1", "h2", "h3"]
    h3_before = host_state(sf, "h3")
    run = sf.start(UPGRADE, limit=",".join(hosts), extra={"aimem_serial": [1, "25%"]})
    # h1 is the canary; h2 the second batch: cut its SSH as soon as it is drained
    wait_for(sf, "h2", "test -e %s/drain.json" % WORK, "the drain of h2", run)
    sf.exec("h2", "pkill -x sshd")
    r = run.wait()
    assert r.rc != 0
    assert r.recap["h2"]["unreachable"] == 1, r.recap
    assert re.search(r"(UNREACHABLE|unreachable).*h2|h2.*UNREACHABLE", r.stdout), r.stdout[-3000:]
    # the canary is fully upgraded and serving; the roll stopped: h3 was never touched
    assert_upgraded(sf, "h1")
    after = host_state(sf, "h3")
    assert after == h3_before
    assert "h3" not in r.recap or r.recap["h3"]["changed"] == 0
    assert report_row(sf, "h1")["status"] == "upgraded"
    # h2: drained (its daemon stopped) with a verified snapshot, nothing installed or rewritten
    sf.exec("h2", "/usr/sbin/sshd")
    assert sf.exec("h2", "/usr/local/bin/ai-memory --version").stdout.strip() == "ai-memory 0.6.4"
    assert memories(sf, "h2") == sf.baseline["h2"]


def test_case07_rerun_after_the_host_is_back_converges(sf):
    r = converge(sf, ["h1", "h2", "h3"])
    for h in ("h1", "h2", "h3"):
        assert r.recap[h]["failed"] == 0
        assert_upgraded(sf, h)
    # (h1 changes only now what the stopped roll never reached: the identity enrolment play)
    # the killed run's lock on h2 belonged to an ansible-playbook that is gone: broken, with a warning
    text = " ".join((r.stdout + r.stderr).split())
    assert "h2: breaking the run lock %s/run.lock of dead" % WORK in text, text[-3000:]


POLICY = '\n[governance]\n\n[[governance.policy]]\nscope = "team/*"\naction = "write"\nrole = "intern"\ndecision = "deny"\n'
KILL_POINTS = [
    ("after the release was fetched, before the drain", "test -d %s/unpack-0.7.0" % WORK),
    ("after the drain (daemon stopped, snapshot taken)", "test -e %s/drain.json" % WORK),
    ("after the install", "test -e %s/install.json" % WORK),
    ("after the config migration", "ls %s.bak.* >/dev/null 2>&1" % CFG),
    ("after the posture was staged", "test -e %s/security.json" % WORK),
]


def test_case08_ansible_playbook_sigkilled_at_five_points_then_rerun_converges(sf):
    host = "h4"
    sf.exec(host, "cat >> %s" % CFG, input=POLICY)
    for what, marker in KILL_POINTS:
        run = sf.start(UPGRADE, limit=host)
        wait_for(sf, host, marker, what, run)
        r = run.kill()
        assert r.rc == -9 or r.rc == 137, (what, r.rc)
    # the DB never changed under the kills: the memories are the seeded ones, whatever the schema
    assert memories(sf, host) == sf.baseline[host]
    r = upgrade(sf, limit=host)
    assert r.rc == 0, r.output[-6000:]
    assert_upgraded(sf, host)
    # exactly one of everything the upgrade keeps: snapshot (in assert_upgraded), config backup,
    # env backup, kept binary; no governance rule appended twice
    # (config migrate + the permissions rule: one backup each)
    assert len(sf.exec(host, "ls %s.bak.* 2>/dev/null; true" % CFG).stdout.split()) == 2
    assert len(sf.exec(host, "ls %s.bak.* 2>/dev/null; true" % ENV).stdout.split()) <= 1
    assert len(sf.exec(host, "ls %s/bin/ 2>/dev/null; true" % WORK).stdout.split()) == 1
    cfg = sf.exec(host, ["cat", CFG]).stdout
    assert cfg.count("[[permissions.rules]]") == 1, cfg
    assert cfg.count("[[governance.policy]]") == 1, cfg
    r2 = upgrade(sf, limit=host)
    assert r2.rc == 0 and r2.changed() == {host: 0}, r2.recap
    assert report_row(sf, host)["status"] == "up-to-date"


def test_case13_second_controller_on_the_same_host_fails_cleanly_on_the_run_lock(sf):
    host = "h5"
    first = sf.start(UPGRADE, limit=host)
    wait_for(sf, host, "test -e %s/run.lock" % WORK, "the first run's lock", first)
    first.pause()            # the first controller is busy on the host (alive, holding its lock)
    try:
        holder = json.loads(sf.exec(host, ["cat", WORK + "/run.lock"]).stdout)
        assert holder["pid"] == first.pid
        before = host_state(sf, host)
        second = upgrade(sf, limit=host)
        final = assert_failed_clearly(second, host, r"cannot take the run lock %s/run\.lock" % WORK,
                                      holder["run_id"], r"pid %d" % first.pid, r"aimem_lock_wait")
        assert "was not stopped and nothing was installed" in final
        assert host_state(sf, host) == before          # the second run changed nothing
    finally:
        first.resume()
    r = first.wait()
    assert r.rc == 0, r.output[-5000:]
    assert_upgraded(sf, host)
    assert sf.exec(host, "test -e %s/run.lock" % WORK, check=False).returncode != 0   # released


def test_case13_second_controller_with_aimem_lock_wait_waits_for_the_first(sf):
    host = "h5"
    first = sf.start(UPGRADE, limit=host)
    wait_for(sf, host, "test -e %s/run.lock" % WORK, "the first run's lock", first)
    first.pause()
    try:
        second = sf.start(UPGRADE, limit=host, extra={"aimem_lock_wait": 300})
        # the second run is at the lock (the task before it is done): let it wait a while
        t0 = time.time()
        while "Look at the work directory" not in second.tasks_done():
            assert second.running() and time.time() - t0 < 300, "the second run never reached the lock"
            time.sleep(0.2)
        time.sleep(3)
        assert second.running()
    finally:
        first.resume()
    r = first.wait()
    assert r.rc == 0 and r.changed() == {host: 0}, r.output[-5000:]
    res = second.wait()
    assert res.rc == 0, res.output[-5000:]
    assert res.changed() == {host: 0}
    waited = [x["result"].get("waited", 0) for x in res.results if x["task"] == "Take the run lock of this host"]
    assert waited and max(waited) >= 3, waited
    assert_upgraded(sf, host)
