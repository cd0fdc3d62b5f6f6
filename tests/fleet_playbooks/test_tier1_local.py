"""Tier 1: one developer upgrades their own install with `-i localhost, -c local -e aimem_tier=user`.

The run happens INSIDE a test host, as an unprivileged user `dev` (no become, no root): binary in
~/.local/bin, DB in ~/.claude/ai-memory.db, a shell-launched `ai-memory serve` with a pidfile in
~/.local/state (the guide's "pkill -INT ai-memory" case), env file ~/.config/ai-memory/env.
"""
import base64
import glob
import json
import os
import shlex

import pytest

from rolelib import ROOT, SeededFleet

HOME = "/home/dev"
BIN = HOME + "/.local/bin/ai-memory"
DB = HOME + "/.claude/ai-memory.db"
CFG = HOME + "/.config/ai-memory/config.toml"
PIDFILE = HOME + "/.local/state/ai-memory/ai-memory.pid"
CONFIG_V1 = """# my ai-memory (v0.6.4)
db = "%s"
tier = "semantic"
llm_model = "gemma3:4b"
ollama_url = "http://127.0.0.1:11434"
""" % DB


def _as_dev(sf, cmd, check=True, timeout=600):
    return sf.exec("h1", "runuser -u dev -- env -i HOME=%s PATH=/usr/bin:/bin %s" % (HOME, cmd),
                   check=check, timeout=timeout)


@pytest.fixture(scope="module")
def sf():
    s = SeededFleet("fptier1", 1, seed=False, rows=120)
    h = "h1"
    s.exec(h, "useradd -m -d %s -s /bin/sh dev" % HOME)
    with open(os.path.join(s.out, "bin", "ai-memory-0.6.4"), "rb") as f:
        blob = base64.b64encode(f.read()).decode()
    s.exec(h, "base64 -d > /var/tmp/ai-memory-0.6.4", input=blob)
    s.exec(h, "mkdir -p %s/.local/bin %s/.claude %s/.config/ai-memory %s/.local/state/ai-memory" % ((HOME,) * 4))
    setup = " && ".join([
        "install -m 0755 /var/tmp/ai-memory-0.6.4 %s" % BIN,
        "/usr/bin/python3 %s/tests/standin/gen_db.py %s --rows 120 --seed 7" % (ROOT, DB),
        "chmod 0600 %s" % DB,
        "/sbin/start-stop-daemon --start --quiet --background --make-pidfile --pidfile %s --chdir %s "
        "--output %s/ai-memory.log --startas %s -- serve" % (PIDFILE, HOME, HOME, BIN),
    ])
    s.exec(h, "cat > %s" % CFG, input=CONFIG_V1)
    # the user's local Ollama (doctor's LLM section probes it)
    s.exec(h, "/sbin/start-stop-daemon --start --quiet --background --make-pidfile --pidfile /run/fake-ollama.pid "
              "--startas /usr/bin/python3 -- %s/tests/standin/fake_llm.py --port 11434" % ROOT)
    s.exec(h, "chown -R dev:dev %s && runuser -u dev -- env -i HOME=%s PATH=/usr/bin:/bin sh -c %s; rc=$?; "
           "rm -f /var/tmp/ai-memory-0.6.4; exit $rc" % (HOME, HOME, shlex.quote(setup)))
    s.exec(h, "for i in $(seq 50); do curl -sf http://127.0.0.1:9077/api/v1/health && exit 0; sleep 0.2; done; exit 1")
    s.memories = s.sql(h, DB, "SELECT id || '|' || content FROM memories ORDER BY id")
    yield s
    s.down()


def _upgrade(sf, *args):
    extra = {"aimem_tier": "user", "aimem_service_manager": "process",
             "aimem_release_base_url": sf.fleet.http_url, "aimem_release_allow_insecure_url": True,
             "aimem_release_sha256": sf.pins["0.7.0"], "aimem_controller_dir": HOME + "/aimem-fleet",
             "ansible_python_interpreter": "/usr/bin/python3"}
    # The user's own Python runs the controller side: the project venv's interpreter may live under
    # /root (pyenv), which an unprivileged user cannot execute; its site-packages are readable.
    site = glob.glob(os.path.join(ROOT, ".venv", "lib", "python3*", "site-packages"))[0]
    cmd = ("ANSIBLE_CONFIG=%s/ansible.cfg ANSIBLE_HOME=%s/.ansible ANSIBLE_NOCOLOR=1 PYTHONPATH=%s "
           "/usr/bin/python3 %s/.venv/bin/ansible-playbook -i localhost, -c local aimem.fleet.upgrade -e %s %s"
           % (ROOT, HOME, site, ROOT, shlex.quote(json.dumps(extra)), " ".join(args)))
    return _as_dev(sf, "sh -c %s" % shlex.quote("cd %s && %s" % (HOME, cmd)), check=False, timeout=900)


def test_tier1_user_upgrades_own_install_with_local_connection(sf):
    r = _upgrade(sf)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "localhost                  : ok=" in r.stdout
    assert _as_dev(sf, BIN + " --version").stdout.strip() == "ai-memory 0.7.0"
    assert sf.sql("h1", DB, "SELECT max(version) FROM schema_version") == "54"
    assert sf.sql("h1", DB, "SELECT id || '|' || content FROM memories ORDER BY id") == sf.memories
    assert "schema_version = 2" in sf.exec("h1", ["cat", CFG]).stdout
    # the user's own env file and work dir, nothing written as root or under /root
    env = sf.exec("h1", "stat -c '%U %a' " + HOME + "/.config/ai-memory/env").stdout.split()
    assert env[0] == "dev" and int(env[1], 8) & 0o007 == 0
    assert sf.exec("h1", "find %s -not -user dev | head -5" % HOME).stdout.strip() == ""
    assert sf.exec("h1", "ls -A /root").stdout.split() == [".bash_logout", ".bashrc", ".profile", ".ssh"]
    assert sf.exec("h1", "find / -xdev -path /proc -prune -o -name '*ai-memory*' -user root -newer %s -print" % CFG,
                   check=False).stdout.strip() == ""
    # the daemon runs as dev on 0.7.0 with the staged posture from the user's env file
    pid = sf.exec("h1", "cat " + PIDFILE).stdout.strip()
    assert sf.exec("h1", "stat -c %U /proc/" + pid).stdout.strip() == "dev"
    penv = sf.exec("h1", "tr '\\0' '\\n' < /proc/%s/environ" % pid).stdout
    assert "AI_MEMORY_PERMISSIONS_MODE=advisory" in penv.splitlines()
    assert '"0.7.0"' in sf.exec("h1", "curl -s http://127.0.0.1:9077/api/v1/health").stdout
    with open_report(sf) as rep:
        row = rep["hosts"][0]
    assert row["host"] == "localhost" and row["status"] == "upgraded" and row["digest_equal"] is True
    r2 = _upgrade(sf)
    assert r2.returncode == 0 and "changed=0" in r2.stdout.split("PLAY RECAP")[-1], r2.stdout[-4000:]


class open_report(object):
    def __init__(self, sf):
        self.sf = sf

    def __enter__(self):
        return json.loads(self.sf.exec("h1", "cat %s/aimem-fleet/report/latest/report.json" % HOME).stdout)

    def __exit__(self, *exc):
        return False
