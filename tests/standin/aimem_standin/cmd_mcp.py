"""``mcp`` — stdio MCP server (opens and migrates the DB, holds it open until stdin EOF,
SIGINT or SIGTERM).  Answers ``initialize``, ``ping`` and ``tools/list`` minimally; every other
request gets JSON-RPC error -32601.  Hook ``AIMEM_STANDIN_IGNORE_SIGINT=1`` ignores SIGINT and
SIGTERM (stdin EOF still ends it)."""
import json
import signal
import sys

from aimem_standin.common import ArgSpec

OWN_JSON = False
USAGE = "ai-memory mcp [OPTIONS]"
HELP = "Run the MCP server on stdio\n\nOptions:\n      --tier <TIER>\n      --profile <PROFILE>"
SPEC = ArgSpec(USAGE, options={"--tier": "TIER", "--profile": "PROFILE"})


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def _reply(msg_id, result=None, error=None):
    out = {"jsonrpc": "2.0", "id": msg_id}
    if error is not None:
        out["error"] = error
    else:
        out["result"] = result
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def run(ctx, argv):
    SPEC.parse(argv)
    conn = ctx.open_db()
    if ctx.env.get("AIMEM_STANDIN_IGNORE_SIGINT") == "1":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, _raise_stop)
        signal.signal(signal.SIGTERM, _raise_stop)
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                _reply(None, error={"code": -32700, "message": "parse error"})
                continue
            if not isinstance(msg, dict) or "id" not in msg:
                continue  # notification
            method = msg.get("method")
            if method == "initialize":
                _reply(msg["id"], {"protocolVersion": "2024-11-05",
                                   "serverInfo": {"name": "ai-memory",
                                                  "version": ctx.build.version},
                                   "capabilities": {"tools": {}}})
            elif method == "ping":
                _reply(msg["id"], {})
            elif method == "tools/list":
                _reply(msg["id"], {"tools": []})
            else:
                _reply(msg["id"], error={"code": -32601,
                                         "message": "method not found: %s" % method})
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        conn.close()
    return 0
