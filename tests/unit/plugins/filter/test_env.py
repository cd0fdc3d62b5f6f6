import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.aimem.fleet.plugins.filter.env import env_dict


def test_env_dict_reads_an_env_file_as_a_service_manager_does():
    text = ("# staged by aimem.fleet\n\nAI_MEMORY_DB=/var/lib/ai-memory/ai-memory.db\n"
            "export AI_MEMORY_PERMISSIONS_MODE='advisory'\n ; old comment\nOPENAI_API_KEY=\"sk-x\"  \n"
            "not a line\nAI_MEMORY_FED_REQUIRE_SIG=0\nAI_MEMORY_FED_REQUIRE_SIG=1\nEMPTY=\n")
    assert env_dict(text) == {"AI_MEMORY_DB": "/var/lib/ai-memory/ai-memory.db",
                              "AI_MEMORY_PERMISSIONS_MODE": "advisory", "OPENAI_API_KEY": "sk-x",
                              "AI_MEMORY_FED_REQUIRE_SIG": "1", "EMPTY": ""}
    assert env_dict(None) == {} and env_dict("") == {}


def test_env_dict_refuses_what_is_not_text():
    with pytest.raises(AnsibleFilterError):
        env_dict({"a": 1})
