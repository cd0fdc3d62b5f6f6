"""The drain role and the common role's stop/start on a real 2-host test fleet (ai-memory 0.6.4,
process manager = the seed's pidfile init script).

The tests run in file order and share one fleet (module scope); each step starts from the state the
previous one left:
  check mode -> drain (h2: stray `ai-memory mcp`, policy fail) -> drain (h2: policy sigint)
  -> idempotent re-run (h2: manager none) -> start (h1 process, h2 none) -> h1 needs_upgrade=false
  + h2 manager none with a running daemon fails -> re-drain of a restarted h1 (no new snapshot) and
  a daemon that ignores SIGINT on h2 (pidfile path) fails the stop within the timeout.
"""
import json
import time

import pytest

from rolelib import SeededFleet

DB = "/var/lib/ai-memory/ai-memory.db"
HOME = "/var/lib/ai-memory"
WORK = HOME + "/.aimem-fleet"
DRAIN_PB = "tests/roles/playbooks/drain.yml"
SERVICE_PB = "tests/roles/playbooks/drain_service.yml"
PER_HOST = ("aimem_service_manager", "aimem_service_init_script")
TIMINGS = {}


@pytest.fixture(scope="module")
def sf():
    t = time.time()
    fleet = SeededFleet("rdrain", 2, rows=120)
    TIMINGS["fleet up + seed"] = time.time() - t
    yield fleet
    fleet.down()
    print("\nrdrain timings: " + ", ".join("%s %.1fs" % kv for kv in TIMINGS.items()))


def play(sf, playbook, label, hv=None, extra=None, **kw):
    """Run a playbook with the fleet vars, per-host settings in ``drain_hv``."""
    evars = {k: v for k, v in sf.vars.items() if k not in PER_HOST}
    evars.update({"aimem_db_path": DB, "drain_hv": hv or {}})
    evars.update(extra or {})
    t = time.time()
    r = sf.play(playbook, extra=evars, use_vars=False, **kw)
    TIMINGS[label] = time.time() - t
    return r


def sh(sf, host, cmd, check=True):
    return sf.exec(host, cmd, check=check).stdout.strip()


def sql(sf, host, path, query):
    # immutable=1: never creates -wal/-shm (root-owned sidecars would lock the daemon out)
    return sh(sf, host, ["sqlite3", "file:%s?immutable=1" % path, query])


def daemon_pids(sf, host):
    out = sh(sf, host, "pgrep -u aimem -f '^/usr/bin/python3 /usr/local/bin/ai-memory serve' || true")
    return sorted(int(p) for p in out.split())


def wal_bytes(sf, host):
    out = sh(sf, host, "stat -c %%s %s-wal 2>/dev/null || echo absent" % DB)
    return None if out == "absent" else int(out)


def snapshots(sf, host):
    return sh(sf, host, "ls %s.pre-migration-* 2>/dev/null || true" % DB).split()


def drain_json(sf, host):
    return json.loads(sh(sf, host, "cat %s/drain.json" % WORK))


def start_stray_mcp(sf, host):
    """An `ai-memory mcp` of the service user holding the DB (stdin kept open by a sleep)."""
    sf.exec(host, "su -s /bin/sh aimem -c '(sleep 600 | AI_MEMORY_DB=%s /usr/local/bin/ai-memory mcp)"
                  " >/dev/null 2>&1 </dev/null &'" % DB)
    for _ in range(50):
        pid = sh(sf, host, "pgrep -u aimem -f '^/usr/bin/python3 /usr/local/bin/ai-memory mcp' || true")
        if pid and DB + "-wal" in sh(sf, host, "ls -l /proc/%s/fd 2>/dev/null || true" % pid.split()[0]):
            return int(pid.split()[0])
        time.sleep(0.1)
    raise AssertionError("the stray mcp did not start on %s" % host)


def write_through_wal(sf, host, tag):
    """Commit a row while the daemon holds the DB: it stays in the -wal until a checkpoint."""
    sf.exec(host, ["su", "-s", "/bin/sh", "aimem", "-c",
                   "sqlite3 %s \"PRAGMA busy_timeout=5000; INSERT INTO namespace_meta(namespace, updated_at) "
                   "VALUES('%s', '2026-01-01T00:00:00Z')\"" % (DB, tag)])


def test_check_mode_stops_nothing(sf):
    for h in sf.hosts:
        write_through_wal(sf, h, "check-%s" % h)
    before = {h: (daemon_pids(sf, h), wal_bytes(sf, h), sf.tree_digest(h, [DB, DB + "-wal", "/run/ai-memory.pid"]))
              for h in sf.hosts}
    assert all(b[0] and b[1] for b in before.values()), before
    r = play(sf, DRAIN_PB, "drain --check", check=True, diff=True)
    assert r.rc == 0, r.output
    for h in sf.hosts:
        assert r.recap[h]["changed"] > 0, r.recap
        assert r.task("Report the stop a real run would do (check mode)", h)["changed"] is True
        assert (daemon_pids(sf, h), wal_bytes(sf, h),
                sf.tree_digest(h, [DB, DB + "-wal", "/run/ai-memory.pid"])) == before[h]
        assert snapshots(sf, h) == []
        assert sh(sf, h, "test -e %s && echo yes || echo no" % WORK) == "no"


def test_drain_stops_with_sigint_snapshots_and_stray_fails(sf):
    stray = start_stray_mcp(sf, "h2")
    r = play(sf, DRAIN_PB, "drain (h2 stray, fail)", extra={"aimem_drain_holder_timeout": 2})
    assert r.rc != 0
    assert r.recap["h1"]["failed"] == 0 and r.recap["h2"]["failed"] == 1, r.recap
    # h1: drained with SIGINT - the daemon checkpointed its WAL (a SIGTERM/SIGKILL leaves it full)
    assert daemon_pids(sf, "h1") == []
    assert wal_bytes(sf, "h1") in (None, 0)
    assert sh(sf, "h1", "test -e /run/ai-memory.pid && echo yes || echo no") == "no"
    snaps = snapshots(sf, "h1")
    assert len(snaps) == 2, snaps  # the .bak and its .json manifest
    snap = [s for s in snaps if s.endswith(".bak")][0]
    manifest = json.loads(sh(sf, "h1", "cat %s.json" % snap))
    rec = drain_json(sf, "h1")
    assert set(rec) == {"db", "snapshot", "manifest", "sha256", "schema_before", "counts", "content_digest",
                        "taken_at"}
    assert rec["db"] == DB and rec["snapshot"] == snap and rec["manifest"] == snap + ".json"
    assert rec["sha256"] == manifest["sha256"] == sh(sf, "h1", "sha256sum %s" % snap).split()[0]
    assert rec["schema_before"] == 20 and ".pre-migration-v20-to-v54-" in snap
    assert rec["taken_at"] == manifest["created_at"]
    assert rec["content_digest"] == manifest["content_digest"]
    for table in ("memories", "memory_links", "archived_memories", "namespace_meta"):
        q = "SELECT count(*) FROM %s" % table
        assert sql(sf, "h1", snap, q) == sql(sf, "h1", DB, q)
    assert rec["counts"]["memories"] == int(sql(sf, "h1", DB, "SELECT count(*) FROM memories"))
    q = "SELECT group_concat(id || content, '|') FROM (SELECT id, content FROM memories ORDER BY id)"
    assert sql(sf, "h1", snap, q) == sql(sf, "h1", DB, q)
    assert sql(sf, "h1", snap, "SELECT count(*) FROM namespace_meta WHERE namespace='check-h1'") == "1"
    assert sh(sf, "h1", "stat -c '%%a %%U' %s %s/drain.json" % (WORK, WORK)).split("\n") == ["700 root", "600 root"]
    assert r.task("Publish the drain result", "h1")["ansible_facts"]["aimem_drain_result"] == rec
    # h2: the daemon was stopped, then the stray mcp failed the host by pid and command; no snapshot
    msg = r.task("Fail on stray holders of the database", "h2")["msg"]
    assert "h2:" in msg and "pid %d" % stray in msg and "ai-memory mcp" in msg and "aimem_drain_stray_holders" in msg
    assert daemon_pids(sf, "h2") == []
    assert snapshots(sf, "h2") == [] and sh(sf, "h2", "test -e %s/drain.json && echo yes || echo no" % WORK) == "no"
    assert sh(sf, "h2", "test -d /proc/%d && echo alive" % stray, check=False) == "alive"

    # policy sigint clears the stray; h1 (already drained) changes nothing
    h1_state = sf.tree_digest("h1", [DB, WORK + "/drain.json", snap, snap + ".json"])
    r = play(sf, DRAIN_PB, "drain (h2 sigint)", hv={"h2": {"aimem_drain_stray_holders": "sigint"}},
             extra={"aimem_drain_holder_timeout": 2})
    assert r.rc == 0, r.output
    assert r.recap["h1"]["changed"] == 0, r.recap
    assert sf.tree_digest("h1", [DB, WORK + "/drain.json", snap, snap + ".json"]) == h1_state
    assert r.task("Send SIGINT to the stray holders", "h2")["changed"] is True
    assert sh(sf, "h2", "test -d /proc/%d && echo alive || echo gone" % stray) == "gone"
    assert wal_bytes(sf, "h2") in (None, 0)  # the last closer (mcp on SIGINT) checkpointed too
    rec2 = drain_json(sf, "h2")
    assert rec2["snapshot"] in snapshots(sf, "h2") and rec2["schema_before"] == 20
    assert sql(sf, "h2", rec2["snapshot"], "SELECT count(*) FROM memories") == sql(
        sf, "h2", DB, "SELECT count(*) FROM memories")


def test_second_run_changes_nothing_and_manager_none_is_ok(sf):
    state = {h: sf.tree_digest(h, [DB, WORK + "/drain.json"] + snapshots(sf, h)) for h in sf.hosts}
    r = play(sf, DRAIN_PB, "drain re-run", hv={"h2": {"aimem_service_manager": "none"}})
    assert r.rc == 0, r.output
    assert r.changed() == {"h1": 0, "h2": 0}, r.recap
    for h in sf.hosts:
        assert r.task("Take the verified pre-migration snapshot (finds an existing one of the same content)",
                      h)["changed"] is False
        assert sf.tree_digest(h, [DB, WORK + "/drain.json"] + snapshots(sf, h)) == state[h]


def test_start_brings_the_daemon_back(sf):
    r = play(sf, SERVICE_PB, "start x2", hv={"h2": {"aimem_service_manager": "none"}},
             extra={"drain_service_actions": ["start", "start"], "aimem_common_expect_version": "0.6.4"})
    assert r.rc == 0, r.output
    assert r.recap["h1"]["changed"] == 1 and r.recap["h2"]["changed"] == 0, r.recap
    started = r.tasks("Start the daemon with its init script", "h1")
    assert len(started) == 1 and started[0]["changed"] is True  # the second start found it running
    health = [t for t in r.tasks("Wait for the health endpoint on the host's own loopback", "h1")]
    assert [t["status"] for t in health] == [200, 200] and health[0]["json"]["version"] == "0.6.4"
    assert len(daemon_pids(sf, "h1")) == 1
    assert sh(sf, "h1", "python3 -c \"import urllib.request as u; "
                        "print(u.urlopen('http://127.0.0.1:9077/api/v1/health').status)\"") == "200"
    assert daemon_pids(sf, "h2") == []  # manager none starts nothing

    # expecting another version fails naming the host and where to look
    r = play(sf, SERVICE_PB, "start wrong version", extra={"drain_service_actions": ["start"],
                                                           "aimem_common_expect_version": "0.7.0",
                                                           "drain_hosts": "h1"})
    assert r.rc != 0
    msg = r.task("Fail when the daemon runs another version", "h1")["msg"]
    assert "h1:" in msg and '"0.6.4"' in msg and '"0.7.0"' in msg


def test_needs_upgrade_false_skips_and_manager_none_with_a_daemon_fails(sf):
    # h1: already upgraded (aimem_needs_upgrade false) -> its running daemon is left alone
    # h2: manager none, but a daemon runs -> the stop refuses, naming the pid
    pids = daemon_pids(sf, "h1")
    sf.exec("h2", "/etc/init.d/ai-memory start")
    h2_pid = daemon_pids(sf, "h2")
    assert pids and len(h2_pid) == 1
    r = play(sf, DRAIN_PB, "needs_upgrade=false + none", hv={"h1": {"aimem_needs_upgrade": False},
                                                              "h2": {"aimem_service_manager": "none"}})
    assert r.rc != 0
    assert r.recap["h1"]["changed"] == 0 and r.recap["h1"]["failed"] == 0, r.recap
    assert daemon_pids(sf, "h1") == pids
    assert r.task("Publish the drain result", "h1")["ansible_facts"]["aimem_drain_result"] == drain_json(sf, "h1")
    msg = r.task("Manager none - no daemon may be running", "h2")["msg"]
    assert "h2:" in msg and str(h2_pid[0]) in msg and "aimem_service_manager" in msg
    assert daemon_pids(sf, "h2") == h2_pid


def test_redrain_after_restart_and_a_daemon_ignoring_sigint(sf):
    # h2: restart its daemon so that it ignores SIGINT (stand-in hook); stop it by pidfile + SIGINT
    # (the init script's own --retry INT/10/KILL/5 would SIGKILL it and hide the failure)
    sf.exec("h2", "/etc/init.d/ai-memory stop && echo AIMEM_STANDIN_IGNORE_SIGINT=1 >> /etc/ai-memory/env"
                  " && /etc/init.d/ai-memory start")
    for _ in range(50):
        if daemon_pids(sf, "h2"):
            break
        time.sleep(0.1)
    stubborn = daemon_pids(sf, "h2")
    assert len(stubborn) == 1
    h1_state = {p: sf.digest("h1", p) for p in [WORK + "/drain.json"] + snapshots(sf, "h1")}
    h1_snaps = snapshots(sf, "h1")
    h2_snaps = snapshots(sf, "h2")
    r = play(sf, DRAIN_PB, "re-drain h1 + stubborn h2", hv={"h2": {"aimem_service_init_script": ""}},
             extra={"aimem_service_stop_timeout": 3})
    assert r.rc != 0
    # h1 (restarted v0.6.4, never upgraded): stopped again, same snapshot, drain.json not rewritten
    assert r.recap["h1"]["failed"] == 0, r.output
    assert daemon_pids(sf, "h1") == [] and wal_bytes(sf, "h1") in (None, 0)
    assert snapshots(sf, "h1") == h1_snaps
    assert {p: sf.digest("h1", p) for p in h1_state} == h1_state
    assert r.task("Take the verified pre-migration snapshot (finds an existing one of the same content)",
                  "h1")["changed"] is False
    assert r.task("Send SIGINT to the daemon", "h2")["changed"] is True
    # h2: SIGINT ignored -> the stop fails within the timeout naming host, pid and fix; nothing snapshotted
    msg = r.task("Fail when the daemon did not stop", "h2")["msg"]
    assert "h2:" in msg and str(stubborn[0]) in msg and "aimem_service_stop_timeout=3s" in msg and "SIGINT" in msg
    # it gave up after the timeout (3 s + the first try), it did not wait for an init-script KILL
    assert r.task("Wait until the daemon processes are gone", "h2")["attempts"] == 4
    assert daemon_pids(sf, "h2") == stubborn
    assert snapshots(sf, "h2") == h2_snaps
    assert r.tasks("Take the verified pre-migration snapshot (finds an existing one of the same content)",
                   "h2") == []
    sf.exec("h2", "kill -KILL %d; sed -i '/AIMEM_STANDIN_IGNORE_SIGINT/d' /etc/ai-memory/env" % stubborn[0])
