"""aimem.fleet.aimem_info through real ``ansible-playbook -c local`` runs against a running stand-in
``ai-memory serve`` (0.6.4) and the 0.7.0 build. Every assertion is checked against the files and
the process themselves; the run must change nothing (digests before/after)."""
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import ROOT, run_playbook

STANDIN = os.path.join(ROOT, "tests", "standin")
if STANDIN not in sys.path:
    sys.path.insert(0, STANDIN)


def _load(name, filename):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(STANDIN, filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


standin_build = _load("aimem_standin_build_for_info_tests", "build.py")
import gen_db  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return standin_build.build_all(str(tmp_path_factory.mktemp("standin")))


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _tree(*roots):
    """{path: sha256 | 'dir'} of every file under the roots (-shm excluded: readers may touch it)."""
    out = {}
    for root in roots:
        for d, dirs, files in os.walk(root):
            for n in dirs:
                out[os.path.join(d, n)] = "dir"
            for n in files:
                p = os.path.join(d, n)
                if p.endswith("-shm") or n == "daemon.log":
                    continue
                with open(p, "rb") as f:
                    out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


class Install(object):
    """A service HOME with a tilde-trap config, its data under <cwd>/~/.claude, and a running daemon."""

    def __init__(self, root, built):
        self.root = root
        self.home = str(root / "svc")
        self.cwd = str(root / "daemon-cwd")
        self.work = os.path.join(self.home, ".aimem-fleet")
        self.cfg = os.path.join(self.home, ".config", "ai-memory", "config.toml")
        os.makedirs(os.path.dirname(self.cfg))
        os.makedirs(self.work, mode=0o700)
        self.real_db = os.path.join(self.cwd, "~", ".claude", "ai-memory.db")
        os.makedirs(os.path.dirname(self.real_db))
        gen_db.generate(self.real_db, 60, pending=0)
        with open(self.cfg, "w") as f:
            f.write('db = "~/.claude/ai-memory.db"\ntier = "semantic"\n')
        self.env_file = str(root / "env")
        with open(self.env_file, "w") as f:
            f.write("# the daemon does not load this file in the test\nAI_MEMORY_LLM_API_KEY=sk-never-returned\n")
        self.binary = built["named_bins"]["0.6.4"]
        self.pidfile = str(root / "ai-memory.pid")
        self.port = _free_port()
        self.proc = None

    def start(self):
        env = standin_build.clean_env(self.home)
        self.proc = subprocess.Popen([self.binary, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                     cwd=self.cwd, env=env, stdout=open(str(self.root / "daemon.log"), "w"),
                                     stderr=subprocess.STDOUT)
        with open(self.pidfile, "w") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/health" % self.port, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("stand-in daemon did not come up: %s" % (self.root / "daemon.log").read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)

    def args(self, **kw):
        a = {"binary": self.binary, "service_user": "root", "home": self.home, "env_files": [self.env_file],
             "pidfile": self.pidfile, "work_dir": self.work}
        a.update(kw)
        return a


def _t(name, args, **extra):
    task = {"name": name, "aimem.fleet.aimem_info": args, "ignore_errors": True}
    task.update(extra)
    return task


def test_running_daemon_tilde_trap_check_mode_and_nothing_changes(tmp_path, built):
    inst = Install(tmp_path, built)
    inst.start()
    try:
        before = _tree(inst.home, inst.cwd)
        r = run_playbook(tmp_path, [
            _t("check", inst.args(), check_mode=True),
            _t("real", inst.args()),
            _t("by scan", inst.args(pidfile=str(tmp_path / "no.pid"))),
            _t("070 build", inst.args(binary=built["named_bins"]["0.7.0"])),
        ])
        after = _tree(inst.home, inst.cwd)
    finally:
        inst.stop()
    assert r.rc == 0, r.output
    assert before == after, "aimem_info changed files"
    for name in ("check", "real"):
        res = r.task(name)
        assert res.get("failed") is not True, res.get("msg")
        assert res["changed"] is False
        d = res["daemon"]
        assert d["running"] and d["pid"] == inst.proc.pid and d["source"] == "proc"
        assert d["cwd"] == inst.cwd and d["home"] == inst.home and d["serve_port"] == str(inst.port)
        db = res["db"]
        assert db["path"] == inst.real_db and db["source"] == "config db" and db["exists"]
        assert db["v070_path"] == os.path.join(inst.home, ".claude", "ai-memory.db")
        assert db["pin_env"] is True and db["tilde_trap"] is True
        assert db["schema_version"] == 20 and db["counts"]["memories"] == 60
        assert db["size"] == os.path.getsize(inst.real_db)
        assert res["binary"]["version"] == "0.6.4" and res["binary"]["capabilities"]["config_migrate"] is False
        with open(inst.binary, "rb") as f:
            assert res["binary"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
        assert res["binary_below_target"] is True
        assert res["service_user"]["home_matches"] is False  # root's passwd home is not the test HOME
        assert res["config"]["parses"] is True and res["config"]["api_key_present"] is False
        assert res["bind_needs_api_key"] is False and res["bind"]["host"] == "127.0.0.1"
        assert res["disk"]["enough"] is True
        assert res["env_files"][0]["keys"] == ["AI_MEMORY_LLM_API_KEY"]
        assert "tilde trap" in res["msg"]
    assert "sk-never-returned" not in r.stdout + open(r.playbook).read()
    assert r.task("by scan")["daemon"]["pid"] == inst.proc.pid
    # with 0.7.0 installed the expanded path is the one it opens - it does not exist: refused, nothing made
    # (the pidfile names the daemon: after a binary swap it still runs the old build)
    res = r.task("070 build")
    assert r.status("070 build") == "ignored", res
    assert inst.home + "/.claude/ai-memory.db" in res["msg"] and "does not exist" in res["msg"]
    assert "a DB exists at %s" % inst.real_db in res["msg"] and "fix:" in res["msg"]
    assert not os.path.exists(os.path.join(inst.home, ".claude"))
    assert os.listdir(inst.work) == []


def test_missing_db_broken_config_and_keyless_bind_without_daemon(tmp_path, built):
    home = tmp_path / "svc"
    (home / ".config" / "ai-memory").mkdir(parents=True)
    cfg = home / ".config" / "ai-memory" / "config.toml"
    cfg.write_text('db = "%s/data/ai-memory.db"\napi_key = "sk-top-secret"\n[llm\n' % home)
    envf = tmp_path / "env"
    envf.write_text("AI_MEMORY_DB=%s/data/ai-memory.db\n" % home)
    base = {"binary": built["named_bins"]["0.6.4"], "service_user": "root", "home": str(home),
            "env_files": [str(envf)], "serve_args": ["/usr/local/bin/ai-memory", "serve", "--host", "0.0.0.0"]}
    r = run_playbook(tmp_path, [_t("missing", base)])
    res = r.task("missing")
    assert r.status("missing") == "ignored", res
    assert "%s/data/ai-memory.db" % home in res["msg"] and "AI_MEMORY_DB from %s" % envf in res["msg"]
    assert "fix:" in res["msg"] and not (home / "data").exists()
    (home / "data").mkdir()
    gen_db.generate(str(home / "data" / "ai-memory.db"), 10, pending=0)
    before = _tree(str(home))
    r = run_playbook(tmp_path, [_t("present", base)], check=True)
    assert _tree(str(home)) == before
    res = r.task("present")
    assert res.get("failed") is not True, res.get("msg")
    assert res["db"]["source"] == "AI_MEMORY_DB from %s" % envf and res["db"]["pin_env"] is False
    assert res["config"]["parses"] is False and res["config"]["error_line"] == 3
    # the broken config is not loaded: no api_key, and the keyless 0.0.0.0 bind would be refused by 0.7.0
    assert res["bind_needs_api_key"] is True and res["daemon"]["source"] == "serve_args"
    assert "sk-top-secret" not in r.stdout
    assert any("does not parse" in w for w in res.get("warnings", []))
