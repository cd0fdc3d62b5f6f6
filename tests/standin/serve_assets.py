#!/usr/bin/env python3
"""Serve a release mirror (``build.py`` output) over HTTP on loopback.

    with serve(os.path.join(out, "mirror")) as base_url:
        # base_url + "/v0.7.0/ai-memory-x86_64-unknown-linux-gnu.tar.gz"

CLI: ``python tests/standin/serve_assets.py DIR [--host 127.0.0.1] [--port 0]`` prints the base URL
and serves until SIGINT/SIGTERM.  Only loopback hosts are accepted.  Requests are recorded in
``server.requests`` (list of paths) for assertions; available as the context value's
``.requests`` via :func:`serve_with_log`.
"""
import argparse
import contextlib
import functools
import ipaddress
import signal
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


def _check_loopback(host):
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError("refusing to serve on non-loopback address %s" % host)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        return

    def do_GET(self):
        self.server.requests.append(self.path)
        return SimpleHTTPRequestHandler.do_GET(self)

    def do_HEAD(self):
        self.server.requests.append(self.path)
        return SimpleHTTPRequestHandler.do_HEAD(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def start(directory, host="127.0.0.1", port=0):
    """Start in a background thread; returns (server, base_url).  Call ``server.shutdown()``."""
    _check_loopback(host)
    handler = functools.partial(_QuietHandler, directory=str(directory))
    srv = _Server((host, port), handler)
    srv.requests = []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return srv, "http://%s:%d" % (host, srv.server_address[1])


@contextlib.contextmanager
def serve_with_log(directory, host="127.0.0.1", port=0):
    srv, url = start(directory, host, port)
    try:
        yield url, srv.requests
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def serve(directory, host="127.0.0.1", port=0):
    with serve_with_log(directory, host, port) as (url, _requests):
        yield url


def main(argv=None):
    ap = argparse.ArgumentParser(description="serve a release mirror on loopback")
    ap.add_argument("directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    srv, url = start(a.directory, a.host, a.port)
    print(url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    while not stop.wait(0.5):
        pass
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
