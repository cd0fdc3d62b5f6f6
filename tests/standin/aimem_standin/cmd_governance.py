"""``ai-memory governance migrate-to-permissions`` (facts §5.1; ``src/cli/governance_migrate.rs``).

``[dry-run] [--config-out P] [--config-in P]`` -- there is no ``--apply`` (clap exit 2).

* Dry-run is the default whenever ``--config-out`` is absent (and ``--dry-run`` wins over
  ``--config-out``): the rendered block goes to stdout, nothing is written, exit 0.
* ``[[governance.policy]]`` entries translate to ``[[permissions.rules]]``:
  ``namespace_pattern <- scope | "*"``, ``op <- action | "*"``,
  ``agent_pattern <- role | agent_id | "*"``, ``decision <- decision | "ask"`` (copied verbatim,
  so ``"pending"`` produces a rule the v0.7 loader rejects -- upstream behaviour).
* ``--config-out`` naming the input file (same after canonicalisation; literal component compare
  when either path cannot be canonicalised) APPENDS a separator comment plus the block to the
  original text -- on every run, so it is not idempotent (the no-op comment is appended too).
  A different path is overwritten with the block alone.
* 0 rules on the write path also prints ``warning: ...`` on stderr.
* Errors (unreadable input, bad TOML, wrongly typed policy fields, unwritable output) are anyhow
  errors: ``Error: <context>`` + ``Caused by:``, exit 1.
"""
import os

from aimem_standin.common import AppError, ArgSpec, UsageError

try:
    import tomllib as _toml
except ImportError:  # pragma: no cover - hosts run 3.11
    _toml = None

OWN_JSON = False

HELP = """Governance helpers.

Commands:
  migrate-to-permissions  Translate legacy [[governance.policy]] entries into v0.7.0
                          [[permissions.rules]].

Options for `migrate-to-permissions`:
      --dry-run            Print the rendered block to stdout without writing anywhere (default
                           when --config-out is omitted).
      --config-out <PATH>  Write the rendered block to this path (in-place append when it is the
                           loaded config file).
      --config-in <PATH>   Override the loaded config file path (default
                           ~/.config/ai-memory/config.toml)."""

USAGE = "ai-memory governance <COMMAND>"
MIGRATE_USAGE = "ai-memory governance migrate-to-permissions [OPTIONS]"

NO_POLICIES = "# v0.7.0 K11: no [governance] policies found — nothing to migrate.\n"
HEADER = ("# v0.7.0 K11: translated from legacy [[governance.policy]] entries.\n"
          "# Mapping: scope→namespace_pattern, action→op,\n"
          "#          role|agent_id→agent_pattern, decision→decision.\n")
MERGE_SEPARATOR = "\n# --- migrated from [governance] (v0.7.0 K11) ---\n"
POLICY_FIELDS = ("scope", "action", "role", "agent_id", "decision")


def _anyhow(context, cause):
    return AppError("%s\n\nCaused by:\n    %s" % (context, cause))


def _io_text(exc):
    if isinstance(exc, UnicodeDecodeError):
        return "stream did not contain valid UTF-8"
    if isinstance(exc, OSError) and exc.errno:
        return "%s (os error %d)" % (os.strerror(exc.errno), exc.errno)
    return str(exc)


def _toml_type(value):
    if isinstance(value, bool):
        return "boolean `%s`" % ("true" if value else "false")
    if isinstance(value, int):
        return "integer `%d`" % value
    if isinstance(value, float):
        return "floating point `%r`" % value
    if isinstance(value, str):
        return "string %s" % _basic_string(value)
    if isinstance(value, list):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return "datetime"


class GovernanceParseError(Exception):
    pass


def parse_legacy_policies(document):
    """``parse_legacy_governance`` on an already parsed document: list of policy dicts."""
    if "governance" not in document:
        return []
    gov = document["governance"]
    if not isinstance(gov, dict):
        raise GovernanceParseError("invalid type: %s, expected struct LegacyGovernance"
                                   % _toml_type(gov))
    policies = gov.get("policy", [])
    if not isinstance(policies, list):
        raise GovernanceParseError("invalid type: %s, expected a sequence" % _toml_type(policies))
    out = []
    for entry in policies:
        if not isinstance(entry, dict):
            raise GovernanceParseError("invalid type: %s, expected struct LegacyGovernancePolicy"
                                       % _toml_type(entry))
        policy = {}
        for field in POLICY_FIELDS:
            if field in entry:
                if not isinstance(entry[field], str):
                    raise GovernanceParseError("invalid type: %s, expected a string for key "
                                               "`%s`" % (_toml_type(entry[field]), field))
                policy[field] = entry[field]
        out.append(policy)
    return out


def translate_policy(policy):
    return {
        "namespace_pattern": policy.get("scope", "*"),
        "op": policy.get("action", "*"),
        "agent_pattern": policy.get("role", policy.get("agent_id", "*")),
        "decision": policy.get("decision", "ask"),
    }


def _basic_string(text):
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return '"%s"' % escaped


def render_permissions_block(rules):
    if not rules:
        return NO_POLICIES
    out = [HEADER]
    for rule in rules:
        out.append("\n[[permissions.rules]]\n")
        out.append("namespace_pattern = %s\n" % _basic_string(rule["namespace_pattern"]))
        out.append("op = %s\n" % _basic_string(rule["op"]))
        out.append("agent_pattern = %s\n" % _basic_string(rule["agent_pattern"]))
        out.append("decision = %s\n" % _basic_string(rule["decision"]))
    return "".join(out)


def merge_in_place(existing, rendered):
    out = existing
    if not out.endswith("\n"):
        out += "\n"
    return out + MERGE_SEPARATOR + rendered


def _components(path):
    """Rust ``Path::components`` equality: repeated/trailing ``/`` and inner ``.`` ignored."""
    comps = []
    if path.startswith("/"):
        comps.append("/")
    for i, seg in enumerate(path.split("/")):
        if seg == "":
            continue
        if seg == "." and not (i == 0 and not path.startswith("/")):
            continue
        comps.append(seg)
    return comps


def same_path(a, b):
    if os.path.exists(a) and os.path.exists(b):
        try:
            return os.path.realpath(a) == os.path.realpath(b)
        except OSError:
            pass
    return _components(a) == _components(b)


def _fs_write(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 0o666)
    try:
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def migrate_to_permissions(ctx, dry_run, config_out, config_in):
    if config_in is not None:
        in_path = config_in
    else:
        in_path = ctx.config_path
        if in_path is None:
            raise AppError("no HOME — cannot resolve default config path; pass --config-in")
    try:
        with open(in_path, "rb") as fh:
            raw = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _anyhow("read config from %s" % in_path, _io_text(exc))
    if _toml is None:
        raise AppError("the ai-memory stand-in needs Python 3.11+ (tomllib)")
    try:
        document = _toml.loads(raw)
    except ValueError as exc:
        raise _anyhow("parse config.toml", "TOML parse error: %s" % exc)
    try:
        policies = parse_legacy_policies(document)
    except GovernanceParseError as exc:
        raise _anyhow("parse [governance] block", str(exc))
    rules = [translate_policy(p) for p in policies]
    rendered = render_permissions_block(rules)

    if dry_run or config_out is None:
        # upstream uses write! (the block already ends with "\n"); ctx.out adds exactly that one
        ctx.out(rendered[:-1])
        return 0

    if same_path(in_path, config_out):
        try:
            _fs_write(config_out, merge_in_place(raw, rendered))
        except OSError as exc:
            raise _anyhow("write merged config to %s" % config_out, _io_text(exc))
        ctx.out("merged %d migrated rule(s) into %s" % (len(rules), config_out))
    else:
        try:
            _fs_write(config_out, rendered)
        except OSError as exc:
            raise _anyhow("write rendered block to %s" % config_out, _io_text(exc))
        ctx.out("wrote %d migrated rule(s) to %s" % (len(rules), config_out))
    if not rules:
        ctx.err("warning: no [governance] policies found in %s — nothing migrated" % in_path)
    return 0


def run(ctx, argv):
    if not argv:
        raise UsageError("'ai-memory governance' requires a subcommand but one was not "
                         "provided", USAGE)
    verb, rest = argv[0], argv[1:]
    if verb.startswith("-"):
        raise UsageError("unexpected argument '%s' found" % verb, USAGE)
    if verb != "migrate-to-permissions":
        raise UsageError("unrecognized subcommand '%s'" % verb, USAGE)
    args = ArgSpec(MIGRATE_USAGE, flags=("--dry-run",),
                   options={"--config-out": "PATH", "--config-in": "PATH"}).parse(rest)
    return migrate_to_permissions(ctx, args["--dry-run"], args["--config-out"],
                                  args["--config-in"])
