"""Session fixtures for the ai-memory stand-in (reusable by any test under tests/standin/).

* ``standin_out``  -> dict returned by ``build.build_all(<session tmp>)`` (bins, named_bins,
  mirrors, assets, pins, pins_path) — built once per session.
* ``standin_bins`` -> {build: path of OUT/bin/ai-memory-<build>}
* ``run_standin``  -> helper ``run(build, *args, home=..., env=None, cwd=None, input=None,
  timeout=20)`` returning ``subprocess.CompletedProcess`` (text mode) with ``HOME`` set and the
  stand-in hooks / LLM / DB env cleared.

The builder module is registered as ``standin_build`` in ``sys.modules`` (tests here can
``import standin_build``).  Outside tests/standin load ``tests/standin/build.py`` by path and call
``build_all(out_dir)``.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)



def _load_build():
    """Load tests/standin/build.py as ``standin_build`` (a PyPI package called ``build`` is
    installed in the venv, so a plain ``import build`` could pick the wrong module)."""
    if "standin_build" in sys.modules:
        return sys.modules["standin_build"]
    spec = importlib.util.spec_from_file_location("standin_build",
                                                  os.path.join(HERE, "build.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["standin_build"] = mod
    spec.loader.exec_module(mod)
    return mod


_build = _load_build()

clean_env = _build.clean_env


@pytest.fixture(scope="session")
def standin_out(tmp_path_factory):
    return _build.build_all(str(tmp_path_factory.mktemp("standin-build")))


@pytest.fixture(scope="session")
def standin_bins(standin_out):
    return dict(standin_out["bins"])


@pytest.fixture
def run_standin(standin_bins, tmp_path):
    default_home = tmp_path / "home"
    default_home.mkdir(exist_ok=True)

    def run(build, *args, **kw):
        home = kw.pop("home", default_home)
        env = clean_env(home, kw.pop("env", None))
        cwd = kw.pop("cwd", str(tmp_path))
        timeout = kw.pop("timeout", 20)
        inp = kw.pop("input", None)
        assert not kw, "unknown kwargs %r" % kw
        return subprocess.run([standin_bins[build]] + [str(a) for a in args], env=env,
                              cwd=cwd, input=inp, capture_output=True, text=True,
                              timeout=timeout)
    return run
