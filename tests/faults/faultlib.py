"""Shared helpers of the fault-injection suite (``make test-faults``).

Every fault test follows the same contract (issue 5): the play fails with a clear error naming the
host, the file and the fix; the host is either exactly as it was or fully upgraded; the memories
equal the pre-migration snapshot's; re-running after fixing the cause converges.

    sf = fault_fleet("frel", 3)            # a seeded 0.6.4 fleet with a baseline of every host
    before = host_state(sf, "h1")
    r = upgrade(sf, limit="h1", extra={...})
    assert_failed_clearly(r, "h1", "sha256", "fix the pin")
    assert_as_it_was(sf, "h1", before)
    ... fix the cause ...
    assert_upgraded(sf, "h1")               # memories == baseline rows, schema 54, v0.7.0 serving
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "roles"))

from rolelib import ROOT, SeededFleet  # noqa: E402,F401

PLAYBOOKS = os.path.join(ROOT, "playbooks")
HOME = "/var/lib/ai-memory"
DB = HOME + "/ai-memory.db"
CFG = HOME + "/.config/ai-memory/config.toml"
ENV = "/etc/ai-memory/env"
BIN = "/usr/local/bin/ai-memory"
WORK = HOME + "/.aimem-fleet"
PIDFILE = "/run/ai-memory.pid"


def fault_fleet(name, n, **kw):
    """A seeded fleet with ``sf.baseline[host]`` = the memories rows (every v20 column but
    ``expires_at``, which schema v54 backfills for short/mid rows that had none, facts section 2)."""
    sf = SeededFleet(name, n, **kw)
    sf.columns = [c for c in sf.sql("h1", DB, "SELECT name FROM pragma_table_info('memories')").split()
                  if c != "expires_at"]
    sf.baseline = {h: memories(sf, h) for h in sf.hosts}
    assert all(sf.baseline[h] for h in sf.hosts), "the seeded hosts have no memories"
    return sf


def memories(sf, host, db=DB):
    """Every memories row, the v0.6.4 columns but expires_at (v0.7.0 adds columns), ordered by id."""
    cols = ", ".join("quote(%s)" % c for c in sf.columns)
    return sf.sql(host, db, "SELECT %s FROM memories ORDER BY id" % cols)


def daemon_pid(sf, host):
    return sf.exec(host, "cat %s 2>/dev/null; true" % PIDFILE).stdout.strip()


def daemon_alive(sf, host, pid=None):
    pid = pid or daemon_pid(sf, host)
    return bool(pid) and sf.exec(host, "kill -0 %s" % pid, check=False).returncode == 0


def health_version(sf, host):
    out = sf.exec(host, "curl -s -m 5 http://127.0.0.1:9077/api/v1/health", check=False).stdout
    try:
        return json.loads(out).get("version")
    except ValueError:
        return None


def host_state(sf, host, db=DB):
    """What "the host as it was" means: binary, env file, config, schema, rows, daemon pid/version."""
    return {
        "bin": sf.digest(host, BIN),
        "env": sf.digest(host, ENV),
        "config": sf.exec(host, "sha256sum -- \"$(readlink -f %s)\" | cut -d' ' -f1" % CFG).stdout.strip(),
        "schema": sf.exec(host, ["sqlite3", "-readonly", db, "SELECT max(version) FROM schema_version"],
                          check=False).stdout.strip() or "no schema_version",
        "memories": memories(sf, host, db),
        "pid": daemon_pid(sf, host),
        "alive": daemon_alive(sf, host),
        "version": health_version(sf, host),
    }


def assert_as_it_was(sf, host, before, same_pid=True, db=DB, rolled_back=False):
    after = host_state(sf, host, db)
    if not same_pid:   # the old daemon was stopped and started again: same binary, new pid
        before = dict(before, pid=None)
        after = dict(after, pid=None)
    diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not diff, "%s is not as it was: %s" % (host, {k: v if k != "memories" else "rows differ" for k, v in diff.items()})
    assert after["alive"] and after["version"] == "0.6.4", after
    # nothing the upgrade would have produced is left behind
    left = sf.exec(host, "ls -A %s 2>/dev/null; true" % WORK).stdout.split()
    assert not [f for f in left if f.startswith(("unpack-", "ai-memory-")) or f.endswith(".tar.gz")], left
    if not rolled_back:   # a rolled-back host keeps the run's backups and snapshot as records
        assert sf.exec(host, "ls %s.bak.* 2>/dev/null | wc -l" % CFG).stdout.strip() == "0"


def failure_text(r, host):
    """The failure messages of ``host`` (task results) plus the play output, for assertions."""
    msgs = [str(x["result"].get("msg", "")) for x in r.results
            if x["host"] == host and x["status"] in ("failed", "unreachable")]
    return "\n".join(msgs) + "\n" + r.stdout


def assert_failed_clearly(r, host, *needles):
    """The run failed for ``host`` with a message that names the host and every needle (regexes)."""
    assert r.rc != 0, "the run did not fail\n" + r.output[-4000:]
    assert r.recap.get(host, {}).get("failed", 0) + r.recap.get(host, {}).get("unreachable", 0) > 0, r.recap
    msgs = [str(x["result"].get("msg", "")) for x in r.results if x["host"] == host and x["status"] == "failed"]
    final = msgs[-1] if msgs else ""
    assert host in final, "the last error does not name the host:\n" + final
    for n in needles:
        assert re.search(n, final, re.I | re.S), "%r not in the final error of %s:\n%s" % (n, host, final)
    return final


def upgrade(sf, limit=None, extra=None, **kw):
    return sf.play(os.path.join(PLAYBOOKS, "upgrade.yml"), extra=extra, limit=limit, **kw)


def report(sf):
    with open(os.path.join(sf.vars["aimem_controller_dir"], "report", "latest", "report.json")) as f:
        return json.load(f)


def report_row(sf, host):
    rows = [row for row in report(sf)["hosts"] if row["host"] == host]
    assert len(rows) == 1, report(sf)
    return rows[0]


def assert_upgraded(sf, host, db=DB):
    """Fully upgraded: v0.7.0 serving, binary 0.7.0, schema 54, the memories equal the baseline
    (= the snapshot's), exactly one pre-migration snapshot whose rows equal them too."""
    assert sf.exec(host, [BIN, "--version"]).stdout.strip() == "ai-memory 0.7.0"
    assert health_version(sf, host) == "0.7.0"
    assert sf.sql(host, db, "SELECT max(version) FROM schema_version") == "54"
    assert memories(sf, host, db) == sf.baseline[host], "%s: memories differ from the baseline" % host
    snaps = sf.exec(host, "ls %s.pre-migration-*.bak 2>/dev/null; true" % db).stdout.split()
    assert len(snaps) == 1, snaps
    assert memories(sf, host, snaps[0]) == sf.baseline[host], "%s: the snapshot's memories differ" % host
    drain = json.loads(sf.exec(host, ["cat", WORK + "/drain.json"]).stdout)
    assert drain["snapshot"] == snaps[0]
    # expires_at: kept wherever v0.6.4 had set it
    kept = "SELECT id || '|' || expires_at FROM memories WHERE expires_at IS NOT NULL"
    assert set(sf.sql(host, snaps[0], kept).split()) <= set(sf.sql(host, db, kept).split())


def converge(sf, hosts, extra=None):
    """Re-run aimem.fleet.upgrade over ``hosts`` at once; returns the result (asserted rc 0)."""
    v = {"aimem_serial": "100%"}
    v.update(extra or {})
    r = upgrade(sf, limit=",".join(hosts), extra=v)
    assert r.rc == 0, r.output[-6000:]
    return r
