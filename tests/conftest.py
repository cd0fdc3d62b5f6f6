"""Shared pytest set-up: make ``ansible_collections.aimem.fleet`` importable from a checkout."""
import hashlib
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


def _ansiballz_cache_dir():
    """One AnsiballZ payload cache for every ansible-playbook run of this test session
    (tests/integration/callback_plugins/aimem_ansiballz_cache.py), keyed by the ansible-core in
    use and the content of the collection's plugins, so that a changed module is rebuilt."""
    h = hashlib.sha256()
    try:
        import ansible
        h.update(("%s %s" % (ansible.__version__, ansible.__file__)).encode())
    except ImportError:
        return None
    for d, dirs, files in sorted(os.walk(os.path.join(ROOT, "plugins"))):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                p = os.path.join(d, name)
                h.update(os.path.relpath(p, ROOT).encode())
                with open(p, "rb") as fh:
                    h.update(fh.read())
    return os.path.join(ROOT, ".ansible", "ansiballz-cache", h.hexdigest()[:16])


_cache = _ansiballz_cache_dir()
if _cache:
    os.environ["AIMEM_ANSIBALLZ_CACHE"] = _cache
    # the callback needs no enabling; runs that name their own callback dir use this same one
    os.environ.setdefault("ANSIBLE_CALLBACK_PLUGINS", os.path.join(ROOT, "tests", "integration", "callback_plugins"))


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
