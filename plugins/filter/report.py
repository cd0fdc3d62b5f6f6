# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that build the controller-side upgrade report (logic in module_utils/report.py)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible_collections.aimem.fleet.plugins.module_utils import report as R


def report_row(facts, host, now=None):
    if not isinstance(facts, dict):
        raise AnsibleFilterError("aimem.fleet.report_row expects a dict of aimem_* facts, got %s" % type(facts).__name__)
    return R.build_row(host, facts, now=now)


def fleet_report(directory, run_id=None):
    return R.fleet_report(str(directory), run_id=run_id)


def report_table(rows):
    if isinstance(rows, dict) and "hosts" in rows:
        rows = rows["hosts"]
    return R.render_table(rows)


class FilterModule(object):
    def filters(self):
        return {"report_row": report_row, "fleet_report": fleet_report, "report_table": report_table}
