#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aimem_doctor
short_description: Health gate over the real C(ai-memory doctor), with a schema guard
version_added: "1.0.0"
description:
  - Runs C(ai-memory doctor --json) (the flag after the subcommand; C(ai-memory --json doctor)
    prints text) as the service user, parses the real report (C(facts) are C([key, value]) pairs,
    severities C(info), C(warning), C(critical), C(notavailable)) and fails the task when a section
    at or above O(fail_on) is found, naming each failing section with its note, facts and a fix.
  - Optionally runs C(ai-memory verify-signed-events-chain --format json) and gates on
    C(chain_holds) and, with O(require_signatures), on an empty C(signature_failures) list
    (signature failures do not change C(chain_holds) or the exit code upstream).
  - B(doctor is not read-only.) It opens the database with the same code as the daemon, which
    migrates an older schema (a v0.7.0 binary turns a v20 DB into v54, a data-changing migration)
    and creates a missing DB file. So before running anything that opens the DB, the module reads
    the DB's schema version itself, read-only (C(MAX(version)) of the C(schema_version) table; it
    never creates, migrates or checkpoints the file), and compares it with the schema the binary
    produces. A binary newer than the DB is refused unless O(allow_migration=true). A DB newer
    than the binary is reported as RV(db.schema_supported=false) with a warning, because
    v0.6.x silently accepts newer DBs.
  - The binary's target schema is probed without touching the user's DB by running
    C(<binary> --db <scratch>/probe.db boot --format json --quiet) in a private temporary
    directory created under the service user's HOME (falling back to the module's remote tmpdir)
    and removed afterwards.
  - The binary's version and capabilities are probed, not guessed from the version string
    (the C(v0.7.0) tag and the C(release/v0.7.0) branch both print C(ai-memory 0.7.0));
    C(<sub> --help) exits 0 when the subcommand exists and 2 with C(unrecognized subcommand) when
    it does not. C(--help) never opens the database.
  - All probes run with C(HOME) pointed at the private scratch directory, so the binary's
    start-up preamble (which writes a comment-only C(~/.config/ai-memory/config.toml) template
    when it is missing, and on v0.7.0 creates the audit directory) touches only that scratch
    directory. C(AI_MEMORY_AUDIT_DIR), C(AI_MEMORY_LOG_DIR), C(AI_MEMORY_KEY_DIR) and the
    C(XDG_*_HOME) variables are pointed into it as well. The real doctor run uses the given
    O(environment) (normally the service user's HOME), where that preamble does run.
  - With O(probe_only=true) only those binary probes run (version, capabilities, target schema on a
    scratch DB); no database is resolved, opened or required, nothing else runs, and the result is
    never changed. Use it to vet a freshly unpacked binary before installing it.
attributes:
  check_mode:
    support: full
    details:
      - In check mode only the probes run (version, C(--help), C(boot) against a scratch DB) and
        the schema version is read read-only. Doctor and the chain check are B(not) run, since
        they open and may migrate or create the DB; the result has
        RV(skipped_in_check_mode=true) and RV(would_run) lists the commands. The schema guard
        still applies, so a run that would be refused fails in check mode too.
  diff_mode:
    support: none
    details:
      - The module writes no file of its own.
options:
  binary:
    description:
      - The C(ai-memory) executable. A name without C(/) is looked up in C(PATH).
    type: str
    default: ai-memory
  db:
    description:
      - Database path. Relative paths are relative to O(chdir).
      - The resolved absolute path is always passed as C(--db), so the binary opens exactly the
        file whose schema version the module checked.
      - When omitted, the module resolves the DB exactly like the binary does (C(AI_MEMORY_DB)
        unless it is the literal C(ai-memory.db), else the config's top-level C(db), tilde-expanded
        by v0.7.0 only, else C(ai-memory.db) in the working directory) so that it can read the
        schema version first.
    type: path
  chdir:
    description:
      - Working directory for every command; it matters for the CWD-relative default
        C(ai-memory.db).
      - Defaults to the C(HOME) from O(environment), else the module's HOME.
    type: path
  environment:
    description:
      - Environment for the doctor and chain runs, normally at least C(HOME) of the service user
        (the config is always C($HOME/.config/ai-memory/config.toml)).
      - Values are never returned. Use O(secret_environment) for secrets such as
        C(AI_MEMORY_LLM_API_KEY) or C(AI_MEMORY_DB_PASSPHRASE) so they are also hidden from logs.
        Values of names that look secret (containing C(KEY), C(SECRET), C(TOKEN), C(PASS),
        C(CREDENTIAL)) are masked like O(secret_environment) anyway, with a warning.
      - Boolean values are rejected; ai-memory parses strings, and C(true)/C(false) do not mean
        what they seem for several variables (write C("1")/C("0")).
    type: dict
    default: {}
  secret_environment:
    description:
      - Like O(environment) (merged over it) but marked C(no_log).
    type: dict
    default: {}
  fail_on:
    description:
      - Lowest section severity that fails the gate. V(never) only reports (except a database
        that doctor could not open, which always fails).
      - The gate uses the sections that are not in O(ignore_sections); the result always keeps
        the full report.
    type: str
    choices: [critical, warning, never]
    default: critical
  ignore_sections:
    description:
      - Section names left out of the gate decision, for example C(LLM Reachability (#1146)) on
        hosts where Ollama is intentionally down. Names are matched exactly; a name that is not
        in the report produces a warning.
      - The single-section report of a database that could not be opened cannot be ignored, and
        fails the task whatever O(fail_on) says.
    type: list
    elements: str
    default: []
  verify_chain:
    description:
      - Also run C(verify-signed-events-chain --format json) and fail when the chain breaks.
      - Needs a v0.7.0 binary; it opens (and would migrate) the DB, so the schema guard applies.
      - The local DB must exist, also with O(remote) (the command would create an empty one).
      - Independent of O(fail_on).
    type: bool
    default: false
  require_signatures:
    description:
      - With O(verify_chain), also fail when C(signature_failures) is not empty.
    type: bool
    default: false
  remote:
    description:
      - Run doctor in remote mode against this daemon URL (C(doctor --remote URL)). A local DB
        is then not required, but when it exists the schema guard still applies.
    type: str
  allow_migration:
    description:
      - Allow running a binary whose schema is newer than the DB's, which migrates the DB. Set it
        only after a verified snapshot of the DB (upstream takes none).
    type: bool
    default: false
  probe_only:
    description:
      - Only probe the binary (C(--version), C(<sub> --help) for each capability, C(boot --format json)
        against a scratch DB in a private directory that is removed afterwards) and return
        RV(binary). No database is resolved, opened or required; doctor and the chain check do not
        run; RV(changed) is always V(false). The same in check mode.
      - The scratch directory is created under C(HOME) from O(environment) (else the module's
        remote tmpdir), so point C(HOME) at a directory next to the data, never C(/tmp).
      - Cannot be combined with O(db), O(remote), O(verify_chain), O(require_signatures) or
        O(allow_migration).
    type: bool
    default: false
    version_added: "1.0.0"
notes:
  - Run it as the service user (C(become_user)) with that user's HOME in O(environment).
  - RV(changed) is V(false) for a pure health gate. It is V(true) only when the run actually
    changed the DB's schema version (O(allow_migration=true) with an older DB), which is a real
    change to the host; in check mode it predicts exactly that.
  - A missing database file is refused in local mode, because doctor would create an empty DB
    there and report it healthy.
seealso:
  - module: aimem.fleet.aimem_permissions
author:
  - aimem.fleet contributors
"""

EXAMPLES = r"""
- name: Gate on ai-memory health (critical sections fail the play)
  aimem.fleet.aimem_doctor:
    binary: /usr/local/bin/ai-memory
    db: /var/lib/ai-memory/ai-memory.db
    environment:
      HOME: /var/lib/ai-memory
  become: true
  become_user: ai-memory

- name: Hosts without a local LLM - do not gate on the LLM section, verify the signed chain
  aimem.fleet.aimem_doctor:
    db: /var/lib/ai-memory/ai-memory.db
    environment:
      HOME: /var/lib/ai-memory
    ignore_sections:
      - LLM Reachability (#1146)
    verify_chain: true
    require_signatures: true

- name: First v0.7.0 run after the snapshot - allowed to migrate v20 -> v54
  aimem.fleet.aimem_doctor:
    db: /var/lib/ai-memory/ai-memory.db
    environment:
      HOME: /var/lib/ai-memory
    secret_environment:
      AI_MEMORY_LLM_API_KEY: "{{ vault_llm_key }}"
    allow_migration: true
  register: health

- name: Only probe capabilities (check mode never opens the DB with the binary)
  aimem.fleet.aimem_doctor:
    db: /var/lib/ai-memory/ai-memory.db
    environment:
      HOME: /var/lib/ai-memory
  check_mode: true
  register: probe

- name: Use config migrate only where the binary really has it
  ansible.builtin.debug:
    msg: "config migrate available: {{ probe.binary.capabilities.config_migrate }}"

- name: Vet an unpacked release binary before installing it (no DB needed or touched)
  aimem.fleet.aimem_doctor:
    binary: /var/lib/ai-memory/.aimem-fleet/unpack-0.7.0/ai-memory
    probe_only: true
    environment:
      HOME: /var/lib/ai-memory/.aimem-fleet
  register: candidate

- name: Refuse a build that prints 0.7.0 but lacks config migrate (the v0.7.0 tag build)
  ansible.builtin.assert:
    that:
      - candidate.binary.version == '0.7.0'
      - candidate.binary.capabilities.config_migrate | bool
"""

RETURN = r"""
binary:
  description: What was probed about the binary.
  returned: always
  type: dict
  contains:
    path:
      description: Resolved executable.
      type: str
    version:
      description: Version from C(--version) (both 0.7.0 builds print C(0.7.0)).
      type: str
      sample: 0.7.0
    schema_version:
      description: Schema number the binary migrates to, from C(boot --format json) on a scratch DB.
      type: int
      sample: 54
    capabilities:
      description: Subcommands probed with C(--help); V(null) when the probe was inconclusive.
      type: dict
      sample: {config_migrate: true, verify_signed_events_chain: true, identity: true, governance_migrate: true}
db:
  description: The database and its schema before and after.
  returned: unless O(probe_only=true)
  type: dict
  contains:
    path:
      description: Absolute DB path the binary opens.
      type: str
    origin:
      description: Where the path came from (C(db option), C(AI_MEMORY_DB), C(config db), C(default (CWD))).
      type: str
    exists:
      description: Whether the file existed before the run.
      type: bool
    schema_version_before:
      description: Schema read read-only before anything ran (V(null) when the file is missing).
      type: int
      sample: 20
    schema_version_after:
      description: Schema read after the run (same as before in check mode).
      type: int
      sample: 54
    schema_action:
      description: V(same), V(migrate), V(refuse) or V(newer).
      type: str
    schema_supported:
      description: V(false) when the DB is newer than the binary's schema.
      type: bool
migrated:
  description: Whether the run changed the DB's schema version.
  returned: always
  type: bool
overall:
  description: Overall severity of the report (maximum over all sections).
  returned: when doctor ran
  type: str
  sample: info
effective_overall:
  description: Overall severity over the sections not ignored.
  returned: when doctor ran
  type: str
sections:
  description: The report's sections in order, C(facts) as a dict.
  returned: when doctor ran
  type: list
  elements: dict
  sample:
    - name: Storage
      severity: info
      facts: {total_memories: "12", links: "0", dim_violations: "0"}
    - name: LLM Reachability (#1146)
      severity: critical
      facts: {backend: ollama, base_url: "http://127.0.0.1:11434", error: "connection refused"}
critical_sections:
  description: Names of the critical sections (ignored ones included).
  returned: when doctor ran
  type: list
  elements: str
warning_sections:
  description: Names of the warning sections (ignored ones included).
  returned: when doctor ran
  type: list
  elements: str
failing_sections:
  description: Sections that failed the gate.
  returned: when doctor ran
  type: list
  elements: str
db_open_failed:
  description: Doctor could not open the DB (the single critical Storage section report).
  returned: when doctor ran
  type: bool
source:
  description: The DB path as the binary resolved it (C(source) of the report).
  returned: when doctor ran
  type: str
doctor_rc:
  description: Exit code of doctor (2 when overall is critical).
  returned: when doctor ran
  type: int
chain:
  description: Parsed C(verify-signed-events-chain) output.
  returned: when O(verify_chain=true) and not in check mode
  type: dict
  sample: {rows_checked: 12, chain_break: null, signature_failures: [], chain_holds: true}
gate:
  description: The gate decision.
  returned: unless O(probe_only=true)
  type: dict
  contains:
    passed:
      description: Whether the gate passed (V(null) in check mode, where doctor does not run).
      type: bool
    fail_on:
      description: The threshold used.
      type: str
    reasons:
      description: Every reason the gate failed.
      type: list
      elements: str
    ignored_sections:
      description: Sections left out of the decision.
      type: list
      elements: str
skipped_in_check_mode:
  description: V(true) in check mode; doctor and the chain check were not run.
  returned: always
  type: bool
would_run:
  description: Commands that would run (check mode).
  returned: in check mode
  type: list
  elements: list
commands:
  description: Commands that ran, probes included (argv lists; no environment values).
  returned: always
  type: list
  elements: list
environment_keys:
  description: Names (not values) of the environment variables passed.
  returned: always
  type: list
  elements: str
"""

import os
import platform
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.aimem.fleet.plugins.module_utils import doctor as D
from ansible_collections.aimem.fleet.plugins.module_utils.sqlite_schema import Reader, SchemaError, read_version

try:
    import tomllib as _toml  # Python 3.11+
    HAS_TOML = True
    TOML_IMPORT_ERROR = None
except ImportError:
    try:
        import tomlkit as _toml
        HAS_TOML = True
        TOML_IMPORT_ERROR = None
    except ImportError as e:
        _toml = None
        HAS_TOML = False
        TOML_IMPORT_ERROR = e


class Doctor(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.host = platform.node() or "this host"
        self.commands = []
        self.result = {"changed": False, "migrated": False, "skipped_in_check_mode": False,
                       "commands": self.commands}

    # -- helpers --------------------------------------------------------------------------
    def fail(self, msg, **extra):
        res = dict(self.result)
        res.update(extra)
        self.module.fail_json(msg=msg, **res)

    def run(self, argv, cwd, env):
        self.commands.append(list(argv))
        rc, out, err = self.module.run_command(argv, cwd=cwd, environ_update=env, check_rc=False)
        return rc, out, err

    def build_env(self):
        env = {}
        for src in ("environment", "secret_environment"):
            for k, v in (self.p[src] or {}).items():
                if isinstance(v, bool):
                    self.module.fail_json(
                        msg="%s.%s on %s is a boolean; ai-memory parses strings and true/false do not mean what "
                            "they seem for several variables - quote it, e.g. '1' or '0'" % (src, k, self.host))
                if v is None:
                    continue
                if src == "environment" and D.looks_secret(str(k)):
                    if to_native(v):
                        # masked everywhere in the result, including invocation.module_args
                        self.module.no_log_values.add(to_native(v))
                    self.module.warn("environment.%s looks like a secret; pass it in secret_environment so it is "
                                     "hidden from logs (its value is never returned)" % k)
                env[str(k)] = to_native(v)
        return env

    def resolve_binary(self):
        b = self.p["binary"]
        if "/" in b:
            if not (os.path.isfile(b) and os.access(b, os.X_OK)):
                self.fail("ai-memory binary %s on %s is missing or not executable; install it first or fix `binary`"
                          % (b, self.host))
            return os.path.abspath(b)
        path = self.module.get_bin_path(b, required=False)
        if not path:
            self.fail("%s not found in PATH on %s; install ai-memory or give `binary` as a full path" % (b, self.host))
        return path

    # -- probes ---------------------------------------------------------------------------
    def probe(self, binary, env, home):
        base = home if home and os.path.isdir(home) and os.access(home, os.W_OK) else self.module.tmpdir
        try:
            scratch = tempfile.mkdtemp(prefix=".aimem-doctor-probe-", dir=base)
        except OSError as e:
            self.fail("cannot create a probe directory under %s on %s: %s; make the service user's HOME writable"
                      % (base, self.host, to_native(e)))
        try:
            # The start-up preamble creates the audit directory (and may write logs) wherever these
            # point; keep every such write inside the scratch directory, never in the real HOME or
            # the service's real state/log directories (check mode writes nothing real).
            penv = D.scratch_env(env, scratch)
            penv["AI_MEMORY_BOOT_ENABLED"] = "1"
            rc, out, err = self.run([binary, "--version"], scratch, penv)
            version = D.parse_version(out)
            if rc != 0 or version is None:
                self.fail("`%s --version` on %s did not print 'ai-memory X.Y.Z' (rc=%s): %s; check that %s is an "
                          "ai-memory binary for this architecture" % (binary, self.host, rc, (err or out).strip()[:300], binary))
            caps = {}
            for name, args in D.CAPABILITY_SUBCOMMANDS:
                rc, out, err = self.run([binary] + args, scratch, penv)
                caps[name] = D.classify_help(rc, out, err)
                if caps[name] is None:
                    self.module.warn("capability probe `%s %s` on %s was inconclusive (rc=%s): %s"
                                     % (binary, " ".join(args), self.host, rc, (err or out).strip()[:200]))
            rc, out, err = self.run([binary, "--db", os.path.join(scratch, "probe.db"), "boot", "--format", "json",
                                     "--quiet"], scratch, penv)
            try:
                schema, _boot = D.parse_boot_schema(out)
            except D.DoctorError as e:
                self.fail("cannot learn the schema version of %s on %s from `boot --format json` on a scratch DB "
                          "(rc=%s): %s%s" % (binary, self.host, rc, to_native(e),
                                             ("; " + e.hint) if e.hint else ""))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {"path": binary, "version": version, "schema_version": schema, "capabilities": caps}

    # -- DB -------------------------------------------------------------------------------
    def config_db(self, env, home):
        if env.get("AI_MEMORY_NO_CONFIG", os.environ.get("AI_MEMORY_NO_CONFIG")) is not None:
            return None
        path = D.config_path(home)
        if not os.path.isfile(path):
            return None
        if not HAS_TOML:
            self.module.fail_json(msg=missing_required_lib("tomlkit") + " (needed to read `db` from %s on %s; or set "
                                  "the `db` option)" % (path, self.host), exception=str(TOML_IMPORT_ERROR))
        try:
            with open(path, "r") as f:
                text = f.read()
            data = _toml.loads(text)
        except Exception:  # the binary falls back to defaults on a parse error too
            self.module.warn("%s on %s does not parse; ai-memory ignores it and uses its defaults" % (path, self.host))
            return None
        val = data.get("db")
        return str(val) if val is not None else None

    def read_version(self, path):
        """Schema version read-only (no -wal/-shm created, nothing migrated)."""
        with Reader(path) as r:
            return read_version(r.conn)[0]

    # -- main -----------------------------------------------------------------------------
    def main(self):
        p = self.p
        if p["require_signatures"] and not p["verify_chain"]:
            self.module.fail_json(msg="require_signatures needs verify_chain: true (task on %s)" % self.host)
        if p["probe_only"]:
            clash = [k for k in ("db", "remote", "verify_chain", "require_signatures", "allow_migration") if p[k]]
            if clash:
                self.module.fail_json(msg="probe_only: true on %s probes the binary only and never touches a "
                                          "database; drop %s from the task" % (self.host, ", ".join(clash)))
        env = self.build_env()
        self.result["environment_keys"] = sorted(env)
        home = env.get("HOME") or os.environ.get("HOME") or os.path.expanduser("~")
        if p["probe_only"]:
            binary = self.resolve_binary()
            info = self.probe(binary, env, home)
            self.result["binary"] = info
            self.result["changed"] = False
            caps = ", ".join("%s=%s" % (k, info["capabilities"][k]) for k in sorted(info["capabilities"]))
            self.module.exit_json(msg="probed %s on %s: ai-memory %s, schema v%s, capabilities: %s"
                                      % (binary, self.host, info["version"], info["schema_version"], caps),
                                  **self.result)
        cwd = p["chdir"] or home
        if not os.path.isdir(cwd):
            self.fail("working directory %s does not exist on %s; fix `chdir` (or HOME in `environment`)" % (cwd, self.host))
        binary = self.resolve_binary()

        info = self.probe(binary, env, home)
        self.result["binary"] = info
        vt = D.version_tuple(info["version"]) or (0, 0, 0)

        env_db = env.get("AI_MEMORY_DB", os.environ.get("AI_MEMORY_DB"))
        cfg_db = None
        if p["db"] is None and (env_db is None or env_db == D.DEFAULT_DB):
            cfg_db = self.config_db(env, home)
        db_path, origin = D.resolve_db_path(p["db"], env_db, cfg_db, cwd, home, vt >= (0, 7, 0))
        dbinfo = {"path": db_path, "origin": origin, "exists": os.path.isfile(db_path),
                  "schema_version_before": None, "schema_version_after": None,
                  "schema_action": None, "schema_supported": None}
        self.result["db"] = dbinfo
        self.result["gate"] = {"passed": None, "fail_on": p["fail_on"], "reasons": [], "ignored_sections": []}

        if not dbinfo["exists"] and not p["remote"]:
            self.fail("database %s (from %s) does not exist on %s; ai-memory would create an empty DB there and "
                      "doctor would call it healthy - fix `db`/`chdir`/HOME, or restore the DB first"
                      % (db_path, origin, self.host))
        if not dbinfo["exists"] and p["verify_chain"]:
            self.fail("database %s (from %s) does not exist on %s; verify-signed-events-chain opens the local DB, "
                      "so it would create an empty one and report an intact chain - fix `db`/`chdir`/HOME, or set "
                      "verify_chain: false for a remote-only check" % (db_path, origin, self.host))
        decision = None
        if dbinfo["exists"]:
            try:
                before = self.read_version(db_path)
            except SchemaError as e:
                self.fail("cannot read the schema version of %s on %s read-only: %s%s"
                          % (db_path, self.host, to_native(e), ("; " + e.hint) if e.hint else ""))
            decision = D.schema_decision(before, info["schema_version"], p["allow_migration"])
            dbinfo.update(schema_version_before=before, schema_version_after=before,
                          schema_action=decision["action"], schema_supported=decision["schema_supported"])
            if decision["action"] == "refuse":
                self.fail("refusing to run %s (ai-memory %s, schema v%d) against %s on %s: the DB is at schema v%d and "
                          "any command that opens it migrates it irreversibly. Take a verified snapshot first, then "
                          "re-run with allow_migration: true (or use the binary that matches the DB)"
                          % (binary, info["version"], info["schema_version"], db_path, self.host, before))
            if decision["action"] == "newer":
                self.module.warn("%s on %s is at schema v%d, newer than %s (ai-memory %s) supports (v%d); that binary "
                                 "does not refuse and runs degraded - use the matching binary"
                                 % (db_path, self.host, before, binary, info["version"], info["schema_version"]))

        # Always the resolved absolute path: the binary must open exactly the file whose schema was just
        # checked. Left to resolve on its own it can pick another file (e.g. a config it rejects makes
        # it fall back to ./ai-memory.db) and migrate or create that one unchecked.
        dbflag = ["--db", db_path]
        doctor_argv = [binary] + dbflag + ["doctor", "--json"] + (["--remote", p["remote"]] if p["remote"] else [])
        chain_argv = [binary] + dbflag + ["verify-signed-events-chain", "--format", "json"]
        if p["verify_chain"] and info["capabilities"].get("verify_signed_events_chain") is False:
            self.fail("%s (ai-memory %s) on %s has no verify-signed-events-chain subcommand; upgrade to v0.7.0 first "
                      "or set verify_chain: false" % (binary, info["version"], self.host))

        if self.module.check_mode:
            self.result["skipped_in_check_mode"] = True
            self.result["would_run"] = [doctor_argv] + ([chain_argv] if p["verify_chain"] else [])
            self.result["changed"] = bool(decision and decision["action"] == "migrate")
            self.result["migrated"] = False
            msg = "check mode: probes only; doctor not run because it opens (and may migrate or create) %s" % db_path
            if self.result["changed"]:
                msg += "; a real run would migrate it from schema v%d to v%d (allow_migration: true)" % (
                    dbinfo["schema_version_before"], info["schema_version"])
            self.module.exit_json(msg=msg, **self.result)

        reasons = []
        rc, out, err = self.run(doctor_argv, cwd, env)
        self.result["doctor_rc"] = rc
        if rc == 78:
            self.fail("%s exited 78 on %s before running doctor: the hooks HMAC secret in %s is not valid hex; fix it"
                      % (binary, self.host, D.config_path(home)))
        try:
            report = D.parse_doctor_report(out)
        except D.DoctorError as e:
            self.fail("ai-memory doctor on %s (db %s) gave no usable report (rc=%s): %s; fix: %s; stderr: %s"
                      % (self.host, db_path, rc, to_native(e),
                         e.hint or "check that %s is an ai-memory binary whose `doctor --json` prints the "
                                   "health report, and the error on stderr" % binary,
                         (err or "").strip()[-500:]))
        g = D.gate(report, p["fail_on"], p["ignore_sections"])
        for name in g["unknown_ignored"]:
            self.module.warn("ignore_sections names %r, which is not a section of the doctor report on %s "
                             "(sections: %s)" % (name, self.host, ", ".join(s["name"] for s in report["sections"])))
        self.result.update(
            overall=report["overall"], effective_overall=g["effective_overall"], sections=report["sections"],
            critical_sections=D.sections_with(report, "critical"), warning_sections=D.sections_with(report, "warning"),
            failing_sections=g["failing_sections"], db_open_failed=report["db_open_failed"], source=report["source"],
            mode=report["mode"], generated_at=report["generated_at"])
        if report["mode"] == "local" and report["source"]:
            src = report["source"] if os.path.isabs(report["source"]) else os.path.join(cwd, report["source"])
            if os.path.normpath(src) != db_path:
                self.module.warn("doctor on %s reports DB %s but the module resolved %s; set `db` explicitly"
                                 % (self.host, report["source"], db_path))
        if not g["passed"]:
            reasons.append("doctor gate (fail_on=%s) failed: %s" % (p["fail_on"], D.describe_failures(report, g, p["remote"])))

        if p["verify_chain"]:
            rc, out, err = self.run(chain_argv, cwd, env)
            try:
                chain = D.parse_chain_report(out)
            except D.DoctorError as e:
                self.fail("verify-signed-events-chain on %s (db %s) failed (rc=%s): %s; fix: make the DB readable "
                          "and writable by the service user (and give its passphrase if it is encrypted), see "
                          "stderr: %s" % (self.host, db_path, rc, to_native(e), (err or "").strip()[-500:]))
            self.result["chain"] = chain
            reasons.extend(D.chain_gate(chain, p["require_signatures"]))

        if os.path.isfile(db_path):
            try:
                after = self.read_version(db_path)
            except SchemaError as e:
                after = None
                self.module.warn("cannot re-read the schema version of %s on %s: %s" % (db_path, self.host, to_native(e)))
            dbinfo["schema_version_after"] = after
            migrated = after is not None and after != dbinfo["schema_version_before"]
            self.result["migrated"] = migrated
            self.result["changed"] = migrated
        self.result["gate"] = {"passed": not reasons, "fail_on": p["fail_on"], "reasons": reasons,
                               "ignored_sections": g["ignored_sections"]}
        if reasons:
            self.fail("ai-memory health gate failed on %s (db %s): %s" % (self.host, db_path, " | ".join(reasons)))
        msg = "ai-memory doctor on %s: overall %s, gate (fail_on=%s) passed on %s" % (
            self.host, report["overall"], p["fail_on"], g["effective_overall"])
        if self.result["migrated"]:
            msg += "; the run migrated %s from schema v%s to v%s" % (
                db_path, dbinfo["schema_version_before"], dbinfo["schema_version_after"])
        self.module.exit_json(msg=msg, **self.result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            binary=dict(type="str", default="ai-memory"),
            db=dict(type="path"),
            chdir=dict(type="path"),
            environment=dict(type="dict", default={}),
            secret_environment=dict(type="dict", default={}, no_log=True),
            fail_on=dict(type="str", default="critical", choices=["critical", "warning", "never"]),
            ignore_sections=dict(type="list", elements="str", default=[]),
            verify_chain=dict(type="bool", default=False),
            require_signatures=dict(type="bool", default=False),
            remote=dict(type="str"),
            allow_migration=dict(type="bool", default=False),
            probe_only=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    Doctor(module).main()


if __name__ == "__main__":
    main()
