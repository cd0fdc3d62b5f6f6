#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aimem_schema
short_description: Inspect, snapshot, verify and restore the ai-memory SQLite DB around the schema upgrade
version_added: "0.1.0"
description:
  - Works on the ai-memory SQLite DB without any ai-memory binary, and never migrates it. Every
    ai-memory command that opens the DB (including C(doctor), C(boot), C(backup) and C(mcp))
    migrates it in place and creates a missing file, so the pre-upgrade snapshot must be taken by
    something else. Upstream takes none, although its guide names one.
  - O(state=inspect) reads the DB strictly read-only. It reports the schema version from the
    C(schema_version) table (never C(PRAGMA user_version), which ai-memory does not use),
    C(PRAGMA integrity_check), whether a C(-wal) with content is present, row counts, a content
    digest of the memories, and the processes holding the DB, its C(-wal) or C(-shm) open.
  - O(state=snapshot) takes the pre-migration snapshot
    C(<db>.pre-migration-v<from>-to-v<to>-<token>.bak) with the SQLite backup API. The snapshot
    includes un-checkpointed WAL content, which a C(cp) of the main file misses. It is verified
    before it gets its final name, and a C(<snapshot>.json) manifest is written next to it.
  - O(state=restore) puts a snapshot back atomically. The replaced DB and its stale C(-wal)/C(-shm)
    are moved aside, never deleted.
  - O(state=init) runs C(<binary> schema-init --store-url <url> --json) for a Postgres (or
    C(sqlite://)) store. Release builds of ai-memory do not have this subcommand.
author:
  - aimem.fleet contributors
requirements:
  - python >= 3.8 on the target (C(sqlite3) from the standard library)
options:
  db:
    description:
      - Path of the SQLite DB on the target. Required unless O(store_url) is given.
      - A missing file is an error and is never created. Resolve the path the daemon really uses
        first, from C(--db), C(AI_MEMORY_DB) or the config's C(db). v0.6.4 does not expand C(~) in
        the config's C(db) but v0.7.0 does (the tilde trap), and the default C(ai-memory.db) is
        relative to the daemon's working directory.
    type: path
  state:
    description:
      - V(inspect) reads and reports. It never writes and never creates a file.
      - V(snapshot) takes the verified pre-migration snapshot, or finds the one already taken of the
        same content.
      - V(restore) replaces O(db) with O(restore_from).
      - V(init) runs C(schema-init) for O(store_url).
    type: str
    choices: [inspect, snapshot, restore, init]
    default: inspect
  snapshot_dir:
    description:
      - Directory for the snapshot and its manifest. The default is the directory of O(db).
      - It must exist and have room for the DB and its C(-wal) plus 5% and 16 MiB. Free space is
        checked before anything is written.
    type: path
  snapshot_path:
    description:
      - Full path of the snapshot, instead of the generated name in O(snapshot_dir).
      - An existing file is never overwritten. If it holds other content, the module fails.
    type: path
  target_version:
    description:
      - The schema version the upgrade will migrate to. It is the C(<to>) in the snapshot name.
      - 54 is the release/v0.7.0 build. The v0.7.0 tag build stops at 42.
    type: int
    default: 54
  expect_version:
    description:
      - Fail when the DB's schema version differs from this value, for example V(20) before the
        upgrade or V(54) after it. Applies to V(inspect), V(snapshot) and V(restore). For
        V(restore) it is checked against the snapshot's version.
    type: int
  allow_migrated:
    description:
      - With V(snapshot), a DB whose version is already at or past O(target_version) is refused,
        because a pre-migration snapshot of a migrated DB is useless for a rollback. Set this to
        V(true) to snapshot such a DB anyway (for example before a restore).
    type: bool
    default: false
  restore_from:
    description:
      - The snapshot to restore, required for O(state=restore).
      - When C(<restore_from>.json) exists (written by this module), its sha256, counts and digests
        must match. When upstream's C(<stem>.manifest.json) from C(ai-memory backup) exists, its
        sha256 must match. The snapshot must also pass C(PRAGMA integrity_check).
    type: path
  allow_holders:
    description:
      - V(restore) refuses while any process has the DB, its C(-wal) or its C(-shm) open, because a
        running daemon or C(ai-memory mcp) would keep writing to the replaced file. V(true) skips
        that refusal.
    type: bool
    default: false
  integrity:
    description:
      - Which check V(inspect) runs. V(full) is C(PRAGMA integrity_check), V(quick) is
        C(PRAGMA quick_check), and V(none) skips the check. Snapshots are always fully checked.
    type: str
    choices: [full, quick, none]
    default: full
  db_digest:
    description:
      - With V(inspect), also compute RV(db_digest), the sha256 of the whole logical DB. This reads
        every row of every table, so it costs about as much as a snapshot.
    type: bool
    default: false
  store_url:
    description:
      - Store URL for O(state=init), for example C(postgres://user:pass@db.example/aimem).
        Also accepted are C(postgresql://), C(sqlite:///abs/path) and C(sqlite://./rel).
      - It is treated as a secret. It is never logged, and its password is masked in every
        returned text.
    type: str
  binary:
    description:
      - The ai-memory binary that runs C(schema-init) for O(state=init). A name is looked up on the
        target's C(PATH).
      - It needs a source build with C(--features sal,sal-postgres). Release tarballs, the Docker
        image and the deb/rpm packages have no C(schema-init).
    type: str
    default: ai-memory
attributes:
  check_mode:
    support: full
    details:
      - V(inspect) never writes anything.
      - V(snapshot) reports the snapshot path it would write, after the same version and free-space
        checks. V(restore) reports the file it would move aside, after verifying the snapshot.
      - V(init) does not run the binary in check mode, because every ai-memory invocation, even
        C(--help), writes its config template to C(HOME) when it is missing. It only checks that the
        binary exists. For a C(sqlite://) store it compares the version with O(target_version); for
        Postgres it reports C(changed=true), because it cannot know whether the ladder would run.
  diff_mode:
    support: full
    details: V(snapshot) and V(restore) return a before/after summary (file state, schema version,
      counts and digests). No DB content is shown.
  platform:
    platforms: posix
notes:
  - How the DB is read. A WAL-mode DB with no C(-wal) content is opened with
    C(file:<db>?mode=ro&immutable=1). A plain read-only open would create empty C(-wal)/C(-shm)
    files, owned by root when run as root. A DB with a C(-wal) and a C(-shm) is opened with
    C(mode=ro), which reads the WAL and creates nothing. With a C(-wal) but no C(-shm), SQLite has
    to create the C(-shm). The module removes it again afterwards unless another process has
    opened it. No read-write connection is ever opened on the DB.
  - The content digest (RV(content_digest)) is the sha256 of C(id), C(content) and C(metadata) of
    every memory, ordered by C(id). C(expires_at), which the v54 migration legitimately backfills,
    and every column added after v20 are left out. So the digest of a v20 DB equals the digest of
    the same DB after migration to v54, unless a memory was lost or altered. Compare before the
    daemon's first GC (every 30 min), which can archive or delete the rows that the backfill made
    expire. The counts of C(memories) plus C(archived_memories) survive archiving.
  - The snapshot token is the first 12 hex digits of the whole-DB digest (RV(db_digest)). That
    digest covers the schema and every row of every table, so unchanged content maps to the same
    file. A second run finds it, re-checks its sha256 against the manifest and the digests
    against the live DB, and reports C(changed=false). If anything in the DB has changed since, a
    new snapshot is taken under a new name. Older snapshots are never removed or overwritten.
  - The snapshot is made with C(sqlite3.Connection.backup()) in the same read transaction as the
    digests. It is written to a temporary file in the target directory, with owner and mode taken
    from the DB (never wider), and fsynced. It is verified with C(integrity_check), and its version,
    counts and both digests must equal the source's. Only then is it hard-linked to its final name,
    which is never overwritten. On any failure the temporary file is removed and the DB is left
    untouched. The backup API was 10-30% faster than C(VACUUM INTO) on a 1 GiB DB in our runs, and
    unlike C(VACUUM INTO) it keeps rowids, so the copy is page-identical. See
    C(tests/bench/bench_snapshot.py).
  - Holders are found by reading the C(/proc/<pid>/fd) links (never C(environ)). As non-root, other
    users' processes cannot be seen. RV(holders_complete) then reads V(false).
  - Restore, step by step. The replaced DB is hard-linked to C(<db>.replaced-<UTC ts>), and its
    C(-wal)/C(-shm)/C(-journal) are renamed to C(<db>.replaced-<UTC ts>-wal) and so on. The
    replaced DB therefore stays a consistent pair with its WAL, and a stale WAL can never meet the
    restored file (upstream's C(restore) leaves the sidecars in place). A verified copy of the
    snapshot is then renamed over the DB, keeping the replaced DB's owner and mode. Restoring a
    snapshot whose whole-DB digest already equals the live DB, with no sidecars present, changes
    nothing.
seealso:
  - name: ai-memory facts, section 2 (schema) and 5.3 (schema-init)
    description: The upstream behaviour this module is built on.
    link: https://github.com/alphaonedev/ai-memory-mcp
"""

EXAMPLES = r"""
- name: Inspect the DB before the upgrade (read-only, never migrates)
  aimem.fleet.aimem_schema:
    db: /var/lib/ai-memory/ai-memory.db
    expect_version: 20
  register: before

- name: Prove the daemon and every ai-memory mcp are gone
  ansible.builtin.assert:
    that: before.holders | length == 0
    fail_msg: "still open in {{ before.holders | map(attribute='pid') | list }}"

- name: Take the verified pre-migration snapshot (idempotent)
  aimem.fleet.aimem_schema:
    db: /var/lib/ai-memory/ai-memory.db
    state: snapshot
    target_version: 54
  register: snap

- name: After the v0.7.0 binary migrated the DB, prove nothing was lost
  aimem.fleet.aimem_schema:
    db: /var/lib/ai-memory/ai-memory.db
    expect_version: 54
  register: after
  failed_when: >-
    after.failed or after.content_digest != snap.content_digest
    or after.counts.memories != snap.counts.memories

- name: Roll back - put the snapshot back and move the stale -wal/-shm aside
  aimem.fleet.aimem_schema:
    db: /var/lib/ai-memory/ai-memory.db
    state: restore
    restore_from: "{{ snap.snapshot }}"

- name: Bring a Postgres store to the current schema (source build with sal,sal-postgres only)
  aimem.fleet.aimem_schema:
    state: init
    store_url: "{{ vault_aimem_store_url }}"
    binary: /opt/ai-memory-sal/bin/ai-memory
"""

RETURN = r"""
db:
  description: Absolute path of the DB.
  returned: when O(db) is given
  type: str
  sample: /var/lib/ai-memory/ai-memory.db
schema_version:
  description:
    - The version from the C(schema_version) table, or 0 when the table is missing. With
      V(restore) it is the snapshot's version.
  returned: when O(db) is given
  type: int
  sample: 20
schema_table:
  description: Whether the C(schema_version) table exists.
  returned: with V(inspect)
  type: bool
schema_known:
  description: Whether RV(schema_version) is one of the known versions 20 (v0.6.4), 42 (v0.7.0 tag build) and 54 (release/v0.7.0).
  returned: with V(inspect)
  type: bool
schema_release:
  description: The ai-memory build a known version belongs to, or null.
  returned: with V(inspect)
  type: str
  sample: v0.6.4
integrity:
  description: C(ok), or the first integrity_check messages joined by C(; ). For V(snapshot), the result of checking the snapshot.
  returned: with V(inspect) unless O(integrity=none), and with V(snapshot)
  type: str
  sample: ok
integrity_ok:
  description: Whether the integrity check returned exactly C(ok).
  returned: with V(inspect) unless O(integrity=none)
  type: bool
wal_present:
  description: Whether a non-empty C(<db>-wal) exists, that is, un-checkpointed content a C(cp) would miss.
  returned: with V(inspect)
  type: bool
wal_bytes:
  description: Size of C(<db>-wal), 0 when there is none.
  returned: with V(inspect)
  type: int
db_bytes:
  description: Size of the main DB file.
  returned: with V(inspect)
  type: int
counts:
  description:
    - Row counts. C(namespaces) is the number of distinct C(memories.namespace) values. A missing
      table counts as null.
  returned: when O(db) is given
  type: dict
  sample: {"memories": 1200, "archived_memories": 40, "memory_links": 310, "namespaces": 7}
content_digest:
  description: sha256 of C(id), C(content) and C(metadata) of every memory, ordered by C(id), without C(expires_at). See the notes.
  returned: when O(db) is given
  type: str
content_digest_rows:
  description: Number of memories hashed into RV(content_digest).
  returned: with V(inspect)
  type: int
db_digest:
  description: sha256 of the whole logical DB, covering the schema and every row of every table.
  returned: with V(snapshot), V(restore), and V(inspect) with O(db_digest=true)
  type: str
open_mode:
  description: How the DB was opened, C(ro) or C(ro-immutable) (see the notes).
  returned: with V(inspect) and V(snapshot)
  type: str
holders:
  description: Processes that have the DB, its C(-wal) or C(-shm) open, excluding the module itself.
  returned: with V(inspect), V(snapshot) and V(restore)
  type: list
  elements: dict
  contains:
    pid:
      description: Process id.
      type: int
    comm:
      description: C(/proc/<pid>/comm).
      type: str
    cmdline:
      description: The command line as a list.
      type: list
      elements: str
    files:
      description: Which of the DB, C(-wal) and C(-shm) the process holds.
      type: list
      elements: str
holders_complete:
  description: False when some process' fd table could not be read (not root), so RV(holders) may be incomplete.
  returned: with V(inspect), V(snapshot) and V(restore)
  type: bool
from_version:
  description: The DB's version, the C(<from>) in the snapshot name.
  returned: with V(snapshot)
  type: int
to_version:
  description: O(target_version), the C(<to>) in the snapshot name.
  returned: with V(snapshot)
  type: int
snapshot:
  description: The snapshot path. With V(snapshot) in check mode, the path that would be written.
  returned: with V(snapshot) and V(restore)
  type: str
  sample: /var/lib/ai-memory/ai-memory.db.pre-migration-v20-to-v54-3f2a9c01be77.bak
manifest:
  description: The path of the snapshot's JSON manifest. It holds sha256, bytes, counts, digests, versions, the source path and created_at.
  returned: with V(snapshot)
  type: str
sha256:
  description: sha256 of the snapshot file.
  returned: with V(snapshot) and V(restore), except for a new snapshot in check mode
  type: str
bytes:
  description: Size of the snapshot file.
  returned: with V(snapshot) except for a new snapshot in check mode
  type: int
replaced:
  description: With V(restore), where the replaced DB was (or would be) kept. Null when there was no DB.
  returned: with V(restore) when changed
  type: str
  sample: /var/lib/ai-memory/ai-memory.db.replaced-20260601-224038
sidecars_moved:
  description: With V(restore), the C(-wal)/C(-shm)/C(-journal) files moved aside, as C(from)/C(to) pairs.
  returned: with V(restore) when changed
  type: list
  elements: dict
before:
  description: With V(restore), the live DB's version, counts, digests and present sidecars before the restore.
  returned: with V(restore)
  type: dict
space:
  description: The bytes needed (size plus margin) and free on the target filesystem.
  returned: with V(snapshot) and V(restore) when a file is (or would be) written
  type: dict
  sample: {"needed": 1149239296, "free": 85899345920}
schema_init:
  description:
    - With V(init), the JSON printed by C(schema-init --json), with the URL's password masked.
      Keys include C(kind), C(tables), C(schema_version) and C(embedding_dim).
  returned: with V(init) outside check mode
  type: dict
command:
  description: With V(init), the command that was run (or would be run), with the URL masked.
  returned: with V(init)
  type: list
  elements: str
"""

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.aimem.fleet.plugins.module_utils import sqlite_schema as ss

SCHEMA_INIT_MISSING = (
    "{binary} has no `schema-init` subcommand (it answered: {answer}). Release builds of ai-memory "
    "(tarballs, Docker image, deb/rpm) are compiled without the `sal` feature, so they cannot "
    "initialise or migrate a Postgres store. Build ai-memory from source with "
    "`cargo build --release --features sal,sal-postgres` and point `binary` at it "
    "(facts 5.3, 8.1 item 12)."
)
# The password runs to the LAST '@' of the authority (an unencoded '@' in a password is accepted
# by URL parsers), so the match is greedy up to the first '/', '?', '#' or whitespace.
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^/?#\s]*)@")


def mask_url(text, url=None):
    """Mask the password of any URL in ``text`` (and the exact ``url`` itself)."""
    if text is None:
        return text
    if url:
        text = text.replace(url, _URL_PASSWORD.sub(r"\g<pre>********@", url))
    return _URL_PASSWORD.sub(r"\g<pre>********@", text)


def _mask_obj(obj, url):
    if isinstance(obj, dict):
        return dict((k, _mask_obj(v, url)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_mask_obj(v, url) for v in obj]
    if isinstance(obj, str):
        return mask_url(obj, url)
    return obj


def _sqlite_store_path(url):
    if url.startswith("sqlite:///"):
        return url[len("sqlite://"):]
    if url.startswith("sqlite://"):
        return url[len("sqlite://"):]
    return None


def _store_version(module, path, result):
    """Schema version of the sqlite:// store, or fail_json naming the file and the fix."""
    try:
        return ss.inspect(path, integrity_level="none", with_holders=False)["schema_version"]
    except ss.SchemaError as e:
        module.fail_json(msg=to_native(e), path=e.path, hint=e.hint, **result)
    except Exception as e:  # sqlite3.Error on a damaged file
        module.fail_json(msg="cannot read the schema version of the sqlite store %s: %s: %s" % (
            path, type(e).__name__, to_native(e)), path=path,
            hint="check that %s is an ai-memory SQLite DB (or fix store_url)" % path, **result)


def run_init(module):
    p = module.params
    url = p["store_url"]
    binary = module.get_bin_path(p["binary"]) if "/" not in p["binary"] else p["binary"]
    if not binary or not os.access(binary, os.X_OK):
        module.fail_json(msg="ai-memory binary %r not found or not executable on %s" % (
            p["binary"], os.uname()[1]), hint="set `binary` to the path of a source build with "
                                              "--features sal,sal-postgres")
    shown = [binary, "schema-init", "--store-url", mask_url(url, url), "--json"]
    result = {"changed": False, "command": shown}
    # No `schema-init --help` probe: every ai-memory invocation, --help included, writes its config
    # template to $HOME when missing (facts 1.2), so check mode does not run the binary at all.
    sqlite_path = _sqlite_store_path(url)
    before = None
    if sqlite_path and os.path.exists(sqlite_path):
        before = _store_version(module, sqlite_path, result)
    if module.check_mode:
        result["changed"] = True if before is None else before < p["target_version"]
        module.exit_json(**result)
    rc, out, err = module.run_command([binary, "schema-init", "--store-url", url, "--json"])
    if rc != 0:
        text = mask_url((err or out or "").strip(), url)
        if "unrecognized subcommand" in text or rc == 2:
            module.fail_json(msg=SCHEMA_INIT_MISSING.format(binary=binary, answer=text[:300]), rc=rc, **result)
        if "postgres support not compiled in" in text:
            module.fail_json(msg="%s was built without Postgres support (%s). Rebuild with "
                                 "`cargo build --release --features sal,sal-postgres`." % (binary, text[:300]),
                             rc=rc, **result)
        module.fail_json(msg="%s schema-init failed (exit %d) for store %s: %s" % (
            binary, rc, mask_url(url, url), text[:1000]), rc=rc,
            hint="check that the store is reachable and the credentials are right", **result)
    try:
        data = json.loads(out)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        module.fail_json(msg="%s schema-init --json printed no JSON object: %s" % (binary, mask_url(out, url)[:500]),
                         hint="point `binary` at an ai-memory source build with --features sal,sal-postgres "
                              "whose schema-init supports --json (facts 5.3)", **result)
    result["schema_init"] = _mask_obj(data, url)
    if sqlite_path:
        after = _store_version(module, sqlite_path, result)
        result["changed"] = before != after
    else:
        # Postgres: the version before cannot be read without a driver; schema-init migrates
        # only when behind, but report the run as a change.
        result["changed"] = True
    if p["expect_version"] is not None and data.get("schema_version") != p["expect_version"]:
        module.fail_json(msg="%s schema-init left store %s at schema %r, expected %d" % (
            binary, mask_url(url, url), data.get("schema_version"), p["expect_version"]),
            hint="use a binary whose schema version is %d (release/v0.7.0 is 54, the v0.7.0 tag build "
                 "42) or fix expect_version" % p["expect_version"], **result)
    module.exit_json(**result)


def _holders(db):
    side = ss.sidecars(db)
    return ss.find_holders([db, side["wal"], side["shm"]])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            db=dict(type="path"),
            state=dict(type="str", default="inspect", choices=["inspect", "snapshot", "restore", "init"]),
            snapshot_dir=dict(type="path"),
            snapshot_path=dict(type="path"),
            target_version=dict(type="int", default=ss.DEFAULT_TARGET_VERSION),
            expect_version=dict(type="int"),
            allow_migrated=dict(type="bool", default=False),
            restore_from=dict(type="path"),
            allow_holders=dict(type="bool", default=False),
            integrity=dict(type="str", default="full", choices=["full", "quick", "none"]),
            db_digest=dict(type="bool", default=False),
            store_url=dict(type="str", no_log=True),
            binary=dict(type="str", default="ai-memory"),
        ),
        mutually_exclusive=[("snapshot_dir", "snapshot_path"), ("db", "store_url")],
        required_if=[("state", "restore", ("db", "restore_from")),
                     ("state", "snapshot", ("db",)),
                     ("state", "inspect", ("db",)),
                     ("state", "init", ("store_url",))],
        supports_check_mode=True,
    )
    p = module.params
    state = p["state"]
    if state == "init":
        run_init(module)
    if p["store_url"]:
        module.fail_json(msg="store_url is only used with state=init")
    db = os.path.abspath(p["db"])
    try:
        if state == "inspect":
            res = ss.inspect(db, integrity_level=p["integrity"], with_db_digest=p["db_digest"])
            res["changed"] = False
            _check_expect(module, res, db)
            module.exit_json(**res)
        if state == "snapshot":
            res = ss.take_snapshot(db, target_version=p["target_version"], snapshot_dir=p["snapshot_dir"],
                                   snapshot_path=p["snapshot_path"], allow_migrated=p["allow_migrated"],
                                   expect_version=p["expect_version"], check_mode=module.check_mode)
            res.pop("manifest_data", None)
            res["holders"], res["holders_complete"] = _holders(db)
            if res["holders"]:
                module.warn("%s is still open in %s: the snapshot is consistent, but later writes are not "
                            "in it. Stop the daemon and every `ai-memory mcp` before the upgrade." % (
                                db, ", ".join("pid %d (%s)" % (h["pid"], h["comm"]) for h in res["holders"])))
            if module._diff:
                res["diff"] = {
                    "before": {"path": res["snapshot"], "state": "file" if not res["changed"] else "absent"},
                    "after": {"path": res["snapshot"], "state": "file", "schema_version": res["schema_version"],
                              "counts": res["counts"], "content_digest": res["content_digest"]},
                }
            module.exit_json(**res)
        if state == "restore":
            res = ss.restore(db, p["restore_from"], check_mode=module.check_mode,
                             allow_holders=p["allow_holders"], expect_version=p["expect_version"])
            if "holders" not in res:
                res["holders"], res["holders_complete"] = _holders(db)
            if module._diff:
                after = {"schema_version": res["schema_version"], "counts": res["counts"],
                         "content_digest": res["content_digest"], "db_digest": res["db_digest"],
                         "sidecars": []}
                res["diff"] = {"before": res["before"], "after": after if res["changed"] else res["before"],
                               "before_header": db, "after_header": "%s (from %s)" % (db, res["snapshot"])}
            module.exit_json(**res)
    except ss.SchemaError as e:
        module.fail_json(msg=to_native(e), path=e.path, hint=e.hint)
    except (OSError, IOError) as e:
        module.fail_json(msg="%s failed for %s: %s" % (state, db, to_native(e)),
                         path=getattr(e, "filename", None) or db,
                         hint="check permissions (become: true) and free space around %s" % db)
    except Exception as e:  # sqlite3.Error and friends: name the file and the state
        module.fail_json(msg="%s of %s failed: %s: %s" % (state, db, type(e).__name__, to_native(e)),
                         path=db, hint="check that %s is an ai-memory SQLite DB" % db)


def _check_expect(module, res, db):
    want = module.params["expect_version"]
    if want is not None and res["schema_version"] != want:
        module.fail_json(msg="%s is at schema v%d, expected v%d" % (db, res["schema_version"], want),
                         hint="check that this is the right DB (--db / AI_MEMORY_DB / config db, see the "
                              "tilde trap) and the upgrade stage", **res)


if __name__ == "__main__":
    main()
