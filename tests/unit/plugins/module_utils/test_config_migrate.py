"""Unit tests of plugins/module_utils/config_migrate.py (facts §1.5, §1.6, §1.9, §1.10)."""
import datetime
import itertools
import json
import os
import stat
from collections import OrderedDict

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import config_migrate as cm
from ansible_collections.aimem.fleet.plugins.module_utils import fileops

tomlkit = pytest.importorskip("tomlkit")

NOW = datetime.datetime(2026, 6, 1, 22, 40, 38, tzinfo=datetime.timezone.utc)


def migrate(text):
    plan = cm.plan_migration(text)
    return plan, tomlkit.parse(plan.text).unwrap()


# ------------------------------------------------------------------------------------------------
# Upstream's mapping (facts §1.6): every case where upstream loses nothing.
# ------------------------------------------------------------------------------------------------

UPSTREAM_TEST_INPUT = """\
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
"""

MAPPING_CASES = [
    ("full", UPSTREAM_TEST_INPUT, {
        "db": "/tmp/x.db", "tier": "semantic", "schema_version": 2,
        "llm": {"backend": "ollama", "model": "gemma2:2b", "base_url": "http://127.0.0.1:11434",
                "auto_tag": {"model": "qwen2:0.5b"}},
        "embeddings": {"backend": "ollama", "url": "http://127.0.0.1:11435", "model": "nomic-embed-text"},
        "reranker": {"enabled": True, "model": "ms-marco-MiniLM-L-6-v2"},
        "storage": {"default_namespace": "team", "archive_on_gc": True, "archive_max_days": 30,
                    "max_memory_mb": 512},
    }),
    ("llm_model only", 'llm_model = "m"\n', {
        "schema_version": 2, "llm": {"backend": "ollama", "model": "m"}}),
    ("llm_model + auto_tag", 'llm_model = "m"\nauto_tag_model = "a"\n', {
        "schema_version": 2, "llm": {"backend": "ollama", "model": "m", "auto_tag": {"model": "a"}}}),
    ("embedding_model only", 'embedding_model = "e"\n', {
        "schema_version": 2, "embeddings": {"backend": "ollama", "model": "e"}}),
    ("embed_url only", 'embed_url = "http://e:1"\n', {
        "schema_version": 2, "embeddings": {"backend": "ollama", "url": "http://e:1"}}),
    ("cross_encoder false", "cross_encoder = false\n", {
        "schema_version": 2, "reranker": {"enabled": False, "model": "ms-marco-MiniLM-L-6-v2"}}),
    ("one storage key", "archive_max_days = 7\n", {
        "schema_version": 2, "storage": {"archive_max_days": 7}}),
    ("schema_version 1 is overwritten", 'schema_version = 1\nmax_memory_mb = 1_000\n', {
        "schema_version": 2, "storage": {"max_memory_mb": 1000}}),
    ("v2 with legacy keys still present", 'schema_version = 2\ndefault_namespace = "n"\n', {
        "schema_version": 2, "storage": {"default_namespace": "n"}}),
    ("schema_version 3 with legacy is set to 2", 'schema_version = 3\ncross_encoder = true\n', {
        "schema_version": 2, "reranker": {"enabled": True, "model": "ms-marco-MiniLM-L-6-v2"}}),
    ("string schema_version does not count", 'schema_version = "2"\n', {"schema_version": 2}),
    ("float schema_version does not count", "schema_version = 2.0\n", {"schema_version": 2}),
    ("all-comment template", "# ai-memory config\n# db = \"x\"\n", {"schema_version": 2}),
    ("empty file", "", {"schema_version": 2}),
    ("non-legacy keys and tables kept", """\
api_key = "http-key"
db = "~/x.db"
unknown_top = [1, 2]
llm_model = "m"

[ttl]
short = 60

[permissions]
mode = "advisory"

[[permissions.rules]]
namespace_pattern = "*"
op = "*"
agent_pattern = "*"
decision = "ask"

[governance]
x = 1

[mcp]
y = "z"

[whatever.nested]
k = true
""", {
        "api_key": "http-key", "db": "~/x.db", "unknown_top": [1, 2], "schema_version": 2,
        "ttl": {"short": 60}, "permissions": {"mode": "advisory", "rules": [
            {"namespace_pattern": "*", "op": "*", "agent_pattern": "*", "decision": "ask"}]},
        "governance": {"x": 1}, "mcp": {"y": "z"}, "whatever": {"nested": {"k": True}},
        "llm": {"backend": "ollama", "model": "m"},
    }),
]


@pytest.mark.parametrize("name,src,expected", MAPPING_CASES, ids=[c[0] for c in MAPPING_CASES])
def test_upstream_mapping(name, src, expected):
    plan, out = migrate(src)
    assert plan.changed
    assert out == expected
    assert isinstance(out["schema_version"], int) and not isinstance(out["schema_version"], bool)
    assert plan.schema_version_after == 2
    assert not set(cm.LEGACY_FIELDS) & set(out)
    assert plan.dropped_keys == {}


def test_moved_keys_report_every_location():
    plan, _ = migrate(UPSTREAM_TEST_INPUT)
    assert plan.moved_keys == {
        "llm_model": ["llm.model"], "ollama_url": ["llm.base_url"],
        "auto_tag_model": ["llm.auto_tag.model"], "embed_url": ["embeddings.url"],
        "embedding_model": ["embeddings.model"], "cross_encoder": ["reranker.enabled"],
        "default_namespace": ["storage.default_namespace"], "archive_on_gc": ["storage.archive_on_gc"],
        "archive_max_days": ["storage.archive_max_days"], "max_memory_mb": ["storage.max_memory_mb"],
    }
    assert plan.schema_version_before is None


def test_values_keep_their_toml_type_and_style():
    plan, out = migrate("llm_model = 'lit\\eral'\narchive_max_days = 0x1F\ncross_encoder = true\n")
    assert out["llm"]["model"] == "lit\\eral"
    assert out["storage"]["archive_max_days"] == 31
    assert "model = 'lit\\eral'" in plan.text  # literal string kept as written
    assert "archive_max_days = 0x1F" in plan.text


# ------------------------------------------------------------------------------------------------
# Idempotency (§1.5)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("src", [
    "schema_version = 2\n",
    "schema_version = 2\n[llm]\nmodel = 'm'\n",
    "# c\nschema_version = 7  # future\n",
])
def test_already_v2_is_not_rewritten(src):
    plan = cm.plan_migration(src)
    assert plan.already_v2 and not plan.changed
    assert plan.text == src
    assert plan.moved_keys == {} and plan.dropped_keys == {}


@pytest.mark.parametrize("name,src,expected", MAPPING_CASES, ids=[c[0] for c in MAPPING_CASES])
def test_second_run_is_a_no_op(name, src, expected):
    first = cm.plan_migration(src)
    second = cm.plan_migration(first.text)
    assert second.already_v2 and not second.changed
    assert second.text == first.text


def test_bool_schema_version_is_not_an_integer():
    assert not cm.is_already_v2(cm.parse_toml("schema_version = true\n"))


# ------------------------------------------------------------------------------------------------
# Loss cases: where upstream silently loses a setting, we do not (§1.6)
# ------------------------------------------------------------------------------------------------

def test_ollama_url_without_llm_model_still_makes_llm_and_keeps_embeddings_url():
    plan, out = migrate('ollama_url = "http://gpu:11434"\n')
    assert out["llm"] == {"backend": "ollama", "base_url": "http://gpu:11434"}
    assert out["embeddings"] == {"backend": "ollama", "url": "http://gpu:11434"}
    assert plan.moved_keys == {"ollama_url": ["llm.base_url", "embeddings.url"]}
    assert plan.dropped_keys == {}


def test_auto_tag_model_without_llm_model_still_makes_llm():
    plan, out = migrate('auto_tag_model = "tiny"\n')
    assert out["llm"] == {"backend": "ollama", "auto_tag": {"model": "tiny"}}
    assert plan.moved_keys == {"auto_tag_model": ["llm.auto_tag.model"]}


def test_ollama_url_with_embedding_model_keeps_embeddings_url():
    _, out = migrate('ollama_url = "http://gpu:11434"\nembedding_model = "nomic"\n')
    assert out["embeddings"] == {"backend": "ollama", "url": "http://gpu:11434", "model": "nomic"}


def test_embed_url_wins_over_ollama_url_for_embeddings():
    plan, out = migrate('ollama_url = "http://a"\nembed_url = "http://b"\nllm_model = "m"\n')
    assert out["embeddings"]["url"] == "http://b"
    assert out["llm"]["base_url"] == "http://a"
    assert plan.moved_keys["ollama_url"] == ["llm.base_url"]


@pytest.mark.parametrize("section_src,key,val,target", [
    ("[llm]\nmodel = 'other'\n", "llm_model", '"m"', "[llm].model"),
    ("[llm]\nmodel = 'other'\n", "ollama_url", '"http://x"', "[llm].base_url"),
    ("[llm.auto_tag]\nmodel = 'other'\n", "auto_tag_model", '"t"', "[llm.auto_tag].model"),
    ("[embeddings]\nurl = 'http://other'\n", "embed_url", '"http://x"', "[embeddings].url"),
    ("[embeddings]\nmodel = 'other'\n", "embedding_model", '"e"', "[embeddings].model"),
    ("[reranker]\nenabled = false\n", "cross_encoder", "true", "[reranker].enabled"),
    ("[storage]\narchive_on_gc = false\n", "archive_on_gc", "true", "[storage].archive_on_gc"),
    ("[storage]\n", "max_memory_mb", "64", "[storage].max_memory_mb"),
])
def test_existing_section_wins_and_the_drop_is_reported(section_src, key, val, target):
    src = "%s = %s\n\n%s" % (key, val, section_src)
    plan, out = migrate(src)
    assert key not in out
    assert key in plan.dropped_keys
    assert "already exists" in plan.dropped_keys[key] and target in plan.dropped_keys[key]
    assert any(key in w and target in w for w in plan.warnings)
    # the existing section is untouched (upstream: the section wins)
    assert tomlkit.parse(section_src).unwrap().items() <= out.items()


def test_same_value_in_existing_section_is_reported_without_warning():
    plan, out = migrate("archive_on_gc = true\n\n[storage]\narchive_on_gc = true\n")
    assert "nothing is lost" in plan.dropped_keys["archive_on_gc"]
    assert plan.warnings == []
    assert out["storage"] == {"archive_on_gc": True}


def test_ollama_url_with_existing_llm_still_feeds_embeddings():
    plan, out = migrate('ollama_url = "http://gpu"\n\n[llm]\nmodel = "m"\n')
    assert out["embeddings"] == {"backend": "ollama", "url": "http://gpu"}
    assert plan.moved_keys == {"ollama_url": ["embeddings.url"]}
    assert "LLM base URL" in plan.dropped_keys["ollama_url"]


# A model of how each version resolves the settings the legacy keys feed (facts §1.6, §1.11):
# v0.6.4 reads only the flat keys (it ignores every v2 section); v0.7.0 with schema v2 reads only the
# sections (the legacy fields are IGNORED under v2).
D = "<default>"


def effective_v064(data):
    g = data.get
    return {
        "llm.backend": "ollama", "llm.model": g("llm_model", D), "llm.base_url": g("ollama_url", D),
        "llm.auto_tag.model": g("auto_tag_model", D),
        "embeddings.url": g("embed_url", g("ollama_url", D)), "embeddings.model": g("embedding_model", D),
        "reranker.enabled": g("cross_encoder", D),
        "storage.default_namespace": g("default_namespace", D), "storage.archive_on_gc": g("archive_on_gc", D),
        "storage.archive_max_days": g("archive_max_days", D), "storage.max_memory_mb": g("max_memory_mb", D),
    }


def effective_v070(data):
    def s(path):
        cur = data
        for part in path.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return D
            cur = cur[part]
        return cur
    out = {k: s(k) for k in effective_v064({}) if k != "llm.backend"}
    out["llm.backend"] = s("llm.backend") if s("llm.backend") != D else "ollama"
    return out


SOURCES = {
    "llm.model": ["llm_model"], "llm.base_url": ["ollama_url"], "llm.auto_tag.model": ["auto_tag_model"],
    "embeddings.url": ["embed_url", "ollama_url"], "embeddings.model": ["embedding_model"],
    "reranker.enabled": ["cross_encoder"], "storage.default_namespace": ["default_namespace"],
    "storage.archive_on_gc": ["archive_on_gc"], "storage.archive_max_days": ["archive_max_days"],
    "storage.max_memory_mb": ["max_memory_mb"], "llm.backend": [],
}

LEGACY_SAMPLE = OrderedDict([
    ("llm_model", '"m1"'), ("ollama_url", '"http://o:11434"'), ("embed_url", '"http://e:11434"'),
    ("embedding_model", '"emb"'), ("auto_tag_model", '"tag"'), ("cross_encoder", "true"),
    ("archive_on_gc", "true"),
])


@pytest.mark.parametrize("n", range(1, len(LEGACY_SAMPLE) + 1))
def test_every_v1_file_keeps_its_effective_settings(n):
    for combo in itertools.combinations(LEGACY_SAMPLE, n):
        src = "".join("%s = %s\n" % (k, LEGACY_SAMPLE[k]) for k in combo)
        orig = tomlkit.parse(src).unwrap()
        plan, out = migrate(src)
        assert effective_v070(out) == effective_v064(orig), src
        assert plan.dropped_keys == {} and plan.warnings == [], src


EXISTING_SECTIONS = [
    "[llm]\nmodel = 'other'\n", "[llm.auto_tag]\nmodel = 'other'\n", "[embeddings]\nurl = 'http://x'\n",
    "[reranker]\nenabled = false\n", "[storage]\narchive_on_gc = false\n",
]


@pytest.mark.parametrize("section", EXISTING_SECTIONS)
def test_every_lost_setting_is_reported(section):
    for n in (1, 2, 3, len(LEGACY_SAMPLE)):
        for combo in itertools.combinations(LEGACY_SAMPLE, n):
            src = "".join("%s = %s\n" % (k, LEGACY_SAMPLE[k]) for k in combo) + "\n" + section
            orig = tomlkit.parse(src).unwrap()
            plan, out = migrate(src)
            before, after = effective_v064(orig), effective_v070(out)
            for setting, srcs in SOURCES.items():
                fed_by = [k for k in srcs if k in orig]
                if fed_by and before[setting] != after[setting]:
                    assert set(fed_by) & set(plan.dropped_keys), (src, setting, plan.dropped_keys)
                    assert plan.warnings, src


# ------------------------------------------------------------------------------------------------
# Comments, blank lines and key order (§1.7: upstream loses them; we keep them)
# ------------------------------------------------------------------------------------------------

COMMENTED = """\
# ai-memory configuration (managed by hand)

# where the DB lives
db = "/var/lib/ai-memory/ai-memory.db"   # keep on SSD
tier = "smart"

# --- LLM ---
llm_model = "gemma2:2b"  # small and fast
ollama_url = "http://10.0.0.5:11434"

[ttl]
# seconds
zeta = 1
alpha = 2

[mcp]
name = "x"
"""


def test_comments_blank_lines_and_order_are_kept():
    plan = cm.plan_migration(COMMENTED)
    text = plan.text
    for line in ["# ai-memory configuration (managed by hand)", "# where the DB lives",
                 'db = "/var/lib/ai-memory/ai-memory.db"   # keep on SSD', "# --- LLM ---", "# seconds",
                 '[ttl]\n# seconds\nzeta = 1\nalpha = 2\n\n[mcp]\nname = "x"\n']:
        assert line in text
    assert text.startswith("# ai-memory configuration (managed by hand)\n\n# where the DB lives\n")
    # original relative order of the kept lines
    kept = ["# where the DB lives", "db =", "tier =", "# --- LLM ---", "[ttl]", "zeta", "alpha", "[mcp]"]
    positions = [text.index(k) for k in kept]
    assert positions == sorted(positions)
    # a legacy key's trailing comment travels with it
    assert 'model = "gemma2:2b"  # small and fast' in text
    # new sections are appended after the existing ones
    assert text.index("[mcp]") < text.index("[llm]") < text.index("[embeddings]")
    assert "llm_model" not in text and "ollama_url" not in text


def test_untouched_file_is_byte_identical():
    src = "# c\nschema_version = 2\n\n[llm]\nmodel = 'm'   # x\n"
    assert cm.plan_migration(src).text == src


# ------------------------------------------------------------------------------------------------
# Invalid TOML
# ------------------------------------------------------------------------------------------------

def test_invalid_toml_names_file_line_and_column():
    with pytest.raises(cm.TomlSyntaxError) as ei:
        cm.plan_migration('db = "x"\nllm_model = [\n', path="/h/.config/ai-memory/config.toml")
    e = ei.value
    assert "/h/.config/ai-memory/config.toml is not valid TOML" in str(e)
    assert e.line == 2 or e.line == 3
    assert "line %s" % e.line in e.hint


# ------------------------------------------------------------------------------------------------
# v0.7.0 load validation (§1.10, §6)
# ------------------------------------------------------------------------------------------------

def _stat_mode(mode):
    class S(object):
        st_mode = stat.S_IFREG | mode
    return lambda p: S()


@pytest.mark.parametrize("src,needle", [
    ('[llm]\napi_key = "sk-1"\n', "inline `api_key` in [llm] is forbidden"),
    ('[llm.auto_tag]\napi_key = "sk-1"\n', "inline `api_key` in [llm.auto_tag]"),
    ('[llm]\napi_key_env = "K"\napi_key_file = "/k"\n', "[llm].api_key_env and [llm].api_key_file are mutually exclusive"),
    ('[llm.auto_tag]\napi_key_env = "K"\napi_key_file = "/k"\n', "[llm.auto_tag].api_key_env and [llm.auto_tag].api_key_file"),
    ('[permissions]\nmode = "Enforce"\n', '[permissions].mode = "Enforce" is not one of enforce/advisory/off'),
    ('[permissions]\nmode = "strict"\n', "[permissions].mode"),
    ('[[permissions.rules]]\ndecision = "pending"\n', 'decision = "pending" is not one of allow/deny/ask'),
    ('[reranker]\nenabled = "yes"\n', "[reranker].enabled must be a boolean"),
    ('[storage]\narchive_max_days = "30"\n', "[storage].archive_max_days must be a integer"),
    ('[embeddings]\nbackfill_batch = 0\n', "backfill_batch must be between 1 and 10000"),
    ('llm = "x"\n', "[llm] must be a table"),
    ('schema_version = "2"\n', "schema_version must be an integer"),
])
def test_validation_problems(src, needle):
    problems = cm.validate_v2(cm.parse_toml(src), stat_fn=_stat_mode(0o400))
    assert any(needle in p for p in problems), problems


def test_cross_encoder_of_wrong_type_is_caught_after_migration():
    plan = cm.plan_migration('cross_encoder = "yes"\n')
    assert any("[reranker].enabled must be a boolean" in p for p in cm.validate_v2(plan.doc))


@pytest.mark.parametrize("mode,ok", [(0o400, True), (0o600, True), (0o640, False), (0o644, False), (0o604, False)])
def test_api_key_file_mode(mode, ok):
    doc = cm.parse_toml('[llm]\napi_key_file = "/etc/ai-memory/key"\n')
    problems = cm.validate_v2(doc, stat_fn=_stat_mode(mode))
    assert (problems == []) is ok
    if not ok:
        assert "lax permissions (mode = %04o" % mode in problems[0]
        assert "chmod 0400 /etc/ai-memory/key" in problems[0]
        assert cm.validate_v2(doc, stat_fn=_stat_mode(mode), allow_lax_key_file_perms=True) == []


def test_api_key_file_real_stat_and_tilde(tmp_path):
    key = tmp_path / "k"
    key.write_text("s")
    os.chmod(str(key), 0o644)
    doc = cm.parse_toml('[llm.auto_tag]\napi_key_file = "~/k"\n')
    problems = cm.validate_v2(doc, home=str(tmp_path))
    assert len(problems) == 1 and "[llm.auto_tag].api_key_file" in problems[0]
    os.chmod(str(key), 0o400)
    assert cm.validate_v2(doc, home=str(tmp_path)) == []


def test_missing_or_relative_key_file_is_a_warning_only(tmp_path):
    doc = cm.parse_toml('[llm]\napi_key_file = "%s"\n[llm.auto_tag]\napi_key_file = "rel/k"\n'
                        % (tmp_path / "nope"))
    problems, warnings = cm.check_v2(doc)
    assert problems == []
    assert any("nope" in w and "cannot be read" in w for w in warnings)
    assert any("relative path" in w for w in warnings)


def test_valid_v2_file_has_no_problems():
    src = ('schema_version = 2\napi_key = "http"\n[llm]\nbackend = "openai"\napi_key_env = "OPENAI_API_KEY"\n'
           '[embeddings]\nbackfill_batch = 100\n[permissions]\nmode = "off"\n'
           '[[permissions.rules]]\ndecision = "deny"\n')
    assert cm.validate_v2(cm.parse_toml(src)) == []


# ------------------------------------------------------------------------------------------------
# Inline key externalization
# ------------------------------------------------------------------------------------------------

SECRET = "sk-live-abcdef0123456789"
SECRET2 = "sk-tag-\"quoted\"-zz"


def test_externalize_moves_both_keys_and_keeps_position_and_comments():
    src = ('# top\n[llm]\nbackend = "openai"\napi_key = "%s"  # prod key\nmodel = "gpt"\n\n'
           '[llm.auto_tag]\nmodel = "mini"\napi_key = "%s"\n' % (SECRET, SECRET2.replace('"', '\\"')))
    doc = cm.parse_toml(src)
    kfs = cm.plan_externalize(doc, "/srv/keys", path="/c.toml")
    text = tomlkit.dumps(doc)
    assert [(k.section, k.path) for k in kfs] == [("llm", "/srv/keys/llm-api-key"),
                                                   ("llm.auto_tag", "/srv/keys/llm-auto-tag-api-key")]
    assert [k.content for k in kfs] == [SECRET, SECRET2]
    assert SECRET not in text and "quoted" not in text
    assert 'backend = "openai"\napi_key_file = "/srv/keys/llm-api-key"  # prod key\nmodel = "gpt"' in text
    assert cm.inline_key_sections(doc) == []
    # the secret never leaks through repr/public()
    for k in kfs:
        assert SECRET not in repr(k) and "quoted" not in repr(k)
        assert set(k.public()) == {"section", "path"}
    assert cm.validate_v2(doc, stat_fn=_stat_mode(0o400)) == []


def test_externalize_inline_table_and_dotted_keys():
    for src in ('llm = { model = "m", api_key = "%s" }\n' % SECRET,
                'llm.model = "m"\nllm.api_key = "%s"\n\n[ttl]\nx = 1\n' % SECRET):
        doc = cm.parse_toml(src)
        kfs = cm.plan_externalize(doc, "/k")
        out = tomlkit.parse(tomlkit.dumps(doc)).unwrap()
        assert out["llm"] == {"model": "m", "api_key_file": "/k/llm-api-key"}
        assert kfs[0].content == SECRET


@pytest.mark.parametrize("extra", ['api_key_env = "K"', 'api_key_file = "/x"'])
def test_externalize_refuses_conflicting_settings(extra):
    doc = cm.parse_toml('[llm]\napi_key = "%s"\n%s\n' % (SECRET, extra))
    with pytest.raises(cm.ConfigMigrateError) as ei:
        cm.plan_externalize(doc, "/k", path="/c.toml")
    assert "/c.toml" in str(ei.value) and SECRET not in str(ei.value) and ei.value.hint


def test_externalize_refuses_non_string_key():
    with pytest.raises(cm.ConfigMigrateError):
        cm.plan_externalize(cm.parse_toml("[llm]\napi_key = 42\n"), "/k")


def test_top_level_api_key_is_not_touched():
    doc = cm.parse_toml('api_key = "%s"\n' % SECRET)
    assert cm.plan_externalize(doc, "/k") == []
    assert cm.validate_v2(doc) == []


def test_secret_masking():
    src = ('api_key = "%s"\n[llm]\napi_key = "%s"\napi_key_file = "/not/secret"\n[hooks]\nhmac_secret = "%s"\n'
           % (SECRET, SECRET2.replace('"', '\\"'), "deadbeefcafe"))
    secrets = cm.secret_values(src)
    assert set(secrets) == {SECRET, SECRET2, "deadbeefcafe"}
    masked = cm.mask_text(src, secrets)
    assert SECRET not in masked and "quoted" not in masked and "deadbeef" not in masked
    assert "/not/secret" in masked and masked.count(cm.MASK) == 3


# ------------------------------------------------------------------------------------------------
# Writes: atomicity, modes, backups (through fileops, as the module does)
# ------------------------------------------------------------------------------------------------

def test_atomic_write_crash_before_rename_leaves_original(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text(UPSTREAM_TEST_INPUT)
    plan = cm.plan_migration(UPSTREAM_TEST_INPUT)

    def boom(src, dst):
        raise OSError(5, "simulated crash between write and rename")
    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(fileops.FileOpError):
        fileops.atomic_write(str(cfg), plan.text)
    monkeypatch.undo()
    assert cfg.read_text() == UPSTREAM_TEST_INPUT
    assert sorted(os.listdir(str(tmp_path))) == ["config.toml"]


def test_write_keeps_mode_and_owner(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(UPSTREAM_TEST_INPUT)
    os.chmod(str(cfg), 0o640)
    before = os.stat(str(cfg))
    fileops.atomic_write(str(cfg), cm.plan_migration(UPSTREAM_TEST_INPUT).text)
    after = os.stat(str(cfg))
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # replaced by rename, not truncated in place
    assert tomlkit.parse(cfg.read_text())["schema_version"] == 2


def test_backup_name_collisions_and_mode(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("llm_model = 'a'\n")
    os.chmod(str(cfg), 0o600)
    names = [fileops.make_backup(str(cfg), now=NOW) for _ in range(3)]
    base = str(cfg) + ".bak.20260601-224038"
    assert names == [base, base + ".1", base + ".2"]
    for n in names:
        assert stat.S_IMODE(os.stat(n).st_mode) == 0o600
        assert open(n).read() == "llm_model = 'a'\n"


# ------------------------------------------------------------------------------------------------
# ~/.claude.json (§1.9)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command,matches", [
    ("/usr/local/bin/ai-memory", True), ("~/.cargo/bin/ai-memory", True), ("ai-memory", True),
    ("/opt/wrappers/ai-memory", True),
    ("npx", False), ("node", False), ("ai-memory.exe", False), ("C:\\bin\\ai-memory.exe", False),
    ("/x/ai-memory-mcp", False), ("ai-memory ", False), ("/usr/bin/ai-memory/", False), (None, False),
    (["ai-memory"], False),
])
def test_claude_command_match(command, matches):
    assert cm.command_matches(command) is matches
    entry = OrderedDict([("command", command), ("args", ["mcp"]), ("env", {"AI_MEMORY_DB": "/x"})])
    text = json.dumps({"mcpServers": {"s": entry}}, indent=2)
    plan = cm.plan_clean_claude_json(text)
    assert plan.changed is matches
    out = json.loads(plan.text)
    assert ("env" in out["mcpServers"]["s"]) is (not matches)
    if matches:
        assert plan.cleaned == {"s": ["AI_MEMORY_DB"]}


CLAUDE = """{
  "numStartups": 3,
  "zebra": "first key stays first",
  "mcpServers": {
    "ai-memory": {
      "type": "stdio",
      "command": "/usr/local/bin/ai-memory",
      "args": ["mcp", "--tier", "semantic"],
      "env": {
        "AI_MEMORY_DB": "/home/u/.local/share/ai-memory/ai-memory.db",
        "AI_MEMORY_AGENT_ID": "claude",
        "AI_MEMORY_LLM_API_KEY": "sk-claude-env-secret-99"
      }
    },
    "other": {
      "command": "npx",
      "args": [],
      "env": {"GITHUB_TOKEN": "ghp_other_secret_77"}
    }
  },
  "projects": {
    "/home/u/p": {
      "mcpServers": {
        "ai-memory": {"command": "ai-memory", "env": {"AI_MEMORY_DB": "/p.db"}}
      }
    }
  },
  "name": "Zoë"
}"""


def test_claude_json_scope_order_and_format():
    plan = cm.plan_clean_claude_json(CLAUDE)
    assert plan.changed
    assert plan.cleaned == {"ai-memory": ["AI_MEMORY_DB", "AI_MEMORY_AGENT_ID", "AI_MEMORY_LLM_API_KEY"]}
    out = json.loads(plan.text, object_pairs_hook=OrderedDict)
    assert list(out) == ["numStartups", "zebra", "mcpServers", "projects", "name"]
    assert "env" not in out["mcpServers"]["ai-memory"]
    assert list(out["mcpServers"]["ai-memory"]) == ["type", "command", "args"]
    assert out["mcpServers"]["other"]["env"] == {"GITHUB_TOKEN": "ghp_other_secret_77"}
    # project-level entries are out of upstream's scope
    assert out["projects"]["/home/u/p"]["mcpServers"]["ai-memory"]["env"] == {"AI_MEMORY_DB": "/p.db"}
    assert not plan.text.endswith("\n")
    assert '\n  "zebra": "first key stays first",\n' in plan.text
    assert "Zoë" in plan.text  # non-ASCII kept as is
    # a second pass has nothing left to do
    assert not cm.plan_clean_claude_json(plan.text).changed


@pytest.mark.parametrize("indent", [2, 4, "\t"])
@pytest.mark.parametrize("newline", [True, False])
def test_claude_json_indent_and_trailing_newline_detected(indent, newline):
    data = OrderedDict([("b", 1), ("mcpServers", OrderedDict([("m", OrderedDict([
        ("command", "ai-memory"), ("env", {"A": "1"}), ("args", [1, 2])]))])), ("a", [])])
    text = json.dumps(data, indent=indent) + ("\n" if newline else "")
    plan = cm.plan_clean_claude_json(text)
    del data["mcpServers"]["m"]["env"]
    assert plan.text == json.dumps(data, indent=indent) + ("\n" if newline else "")


def test_claude_json_compact_file_stays_compact():
    text = '{"mcpServers":{"m":{"command":"ai-memory","env":{"A":"1"}}},"x":1}'
    plan = cm.plan_clean_claude_json(text)
    assert plan.text == '{"mcpServers":{"m":{"command":"ai-memory"}},"x":1}'


@pytest.mark.parametrize("text", ["", "{}", '{"mcpServers": {}}', '{"mcpServers": []}',
                                  '{"mcpServers": {"m": {"command": "ai-memory"}}}', "[]"])
def test_claude_json_nothing_to_clean(text):
    plan = cm.plan_clean_claude_json(text)
    assert not plan.changed and plan.text == text and plan.cleaned == {}


def test_claude_json_invalid_names_file_and_position():
    with pytest.raises(cm.ClaudeJsonError) as ei:
        cm.plan_clean_claude_json('{\n  "mcpServers": {,\n}', path="/home/u/.claude.json")
    assert "/home/u/.claude.json is not valid JSON" in str(ei.value)
    assert "line 2" in ei.value.hint


def test_claude_json_diff_masking():
    plan = cm.plan_clean_claude_json(CLAUDE)
    before = cm.masked_claude_json(CLAUDE, plan.fmt)
    after = cm.masked_claude_json(plan.text, plan.fmt)
    for s in ("sk-claude-env-secret-99", "ghp_other_secret_77", "/home/u/.local/share"):
        assert s not in before and s not in after
    assert '"AI_MEMORY_AGENT_ID": "********"' in before
    assert "AI_MEMORY_AGENT_ID" not in after


# ------------------------------------------------------------------------------------------------
# Review fixes
# ------------------------------------------------------------------------------------------------

def test_externalized_doc_is_what_gets_validated():
    # The in-memory document must show api_key_file after the rename (tomlkit's Container._replace
    # alone left the dict view stale, so check_v2 never saw the new key file).
    doc = cm.parse_toml('schema_version = 2\n[llm]\nbackend = "openai"\napi_key = "%s"  # c\n'
                        'model = "m"\n[llm.auto_tag]\napi_key = "%s"\n' % (SECRET, SECRET + "x"))
    cm.plan_externalize(doc, "/keys")
    data = cm.plain(doc)
    assert data["llm"] == {"backend": "openai", "api_key_file": "/keys/llm-api-key", "model": "m",
                           "auto_tag": {"api_key_file": "/keys/llm-auto-tag-api-key"}}
    assert ('backend = "openai"\napi_key_file = "/keys/llm-api-key"  # c\nmodel = "m"\n'
            in cm.tomlkit.dumps(doc))  # position and comment kept
    assert cm.plain(cm.parse_toml(cm.tomlkit.dumps(doc))) == data

    def lax(p):
        return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    problems = cm.validate_v2(doc, stat_fn=lax)
    assert any("/keys/llm-api-key" in p and "chmod 0400" in p for p in problems), problems
    assert any("/keys/llm-auto-tag-api-key" in p for p in problems), problems


def test_claude_json_diff_masks_camelcase_and_header_secrets():
    text = json.dumps(OrderedDict([
        ("primaryApiKey", "sk-ant-primary-111"),
        ("oauthAccount", {"accessToken": "oat-222", "emailAddress": "u@example.org"}),
        ("mcpServers", OrderedDict([
            ("ai-memory", {"command": "ai-memory", "env": {"AI_MEMORY_DB": "/x.db"}}),
            ("remote", {"type": "http", "url": "https://mcp.example.org",
                        "headers": {"Authorization": "Bearer hdr-333", "X-Api-Key": "hdr-444"}}),
        ])),
    ]), indent=2)
    plan = cm.plan_clean_claude_json(text)
    assert plan.changed
    for masked in (cm.masked_claude_json(text, plan.fmt), cm.masked_claude_json(plan.text, plan.fmt)):
        for s in ("sk-ant-primary-111", "oat-222", "hdr-333", "hdr-444"):
            assert s not in masked, (s, masked)
        assert "https://mcp.example.org" in masked and "u@example.org" in masked
