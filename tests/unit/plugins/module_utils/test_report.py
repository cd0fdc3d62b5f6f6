"""The controller-side upgrade report: rows from the roles' facts, the fleet file, the table."""
import json
import os

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import report as R

FACTS = {
    "aimem_run_mode": "apply",
    "aimem_host_started": 100.0,
    "aimem_preflight_result": {"version_before": "0.6.4", "schema_before": 20, "needs_upgrade": True,
                               "counts_before": {"memories": 300, "archived_memories": 5}},
    "aimem_drain_result": {"snapshot": "/var/lib/ai-memory/ai-memory.db.pre-migration-v20-to-v54-abc.bak",
                           "sha256": "f" * 64, "schema_before": 20, "counts": {"memories": 300}},
    "aimem_install_result": {"previous_binary": "/var/lib/ai-memory/.aimem-fleet/bin/ai-memory-0.6.4"},
    "aimem_config_result": {"backup_file": "/x/config.toml.bak.20261125-101500"},
    "aimem_security_result": {"env_backup_file": "/etc/ai-memory/env.1.2026"},
    "aimem_verify_result": {"version_after": "0.7.0", "schema_after": 54, "counts_after": {"memories": 300},
                            "digest_equal": True, "doctor_overall": "info", "chain_holds": True,
                            "permissions_mode": "advisory", "gate_passed": True},
    "aimem_identity_result": {"agent_id": "ai:daemon@h1"},
}


def test_row_of_an_upgraded_host_carries_every_report_field():
    row = R.build_row("h1", FACTS, now=112.34)
    assert set(row) == set(R.ROW_KEYS)
    assert row["status"] == "upgraded"
    assert (row["version_before"], row["version_after"]) == ("0.6.4", "0.7.0")
    assert (row["schema_before"], row["schema_after"]) == (20, 54)
    assert (row["memories_before"], row["memories_after"]) == (300, 300)
    assert row["snapshot_sha256"] == "f" * 64 and row["digest_equal"] is True
    assert row["config_backup"].endswith("20261125-101500") and row["env_backup"] == "/etc/ai-memory/env.1.2026"
    assert row["previous_binary"].endswith("ai-memory-0.6.4") and row["agent_id"] == "ai:daemon@h1"
    assert row["seconds"] == 12.3


def test_second_run_host_is_up_to_date_and_failures_are_failed():
    facts = dict(FACTS, aimem_preflight_result=dict(FACTS["aimem_preflight_result"], needs_upgrade=False))
    assert R.build_row("h1", facts)["status"] == "up-to-date"
    failed = dict(FACTS, aimem_failed_step="Verify memories", aimem_failed_msg="digest differs",
                  aimem_verify_result={"failed": True, "reason": "digest differs"})
    row = R.build_row("h2", failed)
    assert row["status"] == "failed" and row["failed_step"] == "Verify memories" and row["message"] == "digest differs"
    assert R.build_row("h3", {})["status"] == "not-reached"
    assert R.build_row("h4", {"aimem_run_mode": "check", "aimem_preflight_result": {"needs_upgrade": True}})["status"] == "would-upgrade"


def test_unknown_values_stay_none_never_guessed():
    row = R.build_row("h1", {"aimem_preflight_result": {"version_before": "0.6.4"}})
    assert row["version_after"] is None and row["digest_equal"] is None and row["memories_after"] is None


def test_fleet_report_reads_rows_and_summarises(tmp_path):
    for host, facts in (("h2", {}), ("h1", FACTS)):
        (tmp_path / ("%s.json" % host)).write_text(json.dumps(R.build_row(host, facts)))
    (tmp_path / "junk.json").write_text("{not json")
    rep = R.fleet_report(str(tmp_path), run_id="r1")
    assert [r["host"] for r in rep["hosts"]] == ["h1", "h2"]
    assert rep["summary"] == {"hosts": 2, "by_status": {"upgraded": 1, "not-reached": 1}, "ok": False}
    assert R.fleet_report(str(tmp_path / "nope"))["hosts"] == []


def test_table_has_one_line_per_host_and_spells_out_failures():
    rows = [R.build_row("h1", FACTS, now=110), R.build_row("h2", {"aimem_failed_step": "Install", "aimem_failed_msg": "sha256 mismatch"})]
    text = R.render_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["host", "status", "version"]
    h1 = [l for l in lines if l.startswith("h1 ")][0]
    assert "0.6.4 -> 0.7.0" in h1 and "20 -> 54" in h1 and "300 -> 300" in h1 and "equal" in h1
    assert "h2: failed at Install: sha256 mismatch" in text
    assert "2 host(s): failed 1, upgraded 1" in text
    assert "snapshot /var/lib/ai-memory/ai-memory.db.pre-migration-v20-to-v54-abc.bak" in text


def test_write_row_and_publish_write_private_files_and_point_latest(tmp_path):
    root = tmp_path / "report"
    for host, facts in (("h1", FACTS), ("h2", {})):
        path = R.write_row(str(root / "r1"), R.build_row(host, facts, now=110))
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(str(root / "r1" / "hosts")).st_mode & 0o777) == "0o700"
    rep = R.publish(str(root), "r1")
    assert [r["host"] for r in rep["hosts"]] == ["h1", "h2"]
    assert json.loads((root / "r1" / "report.json").read_text()) == rep
    assert (root / "r1" / "report.txt").read_text() == R.render_table(rep["hosts"])
    assert oct(os.stat(str(root / "r1" / "report.json")).st_mode & 0o777) == "0o600"
    assert os.readlink(str(root / "latest")) == "r1"
    # a row rewritten (the identity play after the batch) replaces the old one; a second run moves latest
    R.write_row(str(root / "r1"), R.build_row("h2", FACTS, now=110))
    assert R.publish(str(root), "r1")["summary"]["by_status"] == {"upgraded": 2}
    R.write_row(str(root / "r2"), R.build_row("h1", FACTS, now=110))
    R.publish(str(root), "r2")
    assert os.readlink(str(root / "latest")) == "r2"
    assert sorted(os.listdir(str(root))) == ["latest", "r1", "r2"]


def test_write_row_and_publish_refuse_names_that_are_not_plain_files(tmp_path):
    for bad in ("", "../x", "a/b"):
        with pytest.raises(ValueError):
            R.write_row(str(tmp_path), {"host": bad})
        with pytest.raises(ValueError):
            R.publish(str(tmp_path), bad)
    assert os.listdir(str(tmp_path)) == []


def test_write_row_when_another_worker_made_the_directory_first(tmp_path, monkeypatch):
    # two hosts' rows are written by parallel workers: the hosts/ directory may appear in between
    real_makedirs = os.makedirs

    def racing_makedirs(path, mode=0o777, exist_ok=False):
        real_makedirs(path, mode, exist_ok=True)      # the other worker wins the race
        return real_makedirs(path, mode, exist_ok=exist_ok)

    monkeypatch.setattr(os, "makedirs", racing_makedirs)
    path = R.write_row(str(tmp_path / "r1"), R.build_row("h1", FACTS, now=110))
    assert os.path.isfile(path)
