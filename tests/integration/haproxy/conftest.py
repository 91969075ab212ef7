"""A real HAProxy and small HTTP backends for the ``haproxy`` balancer tests.

Once per session: a ``senex_scale.lab`` ``HAProxy`` (admin socket ``mode 600 level admin``, a
frontend on a free loopback port, ``backend django_backend`` as in the seed's strategy, no
static servers), stopped at the end. Backends are
``ThreadingHTTPServer``s in threads: ``/health/`` answers 200, ``/`` the instance number,
``/slow?s=SECONDS`` the number after a pause. Each test gets a fresh balancer; the servers it
added are removed afterwards, so tests do not depend on each other's order.
"""

from __future__ import annotations

import contextlib
import http.client
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from senex_scale import lab
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.lab.haproxy import haproxy_binary, http_proxy
from senex_scale.policy.models import Pool

BACKEND = "django_backend"
SERVER_OPTIONS = "inter 200ms rise 1 fall 1"
"""Fast checks so a new server is UP within a fraction of a second."""


CONFIG = http_proxy(
    BACKEND,
    frontend="django_frontend",
    cookie="SERVERID",
    client_timeout="10s",
    server_timeout="10s",
)


class HAProxy(lab.HAProxy):
    """The lab's HAProxy, and requests through it."""

    def get(self, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
        """One request on a fresh connection: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def bodies(self, count: int) -> list[str]:
        """The bodies of ``count`` fresh-connection requests to ``/`` (errors as "STATUS")."""
        out = []
        for _ in range(count):
            status, body = self.get()
            out.append(body if status == 200 else str(status))
        return out


@pytest.fixture(scope="session")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAProxy]:
    """The session's HAProxy (restartable by tests; always stopped at the end)."""
    with HAProxy(tmp_path_factory.mktemp("haproxy"), conf=CONFIG) as proxy:
        yield proxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Backend

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health/":
            self._answer(b"ok")
        elif url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
            self._answer(str(self.server.n).encode())
        else:
            self._answer(str(self.server.n).encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Backend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, n: int) -> None:
        self.n = n
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when HAProxy cut the client (a server taken out mid-request: expected
        here); anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Backend:
    """One HTTP backend answering its instance number."""

    n: int
    server: _Backend

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="session")
def backends() -> Iterator[dict[int, Backend]]:
    """Backends 1..3, each in its own thread."""
    started: dict[int, Backend] = {}
    threads = []
    for n in (1, 2, 3):
        server = _Backend(n)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        threads.append(thread)
        started[n] = Backend(n, server)
    try:
        yield started
    finally:
        for backend in started.values():
            backend.server.shutdown()
            backend.server.server_close()
        for thread in threads:
            thread.join(5)


POOL = Pool(min=1, max=4)


def make_balancer(haproxy: HAProxy, **options: Any) -> HAProxyBalancer:
    """A balancer of pool "web" on the session's HAProxy (settings overridable)."""
    settings: dict[str, Any] = {
        "socket": str(haproxy.socket),
        "backend": BACKEND,
        "config": str(haproxy.config),
        "haproxy": haproxy_binary(),
        "server_options": SERVER_OPTIONS,
    }
    settings.update(options)
    return HAProxyBalancer("web", POOL, settings)


@pytest.fixture
def make(haproxy: HAProxy) -> Callable[..., HAProxyBalancer]:
    """``make(**settings)``: a balancer of pool "web" with some settings overridden."""
    return lambda **options: make_balancer(haproxy, **options)


@pytest.fixture
def balancer(haproxy: HAProxy) -> Iterator[HAProxyBalancer]:
    """A fresh balancer; every server of pool "web" is removed after the test."""
    haproxy.start()  # if a test stopped it
    lb = make_balancer(haproxy)
    yield lb
    haproxy.start()
    for member in lb.members():
        with contextlib.suppress(Exception):
            lb.remove(member.n)
