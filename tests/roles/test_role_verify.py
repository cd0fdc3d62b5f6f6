"""aimem.fleet.verify on a 2-host test fleet upgraded to v0.7.0 (guide Tier 2 steps 7-8).

The fleet is upgraded by the module-driven walkthrough; the drain record the verify role reads
(``<work_dir>/drain.json``, roles contract) is written here from the walkthrough's snapshot
manifest. Proves: verify starts a stopped daemon and passes (schema 20 -> 54, digest equal, chain
holds, permissions_mode advisory from the staged env, daemon env = env file), changes nothing on a
verified running host (also in check mode), and fails - leaving the host stopped, naming the check
and the rollback - when the 0.6.4 binary runs, when a memory was deleted after the snapshot, and
(without touching anything) when the host was never drained.
"""
import os

import pytest

from rolelib import ROOT, SeededFleet

PLAY = os.path.join(ROOT, "tests", "roles", "playbooks", "verify.yml")
WALK = os.path.join(ROOT, "tests", "demo", "walkthrough.yml")
HOME = "/var/lib/ai-memory"
DB = HOME + "/ai-memory.db"
BIN = "/usr/local/bin/ai-memory"
WORK = HOME + "/.aimem-fleet"
DRAIN = WORK + "/drain.json"
STAGED = ["AI_MEMORY_DB=%s" % DB, "AI_MEMORY_FED_REQUIRE_SIG=0", "AI_MEMORY_FED_REQUIRE_NONCE=0",
          "AI_MEMORY_PERMISSIONS_MODE=advisory", "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR=1",
          "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL=1"]

# drain.json as the drain role writes it (contract keys), from the walkthrough's snapshot manifest.
WRITE_DRAIN = r'''
import glob, json, os
home = "%s"
m = sorted(glob.glob(home + "/ai-memory.db.pre-migration-v20-to-v54-*.bak.json"), key=os.path.getmtime)[-1]
man = json.load(open(m))
rec = {"db": man["source_db"], "snapshot": os.path.join(home, man["snapshot"]), "manifest": m,
       "sha256": man["sha256"], "schema_before": man["from_version"], "counts": man["counts"],
       "content_digest": man["content_digest"], "taken_at": man["created_at"]}
fd = os.open("%s", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, json.dumps(rec, indent=2, sort_keys=True).encode())
os.close(fd)
''' % (HOME, DRAIN)


@pytest.fixture(scope="module")
def sf():
    fleet = SeededFleet("rver", 2)
    try:
        report = os.path.join(fleet.tmp, "report")
        os.makedirs(report)
        r = fleet.play(WALK, extra={"demo_standin_dir": fleet.out, "demo_report_dir": report})
        assert r.rc == 0, "walkthrough upgrade failed\n" + r.output
        for h in fleet.hosts:
            fleet.exec(h, ["python3", "-"], input=WRITE_DRAIN)
            # the staged permissive posture (guide step 5), as the security role writes it
            fleet.exec(h, ["sh", "-c", "cat > /etc/ai-memory/env"], input="\n".join(STAGED) + "\n")
        yield fleet
    finally:
        fleet.down()


def serving(sf, host):
    """pids of `ai-memory serve` processes on the host."""
    r = sf.exec(host, ["pgrep", "-f", "ai-memory( [^ ]+)* serve"], check=False)
    return r.stdout.split()


def result(r, host, task="Record the verification"):
    return r.task(task, host)["ansible_facts"]["aimem_verify_result"]


def test_verify_starts_passes_and_is_idempotent(sf):
    sf.exec("h1", ["/etc/init.d/ai-memory", "stop"])
    assert serving(sf, "h1") == [] and serving(sf, "h2")
    r = sf.play(PLAY)
    assert r.rc == 0, r.output
    assert r.recap["h1"]["changed"] > 0 and r.recap["h2"]["changed"] == 0, r.output
    assert serving(sf, "h1")
    for h in sf.hosts:
        res = result(r, h)
        manifest_digest = sf.exec(h, ["python3", "-c", "import json;print(json.load(open('%s'))['content_digest'])"
                                      % DRAIN]).stdout.strip()
        assert res["failed"] is False and res["check"] is None
        assert res["version_after"] == "0.7.0"
        assert (res["schema_before"], res["schema_after"]) == (20, 54)
        assert res["digest_equal"] is True and res["content_digest"] == manifest_digest
        assert res["counts_after"]["memories"] + res["counts_after"]["archived_memories"] == \
            int(sf.sql(h, DB, "SELECT (SELECT COUNT(*) FROM memories) + (SELECT COUNT(*) FROM archived_memories)"))
        assert res["gate_passed"] is True and res["chain_holds"] is True
        assert res["doctor_overall"] in ("info", "notavailable", "warning")
        assert res["permissions_mode"] == "advisory"
        assert res["daemon_env_ok"] is True
        assert sf.sql(h, DB, "SELECT MAX(version) FROM schema_version") == "54"

    state = {h: sf.tree_digest(h, [DB, DRAIN, "/etc/ai-memory/env", BIN]) for h in sf.hosts}
    pids = {h: serving(sf, h) for h in sf.hosts}
    r = sf.play(PLAY, check=True)
    assert r.rc == 0 and r.changed() == {"h1": 0, "h2": 0}, r.output
    r = sf.play(PLAY)
    assert r.rc == 0 and r.changed() == {"h1": 0, "h2": 0}, r.output
    assert {h: serving(sf, h) for h in sf.hosts} == pids
    assert {h: sf.tree_digest(h, [DRAIN, "/etc/ai-memory/env", BIN]) for h in sf.hosts} == \
        {h: {k: v for k, v in d.items() if k != DB} for h, d in state.items()}


def test_verify_fails_on_the_old_binary_and_leaves_host_drained(sf):
    kept = WORK + "/ai-memory-0.6.4"
    with open(os.path.join(sf.out, "bin", "ai-memory-0.6.4"), "rb") as f:
        import hashlib
        assert sf.digest("h1", kept) == hashlib.sha256(f.read()).hexdigest()
    new_binary = sf.digest("h1", BIN)
    sf.exec("h1", "/etc/init.d/ai-memory stop && cp %s %s && /etc/init.d/ai-memory start" % (kept, BIN))
    try:
        r = sf.play(PLAY, limit="h1")
        assert r.rc != 0 and r.recap["h1"]["failed"] == 1 and r.recap["h1"]["rescued"] == 1, r.output
        assert "verify check 'start / health version' failed" in r.stdout
        assert '"0.6.4", expected "0.7.0"' in r.stdout
        assert "left drained" in r.stdout and "rollback" in r.stdout
        assert serving(sf, "h1") == []
        res = result(r, "h1", "Record the failed verification")
        assert res["failed"] is True and res["check"] == "start / health version"
    finally:
        sf.exec("h1", "cp %s/ai-memory %s && /etc/init.d/ai-memory start" % (WORK, BIN))
    assert sf.digest("h1", BIN) == new_binary


def test_verify_fails_when_a_memory_was_deleted(sf):
    victim = sf.sql("h2", DB, "SELECT id FROM memories ORDER BY id LIMIT 1")
    sf.exec("h2", ["su", "-s", "/bin/sh", "aimem", "-c",
                   "sqlite3 %s \"DELETE FROM memories WHERE id = '%s'\"" % (DB, victim)])
    r = sf.play(PLAY, limit="h2")
    assert r.rc != 0 and r.recap["h2"]["failed"] == 1, r.output
    assert "verify check 'memories preserved' failed" in r.stdout
    assert "digest_equal=False" in r.stdout and "rollback" in r.stdout
    assert serving(sf, "h2") == []
    res = result(r, "h2", "Record the failed verification")
    assert res["failed"] is True and res["digest_equal"] is False and res["schema_after"] == 54


def test_never_drained_host_fails_without_changes(sf):
    sf.exec("h1", ["mv", DRAIN, DRAIN + ".aside"])
    try:
        pids = serving(sf, "h1")
        assert pids
        r = sf.play(PLAY, limit="h1")
        assert r.rc != 0 and r.recap["h1"]["failed"] == 1 and r.recap["h1"]["changed"] == 0, r.output
        assert "%s is missing" % DRAIN in r.stdout
        assert "run the drain role / the upgrade playbook" in r.stdout
        assert serving(sf, "h1") == pids  # preflight touches nothing, not even the daemon
    finally:
        sf.exec("h1", ["mv", DRAIN + ".aside", DRAIN])
