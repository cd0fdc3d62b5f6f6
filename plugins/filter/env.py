# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The env_dict filter: an env file's text as the service manager reads it (logic in
module_utils/install_info.py, the same parser aimem_info uses on the host)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible_collections.aimem.fleet.plugins.module_utils.install_info import parse_env_text


def env_dict(text):
    if text is None:
        return {}
    if not isinstance(text, str):
        raise AnsibleFilterError("aimem.fleet.env_dict expects the text of an env file, got %s" % type(text).__name__)
    return parse_env_text(text)


class FilterModule(object):
    def filters(self):
        return {"env_dict": env_dict}
