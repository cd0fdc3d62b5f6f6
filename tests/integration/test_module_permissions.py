"""aimem.fleet.aimem_permissions through real ``ansible-playbook -c local`` runs (target Python
/usr/bin/python3): check mode + diff change nothing, the real run writes exactly the rules,
the second run reports changed=0, a bad decision fails and leaves the file byte-identical."""
import glob
import json
import os
import stat
import sys

from helpers import run_playbook

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the controller venv is 3.11
    import tomlkit as tomllib

CONFIG = '''# ai-memory config for svc (comments must survive)
db = "/var/lib/ai-memory/ai-memory.db"  # the DB

[governance]
# legacy v0.6 policies
[[governance.policy]]
scope = "team/*"
action = "write"
decision = "deny"

[[governance.policy]]
agent_id = "ci-bot"

[llm]
backend = "ollama"
'''


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _task(name, path, **kw):
    args = {"path": path}
    args.update(kw)
    return {"name": name, "aimem.fleet.aimem_permissions": args, "ignore_errors": True}


def test_check_diff_then_apply_then_idempotent(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    os.chmod(str(cfg), 0o600)
    before = _read(str(cfg))

    r = run_playbook(tmp_path, [_task("perm", str(cfg), mode="advisory")], check=True, diff=True)
    assert r.rc == 0, r.output
    res = r.task("perm")
    assert res["changed"] is True
    assert [x["agent_pattern"] for x in res["rules_added"]] == ["*", "ci-bot"]
    assert "+[[permissions.rules]]" in r.stdout and '+agent_pattern = "ci-bot"' in r.stdout
    assert '+mode = "advisory"' in r.stdout
    assert _read(str(cfg)) == before  # check mode wrote nothing
    assert glob.glob(str(cfg) + ".bak.*") == []

    r = run_playbook(tmp_path, [_task("perm", str(cfg), mode="advisory")], diff=True)
    res = r.task("perm")
    assert res["changed"] is True and "changed=1" in r.stdout, r.output
    after = _read(str(cfg)).decode()
    assert after.startswith(CONFIG)  # every original byte (comments included) kept, rules appended
    data = tomllib.loads(after)
    assert data["permissions"]["mode"] == "advisory"
    assert data["permissions"]["rules"] == [
        {"namespace_pattern": "team/*", "op": "write", "agent_pattern": "*", "decision": "deny"},
        {"namespace_pattern": "*", "op": "*", "agent_pattern": "ci-bot", "decision": "ask"},
    ]
    assert stat.S_IMODE(os.stat(str(cfg)).st_mode) == 0o600
    backups = glob.glob(str(cfg) + ".bak.*")
    assert backups == [res["backup_file"]] and _read(backups[0]) == before

    r = run_playbook(tmp_path, [_task("perm", str(cfg), mode="advisory")], diff=True)
    assert r.status("perm") == "ok" and r.task("perm")["changed"] is False, r.output
    assert "changed=0" in r.stdout
    assert _read(str(cfg)).decode() == after
    assert len(glob.glob(str(cfg) + ".bak.*")) == 1


def test_bad_decision_fails_and_leaves_file_byte_identical(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.replace('agent_id = "ci-bot"', 'agent_id = "ci-bot"\ndecision = "pending"'))
    before = _read(str(cfg))
    inline = tmp_path / "inline.toml"
    inline.write_text(CONFIG + '\n[permissions]\nrules = [ { namespace_pattern = "x", op = "*", '
                               'agent_pattern = "*", decision = "ask" } ]\n')
    inline_before = _read(str(inline))
    r = run_playbook(tmp_path, [_task("bad", str(cfg)), _task("bad check", str(cfg)),
                                _task("inline", str(inline))], diff=True)
    assert r.status("bad") == "ignored"
    msg = r.task("bad")["msg"]
    assert "[[governance.policy]] #2" in msg and str(cfg) in msg and "'pending'" in msg
    assert "allow, deny or ask" in msg and "file left unchanged" in msg
    assert _read(str(cfg)) == before and glob.glob(str(cfg) + ".bak.*") == []
    assert r.status("inline") == "ignored" and "inline array" in r.task("inline")["msg"]
    assert _read(str(inline)) == inline_before


def test_missing_file_named(tmp_path):
    missing = str(tmp_path / "nope" / "config.toml")
    r = run_playbook(tmp_path, [_task("missing", missing)])
    assert r.status("missing") == "ignored"
    assert missing in r.task("missing")["msg"] and not os.path.exists(missing)


def test_diff_never_shows_secrets(tmp_path):
    # The diff is the whole file: the serve api_key, a hooks HMAC secret and an inline [llm].api_key
    # must not reach the output or the registered result.
    secrets = ("http-serve-key-Q7w2", "hmac-5f5f5f5f5f5f", "sk-llm-inline-9Zx")
    cfg = tmp_path / "config.toml"
    cfg.write_text('api_key = "%s"\n[hooks]\nhmac_secret = "%s"\n' % secrets[:2]
                   + CONFIG.replace('backend = "ollama"', 'backend = "openai"\napi_key = "%s"' % secrets[2]))
    r = run_playbook(tmp_path, [_task("perm", str(cfg))], check=True, diff=True)
    res = r.task("perm")
    assert res["changed"] is True and "+[[permissions.rules]]" in r.stdout, r.output
    for s in secrets:
        assert s not in r.stdout and s not in r.stderr and s not in json.dumps(res), s
