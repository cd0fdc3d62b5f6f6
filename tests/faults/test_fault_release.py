"""Faults of the release download (cases 1, 2 and the unpinned-download rule).

The release is fetched and verified BEFORE the drain, so each of these fails the host while its
v0.6.4 daemon keeps serving: same pid, same binary, same DB, nothing left in the work dir.
"""
import pytest

from faultlib import (assert_as_it_was, assert_failed_clearly, assert_upgraded, converge, fault_fleet,
                      host_state, report_row, upgrade)

FAST_RETRY = {"aimem_install_download_retries": 1, "aimem_install_download_delay": 1}


@pytest.fixture(scope="module")
def sf():
    s = fault_fleet("frel", 3, rows=120)
    yield s
    s.down()


def test_case01_sha256_mismatch_installs_nothing_and_the_daemon_keeps_running(sf):
    before = host_state(sf, "h1")
    wrong = {t: "ab" * 32 for t in sf.pins["0.7.0"]}
    r = upgrade(sf, limit="h1", extra=dict(FAST_RETRY, aimem_release_sha256=wrong))
    final = assert_failed_clearly(r, "h1", r"does not match the pin", "ab" * 32, r"fix the pin",
                                  r"was not stopped and nothing was installed")
    assert sf.pins["0.7.0"][next(iter(sf.pins["0.7.0"]))] in final      # the real sha256, for the operator
    assert_as_it_was(sf, "h1", before)
    assert sf.exec("h1", "ls /var/lib/ai-memory/ai-memory.db.pre-migration-* 2>/dev/null | wc -l").stdout.strip() == "0"
    row = report_row(sf, "h1")
    assert row["status"] == "failed" and "pin" in row["message"]


def test_case02_mirror_404_fails_before_the_drain(sf):
    before = host_state(sf, "h2")
    r = upgrade(sf, limit="h2", extra=dict(FAST_RETRY, aimem_release_base_url=sf.fleet.http_url + "/no-such-mirror"))
    assert_failed_clearly(r, "h2", r"HTTP 404", r"no-such-mirror/v0\.7\.0/ai-memory-", r"Fix aimem_release_base_url")
    assert_as_it_was(sf, "h2", before)


def test_case02_mirror_refusing_connections_fails_before_the_drain(sf):
    before = host_state(sf, "h3")
    # the fleet's controller address on a port nothing listens on: connection refused
    url = "http://%s:9/mirror" % sf.fleet.controller_addr
    r = upgrade(sf, limit="h3", extra=dict(FAST_RETRY, aimem_release_base_url=url))
    assert_failed_clearly(r, "h3", r"failed after 1 retries", r"refused", r"Check the network or proxy")
    assert_as_it_was(sf, "h3", before)


def test_download_without_a_pin_is_refused_unless_waived(sf):
    before = {h: host_state(sf, h) for h in sf.hosts}
    r = upgrade(sf, extra={"aimem_release_sha256": {}})
    assert r.rc != 0
    for h in sf.hosts:
        assert_failed_clearly(r, h, r"aimem_release_sha256", r"aimem_release_allow_unpinned")
        assert_as_it_was(sf, h, before[h])
    # waived explicitly: the check-mode plan goes through, with the loud warning
    r2 = upgrade(sf, limit="h1", check=True, extra={"aimem_release_sha256": {}, "aimem_release_allow_unpinned": True})
    assert r2.rc == 0, r2.output[-4000:]
    assert "UNPINNED" in r2.stdout
    assert_as_it_was(sf, "h1", before["h1"])


@pytest.fixture(scope="module")
def reconverged(sf):
    return converge(sf, sf.hosts)


@pytest.mark.parametrize("host,case", [("h1", "case01-sha256-mismatch"), ("h2", "case02-mirror-404"),
                                       ("h3", "case02-mirror-refused")])
def test_rerun_after_the_release_fault_converges(sf, reconverged, host, case):
    assert reconverged.recap[host]["failed"] == 0
    assert_upgraded(sf, host)
    assert report_row(sf, host)["status"] == "upgraded"
