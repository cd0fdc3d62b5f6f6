"""``doctor`` health report (facts §3).

Flags: ``--remote URL``, ``--json`` (only AFTER ``doctor``; the global ``--json`` before the
subcommand does not switch to JSON), ``--fail-on-warn``, ``--tokens``, ``--profile P``,
``--raw-table``, and on v0.7.0 ``--hooks``.
Exit: 2 when overall is critical, 1 when warning and --fail-on-warn, else 0.
"""
import datetime
import json
import os
import socket
import time
import urllib.error
import urllib.request

from aimem_standin.common import (AppError, ArgSpec, ExitCode, config_is_v2, env_nonblank)
from aimem_standin import db as dbm
from aimem_standin import envparse

OWN_JSON = True
USAGE = "ai-memory doctor [OPTIONS]"
HELP = ("Health report\n\nOptions:\n      --remote <URL>\n      --json\n      --fail-on-warn\n"
        "      --tokens\n      --profile <PROFILE>\n      --raw-table")

NA, INFO, WARN, CRIT = "notavailable", "info", "warning", "critical"
RANK = {NA: 0, INFO: 1, WARN: 2, CRIT: 3}
LABEL = {NA: "N/A ", INFO: "INFO", WARN: "WARN", CRIT: "CRIT"}
COMPILED_DEFAULT_MODEL = "gemma4:e2b"
COMPILED_DEFAULT_BASE_URL = "http://localhost:11434"
VENDOR_KEY_ALIASES = {"xai": "XAI_API_KEY", "grok": "XAI_API_KEY", "openai": "OPENAI_API_KEY",
                      "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
                      "groq": "GROQ_API_KEY", "mistral": "MISTRAL_API_KEY",
                      "openrouter": "OPENROUTER_API_KEY"}
PROBE_TIMEOUT = 5.0


def section(name, severity, facts, note=None):
    s = {"name": name, "severity": severity, "facts": [[str(k), str(v)] for k, v in facts]}
    if note:
        s["note"] = note
    return s


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _age_secs(ts, now):
    dt = dbm.parse_rfc3339(ts)
    return None if dt is None else int((now - dt).total_seconds())


def _has_column(conn, table, col):
    return col in dbm.columns(conn, table)


def _http_opener():
    # never go through a proxy: the probes target loopback fakes in tests
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ----------------------------------------------------------------------------- local sections
def sec_storage(conn, path):
    now = _now()
    try:
        total = conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
        soon = dbm.rfc3339(now + datetime.timedelta(hours=1))
        expiring = conn.execute(
            "SELECT COUNT(*) FROM memories WHERE expires_at IS NOT NULL AND expires_at > ? "
            "AND expires_at <= ?", (dbm.rfc3339(now), soon)).fetchone()[0]
        links = conn.execute("SELECT COUNT(*) FROM memory_links").fetchone()[0]
        tiers = conn.execute("SELECT tier, COUNT(*) FROM memories GROUP BY tier "
                             "ORDER BY tier").fetchall()
        nss = conn.execute("SELECT namespace, COUNT(*) FROM memories GROUP BY namespace "
                           "ORDER BY COUNT(*) DESC, namespace LIMIT 10").fetchall()
        dimv = conn.execute(
            "SELECT COUNT(*) FROM memories WHERE embedding IS NOT NULL AND "
            "(embedding_dim IS NULL OR length(embedding) != embedding_dim * 4)").fetchone()[0]
    except Exception as e:
        return section("Storage", WARN, [("error", e)], "storage stats failed")
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    facts = [("total_memories", total), ("expiring_within_1h", expiring), ("links", links),
             ("db_size_bytes", size)]
    facts += [("tier::%s" % t, c) for t, c in tiers]
    facts += [("ns::%s" % n, c) for n, c in nss]
    facts.append(("dim_violations", dimv))
    if dimv > 0:
        return section("Storage", CRIT, facts,
                       "%d memories have an embedding whose length disagrees with "
                       "embedding_dim" % dimv)
    return section("Storage", INFO, facts)


def sec_index(conn):
    n = conn.execute("SELECT COUNT(*) FROM memories WHERE embedding IS NOT NULL").fetchone()[0]
    facts = [("hnsw_size_estimate", n),
             ("cold_start_rebuild_secs_estimate", "%.1f" % (n / 20000.0)),
             ("index_evictions_total", 0)]
    if n >= 95000:
        return section("Index", WARN, facts,
                       "HNSW index is near its 100000-entry ceiling; evictions will start")
    return section("Index", INFO, facts)


def sec_recall():
    return section("Recall", INFO, [("fts5", "enabled"), ("hybrid_recall", "enabled"),
                                    ("recall_latency_p95_ms", "n/a (no samples recorded)")])


def sec_governance(ctx, conn):
    now = _now()
    facts = []
    if ctx.build.is_v07:
        facts.append(("permissions_mode", ctx.permissions_mode))
        for mode in ("enforce", "advisory", "off"):
            c = conn.execute("SELECT COUNT(*) FROM audit_log WHERE event_type = 'decision' AND "
                             "attestation_tier = ?", (mode,)).fetchone()[0]
            facts.append(("decisions::%s" % mode, c))
    with_policy = conn.execute("SELECT COUNT(*) FROM namespace_meta WHERE standard_id IS NOT "
                               "NULL").fetchone()[0]
    without = conn.execute(
        "SELECT COUNT(DISTINCT namespace) FROM memories WHERE namespace NOT IN "
        "(SELECT namespace FROM namespace_meta WHERE standard_id IS NOT NULL)").fetchone()[0]
    parents = dict(conn.execute("SELECT namespace, parent_namespace FROM namespace_meta"))
    depth = 0
    for ns in parents:
        d, cur, seen = 0, parents.get(ns), set([ns])
        while cur and cur not in seen and d < 64:
            seen.add(cur)
            d += 1
            cur = parents.get(cur)
        depth = max(depth, d)
    pend = conn.execute("SELECT requested_at FROM pending_actions WHERE status = 'pending'"
                        ).fetchall()
    ages = [a for a in (_age_secs(r[0], now) for r in pend) if a is not None]
    oldest = max(ages) if ages else 0
    facts += [("namespaces_with_policy", with_policy), ("namespaces_without_policy", without),
              ("inheritance_depth", depth), ("oldest_pending_age_secs", oldest),
              ("pending_actions_total", len(pend))]
    if oldest > 86400:
        return section("Governance", CRIT, facts,
                       "oldest pending action has waited %ds (> 86400s); approve or reject it"
                       % oldest)
    return section("Governance", INFO, facts)


def sec_sync(conn):
    rows = conn.execute("SELECT peer_id, last_seen_at FROM sync_state").fetchall()
    if not rows:
        return section("Sync", NA, [("peers", 0)], "no sync peers configured")
    now = _now()
    skews = [a for a in (_age_secs(r[1], now) for r in rows) if a is not None]
    skew = max(skews) if skews else 0
    facts = [("peers", len(rows)), ("max_skew_secs", skew)]
    if skew > 600:
        return section("Sync", CRIT, facts, "a peer has not been seen for %ds (> 600s)" % skew)
    return section("Sync", INFO, facts)


def sec_webhook(conn):
    subs, disp, fail = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(dispatch_count), 0), COALESCE(SUM(failure_count), 0) "
        "FROM subscriptions").fetchone()
    rate = 100.0 if disp == 0 else max(0.0, 100.0 * (disp - fail) / disp)
    facts = [("subscriptions", subs), ("dispatches_total", disp), ("failures_total", fail),
             ("success_rate_pct", "%.1f" % rate)]
    if disp > 0 and rate < 95.0:
        return section("Webhook", WARN, facts,
                       "lifetime delivery success %.1f%% is below 95%%" % rate)
    return section("Webhook", INFO, facts)


def sec_capabilities_local():
    return section("Capabilities", NA, [("mode", "local")],
                   "capabilities are reported by a running daemon; use --remote <url>")


def sec_reflection(conn):
    if not _has_column(conn, "memories", "reflection_depth"):
        return section("Reflection Health", NA, [("reflection_depth", "column absent")],
                       "database schema predates reflection tracking")
    rows = conn.execute("SELECT namespace, MAX(reflection_depth) FROM memories "
                        "GROUP BY namespace").fetchall()
    max_depth = max([r[1] or 0 for r in rows] or [0])
    since = dbm.rfc3339(_now() - datetime.timedelta(hours=24))
    refusals = conn.execute(
        "SELECT COUNT(*) FROM audit_log WHERE event_type = 'reflection_depth_refused' AND "
        "timestamp >= ?", (since,)).fetchone()[0]
    deep = sorted(r[0] for r in rows if (r[1] or 0) >= 2)
    facts = [("max_reflection_depth", max_depth), ("depth_limit_refusals_24h", refusals),
             ("namespaces_at_depth_ge_2", len(deep))]
    if refusals or deep:
        return section("Reflection Health", WARN, facts,
                       "reflection depth limit reached (refusals=%d, namespaces=%s)"
                       % (refusals, ",".join(deep) or "-"))
    return section("Reflection Health", INFO, facts)


# ----------------------------------------------------------------------------- LLM (#1146)
def resolve_llm(ctx):
    """resolve_llm(): env > [llm] > legacy flat keys > compiled default."""
    cfg = ctx.reload_config()
    env = ctx.env
    llm = cfg.get("llm") if isinstance(cfg.get("llm"), dict) else None
    legacy_ok = not config_is_v2(cfg)
    leg_model = cfg.get("llm_model") if legacy_ok else None
    leg_url = cfg.get("ollama_url") if legacy_ok else None
    e_backend = env_nonblank(env, "AI_MEMORY_LLM_BACKEND")
    e_model = env_nonblank(env, "AI_MEMORY_LLM_MODEL")
    e_url = env_nonblank(env, "AI_MEMORY_LLM_BASE_URL")
    if e_backend or e_model or e_url:
        source = "env"
    elif llm is not None:
        source = "config"
    elif leg_model is not None or leg_url is not None:
        source = "legacy"
    else:
        source = "compiled-default"
    backend = (e_backend.strip().lower() if e_backend else None) or \
        (llm or {}).get("backend") or "ollama"
    model = e_model or (llm or {}).get("model") or leg_model or COMPILED_DEFAULT_MODEL
    base_url = e_url or (llm or {}).get("base_url") or leg_url or COMPILED_DEFAULT_BASE_URL
    key_source, key, key_error = "none", None, None
    if env_nonblank(env, "AI_MEMORY_LLM_API_KEY"):
        key_source, key = "process-env", env["AI_MEMORY_LLM_API_KEY"]
    elif VENDOR_KEY_ALIASES.get(backend) and env_nonblank(env, VENDOR_KEY_ALIASES[backend]):
        key_source, key = "alias-fallback", env[VENDOR_KEY_ALIASES[backend]]
    elif llm and llm.get("api_key_env"):
        name = llm["api_key_env"]
        if env_nonblank(env, name):
            key_source, key = "config-env-var", env[name]
        else:
            key_source, key_error = "error", "[llm].api_key_env = \"%s\" is not set" % name
    elif llm and llm.get("api_key_file"):
        p = llm["api_key_file"]
        try:
            mode = os.stat(p).st_mode & 0o777
            if mode & 0o077 and not envparse.lax_perms_api_key_file(env):
                key_source = "error"
                key_error = (
                    "[llm].api_key_file = \"%s\" has lax permissions (mode = %o; expected 0400 "
                    "or stricter). Run `chmod 0400 %s` to fix, or set "
                    "AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS=1 to bypass (NOT recommended "
                    "for production)." % (p, mode, p))
            else:
                with open(p) as fh:
                    key = fh.read().strip()
                key_source = "config-file"
        except OSError as e:
            key_source, key_error = "error", "[llm].api_key_file = \"%s\": %s" % (
                p, e.strerror or e)
    return {"backend": backend, "model": model, "base_url": base_url, "source": source,
            "key_source": key_source, "key": key, "key_error": key_error}


def probe(url, key=None, timeout=PROBE_TIMEOUT):
    """Return (status or None, latency_ms, error or None)."""
    req = urllib.request.Request(url, method="GET")
    if key:
        req.add_header("Authorization", "Bearer %s" % key)
    t0 = time.monotonic()
    try:
        with _http_opener().open(req, timeout=timeout) as resp:
            resp.read(65536)
            return resp.status, int((time.monotonic() - t0) * 1000), None
    except urllib.error.HTTPError as e:
        return e.code, int((time.monotonic() - t0) * 1000), None
    except (urllib.error.URLError, socket.timeout, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return None, int((time.monotonic() - t0) * 1000), "error sending request for url " \
            "(%s): %s" % (url, reason)


def sec_llm(ctx):
    r = resolve_llm(ctx)
    facts = [("backend", r["backend"]), ("model", r["model"]), ("base_url", r["base_url"]),
             ("config_source", r["source"]), ("key_source", r["key_source"])]
    if r["key_error"]:
        facts.append(("key_error", r["key_error"]))
    if r["source"] == "compiled-default":
        return section("LLM Reachability (#1146)", INFO, facts,
                       "no LLM configured (compiled default); reachability probe skipped")
    base = r["base_url"].rstrip("/")
    if r["backend"] == "ollama":
        url, key = base + "/api/tags", None
    else:
        url, key = base + "/models", r["key"]
    facts.append(("probe_url", url))
    status, latency, err = probe(url, key)
    if status is None:
        facts.append(("error", err))
        return section("LLM Reachability (#1146)", CRIT, facts,
                       "LLM endpoint unreachable — recall enrichment, auto-tagging and "
                       "consolidation will fail")
    facts += [("http_status", status), ("latency_ms", latency)]
    if 200 <= status < 300:
        return section("LLM Reachability (#1146)", INFO, facts)
    if status in (401, 403, 429) or status >= 500:
        return section("LLM Reachability (#1146)", WARN, facts,
                       "LLM endpoint answered HTTP %d" % status)
    if 400 <= status < 500:
        return section("LLM Reachability (#1146)", CRIT, facts,
                       "LLM endpoint answered HTTP %d (misconfigured base_url or model?)"
                       % status)
    return section("LLM Reachability (#1146)", WARN, facts,
                   "unexpected HTTP %d from the LLM endpoint" % status)


# ----------------------------------------------------------------------------- modes
def local_report(ctx):
    path = ctx.db_path()
    try:
        conn = ctx.open_db(path)
    except AppError as e:
        return path, [section("Storage", CRIT, [("error", e.msg)],
                              "could not open database at %s — every other section is N/A"
                              % path)]
    try:
        secs = [sec_storage(conn, path), sec_index(conn), sec_recall(),
                sec_governance(ctx, conn), sec_sync(conn), sec_webhook(conn),
                sec_capabilities_local()]
        if ctx.build.doctor_sections >= 8:
            secs.append(sec_reflection(conn))
    finally:
        conn.close()
    if ctx.build.has_llm_reachability:
        secs.append(sec_llm(ctx))
    return path, secs


def _get_json(url, timeout=5.0):
    with _http_opener().open(urllib.request.Request(url, method="GET"),
                             timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8") or "null")


def remote_report(ctx, base):
    base = base.rstrip("/")
    src = "%s (local db reference: %s)" % (base, ctx.db_path())
    try:
        caps = _get_json(base + "/api/v1/capabilities")
        cap = section("Capabilities", INFO,
                      sorted((k, v if isinstance(v, str) else json.dumps(v))
                             for k, v in (caps or {}).items()))
    except Exception as e:
        cap = section("Capabilities", CRIT, [("error", e)], "could not reach %s" % base)
    try:
        st = _get_json(base + "/api/v1/stats")
        storage = section("Storage", INFO,
                          [("total_memories", st.get("total", 0)),
                           ("links", st.get("links_count", 0)),
                           ("db_size_bytes", st.get("db_size_bytes", 0))])
    except Exception as e:
        storage = section("Storage", NA, [("error", e)], "could not fetch %s/api/v1/stats"
                          % base)
    secs = [cap, sec_recall(), storage]
    for name in ("Index", "Governance", "Sync", "Webhook"):
        secs.append(section(name, NA, [], "not available in remote mode"))
    return src, secs


def render_text(ctx, report):
    ctx.out("ai-memory doctor — %s mode" % report["mode"])
    ctx.out("source:       %s" % report["source"])
    ctx.out("generated_at: %s" % report["generated_at"])
    ctx.out("")
    for s in report["sections"]:
        ctx.out("[%s] %s" % (LABEL[s["severity"]], s["name"]))
        for k, v in s["facts"]:
            ctx.out("       %-34s %s" % (k, v))
        if "note" in s:
            ctx.out("       note: %s" % s["note"])
    ctx.out("")
    ctx.out("overall: %s" % LABEL[report["overall"]].strip())


def run(ctx, argv):
    flags = ["--json", "--fail-on-warn", "--tokens", "--raw-table"]
    if ctx.build.is_v07:
        flags.append("--hooks")
    a = ArgSpec(USAGE, flags=flags, options={"--remote": "URL", "--profile": "PROFILE"}
                ).parse(argv)
    if a["--tokens"] or a["--raw-table"] or a.get("--hooks"):
        raise AppError("doctor --tokens/--raw-table/--hooks reports are not implemented by "
                       "the stand-in")
    if a["--remote"]:
        mode = "remote"
        source, secs = remote_report(ctx, a["--remote"])
    else:
        mode = "local"
        source, secs = local_report(ctx)
    overall = NA
    for s in secs:
        if RANK[s["severity"]] > RANK[overall]:
            overall = s["severity"]
    report = {"mode": mode, "source": source, "generated_at": dbm.rfc3339(_now()),
              "sections": secs, "overall": overall}
    if a["--json"]:
        ctx.out(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        render_text(ctx, report)
    if overall == CRIT:
        raise ExitCode(2)
    if overall == WARN and a["--fail-on-warn"]:
        raise ExitCode(1)
    return 0
