#!/usr/bin/env python3
"""Benchmark (not a test): snapshot throughput of aimem_schema against `cp` of the same file.

Builds a realistic v0.6.4 (v20) ai-memory DB with tests/standin/gen_db.py of --size-mib (default 1024 MiB) in --dir (default
<repo>/build/bench-snapshot, never /tmp), then times, each on a warm page cache and each with the
copy fsynced (our snapshot fsyncs, so cp is followed by an fsync too):

* cp            - `cp` of the main DB file (what a naive playbook does; misses -wal content)
* backup-api    - sqlite3 Connection.backup() into a fresh file (the copy step our module uses)
* vacuum-into   - VACUUM INTO (what upstream's `ai-memory backup` uses)
* take_snapshot - the module's whole state=snapshot: read-only open, digests, backup, full
                  integrity_check and digests of the copy, sha256, manifest

and prints MiB/s for each and its ratio to cp. Everything it creates is removed at the end
unless --keep is given.

    .venv/bin/python tests/bench/bench_snapshot.py [--size-mib 1024] [--dir DIR] [--repeat 5]
"""
from __future__ import print_function

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".collections")
_link = os.path.join(COLLECTIONS, "ansible_collections", "aimem", "fleet")
if not os.path.lexists(_link):
    os.makedirs(os.path.dirname(_link), exist_ok=True)
    os.symlink(os.path.join("..", "..", ".."), _link)
sys.path.insert(0, COLLECTIONS)

from ansible_collections.aimem.fleet.plugins.module_utils import sqlite_schema as ss  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "standin"))
import gen_db  # noqa: E402

def build(path, size_mib):
    """A realistic v0.6.4 DB from the project's generator (tests/standin/gen_db.py: every v20 table,
    FTS5 and its triggers, links, archived rows), about 4 KiB per memory, padded to size_mib."""
    rows = max(1000, size_mib * 256)
    summary = gen_db.generate(path, rows, size_mb=size_mib, seed=1)
    return summary["memories"]


def warm(path):
    with open(path, "rb") as f:
        while f.read(16 * 1024 * 1024):
            pass


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_cp(src, dst):
    subprocess.check_call(["cp", src, dst])
    fsync_file(dst)


def run_backup(src, dst):
    with ss.Reader(src) as r:
        ss._backup(r.conn, dst)


def run_vacuum(src, dst):
    with ss.Reader(src) as r:
        r.conn.execute("VACUUM INTO ?", (dst,))
    fsync_file(dst)


def timed_interleaved(methods, src, out_dir, repeat):
    """Median wall time per method over ``repeat`` rounds; each round runs every method once, in
    turn, so background load on the machine hits all of them alike. The page cache is warmed
    before each run and the output removed after it."""
    times = dict((name, []) for name, _fn in methods)
    for n in range(repeat):
        for name, fn in methods:
            dst = os.path.join(out_dir, "%s-%d.out" % (name, n))
            warm(src)
            t0 = time.perf_counter()
            fn(src, dst)
            times[name].append(time.perf_counter() - t0)
            for p in (dst, dst + "-journal", dst + "-wal", dst + "-shm"):
                if os.path.exists(p):
                    os.unlink(p)
    return [(name, statistics.median(times[name])) for name, _fn in methods]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", default=os.path.join(ROOT, "build", "bench-snapshot"))
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the median per method is reported")
    ap.add_argument("--no-full", action="store_true", help="skip the whole take_snapshot run")
    ap.add_argument("--keep", action="store_true", help="keep the generated DB and outputs")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    work = os.path.join(args.dir, "run-%d" % os.getpid())
    os.makedirs(work)
    db = os.path.join(work, "ai-memory.db")
    try:
        t0 = time.perf_counter()
        rows = build(db, args.size_mib)
        size = os.path.getsize(db)
        mib = size / 1048576.0
        print("built %s: %.0f MiB, %d memories in %.1fs (sqlite %s, python %s)" % (
            db, mib, rows, time.perf_counter() - t0, sqlite3.sqlite_version, sys.version.split()[0]))
        results = timed_interleaved([("cp", run_cp), ("backup-api", run_backup), ("vacuum-into", run_vacuum)],
                                    db, work, args.repeat)
        if not args.no_full:
            warm(db)
            t0 = time.perf_counter()
            res = ss.take_snapshot(db, snapshot_dir=work)
            results.append(("take_snapshot", time.perf_counter() - t0))
            assert res["changed"] and res["counts"]["memories"] == rows
            t0 = time.perf_counter()
            again = ss.take_snapshot(db, snapshot_dir=work)
            results.append(("take_snapshot (2nd run, unchanged)", time.perf_counter() - t0))
            assert again["changed"] is False
        cp_time = results[0][1]
        print("%-36s %9s %10s %14s" % ("method", "seconds", "MiB/s", "ratio vs cp"))
        for name, dt in results:
            print("%-36s %9.2f %10.1f %13.2fx" % (name, dt, mib / dt, cp_time / dt))
        print("(ratio = cp time / method time; >1 means faster than cp)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
