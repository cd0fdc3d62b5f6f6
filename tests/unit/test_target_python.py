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
