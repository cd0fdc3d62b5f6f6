#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aimem_report
short_description: Write the controller-side report of an aimem.fleet run (one row per host)
version_added: "1.0.0"
description:
  - Writes this host's row of the run report as C(<report_dir>/<run_id>/hosts/<host>.json) from
    the C(aimem_*) facts the roles publish (O(facts)), and with O(publish=true) rebuilds
    C(report.json) and C(report.txt) (the fleet table) from every row written so far and points
    C(<report_dir>/latest) at the run.
  - Runs entirely in its action plugin, on the controller; nothing is sent to or run on the
    host, so a report costs no module run (the upgrade writes it after every batch).
  - Files are written atomically, C(0600) in C(0700) directories. A row holds no secret, only
    versions, paths, digests, counts and verdicts.
attributes:
  check_mode:
    support: full
    details:
      - The report is a controller artifact, written in check mode too (its rows then have
        C(mode=check)); the task never reports a change.
  diff_mode:
    support: none
  action:
    support: full
    details:
      - Only the action plugin exists; it runs on the controller.
options:
  report_dir:
    description:
      - The controller directory that holds the reports of every run
        (C(<aimem_controller_dir>/report) in the playbooks).
    type: path
    required: true
  run_id:
    description:
      - The id of this run (a plain file name); the run's directory is C(<report_dir>/<run_id>).
    type: str
    required: true
  facts:
    description:
      - This host's C(aimem_*) facts (C(aimem_preflight_result), C(aimem_drain_result), ...,
        C(aimem_failed_step), C(aimem_host_started)); the row is built from them.
      - Omit it to only publish.
    type: dict
  finished:
    description:
      - When the host's part of the run ended (epoch seconds); the row's C(seconds) is measured
        up to it. Default is now.
    type: float
  publish:
    description:
      - Rebuild C(report.json) and C(report.txt) from every row of the run and point
        C(<report_dir>/latest) at it. Use it with C(run_once) after the rows are written.
    type: bool
    default: false
author:
  - aimem.fleet contributors
"""

EXAMPLES = r"""
- name: This host's report row
  aimem.fleet.aimem_report:
    report_dir: "{{ aimem_controller_dir }}/report"
    run_id: "{{ aimem_run_id }}"
    facts:
      aimem_preflight_result: "{{ aimem_preflight_result | default({}) }}"
      aimem_verify_result: "{{ aimem_verify_result | default({}) }}"

- name: Fleet report (JSON and table) from every row so far
  aimem.fleet.aimem_report:
    report_dir: "{{ aimem_controller_dir }}/report"
    run_id: "{{ aimem_run_id }}"
    publish: true
  run_once: true
  register: fleet_report
"""

RETURN = r"""
row:
  description: The row written for this host.
  returned: when O(facts) is given
  type: dict
row_path:
  description: The row's file on the controller.
  returned: when O(facts) is given
  type: str
report:
  description: The fleet report - C(run_id), C(summary) (C(hosts), C(by_status), C(ok)) and C(hosts) (every row).
  returned: when O(publish=true)
  type: dict
report_path:
  description: The C(report.json) written.
  returned: when O(publish=true)
  type: str
"""
