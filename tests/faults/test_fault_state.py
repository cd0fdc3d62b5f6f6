"""Faults of the host's state (cases 10, 11, 12): a DB at a schema the collection does not know,
the v0.6.4 tilde trap, HOME unset / a wrong become_user. The unknown states are refused in the
preflight (nothing changed, nothing written under /root); the tilde trap is followed to the real DB.
"""
import re
import time

import pytest

from faultlib import (CFG, DB, ENV, HOME, assert_as_it_was, assert_failed_clearly, assert_upgraded, converge,
                      fault_fleet, health_version, host_state, report_row, upgrade)

TILDE_DB = HOME + "/~/.local/share/ai-memory/ai-memory.db"     # where v0.6.4 really kept it


def as_aimem(sf, host, sql):
    sf.exec(host, ["su", "-s", "/bin/sh", "aimem", "-c", "sqlite3 %s \"PRAGMA busy_timeout=5000; %s\"" % (DB, sql)])


def root_marker(sf, host):
    sf.exec(host, "touch /run/fault-marker && sleep 1")


def written_under_root(sf, host):
    # Ansible's own remote tmp (/root/.ansible) is the connection's, not the upgrade's
    return sf.exec(host, "find /root -newer /run/fault-marker -not -path '/root/.ansible*'").stdout.split()


@pytest.fixture(scope="module")
def sf():
    s = fault_fleet("fstate", 6, rows=80)
    yield s
    s.down()


def test_case10_db_at_an_unknown_schema_60_is_refused_before_any_change(sf):
    as_aimem(sf, "h1", "INSERT INTO schema_version(version) VALUES (60)")
    before = host_state(sf, "h1")
    assert before["schema"] == "60"
    r = upgrade(sf, limit="h1")
    assert_failed_clearly(r, "h1", DB, r"is at schema v60, neither v20 .* nor v54", r"Nothing was changed", r"Fix")
    assert_as_it_was(sf, "h1", before)
    as_aimem(sf, "h1", "DELETE FROM schema_version WHERE version = 60")


def test_case10_db_without_a_schema_version_table_is_refused_before_any_change(sf):
    as_aimem(sf, "h2", "ALTER TABLE schema_version RENAME TO schema_version_hidden")
    before = host_state(sf, "h2")
    assert before["schema"] == "no schema_version"
    r = upgrade(sf, limit="h2")
    assert_failed_clearly(r, "h2", DB, r"has no schema_version table", r"Nothing was changed")
    assert_as_it_was(sf, "h2", before)
    as_aimem(sf, "h2", "ALTER TABLE schema_version_hidden RENAME TO schema_version")


def test_case10_db_at_schema_0_is_refused_before_any_change(sf):
    as_aimem(sf, "h6", "CREATE TABLE sv_keep AS SELECT * FROM schema_version; DELETE FROM schema_version")
    before = host_state(sf, "h6")
    r = upgrade(sf, limit="h6")
    assert_failed_clearly(r, "h6", DB, r"schema v(0|None)\b", r"Nothing was changed")
    assert_as_it_was(sf, "h6", before)
    as_aimem(sf, "h6", "INSERT INTO schema_version SELECT * FROM sv_keep; DROP TABLE sv_keep")


def test_case11_tilde_trap_is_detected_and_the_real_db_is_upgraded(sf):
    # v0.6.4 read db = "~/..." as a literal directory "~" under the daemon's working directory (its
    # HOME here): the real DB is <HOME>/~/.local/share/ai-memory/ai-memory.db (facts section 2.7)
    sf.exec("h3", "/etc/init.d/ai-memory stop && sed -i '/^AI_MEMORY_DB=/d' %s"
                  " && su -s /bin/sh aimem -c 'mkdir -p \"%s\"' && mv %s \"%s\""
                  " && sed -i 's|^db = .*|db = \"~/.local/share/ai-memory/ai-memory.db\"|' %s"
                  " && /etc/init.d/ai-memory start" % (ENV, TILDE_DB.rsplit("/", 1)[0], DB, TILDE_DB, CFG))
    for _ in range(100):
        if health_version(sf, "h3") == "0.6.4":
            break
        time.sleep(0.1)
    pid = sf.exec("h3", "cat /run/ai-memory.pid").stdout.strip()
    assert TILDE_DB in sf.exec("h3", "ls -l /proc/%s/fd" % pid).stdout       # the daemon really uses it
    r = upgrade(sf, limit="h3")
    assert r.rc == 0, r.output[-5000:]
    text = " ".join(r.stdout.split())          # the callback wraps long messages
    assert re.search(r"WARNING h3: tilde trap - .* uses %s .* would open %s/\.local/share/ai-memory/ai-memory\.db"
                     % (re.escape(TILDE_DB), HOME), text), text[:6000]
    assert_upgraded(sf, "h3", db=TILDE_DB)
    # v0.7.0 expands ~ to $HOME: the pin in the env file keeps it on the real file, no new empty DB
    assert "AI_MEMORY_DB=%s" % TILDE_DB in sf.exec("h3", ["cat", ENV]).stdout
    assert sf.exec("h3", "test -e %s/.local/share/ai-memory/ai-memory.db" % HOME, check=False).returncode != 0
    pid = sf.exec("h3", "cat /run/ai-memory.pid").stdout.strip()
    assert TILDE_DB in sf.exec("h3", "ls -l /proc/%s/fd" % pid).stdout
    row = report_row(sf, "h3")
    assert row["status"] == "upgraded" and row["digest_equal"] is True and row["snapshot"].startswith(TILDE_DB)


def test_case12_service_user_without_a_home_is_refused_and_nothing_lands_in_root(sf):
    # HOME unset: the passwd entry of the service user has an empty home field
    orig = sf.exec("h4", "getent passwd aimem").stdout.strip()
    # (usermod refuses while the daemon runs as the user: edit the entry like an admin's typo would)
    sf.exec("h4", "sed -i 's|^\\(aimem:[^:]*:[^:]*:[^:]*:[^:]*:\\)[^:]*:|\\1:|' /etc/passwd")
    assert sf.exec("h4", "getent passwd aimem | cut -d: -f6").stdout.strip() == ""
    root_marker(sf, "h4")
    before = host_state(sf, "h4")
    r = upgrade(sf, limit="h4")
    assert_failed_clearly(r, "h4", r"passwd home of aimem", r"Fix aimem_service_home")
    assert_as_it_was(sf, "h4", before)
    assert written_under_root(sf, "h4") == []
    sf.exec("h4", "sed -i 's|^aimem:.*$|%s|' /etc/passwd" % orig)


def test_case12_wrong_become_user_is_refused_and_nothing_lands_in_root(sf):
    root_marker(sf, "h5")
    before = host_state(sf, "h5")
    r = upgrade(sf, limit="h5", extra={"aimem_service_user": "root"})
    assert_failed_clearly(r, "h5", r"passwd home of root is /root", r"become_user", r"Fix")
    assert_as_it_was(sf, "h5", before)
    assert written_under_root(sf, "h5") == []


@pytest.fixture(scope="module")
def reconverged(sf):
    return converge(sf, [h for h in sf.hosts if h != "h3"])


@pytest.mark.parametrize("host,case", [("h1", "case10-schema-60"), ("h2", "case10-no-schema-table"),
                                       ("h6", "case10-schema-0"), ("h4", "case12-home-unset"),
                                       ("h5", "case12-wrong-become-user")])
def test_rerun_after_the_state_fault_converges(sf, reconverged, host, case):
    assert reconverged.recap[host]["failed"] == 0
    assert_upgraded(sf, host)
    assert report_row(sf, host)["status"] == "upgraded"
