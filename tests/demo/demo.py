#!/usr/bin/env python3
"""`make demo`: a local test fleet on ai-memory 0.6.4, upgraded to 0.7.0 by the collection.

1. builds the stand-in ai-memory releases (0.6.4 and 0.7.0 tarballs + sha256 pins),
2. brings up N real SSH hosts in Linux namespaces (tests/fleet/fleet.sh), serving the releases
   from the controller's address inside the test network,
3. seeds every host as a field v0.6.4 install (binary, v1 config, generated v20 DB with data,
   running daemon, local fake Ollama),
4. runs `ansible-playbook aimem.fleet.upgrade` (preflight, drain + verified snapshot, pinned install,
   config v1 -> v2, permissions, staged posture, start + verify, identity enrolment; a canary host
   first, then the rest), then runs it again to show that the second run changes nothing,
5. prints the per-host report and tears the fleet down (``--keep`` leaves it up; ``--down`` removes it).
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))

from fleetlib import Fleet  # noqa: E402



def _load_builder():
    spec = importlib.util.spec_from_file_location("standin_build", os.path.join(ROOT, "tests", "standin", "build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _playbook(fleet, playbook, extra, title):
    print("\n=== %s" % title, flush=True)
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(fleet.inventory)] + \
        ([playbook] if playbook else []) + extra
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        sys.stdout.write(line)
    rc = proc.wait()
    took = time.monotonic() - t0
    if rc != 0:
        raise SystemExit("demo: %s failed (ansible-playbook rc=%d); run `make demo KEEP=1` to keep the "
                         "fleet up for inspection (tests/fleet/fleet.sh exec HOST CMD, make demo-down)" % (title, rc))
    recap = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", "".join(out), re.M)}
    return took, recap


def fleet_vars(fleet, pins, out):
    """Inventory settings of the test fleet (what a Tier-2 admin puts in group_vars)."""
    return {
        "aimem_hosts": "fleet",
        "aimem_service_user": "aimem",                  # upstream's user is ai-memory
        "aimem_service_home": "/var/lib/ai-memory",
        "aimem_service_manager": "process",             # the test hosts have no systemd
        "aimem_service_init_script": "/etc/init.d/ai-memory",
        "aimem_service_become_method": "ansible.builtin.su",
        "aimem_service_become_flags": "-s /bin/sh",     # the service user's shell is nologin
        "aimem_release_base_url": fleet.http_url,       # the fleet's release mirror ...
        "aimem_release_allow_insecure_url": True,       # ... plain http inside the test network
        "aimem_release_sha256": pins["0.7.0"],          # pins computed by us (upstream has none)
        "aimem_controller_dir": os.path.join(out, "controller"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--rows", type=int, default=2000, help="memories per host")
    ap.add_argument("--keep", action="store_true", help="leave the fleet up afterwards")
    ap.add_argument("--down", action="store_true", help="only tear a kept demo fleet down")
    ap.add_argument("--name", default="demo", help="fleet name (build/<name> holds builds and reports)")
    args = ap.parse_args()
    fleet_name = args.name
    OUT = os.path.join(ROOT, "build", fleet_name)

    if args.down:
        Fleet(name=fleet_name, owner_pid=None).down()
        print("demo fleet down")
        return 0

    t_start = time.monotonic()
    print("=== building stand-in ai-memory releases into %s" % OUT, flush=True)
    built = _load_builder().build_all(OUT)
    for old in glob.glob(os.path.join(OUT, "seed-dbs", "*")):
        os.unlink(old)
    print("pins (sha256, computed by us; upstream publishes none):")
    for build in ("0.6.4", "0.7.0"):
        for triple, sha in sorted(built["pins"][build].items()):
            print("  %-6s %-28s %s" % (build, triple, sha))

    fleet = Fleet(name=fleet_name, n=args.hosts, shared=True, http_dir=os.path.join(OUT, "mirror"),
                  owner_pid=None if args.keep else True)
    print("\n=== bringing up %d test hosts (own network namespace each)" % args.hosts, flush=True)
    t0 = time.monotonic()
    fleet.up()
    print("fleet up in %.1f s: %s (inventory %s)" % (time.monotonic() - t0, ", ".join(fleet.hosts), fleet.inventory))
    try:
        _playbook(fleet, os.path.join(ROOT, "tests", "playbooks", "seed_v064.yml"),
                  ["-e", "seed_standin_dir=%s" % OUT, "-e", "seed_rows=%d" % args.rows],
                  "seeding every host as a running ai-memory 0.6.4 install")
        extra = ["-e", json.dumps(fleet_vars(fleet, built["pins"], OUT)), "aimem.fleet.upgrade"]
        t1, recap1 = _playbook(fleet, None, extra, "upgrade run 1: 0.6.4 -> 0.7.0 (ansible-playbook aimem.fleet.upgrade)")
        run1 = os.path.realpath(os.path.join(OUT, "controller", "report", "latest"))
        t2, recap2 = _playbook(fleet, None, extra, "upgrade run 2: must change nothing")

        print("\n=== report of run 1 (%s/report.json)" % run1)
        with open(os.path.join(run1, "report.txt")) as f:
            sys.stdout.write(f.read())
        print("\nupgrade run 1: %.1f s, changed per host %s" % (t1, recap1))
        print("upgrade run 2: %.1f s, changed per host %s" % (t2, recap2))
        if any(recap2.values()):
            raise SystemExit("demo: the second run changed something: %s" % recap2)
    finally:
        if not args.keep:
            fleet.down()
            print("fleet down")
    print("demo finished in %.1f s%s" % (time.monotonic() - t_start,
                                         " (fleet kept up: make demo-down)" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
