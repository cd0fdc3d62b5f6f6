"""aimem.fleet.identity on a 2-host test fleet upgraded to v0.7.0 (guide Tier 2 step 9, facts §5.2).

Proves: each host generates its keypair as the service user (``.priv`` 0600 / ``.pub`` 0644, owner
aimem), every host holds the other's ``.pub`` byte-identical to the owner's, ``identity list --json``
on each host lists both ids with the keys the role reports, check mode and a second run change
nothing, a rotation reaches the peer, and an insecure ``.priv`` or a bad agent id fails with the fix
while leaving every key file byte-identical. Private keys never reach the controller.
"""
import base64
import json
import os

import pytest

from rolelib import ROOT, SeededFleet

PLAY = os.path.join(ROOT, "tests", "roles", "playbooks", "identity.yml")
WALK = os.path.join(ROOT, "tests", "demo", "walkthrough.yml")
HOME = "/var/lib/ai-memory"
KEYS = HOME + "/.config/ai-memory/keys"
IDS = {"h1": "ai:daemon@h1", "h2": "ai:daemon@h2"}
KEY_FILES = [KEYS + "/%s.%s" % (i, ext) for i in IDS.values() for ext in ("pub", "priv")]


def upgraded_fleet(name):
    """A seeded 2-host fleet upgraded to v0.7.0 by the module-driven walkthrough."""
    sf = SeededFleet(name, 2)
    report = os.path.join(sf.tmp, "report")
    os.makedirs(report)
    r = sf.play(WALK, extra={"demo_standin_dir": sf.out, "demo_report_dir": report})
    assert r.rc == 0, "walkthrough upgrade failed\n" + r.output
    return sf


@pytest.fixture(scope="module")
def sf():
    fleet = upgraded_fleet("rident")
    try:
        yield fleet
    finally:
        fleet.down()


def stat(sf, host, path):
    return sf.exec(host, ["stat", "-c", "%a %U", path]).stdout.strip()


def identity_list(sf, host):
    r = sf.exec(host, ["su", "-s", "/bin/sh", "aimem", "-c",
                       "HOME=%s /usr/local/bin/ai-memory --json identity --key-dir '%s' list" % (HOME, KEYS)])
    return json.loads(r.stdout)


def fact(r, host):
    return r.task("Record the enrolled peers", host)["ansible_facts"]["aimem_identity_result"]


def test_generate_enrol_idempotent(sf):
    before = {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts}
    assert all(v == "missing" for d in before.values() for v in d.values())

    r = sf.play(PLAY, check=True)
    assert r.rc == 0, r.output
    assert r.recap["h1"]["changed"] > 0 and r.recap["h2"]["changed"] > 0, r.output
    assert {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts} == before, "check mode wrote key files"

    r = sf.play(PLAY)
    assert r.rc == 0, r.output
    assert r.recap["h1"]["changed"] > 0 and r.recap["h2"]["changed"] > 0

    ctl = os.path.join(sf.vars["aimem_controller_dir"], "keys")
    assert sorted(os.listdir(ctl)) == ["ai:daemon@h1.pub", "ai:daemon@h2.pub"]  # never a .priv
    for host, own in IDS.items():
        peer_host = "h2" if host == "h1" else "h1"
        peer = IDS[peer_host]
        assert stat(sf, host, "%s/%s.priv" % (KEYS, own)) == "600 aimem"
        assert stat(sf, host, "%s/%s.pub" % (KEYS, own)) == "644 aimem"
        assert stat(sf, host, "%s/%s.pub" % (KEYS, peer)) == "644 aimem"
        assert not sf.exec(host, ["test", "-e", "%s/%s.priv" % (KEYS, peer)], check=False).returncode == 0
        owner_pub = sf.digest(peer_host, "%s/%s.pub" % (KEYS, peer))
        assert sf.digest(host, "%s/%s.pub" % (KEYS, peer)) == owner_pub
        with open(os.path.join(ctl, own + ".pub"), "rb") as f:
            raw = f.read()
        assert len(raw) == 32
        listed = {k["agent_id"]: k["public_key_b64"] for k in identity_list(sf, host)["keys"]}
        result = fact(r, host)
        assert result["agent_id"] == own and result["enrolled_peers"] == [peer]
        assert result["pub_path"] == "%s/%s.pub" % (KEYS, own)
        assert len(result["public_key_b64"]) == 43
        assert result["public_key_b64"] == base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        assert listed[own] == result["public_key_b64"]
        assert listed[peer] == fact(r, peer_host)["public_key_b64"]
        priv = sf.exec(host, "base64 -w0 '%s/%s.priv'" % (KEYS, own)).stdout.strip()
        assert priv and priv not in r.stdout and priv not in r.stderr

    digests = {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts}
    r = sf.play(PLAY)
    assert r.rc == 0, r.output
    assert r.changed() == {"h1": 0, "h2": 0}, r.output
    assert {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts} == digests


def test_rotate_reaches_peer(sf):
    old = sf.digest("h1", "%s/ai:daemon@h1.pub" % KEYS)
    r = sf.play(PLAY, extra={"aimem_identity_rotate": True})
    assert r.rc == 0, r.output
    new = sf.digest("h1", "%s/ai:daemon@h1.pub" % KEYS)
    assert new != old
    assert sf.digest("h2", "%s/ai:daemon@h1.pub" % KEYS) == new
    assert stat(sf, "h1", "%s/ai:daemon@h1.priv" % KEYS) == "600 aimem"
    assert r.recap["h2"]["changed"] > 0 and fact(r, "h2")["enrolled_peers"] == ["ai:daemon@h1"]


def test_insecure_priv_and_bad_id_fail_without_changes(sf):
    priv = "%s/ai:daemon@h2.priv" % KEYS
    sf.exec("h2", ["chmod", "0644", priv])
    try:
        digests = {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts}
        r = sf.play(PLAY)
        assert r.rc != 0 and r.recap["h2"]["failed"] == 1 and r.recap["h1"]["failed"] == 0, r.output
        assert "private key %s has insecure mode 0644" % priv in r.stdout
        assert "chmod 0600 %s" % priv in r.stdout
        assert {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts} == digests
        assert stat(sf, "h2", priv) == "644 aimem"
    finally:
        sf.exec("h2", ["chmod", "0600", priv])

    digests = {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts}
    r = sf.play(PLAY, extra={"aimem_identity_agent_id": "ai/daemon@h1"}, limit="h1")
    assert r.rc != 0 and r.recap["h1"]["failed"] == 1
    assert "is not a valid" in r.stdout and "without '/'" in r.stdout
    assert r.recap["h1"]["changed"] == 0
    assert {h: sf.tree_digest(h, KEY_FILES) for h in sf.hosts} == digests
