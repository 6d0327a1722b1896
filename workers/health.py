"""The worker's own HTTP port (HERALD_METRICS_PORT): `/healthz`, `/readyz` and `/metrics`, as the
API answers them, for a supervisor's probes.

A thread of its own, so it answers whatever the worker's event loop is doing: `/healthz` is 200
while the process runs, `/readyz` 200 only while the process's probes find PostgreSQL and Redis
answering (service/backends/breaker.py), and a worker waiting for a backend at start is alive but not ready.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec

from service.metrics import render as render_metrics
from service.process import Watch

_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def serve(host: str, port: int, watch: Watch) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._answer(200, msgspec.json.encode({"status": "ok"}), "application/json")
            elif path == "/readyz":
                states = {b.name: "ok" if b.ready else "unavailable: not answering" for b in watch.breakers}
                ready = all(state == "ok" for state in states.values())
                body = msgspec.json.encode({"status": "ready" if ready else "unavailable", **states})
                self._answer(200 if ready else 503, body, "application/json")
            elif path == "/metrics":
                self._answer(200, render_metrics(), _METRICS_TYPE)
            else:
                self._answer(404, msgspec.json.encode({"error": "Not Found", "status": 404}), "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: no log
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="herald-health", daemon=True).start()
    return server
