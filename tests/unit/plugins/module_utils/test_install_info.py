"""Unit tests of module_utils/install_info.py: DB path resolution (facts 2.7, tilde trap both ways),
/proc parsing against a fake proc root, config parsing, bind guard (5.4), triple mapping (7)."""
import os
import sqlite3

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import install_info as I

ME = os.getuid()


# ------------------------------------------------------------------------------------ helpers
def make_db(path, version=20, table=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE memories (id TEXT PRIMARY KEY, namespace TEXT, content TEXT, metadata TEXT)")
    conn.execute("INSERT INTO memories VALUES ('a','n1','x','{}'), ('b','n2','y','{}')")
    if table:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.commit()
    conn.close()


def fake_proc(root, pid, argv, environ=None, cwd=None, comm="ai-memory", exe=None):
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    if environ is not None:
        (d / "environ").write_bytes(b"\0".join(("%s=%s" % kv).encode() for kv in environ.items()) + b"\0")
    if cwd:
        os.symlink(cwd, str(d / "cwd"))
    if exe:
        os.symlink(exe, str(d / "exe"))
    return d


def fake_binary(path, version="0.6.4", config_rc=2):
    """A shell stand-in for --version / config --help that also writes the preamble's template."""
    path.write_text(
        "#!/bin/sh\nmkdir -p \"$HOME/.config/ai-memory\" && echo '# template' > \"$HOME/.config/ai-memory/config.toml\"\n"
        "case \"$1\" in --version) echo 'ai-memory %s' ;; config) [ %d = 0 ] && exit 0;"
        " echo \"error: unrecognized subcommand 'config'\" >&2; exit 2 ;; esac\n" % (version, config_rc))
    path.chmod(0o755)
    return str(path)


def runner(calls):
    import subprocess

    def run(argv, cwd, env):
        calls.append((list(argv), cwd, dict(env)))
        p = subprocess.run(argv, cwd=cwd, env=dict(os.environ, **env), capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr
    return run


# ------------------------------------------------------------------------------------ triple
@pytest.mark.parametrize("machine,system,triple", [
    ("x86_64", "Linux", "x86_64-unknown-linux-gnu"),
    ("aarch64", "Linux", "aarch64-unknown-linux-gnu"),
    ("arm64", "Darwin", "aarch64-apple-darwin"),
    ("x86_64", "Darwin", "x86_64-apple-darwin"),
    ("amd64", "linux", "x86_64-unknown-linux-gnu"),
])
def test_triple_mapping(machine, system, triple):
    assert I.map_triple(machine, system) == triple


@pytest.mark.parametrize("machine,system", [("armv7l", "Linux"), ("x86_64", "FreeBSD"), ("riscv64", "Linux"),
                                            ("", "")])
def test_triple_unknown_platform_fails_clearly(machine, system):
    with pytest.raises(I.InfoError) as e:
        I.map_triple(machine, system)
    assert repr(machine) in str(e.value) and repr(system) in str(e.value)
    assert "source" in e.value.hint


# ------------------------------------------------------------------------------------ DB path
def test_tilde_trap_v064_installed_real_file_is_the_literal_one(tmp_path):
    home, cwd = str(tmp_path / "home"), str(tmp_path / "cwd")
    r = I.resolve_db(config_db="~/.claude/ai-memory.db", cwd=cwd, home=home, installed_version="0.6.4")
    assert r["v064_path"] == os.path.join(cwd, "~", ".claude", "ai-memory.db")
    assert r["v070_path"] == os.path.join(home, ".claude", "ai-memory.db")
    assert r["path"] == r["v064_path"] and r["source"] == "config db" and r["resolved_for"] == "0.6.x"
    assert r["tilde_trap"] is True and r["pin_env"] is True
    assert r["exists"] is False
    make_db(r["v064_path"])
    r = I.resolve_db(config_db="~/.claude/ai-memory.db", cwd=cwd, home=home, installed_version="0.6.4")
    assert r["exists"] and r["v064_exists"] and not r["v070_exists"]


def test_tilde_trap_v070_installed_real_file_is_the_expanded_one(tmp_path):
    home, cwd = str(tmp_path / "home"), str(tmp_path / "cwd")
    r = I.resolve_db(config_db="~/.claude/ai-memory.db", cwd=cwd, home=home, installed_version="0.7.0")
    assert r["path"] == os.path.join(home, ".claude", "ai-memory.db") and r["resolved_for"] == "0.7.0"
    assert r["other_candidate"] == os.path.join(cwd, "~", ".claude", "ai-memory.db")
    assert r["pin_env"] is True


def test_no_trap_for_absolute_config_db_env_or_cwd_default(tmp_path):
    home, cwd = str(tmp_path / "home"), str(tmp_path / "cwd")
    r = I.resolve_db(config_db="/data/a.db", cwd=cwd, home=home, installed_version="0.6.4")
    assert r["path"] == "/data/a.db" and not r["pin_env"] and r["other_candidate"] is None


def test_env_wins_over_config_and_literal_default_falls_through(tmp_path):
    home, cwd = str(tmp_path / "home"), str(tmp_path / "cwd")
    r = I.resolve_db(env_db="/srv/x.db", config_db="~/y.db", cwd=cwd, home=home, installed_version="0.6.4",
                     env_origin="AI_MEMORY_DB from /etc/ai-memory/env")
    assert r["path"] == "/srv/x.db" and r["source"] == "AI_MEMORY_DB from /etc/ai-memory/env"
    assert not r["pin_env"]
    # the literal `ai-memory.db` in env/flag is "not given": config db is used
    r = I.resolve_db(env_db="ai-memory.db", config_db="/cfg.db", cwd=cwd, home=home, installed_version="0.6.4")
    assert r["path"] == "/cfg.db" and r["source"] == "config db"
    # flag beats env; no tilde expansion of a flag value either way
    r = I.resolve_db(db_flag="~/f.db", env_db="/e.db", cwd=cwd, home=home, installed_version="0.7.0",
                     flag_origin="--db of the running daemon (pid 7)")
    assert r["path"] == os.path.join(cwd, "~", "f.db") and r["source"] == "--db of the running daemon (pid 7)"
    assert not r["pin_env"]
    # nothing given: ai-memory.db in the CWD
    r = I.resolve_db(cwd=cwd, home=home, installed_version="0.6.4")
    assert r["path"] == os.path.join(cwd, "ai-memory.db") and r["source"] == "default (CWD)"
    # explicit db option is used as given (relative to the cwd)
    r = I.resolve_db(explicit="rel/z.db", env_db="/e.db", cwd=cwd, home=home, installed_version="0.6.4")
    assert r["path"] == os.path.join(cwd, "rel", "z.db") and r["source"] == "db option"


# ------------------------------------------------------------------------------------ /proc
def test_parse_argv_shapes():
    a = I.parse_argv(["/usr/bin/python3", "/usr/local/bin/ai-memory", "--db", "/d.db", "serve", "--host",
                      "0.0.0.0", "--port=9100"])
    assert a == {"binary": "/usr/local/bin/ai-memory", "db": "/d.db", "subcommand": "serve",
                 "host": "0.0.0.0", "port": "9100"}
    a = I.parse_argv(["ai-memory", "--agent-id", "serve", "serve", "--db=/x.db"])
    assert a["subcommand"] == "serve" and a["db"] == "/x.db" and a["host"] is None
    a = I.parse_argv(["ai-memory", "mcp", "--host", "h"])
    assert a["subcommand"] == "mcp" and a["host"] is None
    assert I.parse_argv(["/bin/sleep", "10"])["binary"] is None


def test_find_daemons_by_pidfile_and_scan_reads_argv_env_cwd(tmp_path):
    proc = tmp_path / "proc"
    binary = str(tmp_path / "ai-memory")
    open(binary, "w").close()
    data = tmp_path / "data"
    data.mkdir()
    fake_proc(proc, 4242, ["/usr/bin/python3", binary, "serve", "--host", "0.0.0.0"],
              environ={"AI_MEMORY_DB": "/srv/real.db", "HOME": "/var/lib/ai-memory", "AI_MEMORY_API_KEY": "sk-secret"},
              cwd=str(data))
    fake_proc(proc, 100, ["/usr/bin/python3", "/other/ai-memory", "serve"], environ={}, cwd="/")  # another install
    fake_proc(proc, 101, ["/usr/bin/python3", binary, "mcp"], environ={}, cwd="/")  # not serve
    fake_proc(proc, 102, ["sleep", "5"], comm="sleep")
    # scan
    d = I.find_daemons(str(proc), None, binary, ME)
    assert d["running"] and d["pid"] == 4242 and d["pids"] == [4242] and d["others"] == 1
    p = d["process"]
    assert p["host"] == "0.0.0.0" and p["cwd"] == str(data) and p["home"] == "/var/lib/ai-memory"
    assert p["env"] == {"AI_MEMORY_DB": "/srv/real.db"}  # never any other value (secrets)
    # pidfile wins even for another binary path
    pf = tmp_path / "ai-memory.pid"
    pf.write_text("100\n")
    d = I.find_daemons(str(proc), str(pf), binary, ME)
    assert d["pid"] == 100 and d["pids"] == [100, 4242] and d["pidfile_stale"] is False
    # stale pidfile (not a serve process)
    pf.write_text("102\n")
    d = I.find_daemons(str(proc), str(pf), binary, ME)
    assert d["pidfile_stale"] and d["pid"] == 4242
    # wrong uid: not this install's daemon
    d = I.find_daemons(str(proc), None, binary, ME + 1)
    assert not d["running"] and d["others"] == 2
    # junk pidfile
    pf.write_text("nope")
    assert "does not hold a pid" in I.find_daemons(str(proc), str(pf), binary, ME)["pidfile_error"]


def test_env_files_merge_in_order_and_only_relevant_keys_reported(tmp_path):
    a = tmp_path / "a"
    a.write_text("# comment\nexport AI_MEMORY_DB='/one.db'\nAI_MEMORY_LLM_API_KEY=sk-x\n junk line\n")
    b = tmp_path / "b"
    b.write_text('AI_MEMORY_DB="/two.db"\nAI_MEMORY_REQUIRE_API_KEY=1\n')
    env, files = I.read_env_files([str(a), str(b), str(tmp_path / "missing")])
    assert env["AI_MEMORY_DB"] == "/two.db"
    assert I.relevant_env(env) == {"AI_MEMORY_DB": "/two.db", "AI_MEMORY_REQUIRE_API_KEY": "1"}
    assert files[0]["keys"] == ["AI_MEMORY_DB", "AI_MEMORY_LLM_API_KEY"] and files[2]["exists"] is False


# ------------------------------------------------------------------------------------ config
def test_config_parse_error_names_the_line():
    c = I.parse_config_text('db = "/x.db"\ntier = "semantic"\nthis is broken\n')
    assert c["parses"] is False and c["error_line"] == 3 and "line 3" in c["error"]


def test_config_parse_error_with_tomlkit_names_the_line():
    tomlkit = pytest.importorskip("tomlkit")
    c = I.parse_config_text('db = "/x.db"\n[llm\n', loads=tomlkit.loads)
    assert c["parses"] is False and c["error_line"] == 2


@pytest.mark.parametrize("use_tomlkit", [False, True])
def test_config_facts_never_carry_secrets(use_tomlkit):
    loads = pytest.importorskip("tomlkit").loads if use_tomlkit else None
    text = 'db = "~/.claude/ai-memory.db"\napi_key = "sk-top"\nschema_version = 2\n[llm]\napi_key = "sk-llm"\n'
    c = I.parse_config_text(text, loads=loads)
    assert c == {"parses": True, "error": None, "error_line": None, "db": "~/.claude/ai-memory.db",
                 "api_key_present": True, "schema_version": 2, "llm_api_key_inline": True}
    assert "sk-" not in repr(c)
    c = I.parse_config_text('tier = "semantic"\n[llm]\napi_key_env = "X"\n', loads=loads)
    assert c["schema_version"] == 1 and not c["api_key_present"] and not c["llm_api_key_inline"]
    assert c["db"] is None


def test_read_config_missing_and_unreadable(tmp_path):
    c = I.read_config(str(tmp_path / "nope.toml"))
    assert c["exists"] is False and c["parses"] is None
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    c = I.read_config(str(bad))
    assert c["parses"] is False and str(bad) in c["error"]


# ------------------------------------------------------------------------------------ bind
@pytest.mark.parametrize("host,key,req,needs", [
    (None, False, None, False), ("127.0.0.1", False, None, False), ("localhost", False, None, False),
    ("::1", False, None, False), ("0.0.0.0", False, None, True), ("0.0.0.0", True, None, False),
    ("10.0.0.5", False, None, True), ("127.0.0.1", False, "1", True), ("127.0.0.1", False, "TRUE", True),
    ("127.0.0.1", False, "yes", False), ("127.0.0.1", True, "1", False),
])
def test_bind_needs_api_key(host, key, req, needs):
    assert I.bind_check(host, key, req)["needs_api_key"] is needs


# ------------------------------------------------------------------------------------ gather
def _service(tmp_path):
    home = tmp_path / "svc"
    (home / ".config" / "ai-memory").mkdir(parents=True)
    work = home / ".aimem-fleet"
    work.mkdir()
    return home, work


def test_gather_tilde_trap_from_the_running_daemon(tmp_path):
    home, work = _service(tmp_path)
    cwd = tmp_path / "daemon-cwd"
    make_db(str(cwd / "~" / ".claude" / "ai-memory.db"), version=20)
    (home / ".config" / "ai-memory" / "config.toml").write_text('db = "~/.claude/ai-memory.db"\n')
    binary = fake_binary(tmp_path / "ai-memory")
    envf = tmp_path / "env"
    envf.write_text("AI_MEMORY_DB=/not/used/while/the/daemon/runs.db\n")
    proc = tmp_path / "proc"
    fake_proc(proc, 77, ["/usr/bin/python3", binary, "serve"], environ={"HOME": str(home)}, cwd=str(cwd))
    calls = []
    res, warns = I.gather(binary, "root" if ME == 0 else os.environ.get("USER", "root"), runner(calls),
                          home=str(home), env_files=[str(envf)], work_dir=str(work), proc=str(proc),
                          uname=("x86_64", "Linux"))
    db = res["db"]
    assert db["path"] == str(cwd / "~" / ".claude" / "ai-memory.db") and db["source"] == "config db"
    assert db["v070_path"] == str(home / ".claude" / "ai-memory.db")
    assert db["pin_env"] is True and db["exists"] and db["schema_version"] == 20 and db["schema_known"]
    assert db["counts"]["memories"] == 2 and db["counts"]["namespaces"] == 2
    assert res["daemon"]["running"] and res["daemon"]["pid"] == 77 and res["daemon"]["source"] == "proc"
    assert res["binary"]["version"] == "0.6.4" and res["binary"]["capabilities"] == {"config_migrate": False}
    assert res["binary_below_target"] is True and res["triple"] == "x86_64-unknown-linux-gnu"
    # probes ran with HOME in a scratch dir under the work dir, which is gone again
    assert all(c[2]["HOME"].startswith(str(work) + os.sep) for c in calls)
    assert os.listdir(str(work)) == [] and not (home / ".claude").exists()
    assert (home / ".config" / "ai-memory" / "config.toml").read_text() == 'db = "~/.claude/ai-memory.db"\n'


def test_gather_env_file_wins_over_config_without_daemon_and_reports_unknown_schema(tmp_path):
    home, work = _service(tmp_path)
    make_db(str(tmp_path / "real.db"), version=60)
    (home / ".config" / "ai-memory" / "config.toml").write_text('db = "/elsewhere.db"\n')
    envf = tmp_path / "env"
    envf.write_text("AI_MEMORY_DB=%s\n" % (tmp_path / "real.db"))
    res, warns = I.gather(fake_binary(tmp_path / "ai-memory", "0.7.0", 0), "root", runner([]), home=str(home),
                          env_files=[str(envf)], work_dir=str(work), proc=str(tmp_path / "noproc"),
                          pidfile=str(tmp_path / "none.pid"), uname=("aarch64", "Linux"))
    assert res["db"]["path"] == str(tmp_path / "real.db")
    assert res["db"]["source"] == "AI_MEMORY_DB from %s" % envf
    assert res["db"]["schema_version"] == 60 and res["db"]["schema_known"] is False
    assert any("v60" in w for w in warns)
    assert res["binary"]["capabilities"] == {"config_migrate": True} and res["binary_below_target"] is False
    assert not res["daemon"]["running"]


def test_gather_cwd_default_and_missing_db_fails_naming_file_and_other_candidate(tmp_path):
    home, work = _service(tmp_path)
    binary = fake_binary(tmp_path / "ai-memory")
    # no env, no config db: ai-memory.db in HOME (no daemon cwd)
    make_db(str(home / "ai-memory.db"))
    res, _ = I.gather(binary, "root", runner([]), home=str(home), work_dir=str(work), proc=str(tmp_path / "np"),
                      uname=("x86_64", "Linux"))
    assert res["db"]["path"] == str(home / "ai-memory.db") and res["db"]["source"] == "default (CWD)"
    os.unlink(str(home / "ai-memory.db"))
    # the v0.7.0 candidate exists but v0.6.4 opens the literal one: refuse and say so
    (home / ".config" / "ai-memory" / "config.toml").write_text('db = "~/d.db"\n')
    make_db(str(home / "d.db"))
    with pytest.raises(I.InfoError) as e:
        I.gather(binary, "root", runner([]), home=str(home), work_dir=str(work), proc=str(tmp_path / "np"),
                 uname=("x86_64", "Linux"))
    msg = str(e.value)
    assert os.path.join(str(home), "~", "d.db") in msg and "does not exist" in msg
    assert "a DB exists at %s" % (home / "d.db") in msg and "aimem_db_path" in e.value.hint
    assert e.value.result["db"]["pin_env"] is True
    assert not os.path.exists(os.path.join(str(home), "~"))  # nothing created


def test_gather_no_schema_table_and_disk_and_bind(tmp_path):
    home, work = _service(tmp_path)
    make_db(str(home / "ai-memory.db"), table=False)
    (home / ".config" / "ai-memory" / "config.toml").write_text("broken = \n")
    res, warns = I.gather(fake_binary(tmp_path / "ai-memory"), "root", runner([]), home=str(home),
                          work_dir=str(work), proc=str(tmp_path / "np"), serve_args=["serve", "--host", "0.0.0.0"],
                          snapshot_dir=str(tmp_path / "not" / "yet"), uname=("x86_64", "Linux"))
    assert res["db"]["schema_table"] is False and res["db"]["schema_version"] is None
    assert res["config"]["parses"] is False and res["config"]["error_line"] == 1
    assert res["bind_needs_api_key"] is True and res["daemon"]["source"] == "serve_args"
    assert res["disk"]["checked_dir"] == str(tmp_path) and res["disk"]["enough"] is True
    assert res["disk"]["needed"] == int(res["db"]["size"] * 1.05) + 16 * 1024 * 1024
    assert any("schema_version table" in w for w in warns) and any("does not parse" in w for w in warns)


def test_gather_missing_binary_is_reported_not_guessed(tmp_path):
    home, work = _service(tmp_path)
    make_db(str(home / "ai-memory.db"))
    res, _ = I.gather(str(tmp_path / "absent"), "root", runner([]), home=str(home), work_dir=str(work),
                      proc=str(tmp_path / "np"), uname=("x86_64", "Linux"))
    assert res["binary"]["exists"] is False and res["binary"]["version"] is None
    assert res["binary_below_target"] is True


def test_user_info_home_matches(tmp_path):
    u = I.user_info("root")
    assert u["exists"] and u["uid"] == 0 and u["home"] == u["passwd_home"] and u["home_matches"]
    u = I.user_info("root", str(tmp_path))
    assert u["home_matches"] is False and u["home"] == str(tmp_path)
    u = I.user_info("no-such-user-aimem")
    assert u["exists"] is False and u["home_matches"] is None
