"""A real nginx and small HTTP backends for the ``nginx`` balancer tests.

Once per session: three ``ThreadingHTTPServer`` backends on loopback ports BASE+1..BASE+3, each
answering its own instance number (``/slow`` answers after a pause), and a ``senex_scale.lab``
``Nginx`` (one worker, everything under a tmp dir, ``-p`` that dir) whose config includes
``upstream.conf`` and proxies ``127.0.0.1:PORT`` to upstream ``senex_web``. Before each test
the upstream file is reset to the empty placeholder and nginx reloaded. nginx is stopped and
the backends shut down at the end of the session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from senex_scale import lab
from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.lab.nginx import nginx_binary, proxy_http
from senex_scale.policy.models import Pool

UPSTREAM = "senex_web"
INSTANCES = (1, 2, 3)
SLOW = 1.5
"""Seconds a backend takes to answer ``/slow``."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(SLOW)
        body = str(self.server.instance).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Nginx(lab.Nginx):
    """The lab's nginx and what a balancer needs to drive it."""

    def __init__(self, root: Path, base: int) -> None:
        super().__init__(root, http=proxy_http(UPSTREAM))
        self.base = base
        """Backend instance n listens on ``base + n``."""

    @property
    def tmp(self) -> Path:
        return self.root

    @property
    def upstream_file(self) -> Path:
        return self.root / "upstream.conf"

    def pool(self) -> Pool:
        return Pool.model_validate({"min": 0, "max": 10, "port": self.base})

    def options(self, **overrides: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "upstream": UPSTREAM,
            "file": str(self.upstream_file),
            "nginx": nginx_binary(),
            "conf": str(self.conf),
            "prefix": str(self.root),
            "reload_timeout": "5s",
        }
        options.update(overrides)
        return options

    def balancer(self, **overrides: Any) -> NginxBalancer:
        return NginxBalancer("web", self.pool(), self.options(**overrides))

    def backend(self, n: int) -> str:
        """The address of backend instance ``n``."""
        return f"127.0.0.1:{self.base + n}"

    def get(self, path: str = "/", timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def hits(self, count: int = 12) -> list[str]:
        """Bodies of ``count`` requests through nginx (a new connection each)."""
        bodies = []
        for _ in range(count):
            response = self.get()
            assert response.status_code == 200, response.text
            bodies.append(response.text)
        return bodies


def _start_backends() -> tuple[int, list[ThreadingHTTPServer]]:
    for _ in range(20):
        base = lab.free_port_range(len(INSTANCES))
        servers: list[ThreadingHTTPServer] = []
        try:
            for n in INSTANCES:
                server = ThreadingHTTPServer(("127.0.0.1", base + n), _Handler)
                server.instance = n  # type: ignore[attr-defined]
                servers.append(server)
        except OSError:
            for server in servers:
                server.server_close()
            continue
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return base, servers
    pytest.fail("no free run of loopback ports for the backends")


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """The session's nginx, proxying to the backends through ``upstream.conf``."""
    base, backends = _start_backends()
    server = Nginx(tmp_path_factory.mktemp("nginx"), base)
    server.upstream_file.write_text(server.balancer().render([]))
    try:
        with server:
            yield server
    finally:
        for backend in backends:
            backend.shutdown()
            backend.server_close()


@pytest.fixture
def nginx(nginx_server: Nginx) -> Nginx:
    """The session's nginx with an empty upstream (the placeholder), reloaded."""
    nginx_server.upstream_file.write_text(nginx_server.balancer().render([]))
    nginx_server.reload()
    return nginx_server
