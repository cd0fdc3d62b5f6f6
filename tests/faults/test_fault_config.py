"""Faults of config.toml (case 5): not TOML, an inline [llm].api_key, api_key_env together with
api_key_file, an api_key_file readable by others. Each is refused in the preflight - before any
daemon is drained - naming the host, the file and the fix, and the host stays exactly as it was.
"""
import pytest

from faultlib import (CFG, assert_as_it_was, assert_failed_clearly, assert_upgraded, converge, fault_fleet,
                      host_state, report_row, upgrade)

SECRET = "sk-PLANTED-inline-4f1c9e2a7b6d"
KEYFILE = "/var/lib/ai-memory/.config/ai-memory/llm.key"
LLM = '\n[llm]\nbackend = "ollama"\nbase_url = "http://127.0.0.1:11434"\nmodel = "gemma3:4b"\n'


def append(sf, host, text):
    sf.exec(host, "cat >> %s" % CFG, input=text)


def restore(sf, host):
    sf.exec(host, "cat > %s" % CFG, input=sf.original_config[host])


@pytest.fixture(scope="module")
def sf():
    s = fault_fleet("fcfg", 4, rows=80)
    s.original_config = {h: s.exec(h, ["cat", CFG]).stdout for h in s.hosts}
    yield s
    s.down()


def test_case05_config_that_is_not_toml_is_refused_in_the_preflight(sf):
    append(sf, "h1", "\n[llm\nmodel = \n")
    before = host_state(sf, "h1")
    r = upgrade(sf, limit="h1")
    assert_failed_clearly(r, "h1", CFG, r"does not parse as TOML", r"Fix the file \(line \d+\)")
    assert_as_it_was(sf, "h1", before)
    restore(sf, "h1")


def test_case05_inline_llm_api_key_is_refused_without_showing_the_key(sf):
    append(sf, "h2", LLM + 'api_key = "%s"\n' % SECRET)
    before = host_state(sf, "h2")
    r = upgrade(sf, limit="h2", args=["-v"])
    assert_failed_clearly(r, "h2", CFG, r"api_key", r"externalize")
    assert SECRET not in r.stdout + r.stderr
    assert_as_it_was(sf, "h2", before)
    # the fix is the converge run below with aimem_config_inline_api_key=externalize


def test_case05_api_key_env_and_api_key_file_together_are_refused(sf):
    sf.exec("h3", "printf 'k3' > %s && chown aimem:aimem %s && chmod 0400 %s" % (KEYFILE, KEYFILE, KEYFILE))
    append(sf, "h3", LLM + 'api_key_env = "OPENAI_API_KEY"\napi_key_file = "%s"\n' % KEYFILE)
    before = host_state(sf, "h3")
    r = upgrade(sf, limit="h3")
    assert_failed_clearly(r, "h3", CFG, r"api_key_env and \[llm\]\.api_key_file are mutually exclusive")
    assert_as_it_was(sf, "h3", before)
    sf.exec("h3", "sed -i '/^api_key_env/d' %s" % CFG)


def test_case05_api_key_file_readable_by_others_is_refused(sf):
    sf.exec("h4", "printf 'k4' > %s && chown aimem:aimem %s && chmod 0644 %s" % (KEYFILE, KEYFILE, KEYFILE))
    append(sf, "h4", LLM + 'api_key_file = "%s"\n' % KEYFILE)
    before = host_state(sf, "h4")
    r = upgrade(sf, limit="h4")
    assert_failed_clearly(r, "h4", KEYFILE, r"lax permissions \(mode = 0644", r"0400")
    assert_as_it_was(sf, "h4", before)
    sf.exec("h4", "chmod 0400 %s" % KEYFILE)


@pytest.fixture(scope="module")
def reconverged(sf):
    return converge(sf, sf.hosts, extra={"aimem_config_inline_api_key": "externalize"})


@pytest.mark.parametrize("host,case", [("h1", "case05-not-toml"), ("h2", "case05-inline-api-key"),
                                       ("h3", "case05-api-key-env-and-file"), ("h4", "case05-key-file-0644")])
def test_rerun_after_the_config_fault_converges(sf, reconverged, host, case):
    assert reconverged.recap[host]["failed"] == 0
    assert_upgraded(sf, host)
    assert report_row(sf, host)["status"] == "upgraded"
    cfg = sf.exec(host, ["cat", CFG]).stdout
    assert "schema_version = 2" in cfg and SECRET not in cfg
    if host == "h2":
        assert SECRET not in reconverged.stdout + reconverged.stderr
        path = [line.split("=", 1)[1].strip().strip('"') for line in cfg.splitlines()
                if line.startswith("api_key_file")]
        assert len(path) == 1
        st = sf.exec(host, "stat -c '%a %U' " + path[0]).stdout.split()
        assert st == ["400", "aimem"], st
        assert sf.exec(host, ["cat", path[0]]).stdout.strip() == SECRET
