"""plugins/module_utils/runlock.py on real files: acquire/refresh/release, holders, corrupt files,
stale and exact-holder breaks, races between real processes, modes, temp files, errors."""
import hashlib
import json
import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import runlock

T0 = 1780353638.0  # 2026-06-01T22:40:38Z


def owner(run_id, **kw):
    o = runlock.make_owner(run_id=run_id, controller="ctl-a", pid=4242, pid_start=777, user="ops",
                           playbook="aimem.fleet.upgrade", play="Upgrade", boot_id="boot-1")
    o.update(kw)
    return o


def content(path):
    with open(str(path)) as f:
        return json.load(f)


def listing(d):
    return sorted(os.listdir(str(d)))


def test_iso_roundtrip_and_format():
    assert runlock.iso(T0) == "2026-06-01T22:40:38Z"
    assert runlock.parse_iso("2026-06-01T22:40:38Z") == T0
    assert runlock.parse_iso("2026-06-01T22:40:38.5Z") == T0
    assert runlock.parse_iso("2026-06-01 22:40:38") is None
    assert runlock.parse_iso(None) is None


def test_acquire_creates_0600_lock_with_owner_and_no_temp(tmp_path):
    lock = tmp_path / "run.lock"
    old = os.umask(0)
    try:
        res = runlock.acquire(str(lock), owner("r1"), now=T0)
    finally:
        os.umask(old)
    assert res["acquired"] is True and res["changed"] is True and res["broken"] is None
    data = content(lock)
    assert data == {"version": 1, "run_id": "r1", "controller": "ctl-a", "pid": 4242, "pid_start": 777,
                    "boot_id": "boot-1", "pid_ns": None, "user": "ops", "playbook": "aimem.fleet.upgrade",
                    "play": "Upgrade",
                    "acquired_at": "2026-06-01T22:40:38Z", "heartbeat": "2026-06-01T22:40:38Z"}
    assert res["held_by"]["run_id"] == "r1"
    assert stat.S_IMODE(os.stat(str(lock)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(lock) + ".guard").st_mode) == 0o600
    assert listing(tmp_path) == ["run.lock", "run.lock.guard"]


def test_reacquire_same_run_refreshes_heartbeat_only(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("r1"), now=T0)
    res = runlock.acquire(lock, owner("r1", pid=5151, pid_start=888), now=T0 + 90)
    assert res["acquired"] is True and res["changed"] is False and res["refreshed"] is True
    data = content(lock)
    assert data["acquired_at"] == "2026-06-01T22:40:38Z"
    assert data["heartbeat"] == "2026-06-01T22:42:08Z"
    assert (data["pid"], data["pid_start"]) == (5151, 888)  # a resumed run records its new process
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
    assert listing(tmp_path) == ["run.lock", "run.lock.guard"]


def test_held_by_another_run_is_not_touched(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("r1"), now=T0)
    before = open(lock, "rb").read()
    res = runlock.acquire(lock, owner("r2", controller="ctl-b"), now=T0 + 5)
    assert res["acquired"] is False and res["changed"] is False
    assert res["held_by"]["run_id"] == "r1" and res["held_by"]["controller"] == "ctl-a"
    assert open(lock, "rb").read() == before


def test_release_only_our_own_lock(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("r1"), now=T0)
    other = runlock.release(lock, "r2")
    assert other["released"] is False and other["changed"] is False and other["held_by"]["run_id"] == "r1"
    assert content(lock)["run_id"] == "r1"
    mine = runlock.release(lock, "r1")
    assert mine["released"] is True and mine["changed"] is True and mine["held_by"] is None
    assert not os.path.exists(lock)
    again = runlock.release(lock, "r1")
    assert again["changed"] is False and again["released"] is False
    # after a release anybody can take it
    assert runlock.acquire(lock, owner("r2"), now=T0 + 10)["acquired"] is True


def test_release_with_break_holder_moves_that_lock_aside(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("r1"), now=T0)
    assert runlock.release(lock, "r2", break_holder="r9")["changed"] is False
    res = runlock.release(lock, "r2", break_holder="r1", now=T0 + 1)
    assert res["changed"] is True and res["broken"]["run_id"] == "r1"
    assert res["broken_path"] == lock + ".broken.20260601-224039"
    assert not os.path.exists(lock) and content(res["broken_path"])["run_id"] == "r1"


@pytest.mark.parametrize("raw", [b"", b"   \n", b"{not json", b"[1, 2]", b'{"pid": 1}', b"\xff\xfe"])
def test_corrupt_lock_is_held_never_overwritten(tmp_path, raw):
    lock = tmp_path / "run.lock"
    lock.write_bytes(raw)
    os.utime(str(lock), (T0, T0))
    holder = runlock.read_lock(str(lock))
    assert holder["corrupt"] is True
    assert holder["run_id"] == "corrupt:" + hashlib.sha256(raw).hexdigest()[:12]
    assert holder["heartbeat"] == "2026-06-01T22:40:38Z"
    res = runlock.acquire(str(lock), owner("r1"), now=T0 + 3600)
    assert res["acquired"] is False and res["held_by"]["corrupt"] is True
    assert lock.read_bytes() == raw
    assert "unreadable lock file" in runlock.describe(res["held_by"])
    # its own id (or its age) breaks it
    res = runlock.acquire(str(lock), owner("r1"), break_holder=holder["run_id"], now=T0 + 3600)
    assert res["acquired"] is True and res["broken"]["corrupt"] is True
    assert content(lock)["run_id"] == "r1"
    with open(res["broken_path"], "rb") as f:
        assert f.read() == raw


def test_corrupt_lock_breaks_when_its_mtime_is_stale(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_bytes(b"")
    os.utime(str(lock), (T0, T0))
    assert runlock.acquire(str(lock), owner("r1"), stale_after=600, now=T0 + 599)["acquired"] is False
    res = runlock.acquire(str(lock), owner("r1"), stale_after=600, now=T0 + 601)
    assert res["acquired"] is True and res["broken_reason"] == "stale"


def test_stale_holder_is_broken_and_aside_kept(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("r1"), now=T0)
    # stale_after=0 never breaks, however old
    assert runlock.acquire(lock, owner("r2"), stale_after=0, now=T0 + 10 ** 7)["acquired"] is False
    assert runlock.acquire(lock, owner("r2"), stale_after=300, now=T0 + 300)["acquired"] is False
    res = runlock.acquire(lock, owner("r2"), stale_after=300, now=T0 + 301)
    assert res["acquired"] is True and res["changed"] is True
    assert res["broken"]["run_id"] == "r1" and res["broken_reason"] == "stale"
    assert res["broken_path"] == lock + ".broken.20260601-224539"
    assert content(lock)["run_id"] == "r2"
    assert content(res["broken_path"])["run_id"] == "r1"
    assert stat.S_IMODE(os.stat(res["broken_path"]).st_mode) == 0o600
    assert listing(tmp_path) == ["run.lock", "run.lock.broken.20260601-224539", "run.lock.guard"]


def test_only_the_newest_aside_file_is_kept(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("r1"), now=T0)
    first = runlock.acquire(lock, owner("r2"), break_holder="r1", now=T0 + 1)["broken_path"]
    second = runlock.acquire(lock, owner("r3"), break_holder="r2", now=T0 + 1)["broken_path"]
    assert second == first + ".1"  # same second: never overwrites
    assert content(second)["run_id"] == "r2"
    assert listing(tmp_path) == ["run.lock", os.path.basename(second), "run.lock.guard"]


def test_break_holder_breaks_only_that_exact_holder(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("run-1"), now=T0)
    for wrong in ("run-", "run-10", "RUN-1", "run-2"):
        res = runlock.acquire(lock, owner("run-3"), break_holder=wrong, now=T0 + 1)
        assert res["acquired"] is False and res["broken"] is None
        assert content(lock)["run_id"] == "run-1"
    res = runlock.acquire(lock, owner("run-3"), break_holder="run-1", now=T0 + 1)
    assert res["acquired"] is True and res["broken"]["run_id"] == "run-1"
    assert res["broken_reason"] == "break_holder"
    assert content(lock)["run_id"] == "run-3"


def test_check_mode_writes_nothing(tmp_path):
    lock = str(tmp_path / "run.lock")
    res = runlock.acquire(lock, owner("r1"), check_mode=True, now=T0)
    assert res["acquired"] is True and res["changed"] is True
    assert listing(tmp_path) == []  # not even the guard file
    runlock.acquire(lock, owner("r1"), now=T0)
    before = open(lock, "rb").read()
    snapshot = listing(tmp_path)
    assert runlock.acquire(lock, owner("r1"), check_mode=True, now=T0 + 50)["changed"] is False
    held = runlock.acquire(lock, owner("r2"), check_mode=True, now=T0 + 50)
    assert held["acquired"] is False and held["held_by"]["run_id"] == "r1"
    would = runlock.acquire(lock, owner("r2"), stale_after=10, check_mode=True, now=T0 + 50)
    assert would["acquired"] is True and would["broken"]["run_id"] == "r1"
    assert runlock.release(lock, "r1", check_mode=True)["released"] is True
    assert runlock.release(lock, "r2", check_mode=True)["held_by"]["run_id"] == "r1"
    assert open(lock, "rb").read() == before and listing(tmp_path) == snapshot


def test_missing_directory_raises_lock_error_with_hint(tmp_path):
    lock = str(tmp_path / "nope" / "run.lock")
    with pytest.raises(runlock.LockError) as e:
        runlock.acquire(lock, owner("r1"))
    assert e.value.path == lock and str(tmp_path / "nope") in str(e.value)
    assert "create" in e.value.hint and str(tmp_path / "nope") in e.value.hint
    assert not os.path.exists(str(tmp_path / "nope"))


COLLECTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", ".collections")


def test_unwritable_directory_raises_lock_error_with_hint(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(str(d), 0o500)
    lock = str(d / "run.lock")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.aimem.fleet.plugins.module_utils import runlock\n"
            "try:\n    runlock.acquire(%r, {'run_id': 'r1'})\n"
            "except runlock.LockError as e:\n    print(e.path); print(e.hint); print(e); sys.exit(3)\n"
            % (os.path.abspath(COLLECTIONS), lock))
    # root ignores directory modes: drop every capability (CAP_DAC_OVERRIDE) for the child
    pre = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []
    try:
        res = subprocess.run(pre + [sys.executable, "-c", code], capture_output=True, text=True)
    finally:
        os.chmod(str(d), 0o700)
    assert res.returncode == 3, res.stdout + res.stderr
    out = res.stdout.splitlines()
    assert out[0].startswith(lock)
    assert "not writable" in out[1] and str(d) in out[1]
    assert listing(d) == []


def test_proc_start_time_and_liveness_of_a_real_process():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = runlock.proc_start_time(p.pid)
        assert isinstance(start, int) and start > 0
        with open("/proc/%d/stat" % p.pid) as f:
            assert int(f.read().rsplit(")", 1)[1].split()[19]) == start
        host = socket.gethostname()
        h = owner("r1", controller=host, pid=p.pid, pid_start=start, boot_id=runlock.read_boot_id())
        assert runlock.holder_liveness(h, host, boot_id=runlock.read_boot_id()) == "alive"
        assert runlock.holder_liveness(dict(h, pid_start=start + 1), host) == "dead"  # pid reused
        assert runlock.holder_liveness(dict(h, boot_id="other-boot"), host, boot_id="this-boot") == "dead"
        assert runlock.holder_liveness(h, "another-controller") == "unknown"
        ns = runlock.read_pid_ns()
        assert ns and ns == runlock.read_pid_ns(p.pid) and ns.startswith("pid:[")
        assert runlock.holder_liveness(dict(h, pid_ns=ns), host, pid_ns=ns) == "alive"
        # same host name in another pid namespace (a container): not ours to judge
        assert runlock.holder_liveness(dict(h, pid_ns="pid:[1]", pid_start=0), host, pid_ns=ns) == "unknown"
    finally:
        p.kill()
        p.wait()
    assert runlock.proc_start_time(p.pid) is None
    assert runlock.holder_liveness(h, host) == "dead"


def test_liveness_with_injected_reader_and_odd_holders():
    h = owner("r1", controller="c1", pid=100, pid_start=5, boot_id=None)
    assert runlock.holder_liveness(h, "c1", start_reader=lambda pid: 5) == "alive"
    assert runlock.holder_liveness(h, "c1", start_reader=lambda pid: 6) == "dead"
    assert runlock.holder_liveness(h, "c1", start_reader=lambda pid: None) == "dead"
    assert runlock.holder_liveness(dict(h, pid="x"), "c1", start_reader=lambda pid: 5) == "unknown"
    assert runlock.holder_liveness({"corrupt": True, "run_id": "corrupt:ab"}, "c1") == "unknown"
    assert runlock.holder_liveness(None, "c1") == "unknown"


def test_proc_start_time_parses_comm_with_spaces_and_parens(tmp_path):
    fields = ["S"] + [str(i) for i in range(4, 22)] + ["123456", "0", "0"]
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "stat").write_text("77 (we ird) (x)) " + " ".join(fields) + "\n")
    assert runlock.proc_start_time(77, proc=str(tmp_path)) == 123456
    assert runlock.proc_start_time("junk", proc=str(tmp_path)) is None


# ----------------------------------------------------------------------- races (real processes)

def _racer(args):
    lock, run_id, stale_after, break_holder, go_at = args
    while time.time() < go_at:
        pass
    res = runlock.acquire(lock, owner(run_id), stale_after=stale_after, break_holder=break_holder)
    return run_id, res["acquired"], (res["broken"] or {}).get("run_id")


def _race(lock, n, stale_after=0, break_holder=None):
    ctx = multiprocessing.get_context("fork")
    go_at = time.time() + 0.5
    with ctx.Pool(n) as pool:
        return pool.map(_racer, [(lock, "racer-%d" % i, stale_after, break_holder, go_at) for i in range(n)])


def test_concurrent_acquires_exactly_one_wins(tmp_path):
    lock = str(tmp_path / "run.lock")
    for round_ in range(5):
        if os.path.exists(lock):
            os.unlink(lock)
        out = _race(lock, 8)
        winners = [r for r, acquired, _ in out if acquired]
        assert len(winners) == 1, out
        assert content(lock)["run_id"] == winners[0]
    assert listing(tmp_path) == ["run.lock", "run.lock.guard"]  # no temp file left


def test_concurrent_breakers_of_a_stale_lock_exactly_one_breaks_and_wins(tmp_path):
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("old"), now=time.time() - 3600)
    out = _race(lock, 8, stale_after=60)
    winners = [r for r, acquired, _ in out if acquired]
    breakers = [r for r, _, broken in out if broken]
    assert len(winners) == 1 and breakers == winners, out
    assert content(lock)["run_id"] == winners[0]
    asides = [f for f in listing(tmp_path) if ".broken." in f]
    assert len(asides) == 1 and content(tmp_path / asides[0])["run_id"] == "old"
    assert not [f for f in listing(tmp_path) if f.endswith(".tmp")]


def test_break_racing_with_new_acquirers_never_two_holders(tmp_path):
    """Breakers name the dead holder 'old'; once one of them (or a plain acquirer after it) holds
    the lock, nobody else may break or take it - the new holder is not 'old'."""
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("old"), now=T0)
    ctx = multiprocessing.get_context("fork")
    go_at = time.time() + 0.5
    jobs = [(lock, "breaker-%d" % i, 0, "old", go_at) for i in range(4)] + \
           [(lock, "plain-%d" % i, 0, None, go_at) for i in range(4)]
    with ctx.Pool(8) as pool:
        out = pool.map(_racer, jobs)
    winners = [r for r, acquired, _ in out if acquired]
    assert len(winners) == 1, out
    assert winners[0].startswith("breaker-")  # nothing is free before 'old' is broken
    assert [b for _, _, b in out if b] == ["old"]
    assert content(lock)["run_id"] == winners[0]


def test_move_aside_puts_back_a_lock_that_changed_meanwhile(tmp_path):
    """The unguarded safety net: the lock judged breakable was replaced before the rename."""
    lock = str(tmp_path / "run.lock")
    runlock.acquire(lock, owner("old"), now=T0)
    judged = runlock.read_lock(lock)
    os.unlink(lock)
    runlock.acquire(lock, owner("new"), now=T0 + 1)
    assert runlock._move_aside(lock, judged, T0 + 2) is None
    assert content(lock)["run_id"] == "new"
    assert not [f for f in listing(tmp_path) if ".broken." in f]


def test_create_exclusive_never_overwrites(tmp_path):
    lock = str(tmp_path / "run.lock")
    assert runlock._create_exclusive(lock, {"run_id": "a"}) is True
    assert runlock._create_exclusive(lock, {"run_id": "b"}) is False
    assert content(lock)["run_id"] == "a"
    assert listing(tmp_path) == ["run.lock"]


def test_describe_names_the_holder():
    h = dict(owner("r1"), acquired_at="2026-06-01T22:40:38Z", heartbeat="2026-06-01T22:41:38Z")
    text = runlock.describe(h, now=T0 + 90)
    for part in ("r1", "ctl-a", "4242", "ops", "aimem.fleet.upgrade", "since 2026-06-01T22:40:38Z",
                 "last heartbeat 2026-06-01T22:41:38Z (30s ago)"):
        assert part in text


def test_acquire_requires_a_usable_run_id(tmp_path):
    with pytest.raises(runlock.LockError):
        runlock.acquire(str(tmp_path / "run.lock"), {"run_id": ""})
    with pytest.raises(runlock.LockError):
        runlock.acquire(str(tmp_path / "run.lock"), {"run_id": "corrupt:abc"})
    assert listing(tmp_path) == []
