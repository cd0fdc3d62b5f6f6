# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic behind ``aimem.fleet.aimem_permissions``: ``[[governance.policy]]`` -> ``[[permissions.rules]]``.

Pure Python (Python 3.8+), no Ansible import. A TOML *reader* is needed: ``tomllib`` (3.11+) or,
on older Pythons, ``tomlkit``; the module guards the import.

Upstream (``ai-memory governance migrate-to-permissions --config-out <same file>``, facts 5.1)
appends the rendered block on every run (not idempotent), copies any decision through verbatim
(a legacy ``"pending"`` makes the whole config fail to parse, i.e. a silent fall-back to
defaults) and produces invalid TOML next to an inline ``permissions.rules = [...]``. This code
translates exactly like upstream:

* ``namespace_pattern`` <- ``scope`` or ``"*"``
* ``op`` <- ``action`` or ``"*"``
* ``agent_pattern`` <- ``role``, else ``agent_id``, else ``"*"``
* ``decision`` <- ``decision`` or ``"ask"``

but it only adds rules whose four fields are not already present, rejects decisions other than
``allow``/``deny``/``ask`` before anything is written, and edits the text surgically: the new
``[[permissions.rules]]`` blocks go right after the last existing rule (or after the
``[permissions]`` table, or at the end of the file), so every other byte - comments, ordering,
formatting - stays as it was. The result is re-parsed and compared with the expected data
before it may be written.
"""

from __future__ import absolute_import, division, print_function

import json
import re

__metaclass__ = type

try:
    import tomllib as _toml_reader  # Python 3.11+
    TOML_READER = "tomllib"
except ImportError:
    try:
        import tomlkit as _toml_reader
        TOML_READER = "tomlkit"
    except ImportError:
        _toml_reader = None
        TOML_READER = None

VALID_DECISIONS = ("allow", "deny", "ask")
VALID_MODES = ("enforce", "advisory", "off")
RULE_FIELDS = ("namespace_pattern", "op", "agent_pattern", "decision")
RULES_KEY = ("permissions", "rules")
MARKER = "# --- migrated from [governance] by aimem.fleet.aimem_permissions (facts 5.1) ---"


class PermissionsError(Exception):
    def __init__(self, msg, hint=None):
        super(PermissionsError, self).__init__(msg)
        self.hint = hint


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _plain(value):
    """tomlkit items -> plain Python (tomllib output passes through)."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    if isinstance(value, dict):
        return dict((k, _plain(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_toml(text, path="config.toml"):
    if _toml_reader is None:
        raise PermissionsError("no TOML reader available (need Python 3.11+ or tomlkit)")
    try:
        if TOML_READER == "tomllib":
            return _toml_reader.loads(text)
        return _plain(_toml_reader.parse(text))
    except Exception as e:  # tomllib.TOMLDecodeError / tomlkit.exceptions.ParseError
        raise PermissionsError("%s is not valid TOML: %s" % (path, e),
                               hint="fix the file (ai-memory itself would ignore it and run on defaults)")


def get_policies(data, path):
    gov = data.get("governance")
    if gov is None:
        return []
    if not isinstance(gov, dict):
        raise PermissionsError("`governance` in %s is not a table" % path,
                               hint="make [governance] a table in %s (or remove it), then re-run" % path)
    pol = gov.get("policy", [])
    if isinstance(pol, dict):
        pol = [pol]
    if not isinstance(pol, list):
        raise PermissionsError("`governance.policy` in %s is not an array of tables" % path,
                               hint="write each policy as a [[governance.policy]] table in %s, then re-run" % path)
    for i, p in enumerate(pol):
        if not isinstance(p, dict):
            raise PermissionsError("[[governance.policy]] #%d in %s is not a table" % (i + 1, path),
                                   hint="write each policy as a [[governance.policy]] table in %s, then re-run"
                                        % path)
    return pol


def get_permissions(data, path):
    perm = data.get("permissions")
    if perm is None:
        return {}
    if not isinstance(perm, dict):
        raise PermissionsError("`permissions` in %s is not a table" % path,
                               hint="make [permissions] a table in %s, then re-run" % path)
    return perm


def existing_rules(perm, path):
    rules = perm.get("rules", [])
    if not isinstance(rules, list):
        raise PermissionsError("`permissions.rules` in %s is not an array" % path,
                               hint="write each rule as a [[permissions.rules]] table in %s, then re-run" % path)
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            raise PermissionsError("permissions.rules #%d in %s is not a table" % (i + 1, path),
                                   hint="write each rule as a [[permissions.rules]] table in %s, then re-run"
                                        % path)
    return rules


# --------------------------------------------------------------------------------------------
# Translation (facts 5.1) and validation
# --------------------------------------------------------------------------------------------
def _field(policy, name, index, path):
    val = policy.get(name)
    if val is not None and not isinstance(val, str):
        raise PermissionsError("[[governance.policy]] #%d in %s: `%s` is %r, expected a string"
                               % (index + 1, path, name, val),
                               hint="quote that value (or remove the key) in %s, then re-run" % path)
    return val


def translate_policy(policy, index=0, path="config.toml"):
    scope = _field(policy, "scope", index, path)
    action = _field(policy, "action", index, path)
    role = _field(policy, "role", index, path)
    agent_id = _field(policy, "agent_id", index, path)
    decision = _field(policy, "decision", index, path)
    return {
        "namespace_pattern": scope if scope is not None else "*",
        "op": action if action is not None else "*",
        "agent_pattern": role if role is not None else (agent_id if agent_id is not None else "*"),
        "decision": decision if decision is not None else "ask",
    }


def rule_key(rule):
    return tuple(rule.get(f) for f in RULE_FIELDS)


def validate(policies, translated, rules, perm, mode, path):
    """Every reason the file cannot be turned into a valid v0.7.0 permissions config."""
    errors = []
    for i, (pol, rule) in enumerate(zip(policies, translated)):
        if rule["decision"] not in VALID_DECISIONS:
            errors.append("[[governance.policy]] #%d in %s has decision %r (scope=%r, action=%r); "
                          "[[permissions.rules]] accept only allow/deny/ask (lowercase), anything else makes "
                          "ai-memory reject the whole config - change that policy's decision to allow, deny or ask"
                          % (i + 1, path, pol.get("decision"), pol.get("scope"), pol.get("action")))
    for i, r in enumerate(rules):
        if r.get("decision") not in VALID_DECISIONS:
            errors.append("existing [[permissions.rules]] #%d in %s has decision %r; only allow/deny/ask are valid - "
                          "fix it" % (i + 1, path, r.get("decision")))
    cur_mode = perm.get("mode")
    if mode is None and cur_mode is not None and cur_mode not in VALID_MODES:
        errors.append("[permissions].mode in %s is %r; only enforce/advisory/off (lowercase) are valid - fix it or "
                      "set the module's `mode`" % (path, cur_mode))
    if mode is not None and mode not in VALID_MODES:
        errors.append("mode %r is not one of enforce/advisory/off" % (mode,))
    return errors


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def toml_string(s):
    """TOML basic string with ``\\ \" \n \r \t`` escaped like upstream (other controls as \\uXXXX)."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render_rule(rule):
    lines = ["[[permissions.rules]]"]
    for f in RULE_FIELDS:
        lines.append("%s = %s" % (f, toml_string(rule[f])))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# A small TOML structure scanner: table headers and where each table's content ends
# --------------------------------------------------------------------------------------------
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(s):
    """``a."b c".'d'`` -> ("a", "b c", "d")."""
    parts = []
    i = 0
    n = len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            raise ValueError("empty key")
        if s[i] == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            parts.append(json.loads(s[i:j + 1]))
            i = j + 1
        elif s[i] == "'":
            j = s.index("'", i + 1)
            parts.append(s[i + 1:j])
            i = j + 1
        else:
            m = _BARE.match(s, i)
            if not m:
                raise ValueError("bad key %r" % s)
            parts.append(m.group(0))
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            return tuple(parts)
        if s[i] != ".":
            raise ValueError("bad key %r" % s)
        i += 1


def scan_headers(text):
    """Table headers of ``text`` in order.

    Each is a dict ``{key, aot, start (offset of the '['), line_start, content_end}`` where
    ``content_end`` is the offset just after the last significant character (not whitespace,
    not a comment) that belongs to this table, i.e. before the next header. Strings, multi-line
    strings, comments and bracketed values are skipped, so ``[`` inside them is never a header.
    Also returns ``root_content_end`` for the top-level (before the first header).
    """
    headers = []
    i = 0
    n = len(text)
    depth = 0
    line_start = 0
    at_line_start = True
    last_sig = 0
    root_end = None

    def close_previous(end):
        if headers:
            headers[-1]["content_end"] = end

    while i < n:
        c = text[i]
        if c == "\n":
            if depth == 0:
                at_line_start = True
            line_start = i + 1
            i += 1
            continue
        if c in " \t\r":
            i += 1
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j == -1 else j
            continue
        if c == "[" and at_line_start and depth == 0:
            if not headers:
                root_end = last_sig
            else:
                close_previous(last_sig)
            aot = text.startswith("[[", i)
            j = i + (2 if aot else 1)
            # find the closing bracket, skipping quoted key parts
            k = j
            while k < n and text[k] != "]" and text[k] != "\n":
                if text[k] == '"':
                    k += 1
                    while k < n and text[k] != '"':
                        k += 2 if text[k] == "\\" else 1
                elif text[k] == "'":
                    k = text.index("'", k + 1)
                k += 1
            if k >= n or text[k] != "]":
                raise PermissionsError("unterminated table header at offset %d" % i)
            key = _parse_key(text[j:k])
            end = k + (2 if aot else 1)
            headers.append({"key": key, "aot": aot, "start": i, "line_start": line_start,
                            "content_end": end})
            last_sig = end
            i = end
            at_line_start = False
            continue
        at_line_start = False
        if text.startswith('"""', i) or text.startswith("'''", i):
            q = text[i:i + 3]
            j = i + 3
            while True:
                if q == '"""' and j < n and text[j] == "\\":
                    j += 2
                    continue
                if j >= n:
                    raise PermissionsError("unterminated multi-line string at offset %d" % i)
                if text.startswith(q, j):
                    j += 3
                    while j < n and text[j] == q[0]:  # up to two extra quotes belong to the content
                        j += 1
                    break
                j += 1
            i = j
            last_sig = i
            continue
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if (c == '"' and text[j] == "\\") else 1
            i = j + 1
            last_sig = i
            continue
        if c in "[{":
            depth += 1
        elif c in "]}" and depth > 0:
            depth -= 1
        i += 1
        last_sig = i
    if headers:
        close_previous(last_sig)
    else:
        root_end = last_sig
    return headers, root_end


def _line_end(text, offset):
    """Offset just after the newline that ends the line containing ``offset - 1``."""
    if offset <= 0:
        return 0
    j = text.find("\n", offset)
    return len(text) if j == -1 else j + 1


# --------------------------------------------------------------------------------------------
# Edits
# --------------------------------------------------------------------------------------------
_MODE_LINE = re.compile(r"""^([ \t]*(?:mode|"mode"|'mode')[ \t]*=[ \t]*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*')(.*)$""",
                        re.M)


def _set_mode(text, mode, path):
    headers, _root = scan_headers(text)
    perm_hdr = [h for h in headers if h["key"] == ("permissions",) and not h["aot"]]
    if perm_hdr:
        h = perm_hdr[0]
        body_start = _line_end(text, h["start"] + 1)
        if body_start == len(text) and not text.endswith("\n"):
            text += "\n"
            body_start = len(text)
        nxt = [x for x in headers if x["start"] > h["start"]]
        body_end = nxt[0]["line_start"] if nxt else len(text)
        body = text[body_start:body_end]
        m = _MODE_LINE.search(body)
        if m:
            a = body_start + m.start(2)
            b = body_start + m.end(2)
            return text[:a] + toml_string(mode) + text[b:]
        return text[:body_start] + "mode = %s\n" % toml_string(mode) + text[body_start:]
    sub = [h for h in headers if h["key"][:1] == ("permissions",)]
    if sub:
        at = sub[0]["line_start"]
        return text[:at] + "[permissions]\nmode = %s\n\n" % toml_string(mode) + text[at:]
    prefix = text if (not text or text.endswith("\n")) else text + "\n"
    sep = "\n" if prefix.strip() else ""
    return prefix + sep + "[permissions]\nmode = %s\n" % toml_string(mode)


def _insert_rules(text, rules, path):
    headers, _root = scan_headers(text)
    deeper = [h for h in headers if h["key"][:2] == RULES_KEY and len(h["key"]) > 2]
    if deeper:
        raise PermissionsError("%s has sub-tables of permissions.rules (%s); new rules cannot be added safely"
                               % (path, ".".join(deeper[0]["key"])),
                               hint="move those keys into inline values of their rule")
    block = "\n".join(render_rule(r) for r in rules)
    aots = [h for h in headers if h["key"] == RULES_KEY and h["aot"]]
    perm_hdr = [h for h in headers if h["key"] == ("permissions",) and not h["aot"]]
    anchor = aots[-1] if aots else (perm_hdr[0] if perm_hdr else None)
    if anchor is not None:
        at = _line_end(text, anchor["content_end"])
        head = text[:at]
        if not head.endswith("\n"):
            head += "\n"
        tail = text[at:]
        if tail and not tail.startswith("\n"):
            tail = "\n" + tail
        return head + "\n" + MARKER + "\n" + block + tail
    prefix = text if (not text or text.endswith("\n")) else text + "\n"
    sep = "\n" if prefix.strip() else ""
    return prefix + sep + MARKER + "\n" + block


def _without_permissions(data):
    return dict((k, v) for k, v in data.items() if k != "permissions")


def plan(text, mode=None, path="config.toml"):
    """Compute the new text. Returns a dict:

    ``{changed, new_text, added (rules), skipped (already present), policies, rules_before,
    rules_after, mode_before, mode_after}``. Raises ``PermissionsError`` (nothing to write) when
    the file cannot be migrated safely.
    """
    data = load_toml(text, path)
    policies = get_policies(data, path)
    perm = get_permissions(data, path)
    headers, _root = scan_headers(text)
    rules = existing_rules(perm, path)
    has_aot_headers = any(h["key"] == RULES_KEY and h["aot"] for h in headers)
    translated = [translate_policy(p, i, path) for i, p in enumerate(policies)]
    errors = validate(policies, translated, rules, perm, mode, path)
    if errors:
        raise PermissionsError("; ".join(errors))

    present = set(rule_key(r) for r in rules)
    added, skipped = [], []
    for r in translated:
        if rule_key(r) in present:
            skipped.append(r)
        else:
            present.add(rule_key(r))
            added.append(r)

    if added:
        if "rules" in perm and not has_aot_headers:
            raise PermissionsError(
                "%s defines permissions.rules as an inline array; appending [[permissions.rules]] tables "
                "would make it invalid TOML (upstream's migrate-to-permissions breaks it this way)" % path,
                hint="rewrite the inline array as [[permissions.rules]] tables, then re-run")
        if "permissions" in data and not any(h["key"][:1] == ("permissions",) for h in headers):
            raise PermissionsError(
                "%s defines `permissions` with dotted keys or an inline table; [[permissions.rules]] cannot be "
                "added to it" % path, hint="rewrite it as a [permissions] table, then re-run")

    new_text = text
    mode_before = perm.get("mode")
    if mode is not None and mode_before != mode:
        if "permissions" in data and not any(h["key"][:1] == ("permissions",) for h in headers):
            raise PermissionsError("%s defines `permissions` with dotted keys or an inline table; cannot set mode"
                                   % path, hint="rewrite it as a [permissions] table, then re-run")
        new_text = _set_mode(new_text, mode, path)
    if added:
        new_text = _insert_rules(new_text, added, path)

    # Post-condition: exactly the intended change, nothing else.
    new_data = load_toml(new_text, path)
    new_perm = get_permissions(new_data, path)
    expected_mode = mode if mode is not None else mode_before
    ok = (_without_permissions(new_data) == _without_permissions(data)
          and [rule_key(r) for r in existing_rules(new_perm, path)] == [rule_key(r) for r in rules] + [rule_key(r) for r in added]
          and new_perm.get("mode") == expected_mode
          and dict((k, v) for k, v in new_perm.items() if k not in ("rules", "mode"))
          == dict((k, v) for k, v in perm.items() if k not in ("rules", "mode")))
    if not ok:
        raise PermissionsError("the edit of %s did not produce the expected TOML (left untouched)" % path,
                               hint="report this file's layout as a bug; migrate its rules by hand")
    return {
        "changed": new_text != text,
        "new_text": new_text,
        "added": added,
        "skipped": skipped,
        "policies": len(policies),
        "rules_before": len(rules),
        "rules_after": len(rules) + len(added),
        "mode_before": mode_before,
        "mode_after": expected_mode,
    }
