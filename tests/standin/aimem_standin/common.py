"""Ctx object, errors, config loading, env parsers and a tiny clap-like argument parser.

Contract: tests/standin/CONTRACT.md.  Facts: §1.2, §1.10, §2.7, §2.8, §6, §9.
"""
import os
import sys

from aimem_standin import envparse

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - hosts run 3.11
    try:
        import tomli as _toml
    except ImportError:
        _toml = None

CONFIG_DIR = ".config/ai-memory"
CONFIG_FILE = "config.toml"
DEFAULT_DB = "ai-memory.db"
ISSUE_1146 = "https://github.com/alphaonedev/ai-memory-mcp/issues/1146"
TOP_USAGE = "ai-memory [OPTIONS] <COMMAND>"

LEGACY_FIELDS = ("llm_model", "ollama_url", "embed_url", "embedding_model", "cross_encoder",
                 "default_namespace", "archive_on_gc", "archive_max_days", "max_memory_mb",
                 "auto_tag_model")
PERMISSION_MODES = ("enforce", "advisory", "off")


# --------------------------------------------------------------------------- errors
class StandinError(Exception):
    exit_code = 1


class UsageError(StandinError):
    """clap usage error: stderr ``error: <msg>`` + usage, exit 2."""
    exit_code = 2

    def __init__(self, msg, usage=None):
        StandinError.__init__(self, msg)
        self.msg = msg
        self.usage = usage or TOP_USAGE

    def render(self):
        return "error: %s\n\nUsage: %s\n\nFor more information, try '--help'." % (
            self.msg, self.usage)


class AppError(StandinError):
    """anyhow error returned from main: stderr ``Error: <msg>``, exit 1."""
    exit_code = 1

    def __init__(self, msg):
        StandinError.__init__(self, msg)
        self.msg = msg

    def render(self):
        return "Error: %s" % self.msg


class ExitCode(StandinError):
    """std::process::exit(code) with nothing (more) printed."""

    def __init__(self, code):
        StandinError.__init__(self, "exit %d" % code)
        self.exit_code = code

    def render(self):
        return None


# --------------------------------------------------------------------------- env parsers (§6)
# One implementation of each parser, in envparse.py; these names are the core's spelling of them.
def env_on_unless_zero(env, name):
    """FED_REQUIRE_SIG / FED_REQUIRE_NONCE: ON unless the value is exactly ``0``."""
    return envparse._on_unless_zero(env, name)


def env_one_or_true(env, name):
    """SSRF_GUARD_ALLOW_DNS_FAIL / GOVERNANCE_FAIL_OPEN_ON_ERROR / LAX_PERMS (passphrase)."""
    return envparse._one_or_true(env, name)


def env_nonblank(env, name):
    v = env.get(name)
    if v is None or not v.strip():
        return None
    return v


# --------------------------------------------------------------------------- config (§1.2, §1.10)
TEMPLATE_064 = """\
# ai-memory configuration (written on first run; every line is a comment).
# Uncomment and edit a line to override the compiled default.
#
# db = "~/.claude/ai-memory.db"
# tier = "semantic"
# llm_model = "gemma4:e2b"
# ollama_url = "http://localhost:11434"
# embed_url = "http://localhost:11434"
# embedding_model = "nomic-embed-text"
# cross_encoder = false
# default_namespace = "global"
# archive_on_gc = true
# archive_max_days = 90
# max_memory_mb = 512
#
# [ttl]
# short_ttl_secs = 21600
# mid_ttl_secs = 604800
#
# [boot]
# enabled = true
"""

TEMPLATE_070 = """\
# ai-memory configuration (written on first run; every line is a comment).
# Uncomment and edit a line to override the compiled default.
#
# schema_version = 2
# db = "~/.claude/ai-memory.db"
# tier = "semantic"
# api_key = "<http api key for `ai-memory serve`>"
#
# [llm]
# backend = "ollama"
# model = "gemma4:e2b"
# base_url = "http://localhost:11434"
# api_key_env = "XAI_API_KEY"
# api_key_file = "/etc/ai-memory/llm.key"
#
# [embeddings]
# backend = "ollama"
# url = "http://localhost:11434"
# model = "nomic-embed-text"
#
# [reranker]
# enabled = false
#
# [storage]
# default_namespace = "global"
# archive_on_gc = true
#
# [permissions]
# mode = "enforce"   # enforce | advisory | off
#
# [boot]
# enabled = true
"""


def config_path_for(home):
    if not home:
        return None
    return os.path.join(home, CONFIG_DIR, CONFIG_FILE)


class ConfigLoad(object):
    """Result of AppConfig::load(): the effective dict plus the stderr lines it produced."""

    def __init__(self):
        self.config = {}
        self.raw = None          # the parsed document even when rejected (None if unparseable)
        self.messages = []
        self.loaded = False
        self.status = "missing"  # missing | disabled | loaded | parse-error | rejected | no-home


def _type_errors(build, doc):
    """Mirror the serde type errors the real AppConfig would raise (subset that matters)."""
    def want(table, key, types, tname, where):
        if isinstance(table, dict) and key in table and not isinstance(table[key], types):
            # bool is an int subclass in Python; serde does not accept it for integers
            return "invalid type for `%s%s`: expected %s" % (where, key, tname)
        if isinstance(table, dict) and key in table and types == (int,) and isinstance(
                table[key], bool):
            return "invalid type for `%s%s`: expected %s" % (where, key, tname)
        return None

    checks = [
        (doc, "db", (str,), "a string", ""),
        (doc, "tier", (str,), "a string", ""),
        (doc, "api_key", (str,), "a string", ""),
        (doc, "llm_model", (str,), "a string", ""),
        (doc, "ollama_url", (str,), "a string", ""),
        (doc, "embed_url", (str,), "a string", ""),
        (doc, "embedding_model", (str,), "a string", ""),
        (doc, "auto_tag_model", (str,), "a string", ""),
        (doc, "default_namespace", (str,), "a string", ""),
        (doc, "cross_encoder", (bool,), "a boolean", ""),
        (doc, "archive_on_gc", (bool,), "a boolean", ""),
        (doc, "archive_max_days", (int,), "an integer", ""),
        (doc, "max_memory_mb", (int,), "an integer", ""),
        (doc.get("boot"), "enabled", (bool,), "a boolean", "boot."),
    ]
    for tname in ("boot", "ttl", "logging", "audit", "mcp"):
        if tname in doc and not isinstance(doc[tname], dict):
            return "invalid type for `%s`: expected a table" % tname
    if build.is_v07:
        for tname in ("llm", "embeddings", "reranker", "storage", "permissions"):
            if tname in doc and not isinstance(doc[tname], dict):
                return "invalid type for `%s`: expected a table" % tname
        llm = doc.get("llm")
        if isinstance(llm, dict):
            for k in ("backend", "model", "base_url", "api_key_env", "api_key_file", "api_key"):
                checks.append((llm, k, (str,), "a string", "llm."))
            if "auto_tag" in llm and not isinstance(llm["auto_tag"], dict):
                return "invalid type for `llm.auto_tag`: expected a table"
        checks.append((doc.get("reranker"), "enabled", (bool,), "a boolean", "reranker."))
        checks.append((doc.get("storage"), "archive_on_gc", (bool,), "a boolean", "storage."))
        perms = doc.get("permissions")
        if isinstance(perms, dict):
            if "mode" in perms:
                m = perms["mode"]
                if not isinstance(m, str) or m not in PERMISSION_MODES:
                    return ("unknown variant `%s`, expected one of `enforce`, `advisory`, `off` "
                            "for key `permissions.mode`" % (m,))
            rules = perms.get("rules")
            if rules is not None:
                if not isinstance(rules, list):
                    return "invalid type for `permissions.rules`: expected a sequence"
                for rule in rules:
                    if not isinstance(rule, dict):
                        return "invalid type for `permissions.rules`: expected a table"
                    d = rule.get("decision")
                    if d is not None and d not in ("allow", "deny", "ask"):
                        return ("unknown variant `%s`, expected one of `allow`, `deny`, `ask` "
                                "for key `permissions.rules.decision`" % (d,))
    for table, key, types, tname, where in checks:
        msg = want(table, key, types, tname, where)
        if msg:
            return msg
    return None


def _rejection(doc):
    """validate_secret_handling (release/v0.7.0 only)."""
    llm = doc.get("llm")
    if not isinstance(llm, dict):
        return None
    if "api_key" in llm:
        return ("inline `api_key = \"<literal>\"` in [llm] is forbidden — use `api_key_env` "
                "(name of an environment variable holding the key) or `api_key_file` (path to a "
                "0400 file holding the key). Inline secrets in config.toml (typically "
                "world-readable) are a credential leak.")
    if "api_key_env" in llm and "api_key_file" in llm:
        return ("[llm].api_key_env and [llm].api_key_file are mutually exclusive — set exactly "
                "one (api_key_env names an environment variable; api_key_file points at a 0400 "
                "file).")
    auto = llm.get("auto_tag")
    if isinstance(auto, dict) and "api_key_env" in auto and "api_key_file" in auto:
        return "[llm.auto_tag].api_key_env and [llm.auto_tag].api_key_file are mutually exclusive."
    return None


def load_config(build, env, home, write_template=True):
    """Steps 1 and 2 of §1.2: load (with messages), then write the template when missing."""
    res = ConfigLoad()
    path = config_path_for(home)
    if path is None:
        res.status = "no-home"
        return res
    exists = os.path.exists(path)
    if "AI_MEMORY_NO_CONFIG" in env:
        res.status = "disabled"
    elif exists:
        res.status, res.config, res.raw = _load_existing(build, path, res.messages)
        res.loaded = res.status == "loaded"
    if write_template and not exists:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(TEMPLATE_070 if build.is_v07 else TEMPLATE_064)
        except OSError:
            pass  # the real binary ignores template write failures as well
    return res


def _load_existing(build, path, messages):
    if _toml is None:
        raise AppError("the ai-memory stand-in needs Python 3.11+ (tomllib) to read %s" % path)
    try:
        with open(path, "rb") as fh:
            doc = _toml.load(fh)
    except (OSError, ValueError) as e:
        messages.append("ai-memory: config parse error (%s): %s" % (path, e))
        return "parse-error", {}, None
    err = _type_errors(build, doc)
    if err:
        messages.append("ai-memory: config parse error (%s): TOML parse error: %s" % (path, err))
        return "parse-error", {}, None
    if build.has_v07_env:  # release/v0.7.0 (#1146) only
        reason = _rejection(doc)
        if reason:
            messages.append("ai-memory: config rejected (%s): %s" % (path, reason))
            messages.append("ai-memory: falling back to default config — fix the issue and "
                            "restart. See %s" % ISSUE_1146)
            return "rejected", {}, doc
    messages.append("ai-memory: loaded config from %s" % path)
    if build.has_v07_env:
        legacy = [k for k in LEGACY_FIELDS if k in doc]
        sv = doc.get("schema_version")
        v2 = isinstance(sv, int) and not isinstance(sv, bool) and sv >= 2
        if legacy and not v2:
            messages.append(
                "ai-memory: WARN — legacy v1 flat-field configuration shape detected in %s. "
                "Fields %s are deprecated and will be removed in a future release. Run "
                "`ai-memory config migrate` to rewrite the file to schema_version = 2."
                % (path, ", ".join(legacy)))
        elif legacy and v2:
            messages.append(
                "ai-memory: WARN — schema_version = Some(%d) but legacy v1 fields are still "
                "present in %s (%s). Under v2 the legacy fields are IGNORED; move them into "
                "their v2 sections or run `ai-memory config migrate`." % (sv, path,
                                                                          ", ".join(legacy)))
    return "loaded", doc, doc


def config_is_v2(config):
    sv = config.get("schema_version")
    return isinstance(sv, int) and not isinstance(sv, bool) and sv >= 2


# --------------------------------------------------------------------------- permissions (§6)
def resolve_permissions_mode(build, env, config, messages=None):
    """Return (mode, source) for v0.7.0 builds; (None, None) on 0.6.4."""
    if not build.is_v07:
        return None, None
    return envparse.effective_permissions_mode(env, config, messages.append if messages is not None else None)


# --------------------------------------------------------------------------- Ctx
class Opts(object):
    def __init__(self):
        self.db = DEFAULT_DB
        self.db_from = "default"   # flag | env | default
        self.json = False
        self.agent_id = None
        self.db_passphrase_file = None


class Ctx(object):
    def __init__(self, build, env=None, stdout=None, stderr=None):
        self.build = build
        self.env = dict(os.environ if env is None else env)
        self.home = self.env.get("HOME") or None
        self.config_path = config_path_for(self.home)
        self.config = {}
        self.config_status = "missing"
        self.opts = Opts()
        self.permissions_mode = None
        self.permissions_source = None
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr

    # output -----------------------------------------------------------------
    def out(self, text=""):
        self._stdout.write(text + "\n")
        self._stdout.flush()

    def err(self, text=""):
        self._stderr.write(text + "\n")
        self._stderr.flush()

    # config helpers ---------------------------------------------------------
    def reload_config(self):
        """Re-run AppConfig::load() silently (doctor's LLM section does this)."""
        return load_config(self.build, self.env, self.home, write_template=False).config

    # DB ----------------------------------------------------------------------
    def db_path(self):
        """§2.7: flag/env unless literal ai-memory.db -> config `db` -> ai-memory.db in CWD."""
        if self.opts.db != DEFAULT_DB:
            return self.opts.db
        cfg_db = self.config.get("db")
        if isinstance(cfg_db, str) and cfg_db:
            if self.build.expands_db_tilde and self.home and (
                    cfg_db == "~" or cfg_db.startswith("~/")):
                return os.path.join(self.home, cfg_db[2:]) if cfg_db != "~" else self.home
            return cfg_db
        return DEFAULT_DB

    def open_db(self, path=None):
        from aimem_standin import db
        p = self.db_path() if path is None else path
        try:
            return db.open_db(p, self.build)
        except db.DbError as e:
            raise AppError("open db at %s: %s" % (p, e))


# --------------------------------------------------------------------------- arg parsing
class ArgSpec(object):
    """Declarative, clap-like parser for a subcommand's own arguments.

    flags:   iterable of "--name" (bool)
    options: dict "--name" -> metavar (string value; ``--name v`` or ``--name=v``)
    positionals: list of metavars (all optional unless listed in ``required``)
    """

    def __init__(self, usage, flags=(), options=None, positionals=(), required=(), short=None):
        self.usage = usage
        self.flags = set(flags)
        self.options = dict(options or {})
        self.positionals = list(positionals)
        self.required = set(required)
        self.short = dict(short or {})  # "-q" -> "--quiet"

    def parse(self, argv):
        res = {}
        for f in self.flags:
            res[f] = False
        for o in self.options:
            res[o] = None
        pos = []
        i = 0
        only_pos = False
        while i < len(argv):
            a = argv[i]
            i += 1
            if not only_pos and a == "--":
                only_pos = True
                continue
            if not only_pos and a.startswith("-") and a != "-":
                name, eq, val = a.partition("=")
                name = self.short.get(name, name)
                if name in self.flags and not eq:
                    res[name] = True
                    continue
                if name in self.options:
                    if not eq:
                        if i >= len(argv):
                            raise UsageError(
                                "a value is required for '%s <%s>' but none was supplied"
                                % (name, self.options[name]), self.usage)
                        val = argv[i]
                        i += 1
                    res[name] = val
                    continue
                raise UsageError("unexpected argument '%s' found" % a, self.usage)
            pos.append(a)
        if len(pos) > len(self.positionals):
            raise UsageError("unexpected argument '%s' found" % pos[len(self.positionals)],
                             self.usage)
        for idx, meta in enumerate(self.positionals):
            res[meta] = pos[idx] if idx < len(pos) else None
        for r in self.required:
            if res.get(r) in (None, False):
                meta = self.options.get(r)
                shown = "%s <%s>" % (r, meta) if meta else r
                raise UsageError("the following required arguments were not provided:\n  %s"
                                 % shown, self.usage)
        return res


def parse_int(value, name, usage, lo=None, hi=None):
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError("invalid value '%s' for '%s': invalid digit found in string"
                         % (value, name), usage)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise UsageError("invalid value '%s' for '%s': %s is not in %s..=%s"
                         % (value, name, n, lo, hi), usage)
    return n
