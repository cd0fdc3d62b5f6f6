"""Unit tests of module_utils/doctor.py against hand-written, real-shaped reports (facts 3.3/3.4, 4, 5.6)."""
import json

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import doctor as D


def _sec(name, severity, facts, note=None):
    s = {"name": name, "severity": severity, "facts": facts}
    if note is not None:
        s["note"] = note
    return s


def _report(sections, overall, mode="local", source="/var/lib/ai-memory/ai-memory.db"):
    # Key order and pretty-printing as the binary emits them (mode, source, generated_at, sections, overall)
    return json.dumps({"mode": mode, "source": source, "generated_at": "2026-06-01T22:40:38.123456+00:00",
                       "sections": sections, "overall": overall}, indent=2)


COMMON_064 = [
    _sec("Storage", "info", [["total_memories", "42"], ["expiring_within_1h", "0"], ["links", "3"],
                              ["db_size_bytes", "135168"], ["tier::long", "40"], ["tier::mid", "2"],
                              ["ns::global", "42"], ["dim_violations", "0"]]),
    _sec("Index", "info", [["hnsw_size_estimate", "42"], ["cold_start_rebuild_secs_estimate", "0"],
                            ["index_evictions_total", "0"]]),
    _sec("Recall", "info", [["recall_mode", "hybrid"], ["reranker", "off"], ["embedder", "off"]]),
    _sec("Governance", "info", [["namespaces_with_policy", "0"], ["namespaces_without_policy", "1"],
                                 ["inheritance_depth", "0"], ["oldest_pending_age_secs", "0"],
                                 ["pending_actions_total", "0"]]),
    _sec("Sync", "notavailable", [], note="no sync_state rows"),
    _sec("Webhook", "info", [["subscriptions", "0"]]),
    _sec("Capabilities", "notavailable", [], note="local mode"),
]

REPORT_064 = _report(COMMON_064, "info")

GOV_070 = _sec("Governance", "info", [["permissions_mode", "advisory"], ["decisions::enforce", "0"],
                                       ["decisions::advisory", "3"], ["decisions::off", "0"],
                                       ["namespaces_with_policy", "0"], ["namespaces_without_policy", "1"],
                                       ["inheritance_depth", "0"], ["oldest_pending_age_secs", "0"],
                                       ["pending_actions_total", "0"]])
LLM_OK = _sec(D.LLM_SECTION, "info", [["backend", "ollama"], ["model", "gemma4:e2b"],
                                      ["base_url", "http://127.0.0.1:11434"], ["config_source", "config"],
                                      ["key_source", "none"], ["probe_url", "http://127.0.0.1:11434/api/tags"],
                                      ["http_status", "200"], ["latency_ms", "3"]])
LLM_DOWN = _sec(D.LLM_SECTION, "critical", [["backend", "ollama"], ["model", "gemma4:e2b"],
                                            ["base_url", "http://127.0.0.1:9"], ["config_source", "legacy"],
                                            ["key_source", "none"], ["probe_url", "http://127.0.0.1:9/api/tags"],
                                            ["error", "error sending request: Connection refused (os error 111)"]])
REFLECTION = _sec("Reflection Health", "info", [["depth_refusals_24h", "0"], ["max_depth", "1"]])


def _v070(llm, overall):
    secs = [COMMON_064[0], COMMON_064[1], COMMON_064[2], GOV_070] + COMMON_064[4:] + [REFLECTION, llm]
    return _report(secs, overall)


REPORT_070 = _v070(LLM_OK, "info")
REPORT_070_LLM_DOWN = _v070(LLM_DOWN, "critical")
REPORT_CANNOT_OPEN = _report(
    [_sec("Storage", "critical", [["error", "unable to open database file: Error code 14"]],
          note="could not open database at /nope/ai-memory.db \u2014 every other section is N/A")],
    "critical", source="/nope/ai-memory.db")


# ------------------------------------------------------------------------------------------ parsing
def test_parse_064_seven_sections_facts_become_dicts():
    r = D.parse_doctor_report(REPORT_064)
    assert [s["name"] for s in r["sections"]] == ["Storage", "Index", "Recall", "Governance", "Sync",
                                                  "Webhook", "Capabilities"]
    assert r["sections"][0]["facts"]["total_memories"] == "42"
    assert r["sections"][0]["facts"]["tier::mid"] == "2"
    assert "note" not in r["sections"][0]
    assert r["sections"][4] == {"name": "Sync", "severity": "notavailable", "facts": {},
                                "note": "no sync_state rows"}
    assert r["overall"] == "info" and r["reported_overall"] == "info"
    assert r["mode"] == "local" and r["source"] == "/var/lib/ai-memory/ai-memory.db"
    assert r["db_open_failed"] is False


def test_parse_070_nine_sections_with_governance_mode():
    r = D.parse_doctor_report(REPORT_070)
    assert len(r["sections"]) == 9
    assert r["sections"][-1]["name"] == "LLM Reachability (#1146)"
    gov = [s for s in r["sections"] if s["name"] == "Governance"][0]
    assert gov["facts"]["permissions_mode"] == "advisory"
    assert D.gate(r)["passed"] is True


def test_parse_tolerates_config_lines_before_json():
    r = D.parse_doctor_report("ai-memory: loaded config from /h/.config/ai-memory/config.toml\n" + REPORT_064)
    assert len(r["sections"]) == 7


def test_overall_is_recomputed_from_sections():
    secs = [dict(s) for s in COMMON_064]
    secs[5] = _sec("Webhook", "warning", [["success_rate", "0.80"]])
    r = D.parse_doctor_report(_report(secs, "info"))
    assert r["overall"] == "warning" and r["reported_overall"] == "info"


def test_could_not_open_single_section_report():
    r = D.parse_doctor_report(REPORT_CANNOT_OPEN)
    assert r["db_open_failed"] is True
    assert r["sections"][0]["facts"] == {"error": "unable to open database file: Error code 14"}
    g = D.gate(r, "critical", ["Storage"])  # cannot be ignored away
    assert g["passed"] is False and g["failing_sections"] == ["Storage"] and g["ignored_sections"] == []
    msg = D.describe_failures(r, g)
    assert "could not open database at /nope/ai-memory.db" in msg and "check `db`/`chdir`" in msg
    # no health was read at all: "never" (report only) must not turn it into a pass
    for level in ("never", "warning"):
        g = D.gate(r, level, ["Storage"])
        assert g["passed"] is False and g["failing_sections"] == ["Storage"], level


def test_storage_critical_with_more_sections_is_not_a_db_open_failure():
    secs = [_sec("Storage", "critical", [["dim_violations", "3"]])] + COMMON_064[1:]
    r = D.parse_doctor_report(_report(secs, "critical"))
    assert r["db_open_failed"] is False
    g = D.gate(r)
    assert "dim_violations=3" in D.describe_failures(r, g)


@pytest.mark.parametrize("bad, match", [
    ("INFO  Storage total_memories=0", "did not print JSON"),
    ("", "printed nothing"),
    ("[1, 2]", "not an object"),
    (json.dumps({"report": "tokens", "rows": []}), "no sections"),
    (_report([_sec("Storage", "INFO", [])], "info"), "unknown severity"),
    (_report([_sec("Storage", "info", {"a": 1}), {"name": "x"}], "info"), "without name/severity"),
    (_report([_sec("Storage", "info", [["a", "1", "2"]])], "info"), "not a \\[key, value\\] pair"),
    (_report([_sec("Storage", "info", "a=1")], "info"), "expected a list"),
])
def test_parse_rejects_other_shapes(bad, match):
    with pytest.raises(D.DoctorError, match=match):
        D.parse_doctor_report(bad)


def test_tokens_report_gets_a_hint():
    with pytest.raises(D.DoctorError) as e:
        D.parse_doctor_report(json.dumps({"rows": []}))
    assert "--json comes after 'doctor'" in e.value.hint


# ------------------------------------------------------------------------------------------ gate
def test_llm_down_fails_critical_gate_naming_section_and_endpoint():
    r = D.parse_doctor_report(REPORT_070_LLM_DOWN)
    assert D.sections_with(r, "critical") == [D.LLM_SECTION]
    g = D.gate(r, "critical")
    assert g["passed"] is False and g["failing_sections"] == [D.LLM_SECTION]
    msg = D.describe_failures(r, g)
    assert msg.startswith("LLM Reachability (#1146) [critical]")
    assert "http://127.0.0.1:9" in msg and "Connection refused" in msg
    assert "ignore_sections" in msg and "start the LLM endpoint" in msg


def test_llm_down_passes_when_ignored_but_report_kept():
    r = D.parse_doctor_report(REPORT_070_LLM_DOWN)
    g = D.gate(r, "critical", [D.LLM_SECTION])
    assert g["passed"] is True
    assert g["ignored_sections"] == [D.LLM_SECTION]
    assert g["effective_overall"] == "info"
    assert r["overall"] == "critical"  # the report itself is untouched


def test_fail_on_levels():
    secs = list(COMMON_064)
    secs[5] = _sec("Webhook", "warning", [["success_rate", "0.80"]])
    r = D.parse_doctor_report(_report(secs, "warning"))
    assert D.gate(r, "critical")["passed"] is True
    g = D.gate(r, "warning")
    assert g["passed"] is False and g["failing_sections"] == ["Webhook"]
    assert "webhook delivery" in D.describe_failures(r, g)
    assert D.gate(r, "never")["passed"] is True
    with pytest.raises(ValueError):
        D.gate(r, "info")


def test_unknown_ignored_names_are_reported():
    r = D.parse_doctor_report(REPORT_064)
    g = D.gate(r, "critical", ["LLM Reachability (#1146)", "Sync"])
    assert g["unknown_ignored"] == ["LLM Reachability (#1146)"]  # 0.6.4 has no LLM section
    assert g["ignored_sections"] == ["Sync"]


def test_remote_capabilities_hint_names_url():
    secs = [_sec("Capabilities", "critical", [["error", "connection refused"]],
                 note="could not reach http://127.0.0.1:9077")]
    r = D.parse_doctor_report(_report(secs, "critical", mode="remote",
                                      source="http://127.0.0.1:9077 (local db reference: ai-memory.db)"))
    g = D.gate(r)
    assert "http://127.0.0.1:9077" in D.describe_failures(r, g, remote="http://127.0.0.1:9077")


# ------------------------------------------------------------------------------------------ chain
CHAIN_OK = json.dumps({"rows_checked": 12, "chain_break": None, "signature_failures": [], "chain_holds": True},
                      indent=2)
CHAIN_BREAK = json.dumps({"rows_checked": 7, "chain_break": 5, "signature_failures": [], "chain_holds": False},
                         indent=2)
CHAIN_SIGS = json.dumps({"rows_checked": 3, "chain_break": None, "signature_failures": [2, 3],
                         "chain_holds": True}, indent=2)


def test_chain_ok():
    c = D.parse_chain_report(CHAIN_OK)
    assert c == {"rows_checked": 12, "chain_break": None, "signature_failures": [], "chain_holds": True}
    assert D.chain_gate(c, True) == []


def test_chain_break_fails_with_sequence():
    reasons = D.chain_gate(D.parse_chain_report(CHAIN_BREAK))
    assert len(reasons) == 1
    assert reasons[0].startswith("signed-events chain breaks at sequence=5 (7 row(s) walked) - fix: ")
    assert "restore the DB from a verified snapshot" in reasons[0]


def test_signature_failures_only_fail_when_required():
    c = D.parse_chain_report(CHAIN_SIGS)
    assert D.chain_gate(c, False) == []
    reasons = D.chain_gate(c, True)
    assert len(reasons) == 1
    assert reasons[0].startswith("signature verification failed for sequence(s) 2, 3 - fix: ")
    assert "require_signatures: false" in reasons[0]


@pytest.mark.parametrize("bad", ["verify-signed-events-chain OK: 0 row(s) walked, chain holds",
                                 json.dumps({"rows_checked": 0, "chain_holds": True}),
                                 json.dumps({"rows_checked": 0, "chain_break": None, "signature_failures": [],
                                             "chain_holds": "yes"})])
def test_chain_rejects_text_and_partial_json(bad):
    with pytest.raises(D.DoctorError):
        D.parse_chain_report(bad)


# ------------------------------------------------------------------------------------------ probes
@pytest.mark.parametrize("out, ver", [("ai-memory 0.7.0\n", "0.7.0"), ("ai-memory 0.6.4\n", "0.6.4"),
                                      ("ai-memory 0.7.1-rc.1\n", "0.7.1-rc.1"), ("hello\n", None), ("", None)])
def test_parse_version(out, ver):
    assert D.parse_version(out) == ver


def test_version_tuple():
    assert D.version_tuple("0.7.0") == (0, 7, 0) and D.version_tuple("0.6.4") < (0, 7, 0)
    assert D.version_tuple("x") is None


@pytest.mark.parametrize("rc, err, expected", [
    (0, "", True),
    (2, "error: unrecognized subcommand 'config'\n\nUsage: ai-memory [OPTIONS] <COMMAND>\n", False),
    (2, "error: unexpected argument '--help'", None),
    (1, "Error: boom", None),
    (78, "", None),
])
def test_classify_help(rc, err, expected):
    assert D.classify_help(rc, "", err) is expected


def test_parse_boot_schema():
    line = json.dumps({"status": "ok", "version": "0.7.0", "db_path": "/x/probe.db", "schema_version": "v54",
                       "schema_supported": True, "total_memories": "0", "tier": "keyword", "embedder": "off",
                       "reranker": "off", "llm": "off", "latency_ms": 1, "namespace": "global", "count": 0,
                       "note": None}, separators=(",", ":"))
    assert D.parse_boot_schema(line + "\n")[0] == 54
    assert D.parse_boot_schema("ai-memory: loaded config from x\n" + line.replace("v54", "v20"))[0] == 20
    with pytest.raises(D.DoctorError) as e:
        D.parse_boot_schema("")
    assert "AI_MEMORY_BOOT_ENABLED" in e.value.hint
    with pytest.raises(D.DoctorError):
        D.parse_boot_schema('{"status":"ok"}')


@pytest.mark.parametrize("label, n", [("v54", 54), ("v20", 20), (42, 42), ("54", 54)])
def test_parse_schema_label(label, n):
    assert D.parse_schema_label(label) == n


@pytest.mark.parametrize("label", ["vx", True, "54a"])
def test_parse_schema_label_rejects(label):
    with pytest.raises(D.DoctorError):
        D.parse_schema_label(label)


# ------------------------------------------------------------------------------------------ schema guard
@pytest.mark.parametrize("db, binary, allow, action, supported, migrate", [
    (54, 54, False, "same", True, False),
    (20, 54, False, "refuse", True, True),
    (20, 54, True, "migrate", True, True),
    (20, 42, False, "refuse", True, True),
    (54, 20, False, "newer", False, False),
    (54, 42, True, "newer", False, False),
    (0, 54, False, "refuse", True, True),
])
def test_schema_decision(db, binary, allow, action, supported, migrate):
    d = D.schema_decision(db, binary, allow)
    assert (d["action"], d["schema_supported"], d["would_migrate"]) == (action, supported, migrate)


# ------------------------------------------------------------------------------------------ db path
@pytest.mark.parametrize("flag, env, cfg, tilde, expected, origin", [
    ("/data/a.db", "/env.db", "/cfg.db", True, "/data/a.db", "db option"),
    ("rel/a.db", None, None, True, "/work/rel/a.db", "db option"),
    (None, "/env.db", "/cfg.db", True, "/env.db", "AI_MEMORY_DB"),
    ("ai-memory.db", None, "/cfg.db", True, "/cfg.db", "config db"),     # literal default falls through
    (None, "ai-memory.db", "/cfg.db", True, "/cfg.db", "config db"),
    (None, None, "~/.claude/ai-memory.db", True, "/home/svc/.claude/ai-memory.db", "config db"),
    (None, None, "~/.claude/ai-memory.db", False, "/work/~/.claude/ai-memory.db", "config db"),  # 0.6.4 trap
    (None, None, None, True, "/work/ai-memory.db", "default (CWD)"),
    (None, "~/x.db", None, True, "/work/~/x.db", "AI_MEMORY_DB"),      # env/flag: no tilde expansion
])
def test_resolve_db_path(flag, env, cfg, tilde, expected, origin):
    assert D.resolve_db_path(flag, env, cfg, "/work", "/home/svc", tilde) == (expected, origin)


def test_looks_secret():
    assert D.looks_secret("AI_MEMORY_LLM_API_KEY") and D.looks_secret("AI_MEMORY_DB_PASSPHRASE")
    assert not D.looks_secret("HOME") and not D.looks_secret("AI_MEMORY_PERMISSIONS_MODE")
