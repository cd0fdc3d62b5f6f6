#!/usr/bin/env python3
"""A fake Ollama / OpenAI-compatible endpoint on loopback for ``doctor``'s LLM section.

    with fake_llm(status=200) as url:      # url = "http://127.0.0.1:<port>"
        ...  # [llm] base_url = url  ->  GET <url>/api/tags answers 200 JSON

``status`` may be changed while running (``handle.status = 503``) via :func:`fake_llm_handle`.
``GET /api/tags`` (ollama) and ``GET /models`` / ``/v1/models`` (OpenAI style) answer with the
configured status; every request is recorded in ``handle.requests`` as (path, headers dict).

CLI: ``python tests/standin/fake_llm.py [--status 200] [--port 0]`` prints the URL and serves until
SIGINT/SIGTERM.
"""
import argparse
import contextlib
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TAGS = {"models": [{"name": "gemma4:e2b", "model": "gemma4:e2b", "size": 1234567890,
                    "digest": "sha256:" + "0" * 64,
                    "details": {"family": "gemma", "parameter_size": "2B"}}]}
MODELS = {"object": "list", "data": [{"id": "grok-4", "object": "model"}]}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        return

    def do_GET(self):
        srv = self.server
        path = self.path.split("?", 1)[0]
        srv.requests.append((path, dict(self.headers.items())))
        if path == "/api/tags":
            body = TAGS
        elif path in ("/models", "/v1/models"):
            body = MODELS
        else:
            self._send(404, {"error": "not found"})
            return
        status = srv.status
        self._send(status, body if 200 <= status < 300 else {"error": "fake status %d" % status})

    def _send(self, code, obj):
        data = json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class Handle(object):
    def __init__(self, srv):
        self._srv = srv
        self.url = "http://127.0.0.1:%d" % srv.server_address[1]

    @property
    def status(self):
        return self._srv.status

    @status.setter
    def status(self, value):
        self._srv.status = int(value)

    @property
    def requests(self):
        return self._srv.requests


def start(status=200, port=0):
    srv = _Server(("127.0.0.1", port), _Handler)
    srv.status = int(status)
    srv.requests = []
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    return srv


@contextlib.contextmanager
def fake_llm_handle(status=200, port=0):
    srv = start(status, port)
    try:
        yield Handle(srv)
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def fake_llm(status=200, port=0):
    with fake_llm_handle(status, port) as h:
        yield h.url


def main(argv=None):
    ap = argparse.ArgumentParser(description="fake Ollama endpoint on 127.0.0.1")
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    srv = start(a.status, a.port)
    print("http://127.0.0.1:%d" % srv.server_address[1], flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    while not stop.wait(0.5):
        pass
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
