"""Unit tests of module_utils/permissions.py: upstream's translation (facts 5.1), idempotence,
validation before writing, byte-preserving edits."""
import sys

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import permissions as P

if sys.version_info >= (3, 11):
    import tomllib

    def parse(text):
        return tomllib.loads(text)
else:  # pragma: no cover
    def parse(text):
        return P.load_toml(text)


CONFIG = '''# ai-memory config (hand-written, comments must survive)
db = "/var/lib/ai-memory/ai-memory.db"   # keep this comment
notes = """
[permissions]
[[permissions.rules]]
"""
matrix = [
  [1, 2]
]

[governance]
# legacy policies
[[governance.policy]]
scope = "team/*"
action = "write"
decision = "deny"

[[governance.policy]]
agent_id = "bot"

[[governance.policy]]
role = "admin"
agent_id = "ignored-when-role-set"
decision = "allow"
extra = "dropped"

[llm]
backend = "ollama"
'''


def _rules(text):
    return [tuple(r[f] for f in P.RULE_FIELDS) for r in parse(text).get("permissions", {}).get("rules", [])]


@pytest.mark.parametrize("policy, rule", [
    ({}, ("*", "*", "*", "ask")),
    ({"scope": "a/*"}, ("a/*", "*", "*", "ask")),
    ({"action": "read"}, ("*", "read", "*", "ask")),
    ({"agent_id": "bot"}, ("*", "*", "bot", "ask")),
    ({"role": "admin", "agent_id": "bot"}, ("*", "*", "admin", "ask")),
    ({"decision": "deny", "scope": "x", "action": "delete", "role": "r", "other": 1}, ("x", "delete", "r", "deny")),
])
def test_translation_matches_upstream(policy, rule):
    assert P.rule_key(P.translate_policy(policy)) == rule


def test_plan_adds_rules_keeps_every_other_byte():
    r = P.plan(CONFIG, path="/h/config.toml")
    assert r["changed"] and r["policies"] == 3 and r["rules_before"] == 0 and r["rules_after"] == 3
    new = r["new_text"]
    assert new.startswith(CONFIG)  # appended after the last table; nothing before it changed
    assert P.MARKER in new
    assert _rules(new) == [("team/*", "write", "*", "deny"), ("*", "*", "bot", "ask"),
                           ("*", "*", "admin", "allow")]
    data = parse(new)
    assert data["notes"] == "[permissions]\n[[permissions.rules]]\n"  # headers inside strings untouched
    assert data["governance"]["policy"][2]["extra"] == "dropped"  # governance itself is kept


def test_second_plan_adds_nothing():
    first = P.plan(CONFIG, mode="advisory")
    second = P.plan(first["new_text"], mode="advisory")
    assert second["changed"] is False and second["new_text"] == first["new_text"]
    assert second["added"] == [] and len(second["skipped"]) == 3


def test_existing_rules_are_compared_on_all_four_fields_and_new_ones_follow_them():
    text = CONFIG + '''
[permissions]
mode = "advisory"  # staged

[[permissions.rules]]
namespace_pattern = "team/*"
op = "write"
agent_pattern = "*"
decision = "deny"

[[permissions.rules]]
namespace_pattern = "*"
op = "*"
agent_pattern = "bot"
decision = "deny"

# storage follows
[storage]
path = "x"
'''
    r = P.plan(text)
    # "team/*" rule already there; the bot rule differs in decision (deny vs ask) -> added
    assert [P.rule_key(x) for x in r["skipped"]] == [("team/*", "write", "*", "deny")]
    assert [P.rule_key(x) for x in r["added"]] == [("*", "*", "bot", "ask"), ("*", "*", "admin", "allow")]
    new = r["new_text"]
    assert _rules(new)[:2] == _rules(text)
    # inserted right after the last rule, before the storage comment/table, which are unchanged
    head, tail = text.split("# storage follows\n")
    assert new.startswith(head) and new.endswith("# storage follows\n" + tail)
    assert parse(new)["storage"] == {"path": "x"} and parse(new)["permissions"]["mode"] == "advisory"
    assert P.plan(new)["changed"] is False


def test_duplicate_policies_give_one_rule():
    text = '[[governance.policy]]\nscope = "a"\n\n[[governance.policy]]\nscope = "a"\ndecision = "ask"\n'
    r = P.plan(text)
    assert len(r["added"]) == 1 and len(r["skipped"]) == 1
    assert _rules(r["new_text"]) == [("a", "*", "*", "ask")]


@pytest.mark.parametrize("bad", ["pending", "Allow", "DENY", "approve", ""])
def test_bad_decision_rejected_naming_policy_and_file(bad):
    text = CONFIG.replace('decision = "allow"', 'decision = "%s"' % bad)
    with pytest.raises(P.PermissionsError) as e:
        P.plan(text, path="/srv/ai/.config/ai-memory/config.toml")
    msg = str(e.value)
    assert "[[governance.policy]] #3" in msg and "/srv/ai/.config/ai-memory/config.toml" in msg
    assert repr(bad) in msg and "allow, deny or ask" in msg


def test_existing_bad_rule_and_bad_mode_rejected():
    with pytest.raises(P.PermissionsError, match="existing \\[\\[permissions.rules\\]\\] #1"):
        P.plan('[[permissions.rules]]\nnamespace_pattern="a"\nop="*"\nagent_pattern="*"\ndecision="maybe"\n')
    with pytest.raises(P.PermissionsError, match="\\[permissions\\].mode"):
        P.plan('[permissions]\nmode = "Enforce"\n')
    # setting `mode` repairs an invalid one
    r = P.plan('[permissions]\nmode = "Enforce"\n', mode="enforce")
    assert r["new_text"] == '[permissions]\nmode = "enforce"\n'


def test_non_string_field_rejected():
    with pytest.raises(P.PermissionsError, match="#1 .*`scope` is \\['a'\\]"):
        P.plan('[[governance.policy]]\nscope = ["a"]\n')


def test_inline_rules_array_refused():
    text = CONFIG + '\n[permissions]\nrules = [ { namespace_pattern = "z", op = "*", agent_pattern = "*", decision = "ask" } ]\n'
    with pytest.raises(P.PermissionsError) as e:
        P.plan(text)
    assert "inline array" in str(e.value) and "[[permissions.rules]]" in e.value.hint


def test_inline_permissions_table_refused():
    with pytest.raises(P.PermissionsError, match="dotted keys or an inline table"):
        P.plan(CONFIG.replace('[governance]', 'permissions = { mode = "off" }\n\n[governance]'))


def test_sub_tables_of_rules_refused():
    text = CONFIG + '\n[[permissions.rules]]\nnamespace_pattern="q"\nop="*"\nagent_pattern="*"\ndecision="ask"\n[permissions.rules.meta]\nx = 1\n'
    with pytest.raises(P.PermissionsError, match="sub-tables"):
        P.plan(text)


@pytest.mark.parametrize("text, mode, expected", [
    ('[permissions]\nmode = "advisory" # staged\n', "enforce", '[permissions]\nmode = "enforce" # staged\n'),
    ("[permissions]\nmode='off'\nx = 1\n", "advisory", '[permissions]\nmode="advisory"\nx = 1\n'),
    ('[permissions]\nx = 1\n', "off", '[permissions]\nmode = "off"\nx = 1\n'),
    ('a = 1\n', "enforce", 'a = 1\n\n[permissions]\nmode = "enforce"\n'),
    ('a = 1', "enforce", 'a = 1\n\n[permissions]\nmode = "enforce"\n'),
    ('', "enforce", '[permissions]\nmode = "enforce"\n'),
    ('[[permissions.rules]]\nnamespace_pattern="a"\nop="*"\nagent_pattern="*"\ndecision="ask"\n', "advisory",
     '[permissions]\nmode = "advisory"\n\n[[permissions.rules]]\nnamespace_pattern="a"\nop="*"\nagent_pattern="*"\ndecision="ask"\n'),
])
def test_mode_edits(text, mode, expected):
    r = P.plan(text, mode=mode)
    assert r["new_text"] == expected
    assert parse(r["new_text"])["permissions"]["mode"] == mode
    assert P.plan(expected, mode=mode)["changed"] is False


def test_mode_and_rules_on_a_file_without_permissions():
    r = P.plan(CONFIG, mode="advisory")
    data = parse(r["new_text"])
    assert data["permissions"]["mode"] == "advisory" and len(data["permissions"]["rules"]) == 3
    assert r["new_text"].startswith(CONFIG)


def test_escaping_round_trips():
    weird = 'a"b\\c\td\u0001'
    assert P.toml_string(weird) == '"a\\"b\\\\c\\td\\u0001"'
    text = '[[governance.policy]]\nscope = %s\ndecision = "deny"\n' % P.toml_string(weird)
    r = P.plan(text)
    assert parse(r["new_text"])["permissions"]["rules"][0]["namespace_pattern"] == weird


def test_no_policies_nothing_to_do():
    text = "# only comments\n# db = \"x\"\n"
    r = P.plan(text)
    assert r["changed"] is False and r["new_text"] == text and r["policies"] == 0


def test_invalid_toml_rejected_with_path():
    with pytest.raises(P.PermissionsError, match="/x/config.toml is not valid TOML"):
        P.plan("[governance\n", path="/x/config.toml")


def test_scanner_ignores_brackets_in_strings_arrays_and_comments():
    text = ('a = "[not]"\nb = \'\'\'\n[[nor]]\n\'\'\'\nc = [\n  [1],\n  {x = "]"},\n]\n# [comment]\n'
            '[real]\nk = 1  # [x]\n\n[[real.aot]]\n')
    headers, root_end = P.scan_headers(text)
    assert [(h["key"], h["aot"]) for h in headers] == [(("real",), False), (("real", "aot"), True)]
    assert text[:root_end].endswith('"]"},\n]')
    assert text[:headers[0]["content_end"]].endswith("k = 1")


def test_quoted_header_keys():
    headers, _ = P.scan_headers('["permissions"]\nmode="off"\n[[ permissions . "rules" ]]\nop="*"\n')
    assert [h["key"] for h in headers] == [("permissions",), ("permissions", "rules")]


def test_tomlkit_reader_gives_the_same_plan(monkeypatch):
    tomlkit = pytest.importorskip("tomlkit")
    expected = P.plan(CONFIG, mode="off")
    monkeypatch.setattr(P, "_toml_reader", tomlkit)
    monkeypatch.setattr(P, "TOML_READER", "tomlkit")
    got = P.plan(CONFIG, mode="off")
    assert got["new_text"] == expected["new_text"]
    assert P.plan(got["new_text"], mode="off")["changed"] is False
    with pytest.raises(P.PermissionsError, match="decision 'pending'"):
        P.plan(CONFIG.replace('"allow"', '"pending"'))


@pytest.mark.parametrize("text", [
    'governance = 1\n',
    '[governance]\npolicy = 1\n',
    '[governance]\npolicy = [1]\n',
    'permissions = 1\n',
    '[permissions]\nrules = 1\n',
    '[permissions]\nrules = [1]\n',
    '[[governance.policy]]\nscope = ["a"]\n',
])
def test_shape_errors_name_the_file_and_the_fix(text):
    path = "/srv/ai/.config/ai-memory/config.toml"
    with pytest.raises(P.PermissionsError) as e:
        P.plan(text, path=path)
    assert path in str(e.value)
    assert e.value.hint and path in e.value.hint and "re-run" in e.value.hint
