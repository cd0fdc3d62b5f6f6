# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ai-memory ``config.toml`` v1 -> v2 migration, v0.7.0 load validation and ``~/.claude.json`` cleaning.

Pure logic: no Ansible import, no file writes (the module does I/O through ``fileops``). Runs on
Python 3.8+. ``tomlkit`` is imported guarded; callers check ``HAS_TOMLKIT``.

Upstream reference: ``ai-memory config migrate`` of release/v0.7.0 (``src/cli/commands/config.rs``).
The mapping, the section-creation conditions, the hard-coded reranker model and the idempotency rule
are upstream's. Deliberate differences (each keeps the effective settings the v1 file had under
v0.6.4):

* ``ollama_url`` / ``auto_tag_model`` without ``llm_model`` still produce ``[llm]`` (backend ollama);
  upstream drops them silently.
* A v1 file with ``ollama_url`` but no ``embed_url`` gets ``[embeddings].url = <ollama_url>`` (with
  ``backend = "ollama"``): under v0.6.4 ``ollama_url`` was the embeddings-URL fallback, after an
  upstream migration embeddings would point at ``localhost:11434``.
* Where the target section already exists upstream keeps the section and drops the legacy key. We do
  the same but report every dropped key with the reason (and a warning when a value is really lost).
* Comments, blank lines and key order are kept (tomlkit round-trip, in-place edits).
"""

from __future__ import absolute_import, division, print_function

import copy
import json
import os
import re
import stat
import traceback
from collections import OrderedDict

__metaclass__ = type

try:
    import tomlkit
    from tomlkit.container import Container as _TomlContainer
    from tomlkit.exceptions import ParseError as _TomlParseError
    HAS_TOMLKIT = True
    TOMLKIT_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised on hosts without python3-tomlkit
    tomlkit = None
    _TomlContainer = None
    _TomlParseError = None
    HAS_TOMLKIT = False
    TOMLKIT_IMPORT_ERROR = traceback.format_exc()

#: ``LEGACY_FIELDS`` of upstream, in upstream's order.
LEGACY_FIELDS = (
    "llm_model",
    "ollama_url",
    "embed_url",
    "embedding_model",
    "cross_encoder",
    "default_namespace",
    "archive_on_gc",
    "archive_max_days",
    "max_memory_mb",
    "auto_tag_model",
)
STORAGE_KEYS = ("default_namespace", "archive_on_gc", "archive_max_days", "max_memory_mb")
BACKEND_OLLAMA = "ollama"
RERANKER_MODEL = "ms-marco-MiniLM-L-6-v2"
TARGET_SCHEMA_VERSION = 2
PERMISSION_MODES = ("enforce", "advisory", "off")
RULE_DECISIONS = ("allow", "deny", "ask")
MASK = "********"
KEY_FILE_NAMES = {"llm": "llm-api-key", "llm.auto_tag": "llm-auto-tag-api-key"}

_SECRET_NAMES = ("api_key", "secret", "token", "password", "passphrase")


class ConfigMigrateError(Exception):
    """A problem the operator must fix; ``hint`` says how."""

    def __init__(self, msg, hint=None):
        super(ConfigMigrateError, self).__init__(msg)
        self.hint = hint


class TomlSyntaxError(ConfigMigrateError):
    """The file is not valid TOML. ``line`` / ``col`` come from tomlkit (1-based line)."""

    def __init__(self, msg, line=None, col=None, hint=None):
        super(TomlSyntaxError, self).__init__(msg, hint=hint)
        self.line = line
        self.col = col


class ClaudeJsonError(ConfigMigrateError):
    """``~/.claude.json`` is not valid JSON or has an unexpected shape."""


# --------------------------------------------------------------------------------------------
# TOML helpers
# --------------------------------------------------------------------------------------------

def _require_tomlkit():
    if not HAS_TOMLKIT:
        raise ConfigMigrateError("the Python library tomlkit is required on the target",
                                 hint="install python3-tomlkit (apt) or `pip install tomlkit`")


def parse_toml(text, path="config.toml"):
    """Parse ``text`` with tomlkit; raise ``TomlSyntaxError`` naming ``path`` and line/column."""
    _require_tomlkit()
    try:
        return tomlkit.parse(text)
    except _TomlParseError as e:
        line = getattr(e, "line", None)
        col = getattr(e, "col", None)
        raise TomlSyntaxError(
            "%s is not valid TOML: %s" % (path, e), line=line, col=col,
            hint="fix the syntax at line %s, column %s of %s (ai-memory itself would silently fall "
                 "back to its default config)" % (line, col, path))
    except Exception as e:  # tomlkit raises a few non-ParseError exceptions on odd input
        raise TomlSyntaxError("%s is not valid TOML: %s" % (path, e),
                              hint="fix the syntax of %s" % path)


def plain(value):
    """Plain Python value of a tomlkit item (or of anything else)."""
    unwrap = getattr(value, "unwrap", None)
    if unwrap is not None:
        return unwrap()
    return value


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_table(value):
    return isinstance(value, dict)


def schema_version_of(doc):
    """The top-level ``schema_version`` as found (plain value) or None when absent."""
    if "schema_version" not in doc:
        return None
    return plain(doc["schema_version"])


def legacy_keys_present(doc):
    """The legacy v1 keys present at top level, in upstream's order."""
    return [k for k in LEGACY_FIELDS if k in doc]


def is_already_v2(doc):
    """Upstream's idempotency rule: integer ``schema_version >= 2`` and no legacy key at top level."""
    sv = schema_version_of(doc)
    return _is_int(sv) and sv >= TARGET_SCHEMA_VERSION and not legacy_keys_present(doc)


def _lookup(doc, dotted):
    """Plain value at ``a.b.c`` or a sentinel ``_MISSING``."""
    cur = doc
    for part in dotted.split("."):
        if not _is_table(cur) or part not in cur:
            return _MISSING
        cur = cur[part]
    return plain(cur)


class _Missing(object):
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()


def _fmt(value):
    """Short TOML-ish rendering of a non-secret value for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _copy_item(doc, key):
    """A detached copy of the top-level item ``key`` (keeps type, string style, trailing comment)."""
    return copy.deepcopy(doc.item(key))


class MigrationPlan(object):
    """Result of ``plan_migration``.

    ``doc``: the (possibly) edited tomlkit document; ``text``: its rendering; ``changed``: whether a
    migration is needed; ``moved_keys``: legacy key -> list of dotted new locations;
    ``dropped_keys``: legacy key -> reason; ``warnings``: human-readable strings.
    """

    def __init__(self, doc, original_text):
        self.doc = doc
        self.original_text = original_text
        self.changed = False
        self.already_v2 = False
        self.schema_version_before = None
        self.schema_version_after = None
        self.moved_keys = OrderedDict()
        self.dropped_keys = OrderedDict()
        self.warnings = []

    @property
    def text(self):
        if not self.changed:
            return self.original_text
        return tomlkit.dumps(self.doc)

    def _moved(self, key, location):
        self.moved_keys.setdefault(key, []).append(location)

    def _dropped(self, key, reason):
        if key in self.dropped_keys:
            self.dropped_keys[key] = self.dropped_keys[key] + "; " + reason
        else:
            self.dropped_keys[key] = reason


def _drop_role(plan, doc, key, value, section, target, via=""):
    """Record that legacy ``key`` is not written to ``section.target`` because ``[section]`` exists."""
    existing = _lookup(doc, "%s.%s" % (section, target))
    where = "[%s].%s" % (section, target) if "." not in target else "[%s.%s].%s" % (
        (section,) + tuple(target.rsplit(".", 1)))
    if existing is not _MISSING and existing == value:
        plan._dropped(key, "[%s] already exists and already sets %s to the same value%s; nothing is "
                           "lost" % (section, where, via))
        return
    if existing is _MISSING:
        effect = "v0.7.0 uses its built-in default for %s" % where
    else:
        effect = "v0.7.0 uses %s = %s" % (where, _fmt(existing))
    reason = ("[%s] already exists, so (like upstream) the section wins and the legacy value %s%s is "
              "not merged; %s" % (section, _fmt(value), via, effect))
    plan._dropped(key, reason)
    plan.warnings.append(
        "%s: legacy `%s` dropped: %s. Under v0.6.4 (which ignores [%s]) it was in effect; set %s "
        "yourself if you still want it." % (plan_path(plan), key, reason, section, where))


def plan_path(plan):
    return getattr(plan, "path", "config.toml")


def plan_migration(text, path="config.toml"):
    """Plan the v1 -> v2 migration of ``text``.

    Returns a ``MigrationPlan``. Raises ``TomlSyntaxError`` for invalid TOML. The returned document is
    edited in place only when a migration is needed (``plan.changed``).
    """
    doc = parse_toml(text, path)
    plan = MigrationPlan(doc, text)
    plan.path = path
    plan.schema_version_before = schema_version_of(doc)
    if is_already_v2(doc):
        plan.already_v2 = True
        plan.schema_version_after = plan.schema_version_before
        return plan

    plan.changed = True
    present = legacy_keys_present(doc)
    values = OrderedDict((k, plain(doc[k])) for k in present)
    items = OrderedDict((k, _copy_item(doc, k)) for k in present)
    for k in present:
        del doc[k]

    before = plan.schema_version_before
    if before is not None and not _is_int(before):
        plan.warnings.append(
            "%s: schema_version was %s (%s), which ai-memory does not count as v2; it is rewritten "
            "as the integer 2." % (path, _fmt(before), type(before).__name__))
    elif _is_int(before) and before > TARGET_SCHEMA_VERSION:
        plan.warnings.append(
            "%s: schema_version was %d but legacy v1 keys were present; like upstream it is set to 2."
            % (path, before))
    if "schema_version" in doc:
        doc["schema_version"] = TARGET_SCHEMA_VERSION
    else:
        doc.add("schema_version", TARGET_SCHEMA_VERSION)
    plan.schema_version_after = TARGET_SCHEMA_VERSION

    # [llm] / [llm.auto_tag] -------------------------------------------------------------------
    llm_keys = [k for k in ("llm_model", "ollama_url", "auto_tag_model") if k in values]
    if llm_keys:
        if "llm" not in doc:
            llm = tomlkit.table()
            llm.add("backend", BACKEND_OLLAMA)
            if "llm_model" in values:
                llm.add("model", items["llm_model"])
                plan._moved("llm_model", "llm.model")
            if "ollama_url" in values:
                llm.add("base_url", copy.deepcopy(items["ollama_url"]))
                plan._moved("ollama_url", "llm.base_url")
            if "auto_tag_model" in values:
                sub = tomlkit.table()
                sub.add("model", items["auto_tag_model"])
                llm.add("auto_tag", sub)
                plan._moved("auto_tag_model", "llm.auto_tag.model")
            doc.add("llm", llm)
        else:
            for key, target in (("llm_model", "model"), ("ollama_url", "base_url"),
                                ("auto_tag_model", "auto_tag.model")):
                if key in values:
                    via = " (its role as the LLM base URL)" if key == "ollama_url" else ""
                    _drop_role(plan, doc, key, values[key], "llm", target, via)

    # [embeddings] -----------------------------------------------------------------------------
    url_src = "embed_url" if "embed_url" in values else ("ollama_url" if "ollama_url" in values else None)
    if url_src or "embedding_model" in values:
        if "embeddings" not in doc:
            emb = tomlkit.table()
            emb.add("backend", BACKEND_OLLAMA)
            if url_src:
                emb.add("url", copy.deepcopy(items[url_src]))
                plan._moved(url_src, "embeddings.url")
            if "embedding_model" in values:
                emb.add("model", items["embedding_model"])
                plan._moved("embedding_model", "embeddings.model")
            doc.add("embeddings", emb)
        else:
            if url_src:
                via = (" (its role as the embeddings-URL fallback)" if url_src == "ollama_url" else "")
                _drop_role(plan, doc, url_src, values[url_src], "embeddings", "url", via)
            if "embedding_model" in values:
                _drop_role(plan, doc, "embedding_model", values["embedding_model"], "embeddings", "model")

    # [reranker] -------------------------------------------------------------------------------
    if "cross_encoder" in values:
        if "reranker" not in doc:
            rr = tomlkit.table()
            rr.add("enabled", items["cross_encoder"])
            rr.add("model", RERANKER_MODEL)
            doc.add("reranker", rr)
            plan._moved("cross_encoder", "reranker.enabled")
        else:
            _drop_role(plan, doc, "cross_encoder", values["cross_encoder"], "reranker", "enabled")

    # [storage] --------------------------------------------------------------------------------
    storage_keys = [k for k in STORAGE_KEYS if k in values]
    if storage_keys:
        if "storage" not in doc:
            st = tomlkit.table()
            for k in storage_keys:
                st.add(k, items[k])
                plan._moved(k, "storage.%s" % k)
            doc.add("storage", st)
        else:
            for k in storage_keys:
                _drop_role(plan, doc, k, values[k], "storage", k)

    # Round-trip guard: what we render must parse back to what we built.
    rendered = tomlkit.dumps(doc)
    try:
        reparsed = tomlkit.parse(rendered)
    except Exception as e:  # pragma: no cover - a tomlkit bug; never write such a file
        raise ConfigMigrateError("internal error: the migrated %s does not parse (%s)" % (path, e),
                                 hint="report this with the (redacted) original file")
    if plain(reparsed) != plain(doc):  # pragma: no cover - same
        raise ConfigMigrateError("internal error: the migrated %s does not round-trip" % path,
                                 hint="report this with the (redacted) original file")
    return plan


# --------------------------------------------------------------------------------------------
# Inline api_key -> key file
# --------------------------------------------------------------------------------------------

class KeyFile(object):
    """A key file to write: ``path``, ``section``, and the secret ``content`` (never in repr)."""

    __slots__ = ("section", "path", "content")

    def __init__(self, section, path, content):
        self.section = section
        self.path = path
        self.content = content

    def __repr__(self):
        return "KeyFile(section=%r, path=%r, content=<redacted>)" % (self.section, self.path)

    def public(self):
        return {"section": self.section, "path": self.path}


def _section(doc, dotted):
    cur = doc
    for part in dotted.split("."):
        if not _is_table(cur) or part not in cur:
            return None
        cur = cur[part]
    return cur if _is_table(cur) else None


def inline_key_sections(doc):
    """Sections (``llm``, ``llm.auto_tag``) that carry an inline ``api_key``."""
    return [s for s in ("llm", "llm.auto_tag")
            if _section(doc, s) is not None and "api_key" in _section(doc, s)]


def _rename_key(table, old, new, value):
    """Replace ``old`` by ``new = value`` keeping the position when tomlkit lets us."""
    container = getattr(table, "value", None)
    if _TomlContainer is not None and isinstance(container, _TomlContainer):
        try:
            container._replace(old, new, tomlkit.item(value))
            # Container._replace (tomlkit 0.11 and 0.13) only updates the body, not the dict view
            # that iteration / unwrap() use: without this sync plain(doc) still lacks ``new``, so
            # the v0.7.0 validation would run on a stale view of the file about to be written.
            for view in (container, table):
                if dict.__contains__(view, old):
                    dict.__delitem__(view, old)
                if not dict.__contains__(view, new):
                    dict.__setitem__(view, new, container[new])
            data = plain(table)
            if old not in data and data.get(new) == value:
                return
        except Exception:  # internal API changed: fall back to the public one
            pass
    if old in table:
        del table[old]
    table[new] = value


def plan_externalize(doc, key_dir, path="config.toml"):
    """Move inline ``[llm].api_key`` / ``[llm.auto_tag].api_key`` into key files.

    Edits ``doc`` in place (``api_key`` -> ``api_key_file = "<key_dir>/<name>"``) and returns the list
    of ``KeyFile`` to write. The secret only ever lives in ``KeyFile.content``.
    Raises ``ConfigMigrateError`` when the section also sets ``api_key_env`` or ``api_key_file``.
    """
    key_files = []
    for section in inline_key_sections(doc):
        tbl = _section(doc, section)
        secret = plain(tbl["api_key"])
        if not isinstance(secret, str) or not secret.strip():
            raise ConfigMigrateError(
                "%s: [%s].api_key is not a non-empty string" % (path, section),
                hint="remove [%s].api_key from %s and set api_key_env or api_key_file" % (section, path))
        for other in ("api_key_env", "api_key_file"):
            if other in tbl:
                raise ConfigMigrateError(
                    "%s: [%s] sets both an inline api_key and %s; cannot externalize the inline key "
                    "without creating a conflicting setting" % (path, section, other),
                    hint="decide which one is right, delete the other line from [%s] in %s, then re-run"
                         % (section, path))
        key_path = os.path.join(key_dir, KEY_FILE_NAMES[section])
        _rename_key(tbl, "api_key", "api_key_file", key_path)
        key_files.append(KeyFile(section, key_path, secret))
    return key_files


# --------------------------------------------------------------------------------------------
# Secrets masking
# --------------------------------------------------------------------------------------------

def is_secret_key(name):
    n = str(name).lower()
    if n.endswith("_file") or n.endswith("_env"):
        return False
    return n in _SECRET_NAMES or any(n.endswith("_" + s) for s in _SECRET_NAMES)


def _walk_secrets(value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            if is_secret_key(k) and isinstance(v, str) and v:
                out.append(v)
            else:
                _walk_secrets(v, out)
    elif isinstance(value, list):
        for v in value:
            _walk_secrets(v, out)


def secret_values(doc_or_text):
    """Secret-looking string values (``api_key``, ``*_token``...) of a TOML doc/text.

    Only for masking: register them as no_log values, never return them to the user.
    """
    if isinstance(doc_or_text, str):
        try:
            doc_or_text = parse_toml(doc_or_text)
        except ConfigMigrateError:
            return []
    out = []
    _walk_secrets(plain(doc_or_text), out)
    return out


def mask_text(text, secrets):
    """Replace every occurrence of each secret (raw and JSON/TOML-escaped) with ``MASK``."""
    for s in sorted(set(secrets), key=len, reverse=True):
        if not s:
            continue
        text = text.replace(s, MASK)
        escaped = json.dumps(s)[1:-1]
        if escaped != s:
            text = text.replace(escaped, MASK)
    return text


# --------------------------------------------------------------------------------------------
# v0.7.0 load validation
# --------------------------------------------------------------------------------------------

_STR = ("string", lambda v: isinstance(v, str))
_BOOL = ("boolean", lambda v: isinstance(v, bool))
_INT = ("integer", _is_int)

_SECTION_TYPES = OrderedDict([
    ("llm", OrderedDict([("backend", _STR), ("model", _STR), ("base_url", _STR),
                         ("api_key_env", _STR), ("api_key_file", _STR)])),
    ("llm.auto_tag", OrderedDict([("backend", _STR), ("model", _STR), ("base_url", _STR),
                                  ("api_key_env", _STR), ("api_key_file", _STR)])),
    ("embeddings", OrderedDict([("backend", _STR), ("url", _STR), ("model", _STR),
                                ("backfill_batch", _INT)])),
    ("reranker", OrderedDict([("enabled", _BOOL), ("model", _STR)])),
    ("storage", OrderedDict([("default_namespace", _STR), ("archive_on_gc", _BOOL),
                             ("archive_max_days", _INT), ("max_memory_mb", _INT)])),
])


def check_v2(doc, stat_fn=os.stat, home=None, allow_lax_key_file_perms=False):
    """Check ``doc`` the way ai-memory v0.7.0 loads it (§1.10).

    Returns ``(problems, warnings)``: a problem makes v0.7.0 reject the config (fall back to
    defaults) or fail to resolve the LLM key; warnings are worth telling the operator.
    ``stat_fn(path)`` returns an ``os.stat_result``-like object or raises ``OSError``.
    """
    problems = []
    warnings = []
    data = plain(doc)

    sv = data.get("schema_version")
    if sv is not None and not _is_int(sv):
        problems.append("schema_version must be an integer (found %s)" % type(sv).__name__)

    for dotted, types in _SECTION_TYPES.items():
        parts = dotted.split(".")
        cur = data
        missing = False
        for i, part in enumerate(parts):
            if part not in cur:
                missing = True
                break
            cur = cur[part]
            if not _is_table(cur):
                problems.append("[%s] must be a table, found a %s" % (".".join(parts[:i + 1]),
                                                                       type(cur).__name__))
                missing = True
                break
        if missing:
            continue
        for key, (tname, ok) in types.items():
            if key in cur and not ok(cur[key]):
                problems.append("[%s].%s must be a %s (found %s)" % (dotted, key, tname,
                                                                    type(cur[key]).__name__))
        if dotted == "embeddings" and _is_int(cur.get("backfill_batch")) and not (
                1 <= cur["backfill_batch"] <= 10000):
            problems.append("[embeddings].backfill_batch must be between 1 and 10000 (found %d)"
                            % cur["backfill_batch"])

    llm = data.get("llm") if _is_table(data.get("llm")) else None
    auto = llm.get("auto_tag") if llm is not None and _is_table(llm.get("auto_tag")) else None
    for section, tbl in (("llm", llm), ("llm.auto_tag", auto)):
        if tbl is None:
            continue
        if "api_key" in tbl:
            if section == "llm":
                problems.append(
                    "inline `api_key` in [llm] is forbidden by ai-memory v0.7.0: the whole config is "
                    "rejected and the default config is used. Use api_key_env or api_key_file "
                    "(inline_api_key=externalize does this for you)")
            else:
                problems.append(
                    "inline `api_key` in [llm.auto_tag] is not supported by ai-memory v0.7.0 (the "
                    "value is ignored) and keeps a plaintext secret in config.toml. Use api_key_env or "
                    "api_key_file (inline_api_key=externalize does this for you)")
        if "api_key_env" in tbl and "api_key_file" in tbl:
            problems.append("[%s].api_key_env and [%s].api_key_file are mutually exclusive: set "
                            "exactly one" % (section, section))
        kf = tbl.get("api_key_file")
        if isinstance(kf, str) and kf:
            _check_key_file(section, kf, stat_fn, home, allow_lax_key_file_perms, problems, warnings)

    perms = data.get("permissions")
    if perms is not None:
        if not _is_table(perms):
            problems.append("[permissions] must be a table")
        else:
            mode = perms.get("mode")
            if mode is not None and mode not in PERMISSION_MODES:
                problems.append(
                    "[permissions].mode = %s is not one of %s (lowercase only; any other value makes "
                    "ai-memory v0.7.0 reject the whole config)" % (_fmt(mode), "/".join(PERMISSION_MODES)))
            rules = perms.get("rules")
            if rules is not None:
                if not isinstance(rules, list):
                    problems.append("[permissions].rules must be an array of tables")
                else:
                    for i, rule in enumerate(rules):
                        if not _is_table(rule):
                            problems.append("[[permissions.rules]] #%d must be a table" % (i + 1))
                        elif "decision" in rule and rule["decision"] not in RULE_DECISIONS:
                            problems.append(
                                "[[permissions.rules]] #%d decision = %s is not one of %s (lowercase)"
                                % (i + 1, _fmt(rule["decision"]), "/".join(RULE_DECISIONS)))
    return problems, warnings


def _check_key_file(section, kf, stat_fn, home, allow_lax, problems, warnings):
    p = kf
    if p.startswith("~") and home:
        p = home + p[1:]
    if not os.path.isabs(p):
        warnings.append("[%s].api_key_file = %s is a relative path; it is resolved against the "
                        "daemon's working directory, so its permissions were not checked"
                        % (section, _fmt(kf)))
        return
    try:
        st = stat_fn(p)
    except OSError as e:
        warnings.append("[%s].api_key_file %s cannot be read (%s); ai-memory v0.7.0 will not find "
                        "its LLM key until it exists" % (section, p, getattr(e, "strerror", e) or e))
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 and not allow_lax:
        problems.append(
            "[%s].api_key_file = %s has lax permissions (mode = %04o; expected 0400 or stricter): "
            "ai-memory v0.7.0 refuses to read it. Run `chmod 0400 %s`" % (section, _fmt(kf), mode, p))


def validate_v2(doc, stat_fn=os.stat, home=None, allow_lax_key_file_perms=False):
    """Only the problems of ``check_v2`` (an empty list means v0.7.0 loads the file)."""
    return check_v2(doc, stat_fn=stat_fn, home=home,
                    allow_lax_key_file_perms=allow_lax_key_file_perms)[0]


# --------------------------------------------------------------------------------------------
# ~/.claude.json
# --------------------------------------------------------------------------------------------

def command_matches(command):
    """Upstream's match: a string that is ``ai-memory`` or ends with ``/ai-memory``."""
    return isinstance(command, str) and (command == "ai-memory" or command.endswith("/ai-memory"))


def detect_json_format(text):
    """Indent, separators, ASCII escaping and trailing newline of a JSON text."""
    body = text.strip()
    indent = None
    m = re.search(r"\n([ \t]+)\S", body)
    if m:
        ws = m.group(1)
        indent = "\t" if ws.startswith("\t") else len(ws)
    elif "\n" in body:
        indent = 0
    if indent is None:
        item_sep = ", " if re.search(r'[,](?= )', body) else ","
    else:
        item_sep = ","
    key_sep = ": " if re.search(r'":\s', body) or not re.search(r'":\S', body) else ":"
    has_non_ascii = any(ord(c) > 127 for c in text)
    ensure_ascii = (not has_non_ascii) and ("\\u" in text)
    return {
        "indent": indent,
        "separators": (item_sep, key_sep),
        "ensure_ascii": ensure_ascii,
        "trailing_newline": text.endswith("\n"),
    }


def parse_claude_json(text, path="~/.claude.json"):
    try:
        data = json.loads(text, object_pairs_hook=OrderedDict)
    except ValueError as e:
        line = getattr(e, "lineno", None)
        col = getattr(e, "colno", None)
        raise ClaudeJsonError("%s is not valid JSON: %s" % (path, e),
                              hint="fix the JSON at line %s, column %s of %s (or set "
                                   "clean_claude_json=false)" % (line, col, path))
    return data


def dump_json_like(data, fmt):
    out = json.dumps(data, indent=fmt["indent"], separators=fmt["separators"],
                     ensure_ascii=fmt["ensure_ascii"])
    if fmt["trailing_newline"]:
        out += "\n"
    return out


class ClaudeCleanPlan(object):
    """``changed``; ``text`` (new content); ``cleaned``: server name -> removed env var names."""

    def __init__(self, original_text):
        self.original_text = original_text
        self.text = original_text
        self.changed = False
        self.cleaned = OrderedDict()
        self.data = None
        self.fmt = None


def plan_clean_claude_json(text, path="~/.claude.json"):
    """Upstream's scope: top-level ``mcpServers`` entries whose ``command`` is ``ai-memory`` or ends
    with ``/ai-memory`` lose their whole ``env`` object. Key order and formatting are kept."""
    plan = ClaudeCleanPlan(text)
    if not text.strip():
        return plan
    data = parse_claude_json(text, path)
    plan.data = data
    plan.fmt = detect_json_format(text)
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        return plan
    for name, entry in servers.items():
        if isinstance(entry, dict) and command_matches(entry.get("command")) and "env" in entry:
            env = entry.pop("env")
            plan.cleaned[name] = list(env.keys()) if isinstance(env, dict) else []
    if plan.cleaned:
        plan.changed = True
        plan.text = dump_json_like(data, plan.fmt)
    return plan


_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
#: JSON objects whose every string value is masked (MCP server ``env`` and HTTP ``headers``).
_MASK_ALL_UNDER = ("env", "headers")


def _is_secret_json_key(name):
    """``is_secret_key`` for JSON's camelCase / dashed names (``primaryApiKey``, ``accessToken``,
    ``X-Api-Key``, ``Authorization``)."""
    snake = _CAMEL.sub(r"\1_\2", str(name)).replace("-", "_").lower()
    return is_secret_key(snake) or snake == "authorization"


def _mask_json(value, under_env=False):
    if isinstance(value, dict):
        out = OrderedDict()
        for k, v in value.items():
            if (under_env or _is_secret_json_key(k)) and isinstance(v, str):
                out[k] = MASK
            else:
                out[k] = _mask_json(v, under_env=(k in _MASK_ALL_UNDER))
        return out
    if isinstance(value, list):
        return [_mask_json(v) for v in value]
    return value


def masked_claude_json(text, fmt=None):
    """``text`` re-rendered with every ``env`` value and secret-looking value replaced by MASK."""
    if not text.strip():
        return text
    data = json.loads(text, object_pairs_hook=OrderedDict)
    return dump_json_like(_mask_json(data), fmt or detect_json_format(text))
