"""aimem.fleet.aimem_lock (module + action plugin) through real ``ansible-playbook -c local`` runs:
a second run fails naming the holder, the same run re-acquires unchanged, release, a dead holder
of this controller is broken, ``wait`` waits for the first run's release, check mode writes
nothing, and the recorded pid is the ansible-playbook main process (forks 1 and 5)."""
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from helpers import BIN, CALLBACK_DIR, ROOT, TARGET_PYTHON, _as_playbook_text, run_playbook

COLLECTIONS = os.path.join(ROOT, ".collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
from ansible_collections.aimem.fleet.plugins.module_utils import runlock  # noqa: E402

HOSTNAME = socket.gethostname()
FIX = "another aimem.fleet run holds this host; wait for it to finish (or set aimem_lock_wait)"


class Background(object):
    """An ``ansible-playbook`` started with Popen (so its pid is known), same set-up as run_playbook."""

    def __init__(self, tmp_path, tasks, name, inventory="localhost,", extra_args=()):
        d = str(tmp_path)
        self.playbook = os.path.join(d, "%s.yml" % name)
        self.results_file = os.path.join(d, "%s.jsonl" % name)
        with open(self.playbook, "w") as f:
            f.write(_as_playbook_text(tasks))
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                   ANSIBLE_HOME=os.path.join(ROOT, ".ansible"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_CALLBACK_PLUGINS=CALLBACK_DIR, ANSIBLE_CALLBACKS_ENABLED="aimem_results",
                   ANSIBLE_LOCAL_TEMP=os.path.join(d, ".ansible-local-" + name),
                   ANSIBLE_REMOTE_TEMP=os.path.join(d, ".ansible-remote-" + name),
                   AIMEM_RESULTS_FILE=self.results_file)
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, "-c", "local",
               "-e", "ansible_python_interpreter=%s" % TARGET_PYTHON, self.playbook] + list(extra_args)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid

    def finish(self, timeout=120):
        out, _ = self.proc.communicate(timeout=timeout)
        results = []
        if os.path.exists(self.results_file):
            with open(self.results_file) as f:
                results = [json.loads(line) for line in f if line.strip()]
        return self.proc.returncode, out, results

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def wait_for_file(path, timeout=60, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("background playbook ended (rc %s) before %s appeared: %s"
                                 % (proc.returncode, path, proc.stdout.read()))
        time.sleep(0.1)
    raise AssertionError("%s did not appear within %ss" % (path, timeout))


def runlock_user():
    import getpass
    return getpass.getuser()


def load(path):
    with open(path) as f:
        return json.load(f)


def holder_tasks(lock, flag, run_id="run-A"):
    """Take the lock, hold it until ``flag`` exists, re-acquire (refresh), release."""
    return [
        {"name": "take", "aimem.fleet.aimem_lock": {"path": lock, "run_id": run_id}},
        {"name": "hold", "ansible.builtin.wait_for": {"path": flag, "timeout": 90}},
        {"name": "refresh", "aimem.fleet.aimem_lock": {"path": lock, "run_id": run_id}},
        {"name": "release", "aimem.fleet.aimem_lock": {"path": lock, "run_id": run_id, "state": "absent"}},
    ]


def lock_task(lock, run_id, name="lock", **kw):
    args = {"path": lock, "run_id": run_id}
    args.update(kw)
    return {"name": name, "aimem.fleet.aimem_lock": args}


def test_second_run_fails_naming_the_holder_and_the_first_run_refreshes_and_releases(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    lock, flag = str(work / "run.lock"), str(tmp_path / "go")
    first = Background(tmp_path, holder_tasks(lock, flag), "first")
    try:
        wait_for_file(lock, proc=first.proc)
        held = load(lock)
        # the owner is the first ansible-playbook main process on this controller
        assert held["run_id"] == "run-A" and held["controller"] == HOSTNAME
        assert held["pid"] == first.pid
        assert held["pid_start"] == runlock.proc_start_time(first.pid)
        assert held["boot_id"] == runlock.read_boot_id()
        assert held["pid_ns"] == runlock.read_pid_ns(first.pid)
        assert held["user"] == runlock_user()
        assert held["playbook"] == first.playbook
        assert held["acquired_at"] == held["heartbeat"] and held["heartbeat"].endswith("Z")
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        before = open(lock, "rb").read()

        second = run_playbook(tmp_path, [lock_task(lock, "run-B")])
        assert second.rc == 2, second.output
        assert second.status("lock") == "failed"
        msg = second.task("lock")["msg"]
        for part in ("localhost:", lock, "run run-A", "controller %s" % HOSTNAME, "pid %d" % first.pid,
                     "user %s" % held["user"], "since %s" % held["acquired_at"],
                     "last heartbeat %s" % held["heartbeat"], FIX, "remove %s after checking" % lock):
            assert part in msg, (part, msg)
        assert second.task("lock")["acquired"] is False
        assert second.task("lock")["held_by"]["run_id"] == "run-A"

        # releasing someone else's lock leaves it alone, with a warning
        other_release = run_playbook(tmp_path, [lock_task(lock, "run-B", state="absent")])
        assert other_release.rc == 0, other_release.output
        assert other_release.task("lock")["changed"] is False
        assert "held by run run-A" in other_release.stderr and "left it alone" in other_release.stderr
        # check mode against a live holder: warns, does not fail, writes nothing
        check = run_playbook(tmp_path, [lock_task(lock, "run-B")], check=True)
        assert check.rc == 0, check.output
        assert check.task("lock")["acquired"] is False
        assert "a real run would wait or fail" in check.stderr
        assert open(lock, "rb").read() == before
    finally:
        open(flag, "w").close()
        rc, out, results = first.finish()
    assert rc == 0, out
    by_task = dict((r["task"], r["result"]) for r in results)
    assert by_task["take"]["changed"] is True and by_task["take"]["acquired"] is True
    assert by_task["refresh"]["changed"] is False and by_task["refresh"]["refreshed"] is True
    assert by_task["refresh"]["held_by"]["acquired_at"] == held["acquired_at"]
    assert by_task["release"]["changed"] is True and by_task["release"]["released"] is True
    assert sorted(os.listdir(str(work))) == ["run.lock.guard"]


def test_same_run_id_reacquires_unchanged_then_releases(tmp_path):
    lock = str(tmp_path / "run.lock")
    r = run_playbook(tmp_path, [lock_task(lock, "run-A", name="take"), lock_task(lock, "run-A", name="again")])
    assert r.rc == 0, r.output
    assert r.task("take")["changed"] is True
    assert r.task("again")["changed"] is False and r.task("again")["acquired"] is True
    first_acquired = load(lock)["acquired_at"]
    # a later run re-using the run id (a resumed run) refreshes pid and heartbeat, keeps acquired_at
    time.sleep(1.1)
    r2 = run_playbook(tmp_path, [lock_task(lock, "run-A", name="resume"),
                                 lock_task(lock, "run-A", name="drop", state="absent"),
                                 lock_task(lock, "run-A", name="drop again", state="absent")])
    assert r2.rc == 0, r2.output
    resumed = r2.task("resume")["held_by"]
    assert r2.task("resume")["changed"] is False
    assert resumed["acquired_at"] == first_acquired and resumed["heartbeat"] > first_acquired
    assert r2.task("drop")["changed"] is True and not os.path.exists(lock)
    assert r2.task("drop again")["changed"] is False


@pytest.mark.parametrize("how", ["killed", "pid_reused"])
def test_lock_of_a_dead_run_of_this_controller_is_broken_with_a_warning(tmp_path, how):
    lock = str(tmp_path / "run.lock")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    start = runlock.proc_start_time(victim.pid)
    assert start
    try:
        if how == "killed":
            victim.kill()
            victim.wait()
        else:  # the pid is alive but belongs to another process than the one recorded
            start -= 1
        dead = runlock.make_owner("dead-run", HOSTNAME, victim.pid, start, "ops", "upgrade.yml",
                                  boot_id=runlock.read_boot_id(), pid_ns=runlock.read_pid_ns())
        dead.update(version=1, acquired_at="2026-06-01T22:40:38Z", heartbeat="2026-06-01T22:40:38Z")
        with open(lock, "w") as f:
            json.dump(dead, f)
        r = run_playbook(tmp_path, [lock_task(lock, "run-B")])
    finally:
        victim.kill()
        victim.wait()
    assert r.rc == 0, r.output
    res = r.task("lock")
    assert res["acquired"] is True and res["changed"] is True
    assert res["broken"]["run_id"] == "dead-run" and res["broken_reason"] == "break_holder"
    assert "breaking the run lock %s of dead run dead-run" % lock in " ".join(r.stderr.split())
    assert load(lock)["run_id"] == "run-B"
    assert load(res["broken_path"]) == dead
    assert res["broken_path"] == lock + ".broken." + res["broken_path"].rsplit(".broken.", 1)[1]


def test_holder_on_another_controller_is_never_judged_dead_but_breaks_when_stale(tmp_path):
    lock = str(tmp_path / "run.lock")
    other = runlock.make_owner("far-run", "another-controller", 1, 1, "ops", "upgrade.yml")
    other.update(version=1, acquired_at=runlock.iso(time.time() - 7200), heartbeat=runlock.iso(time.time() - 3600))
    with open(lock, "w") as f:
        json.dump(other, f)
    r = run_playbook(tmp_path, [
        dict(lock_task(lock, "run-B", name="fresh enough", stale_after=7200), ignore_errors=True),
        lock_task(lock, "run-B", name="stale", stale_after=1800)])
    assert r.rc == 0, r.output
    assert r.status("fresh enough") == "ignored"
    assert "controller another-controller" in r.task("fresh enough")["msg"]
    stale = r.task("stale")
    assert stale["acquired"] is True and stale["broken"]["run_id"] == "far-run"
    assert stale["broken_reason"] == "stale"
    assert load(lock)["run_id"] == "run-B"


def test_wait_makes_the_second_run_wait_for_the_release(tmp_path):
    lock, flag = str(tmp_path / "run.lock"), str(tmp_path / "go")
    first = Background(tmp_path, holder_tasks(lock, flag), "first")
    try:
        wait_for_file(lock, proc=first.proc)
        assert load(lock)["pid"] == first.pid
        release_after = 8.0   # longer than ansible-playbook's start on a loaded CI machine
        timer = threading.Timer(release_after, lambda: open(flag, "w").close())
        t0 = time.monotonic()
        timer.start()
        second = run_playbook(tmp_path, [lock_task(lock, "run-B", wait=60, poll=1)])
        elapsed = time.monotonic() - t0
    finally:
        open(flag, "w").close()
        rc, out, _ = first.finish()
    assert rc == 0, out
    assert second.rc == 0, second.output
    res = second.task("lock")
    assert res["acquired"] is True and res["changed"] is True and res["broken"] is None
    # it met the held lock and polled (poll=1) until the release; how long depends on when the
    # second ansible-playbook got going, so only a lower bound of one poll is certain
    assert res["waited"] >= 0.9 and elapsed >= release_after
    held = load(lock)
    assert held["run_id"] == "run-B" and held["pid"] != first.pid


def test_check_mode_writes_nothing(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    lock = str(work / "run.lock")
    r = run_playbook(tmp_path, [lock_task(lock, "run-A"), lock_task(lock, "run-A", name="rel", state="absent")],
                     check=True)
    assert r.rc == 0, r.output
    assert r.task("lock")["acquired"] is True and r.task("lock")["changed"] is True
    assert os.listdir(str(work)) == []


def test_missing_directory_fails_naming_host_path_and_fix(tmp_path):
    lock = str(tmp_path / "missing" / "run.lock")
    r = run_playbook(tmp_path, [lock_task(lock, "run-A")])
    assert r.rc == 2
    msg = r.task("lock")["msg"]
    assert msg.startswith("localhost:") and lock in msg and "create %s first" % (tmp_path / "missing") in msg
    assert not os.path.exists(str(tmp_path / "missing"))


@pytest.mark.parametrize("forks", [1, 5])
def test_recorded_pid_is_the_ansible_playbook_main_process(tmp_path, forks):
    """os.getppid() in the action plugin (a forked WorkerProcess) is the ansible-playbook process."""
    hosts = ["h1", "h2", "h3"]
    play = [{"name": "p", "hosts": "all", "connection": "local", "gather_facts": False,
             "tasks": [lock_task(str(tmp_path) + "/{{ inventory_hostname }}.lock", "run-F")]}]
    bg = Background(tmp_path, play, "forks%d" % forks, inventory=",".join(hosts) + ",",
                    extra_args=["-f", str(forks)])
    rc, out, results = bg.finish()
    assert rc == 0, out
    assert len(results) == 3
    for h in hosts:
        held = load(str(tmp_path / ("%s.lock" % h)))
        assert held["pid"] == bg.pid and held["controller"] == HOSTNAME
        assert held["pid_start"] is not None
