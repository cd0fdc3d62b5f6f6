"""Fleet playbook tests: aimem.fleet.<playbook> over real SSH against the project's test hosts."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "roles"))

collect_ignore = []
if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytestmark = pytest.mark.skip(reason="the test fleet needs root (namespaces)")
