"""Role tests run against a real test fleet; they need root (namespaces)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="the test fleet needs root (namespaces)")
        for item in items:
            if "tests/roles" in str(item.fspath) or "tests/fleet_playbooks" in str(item.fspath):
                item.add_marker(skip)
