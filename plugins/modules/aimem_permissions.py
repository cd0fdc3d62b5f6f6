#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aimem_permissions
short_description: Idempotent C([[governance.policy]]) to C([[permissions.rules]]) migration in ai-memory's config.toml
version_added: "1.0.0"
description:
  - Renders one C([[permissions.rules]]) table per C([[governance.policy]]) in an ai-memory
    C(config.toml), translating exactly like upstream's
    C(ai-memory governance migrate-to-permissions) - C(namespace_pattern) from C(scope) or C(*),
    C(op) from C(action) or C(*), C(agent_pattern) from C(role), else C(agent_id), else C(*), and
    C(decision) from C(decision) or C(ask); other policy fields are dropped.
  - Unlike upstream (which appends the whole block again on every run), a rule is added only when
    no existing rule has the same four fields, so a re-run adds nothing.
  - Any decision other than C(allow), C(deny) or C(ask) (lowercase) is rejected before anything is
    written, naming the policy; upstream copies it through and ai-memory then rejects the whole
    config and silently runs on defaults. Existing invalid rules or an invalid C([permissions].mode)
    are rejected too.
  - The file is edited surgically - the new tables go right after the last existing
    C([[permissions.rules]]) (or after C([permissions]), or at the end of the file) below a
    marker comment - so comments, key order and formatting elsewhere stay byte for byte. The
    result is parsed again and must equal the old data plus exactly the added rules (and mode)
    before it is written.
  - An inline C(permissions.rules = [...]) array is refused (appending tables to it would be
    invalid TOML, which is what upstream produces); rewrite it as C([[permissions.rules]]) tables.
  - Optionally sets C([permissions].mode).
  - Writes atomically (temp file in the same directory, fsync, rename), keeping owner, group and
    mode, after an optional C(<path>.bak.<UTC timestamp>) backup.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Secret values (any C(api_key), C(*_token), C(*_secret), C(*_password), C(*_passphrase))
      are replaced by C(********) in the diff.
options:
  path:
    description:
      - The ai-memory config file. ai-memory only ever reads C($HOME/.config/ai-memory/config.toml)
        of the user it runs as, so run this as the service user or give the path.
    type: path
    default: ~/.config/ai-memory/config.toml
  mode:
    description:
      - Also set C([permissions].mode). Lowercase only; ai-memory rejects the whole config otherwise.
      - When omitted the mode is left as it is (v0.7.0 then defaults to C(enforce)).
    type: str
    choices: [enforce, advisory, "off"]
  backup:
    description:
      - Copy the file to C(<path>.bak.<UTC %Y%m%d-%H%M%S>) before changing it (never overwriting an
        existing backup; never more readable than the original).
    type: bool
    default: true
  state:
    description:
      - Only V(present) - the rules derived from the policies are present.
    type: str
    choices: [present]
    default: present
notes:
  - Needs a TOML parser on the target - C(tomllib) (Python 3.11+) or the C(tomlkit) library.
  - The C([governance]) section is kept; v0.7.0 ignores it once rules exist.
seealso:
  - module: aimem.fleet.aimem_doctor
author:
  - aimem.fleet contributors
"""

EXAMPLES = r"""
- name: Migrate governance policies to permission rules, staged in advisory mode
  aimem.fleet.aimem_permissions:
    path: /var/lib/ai-memory/.config/ai-memory/config.toml
    mode: advisory
  become: true
  become_user: ai-memory

- name: Preview what would be added
  aimem.fleet.aimem_permissions:
  check_mode: true
  diff: true
  register: perms

- name: Show the rules that would be added
  ansible.builtin.debug:
    var: perms.rules_added
"""

RETURN = r"""
path:
  description: The config file.
  returned: always
  type: str
rules_added:
  description: Rules added (or, in check mode, that would be added), in file order.
  returned: always
  type: list
  elements: dict
  sample: [{namespace_pattern: "team/*", op: write, agent_pattern: "*", decision: deny}]
rules_already_present:
  description: Rules derived from policies that were already present.
  returned: always
  type: list
  elements: dict
policies:
  description: Number of C([[governance.policy]]) entries read.
  returned: always
  type: int
rules_total:
  description: Number of C([[permissions.rules]]) after the run.
  returned: always
  type: int
mode_before:
  description: C([permissions].mode) before (V(null) when unset).
  returned: always
  type: str
mode_after:
  description: C([permissions].mode) after.
  returned: always
  type: str
backup_file:
  description: Backup written before the change.
  returned: when a backup was made
  type: str
diff:
  description: Before and after text of the file.
  returned: when changed and in diff mode
  type: dict
"""

import os
import platform

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.aimem.fleet.plugins.module_utils import config_migrate as cm
from ansible_collections.aimem.fleet.plugins.module_utils import permissions as P
from ansible_collections.aimem.fleet.plugins.module_utils.fileops import FileOpError, atomic_write, make_backup


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="~/.config/ai-memory/config.toml"),
            mode=dict(type="str", choices=["enforce", "advisory", "off"]),
            backup=dict(type="bool", default=True),
            state=dict(type="str", default="present", choices=["present"]),
        ),
        supports_check_mode=True,
    )
    host = platform.node() or "this host"
    path = module.params["path"]
    if P.TOML_READER is None:
        module.fail_json(msg=missing_required_lib("tomlkit") + " (or Python 3.11+) on %s, to read %s" % (host, path))
    if not os.path.isfile(path):
        module.fail_json(msg="%s does not exist on %s; deploy the config (or run ai-memory once as the service user, "
                             "which writes the template) and fix `path`" % (path, host), path=path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except (IOError, OSError) as e:
        module.fail_json(msg="cannot read %s on %s: %s; run as the service user or fix permissions" % (path, host, to_native(e)),
                         path=path)
    except UnicodeDecodeError as e:
        module.fail_json(msg="%s on %s is not UTF-8 (%s); TOML must be UTF-8 - fix the file" % (path, host, to_native(e)),
                         path=path)
    try:
        plan = P.plan(text, mode=module.params["mode"], path=path)
    except P.PermissionsError as e:
        module.fail_json(msg="%s (on %s; file left unchanged)%s" % (to_native(e), host, ("; fix: " + e.hint) if e.hint else ""),
                         path=path)

    result = dict(
        changed=plan["changed"], path=path, rules_added=plan["added"], rules_already_present=plan["skipped"],
        policies=plan["policies"], rules_total=plan["rules_after"], mode_before=plan["mode_before"],
        mode_after=plan["mode_after"],
    )
    if plan["changed"] and module._diff:
        # The diff is the whole file: mask the serve api_key, hook secrets, inline LLM keys...
        secrets = cm.secret_values(P.load_toml(text, path))
        for s in secrets:
            module.no_log_values.add(s)
        result["diff"] = {"before": cm.mask_text(text, secrets), "after": cm.mask_text(plan["new_text"], secrets),
                          "before_header": path, "after_header": "%s (migrated)" % path}
    if plan["changed"] and not module.check_mode:
        try:
            if module.params["backup"]:
                result["backup_file"] = make_backup(path)
            atomic_write(path, plan["new_text"])
        except FileOpError as e:
            module.fail_json(msg="%s on %s%s" % (to_native(e), host, ("; " + e.hint) if e.hint else ""), **result)
    if not plan["policies"] and not plan["changed"]:
        result["msg"] = "no [[governance.policy]] in %s - nothing to migrate" % path
    else:
        result["msg"] = "%d rule(s) %sadded to %s, %d already present" % (
            len(plan["added"]), "would be " if module.check_mode else "", path, len(plan["skipped"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
