"""Run real ``ansible-playbook`` against localhost and get parsed per-task results.

Usage::

    from helpers import run_playbook          # tests/integration is on sys.path under pytest
    r = run_playbook(tmp_path, [{"name": "m", "aimem.fleet.aimem_config_migrate": {"path": p}}],
                     check=True, diff=True)
    assert r.rc == 0
    assert r.task("m")["changed"] is True
    assert "--- before" in r.stdout

``play_yaml_or_tasks`` is a full playbook (YAML text, or a list of plays as Python data) or a list
of tasks (wrapped into one play on ``localhost`` with ``connection: local``, ``gather_facts: false``).
stdout keeps the normal human output (so diffs and ``-v`` output can be asserted); parsed results
come from the test-only ``callback_plugins/aimem_results.py`` callback (JSON lines, one per task
result and host).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")
CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")
TARGET_PYTHON = "/usr/bin/python3"

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None


class PlaybookResult(object):
    """``rc``, ``stdout``, ``stderr``, ``results`` (list of dicts with play/task/host/status/result)."""

    def __init__(self, rc, stdout, stderr, results, playbook, cmd):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.results = results
        self.playbook = playbook
        self.cmd = cmd

    def tasks(self, name, host=None):
        """Every recorded result (the ``result`` dicts) of task ``name`` (optionally on ``host``)."""
        return [r["result"] for r in self.results
                if r["task"] == name and (host is None or r["host"] == host)]

    def task(self, name, host=None):
        """The single result dict of task ``name``; AssertionError if it ran 0 or >1 times."""
        found = self.tasks(name, host)
        assert len(found) == 1, "task %r ran %d times; recorded: %s\n%s" % (
            name, len(found), [r["task"] for r in self.results], self.output)
        return found[0]

    def status(self, name, host=None):
        found = [r["status"] for r in self.results
                 if r["task"] == name and (host is None or r["host"] == host)]
        assert len(found) == 1, "task %r ran %d times" % (name, len(found))
        return found[0]

    @property
    def output(self):
        return "rc=%s\n--- stdout\n%s\n--- stderr\n%s" % (self.rc, self.stdout, self.stderr)

    def __repr__(self):
        return "PlaybookResult(rc=%r, %d results)" % (self.rc, len(self.results))


def _as_playbook_text(play_yaml_or_tasks):
    if isinstance(play_yaml_or_tasks, str):
        return play_yaml_or_tasks
    data = list(play_yaml_or_tasks)
    if not data or not any("hosts" in d for d in data if isinstance(d, dict)):
        data = [{"name": "aimem test play", "hosts": "localhost", "connection": "local",
                 "gather_facts": False, "tasks": data}]
    # JSON is valid YAML, and avoids a hard dependency on PyYAML's dumper.
    if yaml is not None:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return json.dumps(data, indent=2)


_counter = [0]


def run_playbook(tmp_path, play_yaml_or_tasks, check=False, diff=False, extra_args=(), env=None,
                 inventory="localhost,", timeout=300):
    """Write the playbook under ``tmp_path``, run ``ansible-playbook`` with cwd=repo root.

    ``env`` entries are added to (not replacing) the environment; a value of None removes the
    variable. The target interpreter is ``/usr/bin/python3`` (Debian's, with python3-tomlkit).
    """
    _counter[0] += 1
    n = _counter[0]
    tmp = str(tmp_path)
    pb = os.path.join(tmp, "playbook-%d.yml" % n)
    results_file = os.path.join(tmp, "results-%d.jsonl" % n)
    with open(pb, "w") as f:
        f.write(_as_playbook_text(play_yaml_or_tasks))
    run_env = dict(os.environ)
    run_env.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_HOME": os.path.join(ROOT, ".ansible"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_DIR,
        "ANSIBLE_CALLBACKS_ENABLED": "aimem_results",
        "ANSIBLE_LOCAL_TEMP": os.path.join(tmp, ".ansible-local"),
        "ANSIBLE_REMOTE_TEMP": os.path.join(tmp, ".ansible-remote"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "AIMEM_RESULTS_FILE": results_file,
    })
    for k, v in (env or {}).items():
        if v is None:
            run_env.pop(k, None)
        else:
            run_env[k] = str(v)
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, "-c", "local",
           "-e", "ansible_python_interpreter=%s" % TARGET_PYTHON, pb]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    cmd.extend(extra_args)
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)
    results = []
    if os.path.exists(results_file):
        with open(results_file) as f:
            results = [json.loads(line) for line in f if line.strip()]
    return PlaybookResult(proc.returncode, proc.stdout, proc.stderr, results, pb, cmd)


if __name__ == "__main__":  # pragma: no cover - manual smoke test
    import tempfile
    d = tempfile.mkdtemp()
    r = run_playbook(d, [{"name": "ping", "ansible.builtin.ping": {}}])
    print(r.rc, r.task("ping"))
    sys.exit(r.rc)
