"""Emulation of ``toml::to_string_pretty`` from the Rust ``toml`` crate 0.8 (toml_edit 0.22).

What ``ai-memory config migrate`` writes (facts §1.7) is ``toml::to_string_pretty(&Value)`` with
BTreeMap tables, so:

* keys are sorted (byte order == code-point order) at every level;
* a table's scalar/array/inline values come first, then its sub-tables depth-first in key order;
* a non-empty table with no values of its own is *implicit*: no ``[header]`` line is printed,
  only its children's headers (``[llm.auto_tag]`` without ``[llm]`` when ``[llm]`` had only the
  sub-table); an empty table keeps its header (``[ttl]``);
* an array whose elements are all tables (at table level) becomes ``[[array.of.tables]]``;
* every header but the first one of the document is preceded by a blank line;
* arrays with 0 or 1 element are printed inline (``[]``, ``[1]``); longer arrays are multi-line
  with each element on its own line prefixed by 4 spaces and a trailing comma;
* inline tables inside arrays print as ``{ a = 1, b = 2 }`` (``{}`` when empty);
* strings: a string containing a backslash is written as a literal string (``'...'``, or
  ``'''...'''`` when it contains ``'`` or a newline) when that is representable, otherwise as a
  basic string with ``\\b \\t \\n \\f \\r \\" \\\\`` and ``\\uXXXX`` escapes (multi-line ``\"\"\"``
  form when the string contains a newline);
* floats print like Rust's ``Display`` (never an exponent, integral values get ``.0``,
  ``inf``/``-inf``/``nan``/``-nan``/``-0.0``); ints in decimal; bools ``true``/``false``;
  dates/times RFC 3339 with ``T`` and ``Z`` for UTC.

Exact bytes of the real binary are UNCONFIRMED (facts §1.7); tests compare parsed documents.  The
output is guaranteed to be parsed back by ``tomllib`` into the same document.
"""
import datetime
import decimal
import math

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class TomlWriteError(ValueError):
    pass


def _sorted_items(table):
    # BTreeMap<String, _> order: Rust compares UTF-8 bytes, which equals code-point order.
    return sorted(table.items(), key=lambda kv: kv[0])


def _is_table(value):
    return isinstance(value, dict)


def _is_array_of_tables(value):
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, dict) for v in value)


def key_repr(key):
    if key and all(c in _BARE_KEY_CHARS for c in key):
        return key
    return _basic_string(key, multiline=False)


def _infer_style(value):
    """toml_edit ``infer_style``: returns (multiline, literal)."""
    multiline = False
    max_found_singles = 0
    found_singles = 0
    prefer_literal = False
    can_be_pretty = True
    for ch in value:
        if can_be_pretty:
            if ch == "'":
                found_singles += 1
                if found_singles >= 3:
                    can_be_pretty = False
            else:
                if found_singles > max_found_singles:
                    max_found_singles = found_singles
                found_singles = 0
            if ch == "\t":
                pass
            elif ch == "\\":
                prefer_literal = True
            elif ch == "\n":
                multiline = True
            elif ord(ch) <= 0x1F:
                can_be_pretty = False
        else:
            if ch == "\n":
                multiline = True
    if found_singles > 0 and value.endswith("'"):
        can_be_pretty = False
    if not prefer_literal:
        can_be_pretty = False
    if not can_be_pretty:
        return multiline, False, False
    if found_singles > max_found_singles:
        max_found_singles = found_singles
    triple_oneline = (not multiline) and max_found_singles >= 1
    return multiline, True, triple_oneline


def _basic_string(value, multiline):
    out = ['"""\n' if multiline else '"']
    for ch in value:
        code = ord(ch)
        if ch == "\b":
            out.append("\\b")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\n" if multiline else "\\n")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\r":
            out.append("\\r")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code <= 0x1F or code == 0x7F:
            out.append("\\u%04X" % code)
        else:
            out.append(ch)
    out.append('"""' if multiline else '"')
    return "".join(out)


def string_repr(value):
    multiline, literal, triple_oneline = _infer_style(value)
    if literal:
        if multiline:
            return "'''\n" + value + "'''"
        if triple_oneline:
            return "'''" + value + "'''"
        return "'" + value + "'"
    return _basic_string(value, multiline)


def float_repr(value):
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    # Rust Display: shortest round-trip digits, never exponent notation.
    text = format(decimal.Decimal(repr(value)), "f")
    if value % 1.0 == 0.0:
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text + ".0"
    return text


def _offset_repr(tzinfo, dt):
    offset = tzinfo.utcoffset(dt)
    if offset is None:
        return ""
    total = int(offset.total_seconds()) // 60
    if total == 0:
        return "Z"
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return "%s%02d:%02d" % (sign, total // 60, total % 60)


def _time_repr(t):
    text = "%02d:%02d:%02d" % (t.hour, t.minute, t.second)
    if t.microsecond:
        frac = ("%06d" % t.microsecond).rstrip("0")
        text += "." + frac
    return text


def value_repr(value):
    """Render one value (never a table at table level; inline tables are handled here)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2 ** 63) <= value < 2 ** 63:
            raise TomlWriteError("integer out of i64 range: %d" % value)
        return str(value)
    if isinstance(value, float):
        return float_repr(value)
    if isinstance(value, str):
        return string_repr(value)
    if isinstance(value, datetime.datetime):
        text = "%04d-%02d-%02dT%s" % (value.year, value.month, value.day, _time_repr(value))
        if value.tzinfo is not None:
            text += _offset_repr(value.tzinfo, value)
        return text
    if isinstance(value, datetime.date):
        return "%04d-%02d-%02d" % (value.year, value.month, value.day)
    if isinstance(value, datetime.time):
        return _time_repr(value)
    if isinstance(value, (list, tuple)):
        return _array_repr(list(value))
    if isinstance(value, dict):
        return _inline_table_repr(value)
    raise TomlWriteError("unsupported TOML value type: %s" % type(value).__name__)


def _array_repr(values):
    if len(values) <= 1:
        return "[" + "".join(value_repr(v) for v in values) + "]"
    parts = []
    for i, v in enumerate(values):
        if i:
            parts.append(",")
        parts.append("\n    " + value_repr(v))
    return "[" + "".join(parts) + ",\n]"


def _inline_table_repr(table):
    if not table:
        return "{}"
    items = ["%s = %s" % (key_repr(k), value_repr(v)) for k, v in _sorted_items(table)]
    return "{ " + ", ".join(items) + " }"


def _collect(table, path, is_array, out):
    """Depth-first (path, table, is_array_of_tables) list, like toml_edit's visit_nested_tables."""
    out.append((path, table, is_array))
    for key, value in _sorted_items(table):
        if _is_table(value):
            _collect(value, path + [key], False, out)
        elif _is_array_of_tables(value):
            for element in value:
                _collect(element, path + [key], True, out)


def to_string_pretty(document):
    """Serialise a ``dict`` (as produced by ``tomllib``) like ``toml::to_string_pretty``."""
    if not isinstance(document, dict):
        raise TomlWriteError("the TOML document root must be a table")
    tables = []
    _collect(document, [], False, tables)
    lines = []
    first_table = True
    for path, table, is_array in tables:
        values = [(k, v) for k, v in _sorted_items(table)
                  if not _is_table(v) and not _is_array_of_tables(v)]
        header_key = ".".join(key_repr(k) for k in path)
        if not path:
            if values:
                first_table = False
        elif is_array:
            prefix = "" if first_table else "\n"
            first_table = False
            lines.append(prefix + "[[" + header_key + "]]\n")
        else:
            # implicit (non-empty) tables without values of their own get no header
            implicit = len(table) > 0
            if not (implicit and not values):
                prefix = "" if first_table else "\n"
                first_table = False
                lines.append(prefix + "[" + header_key + "]\n")
        for key, value in values:
            lines.append("%s = %s\n" % (key_repr(key), value_repr(value)))
    return "".join(lines)
