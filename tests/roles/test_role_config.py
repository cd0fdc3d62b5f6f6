"""aimem.fleet.config + aimem.fleet.permissions against a real 3-host test fleet.

The Tier-2 case: every host's config.toml is a symlink to ONE file on the fleet's share ("NFS").
The leader (h1) migrates it exactly once - also with ``--limit h2,h3`` (leader outside the run) and
``serial: 1`` - through the symlink, backing up next to the real file; the other hosts change
nothing. Then the per-host case (no share): each host migrates its own file. Check mode + diff shows
the diff and writes nothing, a second run changes nothing, the permissions rule is added once, and an
inline LLM key is refused leaving the file byte-identical.
"""
import json
import os
import re
import time

import pytest

from rolelib import ROOT, SeededFleet

PLAYBOOK = os.path.join(ROOT, "tests", "roles", "playbooks", "config.yml")
HOME = "/var/lib/ai-memory"
CONFIG = HOME + "/.config/ai-memory/config.toml"
WORK = HOME + "/.aimem-fleet"
HOSTS = ["h1", "h2", "h3"]
POLICY = '\n[governance]\n\n[[governance.policy]]\nscope = "team/*"\naction = "write"\nrole = "intern"\ndecision = "deny"\n'
SHARED_VARS = {"aimem_config_shared": True, "aimem_config_leader": "h1", "aimem_permissions_mode": "advisory"}
TIMINGS = {}


def _toml(sf, host, path):
    """Parse a TOML file on the host with the host's own Python (tomllib, 3.11)."""
    code = "import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1],'rb'))))"
    return json.loads(sf.exec(host, ["python3", "-c", code, path]).stdout)


def _ls(sf, host, pattern):
    r = sf.exec(host, "ls -1 %s 2>/dev/null" % pattern, check=False)
    return sorted(r.stdout.split())


def _read(sf, host, path):
    return sf.exec(host, ["cat", path]).stdout


def _play(sf, **kw):
    t0 = time.monotonic()
    extra = dict(kw.pop("extra", {}))
    r = sf.play(PLAYBOOK, extra=extra, **kw)
    TIMINGS.setdefault("runs", []).append(round(time.monotonic() - t0, 1))
    return r


@pytest.fixture(scope="module")
def sf():
    t0 = time.monotonic()
    fleet = SeededFleet("rconf", 3, shared=True, rows=20)
    TIMINGS["fleet up + seed"] = round(time.monotonic() - t0, 1)
    share = fleet.fleet.shared_dir[0]
    # One config on the share (h1's seed file, plus a governance policy); every host links to it.
    fleet.exec("h1", "cat %s > %s/config.toml && printf '%%s' '%s' >> %s/config.toml"
               % (CONFIG, share, POLICY.replace("'", "'\\''"), share))
    fleet.exec("h1", "chown aimem:aimem %s %s/config.toml && chmod 0750 %s && chmod 0600 %s/config.toml"
               % (share, share, share, share))
    for h in HOSTS:
        fleet.exec(h, "rm -f %s && ln -s %s/config.toml %s" % (CONFIG, share, CONFIG))
    yield fleet
    fleet.down()
    print("\nrconf timings (s):", TIMINGS)


def _shared(sf):
    return sf.fleet.shared_dir[0] + "/config.toml"


def test_check_mode_shows_the_diff_and_writes_nothing(sf):
    share = sf.fleet.shared_dir[0]
    before = {h: sf.tree_digest(h, [_shared(sf), WORK + "/config.json"]) for h in HOSTS}
    r = _play(sf, extra=SHARED_VARS, check=True, diff=True)
    assert r.rc == 0, r.output
    # the config diff (leader only) and the rule the permissions role would add
    assert "+schema_version = 2" in r.stdout and '-llm_model = "gemma3:4b"' in r.stdout, r.stdout
    assert "+[llm]" in r.stdout, r.stdout
    assert r.recap["h1"]["changed"] > 0
    for h in HOSTS:
        assert sf.tree_digest(h, [_shared(sf), WORK + "/config.json"]) == before[h], h
        assert sf.exec(h, ["test", "-L", CONFIG], check=False).returncode == 0, "%s: symlink replaced" % h
    assert _ls(sf, "h1", share + "/config.toml.bak.*") == []


def test_leader_migrates_the_shared_config_once(sf):
    share = sf.fleet.shared_dir[0]
    v1 = _toml(sf, "h1", _shared(sf))
    r = _play(sf, extra=SHARED_VARS, diff=True)
    assert r.rc == 0, r.output
    # the dry-run review step printed the diff before the write
    preview = r.task("Dry-run the migration and show the diff (secrets masked) before anything is written", "h1")
    assert preview["changed"] is True and preview["config_changed"] is True
    assert r.recap["h1"]["changed"] > 0
    assert r.recap["h2"]["changed"] == 0 and r.recap["h3"]["changed"] == 0, r.recap
    # exactly one migration backup, next to the real file on the share, holding the v1 original
    # (+ the permissions role's own backup of the v2 file before it added the rule)
    rec = json.loads(_read(sf, "h1", WORK + "/config.json"))
    baks = _ls(sf, "h1", share + "/config.toml.bak.*")
    assert baks == sorted([rec["backup_file"], rec["permissions_backup_file"]]), (baks, rec)
    assert [b for b in baks if "schema_version" not in _toml(sf, "h1", b)] == [rec["backup_file"]]
    assert _toml(sf, "h1", rec["backup_file"]) == v1
    # v2 content (read through every host's symlink)
    for h in HOSTS:
        assert sf.exec(h, ["readlink", CONFIG]).stdout.strip() == _shared(sf)
        doc = _toml(sf, h, CONFIG)
        assert doc["schema_version"] == 2
        assert doc["llm"] == {"backend": "ollama", "model": "gemma3:4b", "base_url": "http://127.0.0.1:11434",
                              "auto_tag": {"model": "gemma3:1b"}}
        assert doc["storage"]["default_namespace"] == "h1" and doc["reranker"]["enabled"] is True
        assert not set(doc) & {"llm_model", "ollama_url", "embedding_model", "cross_encoder", "default_namespace"}
        assert doc["permissions"]["mode"] == "advisory"
        assert doc["permissions"]["rules"] == [{"namespace_pattern": "team/*", "op": "write",
                                                "agent_pattern": "intern", "decision": "deny"}]
    assert re.search(r"(?m)^schema_version = 2$", _read(sf, "h1", _shared(sf)))
    # owner/mode of the shared file kept; comments kept
    assert sf.exec("h1", ["stat", "-c", "%U %a", _shared(sf)]).stdout.split() == ["aimem", "600"]
    assert "# LLM used for auto-tagging" in _read(sf, "h1", _shared(sf))
    # config.json only on the leader, with both backups; the result fact on every host
    assert rec["config"] == CONFIG and rec["backup_file"].startswith(_shared(sf) + ".bak.")
    assert "llm_model" in rec["moved_keys"]
    assert sf.exec("h1", ["stat", "-c", "%a", WORK + "/config.json"]).stdout.strip() == "600"
    for h in ("h2", "h3"):
        assert sf.exec(h, ["test", "-e", WORK + "/config.json"], check=False).returncode == 1, h
    for h in HOSTS:
        res = r.task("Show the config and permissions results", h)["msg"]
        assert res["config"]["owner"] == "h1" and res["config"]["backup_file"] == rec["backup_file"], (h, res)


def test_second_run_changes_nothing(sf):
    share = sf.fleet.shared_dir[0]
    digests = sf.tree_digest("h1", [_shared(sf), WORK + "/config.json"])
    r = _play(sf, extra=SHARED_VARS)
    assert r.rc == 0, r.output
    assert r.changed() == {"h1": 0, "h2": 0, "h3": 0}, r.recap
    assert sf.tree_digest("h1", [_shared(sf), WORK + "/config.json"]) == digests
    text = _read(sf, "h1", _shared(sf))
    assert text.count("[[permissions.rules]]") == 1, text
    assert len(_ls(sf, "h1", share + "/config.toml.bak.*")) == 2   # the config's and the permissions'


def test_limit_without_the_leader_still_migrates_once_on_the_leader(sf):
    share = sf.fleet.shared_dir[0]
    # back to the v1 file, no backups, no records
    baks = _ls(sf, "h1", share + "/config.toml.bak.*")
    first = min(baks)
    sf.exec("h1", "cat %s > %s && rm -f %s %s/config.json" % (first, _shared(sf), " ".join(baks), WORK))
    assert "schema_version" not in _toml(sf, "h1", _shared(sf))
    # CONTRACT CONFLICT (reported to the lead): roles/common's preflight requires the leader to be in
    # ansible_play_hosts_all, which --limit h2,h3 excludes; the config/permissions roles support a
    # leader outside the run (delegate_to any inventory host), so common's check is skipped here.
    r = _play(sf, extra=dict(SHARED_VARS, config_serial=1), limit="h2,h3")
    assert r.rc == 0, r.output
    assert set(r.recap) == {"h2", "h3"}
    assert r.recap["h3"]["changed"] == 0, r.recap       # second batch: the leader's file is v2 already
    assert len(_ls(sf, "h1", share + "/config.toml.bak.*")) == 2, _ls(sf, "h1", share + "/config.toml.bak.*")
    assert _toml(sf, "h2", CONFIG)["schema_version"] == 2
    assert _read(sf, "h1", _shared(sf)).count("[[permissions.rules]]") == 1
    # the record is on the leader (outside --limit), not on the hosts that ran
    rec = json.loads(_read(sf, "h1", WORK + "/config.json"))
    assert rec["backup_file"].startswith(_shared(sf) + ".bak.") and "permissions_backup_file" in rec
    for h in ("h2", "h3"):
        assert sf.exec(h, ["test", "-e", WORK + "/config.json"], check=False).returncode == 1, h


def test_shared_without_a_valid_leader_is_refused(sf):
    before = sf.digest("h1", _shared(sf))
    r = _play(sf, extra=dict(SHARED_VARS, aimem_config_leader="h9"))
    assert r.rc != 0
    # the shared settings check (common) refuses it first, naming the variable and the fix
    assert '("h9") is not the inventory_hostname of a host in the inventory' in r.stdout, r.stdout
    # the config role's own check still stands behind it
    r2 = _play(sf, extra=dict(SHARED_VARS, aimem_config_leader="h9"), args=("--skip-tags", "aimem_common"))
    assert r2.rc != 0 and "aimem_config_leader (h9) is not a host of the inventory" in r2.stdout, r2.stdout
    assert sf.digest("h1", _shared(sf)) == before


def test_per_host_configs_each_migrate_their_own(sf):
    # replace the symlinks by each host's own v1 file (the seed's, with the host's namespace)
    v1 = min(_ls(sf, "h1", sf.fleet.shared_dir[0] + "/config.toml.bak.*"))
    for h in HOSTS:
        sf.exec(h, "rm -f %s %s/config.json %s.bak.* && sed 's/^default_namespace = .*/default_namespace = \"%s\"/' %s > %s "
                   "&& chown aimem:aimem %s && chmod 0600 %s" % (CONFIG, WORK, CONFIG, h, v1, CONFIG, CONFIG, CONFIG))
    r = _play(sf)
    assert r.rc == 0, r.output
    for h in HOSTS:
        assert r.recap[h]["changed"] > 0, r.recap
        assert sf.exec(h, ["test", "-L", CONFIG], check=False).returncode == 1
        doc = _toml(sf, h, CONFIG)
        assert doc["schema_version"] == 2 and doc["storage"]["default_namespace"] == h
        baks = _ls(sf, h, CONFIG + ".bak.*")
        assert len(baks) == 2, (h, baks)   # config migrate + permissions rule
        rec = json.loads(_read(sf, h, WORK + "/config.json"))
        assert rec["backup_file"] in baks and rec["permissions_backup_file"] in baks
        res = r.task("Show the config and permissions results", h)["msg"]["config"]
        assert res["owner"] == h and res["shared"] is False
    r2 = _play(sf)
    assert r2.rc == 0 and r2.changed() == {"h1": 0, "h2": 0, "h3": 0}, r2.recap


def test_inline_llm_key_is_refused_and_nothing_written(sf):
    secret = "sk-test-0123456789abcdef"
    v1 = min(_ls(sf, "h1", sf.fleet.shared_dir[0] + "/config.toml.bak.*"))
    sf.exec("h3", "cat %s > %s && printf '\\n[llm]\\nbackend = \"openai\"\\napi_key = \"%s\"\\n' >> %s"
            % (v1, CONFIG, secret, CONFIG))
    before = sf.tree_digest("h3", [CONFIG, WORK + "/config.json"])
    nbaks = len(_ls(sf, "h3", CONFIG + ".bak.*"))
    r = _play(sf, limit="h3")
    assert r.rc != 0
    assert "api_key" in r.stdout and secret not in r.stdout + r.stderr, r.stdout
    assert sf.tree_digest("h3", [CONFIG, WORK + "/config.json"]) == before
    assert len(_ls(sf, "h3", CONFIG + ".bak.*")) == nbaks
