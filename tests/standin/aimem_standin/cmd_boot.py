"""``boot`` banner (facts §5.6; same format in both versions).  Always exits 0."""
import json
import time

from aimem_standin.common import AppError, ArgSpec, parse_int
from aimem_standin import db as dbm

OWN_JSON = False
USAGE = "ai-memory boot [OPTIONS]"
HELP = ("Print the session-start context banner\n\nOptions:\n"
        "      --namespace <NAMESPACE>\n      --limit <LIMIT>  [default: 10]\n"
        "      --budget-tokens <BUDGET_TOKENS>  [default: 4096]\n"
        "      --format <FORMAT>  [default: text] [possible values: text, json, toon]\n"
        "      --no-header\n      --quiet\n      --cwd <CWD>")
SPEC = ArgSpec(USAGE, flags=["--no-header", "--quiet"],
               options={"--namespace": "NAMESPACE", "--limit": "LIMIT",
                        "--budget-tokens": "BUDGET_TOKENS", "--format": "FORMAT",
                        "--cwd": "CWD"})


def boot_disabled(ctx):
    v = ctx.env.get("AI_MEMORY_BOOT_ENABLED")
    if v is not None and v.strip().lower() in ("0", "false", "no", "off"):
        return True
    boot = ctx.config.get("boot")
    return isinstance(boot, dict) and boot.get("enabled") is False


def run(ctx, argv):
    a = SPEC.parse(argv)
    fmt = a["--format"] or "text"
    if fmt not in ("text", "json", "toon"):
        from aimem_standin.common import UsageError
        raise UsageError("invalid value '%s' for '--format <FORMAT>'\n  [possible values: "
                         "text, json, toon]" % fmt, USAGE)
    limit = parse_int(a["--limit"], "--limit <LIMIT>", USAGE) if a["--limit"] else 10
    limit = max(1, min(50, limit))
    if a["--budget-tokens"]:
        parse_int(a["--budget-tokens"], "--budget-tokens <BUDGET_TOKENS>", USAGE)
    if boot_disabled(ctx):
        return 0
    t0 = time.monotonic()
    b = ctx.build
    path = ctx.db_path()
    namespace = a["--namespace"] or "global"
    tier = ctx.config.get("tier") if isinstance(ctx.config.get("tier"), str) else "semantic"
    res = {"status": "ok", "version": b.version, "db_path": path, "schema_version": "v0",
           "schema_supported": False, "total_memories": "0", "tier": tier,
           "embedder": "none", "reranker": "off", "llm": "none", "latency_ms": 0,
           "namespace": namespace, "count": 0, "note": ""}
    memories = []
    fell_back = False
    try:
        conn = ctx.open_db(path)
    except AppError as e:
        res["status"] = "warn"
        res["note"] = "could not open db: %s; proceeding without memory context." % e.msg
        conn = None
    if conn is not None:
        try:
            n = dbm.schema_version(conn)
            total = conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
            res["schema_version"] = "v%d" % n
            res["total_memories"] = str(total)
            supported = b.min_supported_schema <= n <= b.schema_target
            res["schema_supported"] = supported

            def fetch(ns):
                return conn.execute(
                    "SELECT id, tier, namespace, title, content, priority FROM memories "
                    "WHERE namespace = ? ORDER BY priority DESC, updated_at DESC LIMIT ?",
                    (ns, limit)).fetchall()
            rows = fetch(namespace)
            if not rows and namespace != "global":
                rows = fetch("global")
                fell_back = bool(rows)
            memories = [{"id": r[0], "tier": r[1], "namespace": r[2], "title": r[3],
                         "content": r[4][:400], "priority": r[5]} for r in rows]
            if not supported:
                res["status"] = "warn"
                res["note"] = (
                    "db schema v%d unsupported by binary %s (supports v%d..v%d); proceeding "
                    "with degraded context. Run `ai-memory doctor` and consider upgrading."
                    % (n, b.version, b.min_supported_schema, b.schema_target))
            elif not memories:
                res["status"] = "info"
                res["note"] = "no memories in namespace %s yet." % namespace
        finally:
            conn.close()
    res["count"] = len(memories)
    res["latency_ms"] = int((time.monotonic() - t0) * 1000)
    if memories:
        res["fell_back_to_global"] = fell_back
        res["memories"] = memories
    if fmt == "json":
        ctx.out(json.dumps(res, separators=(",", ":"), ensure_ascii=False))
        return 0
    if a["--quiet"] and not memories:
        return 0
    if not a["--no-header"]:
        ctx.out("# ai-memory boot: %s" % res["status"])
        ctx.out("#   version:    %s" % res["version"])
        ctx.out("#   db:         %s (schema=%s, %s memories)"
                % (path, res["schema_version"], res["total_memories"]))
        ctx.out("#   tier:       %s (embedder=%s, reranker=%s, llm=%s)"
                % (tier, res["embedder"], res["reranker"], res["llm"]))
        ctx.out("#   latency:    %dms" % res["latency_ms"])
        ctx.out("#   namespace:  %s%s" % (namespace, " (fell back to global)" if fell_back
                                          else ""))
        if res["note"]:
            ctx.out("#   note:       %s" % res["note"])
    for m in memories:
        if fmt == "toon":
            ctx.out("%s|%s|%s" % (m["tier"], m["title"], m["content"].replace("\n", " ")))
        else:
            ctx.out("- [%s] %s: %s" % (m["tier"], m["title"], m["content"].replace("\n", " ")))
    return 0
