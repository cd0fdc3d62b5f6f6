"""Shared helpers for role and fleet-playbook tests: a seeded test fleet of ai-memory 0.6.4 hosts.

    from rolelib import SeededFleet
    sf = SeededFleet("rdrain", 2)          # build stand-ins (cached per process), fleet up, seed 0.6.4
    r = sf.play("tests/roles/playbooks/drain.yml", check=False, diff=False, extra={"x": 1})
    assert r.rc == 0 and r.recap["h1"]["changed"] > 0
    sf.exec("h1", "cat /etc/ai-memory/env")
    sf.down()

``sf.vars`` are the inventory settings of the test fleet for the aimem.fleet roles (service user
``aimem`` with a nologin shell, the pidfile init script, the release mirror served inside the fleet
network with the sha256 pins computed by the stand-in build). Results of every task are parsed from
the tests/integration JSON-lines callback (``r.task(name, host)``).
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from fleetlib import Fleet  # noqa: E402
from helpers import CALLBACK_DIR, PlaybookResult  # noqa: E402

SEED = os.path.join(ROOT, "tests", "playbooks", "seed_v064.yml")
_BUILDS = {}


def standin_release(out=None):
    """Build (once per process) the stand-in binaries, release mirror and pins; return (out, pins)."""
    key = out or "default"
    if key not in _BUILDS:
        if out is None:
            out = tempfile.mkdtemp(prefix="aimem-standin-", dir=os.environ.get("AIMEM_BUILD_TMP") or None)
        spec = importlib.util.spec_from_file_location("standin_build", os.path.join(ROOT, "tests", "standin", "build.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        built = mod.build_all(out)
        _BUILDS[key] = (out, built["pins"])
    return _BUILDS[key]


RECAP_RE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
                      r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)


def parse_recap(text):
    recap = {}
    for m in RECAP_RE.finditer(text):
        recap[m.group(1)] = dict(zip(("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"),
                                     (int(x) for x in m.groups()[1:])))
    return recap


class Result(PlaybookResult):
    def __init__(self, *a, **kw):
        PlaybookResult.__init__(self, *a, **kw)
        self.recap = parse_recap(self.stdout)

    def changed(self):
        """{host: changed count} from the PLAY RECAP."""
        return {h: v["changed"] for h, v in self.recap.items()}


class Run(object):
    """A background ansible-playbook run (see SeededFleet.start)."""

    def __init__(self, cmd, env, results_file, playbook):
        self.cmd, self.results_file, self.playbook = cmd, results_file, playbook
        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._out, stderr=self._err, text=True,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL the whole run, like an OOM killer or a `kill -9` of the operator's session."""
        import signal
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait(60)

    def pause(self):
        """SIGSTOP the whole run: it keeps what it holds (a run lock), alive, until resume()."""
        import signal
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        import signal
        os.killpg(self.proc.pid, signal.SIGCONT)

    def tasks_done(self):
        """Names of the tasks whose results the run has recorded so far."""
        if not os.path.exists(self.results_file):
            return []
        with open(self.results_file) as f:
            return [json.loads(line)["task"] for line in f if line.strip().endswith("}")]

    def wait(self, timeout=900):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._out.seek(0)
        self._err.seek(0)
        results = []
        if os.path.exists(self.results_file):
            with open(self.results_file) as f:
                for line in f:
                    try:
                        results.append(json.loads(line))
                    except ValueError:   # the last line of a killed run may be cut
                        pass
        return Result(self.proc.returncode, self._out.read(), self._err.read(), results, self.playbook, self.cmd)


class SeededFleet(object):
    """A test fleet whose hosts run ai-memory 0.6.4 (seeded by tests/playbooks/seed_v064.yml)."""

    def __init__(self, name, n=2, shared=False, rows=200, seed=True, size_mb=None, owner_pid=True):
        self.out, self.pins = standin_release()
        self.fleet = Fleet(name=name, n=n, shared=shared, http_dir=os.path.join(self.out, "mirror"),
                           owner_pid=owner_pid)
        self.rows = rows
        self.size_mb = size_mb
        self.tmp = tempfile.mkdtemp(prefix="aimem-%s-" % name)
        self._n = 0
        self.fleet.up()
        if seed:
            self.seed()

    # -- fleet ---------------------------------------------------------------------------------
    @property
    def hosts(self):
        return self.fleet.hosts

    def exec(self, host, cmd, check=True, input=None, timeout=60):
        return self.fleet.exec(host, cmd, check=check, input=input, timeout=timeout)

    def down(self):
        self.fleet.down()

    def seed(self, hosts=None):
        # per-fleet scratch: the generated DBs are cached by host name, and fleets differ in rows
        extra = {"seed_standin_dir": self.out, "seed_rows": self.rows,
                 "seed_scratch": os.path.join(self.tmp, "seed-dbs")}
        if self.size_mb:
            extra["seed_size_mb"] = self.size_mb
        if hosts:
            extra["seed_hosts"] = ",".join(hosts)
        r = self.play(SEED, extra=extra)
        assert r.rc == 0, "seeding the test fleet failed\n" + r.output
        return r

    @property
    def vars(self):
        """Inventory settings of the test fleet for the aimem.fleet roles."""
        return {
            "aimem_service_user": "aimem",
            "aimem_service_home": "/var/lib/ai-memory",
            "aimem_service_manager": "process",
            "aimem_service_init_script": "/etc/init.d/ai-memory",
            "aimem_service_become_method": "ansible.builtin.su",
            "aimem_service_become_flags": "-s /bin/sh",
            "aimem_release_base_url": self.fleet.http_url,
            "aimem_release_allow_insecure_url": True,     # plain http inside the fleet's own network
            "aimem_release_sha256": self.pins["0.7.0"],
            "aimem_controller_dir": os.path.join(self.tmp, "controller"),
        }

    # -- ansible -------------------------------------------------------------------------------
    def play(self, playbook, extra=None, check=False, diff=False, args=(), env=None, timeout=900,
             use_vars=True, limit=None):
        """Run ansible-playbook over SSH against the fleet; ``extra`` goes in as one JSON -e."""
        return self.start(playbook, extra=extra, check=check, diff=diff, args=args, env=env,
                          use_vars=use_vars, limit=limit).wait(timeout)

    def start(self, playbook, extra=None, check=False, diff=False, args=(), env=None, use_vars=True,
              limit=None):
        """Start ansible-playbook in the background (its own process group); ``.wait()`` -> Result,
        ``.kill()`` SIGKILLs the whole run (the main process, its workers and their ssh clients)."""
        self._n += 1
        results_file = os.path.join(self.tmp, "results-%d.jsonl" % self._n)
        evars = dict(self.vars) if use_vars else {}
        evars.update(extra or {})
        cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(self.fleet.inventory),
               playbook, "-e", json.dumps(evars)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if limit:
            cmd += ["--limit", limit]
        cmd += list(args)
        run_env = dict(os.environ)
        run_env.update({
            "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
            "ANSIBLE_HOME": os.path.join(ROOT, ".ansible"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_DIR,
            "ANSIBLE_CALLBACKS_ENABLED": "aimem_results",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "AIMEM_RESULTS_FILE": results_file,
        })
        run_env.update(env or {})
        return Run(cmd, run_env, results_file, playbook)

    # -- host probes ---------------------------------------------------------------------------
    def sql(self, host, db, query):
        return self.exec(host, ["sqlite3", "-readonly", db, query]).stdout.strip()

    def digest(self, host, path):
        r = self.exec(host, "sha256sum %s 2>/dev/null || echo missing" % path, check=False)
        return r.stdout.split()[0]

    def tree_digest(self, host, paths):
        """{path: sha256 or 'missing'} for the given paths on the host (check-mode proof)."""
        return {p: self.digest(host, p) for p in paths}
