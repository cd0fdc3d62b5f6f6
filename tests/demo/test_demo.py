"""`make demo` stays true: the demo upgrades a real (2-host) test fleet end to end, a second run
changes nothing, and every host ends on 0.7.0 / schema 54 with its memories intact."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test fleet needs root (namespaces)")


def test_demo_upgrades_fleet_and_second_run_changes_nothing():
    proc = subprocess.run([sys.executable, os.path.join(HERE, "demo.py"), "--hosts", "2", "--rows", "300",
                           "--name", "demotest"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "upgrade run 2:" in proc.stdout and "'h1': 0, 'h2': 0" in proc.stdout
    with open(os.path.join(ROOT, "build", "demotest", "controller", "report", "latest", "report.json")) as f:
        rep = json.load(f)
    assert [r["host"] for r in rep["hosts"]] == ["h1", "h2"]
    for r in rep["hosts"]:
        # the latest report is the second run's: every host was already upgraded
        assert r["status"] == "up-to-date"
        assert r["version_after"] == "0.7.0" and r["schema_after"] == 54
        assert r["digest_equal"] is True and r["chain_holds"] is True
        assert r["memories_after"] == 300
        assert r["doctor_overall"] == "info"
    # run 1's table printed what happened: 0.6.4 -> 0.7.0, schema 20 -> 54, every host upgraded
    assert "0.6.4 -> 0.7.0" in proc.stdout and "20 -> 54" in proc.stdout
    assert "2 host(s): upgraded 2" in proc.stdout
    assert "fleet down" in proc.stdout
