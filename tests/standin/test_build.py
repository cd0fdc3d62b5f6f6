"""Tests of build.py (packing, release mirrors, pins) and serve_assets.py."""
import hashlib
import json
import os
import subprocess
import tarfile
import urllib.error
import urllib.request

import pytest

import standin_build
from serve_assets import serve, serve_with_log
from standin_build import BUILDS, MIRRORS, TRIPLES, clean_env

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_tree_layout_and_pins(standin_out):
    out = os.path.dirname(standin_out["pins_path"])
    pins = json.load(open(standin_out["pins_path"]))
    assert sorted(pins) == sorted(BUILDS)
    for root, tags in MIRRORS.items():
        for tag, build in tags.items():
            d = os.path.join(out, root, tag)
            assert sorted(os.listdir(d)) == sorted("ai-memory-%s.tar.gz" % t for t in TRIPLES)
            for t in TRIPLES:
                assert _sha(os.path.join(d, "ai-memory-%s.tar.gz" % t)) == pins[build][t]
    # every asset is distinct (per build and per triple)
    all_shas = [pins[b][t] for b in BUILDS for t in TRIPLES]
    assert len(set(all_shas)) == len(all_shas)
    assert not [n for n in os.listdir(os.path.join(out, "mirror", "v0.7.0"))
                if n.endswith(".sha256") or n == "SHA256SUMS"]


def test_tarball_holds_exactly_one_executable(standin_out, tmp_path):
    out = os.path.dirname(standin_out["pins_path"])
    for root, tag, expect in (("mirror", "v0.6.4", "0.6.4"), ("mirror", "v0.7.0", "0.7.0"),
                              ("mirror-tag", "v0.7.0", "0.7.0-tag"),
                              ("mirror-sal", "v0.7.0", "0.7.0-sal")):
        path = os.path.join(out, root, tag, "ai-memory-x86_64-unknown-linux-gnu.tar.gz")
        raw = open(path, "rb").read()
        assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
        with tarfile.open(path) as tf:
            members = tf.getmembers()
            assert [m.name for m in members] == ["ai-memory"]
            m = members[0]
            assert m.isfile() and m.mode == 0o755 and m.mtime == standin_build.TAR_MTIME
            data = tf.extractfile(m).read()
        assert data.startswith(b"#!/usr/bin/python3\n")
        dest = tmp_path / root / tag
        dest.mkdir(parents=True)
        with tarfile.open(path) as tf:
            tf.extractall(str(dest))
        exe = str(dest / "ai-memory")
        assert os.access(exe, os.X_OK)
        home = tmp_path / ("home-" + root + tag)
        home.mkdir()
        env = clean_env(home)
        r = subprocess.run([exe, "--version"], env=env, capture_output=True, text=True)
        assert r.stdout == "ai-memory %s\n" % ("0.6.4" if expect == "0.6.4" else "0.7.0")
        # capability probe distinguishes the builds exactly as facts §0 says
        r = subprocess.run([exe, "config", "--help"], env=env, capture_output=True, text=True)
        assert r.returncode == (0 if expect in ("0.7.0", "0.7.0-sal") else 2)
        r = subprocess.run([exe, "schema-init", "--help"], env=env, capture_output=True,
                           text=True)
        assert r.returncode == (0 if expect == "0.7.0-sal" else 2)


def test_rebuild_is_byte_deterministic(standin_out, tmp_path):
    again = standin_build.build_all(str(tmp_path / "again"))
    assert again["pins"] == json.load(open(standin_out["pins_path"]))
    for b in BUILDS:
        assert open(again["bins"][b], "rb").read() == open(standin_out["bins"][b], "rb").read()
        assert open(again["named_bins"][b], "rb").read() == open(standin_out["bins"][b],
                                                                 "rb").read()


def test_bins_are_executable_with_python3_shebang(standin_bins):
    for b, p in standin_bins.items():
        assert os.stat(p).st_mode & 0o777 == 0o755
        with open(p, "rb") as fh:
            assert fh.readline() == b"#!/usr/bin/python3\n"
        assert os.path.basename(p) == "ai-memory-%s" % b


def test_named_bin_process_name_is_ai_memory(standin_out, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen([standin_out["named_bins"]["0.7.0"], "--db",
                             str(tmp_path / "m.db"), "mcp"], env=clean_env(home),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["result"] == {}
        with open("/proc/%d/comm" % proc.pid) as fh:
            assert fh.read().strip() == "ai-memory"
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_assets_download_matches_pins(standin_out):
    pins = standin_out["pins"]
    with serve_with_log(standin_out["mirrors"]["mirror-tag"]) as (url, requests):
        assert url.startswith("http://127.0.0.1:")
        asset = "/v0.7.0/ai-memory-aarch64-apple-darwin.tar.gz"
        with NO_PROXY.open(url + asset, timeout=5) as resp:
            data = resp.read()
        assert hashlib.sha256(data).hexdigest() == pins["0.7.0-tag"]["aarch64-apple-darwin"]
        assert requests == [asset]
        with pytest.raises(urllib.error.HTTPError) as ei:
            NO_PROXY.open(url + "/v0.7.0/SHA256SUMS", timeout=5)
        assert ei.value.code == 404
    with pytest.raises(ValueError):
        with serve(standin_out["mirrors"]["mirror"], host="0.0.0.0"):
            pass


def test_cli_summary(tmp_path):
    r = subprocess.run(["python3", os.path.join(os.path.dirname(standin_build.__file__),
                                                "build.py"), str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "pins (%s):" % (tmp_path / "o" / "pins.json") in r.stdout
    pins = json.load(open(str(tmp_path / "o" / "pins.json")))
    for b in BUILDS:
        for t in TRIPLES:
            assert pins[b][t] in r.stdout
