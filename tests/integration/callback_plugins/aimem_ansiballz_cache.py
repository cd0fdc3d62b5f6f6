# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only: share ansible-core's AnsiballZ build cache between the ansible-playbook runs of one
test session.

ansible-core builds a module's payload (it compiles the module and every module_util it imports,
~0.2 CPU-s per module) once per ansible-playbook process, in a cache under the process' own
temporary directory (``DEFAULT_LOCAL_TMP/ansiballz_cache``), which is removed at exit. The test
suite runs hundreds of short ansible-playbook processes, so it rebuilt the same payloads again and
again: about a third of the controller's CPU. When ``AIMEM_ANSIBALLZ_CACHE`` names a directory,
this callback points the process' cache at it (a symlink; ansible-core removes only the link at
exit). ansible-core writes cache entries under a file lock and renames them into place, so
concurrent processes share it safely. tests/conftest.py sets the variable to a directory keyed by
the ansible-core version and a digest of the collection's plugins, so an edited module never
meets a stale payload. Without the variable this callback does nothing.
"""

from __future__ import absolute_import, division, print_function

import os

from ansible import constants as C
from ansible.plugins.callback import CallbackBase

__metaclass__ = type

DOCUMENTATION = r"""
name: aimem_ansiballz_cache
type: aggregate
short_description: Share the AnsiballZ payload cache between runs (aimem.fleet tests only)
description:
  - Links C(DEFAULT_LOCAL_TMP/ansiballz_cache) to the directory named by C(AIMEM_ANSIBALLZ_CACHE).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "aimem_ansiballz_cache"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        shared = os.environ.get("AIMEM_ANSIBALLZ_CACHE")
        if not shared:
            return
        try:
            os.makedirs(shared, 0o700, exist_ok=True)
            link = os.path.join(C.DEFAULT_LOCAL_TMP, "ansiballz_cache")
            if not os.path.lexists(link):
                os.symlink(shared, link)
        except OSError as e:  # never fail a run over a cache
            self._display.warning("aimem_ansiballz_cache: not sharing the AnsiballZ cache: %s" % e)
