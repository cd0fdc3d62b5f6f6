#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aimem_config_migrate
short_description: Migrate an ai-memory config.toml from the v1 (v0.6.x) to the v2 (v0.7.0) shape
version_added: "0.1.0"
description:
  - Native, idempotent replacement for C(ai-memory config migrate [--also-clean-claude-json]) of
    ai-memory v0.7.0. It needs no ai-memory binary on the host.
  - Applies upstream's mapping of the 10 legacy top-level keys (C(llm_model), C(ollama_url),
    C(embed_url), C(embedding_model), C(cross_encoder), C(default_namespace), C(archive_on_gc),
    C(archive_max_days), C(max_memory_mb), C(auto_tag_model)) to the C([llm]), C([llm.auto_tag]),
    C([embeddings]), C([reranker]) and C([storage]) sections, and sets the top-level integer
    C(schema_version = 2). The reranker model is upstream's hard-coded C(ms-marco-MiniLM-L-6-v2).
    Every other key and table is kept unchanged.
  - Same idempotency rule as upstream. A file whose top-level C(schema_version) is an integer of 2 or
    more and which has none of the legacy keys is not rewritten.
  - Unlike upstream, it keeps every setting that had an effect under v0.6.4. See the notes.
  - Unlike upstream, comments, blank lines and key order are kept. The write is atomic (a temp file
    in the same directory, fsync, rename), and the owner, group and mode of the file are kept.
  - The backup is C(config.toml.bak.<UTC %Y%m%d-%H%M%S>) like upstream's. It never overwrites an
    existing backup (a C(.1), C(.2)... suffix is added) and is never more readable than the original.
  - Before anything is written, the result is checked the way ai-memory v0.7.0 loads it. These
    problems make the module fail and leave every file unchanged, because v0.7.0 would otherwise
    silently fall back to its default config. An inline C([llm].api_key) or
    C([llm.auto_tag].api_key). Both C(api_key_env) and C(api_key_file) set in one section. An
    C(api_key_file) readable by group or others. A C([permissions].mode) or
    C([[permissions.rules]].decision) outside its lowercase enum. Known keys of the wrong type, such
    as C(cross_encoder = "yes").
author:
  - aimem.fleet contributors
requirements:
  - python >= 3.8 on the target
  - tomlkit >= 0.11 on the target (Debian/Ubuntu package C(python3-tomlkit))
options:
  path:
    description:
      - The config file to migrate.
      - The default is resolved on the target with the C(HOME) of the remote (or become) user,
        exactly like the ai-memory binary does. Run the task as the service user, or give the path
        explicitly. The module fails when C(HOME) is unset and the path starts with C(~).
    type: str
    default: ~/.config/ai-memory/config.toml
  backup:
    description:
      - Write C(<path>.bak.<UTC timestamp>) before the config is rewritten.
      - Restoring this backup is required to roll the binary back to v0.6.4, because v0.6.4 ignores
        every v2 section.
    type: bool
    default: true
  missing:
    description:
      - What to do when O(path) does not exist.
      - V(fail) is the default, because a missing file usually means the wrong user or C(HOME).
        The binary writes its comment-only template on every run, so a host where ai-memory has
        run as this user has the file.
      - V(ignore) reports C(changed=false) for the config, with a warning. O(clean_claude_json)
        still runs.
    type: str
    choices: [fail, ignore]
    default: fail
  inline_api_key:
    description:
      - What to do with an inline C([llm].api_key) or C([llm.auto_tag].api_key). ai-memory v0.7.0
        rejects an inline C([llm].api_key) and ignores an inline C([llm.auto_tag].api_key).
      - V(fail) stops with an explanation. Nothing is written.
      - V(externalize) writes each secret to a key file in O(api_key_dir) with mode C(0400), owned
        like the config. It then replaces the inline key with C(api_key_file = "<that file>").
        The secret never appears in the result, the diff or the logs. If the key file already
        exists with the same content, it is reused (and tightened to C(0400) if it was lax). If it
        exists with a different content, the module fails.
      - The config backup necessarily still holds the inline secret. Its mode is therefore capped
        at C(0600) (and never wider than the original). A warning tells you to delete it once the
        upgrade is verified.
    type: str
    choices: [fail, externalize]
    default: fail
  api_key_dir:
    description:
      - Directory for the key files written by O(inline_api_key=externalize). The files are named
        C(llm-api-key) and C(llm-auto-tag-api-key).
      - Defaults to the directory of O(path). If the directory is missing, it is created with mode
        C(0700), owned like the config.
      - A relative path is made absolute (against the module's working directory) before it is
        written to C(api_key_file), because ai-memory would resolve a relative one against the
        daemon's working directory.
    type: str
  allow_lax_key_file_perms:
    description:
      - Accept an C(api_key_file) that group or others can read. Only use this when the daemon runs
        with C(AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS=1), which upstream does not recommend for
        production.
    type: bool
    default: false
  clean_claude_json:
    description:
      - Also remove the whole C(env) object of every top-level C(mcpServers) entry in O(claude_json_path)
        whose C(command) is C(ai-memory) or ends with C(/ai-memory). This is upstream's exact scope
        for C(--also-clean-claude-json). Project-level C(mcpServers), C(.mcp.json) files and the
        Claude Desktop config are not touched.
      - The whole C(env) object is removed, including unrelated variables such as C(AI_MEMORY_DB).
        The names of the removed variables are returned in RV(claude_json_cleaned).
      - Unlike upstream, this also works when the config is already v2 (a second run). It writes a
        backup C(<claude_json_path>.bak.<UTC timestamp>) and keeps key order, indentation and the
        trailing newline.
      - A missing file is not an error. Invalid JSON fails the task before anything is written.
    type: bool
    default: false
  claude_json_path:
    description:
      - The Claude Code user config to clean. C(~) is resolved with the remote user's C(HOME).
    type: str
    default: ~/.claude.json
attributes:
  check_mode:
    support: full
    details: Nothing is written. The result reports exactly what would change, including moved and
      dropped keys and the key files that would be created.
  diff_mode:
    support: full
    details: Shows the config and the C(~/.claude.json) changes. Secret values (any C(api_key),
      C(*_token), C(*_secret), C(*_password), C(*_passphrase) and every value of a C(env) object)
      are replaced by C(********).
  platform:
    platforms: posix
notes:
  - Differences from upstream, all aimed at this rule. The migrated file resolves under v0.7.0 to
    the same effective settings the original did under v0.6.4.
  - C(ollama_url) or C(auto_tag_model) without C(llm_model) still produce C([llm]) with
    C(backend = "ollama"), plus C(base_url) and C([llm.auto_tag].model). Upstream drops them.
  - Under v0.6.4, C(ollama_url) was the fallback URL for embeddings. A file with C(ollama_url) but
    no C(embed_url) therefore gets C([embeddings]) with C(backend = "ollama") and
    C(url = <ollama_url>). This applies with or without C(embedding_model). Upstream leaves the
    embeddings pointing at C(http://localhost:11434).
  - If a target section already exists, it wins, as in upstream. The legacy key is removed and
    not merged. Each such key is listed in RV(dropped_keys) with the reason. A warning is emitted
    unless the section already had the same value.
  - New sections are appended at the end of the file. A new C(schema_version) goes after the last
    top-level key. Comments that sat above a removed legacy key stay where they were.
  - The top-level C(api_key) (the HTTP API key of C(serve)) is neither moved nor rejected, as in
    upstream. It is masked in diffs.
  - Comparing with the binary output, upstream sorts keys alphabetically and drops comments.
    The parsed documents are equal for every input where upstream loses nothing.
  - C(api_key_file) modes are checked against the final state, including key files about to be
    created. A missing C(api_key_file) is only a warning, because it may be deployed later.
seealso:
  - name: ai-memory config migrate (upstream)
    description: The v0.7.0 subcommand this module re-implements.
    link: https://github.com/alphaonedev/ai-memory-mcp
"""

EXAMPLES = r"""
- name: Preview the migration of the service user's config
  aimem.fleet.aimem_config_migrate:
  become: true
  become_user: aimem
  check_mode: true
  diff: true
  register: preview

- name: Migrate, moving an inline LLM key into a 0400 key file, and clean ~/.claude.json
  aimem.fleet.aimem_config_migrate:
    path: /home/aimem/.config/ai-memory/config.toml
    inline_api_key: externalize
    clean_claude_json: true
    claude_json_path: /home/aimem/.claude.json
  become: true
  become_user: aimem
  register: migrated

- name: Show which legacy keys went where
  ansible.builtin.debug:
    msg: "{{ migrated.moved_keys }} / dropped: {{ migrated.dropped_keys }}"
"""

RETURN = r"""
changed:
  description: Whether the config, a key file or C(~/.claude.json) was (or, in check mode, would be) changed.
  returned: always
  type: bool
path:
  description: The config file, after C(~) expansion on the target.
  returned: always
  type: str
  sample: /home/aimem/.config/ai-memory/config.toml
config_changed:
  description: Whether the config file itself was (or would be) rewritten.
  returned: always
  type: bool
already_v2:
  description: The file already met upstream's "no migration needed" rule before this run.
  returned: always
  type: bool
backup_file:
  description: The config backup that was written. Empty when none was written (no change, C(backup=false), or check mode).
  returned: always
  type: str
  sample: /home/aimem/.config/ai-memory/config.toml.bak.20260601-224038
schema_version_before:
  description: The top-level C(schema_version) as found. C(null) when it is absent. A string or float is returned as is; it does not count as v2.
  returned: always
  type: raw
  sample: 1
schema_version_after:
  description: The top-level C(schema_version) after the run.
  returned: always
  type: raw
  sample: 2
moved_keys:
  description: Each migrated legacy key, with the list of its new dotted locations. C(ollama_url) can go to both C(llm.base_url) and C(embeddings.url).
  returned: always
  type: dict
  sample: {"llm_model": ["llm.model"], "ollama_url": ["llm.base_url", "embeddings.url"], "cross_encoder": ["reranker.enabled"]}
dropped_keys:
  description: Each legacy key (or role of a key) that was removed without being written, because its target section already existed. The value is the reason.
  returned: always
  type: dict
  sample: {"archive_on_gc": "[storage] already exists, so (like upstream) the section wins and the legacy value true is not merged; v0.7.0 uses its built-in default for [storage].archive_on_gc"}
api_key_files:
  description: The key files that received an inline secret (O(inline_api_key=externalize)). C(created) is false when an identical file already existed.
  returned: always
  type: list
  elements: dict
  sample: [{"section": "llm", "path": "/home/aimem/.config/ai-memory/llm-api-key", "created": true}]
claude_json_path:
  description: The C(~/.claude.json) that was considered, after C(~) expansion. Empty when O(clean_claude_json=false).
  returned: always
  type: str
claude_json_changed:
  description: Whether C(~/.claude.json) was (or would be) rewritten.
  returned: always
  type: bool
claude_json_backup_file:
  description: The C(~/.claude.json) backup that was written. Empty when none was written.
  returned: always
  type: str
  sample: /home/aimem/.claude.json.bak.20260601-224038
claude_json_cleaned:
  description: For each C(mcpServers) entry whose C(env) was (or would be) removed, the names (never the values) of the removed variables.
  returned: always
  type: dict
  sample: {"ai-memory": ["AI_MEMORY_DB", "AI_MEMORY_AGENT_ID"]}
migration_warnings:
  description: The warnings of this run. They are also emitted as regular Ansible warnings. Examples are dropped keys whose value is lost, a backup that still holds an inline secret, and C(HOME) not matching the effective user.
  returned: always
  type: list
  elements: str
diff:
  description: Before/after of each changed file, with secrets masked. Only with C(--diff).
  returned: when diff mode is on and something changes
  type: list
  elements: dict
"""

import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.aimem.fleet.plugins.module_utils import config_migrate as cm
from ansible_collections.aimem.fleet.plugins.module_utils import fileops


class _FakeStat(object):
    def __init__(self, mode):
        self.st_mode = stat.S_IFREG | mode


def _expand(module, path, option):
    """Expand ``~`` with the remote user's HOME; fail clearly when HOME is unset."""
    if path.startswith("~"):
        if not os.environ.get("HOME"):
            module.fail_json(
                msg="%s = %s starts with ~ but HOME is not set for the remote user on this host, so "
                    "the path cannot be resolved (ai-memory itself exits 2 in this case). Fix: give %s "
                    "as an absolute path, or set HOME in the task's environment." % (option, path, option),
                **{option: path})
        return os.path.expanduser(path)
    return path


def _read(module, path, what):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (IOError, OSError) as e:
        module.fail_json(msg="could not read %s %s: %s. Fix: run the task as the user who owns it "
                             "(become_user) or fix its permissions." % (what, path, to_native(e)),
                         path=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        module.fail_json(msg="%s %s is not UTF-8 text (%s). Fix: restore it from a backup." % (what, path, e),
                         path=path)


def _fail(module, err, path, result, **extra):
    msg = to_native(err)
    if getattr(err, "hint", None):
        msg = "%s. Fix: %s. Nothing was changed." % (msg, err.hint)
    result.update(extra)
    result["changed"] = False
    module.fail_json(msg=msg, **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="str", default="~/.config/ai-memory/config.toml"),
            backup=dict(type="bool", default=True),
            missing=dict(type="str", default="fail", choices=["fail", "ignore"]),
            inline_api_key=dict(type="str", default="fail", choices=["fail", "externalize"]),
            api_key_dir=dict(type="str"),
            allow_lax_key_file_perms=dict(type="bool", default=False),
            clean_claude_json=dict(type="bool", default=False),
            claude_json_path=dict(type="str", default="~/.claude.json"),
        ),
        supports_check_mode=True,
    )
    if not cm.HAS_TOMLKIT:
        module.fail_json(msg=missing_required_lib("tomlkit", reason="to edit ai-memory's config.toml",
                                                  url="https://pypi.org/project/tomlkit/"),
                         exception=cm.TOMLKIT_IMPORT_ERROR)

    p = module.params
    # Options are type=str (not path) so that ~ is resolved here, with HOME, never via pwd.
    raw_path = p["path"]
    path = _expand(module, raw_path, "path")
    warnings = []
    _check_home(module, raw_path, warnings)

    result = dict(changed=False, path=path, config_changed=False, already_v2=False, backup_file="",
                  schema_version_before=None, schema_version_after=None, moved_keys={},
                  dropped_keys={}, api_key_files=[], claude_json_path="", claude_json_changed=False,
                  claude_json_backup_file="", claude_json_cleaned={}, migration_warnings=warnings)
    diffs = []

    # ---- plan the config -------------------------------------------------------------------
    plan = None
    key_files = []
    key_actions = []
    new_text = None
    meta = None
    if not os.path.exists(path):
        if p["missing"] == "fail":
            module.fail_json(
                msg="no config file at %s — nothing to migrate. Fix: run the task as the ai-memory "
                    "service user (become_user) so ~ resolves to its HOME, give path explicitly, or set "
                    "missing=ignore for hosts without a config." % path, **result)
        warnings.append("no config file at %s; nothing to migrate" % path)
    else:
        meta = fileops.file_meta(path)
        text = _read(module, path, "config")
        secrets = cm.secret_values(text)
        for s in secrets:
            module.no_log_values.add(s)
        try:
            plan = cm.plan_migration(text, path)
        except cm.TomlSyntaxError as e:
            _fail(module, e, path, result, line=e.line, col=e.col)
        except cm.ConfigMigrateError as e:
            _fail(module, e, path, result)
        result["already_v2"] = plan.already_v2
        result["schema_version_before"] = plan.schema_version_before
        result["schema_version_after"] = plan.schema_version_after
        result["moved_keys"] = dict(plan.moved_keys)
        result["dropped_keys"] = dict(plan.dropped_keys)
        warnings.extend(plan.warnings)
        doc = plan.doc
        doc_changed = plan.changed

        if p["inline_api_key"] == "externalize" and cm.inline_key_sections(doc):
            key_dir = p["api_key_dir"] or os.path.dirname(path)
            # absolute: a relative api_key_file would be resolved against the daemon's cwd
            key_dir = os.path.abspath(_expand(module, key_dir, "api_key_dir"))
            try:
                key_files = cm.plan_externalize(doc, key_dir, path)
            except cm.ConfigMigrateError as e:
                _fail(module, e, path, result)
            for kf in key_files:
                module.no_log_values.add(kf.content)
            doc_changed = True

        # ---- validate the final state, before any write ---------------------------------------
        planned = {}
        for kf in key_files:
            action = _key_file_action(module, kf, path, result)
            key_actions.append((kf, action))
            planned[kf.path] = 0o400 if action != "keep" else None

        def stat_fn(fp):
            if planned.get(fp):
                return _FakeStat(planned[fp])
            return os.stat(fp)

        problems, vwarnings = cm.check_v2(doc, stat_fn=stat_fn, home=os.environ.get("HOME"),
                                          allow_lax_key_file_perms=p["allow_lax_key_file_perms"])
        warnings.extend(vwarnings)
        if problems:
            result["problems"] = problems
            module.fail_json(
                msg="%s would not load under ai-memory v0.7.0 (it would silently fall back to its "
                    "default config): %s. Nothing was changed. Fix these in %s (or, for an inline "
                    "api_key, set inline_api_key=externalize) and re-run."
                    % (path, "; ".join(problems), path), **result)

        if doc_changed:
            new_text = cm.tomlkit.dumps(doc)
            result["config_changed"] = new_text != text
            if not result["config_changed"]:
                new_text = None
        result["api_key_files"] = [dict(kf.public(), created=(a == "create")) for kf, a in key_actions]
        if any(a != "keep" for _, a in key_actions):
            result["changed"] = True
        if new_text is not None:
            result["changed"] = True
            if module._diff:
                after_secrets = cm.secret_values(new_text)
                diffs.append(dict(before=cm.mask_text(text, secrets + after_secrets),
                                  after=cm.mask_text(new_text, secrets + after_secrets),
                                  before_header=path, after_header=path))
            if key_files and p["backup"]:
                warnings.append(
                    "the backup of %s (written before the rewrite) necessarily keeps the inline "
                    "api_key; its mode is capped at 0600 and never wider than the original. Delete it "
                    "once the upgrade is verified" % path)

    # ---- plan ~/.claude.json -------------------------------------------------------------------
    cplan = None
    cpath = None
    if p["clean_claude_json"]:
        cpath = _expand(module, p["claude_json_path"], "claude_json_path")
        result["claude_json_path"] = cpath
        if os.path.exists(cpath):
            ctext = _read(module, cpath, "Claude config")
            try:
                cplan = cm.plan_clean_claude_json(ctext, cpath)
            except cm.ConfigMigrateError as e:
                _fail(module, e, cpath, result)
            if cplan.changed:
                result["changed"] = True
                result["claude_json_changed"] = True
                result["claude_json_cleaned"] = dict(cplan.cleaned)
                if module._diff:
                    diffs.append(dict(before=cm.masked_claude_json(ctext, cplan.fmt),
                                      after=cm.masked_claude_json(cplan.text, cplan.fmt),
                                      before_header=cpath, after_header=cpath))

    # ---- write -----------------------------------------------------------------------------
    if not module.check_mode:
        try:
            for kf, action in key_actions:
                _apply_key_file(kf, action, meta)
            if new_text is not None:
                if p["backup"]:
                    result["backup_file"] = fileops.make_backup(path)
                    if key_files or cm.secret_values(plan.original_text):
                        _cap_mode(result["backup_file"], 0o600)
                fileops.atomic_write(path, new_text)
            if cplan is not None and cplan.changed:
                if p["backup"]:
                    result["claude_json_backup_file"] = fileops.make_backup(cpath)
                fileops.atomic_write(cpath, cplan.text)
        except fileops.FileOpError as e:
            module.fail_json(msg="%s. Fix: %s." % (to_native(e), e.hint or "check the file system"),
                             **result)
        except (IOError, OSError) as e:
            module.fail_json(msg="I/O error: %s. Fix: check permissions and free space." % to_native(e),
                             **result)

    for w in warnings:
        module.warn(w)
    if diffs:
        result["diff"] = diffs
    if result["changed"]:
        what = []
        if result["config_changed"]:
            what.append("%s %s" % ("would migrate" if module.check_mode else "migrated", path))
        if any(a != "keep" for _, a in key_actions):
            what.append("key files: %s" % ", ".join(k["path"] for k in result["api_key_files"]))
        if result["claude_json_changed"]:
            what.append("%s %s" % ("would clean" if module.check_mode else "cleaned", cpath))
        result["msg"] = "; ".join(what)
    else:
        result["msg"] = "%s needs no migration" % path
    module.exit_json(**result)


def _check_home(module, raw_path, warnings):
    """Warn when HOME is not the effective user's home (sudo keeping root's HOME, for instance)."""
    if not raw_path.startswith("~"):
        return
    home = os.environ.get("HOME")
    try:
        pw_home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return
    if home and os.path.realpath(home) != os.path.realpath(pw_home):
        warnings.append(
            "HOME=%s is not the home directory of the effective user (%s); ~ was resolved with HOME, "
            "like ai-memory does. If the daemon runs as this user with its own HOME, give path "
            "explicitly." % (home, pw_home))


def _key_file_action(module, kf, config_path, result):
    """``create`` | ``keep`` | ``tighten`` for a key file; fail on a different existing secret."""
    try:
        with open(kf.path, "rb") as f:
            existing = f.read()
    except (IOError, OSError) as e:
        if os.path.exists(kf.path):
            module.fail_json(msg="cannot read the existing key file %s: %s. Fix: remove it or choose "
                                 "another api_key_dir." % (kf.path, to_native(e)), **result)
        return "create"
    if existing.decode("utf-8", "replace").strip() != kf.content.strip():
        module.fail_json(
            msg="key file %s already exists with a different secret than [%s].api_key of %s; refusing "
                "to overwrite it. Fix: remove or rename it, or set api_key_dir to another directory. "
                "Nothing was changed." % (kf.path, kf.section, config_path), **result)
    if stat.S_IMODE(os.stat(kf.path).st_mode) & 0o077:
        return "tighten"
    return "keep"


def _apply_key_file(kf, action, meta):
    uid, gid = (meta[0], meta[1]) if meta else (None, None)
    if action == "create":
        d = os.path.dirname(kf.path)
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
            if uid is not None:
                try:
                    os.chown(d, uid, gid)
                except OSError:
                    pass
        fileops.atomic_write(kf.path, kf.content, mode=0o400, uid=uid, gid=gid)
    elif action == "tighten":
        os.chmod(kf.path, 0o400)


def _cap_mode(path, cap):
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & ~cap:
        os.chmod(path, mode & cap)


if __name__ == "__main__":
    main()
