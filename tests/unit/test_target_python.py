"""Modules and module_utils run on the managed hosts' Python (3.8+ for ansible-core 2.19 targets):
no syntax or stdlib API newer than 3.8, and no third-party import but a guarded tomlkit."""
import ast
import glob
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = sorted(glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py")) +
               glob.glob(os.path.join(ROOT, "plugins", "module_utils", "*.py")))
STDLIB = set(sys.stdlib_module_names) | {"ansible", "ansible_collections"}
# stdlib modules newer than 3.8: allowed only inside try/except (with a fallback)
NEWER_STDLIB = {"tomllib", "zoneinfo", "graphlib"}
# APIs added after 3.8 that would pass a 3.8 syntax check but fail at run time on a 3.8 target
NEWER_APIS = re.compile(r"\.removeprefix\(|\.removesuffix\(|\bmath\.lcm\(|\bzoneinfo\b|"
                        r"(?<![\w.])(list|dict|tuple|set|frozenset|type)\[[A-Za-z]")


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, ROOT) for p in FILES])
def test_parses_as_python_38(path):
    with open(path) as f:
        src = f.read()
    ast.parse(src, filename=path, feature_version=(3, 8))
    code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith("#"))
    assert not NEWER_APIS.search(code), NEWER_APIS.search(code).group(0)


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, ROOT) for p in FILES])
def test_only_stdlib_or_guarded_tomlkit(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        guarded.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module.split(".")[0]]
        else:
            continue
        for name in names:
            if name in STDLIB and name not in NEWER_STDLIB:
                continue
            assert name in NEWER_STDLIB | {"tomlkit"}, "%s imports third-party %s" % (path, name)
            assert id(node) in guarded, "%s imports %s without a guard" % (path, name)


def _python38():
    """A working Python 3.8 (pyenv shims exist for versions that are not selected: run it to know)."""
    import shutil
    import subprocess
    for p in (os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python3.8"), shutil.which("python3.8")):
        if p and os.access(p, os.X_OK):
            res = subprocess.run([p, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
            if res.returncode == 0 and res.stdout.strip() == "(3, 8)":
                return p
    return None


PY38 = _python38()
UTILS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "plugins", "module_utils", "*.py"))
               if not os.path.basename(p).startswith("_"))


@pytest.mark.skipif(PY38 is None, reason="no Python 3.8 interpreter on this machine")
@pytest.mark.parametrize("name", UTILS)
def test_module_utils_import_on_python38(name):
    """Importing runs every def/class statement, so annotations such as list[str] fail here."""
    import subprocess
    code = ("import sys; sys.path.insert(0, %r); "
            "import ansible_collections.aimem.fleet.plugins.module_utils.%s" % (os.path.join(ROOT, ".collections"), name))
    res = subprocess.run([PY38, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert res.returncode == 0, res.stderr
