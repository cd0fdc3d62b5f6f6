#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aimem_info
short_description: Read-only facts about one ai-memory install (daemon, DB path, schema, config, binary)
version_added: "1.0.0"
description:
  - Gathers what an upgrade of C(ai-memory) from v0.6.x to v0.7.0 must know about one install on
    the target, and changes nothing (RV(changed) is always V(false); check mode gives the same
    answer).
  - B(The running daemon is the truth.) C(ai-memory serve) processes are found by O(pidfile) and by
    scanning C(/proc) for processes whose C(comm) is C(ai-memory) running C(serve) as
    O(service_user) with O(binary). Their real argv (C(/proc/<pid>/cmdline); C(--db), C(serve
    --host)), their C(AI_MEMORY_DB) (C(/proc/<pid>/environ); no other value of that environment is
    ever read into the result) and their working directory (C(/proc/<pid>/cwd)) win over O(env_files),
    O(serve_args) and O(home). Reading another user's C(/proc/<pid>/environ) needs root.
  - B(DB path) resolved like the binary does it - C(--db) / C(AI_MEMORY_DB) unless it is the literal
    C(ai-memory.db), then the config's top-level C(db), then C(ai-memory.db) in the CWD (the daemon's,
    else O(home)).
  - B(The tilde trap.) v0.6.4 uses a config C(db = "~/...") literally, so its data lives at
    C(<CWD>/~/...); v0.7.0 expands C(~) to C($HOME) and would open (and create) another file.
    Both candidates are reported; RV(db.path) is the file the installed binary opens (the literal one
    for v0.6.x), RV(db.v070_path) where v0.7.0 will look, and RV(db.pin_env=true) when they differ -
    the upgrade must then pin C(AI_MEMORY_DB=<db.path>) in the service's env file.
  - The module B(fails) when the resolved DB does not exist (ai-memory would create an empty one
    there), naming the host, the file, where the path came from and the fix.
  - The DB's schema version (C(MAX(version)) of the C(schema_version) table) and row counts are read
    natively read-only; nothing is created, migrated or checkpointed. An unknown schema or a missing
    table is reported (RV(db.schema_known), RV(db.schema_table)), not refused - that is the
    caller's decision.
  - The binary's version is read with C(<binary> --version) and its C(config) subcommand probed with
    C(config --help) (the v0.7.0 tag and branch builds both print C(0.7.0)), both run with C(HOME)
    and the audit, log, key and XDG directories pointed into a private scratch directory created in
    O(work_dir) (else its parent, else O(home)) and removed afterwards, because the binary's
    start-up preamble writes a config template into C($HOME). Neither command opens the DB.
attributes:
  check_mode:
    support: full
    details:
      - The module never changes anything; check mode runs the same read-only gathering.
  diff_mode:
    support: none
    details:
      - Nothing is written, so there is nothing to diff.
options:
  binary:
    description:
      - Path of the installed C(ai-memory) executable.
    type: path
    default: /usr/local/bin/ai-memory
  service_user:
    description:
      - The user the daemon and the CLI run as.
    type: str
    required: true
  home:
    description:
      - That user's HOME as the service sees it. Defaults to the home in the passwd database.
      - RV(service_user.home_matches) tells whether it equals the passwd home.
    type: path
  db:
    description:
      - Explicit DB path; skips the resolution (the resolved path of a running daemon is still
        compared and a warning given when it differs). Empty means resolve.
    type: path
  env_files:
    description:
      - Files of C(KEY=VALUE) lines the service manager loads (for example C(/etc/ai-memory/env)),
        in load order (a later file wins). Only used when no running daemon's environment is
        readable. Only C(AI_MEMORY_DB), C(AI_MEMORY_NO_CONFIG) and C(AI_MEMORY_REQUIRE_API_KEY) are
        read; the names (never the values) of all keys are returned.
    type: list
    elements: path
    default: []
  pidfile:
    description:
      - The daemon's pidfile, if it has one. A pidfile naming a process that is not an
        C(ai-memory serve) is reported as stale (RV(daemon.pidfile_stale)).
    type: path
  config_path:
    description:
      - The config file. Defaults to C(<home>/.config/ai-memory/config.toml), the only place the
        binary reads.
    type: path
  serve_args:
    description:
      - The daemon's argv when it is known but the daemon is not running (for example the
        process manager's start command), with or without the binary in front. Ignored while a
        daemon runs.
    type: list
    elements: str
    default: []
  target_version:
    description:
      - The version the upgrade installs; RV(binary_below_target) compares with it.
    type: str
    default: "0.7.0"
  snapshot_dir:
    description:
      - Where the pre-migration snapshot will be written; the free space of its filesystem (or the
        nearest existing parent's) is compared with the DB and C(-wal) size plus 5 % plus 16 MiB,
        what C(aimem.fleet.aimem_schema) requires. Defaults to the DB's directory.
    type: path
  work_dir:
    description:
      - Work area next to the data in which the version probe's scratch directory is created (then
        removed). When it does not exist yet, its parent is used, then O(home). Never C(/tmp).
    type: path
requirements:
  - Python 3.8+ on the target. Python 3.11+ reads TOML with C(tomllib); older Pythons need C(tomlkit)
    to parse the config (without either, RV(config.parses) is V(null) and RV(config.error) says why).
notes:
  - Run it as root (or as the service user) so that C(/proc/<pid>/environ) of the daemon and the DB
    are readable.
seealso:
  - module: aimem.fleet.aimem_schema
  - module: aimem.fleet.aimem_doctor
author:
  - aimem.fleet maintainers
"""

EXAMPLES = r"""
- name: Facts about the ai-memory install
  aimem.fleet.aimem_info:
    binary: /usr/local/bin/ai-memory
    service_user: ai-memory
    env_files: [/etc/ai-memory/env]
    pidfile: /run/ai-memory.pid
    work_dir: /var/lib/ai-memory/.aimem-fleet
  register: info

- name: Refuse a host whose DB is at an unknown schema
  ansible.builtin.assert:
    that: info.db.schema_version in [20, 54]
    fail_msg: "{{ inventory_hostname }}: {{ info.db.path }} is at schema {{ info.db.schema_version }}"

- name: Pin the real DB for v0.7.0 when the config's db uses ~ (the tilde trap)
  ansible.builtin.lineinfile:
    path: /etc/ai-memory/env
    regexp: "^AI_MEMORY_DB="
    line: "AI_MEMORY_DB={{ info.db.path }}"
  when: info.db.pin_env
"""

RETURN = r"""
changed:
  description: Always V(false); the module never changes anything.
  returned: always
  type: bool
triple:
  description: Target triple of the release asset for this host (C(uname -m) / C(uname -s)).
  returned: always
  type: str
  sample: x86_64-unknown-linux-gnu
platform:
  description: C(machine) and C(system) as reported by uname.
  returned: always
  type: dict
service_user:
  description: The service user.
  returned: always
  type: dict
  contains:
    name: {description: "User name.", type: str, returned: always}
    exists: {description: "Whether the user exists in the passwd database.", type: bool, returned: always}
    uid: {description: "Its uid (V(null) when missing).", type: int, returned: always}
    gid: {description: "Its primary gid.", type: int, returned: always}
    passwd_home: {description: "Home from passwd.", type: str, returned: always}
    home: {description: "The home used (O(home), else the passwd home).", type: str, returned: always}
    home_exists: {description: "Whether that home is a directory.", type: bool, returned: always}
    home_matches:
      description: Whether O(home) equals the passwd home (V(null) when the user is missing).
      type: bool
      returned: always
daemon:
  description: The running C(ai-memory serve) of this install, else what O(serve_args) say.
  returned: always
  type: dict
  contains:
    running: {description: "Whether a matching serve process runs.", type: bool, returned: always}
    pid: {description: "Its pid (the pidfile's when valid).", type: int, returned: always}
    pids: {description: "All matching pids.", type: list, elements: int, returned: always}
    pidfile_pid: {description: "Pid read from O(pidfile).", type: int, returned: always}
    pidfile_stale: {description: "The pidfile names no ai-memory serve process.", type: bool, returned: always}
    others: {description: "Other ai-memory serve processes on the host (other user or binary).", type: int, returned: always}
    source: {description: "C(proc) (running daemon), C(serve_args) or V(null).", type: str, returned: always}
    argv: {description: "The daemon's argv.", type: list, elements: str, returned: always}
    cwd: {description: "Its working directory.", type: str, returned: always}
    home: {description: "HOME in its environment.", type: str, returned: always}
    db_flag: {description: "Its C(--db) value.", type: str, returned: always}
    serve_host: {description: "Its C(serve --host) value (V(null) = default C(127.0.0.1)).", type: str, returned: always}
    serve_port: {description: "Its C(serve --port) value.", type: str, returned: always}
env_files:
  description: Per env file C(path), C(exists) and C(keys) (names only).
  returned: always
  type: list
  elements: dict
env:
  description: C(AI_MEMORY_DB), C(no_config) (C(AI_MEMORY_NO_CONFIG) set) and C(require_api_key) as the daemon sees them.
  returned: always
  type: dict
config:
  description: The config file, without any secret value.
  returned: always
  type: dict
  contains:
    path: {description: "Config path.", type: str, returned: always}
    exists: {description: "Whether it exists.", type: bool, returned: always}
    parses: {description: "Whether it parses as TOML (V(null) when missing or no parser).", type: bool, returned: always}
    error: {description: "Parser error text (names the line).", type: str, returned: always}
    error_line: {description: "Line of the parse error.", type: int, returned: always}
    db: {description: "Top-level C(db) as written.", type: str, returned: always}
    api_key_present: {description: "A non-empty top-level C(api_key) exists (the value is never returned).", type: bool, returned: always}
    schema_version: {description: "Config schema version (1 when absent, 2 after C(config migrate)).", type: int, returned: always}
    llm_api_key_inline: {description: "C([llm].api_key) holds an inline secret.", type: bool, returned: always}
binary:
  description: The installed binary.
  returned: always
  type: dict
  contains:
    path: {description: "Path.", type: str, returned: always}
    exists: {description: "Whether it exists.", type: bool, returned: always}
    executable: {description: "Whether it is executable.", type: bool, returned: always}
    version: {description: "Version from C(--version) (V(null) when it did not print C(ai-memory X.Y.Z)).", type: str, returned: always, sample: 0.6.4}
    version_error: {description: "Why no version was read.", type: str, returned: always}
    sha256: {description: "sha256 of the file.", type: str, returned: always}
    capabilities:
      description: C(config_migrate) - whether C(config --help) exits 0 (V(null) = inconclusive).
      type: dict
      returned: always
binary_below_target:
  description: The installed version is older than O(target_version) or unknown.
  returned: when the DB exists
  type: bool
db:
  description: The DB and how its path was found.
  returned: always
  type: dict
  contains:
    path: {description: "The file holding the data (what the installed binary opens).", type: str, returned: always}
    source: {description: "Where the path came from (C(--db) / C(AI_MEMORY_DB) of the running daemon or an env file, C(config db), C(default (CWD)), C(db option)).", type: str, returned: always}
    resolved_for: {description: "C(0.6.x) (config C(db) literal) or C(0.7.0) (tilde expanded), after the installed version.", type: str, returned: always}
    cwd: {description: "The CWD used for relative paths.", type: str, returned: always}
    exists: {description: "Whether RV(db.path) exists.", type: bool, returned: always}
    size: {description: "Its size in bytes.", type: int, returned: always}
    wal_size: {description: "Size of its C(-wal).", type: int, returned: always}
    v064_path: {description: "Where v0.6.4 looks (config C(db) literal).", type: str, returned: always}
    v070_path: {description: "Where v0.7.0 will look (config C(db) tilde-expanded).", type: str, returned: always}
    v064_exists: {description: "Whether RV(db.v064_path) exists.", type: bool, returned: always}
    v070_exists: {description: "Whether RV(db.v070_path) exists.", type: bool, returned: always}
    tilde_trap: {description: "The two candidates differ.", type: bool, returned: always}
    pin_env: {description: "The upgrade must pin C(AI_MEMORY_DB=<db.path>) for v0.7.0.", type: bool, returned: always}
    daemon_path: {description: "With O(db), the path the running daemon resolves.", type: str, returned: when O(db) is set and a daemon runs}
    schema_version: {description: "C(MAX(version)) of C(schema_version) (V(null) without that table).", type: int, returned: when the DB exists}
    schema_table: {description: "Whether the C(schema_version) table exists.", type: bool, returned: when the DB exists}
    schema_known: {description: "Whether a known release writes that version (20, 42, 54).", type: bool, returned: when the DB exists}
    schema_release: {description: "Which release that is.", type: str, returned: when the DB exists}
    counts: {description: "Rows of C(memories), C(archived_memories), C(memory_links) and the number of namespaces.", type: dict, returned: when the DB exists}
disk:
  description: Free space for the snapshot.
  returned: always
  type: dict
  contains:
    dir: {description: "The snapshot dir.", type: str, returned: always}
    checked_dir: {description: "The existing directory whose filesystem was measured.", type: str, returned: always}
    free: {description: "Free bytes there.", type: int, returned: always}
    needed: {description: "DB + WAL + 5 % + 16 MiB.", type: int, returned: always}
    enough: {description: "RV(disk.free) >= RV(disk.needed).", type: bool, returned: always}
bind:
  description: C(host), C(loopback), C(require_api_key) and C(needs_api_key) of the serve bind.
  returned: always
  type: dict
bind_needs_api_key:
  description: >-
    v0.7.0 would refuse to start: the serve host is not loopback (or C(AI_MEMORY_REQUIRE_API_KEY) is on) and
    the config has no top-level C(api_key).
  returned: always
  type: bool
"""

import platform

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.aimem.fleet.plugins.module_utils import install_info as I
from ansible_collections.aimem.fleet.plugins.module_utils.sqlite_schema import SchemaError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            binary=dict(type="path", default="/usr/local/bin/ai-memory"),
            service_user=dict(type="str", required=True),
            home=dict(type="path"),
            db=dict(type="path"),
            env_files=dict(type="list", elements="path", default=[]),
            pidfile=dict(type="path"),
            config_path=dict(type="path"),
            serve_args=dict(type="list", elements="str", default=[]),
            target_version=dict(type="str", default="0.7.0"),
            snapshot_dir=dict(type="path"),
            work_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    host = platform.node() or "this host"

    def run(argv, cwd, env):
        return module.run_command(argv, cwd=cwd, environ_update=env, check_rc=False)

    try:
        result, warnings = I.gather(
            binary=p["binary"], service_user=p["service_user"], run=run, home=p["home"] or None,
            db=p["db"] or None, env_files=p["env_files"], pidfile=p["pidfile"] or None,
            config_path=p["config_path"] or None, serve_args=p["serve_args"],
            target_version=p["target_version"], snapshot_dir=p["snapshot_dir"] or None,
            work_dir=p["work_dir"] or None)
    except I.InfoError as e:
        res = dict(e.result or {})
        module.fail_json(msg="%s on %s%s" % (to_native(e), host, ("; fix: " + e.hint) if e.hint else ""),
                         changed=False, **res)
    except SchemaError as e:
        module.fail_json(msg="cannot read the DB on %s read-only: %s%s" % (
            host, to_native(e), ("; fix: " + e.hint) if getattr(e, "hint", None) else ""), changed=False)
    except (IOError, OSError) as e:
        module.fail_json(msg="cannot gather ai-memory facts on %s: %s" % (host, to_native(e)), changed=False)
    for w in warnings:
        module.warn("%s: %s" % (host, w))
    db = result["db"]
    msg = "%s: ai-memory %s, DB %s (%s, schema %s)%s" % (
        host, result["binary"]["version"], db["path"], db["source"], db.get("schema_version"),
        "; tilde trap: v0.7.0 would open %s, pin AI_MEMORY_DB" % db["v070_path"] if db["pin_env"] else "")
    module.exit_json(changed=False, msg=msg, **result)


if __name__ == "__main__":
    main()
