"""``serve [--host H] [--port P]`` — foreground HTTP daemon (facts §5.4, §2.9, §9).

* Opens (and migrates) the DB and keeps the connection open while running.
* ``GET /api/v1/health`` -> ``{"status","service","version","embedder_ready",
  "federation_enabled"}`` (200, or 503 when the DB stops answering); also ``/api/v1/capabilities``
  and ``/api/v1/stats`` for ``doctor --remote``.
* SIGINT -> ``PRAGMA wal_checkpoint(TRUNCATE)``, close, exit 0.  SIGTERM keeps the default
  disposition (the process dies, no checkpoint, the ``-wal`` file stays) like upstream.
* v0.7.0: refuses a keyless non-loopback bind (and a keyless loopback bind under
  ``AI_MEMORY_REQUIRE_API_KEY=1|true``); ensures the ``daemon`` keypair; appends a signed
  ``daemon_start`` event.
* Test hook ``AIMEM_STANDIN_IGNORE_SIGINT=1``: SIGINT and SIGTERM are ignored.
"""
import ipaddress
import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aimem_standin.common import AppError, ArgSpec, env_one_or_true, parse_int

OWN_JSON = False
USAGE = "ai-memory serve [OPTIONS]"
DEFAULT_PORT = 9077
HELP = ("Run the HTTP daemon\n\nOptions:\n      --host <HOST>  [default: 127.0.0.1]\n"
        "      --port <PORT>  [default: 9077]\n"
        "      --shutdown-grace-secs <SECS>  [default: 30]")
SPEC = ArgSpec(USAGE, options={"--host": "HOST", "--port": "PORT",
                               "--shutdown-grace-secs": "SECS", "--tls-cert": "PATH",
                               "--tls-key": "PATH", "--mtls-ca": "PATH", "--quorum": "N"})


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_guard(ctx, host):
    api_key = ctx.config.get("api_key")
    has_key = isinstance(api_key, str) and api_key != ""
    if has_key:
        return
    if not is_loopback(host):
        raise AppError(
            "refusing to bind to non-loopback address \"%s\" without an API key — set a "
            "top-level `api_key` in %s (or bind to 127.0.0.1)"
            % (host, ctx.config_path or "~/.config/ai-memory/config.toml"))
    if env_one_or_true(ctx.env, "AI_MEMORY_REQUIRE_API_KEY"):
        raise AppError(
            "refusing to bind to \"%s\" without an API key (AI_MEMORY_REQUIRE_API_KEY is set)"
            % host)


class _Handler(BaseHTTPRequestHandler):
    server_version = "ai-memory"
    sys_version = ""

    def log_message(self, fmt, *args):  # keep stdout/stderr clean
        return

    def _send(self, code, obj):
        body = json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self):
        key = self.server.api_key
        if not key:
            return True
        given = self.headers.get("x-api-key")
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return given == key

    def do_GET(self):
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/api/v1/health":
            ok = app.db_ok()
            self._send(200 if ok else 503, {
                "status": "ok" if ok else "error", "service": "ai-memory",
                "version": app.ctx.build.version, "embedder_ready": False,
                "federation_enabled": False})
            return
        if not self._authorised():
            self._send(401, {"error": "missing or invalid API key"})
            return
        if path == "/api/v1/capabilities":
            self._send(200, app.capabilities())
        elif path == "/api/v1/stats":
            try:
                self._send(200, app.stats())
            except Exception as e:
                self._send(500, {"error": str(e)})
        else:
            self._send(404, {"error": "not found: %s" % path})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class App(object):
    def __init__(self, ctx, conn, path):
        self.ctx = ctx
        self.conn = conn
        self.path = path
        self.lock = threading.Lock()

    def db_ok(self):
        try:
            with self.lock:
                self.conn.execute("SELECT 1 FROM schema_version LIMIT 1").fetchall()
            return True
        except Exception:
            return False

    def capabilities(self):
        from aimem_standin import db as dbm
        with self.lock:
            n = dbm.schema_version(self.conn)
        b = self.ctx.build
        caps = {"version": b.version, "schema_version": n, "tier": "semantic",
                "embedder_ready": False, "federation_enabled": False}
        if b.is_v07:
            caps["permissions_mode"] = self.ctx.permissions_mode
        return caps

    def stats(self):
        from aimem_standin.cmd_stats import collect
        with self.lock:
            return collect(self.conn, self.path)


def _ensure_daemon_key(ctx):
    """v0.7.0: ensure_keypair(default key dir, "daemon") with the first-start WARN.

    Returns the 32-byte public key (or None when the key module is unavailable)."""
    try:
        from aimem_standin import keys
    except ImportError:  # pragma: no cover - keys.py is written by helper standin-v070
        return None
    try:
        key_dir = keys.default_key_dir(ctx.env)
        pub, priv, created = keys.ensure_keypair(key_dir, "daemon")
        with open(pub, "rb") as fh:
            pub_bytes = fh.read()
    except (OSError, getattr(keys, "KeystoreError", OSError)) as e:
        raise AppError("daemon identity keypair: %s" % e)
    if created:
        ctx.out("WARN auto-generated identity keypair at %s — consider backing up" % priv)
    return pub_bytes


def _append_start_event(ctx, conn, host, port, public_key):
    try:
        from aimem_standin import signed_events
    except ImportError:  # pragma: no cover - written by helper standin-v070
        return
    payload = json.dumps({"event": "daemon_start", "host": host, "port": port,
                          "pid": os.getpid(), "version": ctx.build.version},
                         sort_keys=True).encode("utf-8")
    signed_events.append_event(conn, "daemon", "daemon_start", payload, public_key=public_key)


def run(ctx, argv):
    a = SPEC.parse(argv)
    host = a["--host"] or "127.0.0.1"
    port = parse_int(a["--port"], "--port <PORT>", USAGE, lo=0, hi=65535) \
        if a["--port"] is not None else DEFAULT_PORT
    b = ctx.build
    ignore = ctx.env.get("AIMEM_STANDIN_IGNORE_SIGINT") == "1"
    if b.is_v07:
        bind_guard(ctx, host)
    path = ctx.db_path()
    conn = ctx.open_db(path)
    stop = threading.Event()
    if ignore:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, lambda s, f: stop.set())
        # SIGTERM: default disposition on purpose (no handler upstream)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        _Server.address_family = family
        try:
            srv = _Server((host.strip("[]"), port), _Handler)
        except OSError as e:
            raise AppError("bind %s:%d: %s" % (host, port, e.strerror or e))
        srv.app = App(ctx, conn, path)
        api_key = ctx.config.get("api_key")
        srv.api_key = api_key if isinstance(api_key, str) and api_key else None
        real_port = srv.server_address[1]
        if b.is_v07:
            ctx.out("permissions: %s" % ctx.permissions_mode)
            perms = ctx.config.get("permissions")
            if not (isinstance(perms, dict) and "mode" in perms):
                ctx.out("WARN v0.7.0 default changed to enforce; set permissions.mode=advisory "
                        "in config to opt out — see release notes.")
            pub_bytes = _ensure_daemon_key(ctx)
            with srv.app.lock:
                _append_start_event(ctx, conn, host, real_port, pub_bytes)
        ctx.out("database: %s" % path)
        ctx.out("ai-memory listening on http://%s:%d" % (host, real_port))
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2})
        t.daemon = True
        t.start()
        while not stop.wait(0.5):
            pass
        # SIGINT: graceful shutdown with a WAL checkpoint
        srv.shutdown()
        srv.server_close()
        with srv.app.lock:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        ctx.out("shutdown: wal checkpointed, bye")
    finally:
        conn.close()
    return 0
