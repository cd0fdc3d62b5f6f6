"""Tests of the 0.7.0-only subcommands of the ai-memory stand-in (helper standin-v070).

Facts: /work/shared/reference/ai-memory-facts.md §1 (config migrate), §4 (verify chain),
§5.1 (governance), §5.2 (identity), §5.3 (schema-init), §6 (env parsers).

The CLI is exercised through the packed stand-ins (``standin_bins`` fixture from
tests/standin/conftest.py) when that fixture exists, otherwise through
``python3 -m aimem_standin`` with ``AIMEM_STANDIN_BUILD``.  Every subprocess gets its own HOME.
"""
import base64
import datetime
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tomllib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from aimem_standin import cmd_config, cmd_governance, envparse, keys, signed_events  # noqa: E402
from aimem_standin import db as standin_db  # noqa: E402
from aimem_standin import builds as standin_builds  # noqa: E402
from aimem_standin.tomlwrite import to_string_pretty  # noqa: E402

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


# ----------------------------------------------------------------------------- runner
@pytest.fixture
def _bins(request):
    try:
        return request.getfixturevalue("standin_bins")
    except pytest.FixtureLookupError:
        return None


class Result(object):
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def own_err(self):
        """stderr without the preamble's ``ai-memory: ...`` config-load lines (§1.2)."""
        return "".join(line for line in self.err.splitlines(True)
                       if not line.startswith("ai-memory: "))

    def __repr__(self):
        return "rc=%r\nstdout=%s\nstderr=%s" % (self.rc, self.out, self.err)


@pytest.fixture
def ai(_bins, tmp_path):
    """``ai(args, build="0.7.0", home=..., env=None, cwd=None, umask=None, fsize=None)``."""
    default_home = tmp_path / "home"
    default_home.mkdir()

    def run(args, build="0.7.0", home=default_home, env=None, cwd=None, umask=None, fsize=None,
            drop_home=False):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        if not drop_home:
            e["HOME"] = str(home)
        if env:
            e.update(env)
        if _bins is not None:
            cmd = [str(_bins[build])] + list(args)
        else:
            e["AIMEM_STANDIN_BUILD"] = build
            e["PYTHONPATH"] = HERE
            e["PYTHONDONTWRITEBYTECODE"] = "1"
            cmd = [PYTHON, "-m", "aimem_standin"] + list(args)

        def pre():
            if umask is not None:
                os.umask(umask)
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        proc = subprocess.run(cmd, env=e, cwd=str(cwd or home), capture_output=True, text=True,
                              timeout=60, preexec_fn=pre)
        return Result(proc)

    run.home = default_home
    return run


def cfg_path(home):
    return home / ".config" / "ai-memory" / "config.toml"


def write_cfg(home, text, mode=None):
    p = cfg_path(home)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    if mode is not None:
        os.chmod(p, mode)
    return p


def backups(home):
    return sorted(p.name for p in cfg_path(home).parent.iterdir() if ".bak." in p.name)


LEGACY_FULL = """\
# my comment
tier = "smart"
db = "~/.claude/ai-memory.db"
api_key = "http-key"
llm_model = "gemma4:e2b"
ollama_url = "http://10.0.0.5:11434"
embed_url = "http://10.0.0.6:11434"
embedding_model = "nomic-embed-text"
cross_encoder = true
default_namespace = "team"
archive_on_gc = false
archive_max_days = 90
max_memory_mb = 512
auto_tag_model = "tagger"
unknown_key = [1, 2]

[ttl]
short_ttl_secs = 21600

[custom.table]
x = "y"
"""


# ============================================================================= config migrate
class TestConfigMigrateExitCodes(object):
    def test_home_unset_exit_2(self, ai):
        r = ai(["config", "migrate"], drop_home=True)
        assert r.rc == 2, r
        assert r.err == "ERROR: $HOME is not set; cannot resolve config path.\n"
        assert r.out == ""

    def test_file_missing_exit_2(self, ai, tmp_path):
        home = tmp_path / "h2"
        home.mkdir()
        (home / ".config").write_text("not a dir")  # the preamble cannot write its template
        r = ai(["config", "migrate"], home=home)
        assert r.rc == 2, r
        assert r.own_err == "ERROR: no config file at %s — nothing to migrate.\n" % cfg_path(home)
        assert r.out == ""

    def test_read_error_invalid_utf8_exit_4(self, ai):
        p = cfg_path(ai.home)
        p.parent.mkdir(parents=True)
        p.write_bytes(b"tier = \"\xff\xfe\"\n")
        r = ai(["config", "migrate"])
        assert r.rc == 4, r
        assert r.own_err == "ERROR: could not read %s: stream did not contain valid UTF-8\n" % p
        assert r.out == ""
        assert backups(ai.home) == []

    def test_read_error_directory_exit_4(self, ai):
        p = cfg_path(ai.home)
        p.mkdir(parents=True)
        r = ai(["config", "migrate"])
        assert r.rc == 4, r
        assert r.own_err == "ERROR: could not read %s: Is a directory (os error 21)\n" % p

    def test_invalid_toml_exit_3(self, ai):
        p = write_cfg(ai.home, "llm_model = \n")
        r = ai(["config", "migrate"])
        assert r.rc == 3, r
        assert r.own_err.startswith("ERROR: %s is not valid TOML: " % p)
        assert r.out == ""
        assert p.read_text() == "llm_model = \n"
        assert backups(ai.home) == []

    def test_already_v2_exit_0_even_with_dry_run_and_no_claude_cleaning(self, ai):
        p = write_cfg(ai.home, "# keep me\nschema_version = 2\n[llm]\nmodel = \"m\"\n")
        claude = ai.home / ".claude.json"
        claude_text = '{"mcpServers":{"m":{"command":"ai-memory","env":{"A":"1"}}}}'
        claude.write_text(claude_text)
        for extra in ([], ["--dry-run"], ["--also-clean-claude-json"],
                      ["--dry-run", "--also-clean-claude-json"]):
            r = ai(["config", "migrate"] + extra)
            assert r.rc == 0, (extra, r)
            assert r.own_err == ("INFO: %s is already schema_version >= 2 with no legacy "
                                 "fields; no migration needed.\n" % p)
            assert r.out == ""
        assert p.read_text() == "# keep me\nschema_version = 2\n[llm]\nmodel = \"m\"\n"
        assert claude.read_text() == claude_text
        assert backups(ai.home) == []
        assert not [n for n in os.listdir(ai.home) if ".bak." in n]

    def test_dry_run_frame_exit_1_nothing_written(self, ai):
        original = "# c\nllm_model = \"m\"\ntier = \"smart\"\n"
        p = write_cfg(ai.home, original)
        (ai.home / ".claude.json").write_text('{"mcpServers":{}}')
        r = ai(["config", "migrate", "--dry-run", "--also-clean-claude-json"])
        assert r.rc == 1, r
        assert r.out == ""
        expected_toml = 'schema_version = 2\ntier = "smart"\n\n[llm]\nbackend = "ollama"\n' \
                        'model = "m"\n'
        assert r.own_err == (
            "--- DRY RUN — %s would be rewritten as: ---\n" % p + expected_toml + "\n"
            "--- end dry run ---\n(--also-clean-claude-json also skipped in dry-run.)\n")
        assert p.read_text() == original
        assert backups(ai.home) == []

    def test_dry_run_without_claude_flag_has_no_skip_line(self, ai):
        write_cfg(ai.home, "llm_model = \"m\"\n")
        r = ai(["config", "migrate", "--dry-run"])
        assert r.rc == 1
        assert r.own_err.endswith("--- end dry run ---\n")
        assert "also skipped" not in r.err

    def test_backup_write_failure_exit_4(self, ai):
        original = "llm_model = \"%s\"\n" % ("m" * 200)
        p = write_cfg(ai.home, original)
        r = ai(["config", "migrate"], fsize=64)
        assert r.rc == 4, r
        assert r.own_err.startswith("ERROR: could not write backup %s.bak." % p)
        assert r.own_err.endswith(": File too large (os error 27)\n")
        assert p.read_text() == original  # the live file is only touched after the backup

    def test_rewrite_failure_exit_4_and_not_atomic(self, ai):
        original = "llm_model='m'\n"
        p = write_cfg(ai.home, original)
        r = ai(["config", "migrate"], fsize=30)
        assert r.rc == 4, r
        assert r.own_err == "ERROR: could not write %s: File too large (os error 27)\n" % p
        (bak,) = backups(ai.home)
        assert (p.parent / bak).read_text() == original
        # truncated in place and partially rewritten: no temp file + rename
        partial = p.read_text()
        assert partial != original and len(partial) == 30
        assert partial.startswith("schema_version = 2\n")

    def test_success_exit_0_messages(self, ai):
        p = write_cfg(ai.home, "llm_model = \"m\"\n")
        r = ai(["config", "migrate"])
        assert r.rc == 0, r
        assert r.out == ""
        (bak,) = backups(ai.home)
        assert r.own_err == (
            "OK: migrated %s (backup: %s)\n" % (p, p.parent / bak)
            + "INFO: your ~/.claude.json may still carry an mcpServers env block. Re-run with "
            "`--also-clean-claude-json` to remove it after verifying the new config.toml "
            "works.\n")
        # second run on the output: no-op, no new backup (§1.5)
        r2 = ai(["config", "migrate"])
        assert r2.rc == 0 and "already schema_version >= 2" in r2.own_err
        assert backups(ai.home) == [bak]

    def test_template_from_preamble_migrates_to_schema_version_only(self, ai):
        r = ai(["config", "migrate"])  # no config: the preamble writes the all-comment template
        assert r.rc == 0, r
        assert tomllib.loads(cfg_path(ai.home).read_text()) == {"schema_version": 2}
        assert cfg_path(ai.home).read_text() == "schema_version = 2\n"

    def test_global_db_flag_accepted_and_ignored(self, ai, tmp_path):
        write_cfg(ai.home, "llm_model = \"m\"\n")
        r = ai(["--db", str(tmp_path / "x.db"), "config", "migrate", "--db", "y.db"])
        assert r.rc == 0, r
        assert not (tmp_path / "x.db").exists()

    def test_unknown_flag_is_clap_exit_2(self, ai):
        write_cfg(ai.home, "llm_model = \"m\"\n")
        r = ai(["config", "migrate", "--config", "/x"])
        assert r.rc == 2
        assert "error: unexpected argument '--config' found" in r.err

    @pytest.mark.parametrize("build", ["0.6.4", "0.7.0-tag"])
    def test_config_subcommand_absent_on_other_builds(self, ai, build):
        r = ai(["config", "--help"], build=build)
        assert r.rc == 2
        assert "error: unrecognized subcommand 'config'" in r.err

    def test_config_help_is_the_capability_probe(self, ai):
        r = ai(["config", "--help"])
        assert r.rc == 0 and "migrate" in r.out


class TestIdempotencyRule(object):
    @pytest.mark.parametrize("text,v2", [
        ("schema_version = 2\n", True),
        ("schema_version = 3\n", True),
        ("schema_version = 2\ntier = \"x\"\n[storage]\narchive_on_gc = true\n", True),
        ("schema_version = \"2\"\n", False),
        ("schema_version = 2.0\n", False),
        ("schema_version = true\n", False),
        ("schema_version = 1\n", False),
        ("tier = \"x\"\n", False),
        ("schema_version = 2\narchive_max_days = 3\n", False),
        ("schema_version = 5\nollama_url = \"u\"\n", False),
    ])
    def test_is_already_v2(self, text, v2):
        assert cmd_config.is_already_v2(tomllib.loads(text)) is v2

    @pytest.mark.parametrize("text", ['schema_version = "2"\n', "schema_version = 2.0\n"])
    def test_string_and_float_versions_are_rewritten_to_integer_2(self, ai, text):
        p = write_cfg(ai.home, text)
        r = ai(["config", "migrate"])
        assert r.rc == 0, r
        assert "OK: migrated" in r.own_err
        doc = tomllib.loads(p.read_text())
        assert doc == {"schema_version": 2} and type(doc["schema_version"]) is int
        assert len(backups(ai.home)) == 1

    def test_v2_with_legacy_keys_is_rewritten(self, ai):
        p = write_cfg(ai.home, "schema_version = 2\n[storage]\nmax_memory_mb = 1\n"
                      .replace("[storage]\n", "archive_on_gc = true\n[storage]\n"))
        r = ai(["config", "migrate"])
        assert r.rc == 0, r
        # [storage] already existed -> archive_on_gc is dropped (not merged)
        assert tomllib.loads(p.read_text()) == {"schema_version": 2,
                                                "storage": {"max_memory_mb": 1}}


class TestMapping(object):
    def mig(self, text):
        return cmd_config.build_migrated_table(tomllib.loads(text))

    def test_full_legacy_file(self):
        out = self.mig(LEGACY_FULL)
        assert out == {
            "tier": "smart", "db": "~/.claude/ai-memory.db", "api_key": "http-key",
            "unknown_key": [1, 2], "ttl": {"short_ttl_secs": 21600},
            "custom": {"table": {"x": "y"}},
            "schema_version": 2,
            "llm": {"backend": "ollama", "model": "gemma4:e2b",
                    "base_url": "http://10.0.0.5:11434", "auto_tag": {"model": "tagger"}},
            "embeddings": {"backend": "ollama", "url": "http://10.0.0.6:11434",
                           "model": "nomic-embed-text"},
            "reranker": {"enabled": True, "model": "ms-marco-MiniLM-L-6-v2"},
            "storage": {"default_namespace": "team", "archive_on_gc": False,
                        "archive_max_days": 90, "max_memory_mb": 512},
        }
        assert not any(k in out for k in cmd_config.LEGACY_FIELDS)

    def test_llm_model_alone(self):
        assert self.mig('llm_model = "m"')["llm"] == {"backend": "ollama", "model": "m"}

    @pytest.mark.parametrize("text,emb", [
        ('embed_url = "u"', {"backend": "ollama", "url": "u"}),
        ('embedding_model = "e"', {"backend": "ollama", "model": "e"}),
    ])
    def test_embeddings_rows(self, text, emb):
        out = self.mig(text)
        assert out["embeddings"] == emb and "llm" not in out

    def test_reranker_copies_type_verbatim(self):
        out = self.mig('cross_encoder = "yes"')
        assert out["reranker"] == {"enabled": "yes", "model": "ms-marco-MiniLM-L-6-v2"}

    @pytest.mark.parametrize("key,value", [("default_namespace", '"ns"'),
                                           ("archive_on_gc", "true"),
                                           ("archive_max_days", "30"),
                                           ("max_memory_mb", "64")])
    def test_each_storage_key_alone_creates_storage(self, key, value):
        out = self.mig("%s = %s" % (key, value))
        expected_value = tomllib.loads("v = %s" % value)["v"]
        assert out == {"schema_version": 2, "storage": {key: expected_value}}

    @pytest.mark.parametrize("text", ['ollama_url = "u"', 'auto_tag_model = "t"',
                                      'ollama_url = "u"\nauto_tag_model = "t"'])
    def test_drop_llm_fields_without_llm_model(self, text):
        assert self.mig(text) == {"schema_version": 2}

    @pytest.mark.parametrize("text,section", [
        ('llm_model = "m"\nollama_url = "u"\n[llm]\nbackend = "openai"', "llm"),
        ('embed_url = "u"\n[embeddings]\nmodel = "keep"', "embeddings"),
        ('embedding_model = "e"\n[embeddings]\nmodel = "keep"', "embeddings"),
        ('cross_encoder = true\n[reranker]\nmodel = "keep"', "reranker"),
        ('archive_on_gc = true\ndefault_namespace = "n"\n[storage]\nmax_memory_mb = 5', "storage"),
    ])
    def test_drop_when_target_section_exists(self, text, section):
        doc = tomllib.loads(text)
        out = cmd_config.build_migrated_table(doc)
        assert out[section] == doc[section]  # untouched, legacy value not merged
        assert set(out) == {"schema_version", section}

    def test_ollama_url_is_not_an_embeddings_fallback_after_migration(self):
        out = self.mig('ollama_url = "http://gpu:11434"\nembedding_model = "e"')
        assert out == {"schema_version": 2, "embeddings": {"backend": "ollama", "model": "e"}}

    def test_end_to_end_file_mode_owner_inode_and_key_order(self, ai):
        p = write_cfg(ai.home, LEGACY_FULL, mode=0o600)
        os.chown(p, 4321, 4321)  # the service user's file, migrated by root
        inode = os.stat(p).st_ino
        r = ai(["config", "migrate"], umask=0o022)
        assert r.rc == 0, r
        text = p.read_text()
        assert tomllib.loads(text) == cmd_config.build_migrated_table(tomllib.loads(LEGACY_FULL))
        assert "#" not in text  # comments are lost
        st = os.stat(p)
        assert st.st_mode & 0o777 == 0o600 and st.st_ino == inode  # truncated in place
        assert (st.st_uid, st.st_gid) == (4321, 4321)  # owner kept
        lines = text.splitlines()
        keys_ = [ln.split(" = ")[0] for ln in lines if " = " in ln]
        root = keys_[:keys_.index("unknown_key") + 1]
        assert root == ["api_key", "db", "schema_version", "tier", "unknown_key"]
        headers = [ln for ln in lines if ln.startswith("[")]
        assert headers == ["[custom.table]", "[embeddings]", "[llm]", "[llm.auto_tag]",
                           "[reranker]", "[storage]", "[ttl]"]
        (bak,) = backups(ai.home)
        assert (p.parent / bak).read_text() == LEGACY_FULL
        # backup: new file with the default mode (0666 & ~umask) -> wider than the 0600 original
        bst = os.stat(p.parent / bak)
        assert bst.st_mode & 0o777 == 0o644
        assert bst.st_uid == os.getuid()  # a new file owned by whoever ran the command


class TestBackup(object):
    def test_name_is_utc_timestamp(self, ai):
        write_cfg(ai.home, 'llm_model = "m"\n')
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        r = ai(["config", "migrate"], env={"TZ": "America/New_York"})
        after = datetime.datetime.now(datetime.timezone.utc)
        assert r.rc == 0, r
        (bak,) = backups(ai.home)
        assert bak.startswith("config.toml.bak.")
        ts = datetime.datetime.strptime(bak[len("config.toml.bak."):], "%Y%m%d-%H%M%S")
        ts = ts.replace(tzinfo=datetime.timezone.utc)
        assert before <= ts <= after

    def test_backup_mode_follows_umask(self, ai):
        write_cfg(ai.home, 'llm_model = "m"\n', mode=0o600)
        r = ai(["config", "migrate"], umask=0o027)
        assert r.rc == 0, r
        (bak,) = backups(ai.home)
        assert os.stat(cfg_path(ai.home).parent / bak).st_mode & 0o777 == 0o640

    def test_same_second_backup_is_overwritten_silently(self, ai):
        original = 'llm_model = "m"\n'
        p = write_cfg(ai.home, original)
        now = datetime.datetime.now(datetime.timezone.utc)
        stale = {}
        for delta in range(-1, 8):  # pre-existing backups for every second the run may use
            name = "config.toml.bak." + (now + datetime.timedelta(seconds=delta)).strftime(
                "%Y%m%d-%H%M%S")
            (p.parent / name).write_text("STALE %d\n" % delta)
            os.chmod(p.parent / name, 0o600)
            stale[name] = "STALE %d\n" % delta
        r = ai(["config", "migrate"])
        assert r.rc == 0, r
        overwritten = [n for n in stale if (p.parent / n).read_text() != stale[n]]
        assert len(overwritten) == 1
        (name,) = overwritten
        assert (p.parent / name).read_text() == original
        assert "backup: %s)" % (p.parent / name) in r.own_err
        assert "ERROR" not in r.own_err and "WARN" not in r.own_err
        assert os.stat(p.parent / name).st_mode & 0o777 == 0o600  # truncated, mode kept


class TestClaudeJson(object):
    def _setup(self, ai, data):
        write_cfg(ai.home, 'llm_model = "m"\n')
        claude = ai.home / ".claude.json"
        text = json.dumps(data)
        claude.write_text(text)
        return claude, text

    def test_matching_entries_lose_whole_env(self, ai):
        data = {
            "zeta": 1, "alpha": {"b": 2, "a": [1, {"y": 1, "x": 0.5}]},
            "mcpServers": {
                "abs": {"command": "/usr/local/bin/ai-memory", "args": ["mcp"],
                        "env": {"AI_MEMORY_DB": "/x.db", "AI_MEMORY_AGENT_ID": "a"}},
                "bare": {"command": "ai-memory", "env": {"X": "1"}},
                "cargo": {"command": "~/.cargo/bin/ai-memory", "env": {}},
                "npx": {"command": "npx", "env": {"K": "v"}},
                "exe": {"command": "ai-memory.exe", "env": {"K": "v"}},
                "winexe": {"command": "C:\\bin\\ai-memory.exe", "env": {"K": "v"}},
                "mcp": {"command": "/x/ai-memory-mcp", "env": {"K": "v"}},
                "listcmd": {"command": ["ai-memory"], "env": {"K": "v"}},
                "noenv": {"command": "ai-memory"},
            },
            "projects": {"/p": {"mcpServers": {"s": {"command": "ai-memory",
                                                     "env": {"K": "v"}}}}},
        }
        claude, text = self._setup(ai, data)
        r = ai(["config", "migrate", "--also-clean-claude-json"])
        assert r.rc == 0, r
        (bak,) = backups(ai.home)
        ts = bak[len("config.toml.bak."):]
        cbak = ai.home / (".claude.json.bak." + ts)
        assert cbak.read_text() == text  # original bytes
        lines = r.own_err.splitlines()
        assert lines[-1] == "OK: cleaned ~/.claude.json (backup: %s)" % cbak
        new = claude.read_text()
        result = json.loads(new)
        servers = result["mcpServers"]
        for name in ("abs", "bare", "cargo"):
            assert "env" not in servers[name], name
        for name in ("npx", "exe", "winexe", "mcp", "listcmd"):
            assert servers[name]["env"] == data["mcpServers"][name]["env"], name
        assert servers["abs"]["args"] == ["mcp"]
        assert result["projects"] == data["projects"]  # project-level servers untouched
        expected = dict(data)
        expected["mcpServers"] = servers
        assert result == expected
        assert not new.endswith("\n")
        assert new == json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False)
        assert new.startswith('{\n  "alpha": {\n    "a": [\n      1,\n      {\n        "x": 0.5,')

    def test_nothing_to_remove_leaves_file_untouched(self, ai):
        claude, text = self._setup(ai, {"mcpServers": {"n": {"command": "npx",
                                                             "env": {"A": "1"}}}})
        r = ai(["config", "migrate", "--also-clean-claude-json"])
        assert r.rc == 0, r
        assert r.own_err.splitlines()[-1] == ("INFO: ~/.claude.json had no mcpServers env block "
                                              "referencing ai-memory; no changes.")
        assert claude.read_text() == text
        assert [n for n in os.listdir(ai.home) if n.startswith(".claude.json.bak")] == []

    def test_missing_file_is_info(self, ai):
        write_cfg(ai.home, 'llm_model = "m"\n')
        r = ai(["config", "migrate", "--also-clean-claude-json"])
        assert r.rc == 0, r
        assert r.own_err.splitlines()[-1].startswith("INFO: ~/.claude.json had no mcpServers")
        assert not (ai.home / ".claude.json").exists()

    def test_invalid_json_is_warn_exit_0(self, ai):
        write_cfg(ai.home, 'llm_model = "m"\n')
        (ai.home / ".claude.json").write_text("{not json")
        r = ai(["config", "migrate", "--also-clean-claude-json"])
        assert r.rc == 0, r
        last = r.own_err.splitlines()[-1]
        assert last.startswith("WARN: ~/.claude.json clean failed: ")
        assert "line 1 column 2" in last
        assert "OK: migrated" in r.own_err
        assert (ai.home / ".claude.json").read_text() == "{not json"

    def test_json_pretty_matches_serde_shapes(self):
        assert cmd_config.json_pretty({}) == "{}"
        assert cmd_config.json_pretty({"b": [], "a": 1e-6, "c": 1e16, "d": 1.0}) == \
            '{\n  "a": 1e-6,\n  "b": [],\n  "c": 1e16,\n  "d": 1.0\n}'
        assert cmd_config.json_pretty({"s": "é\"\\\n\x01"}) == '{\n  "s": "é\\"\\\\\\n\\u0001"\n}'


# ============================================================================= tomlwrite
class TestTomlWrite(object):
    DOCS = [
        {},
        {"schema_version": 2},
        tomllib.loads(LEGACY_FULL),
        {"a": {"b": {"c": {}}}, "e": {}, "s": "x"},
        {"aot": [{"x": 1}, {"y": [{"z": [1, 2]}]}], "mixed": [1, {"k": "v"}], "empty": []},
        {"strings": ["C:\\path", "it's \\ x", "a\nb", "'''", "tab\there", "\x01\x7f", "ends'",
                     "multi\nline\\with'quote", "\"quoted\"", "ünïcode"],
         "key with space": 1, "ключ": 2, "": 3},
        {"floats": [1.5, 2.0, 1e300, 1e-7, float("inf"), float("-inf"), -0.0, 0.1],
         "ints": [0, -1, 2 ** 63 - 1, -(2 ** 63)], "bools": [True, False]},
        tomllib.loads("d = 1979-05-27\nt = 07:32:00.5\nldt = 1979-05-27T07:32:00\n"
                      "odt = 1979-05-27T00:32:00.999999-07:00\nz = 1979-05-27T07:32:00Z\n"),
    ]

    @pytest.mark.parametrize("doc", DOCS)
    def test_round_trip(self, doc):
        text = to_string_pretty(doc)
        back = tomllib.loads(text)
        assert json.dumps(back, sort_keys=True, default=str) == \
            json.dumps(doc, sort_keys=True, default=str)

    def test_layout(self):
        text = to_string_pretty({"z": 1, "a": "x", "t": {"sub": {"k": 1}}, "e": {},
                                 "arr": [1, 2], "one": [3]})
        assert text == ('a = "x"\narr = [\n    1,\n    2,\n]\none = [3]\nz = 1\n\n[e]\n\n'
                        '[t.sub]\nk = 1\n')

    def test_first_header_has_no_blank_line(self):
        assert to_string_pretty({"llm": {"model": "m"}}) == '[llm]\nmodel = "m"\n'

    def test_literal_string_for_backslashes(self):
        assert to_string_pretty({"p": "C:\\x"}) == "p = 'C:\\x'\n"


# ============================================================================= governance
GOV_CFG = """\
tier = "smart"

[governance]
other = 1

[[governance.policy]]
scope = "team/*"
action = "write"
role = "admin"
agent_id = "ignored-when-role"
decision = "deny"
note = "dropped"

[[governance.policy]]
agent_id = "bot\\"1\\""
decision = "pending"

[[governance.policy]]
scope = "tab\\there\\\\x"
"""

GOV_RENDERED = (
    "# v0.7.0 K11: translated from legacy [[governance.policy]] entries.\n"
    "# Mapping: scope→namespace_pattern, action→op,\n"
    "#          role|agent_id→agent_pattern, decision→decision.\n"
    "\n[[permissions.rules]]\nnamespace_pattern = \"team/*\"\nop = \"write\"\n"
    "agent_pattern = \"admin\"\ndecision = \"deny\"\n"
    "\n[[permissions.rules]]\nnamespace_pattern = \"*\"\nop = \"*\"\n"
    "agent_pattern = \"bot\\\"1\\\"\"\ndecision = \"pending\"\n"
    "\n[[permissions.rules]]\nnamespace_pattern = \"tab\\there\\\\x\"\nop = \"*\"\n"
    "agent_pattern = \"*\"\ndecision = \"ask\"\n")
NOOP = "# v0.7.0 K11: no [governance] policies found — nothing to migrate.\n"
SEP = "\n# --- migrated from [governance] (v0.7.0 K11) ---\n"


class TestGovernance(object):
    def test_default_is_dry_run_to_stdout(self, ai):
        p = write_cfg(ai.home, GOV_CFG)
        r = ai(["governance", "migrate-to-permissions"])
        assert r.rc == 0, r
        assert r.out == GOV_RENDERED
        assert p.read_text() == GOV_CFG
        assert tomllib.loads(r.out)["permissions"]["rules"][1]["agent_pattern"] == 'bot"1"'

    def test_no_policies_dry_run(self, ai):
        write_cfg(ai.home, "tier = \"x\"\n")
        r = ai(["governance", "migrate-to-permissions", "--dry-run"])
        assert r.rc == 0 and r.out == NOOP and r.own_err == ""

    def test_dry_run_wins_over_config_out(self, ai, tmp_path):
        write_cfg(ai.home, GOV_CFG)
        out = tmp_path / "out.toml"
        r = ai(["governance", "migrate-to-permissions", "--dry-run", "--config-out", str(out)])
        assert r.rc == 0 and r.out == GOV_RENDERED and not out.exists()

    def test_same_file_appends_every_run(self, ai):
        p = write_cfg(ai.home, GOV_CFG.rstrip("\n"))  # no trailing newline: one is added
        # same file spelled differently (relative to cwd) -> canonicalised equal
        rel = os.path.relpath(p, ai.home)
        r1 = ai(["governance", "migrate-to-permissions", "--config-in", str(p),
                 "--config-out", rel])
        assert r1.rc == 0, r1
        assert r1.out == "merged 3 migrated rule(s) into %s\n" % rel
        once = GOV_CFG + SEP + GOV_RENDERED
        assert p.read_text() == once
        r2 = ai(["governance", "migrate-to-permissions", "--config-out", str(p)])
        assert r2.rc == 0, r2
        assert p.read_text() == once + SEP + GOV_RENDERED  # NOT idempotent
        assert p.read_text().count(SEP) == 2

    def test_pending_decision_breaks_later_config_load(self, ai):
        p = write_cfg(ai.home, GOV_CFG)
        r = ai(["governance", "migrate-to-permissions", "--config-out", str(p)])
        assert r.rc == 0, r
        assert tomllib.loads(p.read_text())["permissions"]["rules"][1]["decision"] == "pending"
        later = ai(["governance", "migrate-to-permissions"])
        assert "ai-memory: config parse error (%s)" % p in later.err

    def test_noop_comment_is_appended_too_with_warning(self, ai):
        p = write_cfg(ai.home, "tier = \"x\"\n")
        for n in (1, 2):
            r = ai(["governance", "migrate-to-permissions", "--config-out", str(p)])
            assert r.rc == 0, r
            assert r.out == "merged 0 migrated rule(s) into %s\n" % p
            assert r.own_err == ("warning: no [governance] policies found in %s — nothing "
                                 "migrated\n" % p)
            assert p.read_text() == "tier = \"x\"\n" + (SEP + NOOP) * n

    def test_different_file_is_overwritten(self, ai, tmp_path):
        write_cfg(ai.home, GOV_CFG)
        out = tmp_path / "rules.toml"
        out.write_text("old content\n")
        for _ in range(2):
            r = ai(["governance", "migrate-to-permissions", "--config-out", str(out)])
            assert r.rc == 0, r
            assert r.out == "wrote 3 migrated rule(s) to %s\n" % out
            assert out.read_text() == GOV_RENDERED

    def test_apply_is_clap_exit_2(self, ai):
        write_cfg(ai.home, GOV_CFG)
        r = ai(["governance", "migrate-to-permissions", "--apply"])
        assert r.rc == 2
        assert "error: unexpected argument '--apply' found" in r.err
        assert r.out == ""

    def test_errors_exit_1(self, ai, tmp_path):
        r = ai(["governance", "migrate-to-permissions", "--config-in",
                str(tmp_path / "missing.toml")])
        assert r.rc == 1
        assert r.own_err == ("Error: read config from %s\n\nCaused by:\n    No such file or "
                             "directory (os error 2)\n" % (tmp_path / "missing.toml"))
        bad = tmp_path / "bad.toml"
        bad.write_text("[governance\n")
        r = ai(["governance", "migrate-to-permissions", "--config-in", str(bad)])
        assert r.rc == 1 and r.own_err.startswith("Error: parse config.toml\n\nCaused by:\n")
        typed = tmp_path / "typed.toml"
        typed.write_text("[[governance.policy]]\nscope = 1\n")
        r = ai(["governance", "migrate-to-permissions", "--config-in", str(typed)])
        assert r.rc == 1 and r.own_err.startswith("Error: parse [governance] block\n")

    def test_unwritable_output_exit_1(self, ai, tmp_path):
        write_cfg(ai.home, GOV_CFG)
        target = tmp_path / "nodir" / "x.toml"
        r = ai(["governance", "migrate-to-permissions", "--config-out", str(target)])
        assert r.rc == 1
        assert r.own_err.startswith("Error: write rendered block to %s\n" % target)

    def test_pure_translation(self):
        rules = [cmd_governance.translate_policy(p) for p in
                 cmd_governance.parse_legacy_policies(tomllib.loads(GOV_CFG))]
        assert cmd_governance.render_permissions_block(rules) == GOV_RENDERED
        assert cmd_governance.same_path("/a//b/./c/", "/a/b/c")
        assert not cmd_governance.same_path("./a", "a")


# ============================================================================= identity
def b64decode_nopad(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class TestIdentity(object):
    def test_generate_files_modes_and_text(self, ai):
        r = ai(["identity", "generate", "--agent-id", "alice"], umask=0)
        assert r.rc == 0, r
        kd = ai.home / ".config" / "ai-memory" / "keys"
        pub, priv = kd / "alice.pub", kd / "alice.priv"
        assert len(pub.read_bytes()) == 32 and len(priv.read_bytes()) == 32
        assert os.stat(pub).st_mode & 0o777 == 0o644
        assert os.stat(priv).st_mode & 0o777 == 0o600
        lines = r.out.splitlines()
        assert lines[0] == "generated keypair for alice"
        assert lines[1] == "  key_dir = %s" % kd
        b64 = lines[2][len("  pub_b64 = "):]
        assert lines[2].startswith("  pub_b64 = ") and len(b64) == 43
        assert "=" not in b64 and "+" not in b64 and "/" not in b64
        assert b64decode_nopad(b64) == pub.read_bytes()
        assert keys.derive_public(priv.read_bytes()) == pub.read_bytes()

    def test_modes_subject_to_umask(self, ai, tmp_path):
        r = ai(["identity", "--key-dir", str(tmp_path / "kd"), "generate", "--agent-id", "a"],
               umask=0o077)
        assert r.rc == 0, r
        assert os.stat(tmp_path / "kd" / "a.pub").st_mode & 0o777 == 0o600

    def test_json_compact_sorted(self, ai, tmp_path):
        kd = tmp_path / "kd"
        r = ai(["--json", "identity", "generate", "--agent-id", "daemon", "--key-dir", str(kd)])
        assert r.rc == 0, r
        line = r.out.rstrip("\n")
        obj = json.loads(line)
        assert list(obj) == ["agent_id", "generated", "key_dir", "public_key_b64"]
        assert obj["agent_id"] == "daemon" and obj["generated"] is True
        assert obj["key_dir"] == str(kd)
        assert line == json.dumps(obj, separators=(",", ":"))
        assert b64decode_nopad(obj["public_key_b64"]) == (kd / "daemon.pub").read_bytes()

    def test_refusal_without_force_and_rotation_with_force(self, ai, tmp_path):
        kd = tmp_path / "kd"
        args = ["identity", "--key-dir", str(kd), "generate", "--agent-id", "bob"]
        assert ai(args).rc == 0
        before = (kd / "bob.pub").read_bytes(), (kd / "bob.priv").read_bytes()
        for extra in ([], ["--no-overwrite"]):
            r = ai(args + extra)
            assert r.rc == 1, r
            assert r.own_err == (
                "Error: keypair for bob already exists at %s (pass --force to rotate; refused "
                "by default to prevent accidental key overwrite)\n" % (kd / "bob.pub"))
            assert ((kd / "bob.pub").read_bytes(), (kd / "bob.priv").read_bytes()) == before
        r = ai(args + ["--force"])
        assert r.rc == 0, r
        assert (kd / "bob.pub").read_bytes() != before[0]
        assert os.stat(kd / "bob.priv").st_mode & 0o777 == 0o600

    def test_key_dir_precedence(self, ai, tmp_path):
        flag, envd, xdg = tmp_path / "flag", tmp_path / "env", tmp_path / "xdg"
        r = ai(["identity", "generate", "--agent-id", "a", "--key-dir", str(flag)],
               env={"AI_MEMORY_KEY_DIR": str(envd), "XDG_CONFIG_HOME": str(xdg)})
        assert r.rc == 0 and (flag / "a.pub").exists()
        r = ai(["identity", "generate", "--agent-id", "b"],
               env={"AI_MEMORY_KEY_DIR": str(envd), "XDG_CONFIG_HOME": str(xdg)})
        assert r.rc == 0 and (envd / "b.pub").exists()
        r = ai(["identity", "generate", "--agent-id", "c"],
               env={"AI_MEMORY_KEY_DIR": "", "XDG_CONFIG_HOME": str(xdg)})
        assert r.rc == 0 and (xdg / "ai-memory" / "keys" / "c.pub").exists()
        r = ai(["identity", "generate", "--agent-id", "d"])
        assert r.rc == 0 and (ai.home / ".config" / "ai-memory" / "keys" / "d.pub").exists()
        assert keys.default_key_dir({"HOME": "/h"}) == "/h/.config/ai-memory/keys"
        assert keys.default_key_dir({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == \
            "/h/.config/ai-memory/keys"

    @pytest.mark.parametrize("agent_id,message", [
        ("../evil", "agent_id may not contain '..' (path-traversal guard)"),
        ("/abs", "agent_id may not start with '/' (path-traversal guard)"),
        ("has space", "agent_id contains invalid character ' ' (allowed: alphanumeric, _-:@./)"),
        ("x" * 129, "agent_id exceeds max length of 128 bytes"),
    ])
    def test_agent_id_validation(self, ai, tmp_path, agent_id, message):
        r = ai(["identity", "--key-dir", str(tmp_path / "kd"), "generate", "--agent-id",
                agent_id])
        assert r.rc == 1
        assert r.own_err == "Error: %s\n" % message
        assert not (tmp_path / "kd").exists() or os.listdir(tmp_path / "kd") == []

    @pytest.mark.parametrize("agent_id", ["x" * 128, "host:web-1:pid-1@a.b_c", "daemon"])
    def test_valid_agent_ids(self, ai, tmp_path, agent_id):
        r = ai(["identity", "--key-dir", str(tmp_path / "kd"), "generate", "--agent-id",
                agent_id])
        assert r.rc == 0, r

    def test_slash_id_fails_to_write(self, ai, tmp_path):
        r = ai(["identity", "--key-dir", str(tmp_path / "kd"), "generate", "--agent-id", "a/b"])
        assert r.rc == 1 and "No such file or directory (os error 2)" in r.own_err

    def test_list_export_and_insecure_priv(self, ai, tmp_path):
        kd = tmp_path / "kd"
        base = ["identity", "--key-dir", str(kd)]
        r = ai(base + ["list"])
        assert r.rc == 0 and r.out == "no keypairs in %s\n" % kd
        for name in ("zed", "amy"):
            assert ai(base + ["generate", "--agent-id", name]).rc == 0
        (kd / "junk.pub").write_bytes(b"short")
        b64 = {n: keys.public_b64((kd / (n + ".pub")).read_bytes()) for n in ("amy", "zed")}
        r = ai(["--json"] + base + ["list"])
        assert json.loads(r.out) == {"count": 2, "key_dir": str(kd), "keys": [
            {"agent_id": "amy", "public_key_b64": b64["amy"]},
            {"agent_id": "zed", "public_key_b64": b64["zed"]}]}
        r = ai(base + ["list"])
        assert r.out == "amy  %s\nzed  %s\n2 keypair(s) in %s\n" % (b64["amy"], b64["zed"], kd)
        r = ai(base + ["export-pub", "--agent-id", "amy"])
        assert r.rc == 0 and r.out == b64["amy"] + "\n"
        os.chmod(kd / "amy.priv", 0o640)
        r = ai(base + ["export-pub", "--agent-id", "amy"])
        assert r.rc == 1 and r.out == ""
        priv = kd / "amy.priv"
        assert r.own_err == ("Error: private key %s has insecure mode 640; refusing to load. "
                             "Restore with: chmod 0600 %s\n" % (priv, priv))
        r = ai(base + ["export-pub"])
        assert r.rc == 2 and "--agent-id" in r.err

    def test_import(self, ai, tmp_path):
        priv = os.urandom(32)
        (tmp_path / "k.priv").write_bytes(priv)
        (tmp_path / "k.pub").write_bytes(keys.derive_public(priv))
        (tmp_path / "other.pub").write_bytes(os.urandom(32))
        kd = tmp_path / "kd"
        base = ["identity", "--key-dir", str(kd), "import", "--agent-id", "peer"]
        r = ai(base + ["--pub", str(tmp_path / "k.pub"), "--priv", str(tmp_path / "k.priv")])
        assert r.rc == 0, r
        assert r.out.splitlines()[0] == "imported keypair for peer (private=yes)"
        assert (kd / "peer.priv").read_bytes() == priv
        r = ai(base + ["--pub", str(tmp_path / "other.pub"), "--priv",
                       str(tmp_path / "k.priv")])
        assert r.rc == 1 and "does not match --pub" in r.own_err
        r = ai(["--json"] + base + ["--pub", str(tmp_path / "other.pub")])
        assert r.rc == 0 and json.loads(r.out)["private_imported"] is False

    def test_ensure_keypair(self, tmp_path):
        kd = str(tmp_path / "keys")
        pub, priv, created = keys.ensure_keypair(kd, "daemon")
        assert created and pub == os.path.join(kd, "daemon.pub")
        content = open(pub, "rb").read()
        assert keys.ensure_keypair(kd, "daemon") == (pub, priv, False)
        assert open(pub, "rb").read() == content


# ============================================================================= verify chain
class TestVerifyChain(object):
    def _db(self, tmp_path, n, build="0.7.0", signer=None):
        path = str(tmp_path / "chain.db")
        conn = standin_db.open_db(path, standin_builds.BUILDS[build])
        for i in range(n):
            signed_events.append_event(conn, "alice", "memory_link.created",
                                       b"payload-%d" % i, public_key=signer)
        return path, conn

    def test_empty_db_json(self, ai, tmp_path):
        r = ai(["--db", str(tmp_path / "new.db"), "verify-signed-events-chain", "--format",
                "json"])
        assert r.rc == 0, r
        assert r.out == ('{\n  "rows_checked": 0,\n  "chain_break": null,\n'
                         '  "signature_failures": [],\n  "chain_holds": true\n}\n')

    def test_intact_and_tampered(self, ai, tmp_path):
        path, conn = self._db(tmp_path, 5)
        r = ai(["verify-signed-events-chain", "--db", path])
        assert r.rc == 0, r
        assert r.out == "verify-signed-events-chain OK: 5 row(s) walked, chain holds\n"
        r = ai(["verify-signed-events-chain", "--db", path, "--since", "2", "--format", "json"])
        assert r.rc == 0 and json.loads(r.out)["rows_checked"] == 3
        signed_events.tamper(conn, 3)
        conn.close()
        r = ai(["verify-signed-events-chain", "--db", path])
        assert r.rc == 1, r
        assert r.out == ("verify-signed-events-chain FAIL: chain break at sequence=4 "
                         "(4 row(s) walked)\n")
        r = ai(["--db", path, "verify-signed-events-chain", "--format", "json"])
        assert r.rc == 1
        assert list(json.loads(r.out).items()) == [("rows_checked", 4), ("chain_break", 4),
                                                   ("signature_failures", []),
                                                   ("chain_holds", False)]
        r = ai(["--db", path, "verify-signed-events-chain", "--format", "yaml"])
        assert r.rc == 1 and r.out.startswith("verify-signed-events-chain FAIL")
        r = ai(["--db", path, "verify-signed-events-chain", "--since", "4"])
        assert r.rc == 0 and "1 row(s) walked" in r.out

    def test_sequence_gap_is_a_break(self, tmp_path):
        _path, conn = self._db(tmp_path, 2)
        conn.execute("UPDATE signed_events SET sequence = 7 WHERE sequence = 2")
        assert signed_events.verify(conn)["chain_break"] == 7

    def test_signature_failures_do_not_break_chain(self, ai, tmp_path):
        kd = tmp_path / "keys"
        pub, _priv, _ = keys.ensure_keypair(str(kd), "daemon")
        path, conn = self._db(tmp_path, 3, signer=open(pub, "rb").read())
        conn.execute("UPDATE signed_events SET signature = X'00' WHERE sequence = 2")
        conn.close()
        r = ai(["--db", path, "verify-signed-events-chain", "--format", "json"],
               env={"AI_MEMORY_KEY_DIR": str(kd)})
        assert r.rc == 0, r
        assert json.loads(r.out) == {"rows_checked": 3, "chain_break": None,
                                     "signature_failures": [2], "chain_holds": True}

    def test_open_error_and_migration_of_v20(self, ai, tmp_path):
        bad = tmp_path / "nodir" / "x.db"
        r = ai(["--db", str(bad), "verify-signed-events-chain"])
        assert r.rc == 1 and r.own_err.startswith("Error: open db at %s: " % bad)
        v20 = str(tmp_path / "v20.db")
        standin_db.create_v20(v20).close()
        r = ai(["--db", v20, "verify-signed-events-chain"])
        assert r.rc == 0, r
        with sqlite3.connect(v20) as c:
            assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 54

    def test_bad_since_is_clap_error(self, ai, tmp_path):
        r = ai(["--db", str(tmp_path / "x.db"), "verify-signed-events-chain", "--since", "x"])
        assert r.rc == 2

    def test_absent_on_064(self, ai, tmp_path):
        r = ai(["--db", str(tmp_path / "x.db"), "verify-signed-events-chain"], build="0.6.4")
        assert r.rc == 2 and "unrecognized subcommand 'verify-signed-events-chain'" in r.err


# ============================================================================= schema-init
class TestSchemaInit(object):
    @pytest.mark.parametrize("build", ["0.6.4", "0.7.0", "0.7.0-tag"])
    def test_absent_outside_sal(self, ai, tmp_path, build):
        r = ai(["schema-init", "--store-url", "sqlite://%s" % (tmp_path / "s.db")], build=build)
        assert r.rc == 2 and "unrecognized subcommand 'schema-init'" in r.err
        assert not (tmp_path / "s.db").exists()

    def test_sqlite_human_and_json(self, ai, tmp_path):
        url = "sqlite://%s" % (tmp_path / "s.db")
        r = ai(["schema-init", "--store-url", url], build="0.7.0-sal")
        assert r.rc == 0, r
        lines = r.out.splitlines()
        assert lines[0] == "schema initialized at %s" % url
        assert [ln.split(":")[0].strip() for ln in lines[1:]] == [
            "tables", "indices", "views", "functions", "extensions", "schema_version",
            "embedding_dim"]
        assert lines[6] == "  schema_version: 54" and lines[7] == "  embedding_dim:  384"
        r = ai(["schema-init", "--store-url", url, "--json", "--embedding-dim", "768"],
               build="0.7.0-sal")
        assert r.rc == 0, r
        obj = json.loads(r.out)
        assert list(obj) == ["url", "kind", "tables", "views", "functions", "indices",
                             "extensions", "schema_version", "age_projection_created",
                             "embedding_dim", "embedding_dim_migrated"]
        assert obj["kind"] == "sqlite" and obj["schema_version"] == 54
        assert "signed_events" in obj["tables"] and obj["embedding_dim"] == 768

    def test_relative_url(self, ai, tmp_path):
        r = ai(["schema-init", "--store-url", "sqlite://./rel.db"], build="0.7.0-sal",
               cwd=tmp_path)
        assert r.rc == 0, r
        assert (tmp_path / "rel.db").exists()

    @pytest.mark.parametrize("url", ["postgres://u:p@h/d", "postgresql://h/d"])
    def test_postgres_not_compiled(self, ai, url):
        r = ai(["schema-init", "--store-url", url], build="0.7.0-sal")
        assert r.rc == 1
        assert r.own_err == ("Error: postgres support not compiled in (build with --features "
                             "sal-postgres)\n")

    @pytest.mark.parametrize("flag", ["--upgrade", "--skip-age"])
    def test_no_upgrade_or_skip_age(self, ai, tmp_path, flag):
        r = ai(["schema-init", "--store-url", "sqlite://%s" % (tmp_path / "s.db"), flag],
               build="0.7.0-sal")
        assert r.rc == 2 and "unexpected argument '%s'" % flag in r.err


# ============================================================================= env parsers
class TestEnvParsers(object):
    @pytest.mark.parametrize("value,on", [(None, True), ("0", False), ("1", True),
                                          ("false", True), ("no", True), ("off", True),
                                          (" 0", True), ("00", True), ("", True)])
    def test_fed_require(self, value, on):
        env = {} if value is None else {"AI_MEMORY_FED_REQUIRE_SIG": value,
                                        "AI_MEMORY_FED_REQUIRE_NONCE": value}
        assert envparse.fed_require_sig(env) is on
        assert envparse.fed_require_nonce(env) is on

    @pytest.mark.parametrize("value,open_", [(None, False), ("1", True), ("true", True),
                                             ("TRUE", True), ("True", True), ("yes", False),
                                             ("on", False), (" 1", False), ("true ", False),
                                             ("0", False)])
    def test_ssrf_and_gov_fail_open(self, value, open_):
        env = {} if value is None else {"AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL": value,
                                        "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR": value}
        assert envparse.ssrf_dns_fail_open(env) is open_
        assert envparse.governance_fail_open_on_error(env) is open_

    @pytest.mark.parametrize("value,pp,api", [("1", True, True), ("TRUE", True, True),
                                              ("yes", False, True), (" On ", False, True),
                                              (" true", False, True), ("no", False, False),
                                              (None, False, False)])
    def test_lax_perms_two_parsers(self, value, pp, api):
        env = {} if value is None else {"AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS": value}
        assert envparse.lax_perms_passphrase(env) is pp
        assert envparse.lax_perms_api_key_file(env) is api

    def test_permissions_mode(self):
        err = []
        assert envparse.effective_permissions_mode({}, {}) == ("enforce", "default")
        assert envparse.effective_permissions_mode(
            {"AI_MEMORY_PERMISSIONS_MODE": "ADVISORY"}, {}) == ("advisory", "env")
        assert envparse.effective_permissions_mode(
            {"AI_MEMORY_PERMISSIONS_MODE": "advisory "}, {"permissions": {"mode": "off"}},
            err.append) == ("off", "config")
        assert err == ['ai-memory: AI_MEMORY_PERMISSIONS_MODE="advisory " is not a valid mode '
                       '(expected enforce / advisory / off); falling back to config.toml']

    def test_security_env_by_build(self):
        env = {"AI_MEMORY_FED_REQUIRE_SIG": "false", "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL": "1"}
        v07 = envparse.security_env(env, standin_builds.BUILDS["0.7.0"])
        assert v07["fed_require_sig"] is True and v07["ssrf_dns_fail_open"] is True
        tag = envparse.security_env(env, standin_builds.BUILDS["0.7.0-tag"])
        assert tag["fed_require_sig"] is False and tag["ssrf_dns_fail_open"] is False
