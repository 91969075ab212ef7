"""A real HAProxy and small HTTP backends for the ``haproxy`` balancer tests.

Once per session: a config in a tmp dir (admin socket ``mode 600 level admin``, a frontend on a
free loopback port, ``backend django_backend`` as in the seed's strategy, no static servers)
and ``haproxy -db`` in the foreground as a child process, killed at the end. Backends are
``ThreadingHTTPServer``s in threads: ``/health/`` answers 200, ``/`` the instance number,
``/slow?s=SECONDS`` the number after a pause. Each test gets a fresh balancer; the servers it
added are removed afterwards, so tests do not depend on each other's order.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.policy.models import Pool
from senex_scale.testing import free_port, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BACKEND = "django_backend"
SERVER_OPTIONS = "inter 200ms rise 1 fall 1"
"""Fast checks so a new server is UP within a fraction of a second."""


CONFIG = """\
global
    stats socket {sock} mode 600 level admin expose-fd listeners
    stats timeout 10s

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout http-keep-alive 10s

frontend django_frontend
    bind 127.0.0.1:{port}
    default_backend {backend}

backend {backend}
    balance roundrobin
    cookie SERVERID insert indirect nocache
    option httpchk GET /health/
    http-check expect status 200
"""


@dataclass
class HAProxy:
    """One foreground ``haproxy -db`` process and its files."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "admin.sock"

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def log(self) -> Path:
        return self.root / "haproxy.log"

    def start(self) -> None:
        """Start HAProxy with the config as it is now; wait for the socket to answer."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)], stdout=log, stderr=log
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"haproxy exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(str(self.socket))
                    sock.sendall(b"show info\n")
                    return b"Name: HAProxy" in sock.recv(4096)
            except OSError:
                return False

        wait_until(ready, 10, "haproxy's admin socket")

    def stop(self) -> None:
        """Kill HAProxy (SIGKILL: no graceful stop needed) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

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
    """The session's HAProxy (restartable by tests; always killed at the end)."""
    root = tmp_path_factory.mktemp("haproxy")
    proxy = HAProxy(root=root, port=free_port())
    proxy.config.write_text(CONFIG.format(sock=proxy.socket, port=proxy.port, backend=BACKEND))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


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
        "haproxy": HAPROXY,
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
    if haproxy.proc is None or haproxy.proc.poll() is not None:
        haproxy.start()
    lb = make_balancer(haproxy)
    yield lb
    if haproxy.proc is None or haproxy.proc.poll() is not None:
        haproxy.start()
    for member in lb.members():
        with contextlib.suppress(Exception):
            lb.remove(member.n)
