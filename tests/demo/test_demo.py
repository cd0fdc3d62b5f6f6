"""`make demo` stays true: the demo upgrades a real (2-host) test fleet end to end, a second run
changes nothing, and every host ends on 0.7.0 / schema 54 with its memories intact."""
import glob
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
    reports = sorted(glob.glob(os.path.join(ROOT, "build", "demotest", "report", "*.json")))
    assert [os.path.basename(p) for p in reports] == ["h1.json", "h2.json"]
    for path in reports:
        with open(path) as f:
            r = json.load(f)
        # the report on disk is the second run's: the host was already upgraded
        assert r["version_after"] == "0.7.0" and r["schema_after"] == 54
        assert r["digest_equal"] is True and r["chain_holds"] is True
        assert int(r["memories_after"]) == 300
        assert r["doctor_overall"] == "info"
    # run 1's table printed what happened: 0.6.4 / v20 before
    assert "0.6.4" in proc.stdout and " 20 " in proc.stdout
    assert "fleet down" in proc.stdout
