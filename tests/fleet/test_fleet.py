"""The project's multi-host test fleet (tests/fleet/fleet.sh): real SSH hosts in namespaces.

One 5-host fleet (shared "NFS" dir + release HTTP server) for the module; a second, small fleet
runs next to it for the lifecycle checks (up twice, down twice, parallel fleets, leftovers).
"""
import os
import pwd
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import fleetlib
from fleetlib import FLEET_SH, Fleet, FleetError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fleet needs root (namespaces, mounts)")

NAME = os.environ.get("AIMEM_FLEET_NAME", "fltest")
N = 5
CP_DIR = "/tmp/aimem-ansible-cp"          # control_path_dir of the repo's ansible.cfg


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    (d / "release.txt").write_text("release-%s\n" % uuid.uuid4().hex)
    return d


@pytest.fixture(scope="module")
def fleet(www):
    f = Fleet(name=NAME, n=N, shared=True, http_dir=www)
    try:
        f.up()
        f.pids_at_up = fleet_pids(f)
        yield f
    finally:
        f.down()


# --- helpers ----------------------------------------------------------------------------------
def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, **kw)


def fleet_netns(name):
    return [ln.split()[0] for ln in sh(["ip", "netns", "list"]).stdout.splitlines()
            if ln.split()[0].startswith(name + "-")]


def fleet_pids(f):
    """PIDs of every process in the fleet's namespaces (hosts' tini/sshd/unshare, HTTP server)."""
    pids = set()
    for ns in fleet_netns(f.name):
        pids.update(int(p) for p in sh(["ip", "netns", "pids", ns]).stdout.split())
    return pids


def live(pid):
    try:
        return not re.search(r"^State:\s+Z", Path("/proc/%d/status" % pid).read_text(), re.M)
    except OSError:
        return False


def marked_processes(name):
    """Live processes whose command line carries this fleet's markers."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("aimem-fleet:%s:" % name in cmd or "aimem-fleet-watchdog:%s " % name in cmd) and live(int(p.name)):
            out.append("%s %s" % (p.name, cmd[:100]))
    return out


def ssh_master_alive(addr, port=22):
    return sh(["ssh", "-o", "ControlPath=%s/%%C" % CP_DIR, "-p", str(port), "-O", "check", "root@" + addr]).returncode == 0


def leftovers(f, pids, addrs, subnet):
    """Everything a fleet may leave behind; [] when down was clean."""
    bad = []
    bad += ["netns %s" % ns for ns in fleet_netns(f.name)]
    bad += ["/run/netns/%s" % p.name for p in Path("/run/netns").glob(f.name + "-*")] if Path("/run/netns").is_dir() else []
    bad += ["link %s" % ln for ln in sh(["ip", "-o", "link"]).stdout.splitlines() if " %s-" % f.name in ln]
    bad += ["route %s" % r for r in sh(["ip", "route", "show", "type", "blackhole"]).stdout.splitlines()
            if r.split()[1].startswith(subnet + ".")]
    bad += ["live pid %d (%s)" % (p, Path("/proc/%d/comm" % p).read_text().strip()) for p in pids if live(p)]
    bad += ["process %s" % p for p in marked_processes(f.name)]
    mounts = Path("/proc/self/mountinfo").read_text()
    bad += ["mount %s" % m for m in mounts.splitlines() if str(f.fleet_dir) in m or "/run/netns/%s-" % f.name in m]
    bad += ["ssh master to %s" % a for a in addrs if ssh_master_alive(a)]
    if f.fleet_dir.exists():
        bad.append("state dir %s" % f.fleet_dir)
    return bad


def wait_no_zombies(pids, timeout=10):
    """unshare parents are reaped by this machine's PID 1, which may take a moment (~2 s here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path("/proc/%d" % p).exists() for p in pids):
            return True
        time.sleep(0.2)
    return False


CLIENT = ("import socket,sys\ntry:\n s=socket.create_connection(('127.0.0.1',int(sys.argv[1])),2)\n"
          " print(s.recv(100).decode())\nexcept OSError as e:\n print(type(e).__name__); sys.exit(3)\n")
SERVER = ("import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(8)\n"
          "while True:\n c,_=s.accept(); c.sendall(socket.gethostname().encode()); c.close()\n")


def start_server(fleet, host, port):
    fleet.exec(host, ["sh", "-c", 'setsid /usr/bin/python3 -c "$1" "$2" </dev/null >/dev/null 2>&1 &', "-",
                      SERVER, str(port)])
    for _ in range(50):
        if fleet.exec(host, ["/usr/bin/python3", "-c", CLIENT, str(port)], check=False).returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail("probe server on %s:127.0.0.1:%d did not start" % (host, port))


def connect(fleet, host, port):
    r = fleet.exec(host, ["/usr/bin/python3", "-c", CLIENT, str(port)], check=False)
    return r.stdout.strip()


# --- the 5-host fleet ------------------------------------------------------------------------
def test_up_and_every_host_answers_ansible_ping(fleet):
    t0 = time.monotonic()
    first = fleet.ping()
    fleetlib.record("ansible ping %d hosts (1st, new SSH)" % N, time.monotonic() - t0)
    t0 = time.monotonic()
    second = fleet.ping()
    fleetlib.record("ansible ping %d hosts (2nd, ControlPersist)" % N, time.monotonic() - t0)
    assert first == {"h%d" % i: "ok" for i in range(1, N + 1)}
    assert second == first
    st = fleet.script("status")
    assert st.stdout.count(" up ") == N, st.stdout
    # nothing of the fleet is mounted in the controller's mount namespace, even while it runs
    assert [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(fleet.fleet_dir) in m] == []


def test_hosts_have_own_identity_and_address(fleet):
    for h in fleet.hosts:
        out = fleet.ssh(h, "hostname; ip -4 -o addr show dev eth0; ip route").stdout.split("\n")
        assert out[0] == h
        assert " %s/24 " % fleet.addr(h) in out[1]
        assert not any(r.startswith("default") for r in out[2:]), out   # no way out of the fleet net


def test_inventory_and_ssh_config(fleet):
    v = fleet.inventory_vars()
    assert v["ansible_python_interpreter"] == "/usr/bin/python3"
    assert v["ansible_user"] == "root"
    assert v["ansible_ssh_private_key_file"] == str(fleet.fleet_dir / "id_ed25519")
    assert 'ProxyCommand="ip netns exec %s-ctl nc %%h %%p"' % NAME in v["ansible_ssh_common_args"]
    assert "ServerAliveInterval=5" in v["ansible_ssh_common_args"]
    assert v["fleet_shared_dir"] == "/srv/nfs/ai-memory"
    assert v["fleet_http_url"] == "http://%s:18080" % fleet.controller_addr
    assert fleet.script("inventory").stdout.strip() == str(fleet.inventory)
    hosts = [ln.split()[0] for ln in fleet.inventory.read_text().split("[fleet]\n")[1].split("\n\n")[0].splitlines()]
    assert hosts == fleet.hosts
    assert sh(["ssh", "-F", str(fleet.ssh_config), "h3", "hostname"]).stdout.strip() == "h3"


def test_usr_local_and_state_dirs_are_per_host(fleet):
    probe = "fleet-probe-%s" % uuid.uuid4().hex[:8]
    fleet.ansible("h1", "-m", "ansible.builtin.copy",
                  "-a", "dest=/usr/local/bin/%s content='#!/bin/sh\necho hi\n' mode=0755" % probe)
    assert fleet.exec("h1", "/usr/local/bin/%s" % probe).stdout == "hi\n"
    assert fleet.exec("h2", ["test", "-e", "/usr/local/bin/" + probe], check=False).returncode == 1
    assert not os.path.exists("/usr/local/bin/" + probe)                      # controller
    assert (fleet.host_dir("h1") / "usrlocal" / "bin" / probe).is_file()   # where it really lives
    # /etc, /var/lib, /srv, /opt, /root: written on h1, absent on h2 and on the controller
    paths = ["/etc/fleet-%s" % probe, "/var/lib/fleet-%s" % probe, "/srv/fleet-%s" % probe,
             "/opt/fleet-%s" % probe, "/root/fleet-%s" % probe]
    fleet.exec("h1", ["touch"] + paths)
    r = fleet.exec("h2", "for p in %s; do [ ! -e $p ] || echo $p; done" % " ".join(paths))
    assert r.stdout == ""
    assert [p for p in paths if os.path.exists(p)] == []
    # the rest of the controller's tree is read-only inside a host
    r = fleet.exec("h1", ["touch", "/usr/bin/%s" % probe], check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_process_on_h1_is_invisible_on_h2(fleet):
    fleet.exec("h1", "setsid sleep 4242 </dev/null >/dev/null 2>&1 &")
    try:
        assert "sleep 4242" in fleet.ssh("h1", "ps -eo args").stdout
        assert "sleep 4242" not in fleet.ssh("h2", "ps -eo args").stdout
        assert fleet.exec("h2", ["pgrep", "-f", "sleep 4242"], check=False).returncode == 1
        # a host sees only its own few processes, its PID 1 is tini
        assert fleet.exec("h2", ["cat", "/proc/1/comm"]).stdout.strip() == "tini"
    finally:
        fleet.exec("h1", ["pkill", "-f", "sleep 4242"], check=False)


def test_each_host_has_its_own_loopback(fleet):
    start_server(fleet, "h1", 9077)
    assert connect(fleet, "h1", 9077) == "h1"
    assert connect(fleet, "h2", 9077) == "ConnectionRefusedError"     # h1's daemon is not on h2
    with pytest.raises(OSError):                                     # nor on the controller
        socket.create_connection(("127.0.0.1", 9077), 1).close()
    start_server(fleet, "h2", 9077)                                  # same port, no conflict
    assert connect(fleet, "h2", 9077) == "h2"
    assert connect(fleet, "h1", 9077) == "h1"
    for h in ("h1", "h2"):
        fleet.exec(h, ["pkill", "-f", "s.bind..127.0.0.1"], check=False)


def test_shared_dir_is_shared(fleet):
    mp, backing = fleet.shared_dir
    token = uuid.uuid4().hex
    fleet.ansible("h1", "-m", "ansible.builtin.copy", "-a", "dest=%s/config.toml content='token = \"%s\"\n'" % (mp, token))
    assert fleet.exec("h3", ["cat", mp + "/config.toml"]).stdout == 'token = "%s"\n' % token
    assert (backing / "config.toml").read_text() == 'token = "%s"\n' % token
    assert "%s " % mp in fleet.exec("h5", ["findmnt", "-n", "-o", "TARGET,OPTIONS", mp]).stdout
    fleet.exec("h2", ["rm", mp + "/config.toml"])
    assert fleet.exec("h1", ["test", "-e", mp + "/config.toml"], check=False).returncode == 1


def test_service_user_on_hosts_not_on_controller(fleet):
    entries = {h: fleet.exec(h, ["getent", "passwd", "aimem"]).stdout.strip().split(":") for h in fleet.hosts}
    for h, e in entries.items():
        assert e[0] == "aimem" and e[5] == "/var/lib/ai-memory" and e[6] == "/usr/sbin/nologin", (h, e)
        assert int(e[2]) < 1000, "not a system user on %s: %s" % (h, e)
    assert len({e[2] for e in entries.values()}) == 1          # same uid everywhere (NFS-friendly)
    st = fleet.exec("h4", ["stat", "-c", "%U:%G %a", "/var/lib/ai-memory"]).stdout.strip()
    assert st == "aimem:aimem 750"
    with pytest.raises(KeyError):
        pwd.getpwnam("aimem")                                   # controller


def test_release_http_server_reachable_from_hosts_only(fleet, www):
    url = fleet.http_url + "/release.txt"
    want = (www / "release.txt").read_text()
    fetch = "import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    for h in ("h1", "h5"):
        assert fleet.exec(h, ["/usr/bin/python3", "-c", fetch, url]).stdout == want
    r = fleet.ansible("h2", "-m", "ansible.builtin.uri", "-a", "url=%s return_content=true" % url)
    assert want.strip() in r.stdout
    # the fleet subnet is blackholed in the controller's namespace: nothing leaves the machine
    with pytest.raises(OSError):
        socket.create_connection((fleet.controller_addr, 18080), 1).close()


def test_exec_fault_injection_kill_sshd(fleet):
    assert fleet.exec("h2", ["pkill", "-x", "sshd"]).returncode == 0
    time.sleep(0.2)
    res = fleet.ping()
    assert res["h2"] == "unreachable", res
    assert {h: s for h, s in res.items() if h != "h2"} == {h: "ok" for h in fleet.hosts if h != "h2"}
    assert fleet.exec("h2", ["hostname"]).stdout.strip() == "h2"        # host itself is still up
    assert "h2 up" in fleet.script("status").stdout
    fleet.exec("h2", ["/usr/sbin/sshd"])                                # heal
    for _ in range(30):
        if fleet.ping("h2") == {"h2": "ok"}:
            break
        time.sleep(0.2)
    assert fleet.ping() == {h: "ok" for h in fleet.hosts}


def test_link_down_partitions_a_host(fleet):
    probe = ["nc", "-z", "-w", "1", fleet.addr("h3"), "22"]
    assert fleet.exec("h1", probe, check=False).returncode == 0
    fleet.script("link", "h3", "down")
    try:
        assert fleet.exec("h1", probe, check=False).returncode == 1
    finally:
        fleet.script("link", "h3", "up")
    assert fleet.exec("h1", probe, check=False).returncode == 0


def test_errors_are_clear(fleet, tmp_path):
    # not root
    r = sh(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(FLEET_SH), "up", "1"],
           env=dict(os.environ, FLEET_NAME="flnoroot"))
    assert r.returncode == 1 and "must run as root" in r.stderr
    # a FLEET_DIR that is not ours is neither used nor deleted
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious").write_text("x")
    bad = Fleet(name="flforeign", n=1, fleet_dir=foreign)
    with pytest.raises(FleetError, match="not a fleet state dir"):
        bad.up()
    with pytest.raises(FleetError, match="not a fleet state dir"):
        bad.down()
    assert (foreign / "precious").read_text() == "x"
    assert fleet_netns("flforeign") == []
    # the subnet of a running fleet
    clash = Fleet(name="flclash", n=1, subnet=fleet.controller_addr.rsplit(".", 1)[0])
    with pytest.raises(FleetError, match="already used by fleet '%s'" % NAME):
        clash.up()
    assert fleet_netns("flclash") == []
    # bad names, missing packages (PATH without tini)
    r = sh([str(FLEET_SH), "status"], env=dict(os.environ, FLEET_NAME="Bad-Name"))
    assert r.returncode == 1 and "FLEET_NAME='Bad-Name' is invalid" in r.stderr
    farm = tmp_path / "bin"
    farm.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for p in Path(d).iterdir() if Path(d).is_dir() else ():
            if p.name != "tini" and not (farm / p.name).exists():
                (farm / p.name).symlink_to(p)
    r = sh([str(FLEET_SH), "up", "1"], env=dict(os.environ, FLEET_NAME="flnotini", PATH=str(farm)))
    assert r.returncode == 1
    assert "missing tini" in r.stderr and "apt-get install -y --no-install-recommends tini" in r.stderr


def test_second_fleet_up_twice_down_twice(fleet):
    """Parallel fleet with its own subnet; `up` is idempotent, `down` twice is fine and clean."""
    other = Fleet(name=NAME + "b", n=2)
    try:
        other.up()
        pids1 = fleet_pids(other)
        subnet = other.controller_addr.rsplit(".", 1)[0]
        assert subnet != fleet.controller_addr.rsplit(".", 1)[0]
        other.up()                                                # again: replaces the first one
        pids2 = fleet_pids(other)
        assert pids1 and pids2 and not (pids1 & pids2)
        assert not [p for p in pids1 if live(p)]
        assert other.ping() == {"h1": "ok", "h2": "ok"}
        other.exec("h1", ["touch", "/usr/local/bin/only-in-other-fleet"])
        assert fleet.exec("h1", ["test", "-e", "/usr/local/bin/only-in-other-fleet"], check=False).returncode == 1
        addrs = [other.addr(h) for h in other.hosts]
        assert any(ssh_master_alive(a) for a in addrs)            # so the check below can fail
    finally:
        other.down()
    other.down()
    assert leftovers(other, pids1 | pids2, addrs, subnet) == []
    assert wait_no_zombies(pids1 | pids2), "unshare zombies were not reaped by PID 1 within 10 s"
    assert fleet.ping("h1") == {"h1": "ok"}                        # the other fleet is untouched


def test_watchdog_downs_fleet_when_owner_dies():
    owner = subprocess.Popen(["sleep", "60"])
    f = Fleet(name=NAME + "w", n=1, owner_pid=owner.pid)
    try:
        f.up()
        pids = fleet_pids(f)
        subnet = f.controller_addr.rsplit(".", 1)[0]
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (f.fleet_dir.exists() or fleet_netns(f.name)):
            time.sleep(0.2)
        assert leftovers(f, pids, [], subnet) == []
    finally:
        owner.kill()
        f.down()


def test_zz_down_leaves_nothing_behind(fleet):
    pids = fleet.pids_at_up | fleet_pids(fleet)
    addrs = [fleet.addr(h) for h in fleet.hosts]
    subnet = fleet.controller_addr.rsplit(".", 1)[0]
    assert any(ssh_master_alive(a) for a in addrs)               # ansible left masters: down must end them
    fleet.down()
    fleet.down()                                                  # idempotent
    assert leftovers(fleet, pids, addrs, subnet) == []
    assert wait_no_zombies(pids), "unshare zombies were not reaped by PID 1 within 10 s"
    st = fleet.script("status", check=False)
    assert st.returncode == 3 and "is down" in st.stdout
