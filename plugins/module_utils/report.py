# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-host upgrade report: one row per host from the facts the roles publish, and the
fleet table printed at the end of a run. Pure Python (no Ansible import); the filter plugins in
plugins/filter/report.py and the aimem_report action plugin (which writes the files on the
controller, no module run) wrap these functions for the playbooks.

A row holds no secret: only versions, paths, digests, counts and verdicts. Values that the roles
did not publish (a host that failed early, check mode) are None, never guessed.
"""
from __future__ import absolute_import, division, print_function

import json
import os

from ansible_collections.aimem.fleet.plugins.module_utils import fileops

__metaclass__ = type

ROW_KEYS = (
    "host", "status", "failed_step", "message", "mode",
    "version_before", "version_after", "schema_before", "schema_after",
    "memories_before", "memories_after", "digest_equal",
    "snapshot", "snapshot_sha256", "config_backup", "claude_json_backup", "env_backup",
    "previous_binary", "doctor_overall", "chain_holds", "permissions_mode", "agent_id",
    "seconds",
)

TABLE_COLUMNS = (
    ("host", "host"), ("status", "status"), ("version", None), ("schema", None),
    ("memories", None), ("digest", None), ("doctor", "doctor_overall"), ("chain", "chain_holds"),
    ("perm_mode", "permissions_mode"), ("secs", "seconds"),
)


def _get(d, *path):
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _total(counts):
    if not isinstance(counts, dict):
        return None
    if counts.get("memories") is None:
        return None
    return int(counts.get("memories") or 0)


def build_row(host, facts, now=None):
    """One report row for ``host`` from its facts (a dict of the ``aimem_*`` facts)."""
    facts = facts or {}
    pre = facts.get("aimem_preflight_result") or {}
    drain = facts.get("aimem_drain_result") or {}
    inst = facts.get("aimem_install_result") or {}
    conf = facts.get("aimem_config_result") or {}
    sec = facts.get("aimem_security_result") or {}
    ver = facts.get("aimem_verify_result") or {}
    ident = facts.get("aimem_identity_result") or {}
    failed_step = facts.get("aimem_failed_step") or None
    mode = facts.get("aimem_run_mode") or "apply"

    if failed_step or ver.get("failed"):
        status = "failed"
    elif mode == "check":
        status = "would-upgrade" if pre.get("needs_upgrade") else "up-to-date"
    elif ver and ver.get("gate_passed") is not False:
        status = "upgraded" if pre.get("needs_upgrade") else "up-to-date"
    elif not pre:
        status = "not-reached"
    else:
        status = "incomplete"

    started = facts.get("aimem_host_started")
    seconds = None
    if started is not None and now is not None:
        try:
            seconds = round(float(now) - float(started), 1)
        except (TypeError, ValueError):
            seconds = None

    row = {
        "host": host,
        "status": status,
        "failed_step": failed_step,
        "message": facts.get("aimem_failed_msg") or ver.get("reason") or None,
        "mode": mode,
        "version_before": pre.get("version_before"),
        "version_after": ver.get("version_after"),
        "schema_before": drain.get("schema_before", pre.get("schema_before")),
        "schema_after": ver.get("schema_after"),
        "memories_before": _total(drain.get("counts")) if drain.get("counts") else _total(pre.get("counts_before")),
        "memories_after": _total(ver.get("counts_after")),
        "digest_equal": ver.get("digest_equal"),
        "snapshot": drain.get("snapshot"),
        "snapshot_sha256": drain.get("sha256"),
        "config_backup": conf.get("backup_file"),
        "claude_json_backup": conf.get("claude_json_backup_file"),
        "env_backup": sec.get("env_backup_file"),
        "previous_binary": inst.get("previous_binary"),
        "doctor_overall": ver.get("doctor_overall"),
        "chain_holds": ver.get("chain_holds"),
        "permissions_mode": ver.get("permissions_mode"),
        "agent_id": ident.get("agent_id"),
        "seconds": seconds,
    }
    return row


def load_rows(directory):
    """Every ``<host>.json`` row in ``directory``, sorted by host; unreadable files are skipped."""
    rows = []
    if not os.path.isdir(directory):
        return rows
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                row = json.load(f)
        except (IOError, OSError, ValueError):
            continue
        if isinstance(row, dict) and row.get("host"):
            rows.append(row)
    return sorted(rows, key=lambda r: str(r["host"]))


def summary(rows):
    """Counts per status plus the overall verdict of the run."""
    by = {}
    for r in rows:
        by[r.get("status")] = by.get(r.get("status"), 0) + 1
    failed = by.get("failed", 0) + by.get("incomplete", 0) + by.get("not-reached", 0)
    return {"hosts": len(rows), "by_status": by, "ok": failed == 0 and len(rows) > 0}


def fleet_report(directory, run_id=None):
    rows = load_rows(directory)
    return {"run_id": run_id, "summary": summary(rows), "hosts": rows}


def _private_dir(path):
    """Create ``path`` (and parents) 0700; an existing directory is left as it is. Several workers
    write their hosts' rows at once, so another one creating it first is no error."""
    os.makedirs(path, 0o700, exist_ok=True)
    return path


def write_row(run_dir, row):
    """Write one host's row as ``<run_dir>/hosts/<host>.json`` (0600, atomic). Returns its path."""
    host = str(row.get("host") or "")
    if not host or "/" in host or host in (".", ".."):
        raise ValueError("a report row needs a host name that is a plain file name, got %r" % host)
    path = os.path.join(_private_dir(os.path.join(run_dir, "hosts")), host + ".json")
    fileops.atomic_write(path, json.dumps(row, indent=4, sort_keys=True) + "\n", mode=0o600)
    return path


def publish(report_root, run_id):
    """Rebuild ``<report_root>/<run_id>/report.json`` and ``report.txt`` from every row written so
    far and point ``<report_root>/latest`` at this run. Returns the fleet report."""
    if not run_id or "/" in str(run_id) or str(run_id) in (".", ".."):
        raise ValueError("the run id must be a plain file name, got %r" % (run_id,))
    run_dir = _private_dir(os.path.join(report_root, str(run_id)))
    report = fleet_report(os.path.join(run_dir, "hosts"), run_id=run_id)
    fileops.atomic_write(os.path.join(run_dir, "report.json"),
                         json.dumps(report, indent=4, sort_keys=True) + "\n", mode=0o600)
    fileops.atomic_write(os.path.join(run_dir, "report.txt"), render_table(report["hosts"]), mode=0o600)
    latest = os.path.join(report_root, "latest")
    if not (os.path.islink(latest) and os.readlink(latest) == str(run_id)):
        tmp = "%s.%d.tmp" % (latest, os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(str(run_id), tmp)
        os.rename(tmp, latest)       # atomic: readers see the old run or the new one
    return report


def _cell(row, title, key):
    if key is not None:
        v = row.get(key)
    elif title == "version":
        v = "%s -> %s" % (row.get("version_before") or "?", row.get("version_after") or "?")
    elif title == "schema":
        v = "%s -> %s" % (row.get("schema_before") if row.get("schema_before") is not None else "?",
                          row.get("schema_after") if row.get("schema_after") is not None else "?")
    elif title == "memories":
        v = "%s -> %s" % (row.get("memories_before") if row.get("memories_before") is not None else "?",
                          row.get("memories_after") if row.get("memories_after") is not None else "?")
    elif title == "digest":
        d = row.get("digest_equal")
        v = "equal" if d is True else ("DIFFERS" if d is False else None)
    else:
        v = None
    if v is None:
        return "-"
    if v is True:
        return "yes"
    if v is False:
        return "NO"
    return str(v)


def render_table(rows):
    """A plain-text table of the rows (one line per host), then the failures spelled out."""
    rows = list(rows)
    cells = [[_cell(r, t, k) for t, k in TABLE_COLUMNS] for r in rows]
    titles = [t for t, _ in TABLE_COLUMNS]
    widths = [max([len(t)] + [len(c[i]) for c in cells]) for i, t in enumerate(titles)]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for c in cells:
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
    s = summary(rows)
    lines.append("")
    lines.append("%d host(s): %s" % (s["hosts"], ", ".join("%s %d" % (k, v) for k, v in sorted(s["by_status"].items()))))
    for r in rows:
        if r.get("status") in ("failed", "incomplete", "not-reached"):
            lines.append("%s: %s at %s: %s" % (r["host"], r.get("status"), r.get("failed_step") or "-",
                                                r.get("message") or "no result (unreachable or stopped before this host)"))
        if r.get("snapshot"):
            lines.append("%s: snapshot %s (sha256 %s)" % (r["host"], r["snapshot"], r.get("snapshot_sha256") or "-"))
    return "\n".join(lines) + "\n"
