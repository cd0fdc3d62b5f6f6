"""aimem.fleet.aimem_config_migrate through real ansible-playbook runs (localhost, -c local,
/usr/bin/python3 with Debian's python3-tomlkit 0.11.7)."""
import json
import os
import stat
from collections import OrderedDict

import pytest
import tomlkit

from helpers import run_playbook

MOD = "aimem.fleet.aimem_config_migrate"

V1 = """\
# ai-memory config (hand-written)
db = "/var/lib/ai-memory/ai-memory.db"   # on SSD
tier = "semantic"

# LLM via the GPU box
llm_model = "gemma2:2b"  # small
ollama_url = "http://10.9.8.7:11434"
embedding_model = "nomic-embed-text"
cross_encoder = true
archive_on_gc = true

[ttl]
short = 3600
"""

V1_EXPECTED = {
    "db": "/var/lib/ai-memory/ai-memory.db", "tier": "semantic", "schema_version": 2,
    "ttl": {"short": 3600},
    "llm": {"backend": "ollama", "model": "gemma2:2b", "base_url": "http://10.9.8.7:11434"},
    "embeddings": {"backend": "ollama", "url": "http://10.9.8.7:11434", "model": "nomic-embed-text"},
    "reranker": {"enabled": True, "model": "ms-marco-MiniLM-L-6-v2"},
    "storage": {"archive_on_gc": True},
}

SECRET = "sk-inline-Zq8vT3xL0pM2nB7c"
TOP_SECRET = "http-api-key-Kd93JfQ0w"


def _home(tmp_path, config_text=None, mode=0o640):
    home = tmp_path / "home"
    cfg_dir = home / ".config" / "ai-memory"
    cfg_dir.mkdir(parents=True)
    cfg = cfg_dir / "config.toml"
    if config_text is not None:
        cfg.write_text(config_text)
        os.chmod(str(cfg), mode)
    return home, cfg


def _backups(path):
    d = os.path.dirname(str(path))
    base = os.path.basename(str(path)) + ".bak."
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith(base))


def _mode(p):
    return stat.S_IMODE(os.stat(str(p)).st_mode)


def _play(home, tasks):
    return [{"name": "config migrate", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "environment": {"HOME": str(home)}, "tasks": tasks}]


def test_check_mode_diff_real_run_and_second_run(tmp_path):
    home, cfg = _home(tmp_path, V1)
    orig_stat = os.stat(str(cfg))

    # 1. check mode + diff, default path resolved with the remote HOME: nothing written.
    r = run_playbook(tmp_path, _play(home, [{"name": "preview", MOD: {}}]), check=True, diff=True)
    assert r.rc == 0, r.output
    res = r.task("preview")
    assert res["changed"] is True and res["config_changed"] is True
    assert res["path"] == str(cfg)
    assert res["moved_keys"] == {
        "llm_model": ["llm.model"], "ollama_url": ["llm.base_url", "embeddings.url"],
        "embedding_model": ["embeddings.model"], "cross_encoder": ["reranker.enabled"],
        "archive_on_gc": ["storage.archive_on_gc"]}
    assert res["dropped_keys"] == {}
    assert res["schema_version_before"] is None and res["schema_version_after"] == 2
    assert res["backup_file"] == ""
    assert cfg.read_text() == V1
    assert os.stat(str(cfg)).st_mtime_ns == orig_stat.st_mtime_ns
    assert _backups(cfg) == []
    assert "--- before: %s" % cfg in r.stdout and "+++ after: %s" % cfg in r.stdout
    assert '-llm_model = "gemma2:2b"  # small' in r.stdout
    assert "+schema_version = 2" in r.stdout
    assert '+url = "http://10.9.8.7:11434"' in r.stdout

    # 2. real run, then the same task again.
    r = run_playbook(tmp_path, _play(home, [{"name": "migrate", MOD: {}}, {"name": "again", MOD: {}}]))
    assert r.rc == 0, r.output
    first, second = r.task("migrate"), r.task("again")
    assert first["changed"] is True
    assert tomlkit.parse(cfg.read_text()).unwrap() == V1_EXPECTED
    text = cfg.read_text()
    assert "# ai-memory config (hand-written)" in text and "# on SSD" in text and 'model = "gemma2:2b"  # small' in text
    assert _mode(cfg) == 0o640
    assert os.stat(str(cfg)).st_uid == orig_stat.st_uid
    backups = _backups(cfg)
    assert backups == [first["backup_file"]]
    assert open(backups[0]).read() == V1
    assert _mode(backups[0]) & ~_mode(cfg) == 0  # never wider than the source
    assert second["changed"] is False and second["already_v2"] is True
    assert second["backup_file"] == ""
    assert "changed=1 " in r.stdout  # only the first task changed anything
    assert _backups(cfg) == backups


def test_externalize_secret_never_logged(tmp_path):
    src = ('api_key = "%s"\nllm_model = "m"\n\n[llm]\nbackend = "openai"\nmodel = "gpt-x"\n'
           'api_key = "%s"  # prod\n' % (TOP_SECRET, SECRET))
    home, cfg = _home(tmp_path, src, mode=0o644)
    task = {"name": "ext", MOD: {"path": str(cfg), "inline_api_key": "externalize"}}
    r = run_playbook(tmp_path, _play(home, [task, dict(task, name="ext again")]), diff=True,
                     extra_args=("-vvv",))
    assert r.rc == 0, r.output
    for s in (SECRET, TOP_SECRET):
        assert s not in r.stdout and s not in r.stderr
        assert s not in json.dumps(r.results)
    res = r.task("ext")
    key = cfg.parent / "llm-api-key"
    assert res["api_key_files"] == [{"section": "llm", "path": str(key), "created": True}]
    assert key.read_text() == SECRET
    assert _mode(key) == 0o400
    out = tomlkit.parse(cfg.read_text()).unwrap()
    assert out["llm"] == {"backend": "openai", "model": "gpt-x", "api_key_file": str(key)}
    assert out["api_key"] == TOP_SECRET  # the HTTP API key of `serve` is not touched
    assert 'api_key_file = "%s"  # prod' % key in cfg.read_text()
    # llm_model lost to the existing [llm] (upstream semantics), reported
    assert "llm_model" in res["dropped_keys"] and "already exists" in res["dropped_keys"]["llm_model"]
    # the backup holds the original secret: capped at 0600 (< the original 0644) and reported
    bak = res["backup_file"]
    assert SECRET in open(bak).read()
    assert _mode(bak) == 0o600
    assert any("backup" in w and "api_key" in w for w in res["migration_warnings"])
    # the diff was shown, masked
    assert "-api_key = \"********\"  # prod" in r.stdout
    assert "+api_key_file = \"%s\"  # prod" % key in r.stdout
    again = r.task("ext again")
    assert again["changed"] is False
    assert again["api_key_files"] == []
    assert len(_backups(cfg)) == 1


def test_failures_change_nothing(tmp_path):
    files = {
        "inline": '[llm]\nmodel = "m"\napi_key = "%s"\n' % SECRET,
        "enum": 'llm_model = "m"\n\n[permissions]\nmode = "Enforce"\n',
        "broken": 'llm_model = "m"\nollama_url = [\n',
        "lax": '[llm]\napi_key_file = "%s"\n' % (tmp_path / "lax-key"),
        "badtype": 'cross_encoder = "yes"\n',
    }
    (tmp_path / "lax-key").write_text("k")
    os.chmod(str(tmp_path / "lax-key"), 0o644)
    paths = {}
    for name, text in files.items():
        p = tmp_path / ("%s.toml" % name)
        p.write_text(text)
        paths[name] = p
    tasks = [{"name": name, MOD: {"path": str(p)}, "ignore_errors": True} for name, p in paths.items()]
    # externalizing into a directory that already holds a different key must not overwrite it
    keydir = tmp_path / "keys"
    keydir.mkdir()
    (keydir / "llm-api-key").write_text("another-secret")
    tasks.append({"name": "clash", MOD: {"path": str(paths["inline"]), "inline_api_key": "externalize",
                                         "api_key_dir": str(keydir)}, "ignore_errors": True})
    r = run_playbook(tmp_path, _play(tmp_path, tasks), diff=True)
    assert r.rc == 0, r.output
    for name, p in paths.items():
        assert r.status(name) == "ignored", name
        assert p.read_text() == files[name], name
        assert _backups(p) == [], name
        assert str(p) in r.task(name)["msg"], name
    msgs = {n: r.task(n)["msg"] for n in paths}
    assert "inline `api_key` in [llm] is forbidden" in msgs["inline"]
    assert "inline_api_key=externalize" in msgs["inline"]
    assert SECRET not in r.stdout
    assert '[permissions].mode = "Enforce"' in msgs["enum"]
    assert "is not valid TOML" in msgs["broken"] and "line 2" in msgs["broken"]
    assert r.task("broken")["line"] == 2
    assert "chmod 0400 %s" % (tmp_path / "lax-key") in msgs["lax"]
    assert "[reranker].enabled must be a boolean" in msgs["badtype"]
    assert r.status("clash") == "ignored"
    assert "already exists with a different secret" in r.task("clash")["msg"]
    assert (keydir / "llm-api-key").read_text() == "another-secret"
    assert paths["inline"].read_text() == files["inline"]
    # no backup, no temp file left anywhere
    assert [f for f in os.listdir(str(tmp_path)) if ".bak." in f or f.endswith(".tmp")] == []

CLAUDE = OrderedDict([
    ("numStartups", 4),
    ("mcpServers", OrderedDict([
        ("memory", OrderedDict([("command", "/usr/local/bin/ai-memory"), ("args", ["mcp"]),
                                ("env", OrderedDict([("AI_MEMORY_DB", "/srv/m.db"),
                                                     ("AI_MEMORY_LLM_API_KEY", SECRET)]))])),
        ("gh", OrderedDict([("command", "npx"), ("env", {"GITHUB_TOKEN": "ghp_keepme_123456"})])),
    ])),
    ("autoUpdates", False),
])


def test_clean_claude_json_on_already_v2_config(tmp_path):
    home, cfg = _home(tmp_path, "# done\nschema_version = 2\n\n[llm]\nmodel = 'm'\n")
    cj = home / ".claude.json"
    cj.write_text(json.dumps(CLAUDE, indent=2))
    os.chmod(str(cj), 0o600)
    before_cfg = cfg.read_text()
    task = {"name": "clean", MOD: {"clean_claude_json": True}}
    r = run_playbook(tmp_path, _play(home, [task]), check=True, diff=True)
    assert r.rc == 0, r.output
    res = r.task("clean")
    assert res["changed"] is True and res["config_changed"] is False and res["already_v2"] is True
    assert res["claude_json_cleaned"] == {"memory": ["AI_MEMORY_DB", "AI_MEMORY_LLM_API_KEY"]}
    assert json.loads(cj.read_text()) == json.loads(json.dumps(CLAUDE))  # check mode: untouched
    assert '--- before: %s' % cj in r.stdout and '-        "AI_MEMORY_DB": "********",' in r.stdout
    assert SECRET not in r.stdout and "ghp_keepme" not in r.stdout and "/srv/m.db" not in r.stdout

    r = run_playbook(tmp_path, _play(home, [task, dict(task, name="clean again")]))
    assert r.rc == 0, r.output
    res = r.task("clean")
    assert res["changed"] is True and res["claude_json_changed"] is True
    out = json.loads(cj.read_text(), object_pairs_hook=OrderedDict)
    expected = json.loads(json.dumps(CLAUDE), object_pairs_hook=OrderedDict)
    del expected["mcpServers"]["memory"]["env"]
    assert out == expected and list(out) == list(expected)
    assert cj.read_text() == json.dumps(expected, indent=2)  # same formatting, no trailing newline
    assert _mode(cj) == 0o600
    assert res["claude_json_backup_file"] and json.loads(open(res["claude_json_backup_file"]).read()) == \
        json.loads(json.dumps(CLAUDE))
    assert _mode(res["claude_json_backup_file"]) == 0o600
    assert cfg.read_text() == before_cfg and _backups(cfg) == []
    assert r.task("clean again")["changed"] is False


def test_home_unset_and_missing_file(tmp_path):
    home, cfg = _home(tmp_path)  # no config written
    tasks = [
        {"name": "no home", MOD: {}, "environment": {"HOME": ""}, "ignore_errors": True},
        {"name": "missing", MOD: {}, "ignore_errors": True},
        {"name": "missing ok", MOD: {"missing": "ignore"}},
    ]
    r = run_playbook(tmp_path, _play(home, tasks))
    assert r.rc == 0, r.output
    assert r.status("no home") == "ignored"
    assert "HOME is not set" in r.task("no home")["msg"]
    assert r.status("missing") == "ignored"
    assert "no config file at %s" % cfg in r.task("missing")["msg"]
    assert "become_user" in r.task("missing")["msg"]
    ok = r.task("missing ok")
    assert ok["changed"] is False and any("no config file" in w for w in ok["migration_warnings"])
    assert not cfg.exists()


# ------------------------------------------------------------------------------------------------
# Same result as the 0.7.0 stand-in's `config migrate` wherever upstream loses nothing
# ------------------------------------------------------------------------------------------------

STANDIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "standin")


@pytest.fixture(scope="module")
def standin_070(request, tmp_path_factory):
    """The packed release/v0.7.0 stand-in (shared ``standin_bins`` fixture when it exists)."""
    try:
        bins = request.getfixturevalue("standin_bins")
    except pytest.FixtureLookupError:
        if not os.path.isfile(os.path.join(STANDIN, "build.py")):
            pytest.fail("tests/standin/build.py is missing: the stand-in comparison cannot run")
        import sys
        if STANDIN not in sys.path:
            sys.path.insert(0, STANDIN)
        import build
        bins = build.build_all(str(tmp_path_factory.mktemp("standin")))["bins"]
    return str(bins["0.7.0"])


# Inputs on which upstream's mapping loses nothing (no ollama_url/auto_tag_model without llm_model,
# no ollama_url without embed_url, no legacy key aimed at an existing section).
LOSSLESS = OrderedDict([
    ("upstream unit-test shape", """\
db = "/tmp/x.db"
tier = "semantic"
llm_model = "gemma2:2b"
ollama_url = "http://127.0.0.1:11434"
embed_url = "http://127.0.0.1:11435"
embedding_model = "nomic-embed-text"
cross_encoder = true
default_namespace = "team"
archive_on_gc = true
archive_max_days = 30
max_memory_mb = 512
auto_tag_model = "qwen2:0.5b"
"""),
    ("commented, with kept tables", """\
# header
api_key = "http-key"   # serve key
llm_model = "m"   # model
embedding_model = "e"

[ttl]
b = 2
a = 1

[permissions]
mode = "advisory"

[[permissions.rules]]
namespace_pattern = "team/*"
op = "*"
agent_pattern = "*"
decision = "allow"
"""),
    ("storage only", "default_namespace = 'n'\nmax_memory_mb = 1_024\n"),
    ("reranker only", "cross_encoder = false\n"),
    ("schema 1", "schema_version = 1\nembed_url = 'http://e:1'\n"),
    ("string schema", "schema_version = '2'\ndb = 'x.db'\n"),
    ("v2 + leftover legacy", "schema_version = 2\narchive_on_gc = false\n[llm]\nmodel = 'x'\n"),
    ("comment-only template", "# ai-memory config\n# llm_model = \"x\"\n"),
    ("already v2", "schema_version = 2\n\n[storage]\ndefault_namespace = 'z'\n"),
])

CLAUDE_FOR_COMPARE = {
    "b": 1,
    "mcpServers": {"m": {"command": "/opt/bin/ai-memory", "args": ["mcp"], "env": {"A": "1"}},
                   "n": {"command": "ai-memory.exe", "env": {"B": "2"}}},
    "a": {"x": [1, 2.5, None]},
}


def test_same_document_as_standin_070(tmp_path, standin_070):
    import subprocess
    tasks = []
    homes = {}
    for i, (name, text) in enumerate(LOSSLESS.items()):
        ours, theirs = tmp_path / ("ours%d" % i), tmp_path / ("theirs%d" % i)
        for h in (ours, theirs):
            c = h / ".config" / "ai-memory" / "config.toml"
            c.parent.mkdir(parents=True)
            c.write_text(text)
            (h / ".claude.json").write_text(json.dumps(CLAUDE_FOR_COMPARE, indent=2))
        homes[name] = (ours, theirs)
        tasks.append({"name": name, MOD: {"clean_claude_json": True}, "environment": {"HOME": str(ours)}})
        proc = subprocess.run([standin_070, "config", "migrate", "--also-clean-claude-json"],
                              env={"HOME": str(theirs), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                              cwd=str(theirs), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (name, proc.stderr)
    r = run_playbook(tmp_path, [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                 "tasks": tasks}])
    assert r.rc == 0, r.output
    for name, (ours, theirs) in homes.items():
        cfg_o = ours / ".config" / "ai-memory" / "config.toml"
        cfg_t = theirs / ".config" / "ai-memory" / "config.toml"
        assert tomlkit.parse(cfg_o.read_text()).unwrap() == tomlkit.parse(cfg_t.read_text()).unwrap(), name
        res = r.task(name)
        assert res["dropped_keys"] == {}, name
        if name == "already v2":
            # upstream's early exit skips claude.json; ours cleans it anyway (documented difference)
            assert res["claude_json_changed"] is True and res["config_changed"] is False
            assert "env" in json.loads((theirs / ".claude.json").read_text())["mcpServers"]["m"]
        else:
            assert json.loads((ours / ".claude.json").read_text()) == \
                json.loads((theirs / ".claude.json").read_text()), name
        assert res["changed"] is True
        # same document, but ours kept the comments upstream drops (facts §1.7)
        for line in LOSSLESS[name].splitlines():
            if line.startswith("#"):
                assert line in cfg_o.read_text(), (name, line)
    assert "# header" not in (homes["commented, with kept tables"][1] / ".config" / "ai-memory"
                              / "config.toml").read_text()


def test_relative_api_key_dir_is_written_as_an_absolute_api_key_file(tmp_path):
    # A relative api_key_file would be resolved against the daemon's working directory: the key
    # must be recorded by its absolute path (resolved against the module's working directory).
    home, cfg = _home(tmp_path, '[llm]\nbackend = "openai"\napi_key = "%s"\n' % SECRET, mode=0o600)
    rel = "keys-rel"
    task = {"name": "rel", MOD: {"path": str(cfg), "inline_api_key": "externalize", "api_key_dir": rel}}
    r = run_playbook(tmp_path, _play(home, [task]))
    assert r.rc == 0, r.output
    kf = tomlkit.parse(cfg.read_text()).unwrap()["llm"]["api_key_file"]
    assert os.path.isabs(kf), kf
    # -c local runs the module in the playbook's directory (tmp_path)
    key = tmp_path / rel / "llm-api-key"
    assert kf == str(key)
    assert r.task("rel")["api_key_files"][0]["path"] == kf
    assert key.read_text() == SECRET and _mode(key) == 0o400
