"""``ai-memory config migrate [--dry-run] [--also-clean-claude-json]`` (facts §1.1-§1.9).

Reproduces release/v0.7.0 ``src/cli/commands/config.rs`` *including its flaws* -- the collection's
own module is where they get fixed, the stand-in must show them:

* the only path is ``$HOME/.config/ai-memory/config.toml`` (no flag, no XDG, ``--db`` ignored);
* every message goes to stderr, stdout stays empty; exit codes 0/1/2/3/4 of the §1.4 table;
* already-v2 rule: top-level ``schema_version`` is a TOML *integer* >= 2 and none of the 10 legacy
  keys is present -> INFO + exit 0 (also with ``--dry-run``), nothing written, no claude.json work;
* the mapping drops values exactly like upstream (``ollama_url``/``auto_tag_model`` without
  ``llm_model``; any legacy key whose target section already exists);
* output via :func:`aimem_standin.tomlwrite.to_string_pretty` (alphabetical keys, comments lost);
* backup ``config.toml.bak.<UTC %Y%m%d-%H%M%S>`` written first with ``std::fs::write`` semantics
  (new file 0666 & ~umask; an existing backup of the same second is truncated and overwritten);
  then the live file is truncated and rewritten in place (not atomic; owner and mode kept);
* ``--also-clean-claude-json`` edits ``$HOME/.claude.json`` after a real migration only.
"""
import datetime
import decimal
import json
import math
import os

from aimem_standin import tomlwrite
from aimem_standin.common import ArgSpec, ExitCode, UsageError

try:
    import tomllib as _toml
except ImportError:  # pragma: no cover - hosts run 3.11
    _toml = None

OWN_JSON = False

HELP = """Manage the config.toml file.

Commands:
  migrate  Rewrite a legacy v1 (flat-field) config.toml to the v2 sectioned shape
           ([llm], [embeddings], [reranker], [storage]).

Options for `migrate`:
      --dry-run                 Print the diff to stderr without writing anything. Exits with
                                code 1 (informational).
      --also-clean-claude-json  Additionally remove every mcpServers.<*>.env block whose command
                                resolves to ai-memory from ~/.claude.json."""

USAGE = "ai-memory config <COMMAND>"
MIGRATE_USAGE = "ai-memory config migrate [OPTIONS]"

LEGACY_FIELDS = ("llm_model", "ollama_url", "embed_url", "embedding_model", "cross_encoder",
                 "default_namespace", "archive_on_gc", "archive_max_days", "max_memory_mb",
                 "auto_tag_model")
BACKEND_OLLAMA = "ollama"
DEFAULT_RERANKER_MODEL = "ms-marco-MiniLM-L-6-v2"
STORAGE_KEYS = ("default_namespace", "archive_on_gc", "archive_max_days", "max_memory_mb")


# ----------------------------------------------------------------------------- pure logic
def is_already_v2(table):
    """§1.5: integer schema_version >= 2 (bool/str/float do not count) and no legacy key."""
    sv = table.get("schema_version")
    v2 = isinstance(sv, int) and not isinstance(sv, bool) and sv >= 2
    return v2 and not any(k in table for k in LEGACY_FIELDS)


def build_migrated_table(original):
    """``build_migrated_table``: the exact v1 -> v2 mapping, with upstream's DROP semantics."""
    migrated = dict(original)  # shallow copy; nested tables are not mutated below
    taken = {}
    for key in LEGACY_FIELDS:
        if key in migrated:
            taken[key] = migrated.pop(key)
    migrated["schema_version"] = 2

    if "llm" not in migrated and "llm_model" in taken:
        llm = {"backend": BACKEND_OLLAMA, "model": taken["llm_model"]}
        if "ollama_url" in taken:
            llm["base_url"] = taken["ollama_url"]
        if "auto_tag_model" in taken:
            llm["auto_tag"] = {"model": taken["auto_tag_model"]}
        migrated["llm"] = llm

    if "embeddings" not in migrated and ("embed_url" in taken or "embedding_model" in taken):
        emb = {"backend": BACKEND_OLLAMA}
        if "embed_url" in taken:
            emb["url"] = taken["embed_url"]
        if "embedding_model" in taken:
            emb["model"] = taken["embedding_model"]
        migrated["embeddings"] = emb

    if "reranker" not in migrated and "cross_encoder" in taken:
        migrated["reranker"] = {"enabled": taken["cross_encoder"],
                                "model": DEFAULT_RERANKER_MODEL}

    if "storage" not in migrated and any(k in taken for k in STORAGE_KEYS):
        migrated["storage"] = dict((k, taken[k]) for k in STORAGE_KEYS if k in taken)

    return migrated


def utc_timestamp(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S")


def io_error_text(exc):
    """Rust ``io::Error`` Display: ``<strerror> (os error <n>)``."""
    if isinstance(exc, UnicodeDecodeError):
        return "stream did not contain valid UTF-8"
    if isinstance(exc, OSError) and exc.errno:
        return "%s (os error %d)" % (os.strerror(exc.errno), exc.errno)
    return str(exc)


def read_to_string(path):
    """``std::fs::read_to_string``: bytes must be valid UTF-8."""
    with open(path, "rb") as fh:
        data = fh.read()
    return data.decode("utf-8")


def fs_write(path, data):
    """``std::fs::write``: O_WRONLY|O_CREAT|O_TRUNC, mode 0666 (umask applies), write_all."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 0o666)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- claude.json
def _ryu_float(value):
    """serde_json's float formatting (ryu): ``1.0``, ``0.00001``, ``1e-6``, ``1e16``."""
    if not math.isfinite(value):
        return "null"  # serde_json writes non-finite floats as null
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    parts = decimal.Decimal(repr(abs(value))).as_tuple()
    raw = "".join(str(d) for d in parts.digits)
    digits = raw.rstrip("0")
    k = parts.exponent + (len(raw) - len(digits))  # value == int(digits) * 10**k
    length = len(digits)
    kk = length + k
    neg = "-" if value < 0 else ""
    if 0 <= k and kk <= 16:
        return neg + digits + "0" * k + ".0"
    if 0 < kk <= 16:
        return neg + digits[:kk] + "." + digits[kk:]
    if -5 < kk <= 0:
        return neg + "0." + "0" * (-kk) + digits
    if length == 1:
        return neg + digits + "e" + str(kk - 1)
    return neg + digits[0] + "." + digits[1:] + "e" + str(kk - 1)


def json_pretty(value, indent=0):
    """``serde_json::to_string_pretty`` of a ``Value`` with BTreeMap objects (sorted keys)."""
    pad = "  " * (indent + 1)
    end = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ["%s%s: %s" % (pad, json.dumps(k, ensure_ascii=False),
                               json_pretty(v, indent + 1))
                 for k, v in sorted(value.items(), key=lambda kv: kv[0])]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(pad + json_pretty(v, indent + 1) for v in value) + "\n" \
            + end + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return _ryu_float(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


class CleanError(Exception):
    pass


def _reject_constant(name):
    raise ValueError("expected value")


def _serde_like_error(exc):
    if isinstance(exc, json.JSONDecodeError):
        msg = exc.msg[:1].lower() + exc.msg[1:]
        return "%s at line %d column %d" % (msg, exc.lineno, exc.colno)
    return str(exc)


def is_ai_memory_command(command):
    return isinstance(command, str) and (command.endswith("/ai-memory") or command == "ai-memory")


def clean_claude_json(home, timestamp):
    """``clean_claude_json``: returns the backup path, or None when nothing changed.

    Raises :class:`CleanError` (message = what upstream's ``WARN: ... clean failed: <e>`` shows).
    """
    path = os.path.join(home, ".claude.json")
    if not os.path.exists(path):
        return None
    try:
        contents = read_to_string(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise CleanError(io_error_text(exc))
    try:
        value = json.loads(contents, parse_constant=_reject_constant)
    except ValueError as exc:
        raise CleanError(_serde_like_error(exc))
    changed = False
    servers = value.get("mcpServers") if isinstance(value, dict) else None
    if isinstance(servers, dict):
        for entry in servers.values():
            if not isinstance(entry, dict):
                continue
            if not is_ai_memory_command(entry.get("command")):
                continue
            if "env" in entry:
                del entry["env"]
                changed = True
    if not changed:
        return None
    backup = "%s.bak.%s" % (path, timestamp)
    try:
        fs_write(backup, contents)
        fs_write(path, json_pretty(value))
    except OSError as exc:
        raise CleanError(io_error_text(exc))
    return backup


# ----------------------------------------------------------------------------- command
def _toml_error_text(exc):
    return "TOML parse error: %s" % exc


def migrate(ctx, dry_run, also_clean):
    path = ctx.config_path
    if path is None:
        ctx.err("ERROR: $HOME is not set; cannot resolve config path.")
        return 2
    if not os.path.exists(path):
        ctx.err("ERROR: no config file at %s — nothing to migrate." % path)
        return 2
    try:
        contents = read_to_string(path)
    except (OSError, UnicodeDecodeError) as exc:
        ctx.err("ERROR: could not read %s: %s" % (path, io_error_text(exc)))
        return 4
    if _toml is None:
        ctx.err("ERROR: the ai-memory stand-in needs Python 3.11+ (tomllib) to parse %s" % path)
        return 3
    try:
        original = _toml.loads(contents)
    except ValueError as exc:
        ctx.err("ERROR: %s is not valid TOML: %s" % (path, _toml_error_text(exc)))
        return 3

    if is_already_v2(original):
        ctx.err("INFO: %s is already schema_version >= 2 with no legacy fields; no migration "
                "needed." % path)
        return 0

    migrated_text = tomlwrite.to_string_pretty(build_migrated_table(original))

    if dry_run:
        ctx.err("--- DRY RUN — %s would be rewritten as: ---" % path)
        ctx.err(migrated_text)
        ctx.err("--- end dry run ---")
        if also_clean:
            ctx.err("(--also-clean-claude-json also skipped in dry-run.)")
        return 1

    timestamp = utc_timestamp()
    # path.with_extension("toml.bak.<ts>") == <dir>/config.toml.bak.<ts>
    backup = os.path.splitext(path)[0] + ".toml.bak." + timestamp
    try:
        fs_write(backup, contents)
    except OSError as exc:
        ctx.err("ERROR: could not write backup %s: %s" % (backup, io_error_text(exc)))
        return 4
    try:
        fs_write(path, migrated_text)
    except OSError as exc:
        ctx.err("ERROR: could not write %s: %s" % (path, io_error_text(exc)))
        return 4
    ctx.err("OK: migrated %s (backup: %s)" % (path, backup))

    if also_clean:
        try:
            cleaned = clean_claude_json(ctx.home, timestamp)
        except CleanError as exc:
            ctx.err("WARN: ~/.claude.json clean failed: %s" % exc)
        else:
            if cleaned is not None:
                ctx.err("OK: cleaned ~/.claude.json (backup: %s)" % cleaned)
            else:
                ctx.err("INFO: ~/.claude.json had no mcpServers env block referencing "
                        "ai-memory; no changes.")
    else:
        ctx.err("INFO: your ~/.claude.json may still carry an mcpServers env block. Re-run "
                "with `--also-clean-claude-json` to remove it after verifying the new "
                "config.toml works.")
    return 0


def run(ctx, argv):
    if not argv:
        raise UsageError("'ai-memory config' requires a subcommand but one was not provided",
                         USAGE)
    verb, rest = argv[0], argv[1:]
    if verb.startswith("-"):
        raise UsageError("unexpected argument '%s' found" % verb, USAGE)
    if verb != "migrate":
        raise UsageError("unrecognized subcommand '%s'" % verb, USAGE)
    args = ArgSpec(MIGRATE_USAGE, flags=("--dry-run", "--also-clean-claude-json")).parse(rest)
    code = migrate(ctx, args["--dry-run"], args["--also-clean-claude-json"])
    if code:
        raise ExitCode(code)
    return 0
