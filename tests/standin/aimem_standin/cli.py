"""Entry point: preamble (§1.2/§9), global options, clap-like errors, lazy dispatch."""
import importlib
import os
import sys
import traceback

from aimem_standin import builds
from aimem_standin.common import (AppError, Ctx, StandinError, UsageError,
                                  env_one_or_true, load_config, resolve_permissions_mode,
                                  TOP_USAGE)

GLOBAL_VALUE_OPTS = ("--db", "--agent-id", "--db-passphrase-file")
GLOBAL_FLAG_OPTS = ("--json",)


def module_name(sub):
    return "aimem_standin.cmd_" + sub.replace("-", "_")


def top_help(build):
    lines = ["AI-native persistent memory (stand-in build %s)" % build.name, "",
             "Usage: %s" % TOP_USAGE, "", "Commands:"]
    for s in sorted(build.subcommands):
        lines.append("  %s" % s)
    lines += ["", "Options:",
              "      --db <DB>                    [env: AI_MEMORY_DB=] [default: ai-memory.db]",
              "      --json",
              "      --agent-id <AGENT_ID>        [env: AI_MEMORY_AGENT_ID=]",
              "      --db-passphrase-file <PATH>",
              "  -h, --help                       Print help",
              "  -V, --version                    Print version"]
    return "\n".join(lines)


def _take_value(argv, i, name, usage):
    """Value for a global option at argv[i] (already past the name).  Returns (value, next_i)."""
    if i >= len(argv):
        raise UsageError("a value is required for '%s <%s>' but none was supplied"
                         % (name, name.lstrip("-").upper().replace("-", "_")), usage)
    return argv[i], i + 1


def _apply_global(ctx, name, value):
    if name == "--db":
        ctx.opts.db = value
        ctx.opts.db_from = "flag"
    elif name == "--agent-id":
        ctx.opts.agent_id = value
    elif name == "--db-passphrase-file":
        ctx.opts.db_passphrase_file = value
    elif name == "--json":
        ctx.opts.json = True


def preamble(ctx):
    """Steps 1-4 of §1.2; runs for every invocation, before argument parsing."""
    res = load_config(ctx.build, ctx.env, ctx.home)
    for m in res.messages:
        ctx.err(m)
    ctx.config = res.config
    ctx.config_status = res.status
    msgs = []
    ctx.permissions_mode, ctx.permissions_source = resolve_permissions_mode(
        ctx.build, ctx.env, ctx.config, msgs)
    for m in msgs:
        ctx.err(m)
    if ctx.build.is_v07 and ctx.home:
        # forensic audit init creates the audit directory even when auditing is disabled
        audit_dir = ctx.env.get("AI_MEMORY_AUDIT_DIR") or os.path.join(
            ctx.home, ".local", "state", "ai-memory", "audit")
        try:
            os.makedirs(audit_dir, exist_ok=True)
        except OSError:
            pass


def _passphrase_file(ctx):
    """--db-passphrase-file (§2.8): read the file, export AI_MEMORY_DB_PASSPHRASE."""
    p = ctx.opts.db_passphrase_file
    try:
        st = os.stat(p)
        with open(p, "r") as fh:
            data = fh.read()
    except OSError as e:
        raise AppError("could not read passphrase file %s: %s" % (p, e.strerror or e))
    if ctx.build.has_v07_env and st.st_mode & 0o077 and not env_one_or_true(
            ctx.env, "AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS"):
        raise AppError(
            "passphrase file %s has lax permissions (mode %o, group/world bits set); tighten "
            "with `chmod 0400 %s` OR set AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS=1 to opt out "
            "(#1055)" % (p, st.st_mode & 0o777, p))
    data = data.strip("\r\n")
    if not data:
        raise AppError("passphrase file %s is empty" % p)
    ctx.env["AI_MEMORY_DB_PASSPHRASE"] = data
    os.environ["AI_MEMORY_DB_PASSPHRASE"] = data


def _dispatch(ctx, argv):
    build = ctx.build
    env_db = ctx.env.get("AI_MEMORY_DB")
    if env_db:
        ctx.opts.db = env_db
        ctx.opts.db_from = "env"
    env_agent = ctx.env.get("AI_MEMORY_AGENT_ID")
    if env_agent:
        ctx.opts.agent_id = env_agent

    # --- global options before the subcommand
    i = 0
    sub = None
    while i < len(argv):
        a = argv[i]
        i += 1
        if a in ("-V", "--version"):
            ctx.out("ai-memory %s" % build.version)
            return 0
        if a in ("-h", "--help"):
            ctx.out(top_help(build))
            return 0
        name, eq, val = a.partition("=")
        if name in GLOBAL_VALUE_OPTS:
            if not eq:
                val, i = _take_value(argv, i, name, TOP_USAGE)
            _apply_global(ctx, name, val)
            continue
        if a in GLOBAL_FLAG_OPTS:
            _apply_global(ctx, a, None)
            continue
        if a.startswith("-") and a != "-":
            raise UsageError("unexpected argument '%s' found" % a)
        sub = a
        break
    if sub is None:
        ctx.err("error: 'ai-memory' requires a subcommand but one was not provided")
        ctx.err("")
        ctx.err("Usage: %s" % TOP_USAGE)
        ctx.err("")
        ctx.err("For more information, try '--help'.")
        return 2
    if sub == "help":
        ctx.out(top_help(build))
        return 0
    if sub not in build.subcommands:
        raise UsageError("unrecognized subcommand '%s'" % sub)

    try:
        mod = importlib.import_module(module_name(sub))
    except ModuleNotFoundError as e:
        if e.name != module_name(sub):
            raise
        mod = None
    own = set(getattr(mod, "OWN_GLOBALS", ()) or ())
    if getattr(mod, "OWN_JSON", False):
        own.add("--json")
    usage = "ai-memory %s [OPTIONS]" % sub

    # --- global options after the subcommand (removed unless the subcommand owns them)
    rest = []
    wants_help = False
    after_dashdash = False
    while i < len(argv):
        a = argv[i]
        i += 1
        if after_dashdash:
            rest.append(a)
            continue
        if a == "--":
            after_dashdash = True
            rest.append(a)
            continue
        if a in ("-h", "--help"):
            wants_help = True
            continue
        name, eq, val = a.partition("=")
        if name in GLOBAL_VALUE_OPTS and name not in own:
            if not eq:
                val, i = _take_value(argv, i, name, usage)
            _apply_global(ctx, name, val)
            continue
        if a in GLOBAL_FLAG_OPTS and a not in own:
            _apply_global(ctx, a, None)
            continue
        rest.append(a)

    if wants_help:
        ctx.out("Usage: ai-memory %s [OPTIONS]" % sub)
        helptext = getattr(mod, "HELP", None)
        if helptext:
            ctx.out("")
            ctx.out(helptext.rstrip("\n"))
        return 0
    if ctx.opts.db_passphrase_file is not None:
        _passphrase_file(ctx)
    if mod is None:
        raise AppError("%s is not implemented by the stand-in" % sub)
    rc = mod.run(ctx, rest)
    return 0 if rc is None else int(rc)


def main(argv, env=None):
    build = builds.current_build()
    ctx = Ctx(build, env=env)
    try:
        preamble(ctx)
        return _dispatch(ctx, list(argv))
    except StandinError as e:
        text = e.render()
        if text is not None:
            ctx.err(text)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # an anyhow-style failure, but keep the traceback for debugging
        ctx.err("Error: %s" % e)
        ctx.err("Caused by (stand-in traceback):")
        ctx.err(traceback.format_exc().rstrip("\n"))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
