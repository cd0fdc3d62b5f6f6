"""Python API over ``tests/fleet/fleet.sh`` for pytest fixtures, molecule and the demo.

    from fleetlib import Fleet
    with Fleet(name="demo", n=3, shared=True, http_dir="dist") as fleet:
        fleet.exec("h1", "ls /usr/local/bin")            # inside h1, without SSH
        fleet.ansible("fleet", "-m", "ansible.builtin.ping")
        fleet.playbook("playbooks/upgrade.yml", "-e", "x=1")

In a test module::

    from fleetlib import fleet_fixture
    fleet = fleet_fixture(3, name="upg", shared=True)      # module-scoped fixture named "fleet"

A fleet never outlives its test run: ``down`` runs in the fixture finalizer and at interpreter exit,
a watchdog started by ``fleet.sh`` (FLEET_OWNER_PID) tears it down when the Python process dies
even by SIGKILL, and ``up`` first tears down a stale fleet of the same name.
"""
import atexit
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLEET_SH = HERE / "fleet.sh"
REPO = HERE.parent.parent                       # tests/fleet -> repo root
ANSIBLE_CFG = REPO / "ansible.cfg"
VENV_BIN = REPO / ".venv" / "bin"

#: name -> seconds, filled by Fleet.up/down and the tests; printed in the pytest summary
TIMINGS = {}


def record(what, secs):
    """Add a timing to TIMINGS without overwriting an earlier one of the same name."""
    key, k = what, 2
    while key in TIMINGS:
        key, k = "%s #%d" % (what, k), k + 1
    TIMINGS[key] = secs


class FleetError(RuntimeError):
    pass


def _tool(name):
    p = VENV_BIN / name
    return str(p) if p.exists() else name


class Fleet:
    def __init__(self, name="aimem", n=3, shared=False, http_dir=None, fleet_dir=None, subnet=None,
                 service_user=None, port=None, owner_pid=True, env=None):
        if not re.match(r"^[a-z][a-z0-9]{0,9}$", name):
            raise ValueError("fleet name %r: use 1-10 characters [a-z0-9] starting with a letter" % name)
        self.name = name
        self.n = int(n)
        self.shared = shared
        self.http_dir = str(http_dir) if http_dir else None
        self.fleet_dir = Path(fleet_dir or "/tmp/fleet-%s" % name)
        self.subnet = subnet
        self.service_user = service_user
        self.port = port
        self.owner_pid = os.getpid() if owner_pid is True else owner_pid
        self.extra_env = dict(env or {})
        self._atexit = False

    # --- environment / raw script ------------------------------------------------------------
    def env(self):
        e = dict(os.environ)
        for k in [k for k in e if k.startswith("FLEET_")]:
            del e[k]                    # never inherit another fleet's settings
        e["FLEET_NAME"] = self.name
        e["FLEET_DIR"] = str(self.fleet_dir)
        if self.subnet:
            e["FLEET_SUBNET"] = self.subnet
        if self.port:
            e["FLEET_PORT"] = str(self.port)
        if self.shared:
            e["FLEET_SHARED"] = "1" if self.shared is True else str(self.shared)
        if self.http_dir:
            e["FLEET_HTTP_DIR"] = self.http_dir
        if self.service_user is not None:
            e["FLEET_SERVICE_USER"] = self.service_user
        e.update(self.extra_env)
        return e

    def script(self, *args, check=True, timeout=120, env=None, **kw):
        """Run ``fleet.sh ARGS...`` for this fleet; returns the CompletedProcess."""
        e = self.env()
        if env:
            e.update(env)
        r = subprocess.run([str(FLEET_SH)] + [str(a) for a in args], env=e, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise FleetError("fleet.sh %s (fleet %s) failed with rc=%d:\n%s%s" % (
                " ".join(map(str, args)), self.name, r.returncode, r.stdout, r.stderr))
        return r

    # --- lifecycle ------------------------------------------------------------------------------
    def up(self):
        env = {"FLEET_OWNER_PID": str(self.owner_pid)} if self.owner_pid else {}
        t0 = time.monotonic()
        self.script("up", self.n, env=env)
        record("fleet %s: up %d" % (self.name, self.n), time.monotonic() - t0)
        if not self._atexit:
            atexit.register(self._down_quietly)
            self._atexit = True
        return self

    def down(self):
        t0 = time.monotonic()
        self.script("down")
        record("fleet %s: down" % self.name, time.monotonic() - t0)

    def _down_quietly(self):
        try:
            self.script("down", check=False, timeout=60)
        except Exception:   # interpreter is exiting; nothing else to do
            pass

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    # --- facts ---------------------------------------------------------------------------------
    @property
    def inventory(self):
        return self.fleet_dir / "inventory.ini"

    @property
    def ssh_config(self):
        return self.fleet_dir / "ssh_config"

    @property
    def hosts(self):
        return ["h%d" % i for i in range(1, self.n + 1)]

    def inventory_vars(self):
        """The [fleet:vars] of the inventory as a dict (values unquoted)."""
        out, section = {}, None
        for line in self.inventory.read_text().splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[fleet:vars]" and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v[1:-1] if v[:1] == v[-1:] == "'" else v
        return out

    def addr(self, host):
        for line in (self.fleet_dir / "hosts").read_text().splitlines():
            a, h = line.split()
            if h == host:
                return a
        raise KeyError("no host %r in fleet %s" % (host, self.name))

    @property
    def controller_addr(self):
        return self.addr("controller")

    @property
    def http_url(self):
        return self.inventory_vars().get("fleet_http_url")

    @property
    def shared_dir(self):
        """(path inside the hosts, backing directory on the controller) or None."""
        v = self.inventory_vars().get("fleet_shared_dir")
        return (v, self.fleet_dir / "shared") if v else None

    def host_dir(self, host):
        """Controller-side state of HOST (``etc.up``/``var.up`` upper dirs, ``usrlocal``, ``root``)."""
        return self.fleet_dir / host

    # --- running things --------------------------------------------------------------------------
    def exec(self, host, cmd, check=True, input=None, timeout=60):
        """Run CMD as root inside HOST's namespaces without SSH (nsenter). A str runs via ``sh -c``."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        r = self.script("exec", host, *argv, check=False, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise FleetError("exec on %s (fleet %s) failed rc=%d: %s\nstdout: %s\nstderr: %s" % (
                host, self.name, r.returncode, cmd, r.stdout, r.stderr))
        return r

    def ssh(self, host, cmd, check=True, timeout=60):
        """Run CMD on HOST over real SSH (``ssh -F ssh_config``)."""
        r = subprocess.run(["ssh", "-F", str(self.ssh_config), host, cmd], text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if check and r.returncode != 0:
            raise FleetError("ssh %s %r failed rc=%d: %s" % (host, cmd, r.returncode, r.stderr))
        return r

    def _ansible_env(self, env):
        e = dict(os.environ)
        e["ANSIBLE_CONFIG"] = str(ANSIBLE_CFG)
        e.update(env or {})
        return e

    def ansible(self, *args, check=True, env=None, timeout=300):
        """``.venv/bin/ansible -i INVENTORY ARGS...`` (cwd = repo root)."""
        r = subprocess.run([_tool("ansible"), "-i", str(self.inventory)] + [str(a) for a in args],
                           cwd=str(REPO), env=self._ansible_env(env), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if check and r.returncode != 0:
            raise FleetError("ansible %s failed rc=%d:\n%s\n%s" % (shlex.join(map(str, args)), r.returncode,
                                                                  r.stdout[-4000:], r.stderr[-4000:]))
        return r

    def playbook(self, *args, check=True, env=None, timeout=900):
        """``.venv/bin/ansible-playbook -i INVENTORY ARGS...`` (cwd = repo root)."""
        r = subprocess.run([_tool("ansible-playbook"), "-i", str(self.inventory)] + [str(a) for a in args],
                           cwd=str(REPO), env=self._ansible_env(env), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if check and r.returncode != 0:
            raise FleetError("ansible-playbook %s failed rc=%d:\n%s\n%s" % (
                shlex.join(map(str, args)), r.returncode, r.stdout[-6000:], r.stderr[-4000:]))
        return r

    def ping(self, pattern="fleet"):
        """ansible.builtin.ping on PATTERN over SSH -> {host: "ok" | "unreachable" | "failed"}."""
        r = self.ansible(pattern, "-m", "ansible.builtin.ping", check=False)
        states = {"SUCCESS": "ok", "CHANGED": "ok", "UNREACHABLE!": "unreachable", "FAILED!": "failed"}
        out = {}
        for m in re.finditer(r"^(\S+) \| (SUCCESS|CHANGED|UNREACHABLE!|FAILED!)", r.stdout, re.M):
            out[m.group(1)] = states[m.group(2)]
        if not out:
            raise FleetError("ansible ping %s: no result (rc=%d): %s %s" % (pattern, r.returncode, r.stdout, r.stderr))
        return out


def fleet_fixture(n=3, name="pytest", scope="module", **kw):
    """A pytest fixture (assign it to a module-level name) giving an up ``Fleet``; always torn down."""
    import pytest

    @pytest.fixture(scope=scope)
    def _fleet(request):
        f = Fleet(name=os.environ.get("AIMEM_FLEET_NAME", name), n=n, **kw)
        request.addfinalizer(f.down)
        f.up()
        yield f

    return _fleet
