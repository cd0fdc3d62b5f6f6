"""Fault-injection and security suite (``make test-faults``): aimem.fleet.upgrade / secure /
rollback over real SSH against the project's test hosts, with one fault injected per test."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "roles"))

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytestmark = pytest.mark.skip(reason="the test fleet needs root (namespaces)")
