#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aimem_lock
short_description: Per-host run lock, so that two controllers never change the same host at once
version_added: "1.0.0"
description:
  - Takes (O(state=present)) or releases (O(state=absent)) the run lock of one host, a JSON file
    on the target (for example C(<work_dir>/run.lock), mode C(0600)) naming the run that holds it -
    run id, controller host name, the pid and start time of the C(ansible-playbook) process on that
    controller, user, playbook, when it was acquired and its last heartbeat.
  - The upgrade, secure and rollback playbooks take it before they change anything on a host, so
    a second controller running the same playbook against the same host at the same time waits
    or fails cleanly; it never changes the host too.
  - B(The action plugin does the deciding, on the controller.) It fills O(owner) itself. When
    another run holds the lock, it checks whether that run is dead (same controller host name and
    pid namespace, and its C(ansible-playbook) pid is gone or was reused, or the controller
    rebooted) and then breaks that lock with a warning; otherwise it polls every O(poll) seconds
    for up to O(wait) seconds and then fails, naming the host, the lock file and the holder.
  - The module itself (running on the target) never fails because of another holder; it returns
    RV(acquired=false) and RV(held_by).
  - Re-acquiring with the same run id refreshes the heartbeat (and the owner fields) and reports
    RV(changed=false). Run it again at phase boundaries of a long run to keep the heartbeat
    fresh.
  - A lock is broken only when O(break_holder) is that holder's exact run id, or when its
    heartbeat is older than O(stale_after) seconds, or (by the action plugin) when its holder is
    provably dead on this controller.
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written, not even the guard file. RV(acquired) and RV(broken) say what would
        happen. The action plugin warns instead of failing when another live run holds the lock.
  diff_mode:
    support: none
    details:
      - The lock file is internal bookkeeping; there is nothing to diff.
  action:
    support: full
    details:
      - The action plugin runs on the controller. It fills O(owner), judges whether a holder from
        this controller is dead, and waits (O(wait), O(poll)).
options:
  path:
    description:
      - The lock file on the target. Its directory must exist (the play's work directory next to
        the data; never C(/tmp)).
      - A guard file C(<path>.guard) is created next to it and kept, and a broken lock is moved to
        C(<path>.broken.<UTC %Y%m%d-%H%M%S>); the newest of those is kept for forensics.
    type: path
    required: true
  state:
    description:
      - V(present) takes the lock (or refreshes the heartbeat of our own lock).
      - V(absent) releases it if it holds O(run_id). A lock held by another run is left alone
        (RV(held_by) names it, the action plugin warns) unless O(break_holder) is its run id.
    type: str
    choices: [present, absent]
    default: present
  run_id:
    description:
      - The id of this playbook run, unique per run; the same id means "the same run" (a
        re-acquire refreshes the heartbeat, a release removes the lock).
      - Required when the action plugin is used (always, when called as C(aimem.fleet.aimem_lock)).
        The module also takes it from O(owner.run_id).
    type: str
  owner:
    description:
      - The owner written into the lock. The action plugin fills it (C(run_id), C(controller),
        C(pid), C(pid_start), C(boot_id), C(pid_ns), C(user), C(playbook), C(play)); do not set it in a
        task.
    type: dict
  stale_after:
    description:
      - A lock whose heartbeat is older than this many seconds is broken automatically. V(0) means
        never. Choose it longer than the longest gap between two lock refreshes of a run.
      - A lock file that is not valid JSON counts as held; its modification time is its heartbeat.
    type: int
    default: 0
  break_holder:
    description:
      - Break the lock only if it is held by exactly this run id (as shown in RV(held_by.run_id);
        an unreadable lock file has the id C(corrupt:<12 hex>)). Check first that this run is
        really gone.
    type: str
  wait:
    description:
      - Action plugin only. Seconds to keep polling while another live run holds the lock, before
        failing. V(0) fails at once.
    type: int
    default: 0
  poll:
    description:
      - Action plugin only. Seconds between two attempts while waiting.
    type: int
    default: 2
requirements:
  - Python 3.8+ on the target. The filesystem of O(path) must support hard links and C(flock)
    (any local Linux filesystem; NFS v4 does).
notes:
  - How it is race-free. The lock is created by writing a temp file next to it, C(fsync), and
    C(link(2)) to the lock name, which fails if the lock exists; a half-written lock is never
    visible. Every read-decide-change step (refresh, release, break) runs under C(flock) on
    C(<path>.guard), which the kernel releases when a process dies.
  - Whether a holder is dead can only be known on its own controller; a lock of another controller
    is broken only by O(stale_after) or O(break_holder).
seealso:
  - module: aimem.fleet.aimem_info
author:
  - aimem.fleet maintainers
"""

EXAMPLES = r"""
- name: Take the run lock of this host (wait up to 10 minutes for another run)
  aimem.fleet.aimem_lock:
    path: /var/lib/ai-memory/.aimem-fleet/run.lock
    run_id: "{{ aimem_run_id }}"
    wait: 600
    stale_after: 21600
  become: true

- name: Refresh the heartbeat between two phases (changed=false)
  aimem.fleet.aimem_lock:
    path: /var/lib/ai-memory/.aimem-fleet/run.lock
    run_id: "{{ aimem_run_id }}"

- name: Release it at the end of the run
  aimem.fleet.aimem_lock:
    path: /var/lib/ai-memory/.aimem-fleet/run.lock
    run_id: "{{ aimem_run_id }}"
    state: absent

- name: Remove the lock of a run that is known to be gone (another controller)
  aimem.fleet.aimem_lock:
    path: /var/lib/ai-memory/.aimem-fleet/run.lock
    run_id: "{{ aimem_run_id }}"
    break_holder: 20260601T224038Z-ctl2-4242
"""

RETURN = r"""
path:
  description: The lock file.
  returned: always
  type: str
  sample: /var/lib/ai-memory/.aimem-fleet/run.lock
acquired:
  description:
    - Whether this run holds the lock now (in check mode - would hold it). Always V(false) for
      O(state=absent).
  returned: always
  type: bool
released:
  description: Whether our lock was removed (O(state=absent)).
  returned: always
  type: bool
refreshed:
  description: Whether the lock was already ours and only its heartbeat was refreshed.
  returned: always
  type: bool
held_by:
  description:
    - The holder after the call - this run when RV(acquired), the other run when not, V(null) when
      nobody holds the lock.
    - An unreadable lock file is a holder with C(corrupt=true), C(run_id=corrupt:<12 hex>) and
      C(error).
  returned: always
  type: dict
  sample:
    run_id: 20260601T224038Z-ctl1-4242
    controller: ctl1
    pid: 4242
    pid_start: 1234567
    boot_id: 0c5e6bd5-9f70-4d6a-8e4e-2b1c7f4a9d11
    pid_ns: "pid:[4026531836]"
    user: ops
    playbook: aimem.fleet.upgrade
    play: Upgrade ai-memory
    acquired_at: "2026-06-01T22:40:38Z"
    heartbeat: "2026-06-01T22:41:02Z"
    version: 1
    corrupt: false
broken:
  description: The holder whose lock was broken (moved aside) by this call, or V(null).
  returned: always
  type: dict
broken_path:
  description: Where the broken lock was moved (kept for forensics until the next break).
  returned: always
  type: str
  sample: /var/lib/ai-memory/.aimem-fleet/run.lock.broken.20260601-224038
broken_reason:
  description: Why it was broken - V(break_holder) or V(stale).
  returned: always
  type: str
waited:
  description: Seconds the action plugin waited for another run.
  returned: with O(state=present)
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.aimem.fleet.plugins.module_utils import runlock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            run_id=dict(type="str"),
            owner=dict(type="dict"),
            stale_after=dict(type="int", default=0),
            break_holder=dict(type="str"),
            wait=dict(type="int", default=0),
            poll=dict(type="int", default=2),
        ),
        supports_check_mode=True,
    )
    p = module.params
    owner = dict(p["owner"] or {})
    run_id = p["run_id"] or owner.get("run_id")
    if not run_id:
        module.fail_json(msg="aimem_lock needs run_id (the id of this playbook run)", path=p["path"])
    owner["run_id"] = run_id
    if p["stale_after"] < 0:
        module.fail_json(msg="stale_after must be 0 (never) or a number of seconds", path=p["path"])
    try:
        if p["state"] == "present":
            res = runlock.acquire(p["path"], owner, stale_after=p["stale_after"],
                                  break_holder=p["break_holder"], check_mode=module.check_mode)
        else:
            res = runlock.release(p["path"], run_id, break_holder=p["break_holder"],
                                  check_mode=module.check_mode)
    except runlock.LockError as e:
        module.fail_json(msg="%s%s" % (to_native(e), ("; fix: " + e.hint) if e.hint else ""),
                         path=e.path or p["path"], hint=e.hint, acquired=False, held_by=None, broken=None)
    if res.get("broken") and not module.check_mode:
        module.warn("broke the run lock %s of %s (%s); it was moved to %s" % (
            p["path"], runlock.describe(res["broken"]), res["broken_reason"], res["broken_path"]))
    module.exit_json(**res)


if __name__ == "__main__":
    main()
