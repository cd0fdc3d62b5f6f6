#!/usr/bin/env python3
"""Benchmark (not a test): the CPU an aimem.fleet.upgrade costs per host, on this machine.

The test suite and a big fleet are bound by CPU, not by waiting: this prints what one run costs.
A fresh test fleet of --hosts hosts (tests/roles/rolelib.SeededFleet, seeded as ai-memory 0.6.4)
is upgraded with aimem_serial=100% (first run), then the playbook runs again on the upgraded
fleet (re-run, must be changed=0). For each run it prints the wall time, the CPU the whole
machine spent (/proc/stat: controller, ssh, the hosts' sshd and module Pythons, the daemons),
the part spent by the controller's processes (ansible-playbook, its workers and ssh clients), and
the number of task results.

    .venv/bin/python tests/bench/bench_cpu.py [--hosts 1] [--shared-ansiballz-cache]

--shared-ansiballz-cache points ansible-core's payload cache at one directory for both runs, as
the test suite does (tests/integration/callback_plugins/aimem_ansiballz_cache.py).
Run it on an idle machine (the machine-wide figure counts everything). Needs root (the fleet).
"""
from __future__ import print_function

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build", "bench-cpu")
os.makedirs(BUILD, exist_ok=True)
os.environ.setdefault("AIMEM_BUILD_TMP", BUILD)   # stand-in build + generated DBs: never /tmp
sys.path.insert(0, os.path.join(ROOT, "tests", "roles"))

import rolelib  # noqa: E402

PLAYBOOK = os.path.join(ROOT, "playbooks", "upgrade.yml")


def machine_busy():
    """CPU seconds the whole machine has been busy since boot (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / float(os.sysconf("SC_CLK_TCK"))


def children_cpu():
    t = os.times()
    return t.children_user + t.children_system


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1)
    ap.add_argument("--shared-ansiballz-cache", action="store_true")
    args = ap.parse_args()
    cache = os.path.join(BUILD, "ansiballz-cache")
    if args.shared_ansiballz_cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ["AIMEM_ANSIBALLZ_CACHE"] = cache
        os.environ["ANSIBLE_CALLBACK_PLUGINS"] = rolelib.CALLBACK_DIR
    else:
        os.environ.pop("AIMEM_ANSIBALLZ_CACHE", None)
    sf = rolelib.SeededFleet("bcpu", n=args.hosts)
    failed = False
    try:
        print("aimem.fleet.upgrade, %d host(s), aimem_serial=100%%, %d CPU(s), shared AnsiballZ cache: %s"
              % (args.hosts, os.cpu_count() or 0, "yes" if args.shared_ansiballz_cache else "no"))
        print("%-8s %8s %14s %16s %8s %8s" % ("run", "wall s", "machine CPU s", "controller CPU s",
                                                "results", "changed"))
        for label in ("first", "re-run"):
            b0, c0, t0 = machine_busy(), children_cpu(), time.time()
            r = sf.play(PLAYBOOK, extra={"aimem_serial": "100%"})
            wall, busy, ctl = time.time() - t0, machine_busy() - b0, children_cpu() - c0
            changed = sum(r.changed().values()) if r.rc == 0 else "-"
            print("%-8s %8.1f %14.1f %16.1f %8d %8s" % (label, wall, busy, ctl, len(r.results), changed))
            print("%-8s %8.1f %14.1f %16.1f   (per host)" % ("", wall / args.hosts, busy / args.hosts, ctl / args.hosts))
            if r.rc != 0:
                print(r.output[-3000:], file=sys.stderr)
                failed = True
                break
            if label == "re-run" and changed != 0:
                print("the re-run changed something: %s" % json.dumps(r.changed()), file=sys.stderr)
                failed = True
    finally:
        sf.down()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
