"""Faults of the drain (cases 3, 4 and 6): a daemon that will not stop, a stray holder of the DB,
no room for the snapshot. No snapshot is taken and nothing is installed; the old daemon serves.
"""
import time

import pytest

from faultlib import (BIN, DB, ENV, assert_as_it_was, assert_failed_clearly, assert_upgraded, converge,
                      daemon_pid, fault_fleet, health_version, host_state, report_row, upgrade)


def wait_serving(sf, host, version="0.6.4"):
    for _ in range(100):
        if health_version(sf, host) == version:
            return
        time.sleep(0.1)
    raise AssertionError("%s does not serve %s" % (host, version))


def snapshots(sf, host):
    return sf.exec(host, "ls %s.pre-migration-* 2>/dev/null; true" % DB).stdout.split()


@pytest.fixture(scope="module")
def sf():
    s = fault_fleet("fdrn", 3, rows=120)
    yield s
    s.down()


def test_case03_daemon_ignoring_sigint_is_not_snapshotted_nor_replaced(sf):
    # restart h1's daemon so that it ignores SIGINT (stand-in hook); the collection stops it by
    # pidfile + SIGINT (an init script's own INT/10/KILL fallback would SIGKILL it)
    sf.exec("h1", "/etc/init.d/ai-memory stop && echo AIMEM_STANDIN_IGNORE_SIGINT=1 >> %s"
                  " && /etc/init.d/ai-memory start" % ENV)
    wait_serving(sf, "h1")
    before = host_state(sf, "h1")
    t0 = time.time()
    r = upgrade(sf, limit="h1", extra={"aimem_service_init_script": "", "aimem_service_stop_timeout": 3})
    assert time.time() - t0 < 120
    assert_failed_clearly(r, "h1", r"did not stop within aimem_service_stop_timeout=3s", before["pid"],
                          r"SIGINT", r"Fix")
    assert_as_it_was(sf, "h1", before)                  # same pid: it never stopped
    assert snapshots(sf, "h1") == []
    assert report_row(sf, "h1")["status"] == "failed"
    # the operator's fix: stop it for good and start it without the hook
    sf.exec("h1", "kill -KILL %s; sed -i '/AIMEM_STANDIN_IGNORE_SIGINT/d' %s; rm -f /run/ai-memory.pid;"
                  " /etc/init.d/ai-memory start" % (before["pid"], ENV))
    wait_serving(sf, "h1")


def test_case04_stray_mcp_holding_the_db_fails_the_drain_and_the_old_daemon_comes_back(sf):
    sf.exec("h2", "su -s /bin/sh aimem -c '(sleep 600 | AI_MEMORY_DB=%s %s mcp) >/dev/null 2>&1 </dev/null &'"
            % (DB, BIN))
    stray = ""
    for _ in range(50):
        stray = sf.exec("h2", "pgrep -u aimem -f '^/usr/bin/python3 %s mcp'; true" % BIN).stdout.split()
        if stray and DB + "-wal" in sf.exec("h2", "ls -l /proc/%s/fd 2>/dev/null; true" % stray[0]).stdout:
            break
        time.sleep(0.1)
    assert stray, "the stray mcp did not start"
    before = host_state(sf, "h2")
    r = upgrade(sf, limit="h2", extra={"aimem_drain_holder_timeout": 2})
    assert_failed_clearly(r, "h2", r"still held open by", "pid %s" % stray[0], r"ai-memory mcp",
                          r"aimem_drain_stray_holders", r"old daemon was started again")
    # the daemon was stopped and started again (new pid); everything else as it was
    assert_as_it_was(sf, "h2", before, same_pid=False)
    assert snapshots(sf, "h2") == []
    assert sf.exec("h2", "kill -0 %s" % stray[0], check=False).returncode == 0   # the stray was left alone
    sf.exec("h2", "kill -INT %s" % stray[0])


def test_case06_no_room_for_the_snapshot_is_refused_before_the_drain(sf):
    # the service home (DB, config, work dir) on a small filesystem: room for the DB, not its snapshot
    size_kb = int(sf.exec("h3", "du -sk /var/lib/ai-memory | cut -f1").stdout) + 2048
    sf.exec("h3", "/etc/init.d/ai-memory stop && cp -a /var/lib/ai-memory /var/lib/ai-memory.orig"
                  " && mount -t tmpfs -o size=%dk,mode=0750,uid=$(id -u aimem),gid=$(id -g aimem) tmpfs /var/lib/ai-memory"
                  " && cp -a /var/lib/ai-memory.orig/. /var/lib/ai-memory/ && rm -rf /var/lib/ai-memory.orig"
                  " && /etc/init.d/ai-memory start" % size_kb)
    wait_serving(sf, "h3")
    assert sf.exec("h3", "findmnt -n -o FSTYPE /var/lib/ai-memory").stdout.strip() == "tmpfs"
    before = host_state(sf, "h3")
    r = upgrade(sf, limit="h3")
    assert_failed_clearly(r, "h3", r"snapshot of %s needs" % DB, r"/var/lib/ai-memory", r"free",
                          r"aimem_drain_snapshot_dir")
    assert_as_it_was(sf, "h3", before)
    assert snapshots(sf, "h3") == []
    # the fix: room on that filesystem
    sf.exec("h3", "mount -o remount,size=64m /var/lib/ai-memory")


@pytest.fixture(scope="module")
def reconverged(sf):
    return converge(sf, sf.hosts)


@pytest.mark.parametrize("host,case", [("h1", "case03-daemon-ignores-sigint"), ("h2", "case04-stray-holder"),
                                       ("h3", "case06-no-room-for-the-snapshot")])
def test_rerun_after_the_drain_fault_converges(sf, reconverged, host, case):
    assert reconverged.recap[host]["failed"] == 0
    assert_upgraded(sf, host)
    assert report_row(sf, host)["status"] == "upgraded"
    assert daemon_pid(sf, host)
