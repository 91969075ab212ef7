"""A metric a test sets: ``/metrics`` with ``senex_test_load VALUE`` on loopback, for a lab
Prometheus to scrape (the controller's integration stack and the fault suite)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoadGauge:
    """``/metrics`` with ``senex_test_load VALUE``; ``raw`` replaces the whole body (garbage)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.raw: str | None = None
        gauge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                text = gauge.raw
                if text is None:
                    text = f"# TYPE senex_test_load gauge\nsenex_test_load {gauge.value}\n"
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
