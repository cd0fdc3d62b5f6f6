# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic behind ``aimem.fleet.aimem_info``: read-only facts about one ai-memory install.

Pure Python (stdlib only plus a guarded ``tomlkit`` fallback for Python < 3.11, Python 3.8+), no
Ansible import. ``gather()`` does everything except running the binary, which the caller passes
in as ``run(argv, cwd, env) -> (rc, stdout, stderr)``; ``/proc`` is a parameter so the process
parsing is unit-tested against a fake proc tree.

Facts this follows (``ai-memory-facts.md``):

* DB path (2.7): ``--db`` / ``AI_MEMORY_DB`` unless the literal ``ai-memory.db`` -> the config's
  top-level ``db`` -> ``ai-memory.db`` in the CWD. v0.6.4 uses the config ``db`` literally (so
  ``db = "~/.claude/ai-memory.db"`` stored the data at ``<CWD>/~/.claude/ai-memory.db``); v0.7.0
  expands ``~`` to ``$HOME`` (the tilde trap). ``doctor.resolve_db_path`` implements the rule.
* The running daemon is the truth: its real argv (``/proc/<pid>/cmdline``), its ``AI_MEMORY_DB``
  (``/proc/<pid>/environ``) and its CWD (``/proc/<pid>/cwd``) decide which file it opened.
* Schema version from the ``schema_version`` table (2.1), read natively read-only by
  ``sqlite_schema.Reader`` (never created, never migrated).
* ``serve --host`` defaults to ``127.0.0.1``; v0.7.0 refuses a non-loopback bind without a
  top-level ``api_key`` (and any keyless bind with ``AI_MEMORY_REQUIRE_API_KEY=1|true``) (5.4).
* ``--version`` runs the start-up preamble, which writes a config template into ``$HOME`` (1.2),
  so it is run with ``HOME`` (and the audit/log/key/XDG dirs) pointed at a private scratch dir.
* Release assets are named by target triple (7).
"""

from __future__ import absolute_import, division, print_function

import errno
import os
import pwd
import re
import shutil
import tempfile

from ansible_collections.aimem.fleet.plugins.module_utils import doctor as D
from ansible_collections.aimem.fleet.plugins.module_utils import sqlite_schema as S

try:
    import tomllib as _toml  # Python 3.11+
    TOML_ERROR = None
except ImportError:  # pragma: no cover - exercised on Python < 3.11 targets
    try:
        import tomlkit as _toml
        TOML_ERROR = None
    except ImportError as _e:
        _toml = None
        TOML_ERROR = _e

__metaclass__ = type

COMM = "ai-memory"
DEFAULT_SERVE_HOST = "127.0.0.1"
DEFAULT_SERVE_PORT = 9077
# The only environment variables ever read from a process or an env file into the result; every
# other value (API keys, passphrases) is never returned.
ENV_KEYS = ("AI_MEMORY_DB", "AI_MEMORY_NO_CONFIG", "AI_MEMORY_REQUIRE_API_KEY")
# Global options of the binary that take a value (so the value is not taken for a subcommand).
GLOBAL_VALUE_OPTS = ("--db", "--agent-id", "--db-passphrase-file")
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
SYSTEMS = {"linux": "unknown-linux-gnu", "darwin": "apple-darwin"}


class InfoError(Exception):
    """A fact that cannot be gathered; ``hint`` names the fix, ``result`` what was gathered so far."""

    def __init__(self, msg, hint=None, result=None):
        super(InfoError, self).__init__(msg)
        self.hint = hint
        self.result = result


# --------------------------------------------------------------------------------------------
# target triple
# --------------------------------------------------------------------------------------------
def map_triple(machine, system):
    """``uname -m`` / ``uname -s`` -> the release asset's target triple (facts 7)."""
    m = MACHINES.get((machine or "").strip().lower())
    s = SYSTEMS.get((system or "").strip().lower())
    if m is None or s is None:
        raise InfoError(
            "no ai-memory release asset for machine %r / system %r (assets exist for %s on %s)"
            % (machine, system, ", ".join(sorted(set(MACHINES.values()))), " and ".join(sorted(SYSTEMS))),
            hint="build ai-memory from source for this platform and install it yourself, or leave this "
                 "host out of the upgrade")
    return "%s-%s" % (m, s)


# --------------------------------------------------------------------------------------------
# env files
# --------------------------------------------------------------------------------------------
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in ("'", '"'):
        return value[1:-1]
    return value


def parse_env_text(text):
    """``KEY=VALUE`` lines (systemd EnvironmentFile / sh style) -> dict; comments and junk skipped."""
    env = {}
    for line in (text or "").splitlines():
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        m = _ENV_LINE.match(line)
        if m:
            env[m.group(1)] = _unquote(m.group(2))
    return env


def read_env_files(paths):
    """Merge the env files in order (later wins). Returns (env, [{path, exists, keys, error?}])."""
    env, files = {}, []
    for path in paths or []:
        entry = {"path": path, "exists": os.path.isfile(path), "keys": []}
        if entry["exists"]:
            try:
                with open(path, "rb") as f:
                    parsed = parse_env_text(f.read().decode("utf-8", "replace"))
            except (IOError, OSError) as e:
                entry["error"] = str(e)
                parsed = {}
            entry["keys"] = sorted(parsed)
            env.update(parsed)
        files.append(entry)
    return env, files


def relevant_env(env):
    """Only the variables this module may report (never secrets)."""
    return dict((k, env[k]) for k in ENV_KEYS if k in env)


def truthy_1_true(value):
    """``AI_MEMORY_REQUIRE_API_KEY`` parser: ``1`` or case-insensitive ``true``."""
    return value is not None and value.strip().lower() in ("1", "true")


# --------------------------------------------------------------------------------------------
# argv and /proc
# --------------------------------------------------------------------------------------------
def _is_binary_arg(arg):
    return os.path.basename(arg).startswith(COMM)


def parse_argv(argv):
    """The daemon's argv -> ``{binary, db, subcommand, host, port}``.

    Copes with an interpreter in front (``python3 /usr/local/bin/ai-memory serve``, the stand-in),
    ``--opt value`` and ``--opt=value``, and global options before or after the subcommand.
    """
    out = {"binary": None, "db": None, "subcommand": None, "host": None, "port": None}
    argv = list(argv or [])
    start = None
    for i, a in enumerate(argv):
        if _is_binary_arg(a):
            start = i
            break
    if start is None:
        return out
    out["binary"] = argv[start]
    args = argv[start + 1:]
    i = 0
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a == "--":
            break
        key, eq, val = a.partition("=")
        takes = key in GLOBAL_VALUE_OPTS or (out["subcommand"] == "serve" and key in ("--host", "--port"))
        if takes:
            value = val if eq else nxt
            if key == "--db":
                out["db"] = value
            elif key == "--host":
                out["host"] = value
            elif key == "--port":
                out["port"] = value
            i += 1 if eq else 2
            continue
        if not a.startswith("-") and out["subcommand"] is None:
            out["subcommand"] = a
        i += 1
    return out


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def split_nul(raw):
    return [a.decode("utf-8", "surrogateescape") for a in (raw or b"").split(b"\0") if a]


def parse_environ(raw):
    env = {}
    for item in split_nul(raw):
        k, eq, v = item.partition("=")
        if eq:
            env[k] = v
    return env


def read_process(pid, proc="/proc"):
    """Facts about one process; None when it is gone. Only ENV_KEYS (and HOME) of its environ."""
    base = os.path.join(proc, str(pid))
    try:
        comm = _read_bytes(os.path.join(base, "comm")).decode("utf-8", "replace").strip()
        argv = split_nul(_read_bytes(os.path.join(base, "cmdline")))
        uid = os.stat(base).st_uid
    except (IOError, OSError):
        return None
    info = {"pid": int(pid), "comm": comm, "argv": argv, "uid": uid, "cwd": None, "exe": None,
            "env": None, "home": None, "environ_readable": False}
    try:
        info["cwd"] = os.readlink(os.path.join(base, "cwd"))
    except OSError:
        pass
    try:
        info["exe"] = os.readlink(os.path.join(base, "exe"))
    except OSError:
        pass
    try:
        env = parse_environ(_read_bytes(os.path.join(base, "environ")))
        info["env"] = relevant_env(env)
        info["home"] = env.get("HOME")
        info["environ_readable"] = True
    except (IOError, OSError):
        pass
    info.update(parse_argv(argv))
    return info


def read_pidfile(path):
    """(pid or None, error text or None)."""
    if not path:
        return None, None
    try:
        text = _read_bytes(path).decode("ascii", "replace").strip()
    except (IOError, OSError) as e:
        if e.errno == errno.ENOENT:
            return None, None
        return None, "cannot read pidfile %s: %s" % (path, e)
    if not text.isdigit():
        return None, "pidfile %s does not hold a pid (%r)" % (path, text[:40])
    return int(text), None


def _real(path, cwd=None):
    if not path:
        return None
    path = path[:-len(" (deleted)")] if path.endswith(" (deleted)") else path
    if not os.path.isabs(path):
        if cwd is None:
            return None
        path = os.path.join(cwd, path)
    return os.path.realpath(path)


def runs_binary(p, binary):
    """Whether process ``p`` runs ``binary`` (by the argv path, else by /proc/<pid>/exe)."""
    want = os.path.realpath(binary) if binary else None
    if not want:
        return False
    arg = p.get("binary")
    if arg and "/" in arg:
        return _real(arg, p.get("cwd")) == want
    return _real(p.get("exe")) == want


def is_serve(p):
    return bool(p) and p.get("comm", "").startswith(COMM) and p.get("subcommand") == "serve"


def find_daemons(proc="/proc", pidfile=None, binary=None, uid=None):
    """The ``ai-memory serve`` process(es) of this install.

    The pidfile's process wins when it is an ``ai-memory serve``; otherwise processes with comm
    ``ai-memory`` running ``serve`` as ``uid`` with ``binary``. Other ``ai-memory serve`` processes
    on the host are counted in ``others``.
    """
    res = {"running": False, "pid": None, "pids": [], "pidfile": pidfile or None, "pidfile_pid": None,
           "pidfile_stale": False, "pidfile_error": None, "others": 0, "process": None}
    ppid, perr = read_pidfile(pidfile)
    res["pidfile_pid"], res["pidfile_error"] = ppid, perr
    chosen = []
    if ppid is not None:
        p = read_process(ppid, proc)
        if is_serve(p):
            chosen.append(p)
        else:
            res["pidfile_stale"] = True
    try:
        pids = sorted((int(d) for d in os.listdir(proc) if d.isdigit()))
    except OSError:
        pids = []
    for pid in pids:
        if pid == ppid or pid == os.getpid():
            continue
        try:
            comm = _read_bytes(os.path.join(proc, str(pid), "comm")).decode("utf-8", "replace").strip()
        except (IOError, OSError):
            continue
        if not comm.startswith(COMM):
            continue
        p = read_process(pid, proc)
        if not is_serve(p):
            continue
        if (uid is None or p["uid"] == uid) and runs_binary(p, binary):
            chosen.append(p)
        else:
            res["others"] += 1
    if chosen:
        res.update(running=True, pid=chosen[0]["pid"], pids=[p["pid"] for p in chosen], process=chosen[0])
    return res


# --------------------------------------------------------------------------------------------
# config.toml
# --------------------------------------------------------------------------------------------
_LINE_RE = re.compile(r"line\s+(\d+)", re.I)


def _plain(value):
    """tomlkit items -> plain Python values (tomllib values are plain already)."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def parse_config_text(text, loads=None):
    """What the upgrade needs from config.toml; never the value of a secret.

    Returns ``{parses, error, error_line, db, api_key_present, schema_version, llm_api_key_inline}``.
    """
    loads = loads or (_toml.loads if _toml is not None else None)
    out = {"parses": None, "error": None, "error_line": None, "db": None, "api_key_present": False,
           "schema_version": None, "llm_api_key_inline": False}
    if loads is None:
        out["error"] = "no TOML parser on this host (Python < 3.11 without tomlkit)"
        return out
    try:
        data = _plain(loads(text))
    except Exception as e:  # tomllib.TOMLDecodeError, tomlkit.exceptions.ParseError, ...
        out["parses"] = False
        out["error"] = str(e)
        m = _LINE_RE.search(str(e))
        out["error_line"] = int(m.group(1)) if m else getattr(e, "line", None)
        return out
    out["parses"] = True
    db = data.get("db")
    out["db"] = str(db) if isinstance(db, str) and db else None
    key = data.get("api_key")
    out["api_key_present"] = isinstance(key, str) and bool(key.strip())
    sv = data.get("schema_version")
    out["schema_version"] = sv if isinstance(sv, int) and not isinstance(sv, bool) else (1 if sv is None else sv)
    llm = data.get("llm")
    if isinstance(llm, dict):
        inline = llm.get("api_key")
        out["llm_api_key_inline"] = isinstance(inline, str) and bool(inline.strip())
    return out


def read_config(path):
    """``parse_config_text`` of the file plus ``path``/``exists``; ``parses`` is None when missing."""
    out = {"path": path, "exists": bool(path) and os.path.isfile(path), "parses": None, "error": None,
           "error_line": None, "db": None, "api_key_present": False, "schema_version": None,
           "llm_api_key_inline": False}
    if not out["exists"]:
        return out
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (IOError, OSError, UnicodeDecodeError) as e:
        out.update(parses=False, error="cannot read %s: %s" % (path, e))
        return out
    out.update(parse_config_text(text))
    return out


# --------------------------------------------------------------------------------------------
# bind guard
# --------------------------------------------------------------------------------------------
def is_loopback(host):
    h = (host or "").strip().strip("[]").lower()
    return h == "localhost" or h == "::1" or h.startswith("127.")


def bind_check(host, api_key_present, require_api_key_env=None):
    """facts 5.4: v0.7.0 refuses a keyless non-loopback bind (any keyless bind with REQUIRE_API_KEY)."""
    host = host or DEFAULT_SERVE_HOST
    loop = is_loopback(host)
    require = truthy_1_true(require_api_key_env)
    return {"host": host, "loopback": loop, "require_api_key": require,
            "needs_api_key": (not api_key_present) and (not loop or require)}


# --------------------------------------------------------------------------------------------
# DB path (facts 2.7) and the tilde trap
# --------------------------------------------------------------------------------------------
def resolve_db(explicit=None, db_flag=None, env_db=None, config_db=None, cwd=None, home=None,
               installed_version=None, flag_origin="--db", env_origin="AI_MEMORY_DB"):
    """Both candidates (v0.6.4: config ``db`` literal; v0.7.0: ``~`` expanded) and which one is real.

    ``path`` is the file the installed binary opens (the literal one for v0.6.x, the expanded one
    for >= 0.7.0); ``pin_env`` is true when the two differ - the upgrade must then pin
    ``AI_MEMORY_DB=<path>`` so v0.7.0 opens the same file.
    """
    if explicit:
        path = os.path.normpath(explicit if os.path.isabs(explicit) else os.path.join(cwd, explicit))
        v064 = v070 = path
        source = "db option"
    else:
        v064, origin = D.resolve_db_path(db_flag, env_db, config_db, cwd, home, False)
        v070, _ = D.resolve_db_path(db_flag, env_db, config_db, cwd, home, True)
        source = {"db option": flag_origin, "AI_MEMORY_DB": env_origin}.get(origin, origin)
    vt = D.version_tuple(installed_version)
    resolved_for = "0.7.0" if vt is not None and vt >= (0, 7, 0) else "0.6.x"
    path = v070 if resolved_for == "0.7.0" else v064
    other = v064 if path == v070 else v070
    return {
        "path": path, "source": source, "resolved_for": resolved_for,
        "v064_path": v064, "v070_path": v070, "v064_exists": os.path.isfile(v064),
        "v070_exists": os.path.isfile(v070), "tilde_trap": v064 != v070, "pin_env": v064 != v070,
        "exists": os.path.isfile(path), "other_candidate": other if other != path else None,
    }


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def read_db(path):
    """Schema version and counts, read-only (nothing created, nothing migrated)."""
    with S.Reader(path) as r:
        r.conn.execute("BEGIN")
        try:
            version, has_table = S.read_version(r.conn)
            counts = S.count_rows(r.conn)
        finally:
            r.conn.execute("COMMIT")
        mode = r.open_mode
    return {"schema_version": version if has_table else None, "schema_table": has_table,
            "schema_known": has_table and version in S.KNOWN_VERSIONS,
            "schema_release": S.KNOWN_VERSIONS.get(version) if has_table else None,
            "counts": counts, "open_mode": mode}


# --------------------------------------------------------------------------------------------
# disk
# --------------------------------------------------------------------------------------------
def existing_dir(path):
    """``path`` or its nearest existing ancestor (a snapshot dir that is made later lives there)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def disk_check(directory, nbytes):
    probe = existing_dir(directory)
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    needed = S.space_needed(nbytes)
    return {"dir": directory, "checked_dir": probe, "free": free, "needed": needed, "db_bytes": nbytes,
            "enough": free >= needed}


# --------------------------------------------------------------------------------------------
# binary
# --------------------------------------------------------------------------------------------
def probe_env(scratch, base=None):
    env = D.scratch_env(base, scratch)
    env.pop("AI_MEMORY_DB", None)
    return env


def scratch_parent(candidates):
    for c in candidates:
        if c and os.path.isdir(c) and os.access(c, os.W_OK | os.X_OK):
            return c
    return None


def probe_binary(binary, run, scratch_dirs, want_capabilities=True):
    """Version (``--version``) and the ``config`` capability (``config --help``), sha256.

    Runs in a private scratch dir (created in the first writable of ``scratch_dirs``, removed
    afterwards) used as HOME, so the preamble's config template never lands in a real HOME.
    """
    out = {"path": binary, "exists": os.path.isfile(binary), "executable": False, "version": None,
           "sha256": None, "version_rc": None, "version_error": None, "capabilities": {},
           "probe_dir": None}
    if not out["exists"]:
        return out
    out["executable"] = os.access(binary, os.X_OK)
    out["sha256"] = S.sha256_file(binary)
    if not out["executable"]:
        out["version_error"] = "%s is not executable" % binary
        return out
    parent = scratch_parent(scratch_dirs)
    if parent is None:
        out["version_error"] = ("no writable directory for the version probe among %s"
                                % ", ".join(d for d in scratch_dirs if d))
        return out
    scratch = tempfile.mkdtemp(prefix=".aimem-info-probe-", dir=parent)
    out["probe_dir"] = parent
    try:
        env = probe_env(scratch)
        rc, so, se = run([binary, "--version"], scratch, env)
        out["version_rc"] = rc
        out["version"] = D.parse_version(so) if rc == 0 else None
        if out["version"] is None:
            out["version_error"] = ((se or so or "").strip()[:300] or "no output")
        elif want_capabilities:
            rc, so, se = run([binary, "config", "--help"], scratch, env)
            out["capabilities"]["config_migrate"] = D.classify_help(rc, so, se)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# service user
# --------------------------------------------------------------------------------------------
def user_info(name, given_home=None):
    out = {"name": name, "exists": False, "uid": None, "gid": None, "passwd_home": None, "home": given_home,
           "home_exists": False, "home_matches": None}
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        pw = None
    if pw is not None:
        out.update(exists=True, uid=pw.pw_uid, gid=pw.pw_gid, passwd_home=pw.pw_dir)
        if not given_home:
            out["home"] = pw.pw_dir
        out["home_matches"] = os.path.normpath(out["home"]) == os.path.normpath(pw.pw_dir)
    out["home_exists"] = bool(out["home"]) and os.path.isdir(out["home"])
    return out


# --------------------------------------------------------------------------------------------
# everything
# --------------------------------------------------------------------------------------------
def gather(binary, service_user, run, home=None, db=None, env_files=None, pidfile=None, config_path=None,
           serve_args=None, target_version="0.7.0", snapshot_dir=None, work_dir=None, proc="/proc",
           uname=None):
    """All facts about the install. Raises InfoError (with ``result``) on a missing DB or platform.

    Returns ``(result, warnings)``.
    """
    warnings = []
    res = {}
    machine, system = uname if uname else (os.uname()[4], os.uname()[0])
    res["platform"] = {"machine": machine, "system": system}
    res["triple"] = map_triple(machine, system)

    user = user_info(service_user, home)
    res["service_user"] = user
    home = user["home"]
    if not home:
        raise InfoError("service user %s does not exist and no home was given" % service_user,
                        hint="create the user or fix the service user name", result=res)

    daemon = find_daemons(proc, pidfile, binary, user["uid"])
    p = daemon.pop("process")
    src = None
    if p is not None:
        src = "running daemon (pid %d)" % p["pid"]
        daemon.update(argv=p["argv"], cwd=p["cwd"], home=p["home"], uid=p["uid"], db_flag=p["db"],
                      serve_host=p["host"], serve_port=p["port"], env=p["env"] or {},
                      environ_readable=p["environ_readable"], source="proc")
        if not p["environ_readable"]:
            warnings.append("cannot read /proc/%d/environ (run as root or as the service user); "
                            "AI_MEMORY_DB of the running daemon taken from the env files instead" % p["pid"])
    elif serve_args:
        a = parse_argv(serve_args if _is_binary_arg(serve_args[0]) else [COMM] + list(serve_args))
        daemon.update(argv=list(serve_args), cwd=None, home=None, uid=None, db_flag=a["db"],
                      serve_host=a["host"], serve_port=a["port"], env={}, environ_readable=None,
                      source="serve_args")
        src = "serve_args"
    else:
        daemon.update(argv=None, cwd=None, home=None, uid=None, db_flag=None, serve_host=None,
                      serve_port=None, env={}, environ_readable=None, source=None)
    if daemon["pidfile_stale"]:
        warnings.append("pidfile %s names pid %s, which is not an ai-memory serve process (stale pidfile)"
                        % (pidfile, daemon["pidfile_pid"]))
    if daemon["pidfile_error"]:
        warnings.append(daemon["pidfile_error"])
    if daemon.get("home") and os.path.normpath(daemon["home"]) != os.path.normpath(home):
        warnings.append("the running daemon's HOME is %s, not %s: it reads %s/.config/ai-memory/config.toml"
                        % (daemon["home"], home, daemon["home"]))
    res["daemon"] = daemon

    file_env, files = read_env_files(env_files)
    res["env_files"] = files
    if daemon["source"] == "proc" and daemon["environ_readable"]:
        env, env_origin = daemon["env"], "AI_MEMORY_DB of the %s" % src
    else:
        env = relevant_env(file_env)
        env_origin = "AI_MEMORY_DB from %s" % ", ".join(f["path"] for f in files if "AI_MEMORY_DB" in f["keys"])
    res["env"] = {"AI_MEMORY_DB": env.get("AI_MEMORY_DB"), "no_config": "AI_MEMORY_NO_CONFIG" in env,
                  "require_api_key": env.get("AI_MEMORY_REQUIRE_API_KEY")}

    cfg_path = config_path or D.config_path(home)
    config = read_config(cfg_path)
    res["config"] = config
    if config["exists"] and config["parses"] is False:
        warnings.append("%s does not parse (%s); ai-memory ignores it and runs on its defaults"
                        % (cfg_path, config["error"]))

    res["binary"] = bin_info = probe_binary(binary, run, [work_dir, os.path.dirname(work_dir or "") or None,
                                                             home], want_capabilities=True)

    cwd = daemon["cwd"] or home
    cfg_db = config["db"] if (config["parses"] and not res["env"]["no_config"]) else None
    dbi = resolve_db(explicit=db, db_flag=daemon["db_flag"], env_db=res["env"]["AI_MEMORY_DB"], config_db=cfg_db,
                     cwd=cwd, home=home, installed_version=bin_info["version"],
                     flag_origin="--db of the %s" % src, env_origin=env_origin)
    dbi["cwd"] = cwd
    if db and daemon["source"] == "proc":
        daemon_db = resolve_db(db_flag=daemon["db_flag"], env_db=res["env"]["AI_MEMORY_DB"], config_db=cfg_db,
                               cwd=cwd, home=home, installed_version=bin_info["version"])["path"]
        dbi["daemon_path"] = daemon_db
        if daemon_db != dbi["path"]:
            warnings.append("db is %s but the running daemon (pid %s) resolves %s" % (dbi["path"], daemon["pid"],
                                                                                      daemon_db))
    res["db"] = dbi
    wal = S.sidecars(dbi["path"])["wal"]
    dbi.update(size=_size(dbi["path"]), wal_size=_size(wal))
    snapdir = snapshot_dir or os.path.dirname(dbi["path"])
    res["disk"] = disk_check(snapdir, dbi["size"] + dbi["wal_size"])

    bind = bind_check(daemon["serve_host"], config["api_key_present"], res["env"]["require_api_key"])
    res["bind"] = bind
    res["bind_needs_api_key"] = bind["needs_api_key"]

    if not dbi["exists"]:
        other = ""
        if dbi["other_candidate"] and os.path.isfile(dbi["other_candidate"]):
            other = "; a DB exists at %s, which is where the other ai-memory version would look" % (
                dbi["other_candidate"])
        raise InfoError(
            "database %s (from %s, cwd %s) does not exist%s; ai-memory would create an empty DB there"
            % (dbi["path"], dbi["source"], cwd, other),
            hint="point the install at the real DB (aimem_db_path / db, AI_MEMORY_DB in the env file or the "
                 "config's `db`), or restore the DB before upgrading", result=res)
    dbi.update(read_db(dbi["path"]))
    if not dbi["schema_table"]:
        warnings.append("%s has no schema_version table: not an ai-memory DB, or a damaged one" % dbi["path"])
    elif not dbi["schema_known"]:
        warnings.append("%s is at schema v%d, which no known ai-memory release writes (known: %s)"
                        % (dbi["path"], dbi["schema_version"],
                           ", ".join("v%d %s" % kv for kv in sorted(S.KNOWN_VERSIONS.items()))))
    vt, tt = D.version_tuple(bin_info["version"]), D.version_tuple(target_version)
    res["target_version"] = target_version
    res["binary_below_target"] = vt is None or (tt is not None and vt < tt)
    return res, warnings
