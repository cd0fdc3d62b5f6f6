"""aimem.fleet.rollback against a real test fleet: 0.6.4 -> 0.7.0 (module-driven walkthrough) -> back.

Before the upgrade every host's memories (``SELECT id, content FROM memories ORDER BY id``), the
sha256 of config.toml, of the env file and of the 0.6.4 binary are recorded. The walkthrough
upgrades; the state files the upgrade roles would write (drain/install/config/security.json) are
then written with the contract's keys and the real paths the walkthrough produced. The rollback
must bring back exactly what was recorded, change nothing in check mode or on a second run, and
refuse clearly (changing nothing) when drain.json is missing.
"""
import json
import os
import time

import pytest

from rolelib import ROOT, SeededFleet

PLAYBOOK = os.path.join(ROOT, "playbooks", "rollback.yml")
WALK = os.path.join(ROOT, "tests", "demo", "walkthrough.yml")
HOME = "/var/lib/ai-memory"
DB = HOME + "/ai-memory.db"
CONFIG = HOME + "/.config/ai-memory/config.toml"
CLAUDE = HOME + "/.claude.json"
ENV = "/etc/ai-memory/env"
BINARY = "/usr/local/bin/ai-memory"
WORK = HOME + "/.aimem-fleet"
KEPT = WORK + "/bin/ai-memory-0.6.4"
MEMORIES = "SELECT id, content FROM memories ORDER BY id"
STAGED = ["AI_MEMORY_FED_REQUIRE_SIG", "AI_MEMORY_FED_REQUIRE_NONCE", "AI_MEMORY_PERMISSIONS_MODE",
          "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR", "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL"]
STATE_FILES = ["drain", "install", "config", "security"]
TIMINGS = {}


def _write(sf, host, path, text, mode="0600", owner="root"):
    sf.exec(host, "umask 077; cat > %s && chown %s: %s && chmod %s %s" % (path, owner, path, mode, path), input=text)


def _health(sf, host):
    r = sf.exec(host, "curl -sf http://127.0.0.1:9077/api/v1/health", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _tree(sf, host):
    """Digests of everything the rollback may touch (check-mode / failure proof)."""
    paths = [DB, CONFIG, CLAUDE, ENV, BINARY, KEPT] + ["%s/%s.json" % (WORK, n) for n in STATE_FILES + ["rollback"]]
    tree = sf.tree_digest(host, paths)
    # the run lock's guard file (created by the first aimem.fleet run that locks the host) is bookkeeping
    tree["ls"] = sf.exec(host, "ls -1 %s %s %s | grep -v '^run\\.lock'" % (HOME, WORK, os.path.dirname(CONFIG))).stdout
    tree["daemon"] = sf.exec(host, "cat /run/ai-memory.pid", check=False).stdout
    return tree


@pytest.fixture(scope="module")
def rb():
    t0 = time.monotonic()
    sf = SeededFleet("rrb", 2)
    TIMINGS["fleet up + seed"] = time.monotonic() - t0
    before = {}
    try:
        for i, h in enumerate(sf.hosts):
            before[h] = {
                "memories": sf.sql(h, DB, MEMORIES),
                "config": sf.digest(h, CONFIG),
                "env": sf.exec(h, "cat " + ENV).stdout,
                "binary": sf.digest(h, BINARY),
            }
            assert sf.sql(h, DB, "SELECT COUNT(*) FROM memories") == "200"
        # h1: the security role backed the env file up and the config role cleaned ~/.claude.json;
        # h2: neither (the rollback removes the staged lines instead).
        ts = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        sf.exec("h1", "cp -p %s %s.bak.%s" % (ENV, ENV, ts))
        claude = json.dumps({"mcpServers": {"memory": {"command": "ai-memory", "args": ["mcp"],
                                                        "env": {"AI_MEMORY_LLM_MODEL": "gemma3:4b"}}}}) + "\n"
        _write(sf, "h1", CLAUDE, claude, owner="aimem")
        before["h1"]["claude"] = sf.digest("h1", CLAUDE)

        os.makedirs(os.path.join(sf.out, "report"), exist_ok=True)
        t1 = time.monotonic()
        r = sf.play(WALK, extra={"demo_standin_dir": sf.out})
        TIMINGS["walkthrough upgrade"] = time.monotonic() - t1
        assert r.rc == 0, r.output
        for h in sf.hosts:
            report = json.load(open(os.path.join(sf.out, "report", h + ".json")))
            assert report["version_after"] == "0.7.0" and report["schema_after"] == 54
            manifest = json.loads(sf.exec(h, "cat %s.json" % report["snapshot"]).stdout)
            sf.exec(h, "install -d -m 0700 %s/bin && cp -p %s/ai-memory-0.6.4 %s" % (WORK, WORK, KEPT))
            asset = "ai-memory-%s-unknown-linux-gnu.tar.gz" % sf.exec(h, "uname -m").stdout.strip()
            drain = {"db": DB, "snapshot": report["snapshot"], "manifest": report["snapshot"] + ".json",
                     "sha256": manifest["sha256"], "schema_before": 20, "counts": manifest["counts"],
                     "content_digest": manifest["content_digest"], "taken_at": manifest["created_at"]}
            install = {"binary": BINARY, "previous_binary": KEPT, "previous_version": "0.6.4", "version": "0.7.0",
                       "asset": asset, "asset_sha256": sf.digest(h, "%s/%s" % (WORK, asset)),
                       "binary_sha256": sf.digest(h, BINARY)}
            config = {"config": CONFIG, "backup_file": report["config_backup"], "moved_keys": []}
            security = {"posture": "staged", "env_file": ENV}
            if h == "h1":
                # what the config role's clean_claude_json leaves: a backup and a rewritten file
                sf.exec(h, "cp -p %s %s.bak.%s" % (CLAUDE, CLAUDE, ts))
                _write(sf, h, CLAUDE, '{"mcpServers": {"memory": {"command": "ai-memory", "args": ["mcp"]}}}\n',
                       owner="aimem")
                config.update(claude_json=CLAUDE, claude_json_backup_file="%s.bak.%s" % (CLAUDE, ts))
                security["env_backup_file"] = "%s.bak.%s" % (ENV, ts)
            for name, doc in (("drain", drain), ("install", install), ("config", config), ("security", security)):
                _write(sf, h, "%s/%s.json" % (WORK, name), json.dumps(doc, indent=2) + "\n")
            assert sf.digest(h, CONFIG) != before[h]["config"], "the walkthrough did not migrate config.toml"
            assert "AI_MEMORY_FED_REQUIRE_SIG=0" in sf.exec(h, "cat " + ENV).stdout
            assert _health(sf, h)["version"] == "0.7.0"
            before[h]["report"] = report
        yield sf, before
    finally:
        sf.down()
        print("\nrollback test timings: " + ", ".join("%s %.1f s" % kv for kv in TIMINGS.items()))


def test_missing_drain_json_fails_clearly_and_changes_nothing(rb):
    sf, _ = rb
    sf.exec("h2", "mv %s/drain.json %s/drain.json.hidden" % (WORK, WORK))
    try:
        tree = _tree(sf, "h2")
        r = sf.play(PLAYBOOK, extra={"aimem_hosts": "h2"})
        assert r.rc != 0
        assert r.recap["h2"]["failed"] == 1 and r.recap["h2"]["changed"] == 0, r.output
        msg = r.task("Fail when there is nothing to roll back to", "h2")["msg"]
        assert msg.startswith("h2: nothing to roll back to - %s/drain.json missing" % WORK), msg
        assert "Fix:" in msg
        assert _tree(sf, "h2") == tree
        assert _health(sf, "h2")["version"] == "0.7.0"
    finally:
        sf.exec("h2", "mv %s/drain.json.hidden %s/drain.json" % (WORK, WORK))


def test_check_mode_changes_nothing(rb):
    sf, _ = rb
    trees = {h: _tree(sf, h) for h in sf.hosts}
    t0 = time.monotonic()
    r = sf.play(PLAYBOOK, check=True, diff=True, extra={"aimem_hosts": "fleet"})
    TIMINGS["check-mode run"] = time.monotonic() - t0
    assert r.rc == 0, r.output
    for h in sf.hosts:
        assert _tree(sf, h) == trees[h], h
        assert r.recap[h]["changed"] > 0, "check mode must report what it would change"
        assert r.task("Restore the pre-migration snapshot (verified against its manifest; "
                      "v0.7.0 DB and -wal/-shm moved aside)", h)["changed"] is True
        assert r.task("Reinstall the kept v0.6.x binary", h)["changed"] is True
        assert _health(sf, h)["version"] == "0.7.0"
    assert "would roll back (check mode)" in r.stdout


def test_rollback_restores_0_6_4_exactly(rb):
    sf, before = rb
    started = {h: int(sf.exec(h, "date +%s").stdout) for h in sf.hosts}
    t0 = time.monotonic()
    r = sf.play(PLAYBOOK, extra={"aimem_hosts": "fleet"})
    TIMINGS["rollback run"] = time.monotonic() - t0
    assert r.rc == 0, r.output
    for h in sf.hosts:
        assert r.recap[h]["changed"] > 0 and r.recap[h]["failed"] == 0
        b = before[h]
        # binary and daemon
        assert sf.exec(h, [BINARY, "--version"]).stdout.strip() == "ai-memory 0.6.4"
        assert sf.digest(h, BINARY) == b["binary"]
        assert sf.exec(h, "stat -c %a " + BINARY).stdout.strip() == "755"
        health = _health(sf, h)
        assert health and health["version"] == "0.6.4" and health["status"] == "ok"
        pid = sf.exec(h, "cat /run/ai-memory.pid").stdout.strip()
        assert sf.exec(h, "cat /proc/%s/cmdline | tr '\\0' ' '" % pid).stdout.split()[1:] == [BINARY, "serve"]
        # DB: schema 20, memories exactly as before the upgrade
        assert sf.sql(h, DB, "SELECT COALESCE(MAX(version),0) FROM schema_version") == "20"
        assert sf.sql(h, DB, MEMORIES) == b["memories"]
        # the v0.7.0 DB was moved aside; its -wal/-shm (if the SIGINT stop left any) with it: what is
        # next to the DB now was written by 0.6.4 after the restore (and reads as schema 20 above)
        restore = r.task("Restore the pre-migration snapshot (verified against its manifest; "
                         "v0.7.0 DB and -wal/-shm moved aside)", h)
        for m in restore["sidecars_moved"]:
            assert m["to"].startswith(restore["replaced"]) and sf.digest(h, m["to"]) != "missing"
        for side in ("-wal", "-shm"):
            mtime = sf.exec(h, "stat -c %%Y %s%s" % (DB, side), check=False)
            assert mtime.returncode != 0 or int(mtime.stdout) >= started[h], (h, side)
        assert sf.sql(h, restore["replaced"], "SELECT MAX(version) FROM schema_version") == "54"
        # config.toml byte-identical, owner and mode kept
        assert sf.digest(h, CONFIG) == b["config"]
        assert sf.exec(h, "stat -c '%U %a' " + CONFIG).stdout.strip() == "aimem 600"
        # env file: h1 from its backup (byte-identical), h2 without the staged lines, AI_MEMORY_DB kept
        env = sf.exec(h, "cat " + ENV).stdout
        assert env == b["env"] == "AI_MEMORY_DB=%s\n" % DB
        assert not any(k in env for k in STAGED)
        # state: rollback.json written, the upgrade's state files set aside
        rec = json.loads(sf.exec(h, "cat %s/rollback.json" % WORK).stdout)
        assert (rec["from_version"], rec["to_version"], rec["snapshot"]) == ("0.7.0", "0.6.4", b["report"]["snapshot"])
        assert rec["rolled_back_at"].endswith("Z")
        listing = sf.exec(h, "ls -1 " + WORK).stdout.split()
        for name in STATE_FILES:
            assert name + ".json" not in listing
            assert len([f for f in listing if f.startswith(name + ".rolled-back.") and f.endswith(".json")]) == 1
        assert sf.exec(h, "stat -c '%U %a' " + WORK + "/rollback.json").stdout.strip() == "root 600"
    assert sf.digest("h1", CLAUDE) == before["h1"]["claude"]
    assert sf.exec("h1", "stat -c '%U %a' " + CLAUDE).stdout.strip() == "aimem 600"
    assert r.task("Remove the v0.7.0 security lines from the env file (AI_MEMORY_DB stays)", "h2")["changed"] is True
    assert r.task("Put the env file back from the security role's backup", "h1")["changed"] is True


def test_second_run_changes_nothing(rb):
    sf, _ = rb
    trees = {h: _tree(sf, h) for h in sf.hosts}
    t0 = time.monotonic()
    r = sf.play(PLAYBOOK, extra={"aimem_hosts": "fleet"})
    TIMINGS["second run"] = time.monotonic() - t0
    assert r.rc == 0, r.output
    for h in sf.hosts:
        assert r.recap[h]["changed"] == 0, r.output
        assert "already rolled back to 0.6.4" in r.task("Report a host that is already rolled back", h)["msg"]
        assert _tree(sf, h) == trees[h]
        assert _health(sf, h)["version"] == "0.6.4"
