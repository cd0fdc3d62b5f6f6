#!/usr/bin/env python3
"""Benchmark (not a test): aimem.fleet.upgrade against the guide's host-by-host shell loop.

Each run gets a FRESH test fleet of --hosts real SSH hosts (tests/roles/rolelib.SeededFleet: network
namespaces, sshd, every host seeded as a running ai-memory 0.6.4 install with a generated v20 DB of
--rows memories padded to --size-mb MiB; the same per-host DBs for every fleet). Seeding is timed
and printed separately; it is not part of any figure. Then it times, on the wall clock:

* baseline      - tests/bench/tier3_baseline.sh: the MIGRATION_QUICKSTART Tier 3 snippet plus the
                  Tier 2 steps it leaves out (stop, DB backup, staged env, start, verify, identity),
                  corrected where facts §8.2 says the guide cannot work, piped host by host over
                  `ssh -F <fleet ssh_config> HOST 'bash -s'`
* ansible       - `ansible-playbook playbooks/upgrade.yml` (aimem.fleet.upgrade) with the
                  playbook's default batches (aimem_serial unset: a canary, then 25 % at a time)
* ansible rerun - the same playbook again on the upgraded fleet (idempotence: must be changed=0)
* ansible 100%  - a fresh fleet upgraded with -e aimem_serial=100% (all hosts in one batch)

and prints wall times, per-host averages, the ratios, and the end state of every host (read without
SSH via the fleet's nsenter exec): binary version, health endpoint version, schema (MAX(version) of
schema_version), memories and archived_memories counts equal to the counts before the upgrade.

    .venv/bin/python tests/bench/bench_upgrade.py [--hosts 10] [--size-mb 64] [--rows N]
        [--baseline-only] [--no-all-at-once] [--keep]

Needs root (the fleet). Builds land in <repo>/build/bench-upgrade (removed at the end unless --keep).
Exit status 1 if any path failed or any host did not end on 0.7.0 / schema 54 / equal counts.
"""
from __future__ import print_function

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build", "bench-upgrade")
os.makedirs(BUILD, exist_ok=True)
os.environ.setdefault("AIMEM_BUILD_TMP", BUILD)   # stand-in build + generated DBs: never /tmp
sys.path.insert(0, os.path.join(ROOT, "tests", "roles"))

import rolelib  # noqa: E402

BASELINE = os.path.join(HERE, "tier3_baseline.sh")
PLAYBOOK = os.path.join(ROOT, "playbooks", "upgrade.yml")
TARGET_VERSION = "0.7.0"
TARGET_SCHEMA = 54
DB = "/var/lib/ai-memory/ai-memory.db"
CONFIG = "/var/lib/ai-memory/.config/ai-memory/config.toml"

# One nsenter exec per host: everything the end-state check needs, as KEY=VALUE lines.
PROBE = r"""
v=$(env -i /usr/local/bin/ai-memory --version 2>/dev/null | awk '{print $2}')
echo "binary=$v"
h=$(curl -fsS -m 5 http://127.0.0.1:9077/api/v1/health 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("version",""))' 2>/dev/null)
echo "health=$h"
echo "schema=$(sqlite3 -readonly %(db)s 'SELECT MAX(version) FROM schema_version')"
echo "memories=$(sqlite3 -readonly %(db)s 'SELECT COUNT(*) FROM memories')"
echo "archived=$(sqlite3 -readonly %(db)s 'SELECT COUNT(*) FROM archived_memories')"
echo "config_v2=$(grep -c '^schema_version *= *2' %(config)s)"
""" % {"db": DB, "config": CONFIG}


def probe(sf):
    """{host: {binary, health, schema, memories, archived, config_v2}} read on every host."""
    out = {}
    for h in sf.hosts:
        r = sf.exec(h, PROBE, check=False)
        out[h] = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return out


def check_end_state(before, after):
    """List of problems (empty = every host on target version/schema with the counts of before)."""
    bad = []
    for h in sorted(before, key=lambda x: int(x[1:])):
        a, b = after.get(h, {}), before[h]
        for key, want in (("binary", TARGET_VERSION), ("health", TARGET_VERSION),
                          ("schema", str(TARGET_SCHEMA)), ("memories", b.get("memories")),
                          ("archived", b.get("archived")), ("config_v2", "1")):
            if a.get(key) != want:
                bad.append("%s: %s=%r, want %r" % (h, key, a.get(key), want))
    return bad


def state_line(before, after):
    mem_b = sum(int(v["memories"]) for v in before.values())
    mem_a = sum(int(v.get("memories") or 0) for v in after.values())
    arc_b = sum(int(v["archived"]) for v in before.values())
    arc_a = sum(int(v.get("archived") or 0) for v in after.values())
    versions = sorted(set(v.get("binary") or "?" for v in after.values()))
    schemas = sorted(set(v.get("schema") or "?" for v in after.values()))
    return ("binary %s, schema %s, memories %d -> %d, archived %d -> %d"
            % ("/".join(versions), "/".join(schemas), mem_b, mem_a, arc_b, arc_a))


class Run(object):
    def __init__(self, key, label):
        self.key = key
        self.label = label
        self.wall = None
        self.ok = False
        self.problems = []
        self.note = ""
        self.per_host = {}
        self.load = None

    def timed(self, fn):
        """Run fn(), set self.wall and the 1-min load average before/after; return fn's result."""
        l0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.wall = time.perf_counter() - t0
            self.load = (l0, os.getloadavg()[0])


def fresh_fleet(name, args, log):
    t0 = time.perf_counter()
    sf = rolelib.SeededFleet(name, args.hosts, rows=args.rows, size_mb=args.size_mb, seed=False)
    t_up = time.perf_counter() - t0
    t0 = time.perf_counter()
    sf.seed()
    t_seed = time.perf_counter() - t0
    before = probe(sf)
    for h, v in before.items():
        if v.get("binary") != "0.6.4" or v.get("schema") != "20" or v.get("health") != "0.6.4":
            raise SystemExit("fleet %s: %s is not a running 0.6.4/v20 install after seeding: %r"
                             % (name, h, v))
    log("  fleet %-8s %d hosts up in %.1f s, seeded (0.6.4, v20, %s MiB DB, %s memories/host) in %.1f s"
        " [not counted]" % (name, args.hosts, t_up, args.size_mb, before["h1"]["memories"], t_seed))
    return sf, before


def run_baseline(args, pins, log):
    run = Run("baseline", "baseline (tier3 shell, host by host)")
    sf, before = fresh_fleet("bupbase", args, log)
    try:
        triple = "%s-unknown-linux-gnu" % platform.machine()
        cmd = [BASELINE, "-F", str(sf.fleet.ssh_config), "-u", sf.fleet.http_url,
               "-s", pins[TARGET_VERSION][triple]] + list(sf.hosts)
        p = run.timed(lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=1800))
        for m in re.finditer(r"^(h\d+) ([0-9.]+)s$", p.stdout, re.M):
            run.per_host[m.group(1)] = float(m.group(2))
        if p.returncode != 0:
            run.note = "tier3_baseline.sh exited %d after %d host(s):\n%s" % (
                p.returncode, len(run.per_host), (p.stdout + p.stderr)[-3000:])
        after = probe(sf)
        run.problems = check_end_state(before, after)
        run.state = state_line(before, after)
        run.ok = p.returncode == 0 and not run.problems
    finally:
        sf.down()
        if not args.keep:
            shutil.rmtree(sf.tmp, ignore_errors=True)
    return run


def run_ansible(name, key, label, extra, args, log, rerun):
    runs = [Run(key, label)]
    sf, before = fresh_fleet(name, args, log)
    try:
        # The test mirror is plain http inside the fleet network; the sha256 pin guards the content.
        extra = dict({"aimem_release_allow_insecure_url": True}, **extra)
        r = runs[0].timed(lambda: sf.play(PLAYBOOK, extra=extra, timeout=1800))
        runs[0].recap = r.recap
        if r.rc != 0:
            runs[0].note = "ansible-playbook exited %d:\n%s" % (r.rc, r.output[-4000:])
        after = probe(sf)
        runs[0].problems = check_end_state(before, after)
        runs[0].state = state_line(before, after)
        runs[0].ok = r.rc == 0 and not runs[0].problems
        if rerun and r.rc == 0:
            again = Run(key + " rerun", "ansible rerun (idempotence)")
            r2 = again.timed(lambda: sf.play(PLAYBOOK, extra=extra, timeout=1800))
            again.recap = r2.recap
            changed = dict((h, v["changed"]) for h, v in r2.recap.items())
            again.changed = changed
            if r2.rc != 0:
                again.note = "ansible-playbook (rerun) exited %d:\n%s" % (r2.rc, r2.output[-4000:])
            elif any(changed.values()) or set(changed) != set(sf.hosts):
                again.note = "rerun is not idempotent: changed per host %s" % json.dumps(changed, sort_keys=True)
            after2 = probe(sf)
            again.problems = check_end_state(before, after2)
            again.state = state_line(before, after2)
            again.ok = r2.rc == 0 and not again.note and not again.problems
            runs.append(again)
    finally:
        sf.down()
        if not args.keep:
            shutil.rmtree(sf.tmp, ignore_errors=True)
    return runs


def recap_totals(recap):
    tot = {}
    for v in (recap or {}).values():
        for k, n in v.items():
            tot[k] = tot.get(k, 0) + n
    return "ok=%d changed=%d failed=%d unreachable=%d skipped=%d" % tuple(
        tot.get(k, 0) for k in ("ok", "changed", "failed", "unreachable", "skipped"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=64, help="DB size per host in MiB (gen_db padding)")
    ap.add_argument("--rows", type=int, default=None,
                    help="memories per host (default: size-mb * 256, ~4 KiB each, as bench_snapshot)")
    ap.add_argument("--baseline-only", action="store_true", help="time only the shell baseline")
    ap.add_argument("--no-all-at-once", action="store_true", help="skip the aimem_serial=100%% run")
    ap.add_argument("--keep", action="store_true", help="keep the stand-in build and generated DBs")
    args = ap.parse_args()
    if args.rows is None:
        args.rows = max(200, args.size_mb * 256)
    if os.geteuid() != 0:
        raise SystemExit("bench_upgrade.py needs root (it starts a test fleet in network namespaces)")
    if not args.baseline_only and not os.path.exists(PLAYBOOK):
        raise SystemExit("%s does not exist yet; run with --baseline-only to time the shell baseline alone"
                         % PLAYBOOK)

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    t0 = time.perf_counter()
    out, pins = rolelib.standin_release()
    log("stand-in build %s in %.1f s; %d hosts x %d MiB DB, %d memories/host; %d CPU(s), python %s"
        % (out, time.perf_counter() - t0, args.hosts, args.size_mb, args.rows, os.cpu_count(),
           platform.python_version()))
    runs = []
    try:
        log("[1] baseline: tests/bench/tier3_baseline.sh (ssh host by host)")
        runs.append(run_baseline(args, pins, log))
        if not args.baseline_only:
            log("[2] ansible-playbook playbooks/upgrade.yml (default aimem_serial) + rerun")
            runs += run_ansible("bupans", "ansible", "ansible upgrade.yml (default serial)", {},
                                args, log, rerun=True)
            if not args.no_all_at_once:
                log("[3] ansible-playbook playbooks/upgrade.yml -e aimem_serial=100%")
                runs += run_ansible("bupall", "ansible100", "ansible upgrade.yml (aimem_serial=100%)",
                                    {"aimem_serial": "100%"}, args, log, rerun=False)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)

    n = args.hosts
    print()
    print("%-40s %9s %12s  %-6s  %s" % ("path", "wall", "per host", "result", "load avg (1 min) start/end"))
    for r in runs:
        wall = "%8.1fs" % r.wall if r.wall is not None else "        -"
        ph = "%10.2fs" % (r.wall / n) if r.wall is not None else "           -"
        load = "%.1f / %.1f" % r.load if r.load else "-"
        print("%-40s %9s %12s  %-6s  %s" % (r.label, wall, ph, "ok" if r.ok else "FAILED", load))
    print()
    by = dict((r.key, r) for r in runs)
    base = runs[0]
    if base.per_host:
        vals = sorted(base.per_host.values())
        print("baseline per-host ssh time: min %.2f s, median %.2f s, max %.2f s (%d hosts)"
              % (vals[0], statistics.median(vals), vals[-1], len(vals)))
    for r in runs[1:]:
        if getattr(r, "recap", None):
            print("%s recap: %s" % (r.label, recap_totals(r.recap)))
    first = by.get("ansible")
    rerun = by.get("ansible rerun")
    allat = by.get("ansible100")
    if rerun is not None and hasattr(rerun, "changed"):
        failed = sum(v["failed"] + v["unreachable"] for v in rerun.recap.values())
        print("idempotent rerun: changed=%d failed=%d on %d host(s) -> %s" % (
            sum(rerun.changed.values()), failed, len(rerun.changed),
            "changed=0, idempotent" if rerun.ok else
            "FAILED (see below)" if failed or rerun.note.startswith("ansible-playbook") else "NOT idempotent"))
    print()
    print("ratios:")
    for other in (first, allat):
        if other is not None and other.wall and base.wall:
            print("  baseline / %-36s %6.2fx" % (other.label, base.wall / other.wall))
    if first is not None and rerun is not None and first.wall and rerun.wall:
        print("  rerun / first run %-30s %6.2fx" % ("", rerun.wall / first.wall))
    print()
    print("end state (every host: binary + health 0.7.0, schema 54, memories/archived as before, config v2):")
    all_ok = True
    for r in runs:
        state = getattr(r, "state", "not reached")
        print("  %-40s %s  -> %s" % (r.label, state, "verified" if not r.problems and hasattr(r, "state")
                                     else "MISMATCH"))
        for p in r.problems:
            print("      " + p)
        if r.note:
            print("      " + r.note.replace("\n", "\n      "))
        all_ok = all_ok and r.ok
    print("(total bench time %.0f s; seeding and fleet start-up are not in any figure above)"
          % (time.perf_counter() - t_start))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
