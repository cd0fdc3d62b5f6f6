"""Shared pytest set-up: make ``ansible_collections.aimem.fleet`` importable from a checkout."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".collections")
_link = os.path.join(COLLECTIONS, "ansible_collections", "aimem", "fleet")
if not os.path.lexists(_link):
    os.makedirs(os.path.dirname(_link), exist_ok=True)
    try:
        os.symlink(os.path.join("..", "..", ".."), _link)
    except FileExistsError:  # another pytest-xdist worker made it first
        pass
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)


# Longest test files first: pytest-xdist (--dist loadfile) hands files to idle workers in this
# order, so the slow fleet files do not start last and leave one worker running alone at the end.
SLOW_FIRST = [
    "tests/faults/test_fault_run.py",
    "tests/fleet_playbooks/test_upgrade_fleet.py",
    "tests/molecule/test_molecule.py",
    "tests/faults/test_fault_verify.py",
    "tests/faults/test_security.py",
    "tests/faults/test_fault_state.py",
    "tests/faults/test_fault_drain.py",
    "tests/faults/test_fault_config.py",
    "tests/faults/test_fault_release.py",
    "tests/fleet_playbooks/test_tier1_local.py",
    "tests/demo/",
    "tests/roles/",
]


def _slow_rank(item):
    path = os.path.relpath(str(item.fspath), ROOT)
    for i, prefix in enumerate(SLOW_FIRST):
        if path.startswith(prefix):
            return i
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_slow_rank)   # stable: the order inside a file is kept
