"""Every module renders with ansible-doc, declares check/diff support, and every role has an
argument spec that ansible-doc renders (what users of the collection rely on)."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")
ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
           ANSIBLE_HOME=os.path.join(ROOT, ".ansible"), ANSIBLE_NOCOLOR="1")

MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))
ROLES_DIR = os.path.join(ROOT, "roles")
ROLES = sorted(d for d in os.listdir(ROLES_DIR) if os.path.isdir(os.path.join(ROLES_DIR, d))) \
    if os.path.isdir(ROLES_DIR) else []


def _doc(*args):
    return subprocess.run([os.path.join(BIN, "ansible-doc")] + list(args), cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_the_three_modules_of_the_design_exist():
    assert {"aimem_config_migrate", "aimem_schema", "aimem_doctor"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_doc_renders(module):
    res = _doc("aimem.fleet.%s" % module)
    assert res.returncode == 0, res.stderr
    assert "aimem.fleet.%s" % module in res.stdout
    assert "EXAMPLES:" in res.stdout and "RETURN VALUES:" in res.stdout


@pytest.mark.parametrize("module", MODULES)
def test_module_doc_declares_check_and_diff(module):
    res = _doc("--json", "aimem.fleet.%s" % module)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)["aimem.fleet.%s" % module]["doc"]
    attrs = doc.get("attributes", {})
    assert attrs.get("check_mode", {}).get("support") in ("full", "partial"), attrs
    assert attrs.get("diff_mode", {}).get("support") in ("full", "partial", "none"), attrs
    assert doc.get("version_added")


@pytest.mark.parametrize("role", ROLES)
def test_role_argument_spec_renders(role):
    assert os.path.isfile(os.path.join(ROLES_DIR, role, "meta", "argument_specs.yml")), role
    res = _doc("-t", "role", "aimem.fleet.%s" % role)
    assert res.returncode == 0, res.stderr
    assert "ENTRY POINT" in res.stdout


FILTERS = sorted(f[:-4] for f in os.listdir(os.path.join(ROOT, "plugins", "filter")) if f.endswith(".yml"))


def test_report_filters_exist():
    assert {"report_row", "fleet_report", "report_table"} <= set(FILTERS)


@pytest.mark.parametrize("name", FILTERS)
def test_filter_doc_renders(name):
    res = _doc("-t", "filter", "aimem.fleet.%s" % name)
    assert res.returncode == 0, res.stderr
    assert "aimem.fleet.%s" % name in res.stdout and "EXAMPLES:" in res.stdout


PLAYBOOKS = sorted(f[:-4] for f in os.listdir(os.path.join(ROOT, "playbooks")) if f.endswith(".yml"))


def test_the_fleet_playbooks_exist():
    assert {"upgrade", "secure", "rollback", "preflight"} <= set(PLAYBOOKS)


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_playbook_resolves_by_fqcn(name):
    res = subprocess.run([os.path.join(BIN, "ansible-playbook"), "--syntax-check", "-i", "localhost,",
                          "aimem.fleet.%s" % name], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
