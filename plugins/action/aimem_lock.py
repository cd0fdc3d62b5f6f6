# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of aimem.fleet.aimem_lock: fill the owner, break a provably dead holder of this
controller, wait for a live one, fail with a message that names the holder and the fix.

The decisions that can be pure live in ``module_utils/runlock.py`` (``holder_liveness``,
``describe``) and are unit-tested there.

Which pid is "the ansible-playbook process": ansible-core runs every task in a WorkerProcess that
the main ``ansible-playbook`` process forks (``ansible.utils.multiprocessing`` pins the ``fork``
context), and the action plugin runs inside that worker, so ``os.getppid()`` is the main process
(verified in ``tests/integration/test_module_lock.py`` with forks 1 and 5 against the pid of the
``ansible-playbook`` subprocess).
"""

from __future__ import absolute_import, division, print_function

import getpass
import os
import socket
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.aimem.fleet.plugins.module_utils import runlock

__metaclass__ = type

MODULE = "aimem.fleet.aimem_lock"

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    run_id=dict(type="str", required=True),
    stale_after=dict(type="int", default=0),
    break_holder=dict(type="str"),
    wait=dict(type="int", default=0),
    poll=dict(type="int", default=2),
)

FIX = ("another aimem.fleet run holds this host; wait for it to finish (or set aimem_lock_wait), or, "
       "if that controller is gone, remove %s after checking that no run is active; a lock whose "
       "heartbeat is older than aimem_lock_stale_after is broken automatically")


def _playbook_names():
    try:
        from ansible import context
        args = context.CLIARGS.get("args") or ()
    except Exception:  # pragma: no cover - CLIARGS always exists under ansible-playbook
        args = ()
    return ", ".join(str(a) for a in args) or None


def _user():
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry and no LOGNAME
        return str(os.getuid())


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def _owner(self, run_id, task_vars):
        pid = os.getppid()
        return runlock.make_owner(
            run_id=run_id, controller=socket.gethostname(), pid=pid,
            pid_start=runlock.proc_start_time(pid), user=_user(), playbook=_playbook_names(),
            play=task_vars.get("ansible_play_name"), boot_id=runlock.read_boot_id(),
            pid_ns=runlock.read_pid_ns(pid))

    def run(self, tmp=None, task_vars=None):
        if task_vars is None:
            task_vars = dict()
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp

        if "owner" in self._task.args:
            raise AnsibleActionFail("aimem_lock: do not set 'owner'; the action plugin fills it")
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if args["wait"] < 0 or args["poll"] < 1:
            raise AnsibleActionFail("aimem_lock: wait must be >= 0 and poll >= 1 seconds")
        if args["stale_after"] < 0:
            raise AnsibleActionFail("aimem_lock: stale_after must be 0 (never) or a number of seconds")

        host = task_vars.get("inventory_hostname", "?")
        hostname = socket.gethostname()
        owner = self._owner(args["run_id"], task_vars)
        module_args = dict(path=args["path"], state=args["state"], run_id=args["run_id"], owner=owner,
                           stale_after=args["stale_after"], break_holder=args["break_holder"])
        check = bool(self._task.check_mode)
        warnings = []

        started = time.monotonic()
        broken_dead = set()
        while True:
            res = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
            warnings.extend(w for w in (res.pop("warnings", None) or []))
            res.pop("invocation", None)
            if res.get("failed"):
                result.update(res)
                result["msg"] = "%s: %s" % (host, res.get("msg"))
                break
            holder = res.get("held_by")
            if args["state"] == "absent":
                result.update(res)
                if holder and not res.get("broken"):
                    warnings.append("%s: the run lock %s is held by %s, not by run %s; left it alone" % (
                        host, args["path"], runlock.describe(holder), args["run_id"]))
                break
            if res.get("acquired"):
                result.update(res)
                break

            verdict = runlock.holder_liveness(holder, hostname, boot_id=owner["boot_id"],
                                              pid_ns=owner["pid_ns"])
            if verdict == "dead" and holder.get("run_id") not in broken_dead:
                broken_dead.add(holder["run_id"])
                warnings.append(
                    "%s: %s the run lock %s of dead %s: its ansible-playbook process is gone from "
                    "this controller (killed?); check the host's state before trusting it" % (
                        host, "would break" if check else "breaking", args["path"],
                        runlock.describe(holder)))
                module_args = dict(module_args, break_holder=holder["run_id"])
                continue
            if check:
                result.update(res)
                warnings.append("%s: the run lock %s is held by %s; a real run would wait or fail" % (
                    host, args["path"], runlock.describe(holder)))
                break
            waited = time.monotonic() - started
            if waited < args["wait"]:
                time.sleep(min(args["poll"], max(0.1, args["wait"] - waited)))
                continue
            result.update(res)
            result["failed"] = True
            result["msg"] = "%s: cannot take the run lock %s: held by %s (waited %ds). Fix: %s" % (
                host, args["path"], runlock.describe(holder), int(waited), FIX % args["path"])
            break

        result["waited"] = round(time.monotonic() - started, 1)
        if warnings:
            result["warnings"] = warnings
        return result
