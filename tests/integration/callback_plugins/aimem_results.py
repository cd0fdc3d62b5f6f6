# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only notification callback: append every task result as one JSON line to
``$AIMEM_RESULTS_FILE`` so tests can assert on parsed results while stdout keeps the normal
(human, diff-showing) output. Enabled by ``tests/integration/helpers.py``."""

from __future__ import absolute_import, division, print_function

import json
import os
import time

from ansible.plugins.callback import CallbackBase

__metaclass__ = type

DOCUMENTATION = r"""
name: aimem_results
type: notification
short_description: Write per-task results as JSON lines (aimem.fleet tests only)
description:
  - Appends one JSON object per task result to the file named by C(AIMEM_RESULTS_FILE).
requirements:
  - enable in ANSIBLE_CALLBACKS_ENABLED
"""


def _plain(value):
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "aimem_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._out = os.environ.get("AIMEM_RESULTS_FILE")
        self._play = None
        self._task_started = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_started = time.time()

    def v2_playbook_on_handler_task_start(self, task):
        self._task_started = time.time()

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()

    def _record(self, result, status):
        if not self._out:
            return
        data = getattr(result, "result", None)
        if not isinstance(data, dict):
            data = getattr(result, "_result", {})
        task = getattr(result, "task_name", None)
        if not isinstance(task, str):
            task = result._task.get_name()
        host = result._host.get_name() if hasattr(result, "_host") else result.host.get_name()
        line = {"play": self._play, "task": task, "host": host, "status": status,
                "action": getattr(result._task, "action", None), "result": _plain(dict(data)),
                "secs": round(time.time() - self._task_started, 3)}
        with open(self._out, "a") as f:
            f.write(json.dumps(line) + "\n")

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")
