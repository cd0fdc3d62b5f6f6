"""``stats [--json]`` — counts (opens, and therefore migrates, the DB)."""
import datetime
import json
import os

from aimem_standin.common import ArgSpec
from aimem_standin import db as dbm

OWN_JSON = False
HELP = "Show memory statistics\n\nOptions:\n      --json  Print JSON"
SPEC = ArgSpec("ai-memory stats [OPTIONS]")


def collect(conn, path):
    total = conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
    by_tier = [{"tier": t, "count": c} for t, c in conn.execute(
        "SELECT tier, COUNT(*) FROM memories GROUP BY tier ORDER BY tier")]
    by_ns = [{"namespace": n, "count": c} for n, c in conn.execute(
        "SELECT namespace, COUNT(*) FROM memories GROUP BY namespace "
        "ORDER BY COUNT(*) DESC, namespace")]
    soon = dbm.rfc3339(datetime.datetime.now(datetime.timezone.utc)
                       + datetime.timedelta(hours=1))
    expiring = conn.execute(
        "SELECT COUNT(*) FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ?",
        (soon,)).fetchone()[0]
    links = conn.execute("SELECT COUNT(*) FROM memory_links").fetchone()[0]
    archived = conn.execute("SELECT COUNT(*) FROM archived_memories").fetchone()[0]
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return {"total": total, "by_tier": by_tier, "by_namespace": by_ns,
            "expiring_soon": expiring, "links_count": links, "archived": archived,
            "db_size_bytes": size}


def run(ctx, argv):
    SPEC.parse(argv)
    path = ctx.db_path()
    conn = ctx.open_db(path)
    try:
        st = collect(conn, path)
    finally:
        conn.close()
    if ctx.opts.json:
        ctx.out(json.dumps(st))
        return 0
    ctx.out("Total memories: %d" % st["total"])
    for t in st["by_tier"]:
        ctx.out("  %-6s %d" % (t["tier"] + ":", t["count"]))
    ctx.out("Namespaces: %d" % len(st["by_namespace"]))
    for n in st["by_namespace"][:10]:
        ctx.out("  %s: %d" % (n["namespace"], n["count"]))
    ctx.out("Expiring within 1h: %d" % st["expiring_soon"])
    ctx.out("Links: %d" % st["links_count"])
    ctx.out("Archived: %d" % st["archived"])
    ctx.out("DB size: %d bytes" % st["db_size_bytes"])
    return 0
