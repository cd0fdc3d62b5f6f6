# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""aimem.fleet.aimem_report: write the controller-side report of a run, on the controller, in the
action plugin itself (no module is shipped or run anywhere). The row and the files are built by
``module_utils/report.py`` (unit-tested there)."""

from __future__ import absolute_import, division, print_function

import os
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action import ActionBase

from ansible_collections.aimem.fleet.plugins.module_utils import report as R
from ansible_collections.aimem.fleet.plugins.module_utils.fileops import FileOpError

__metaclass__ = type

ARGUMENT_SPEC = dict(
    report_dir=dict(type="path", required=True),
    run_id=dict(type="str", required=True),
    facts=dict(type="dict"),
    finished=dict(type="float"),
    publish=dict(type="bool", default=False),
)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        if task_vars is None:
            task_vars = dict()
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if args["facts"] is None and not args["publish"]:
            raise AnsibleActionFail("aimem_report: give facts (this host's row), publish=true, or both")
        root = os.path.expanduser(args["report_dir"])
        run_dir = os.path.join(root, args["run_id"])
        host = task_vars.get("inventory_hostname", "?")
        # controller artifacts, never a change of a host: written in check mode too (the report of
        # a check run says what would happen) and never reported as changed
        result["changed"] = False
        try:
            if args["facts"] is not None:
                now = args["finished"] if args["finished"] is not None else time.time()
                row = R.build_row(host, args["facts"], now=now)
                result["row"] = row
                result["row_path"] = R.write_row(run_dir, row)
            if args["publish"]:
                report = R.publish(root, args["run_id"])
                result["report"] = report
                result["report_path"] = os.path.join(run_dir, "report.json")
        except ValueError as e:
            raise AnsibleActionFail("aimem_report: %s" % to_native(e))
        except (OSError, IOError, FileOpError) as e:
            raise AnsibleActionFail(
                "aimem_report: cannot write the run report under %s on the controller: %s; fix: make "
                "aimem_controller_dir a directory the controller user can write" % (run_dir, to_native(e)))
        return result
