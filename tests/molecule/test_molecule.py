"""`molecule test` of molecule/default as a pytest test: a 2-host test fleet ("molec") seeded as
ai-memory 0.6.4, upgraded by aimem.fleet.upgrade, converged a second time with no change
(molecule's idempotence step), verified with testinfra on the hosts, then torn down.

    cd /work/main && .venv/bin/python -m pytest -q tests/molecule
"""
import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))

from fleetlib import Fleet, record  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test fleet needs root (namespaces, veths)")

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEPS = ("create", "prepare", "converge", "idempotence", "verify", "destroy")


@pytest.fixture
def molecule_fleet_guard():
    """Whatever happens to `molecule test`, the "molec" fleet does not outlive this test."""
    yield
    Fleet(name="molec", owner_pid=None).script("down", check=False, timeout=120)


def test_molecule_default_scenario(molecule_fleet_guard):
    env = dict(os.environ)
    for k in [k for k in env if k.startswith(("FLEET_", "MOLECULE_"))]:
        del env[k]
    env.update({
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_HOME": os.path.join(ROOT, ".ansible"),
        "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0",
        # create.yml hands this to fleet.sh: its watchdog takes the fleet down if pytest dies
        "MOLECULE_FLEET_OWNER_PID": str(os.getpid()),
    })
    t0 = time.monotonic()
    proc = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "--scenario-name", "default"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900)
    took = time.monotonic() - t0
    record("molecule test (default)", took)
    out = ANSI.sub("", proc.stdout)
    tail = out[-12000:]
    assert proc.returncode == 0, "molecule test failed (rc=%d) after %.0fs:\n%s" % (proc.returncode, took, tail)
    for step in STEPS:
        assert re.search(r"default\s+\S+\s+%s: Executed: Successful" % step, out), \
            "molecule step %r did not report success:\n%s" % (step, tail)
    assert "Idempotence test failed" not in out, "idempotence step did not pass:\n" + tail
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 16 and not re.search(r"\d+ failed", out), \
        "testinfra verify did not pass every check:\n" + tail
    # destroy really took the fleet down
    status = Fleet(name="molec", owner_pid=None).script("status", check=False)
    assert status.returncode == 3, "fleet molec is still up after molecule destroy:\n%s" % status.stdout
