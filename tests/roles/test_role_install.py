"""Role aimem.fleet.install on a 2-host test fleet seeded with ai-memory 0.6.4 (tests/roles/rolelib.py).

h2 takes the failures first (missing pin, wrong pin, the v0.7.0 tag build, a 404) and must come out of
each byte-identical; h1 then gets a check-mode run, the real install over the fleet's HTTP mirror and an
idempotent second run; finally h2 is installed air-gapped from a controller directory. Downloads are
counted in the fleet HTTP server's own request log."""
import json
import os
import re
import time

import pytest

from rolelib import SeededFleet

PLAYBOOK = "tests/roles/playbooks/install.yml"
BINARY = "/usr/local/bin/ai-memory"
WORK = "/var/lib/ai-memory/.aimem-fleet"
TRIPLE = "x86_64-unknown-linux-gnu" if os.uname().machine == "x86_64" else "aarch64-unknown-linux-gnu"
ASSET = "ai-memory-%s.tar.gz" % TRIPLE
# the test mirror is plain http inside the fleet network; one quick retry keeps failures fast
BASE = {"aimem_release_allow_insecure_url": True, "aimem_install_download_retries": 1,
        "aimem_install_download_delay": 1}
FAIL_TASK = "Fail with the reason (nothing installed)"


@pytest.fixture(scope="module")
def sf():
    t0 = time.monotonic()
    fleet = SeededFleet("rinst", 2)
    fleet.timings = {"up+seed": time.monotonic() - t0}
    yield fleet
    fleet.down()
    print("\ninstall role timings (s): %s" % ", ".join("%s=%.1f" % kv for kv in fleet.timings.items()))


def _play(sf, label, limit, extra=None, check=False):
    t0 = time.monotonic()
    evars = dict(BASE)
    evars.update(extra or {})
    r = sf.play(PLAYBOOK, extra=evars, check=check, limit=limit)
    sf.timings[label] = time.monotonic() - t0
    return r


def _result(r, suffix, host):
    found = [x["result"] for x in r.results if x["task"].endswith(suffix) and x["host"] == host]
    assert len(found) == 1, "task %r on %s ran %d times\n%s" % (suffix, host, len(found), r.output)
    return found[0]


def _downloads(sf):
    """GET requests for release assets in the fleet HTTP server's log."""
    with open(str(sf.fleet.fleet_dir / "http.log")) as f:
        return [line for line in f if '"GET ' in line]


def _state(sf, host):
    """Everything the role may touch on a host: the binary (bytes, mode, owner, mtime), every file in
    the work dir (with its sha256) and root's HOME (the probes must not leave a config there)."""
    out = sf.exec(host, "stat -c '%%a %%U:%%G %%Y' %s; sha256sum %s; "
                        "find %s -mindepth 1 -printf '%%P %%y %%m\\n' 2>/dev/null | sort; "
                        "find %s -type f -exec sha256sum {} + 2>/dev/null | sort; ls -A /root"
                  % (BINARY, BINARY, WORK, WORK)).stdout
    return out


def _binary(sf, host):
    mode, owner, mtime = sf.exec(host, "stat -c '%%a %%U:%%G %%Y' %s" % BINARY).stdout.split()
    return {"mode": mode, "owner": owner, "mtime": mtime, "sha": sf.digest(host, BINARY)}


def _version(sf, host, path=BINARY):
    # its own throwaway HOME under the host's /run tmpfs: the preamble writes a config template
    r = sf.exec(host, "d=$(mktemp -d /run/vcheck.XXXX) && HOME=$d %s --version; rc=$?; rm -rf $d; exit $rc" % path)
    return r.stdout.strip()


def _sha_of_standin(sf, build):
    import hashlib
    with open(os.path.join(sf.out, "bin", "ai-memory-%s" % build), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------------------- h2: failures
def test_missing_pin_fails_before_any_download_unless_waived(sf):
    before, gets = _state(sf, "h2"), len(_downloads(sf))
    r = _play(sf, "missing pin", "h2", {"aimem_release_sha256": {}})
    assert r.rc != 0 and r.recap["h2"]["failed"] == 1, r.output
    msg = _result(r, "The release tarball is pinned by sha256", "h2")["msg"]
    assert msg.startswith("h2:") and "aimem_release_sha256['%s']" % TRIPLE in msg, msg
    assert "no sha256 pin for %s" % ASSET in msg and "aimem_release_allow_unpinned" in msg, msg
    assert len(_downloads(sf)) == gets and _state(sf, "h2") == before
    # waived: passes preflight with a loud warning and would install (check mode: nothing changes)
    r = _play(sf, "waived (check)", "h2", {"aimem_release_sha256": {}, "aimem_release_allow_unpinned": True},
              check=True)
    assert r.rc == 0 and r.recap["h2"]["changed"] >= 1, r.output
    warn = _result(r, "Warn loudly that this install is not pinned", "h2")["msg"]
    assert warn.startswith("WARNING h2:") and "WITHOUT verifying its sha256" in warn, warn
    assert len(_downloads(sf)) == gets and _state(sf, "h2") == before


def test_wrong_pin_fails_naming_host_url_and_pin_and_leaves_nothing(sf):
    before, gets = _state(sf, "h2"), len(_downloads(sf))
    wrong = "0" * 64
    r = _play(sf, "wrong pin", "h2", {"aimem_release_sha256": {TRIPLE: wrong}})
    assert r.rc != 0 and r.recap["h2"]["failed"] == 1, r.output
    msg = _result(r, FAIL_TASK, "h2")["msg"]
    url = "%s/v0.7.0/%s" % (sf.fleet.http_url, ASSET)
    assert msg.startswith("install on h2 failed at 'Download the release tarball"), msg
    assert url in msg and "aimem_release_sha256['%s'] = %s" % (TRIPLE, wrong) in msg, msg
    assert "it was %s" % sf.pins["0.7.0"][TRIPLE] in msg, msg        # the real sha256, for the operator
    assert "were removed" in msg and "%s was not touched" % BINARY in msg, msg
    # downloaded once (a checksum mismatch is not retried), then discarded: h2 byte-identical
    assert len(_downloads(sf)) == gets + 1
    after = _state(sf, "h2")
    assert after == before, (before, after)
    assert sf.digest("h2", BINARY) == _sha_of_standin(sf, "0.6.4")


def test_tag_build_fails_the_capability_probe_and_binary_is_untouched(sf):
    """The v0.7.0 tag build prints 0.7.0 but has no `config migrate` (facts section 0). Served from a
    controller directory (the mirror-tag tree of the stand-in build) with its own correct pin."""
    before = _state(sf, "h2")
    r = _play(sf, "tag build", "h2", {"aimem_release_local_dir": os.path.join(sf.out, "mirror-tag"),
                                      "aimem_release_sha256": sf.pins["0.7.0-tag"]})
    assert r.rc != 0 and r.recap["h2"]["failed"] == 1, r.output
    probe = _result(r, "Probe the unpacked binary (version, capabilities, schema; scratch HOME, no DB)", "h2")
    assert probe["binary"]["version"] == "0.7.0" and probe["binary"]["capabilities"]["config_migrate"] is False
    assert probe["binary"]["schema_version"] == 42
    msg = _result(r, FAIL_TASK, "h2")["msg"]
    assert "lacks config_migrate" in msg and "TAG build" in msg and "%s was not touched" % BINARY in msg, msg
    assert _state(sf, "h2") == before
    assert _version(sf, "h2") == "ai-memory 0.6.4"


def test_mirror_404_fails_clearly(sf):
    before, gets = _state(sf, "h2"), len(_downloads(sf))
    base = sf.fleet.http_url + "/no/such/path"
    r = _play(sf, "404", "h2", {"aimem_release_base_url": base})
    assert r.rc != 0 and r.recap["h2"]["failed"] == 1, r.output
    msg = _result(r, FAIL_TASK, "h2")["msg"]
    assert "%s/v0.7.0/%s was not found (HTTP 404)" % (base, ASSET) in msg, msg
    assert "Fix aimem_release_base_url" in msg, msg
    assert len(_downloads(sf)) == gets + 1           # a 404 is not retried
    assert _state(sf, "h2") == before


# --------------------------------------------------------------------------------------- h1: install
def test_check_mode_reports_the_install_and_changes_nothing(sf):
    before, gets = _state(sf, "h1"), len(_downloads(sf))
    r = _play(sf, "check", "h1", check=True)
    assert r.rc == 0 and r.recap["h1"]["changed"] >= 1, r.output
    msg = _result(r, "Check mode - report the install that would happen", "h1")["msg"]
    assert "would install ai-memory 0.7.0" in msg and "keeping ai-memory 0.6.4 as %s/bin/ai-memory-0.6.4" % WORK in msg
    assert _state(sf, "h1") == before and len(_downloads(sf)) == gets


def test_install_keeps_the_previous_binary_and_records_it(sf):
    old_sha = sf.digest("h1", BINARY)
    assert old_sha == _sha_of_standin(sf, "0.6.4")
    root_home = sf.exec("h1", "ls -A /root").stdout
    gets = len(_downloads(sf))
    r = _play(sf, "install", "h1")
    assert r.rc == 0 and r.recap["h1"]["failed"] == 0 and r.recap["h1"]["changed"] > 0, r.output
    new = _binary(sf, "h1")
    assert (new["mode"], new["owner"]) == ("755", "root:root")
    assert _version(sf, "h1") == "ai-memory 0.7.0"
    # the one download went through the mirror
    got = _downloads(sf)[gets:]
    assert len(got) == 1 and "GET /v0.7.0/%s " % ASSET in got[0] and '" 200 ' in got[0], got
    kept = WORK + "/bin/ai-memory-0.6.4"
    assert sf.digest("h1", kept) == old_sha
    assert sf.exec("h1", "stat -c '%%a %%U:%%G' %s" % kept).stdout.split() == ["755", "root:root"]
    assert _version(sf, "h1", kept) == "ai-memory 0.6.4"
    assert sf.exec("h1", "stat -c '%%a %%U' %s" % WORK).stdout.split() == ["700", "root"]
    record = json.loads(sf.exec("h1", "cat %s/install.json" % WORK).stdout)
    assert record == {
        "binary": BINARY, "previous_binary": kept, "previous_version": "0.6.4", "version": "0.7.0",
        "asset": ASSET, "asset_sha256": sf.pins["0.7.0"][TRIPLE], "binary_sha256": new["sha"]}
    assert sf.exec("h1", "stat -c '%%a' %s/install.json" % WORK).stdout.strip() == "600"
    # the tarball and the unpack dir are gone, no probe scratch left; only the record and the kept binary
    assert sf.exec("h1", "find %s -mindepth 1 | sort" % WORK).stdout.split() == [
        WORK + "/bin", kept, WORK + "/install.json"]
    assert sf.exec("h1", "ls -A /root").stdout == root_home       # the probes wrote nothing in root's HOME
    fact = _result(r, "Publish the install result", "h1")["ansible_facts"]["aimem_install_result"]
    assert fact == dict(record, changed=True)


def test_second_run_changes_nothing_and_downloads_nothing(sf):
    before, gets = _state(sf, "h1"), len(_downloads(sf))
    r = _play(sf, "second run", "h1")
    assert r.rc == 0 and r.recap["h1"]["changed"] == 0, r.output
    assert len(_downloads(sf)) == gets
    assert _state(sf, "h1") == before                # binary mtime included
    fact = _result(r, "Publish the install result (unchanged)", "h1")["ansible_facts"]["aimem_install_result"]
    assert fact["changed"] is False and fact["previous_version"] == "0.6.4"
    # a binary replaced behind the role's back (its sha256 no longer matches install.json) is detected:
    # the role would reinstall it (check mode, so h1 keeps 0.7.0)
    sf.exec("h1", "cp -p %s %s.saved && cp %s/bin/ai-memory-0.6.4 %s" % (BINARY, BINARY, WORK, BINARY))
    try:
        r = _play(sf, "drift (check)", "h1", check=True)
        assert r.rc == 0 and r.recap["h1"]["changed"] >= 1, r.output
        assert "would install ai-memory 0.7.0" in _result(r, "Check mode - report the install that would happen", "h1")["msg"]
        assert sf.digest("h1", BINARY) == _sha_of_standin(sf, "0.6.4") and len(_downloads(sf)) == gets
    finally:
        sf.exec("h1", "mv %s.saved %s" % (BINARY, BINARY))


# --------------------------------------------------------------------------------------- h2: air-gapped
def test_air_gapped_install_from_a_controller_directory(sf):
    gets = len(_downloads(sf))
    local = os.path.join(sf.out, "mirror")             # holds v0.7.0/ai-memory-<triple>.tar.gz
    # the https check does not apply to a local source; the URL is never used
    extra = {"aimem_release_local_dir": local, "aimem_release_allow_insecure_url": False}
    r = _play(sf, "air-gapped", "h2", extra)
    assert r.rc == 0 and r.recap["h2"]["failed"] == 0, r.output
    assert len(_downloads(sf)) == gets
    assert _version(sf, "h2") == "ai-memory 0.7.0"
    record = json.loads(sf.exec("h2", "cat %s/install.json" % WORK).stdout)
    assert record["asset_sha256"] == sf.pins["0.7.0"][TRIPLE] and record["previous_version"] == "0.6.4"
    assert sf.digest("h2", record["previous_binary"]) == _sha_of_standin(sf, "0.6.4")
    # a controller file that does not match the pin is refused before anything is copied
    r = _play(sf, "air-gapped wrong pin", "h2", dict(extra, aimem_release_sha256={TRIPLE: "f" * 64}))
    assert r.rc != 0
    msg = _result(r, "Air-gapped source - the tarball exists and matches the pin", "h2")["msg"]
    assert re.search(r"v0\.7\.0/%s on the controller has sha256 [0-9a-f]{64}, not the pin" % re.escape(ASSET), msg), msg


# --------------------------------------------------------------------------------------- h1: Tier 1, unpinned
def test_tier1_user_binary_unpinned_waived_fresh_install(sf):
    """Tier 1: aimem_binary under ~/.local/bin (its parent created as the connection user), no pin but
    aimem_release_allow_unpinned: true (loud warning; the record holds the sha256 actually installed),
    nothing to keep (no binary there yet)."""
    work = "/root/.aimem-fleet-t1"
    assert sf.exec("h1", "test -e /root/.local/bin/ai-memory", check=False).returncode != 0
    gets = len(_downloads(sf))
    r = _play(sf, "tier1 unpinned", "h1", {"aimem_binary": "~/.local/bin/ai-memory", "aimem_work_dir": work,
                                           "aimem_release_sha256": {}, "aimem_release_allow_unpinned": True})
    assert r.rc == 0 and r.recap["h1"]["failed"] == 0, r.output
    assert _result(r, "Warn loudly that this install is not pinned", "h1")["msg"].startswith("WARNING h1:")
    assert len(_downloads(sf)) == gets + 1
    assert sf.exec("h1", "stat -c '%a %U' /root/.local/bin /root/.local/bin/ai-memory").stdout.split() == \
        ["755", "root", "755", "root"]
    assert _version(sf, "h1", "/root/.local/bin/ai-memory") == "ai-memory 0.7.0"
    record = json.loads(sf.exec("h1", "cat %s/install.json" % work).stdout)
    assert record["binary"] == "/root/.local/bin/ai-memory"
    assert record["previous_binary"] is None and record["previous_version"] is None
    assert record["asset_sha256"] == sf.pins["0.7.0"][TRIPLE]      # what was downloaded, hashed on the host
    assert record["binary_sha256"] == sf.digest("h1", "/root/.local/bin/ai-memory")
    assert sf.exec("h1", "ls -A %s" % work).stdout.split() == ["install.json"]
    assert _version(sf, "h1") == "ai-memory 0.7.0"                   # the system binary was not touched
