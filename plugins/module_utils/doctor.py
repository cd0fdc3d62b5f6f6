# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic behind ``aimem.fleet.aimem_doctor``: parsing and gating the real ``ai-memory`` output.

Pure Python (stdlib only, Python 3.8+), no Ansible import, so every function is unit-tested on its
own. The module (``plugins/modules/aimem_doctor.py``) only runs commands and calls these.

Facts this follows (``ai-memory-facts.md``):

* ``doctor --json`` (the flag *after* the subcommand, 3.1) prints ``{mode, source, generated_at,
  sections[], overall}``; each section has ``name``, ``severity`` (``info|warning|critical|
  notavailable``), ``facts`` as a list of ``[key, value]`` string pairs and an optional ``note``
  (3.3). A DB that cannot be opened gives one critical ``Storage`` section (3.4).
* ``verify-signed-events-chain --format json`` prints ``{rows_checked, chain_break,
  signature_failures, chain_holds}``; signature failures do not affect ``chain_holds`` (4).
* ``--version`` prints ``ai-memory X.Y.Z`` for *both* 0.7.0 builds, so capabilities are probed with
  ``<sub> --help`` (exit 0 = present, exit 2 + ``unrecognized subcommand`` = absent) (0, 5.5).
* ``boot --format json`` reports ``schema_version`` as a string like ``"v54"`` (5.6).
* Every DB-opening command migrates (2.3), so the module reads the schema version without the
  binary, read-only, through ``module_utils.sqlite_schema`` (``MAX(version)`` of
  ``schema_version``, 2.1); ``schema_decision`` compares it with the binary's target.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import re

__metaclass__ = type

SEVERITY_RANK = {"notavailable": 0, "info": 1, "warning": 2, "critical": 3}
FAIL_ON_RANK = {"critical": 3, "warning": 2, "never": None}
LLM_SECTION = "LLM Reachability (#1146)"
DB_OPEN_NOTE_PREFIX = "could not open database"

# Subcommands whose presence is probed with ``<sub> --help`` (none of them opens the DB).
CAPABILITY_SUBCOMMANDS = (
    ("config_migrate", ["config", "--help"]),
    ("verify_signed_events_chain", ["verify-signed-events-chain", "--help"]),
    ("identity", ["identity", "--help"]),
    ("governance_migrate", ["governance", "--help"]),
)


class DoctorError(Exception):
    """Unparseable or unexpected output. ``hint`` says what the operator can do."""

    def __init__(self, msg, hint=None):
        super(DoctorError, self).__init__(msg)
        self.hint = hint


# --------------------------------------------------------------------------------------------
# JSON extraction
# --------------------------------------------------------------------------------------------
def _load_json_object(text, what):
    """Parse ``text`` as one JSON object; tolerate stray lines before it (never seen, but cheap)."""
    text = (text or "").strip()
    if not text:
        raise DoctorError("%s printed nothing on stdout" % what)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
        start = text.find("{")
        while start != -1 and data is None:
            try:
                data = json.loads(text[start:])
            except ValueError:
                start = text.find("\n{", start + 1)
                if start != -1:
                    start += 1
        if data is None:
            raise DoctorError("%s did not print JSON on stdout: %s" % (what, _excerpt(text)))
    if not isinstance(data, dict):
        raise DoctorError("%s printed JSON that is not an object: %s" % (what, _excerpt(text)))
    return data


# Environment variables that choose where the binary's start-up preamble writes (config template,
# audit dir, logs, keys). Probes point every one of them into a private scratch directory.
PROBE_DIR_VARS = (
    ("AI_MEMORY_AUDIT_DIR", os.path.join(".local", "state", "ai-memory", "audit")),
    ("AI_MEMORY_LOG_DIR", os.path.join(".local", "state", "ai-memory", "logs")),
    ("AI_MEMORY_KEY_DIR", os.path.join(".config", "ai-memory", "keys")),
    ("XDG_CONFIG_HOME", ".config"),
    ("XDG_STATE_HOME", os.path.join(".local", "state")),
    ("XDG_DATA_HOME", os.path.join(".local", "share")),
    ("XDG_CACHE_HOME", ".cache"),
)


def scratch_env(base, scratch):
    """A copy of ``base`` with HOME and every preamble write location inside ``scratch``."""
    env = dict(base or {})
    env["HOME"] = scratch
    for var, sub in PROBE_DIR_VARS:
        env[var] = os.path.join(scratch, sub)
    return env

def _excerpt(text, limit=300):
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------------------------
# doctor --json
# --------------------------------------------------------------------------------------------
def facts_to_dict(facts, section_name="?"):
    """``[["k","v"], ...]`` -> ``{"k": "v"}`` (order kept). A dict is accepted as is."""
    if isinstance(facts, dict):
        return dict((str(k), v) for k, v in facts.items())
    if not isinstance(facts, list):
        raise DoctorError("doctor section %r: facts is %s, expected a list of [key, value] pairs"
                          % (section_name, type(facts).__name__))
    out = {}
    for pair in facts:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DoctorError("doctor section %r: fact %r is not a [key, value] pair" % (section_name, pair))
        out[str(pair[0])] = pair[1]
    return out


def parse_doctor_report(stdout):
    """Parse ``ai-memory doctor --json`` stdout into a normalised report.

    Returns ``{mode, source, generated_at, overall, reported_overall, sections, db_open_failed}``
    where each section is ``{name, severity, facts (dict), note?}`` in report order and
    ``overall`` is recomputed from the sections (rank N/A < INFO < WARN < CRIT, 3.3).
    """
    data = _load_json_object(stdout, "ai-memory doctor --json")
    sections = data.get("sections")
    if not isinstance(sections, list) or not sections:
        hint = None
        if "sections" not in data:
            hint = ("this is not a health report; make sure --json comes after 'doctor' and that "
                    "--tokens/--hooks are not used")
        raise DoctorError("doctor JSON has no sections array: %s" % _excerpt(json.dumps(data)), hint=hint)
    parsed = []
    for raw in sections:
        if not isinstance(raw, dict) or "name" not in raw or "severity" not in raw:
            raise DoctorError("doctor section without name/severity: %r" % (raw,))
        sev = raw["severity"]
        if sev not in SEVERITY_RANK:
            raise DoctorError("doctor section %r has unknown severity %r (expected one of %s)"
                              % (raw["name"], sev, ", ".join(sorted(SEVERITY_RANK))))
        sec = {"name": raw["name"], "severity": sev,
               "facts": facts_to_dict(raw.get("facts", []), raw["name"])}
        if raw.get("note") is not None:
            sec["note"] = raw["note"]
        parsed.append(sec)
    overall = max_severity(s["severity"] for s in parsed)
    reported = data.get("overall")
    report = {
        "mode": data.get("mode"),
        "source": data.get("source"),
        "generated_at": data.get("generated_at"),
        "overall": overall,
        "reported_overall": reported,
        "sections": parsed,
        "db_open_failed": is_db_open_failure(parsed),
    }
    return report


def max_severity(severities):
    best = None
    for sev in severities:
        if best is None or SEVERITY_RANK[sev] > SEVERITY_RANK[best]:
            best = sev
    return best if best is not None else "notavailable"


def is_db_open_failure(sections):
    """The single-section report doctor prints when the DB cannot be opened (3.4)."""
    if len(sections) != 1:
        return False
    sec = sections[0]
    return (sec["name"] == "Storage" and sec["severity"] == "critical"
            and "error" in sec["facts"]
            and str(sec.get("note", "")).startswith(DB_OPEN_NOTE_PREFIX))


def sections_with(report, severity):
    return [s["name"] for s in report["sections"] if s["severity"] == severity]


def section_hint(section, remote=None):
    """One-line fix hint for a failing section."""
    name = section["name"]
    facts = section.get("facts", {})
    if name == LLM_SECTION:
        return ("start the LLM endpoint %s (backend %s, config_source %s) or fix [llm].base_url / "
                "AI_MEMORY_LLM_BASE_URL, or add '%s' to ignore_sections on hosts where the LLM is "
                "intentionally down"
                % (facts.get("base_url", "?"), facts.get("backend", "?"), facts.get("config_source", "?"),
                   LLM_SECTION))
    if name == "Storage" and "error" in facts:
        return ("doctor could not open the database (%s); check `db`/`chdir`, that the parent "
                "directory exists and that the service user can read and write it" % facts["error"])
    if name == "Storage":
        return ("memories with an embedding of the wrong dimension (dim_violations=%s); re-embed them "
                "or fix [embeddings]" % facts.get("dim_violations", "?"))
    if name == "Governance":
        return ("pending governance actions older than 24 h (oldest_pending_age_secs=%s); approve or "
                "reject them with `ai-memory pending`" % facts.get("oldest_pending_age_secs", "?"))
    if name == "Sync":
        return "peer clock skew above 600 s; fix time synchronisation (NTP) on this host and its peers"
    if name == "Webhook":
        return "webhook delivery success below 95 %; check the subscriptions' endpoints"
    if name == "Index":
        return "HNSW index near capacity (>= 95 000 embeddings); plan capacity before upgrading"
    if name == "Reflection Health":
        return "reflection depth limits are being hit; review reflection settings per namespace"
    if name == "Capabilities":
        return ("the daemon at %s did not answer; start it, or drop `remote` to run the local checks"
                % (remote or "the remote URL"))
    return "see the section's facts"


def gate(report, fail_on="critical", ignore_sections=None):
    """Gate decision over a parsed report.

    ``ignore_sections`` removes sections from the decision (the report keeps them). The
    could-not-open-database report can never be ignored away, and fails even with
    ``fail_on="never"``: its only section stands for the whole DB, and no health was read. Returns ``{passed, fail_on, effective_overall, failing_sections, ignored_sections,
    unknown_ignored}``.
    """
    if fail_on not in FAIL_ON_RANK:
        raise ValueError("fail_on must be one of %s" % ", ".join(FAIL_ON_RANK))
    ignore = list(ignore_sections or [])
    names = [s["name"] for s in report["sections"]]
    considered = [s for s in report["sections"]
                  if s["name"] not in ignore or report["db_open_failed"]]
    threshold = FAIL_ON_RANK[fail_on]
    failing = []
    if report["db_open_failed"]:
        # Not a health finding but the absence of one: doctor read nothing. Fails whatever fail_on
        # says, like any other run that produced no usable report.
        failing = list(considered)
    elif threshold is not None:
        failing = [s for s in considered if SEVERITY_RANK[s["severity"]] >= threshold]
    return {
        "passed": not failing,
        "fail_on": fail_on,
        "effective_overall": max_severity(s["severity"] for s in considered),
        "failing_sections": [s["name"] for s in failing],
        "ignored_sections": [n for n in ignore if n in names and not report["db_open_failed"]],
        "unknown_ignored": [n for n in ignore if n not in names],
    }


def describe_failures(report, gate_result, remote=None):
    """Human message part naming each failing section with its note, key facts and fix."""
    parts = []
    by_name = dict((s["name"], s) for s in report["sections"])
    for name in gate_result["failing_sections"]:
        sec = by_name[name]
        bits = ["%s [%s]" % (name, sec["severity"])]
        if sec.get("note"):
            bits.append(sec["note"])
        facts = sec.get("facts", {})
        interesting = [k for k in ("error", "base_url", "probe_url", "http_status", "dim_violations",
                                   "oldest_pending_age_secs") if k in facts]
        if interesting:
            bits.append(", ".join("%s=%s" % (k, facts[k]) for k in interesting))
        bits.append("fix: " + section_hint(sec, remote=remote))
        parts.append(" - ".join(bits))
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# verify-signed-events-chain --format json
# --------------------------------------------------------------------------------------------
def parse_chain_report(stdout):
    data = _load_json_object(stdout, "ai-memory verify-signed-events-chain --format json")
    missing = [k for k in ("rows_checked", "chain_break", "signature_failures", "chain_holds") if k not in data]
    if missing:
        raise DoctorError("verify-signed-events-chain JSON lacks %s: %s" % (", ".join(missing), _excerpt(json.dumps(data))))
    if not isinstance(data["chain_holds"], bool) or not isinstance(data["signature_failures"], list):
        raise DoctorError("verify-signed-events-chain JSON has unexpected types: %s" % _excerpt(json.dumps(data)))
    return {
        "rows_checked": data["rows_checked"],
        "chain_break": data["chain_break"],
        "signature_failures": list(data["signature_failures"]),
        "chain_holds": data["chain_holds"],
    }


def chain_gate(chain, require_signatures=False):
    """List of failure reasons (empty = pass). Signature failures count only when required (4)."""
    reasons = []
    if not chain["chain_holds"]:
        reasons.append("signed-events chain breaks at sequence=%s (%s row(s) walked) - fix: treat the "
                       "signed_events rows from that sequence on as tampered; restore the DB from a "
                       "verified snapshot taken before the break and investigate"
                       % (chain["chain_break"], chain["rows_checked"]))
    if require_signatures and chain["signature_failures"]:
        shown = ", ".join(str(x) for x in chain["signature_failures"][:20])
        more = len(chain["signature_failures"]) - 20
        reasons.append("signature verification failed for sequence(s) %s%s - fix: check that the "
                       "signing agents' public keys are registered (ai-memory identity) or set "
                       "require_signatures: false while unsigned events are expected"
                       % (shown, (" and %d more" % more) if more > 0 else ""))
    return reasons


# --------------------------------------------------------------------------------------------
# Binary probes
# --------------------------------------------------------------------------------------------
_VERSION_RE = re.compile(r"^ai-memory\s+(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)\s*$")


def parse_version(stdout):
    """``ai-memory 0.7.0`` -> ``"0.7.0"`` (None when no such line)."""
    for line in (stdout or "").splitlines():
        m = _VERSION_RE.match(line.strip())
        if m:
            return m.group(1)
    return None


def version_tuple(version):
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(x) for x in m.groups()) if m else None


def classify_help(rc, stdout, stderr):
    """True: the subcommand exists; False: clap says it does not; None: cannot tell."""
    if rc == 0:
        return True
    text = "%s\n%s" % (stdout or "", stderr or "")
    if rc == 2 and "unrecognized subcommand" in text:
        return False
    return None


def parse_schema_label(label):
    """``"v54"`` (boot's spelling) or ``54`` -> 54."""
    if isinstance(label, bool):
        raise DoctorError("schema_version %r is not a schema number" % (label,))
    if isinstance(label, int):
        return label
    m = re.match(r"^v?(\d+)$", str(label).strip())
    if not m:
        raise DoctorError("schema_version %r is not a schema number like 'v54'" % (label,))
    return int(m.group(1))


def parse_boot_schema(stdout):
    """Schema number from ``boot --format json`` (one compact JSON line, 5.6)."""
    if not (stdout or "").strip():
        raise DoctorError("ai-memory boot --format json printed nothing",
                          hint="boot is disabled (AI_MEMORY_BOOT_ENABLED=0 or [boot] enabled=false) in the probe environment")
    data = None
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "schema_version" in data:
                break
            data = None
    if data is None:
        data = _load_json_object(stdout, "ai-memory boot --format json")
    if "schema_version" not in data:
        raise DoctorError("boot JSON has no schema_version: %s" % _excerpt(stdout))
    return parse_schema_label(data["schema_version"]), data


# --------------------------------------------------------------------------------------------
# Schema guard (the version itself is read by module_utils.sqlite_schema, read-only)
# --------------------------------------------------------------------------------------------
def schema_decision(db_version, binary_schema, allow_migration):
    """What running the binary against the DB would do to its schema (2.3, 2.4).

    Returns ``{action, schema_supported, would_migrate}`` with ``action`` one of ``same`` (nothing
    happens), ``migrate`` (allowed), ``refuse`` (would migrate, not allowed) and ``newer`` (the DB
    is newer than the binary knows; it proceeds without refusing and without touching the stamp).
    """
    if db_version == binary_schema:
        return {"action": "same", "schema_supported": True, "would_migrate": False}
    if db_version > binary_schema:
        return {"action": "newer", "schema_supported": False, "would_migrate": False}
    return {"action": "migrate" if allow_migration else "refuse", "schema_supported": True,
            "would_migrate": True}


# --------------------------------------------------------------------------------------------
# DB path resolution (2.7)
# --------------------------------------------------------------------------------------------
DEFAULT_DB = "ai-memory.db"


def config_path(home):
    return os.path.join(home, ".config", "ai-memory", "config.toml")


def resolve_db_path(db_flag, env_db, config_db, cwd, home, tilde_expands_config):
    """The DB file the binary will open, as ``(path, origin)``, following 2.7 exactly.

    ``--db``/``AI_MEMORY_DB`` win unless they are the literal ``ai-memory.db`` (no tilde
    expansion); then the config's top-level ``db`` (tilde-expanded by v0.7.0 only); then
    ``ai-memory.db`` in the CWD. Relative paths are resolved against ``cwd``.
    """
    given = db_flag if db_flag is not None else env_db
    origin = "db option" if db_flag is not None else "AI_MEMORY_DB"
    if given is not None and given != DEFAULT_DB:
        path = given
    elif config_db:
        origin = "config db"
        path = config_db
        if tilde_expands_config and (path == "~" or path.startswith("~/")):
            path = home + path[1:]
    else:
        origin = "default (CWD)"
        path = DEFAULT_DB
    if not os.path.isabs(path):
        path = os.path.join(cwd, path)
    return os.path.normpath(path), origin


def looks_secret(name):
    """Environment names whose values must never be echoed."""
    upper = name.upper()
    return any(w in upper for w in ("KEY", "SECRET", "TOKEN", "PASS", "PASSPHRASE", "PASSWORD", "CREDENTIAL"))
