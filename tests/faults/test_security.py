"""Security checks over a whole run (issue 5): planted secrets never reach Ansible's output at
-vvv, the controller report or any file but their own 0400/0600 files; backups and snapshots are
never more readable than their sources; env files are not world-readable; private keys stay
0600; nothing is left in /tmp. (Downloads without a pin: test_fault_release.py.)
"""
import base64
import os
import stat

import pytest

from faultlib import CFG, DB, ENV, HOME, PLAYBOOKS, ROOT, WORK, assert_upgraded, fault_fleet, upgrade

LLM_KEY = "sk-PLANTED-llm-7c2f0a9e41d3b8"          # inline [llm].api_key, moved out by externalize
HTTP_KEY = "PLANTED-http-api-key-5e8d1b"           # top-level api_key (serve's HTTP key; stays in config)
ENV_KEY = "sk-PLANTED-env-93ab6f0c2d"              # a vendor key in the daemon's env file
PLANTED = (LLM_KEY, HTTP_KEY, ENV_KEY)
# where anything of the upgrade (or a leak of it) could land on a host; the hosts' /etc, /var, ...
# are overlays of the controller's, so the checkout and the big package trees are pruned
SEARCH = "/etc /var/lib /var/log /var/tmp /var/backups /root /home /opt /srv /tmp /run /usr/local"
PRUNE = "-path %s -o -path /var/lib/apt -o -path /var/lib/dpkg -o -name .venv -o -path /root/.ansible" % ROOT


def grep_hosts(sf, host, needles):
    """{needle: [files on the host holding it]}, from ONE scan of the host's file systems for all
    needles (then each needle is looked for only in the files that hold any)."""
    pattern = " ".join("-e '%s'" % n for n in needles)
    hits = sf.exec(host, "find %s \\( %s \\) -prune -o -type f -print0 2>/dev/null | xargs -0 -r grep -lsF %s; true"
                   % (SEARCH, PRUNE, pattern), timeout=300).stdout.split()
    found = {}
    for n in needles:
        found[n] = sf.exec(host, ["grep", "-lsF", "--", n] + hits, check=False).stdout.split() if hits else []
    return found


@pytest.fixture(scope="module")
def run():
    # one host: every secret-handling step runs on it (peer enrolment only moves public keys)
    sf = fault_fleet("fsec", 1, rows=60)
    for h in sf.hosts:
        sf.exec(h, "sed -i '1i api_key = \"%s\"' %s && cat >> %s" % (HTTP_KEY, CFG, CFG),
                input='\n[llm]\nbackend = "ollama"\nbase_url = "http://127.0.0.1:11434"\nmodel = "gemma3:4b"\n'
                      'api_key = "%s"\n' % LLM_KEY)
        sf.exec(h, "echo OPENAI_API_KEY=%s >> %s" % (ENV_KEY, ENV))
        sf.exec(h, "/etc/init.d/ai-memory stop && /etc/init.d/ai-memory start && touch /run/sec-marker && sleep 1")
    extra = {"aimem_config_inline_api_key": "externalize"}
    up = upgrade(sf, extra=extra, args=["-vvv"])
    assert up.rc == 0, up.output[-5000:]
    sec = sf.play(os.path.join(PLAYBOOKS, "secure.yml"), extra=extra, args=["-vvv"])
    assert sec.rc == 0, sec.output[-5000:]
    sf.outputs = {"upgrade -vvv": up.stdout + up.stderr, "secure -vvv": sec.stdout + sec.stderr}
    yield sf
    sf.down()


def private_key_encodings(sf, host):
    """The private key files of the host, as they could leak: raw hex and base64 (slurp)."""
    out = []
    for path in sf.exec(host, "find %s/.config/ai-memory/keys -name '*.priv' -type f" % HOME).stdout.split():
        raw = sf.exec(host, "base64 -w0 %s" % path).stdout.strip()
        out.append((path, raw, base64.b64decode(raw).hex()))
    assert out, "no private key on %s" % host
    return out


def test_planted_secrets_never_reach_the_vvv_output(run):
    for name, text in run.outputs.items():
        for s in PLANTED:
            assert s not in text, "%s leaked in the %s output" % (s, name)
        for h in run.hosts:
            for path, b64, hexed in private_key_encodings(run, h):
                assert b64 not in text and hexed not in text, "%s of %s leaked in the %s output" % (path, h, name)
    # the output did run at -vvv (connections and module args are shown): the check had something to look at
    assert "ESTABLISH SSH CONNECTION" in run.outputs["upgrade -vvv"]
    assert "module_args" in run.outputs["upgrade -vvv"]


def test_planted_secrets_never_reach_the_controller_report_or_key_store(run):
    base = run.vars["aimem_controller_dir"]
    files = [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs]
    assert any(f.endswith("report.json") for f in files) and any(f.endswith(".pub") for f in files), files
    secrets = [s.encode() for s in PLANTED]
    for h in run.hosts:
        for _, b64, hexed in private_key_encodings(run, h):
            secrets += [b64.encode(), hexed.encode(), base64.b64decode(b64)]
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        leaked = [s for s in secrets if s in data]
        assert not leaked, "%s holds a secret" % f


def controller_has(path, needle=None):
    """The test hosts' /etc, /var, /opt, ... are copy-on-write overlays of the controller's: a file
    that the controller has too (with the same secret in it) is the controller's, not a host write."""
    if not os.path.isfile(path):
        return False
    if needle is None:
        return True
    with open(path, "rb") as f:
        return needle.encode() in f.read()


def test_planted_secrets_live_only_in_their_own_private_files(run):
    for h in run.hosts:
        everywhere = grep_hosts(run, h, PLANTED)
        for s in PLANTED:
            found = [f for f in everywhere[s] if not controller_has(f, s)]
            assert found, "%s: %s is nowhere (the check would prove nothing)" % (h, s)
            for f in found:
                mode, owner = run.exec(h, "stat -L -c '%%a %%U' %s" % f).stdout.split()
                mode = int(mode, 8)
                if f == ENV or f.startswith(ENV + ".bak."):
                    # the env file: root-owned, never world-readable (the daemon's group may read it)
                    assert owner == "root" and mode & 0o007 == 0, (h, f, oct(mode), owner)
                    assert s == ENV_KEY, (h, f)
                else:
                    assert mode & 0o077 == 0, (h, f, oct(mode))
                    assert f.startswith(HOME + "/.config/ai-memory/"), (h, f)
                    assert os.path.basename(f).startswith(("config.toml", "llm-api-key", "llm.")) or s == LLM_KEY, (h, f)
            if s == LLM_KEY:
                # externalized: out of config.toml into a 0400 key file (the v1 backup keeps its copy, 0600)
                assert CFG not in found, (h, found)
                keyfiles = [f for f in found if not os.path.basename(f).startswith("config.toml")]
                assert len(keyfiles) == 1, found
                assert run.exec(h, "stat -c %%a %s" % keyfiles[0]).stdout.strip() == "400"


def test_backups_and_snapshots_are_never_more_readable_than_their_sources(run):
    for h in run.hosts:
        pairs = [(CFG, b) for b in run.exec(h, "ls %s.bak.* 2>/dev/null; true" % CFG).stdout.split()]
        pairs += [(ENV, b) for b in run.exec(h, "ls %s.bak.* 2>/dev/null; true" % ENV).stdout.split()]
        pairs += [(DB, b) for b in run.exec(h, "ls %s.pre-migration-* 2>/dev/null; true" % DB).stdout.split()]
        assert len(pairs) >= 3, pairs
        for src, b in pairs:
            ms = int(run.exec(h, "stat -L -c %%a %s" % src).stdout, 8)
            mb = int(run.exec(h, "stat -c %%a %s" % b).stdout, 8)
            assert mb & ~ms & 0o777 == 0, (h, b, oct(mb), src, oct(ms))
        # the work dir (state files, kept binary) is private
        assert int(run.exec(h, "stat -c %%a %s" % WORK).stdout, 8) & 0o077 == 0


def test_env_files_are_not_world_readable_and_private_keys_stay_0600(run):
    for h in run.hosts:
        mode = int(run.exec(h, "stat -c %%a %s" % ENV).stdout, 8)
        assert mode & 0o007 == 0, oct(mode)
        privs = run.exec(h, "find %s/.config/ai-memory/keys -name '*.priv' -printf '%%m %%u %%p\\n'" % HOME).stdout
        assert privs.strip(), "no private key on %s" % h
        for line in privs.splitlines():
            m, owner, p = line.split(" ", 2)
            assert m == "600" and owner == "aimem", line


def test_nothing_is_left_in_tmp_on_the_hosts(run):
    for h in run.hosts:
        left = [f for f in run.exec(h, "find /tmp /var/tmp -mindepth 1 \\( %s \\) -prune -o -newer /run/sec-marker -print"
                                    % PRUNE, timeout=300).stdout.split()
                if not (f.startswith("/var/tmp/") and controller_has(f) or os.path.isdir(f))]
        assert left == [], (h, left)


def test_the_hosts_are_upgraded_and_secured(run):
    for h in run.hosts:
        assert_upgraded(run, h)
        env = run.exec(h, ["cat", ENV]).stdout
        assert "AI_MEMORY_PERMISSIONS_MODE=enforce" in env and ENV_KEY in env
