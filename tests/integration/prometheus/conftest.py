"""Instances exposing /metrics and a real Prometheus scraping them, for the Prometheus-family
sources (``prometheus``, ``scrape``) and the host sources (``process``, ``disk``).

Once per session: three ``prometheus_client`` HTTP servers on loopback act as instances 1..3
of a pool with ``port = "BASE + n"`` (max 5: instances 4 and 5 are not running), each exposing
known gauges and the process collector, and a ``senex_scale.lab`` ``Prometheus`` (1 s scrape and
evaluation interval, its TSDB in a temporary directory) scraping them as job ``django``. The
session waits (at most 30 s) until ``up`` shows the three targets up. Tests that stop a
Prometheus or an instance start their own through the factories. Everything is stopped at
the end of the session.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, start_http_server

from senex_scale import lab
from senex_scale.policy.models import Pool
from senex_scale.testing import wait_until as shared_wait_until

READY_TIMEOUT = 30.0
CONNECTIONS = {1: 10.0, 2: 20.0, 3: 30.0}
"""``senex_websocket_connections`` of instances 1..3."""
STEADY = 50.0
"""Value of ``senex_changing_value`` except while the push-down test lowers it."""


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """``wait_until`` every 100 ms that treats HTTP, socket and parse errors as "not yet"."""
    shared_wait_until(
        check, timeout, what, ignore=(httpx.HTTPError, OSError, ValueError, KeyError), interval=0.1
    )


# --------------------------------------------------------------------------- instances


@dataclass
class Instance:
    """A ``prometheus_client`` HTTP server acting as instance ``n`` of a pool."""

    n: int
    port: int
    registry: CollectorRegistry
    gauges: dict[str, Gauge]
    server: Any
    thread: threading.Thread
    stopped: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Shut the server down and free the port (connections to it are then refused)."""
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)


def start_instance(n: int, port: int) -> Instance:
    """Instance ``n`` on ``port`` with the test gauges and the process collector."""
    registry = CollectorRegistry()
    gauges = {
        "connections": Gauge("senex_websocket_connections", "Open WebSockets", registry=registry),
        "changing": Gauge("senex_changing_value", "Changed by a test", registry=registry),
        "queue": Gauge("senex_queue_depth", "Tasks per queue", ["queue"], registry=registry),
        "nan": Gauge("senex_maybe_nan", "NaN on instance 2", registry=registry),
    }
    gauges["connections"].set(CONNECTIONS.get(n, 10.0 * n))
    gauges["changing"].set(STEADY)
    gauges["queue"].labels(queue="a").set(n)
    gauges["queue"].labels(queue="b").set(100 * n)
    gauges["nan"].set(float("nan") if n == 2 else n)
    ProcessCollector(registry=registry)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return Instance(n, port, registry, gauges, server, thread)


@dataclass
class Targets:
    """Instances 1..3 of a pool with ``port = "BASE + n"``, max 5."""

    base: int
    instances: dict[int, Instance]
    pool: Pool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = Pool.model_validate({"port": f"{self.base} + n", "min": 1, "max": 5})


@pytest.fixture(scope="session")
def targets() -> Iterator[Targets]:
    """Instances 1, 2 and 3 of the django pool, serving /metrics on BASE+1..BASE+3."""
    base = lab.free_port_range(6)
    started: dict[int, Instance] = {}
    try:
        for n in (1, 2, 3):
            started[n] = start_instance(n, base + n)
        yield Targets(base, started)
    finally:
        for instance in started.values():
            instance.stop()


@pytest.fixture
def instance_factory() -> Iterator[Callable[[int, int], Instance]]:
    """Start extra instances (``n``, ``port``) for tests that stop them; stopped at the end."""
    started: list[Instance] = []

    def make(n: int, port: int) -> Instance:
        instance = start_instance(n, port)
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()


# --------------------------------------------------------------------------- prometheus


def start_prometheus(root: Path, scrape: list[str]) -> lab.Prometheus:
    """Prometheus scraping ``scrape`` (host:port) as job ``django`` every second, started."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/services installs it)")
    jobs = [lab.static_job("django", scrape)] if scrape else []
    return lab.Prometheus(root, scrape_configs=jobs).start()


@pytest.fixture(scope="session")
def prometheus(
    targets: Targets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[lab.Prometheus]:
    """Prometheus scraping instances 1..3 as job "django", with all three targets up."""
    server = start_prometheus(
        tmp_path_factory.mktemp("prometheus"),
        [i.address for i in targets.instances.values()],
    )

    def all_up() -> bool:
        result = server.query('up{job="django"}')
        return len(result) == 3 and all(r["value"][1] == "1" for r in result)

    with server:
        wait_until(all_up, READY_TIMEOUT, "the three targets to be up in prometheus")
        yield server


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[], lab.Prometheus]]:
    """Start extra Prometheus servers (no targets) for tests that stop them."""
    started: list[lab.Prometheus] = []

    def make() -> lab.Prometheus:
        server = start_prometheus(tmp_path / f"prometheus-{len(started)}", [])
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# --------------------------------------------------------------------------- odd servers


@dataclass
class Recorder:
    """A tiny HTTP server that records each request's path and Authorization header."""

    port: int
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """What every following request gets."""
        self.status, self.body, self.content_type = status, body, content_type


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """An HTTP server on loopback that records Authorization headers and answers as told."""
    holder: list[Recorder] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rec = holder[0]
            rec.seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(rec.status)
            self.send_header("Content-Type", rec.content_type)
            self.send_header("Content-Length", str(len(rec.body)))
            self.end_headers()
            self.wfile.write(rec.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    holder.append(Recorder(server.server_address[1], server, thread))
    yield holder[0]
    server.shutdown()
    server.server_close()
    thread.join(5)


@dataclass
class HungServer:
    """Accepts TCP connections on ``port`` and never answers (until stopped)."""

    port: int
    sock: socket.socket
    thread: threading.Thread
    stopping: threading.Event
    conns: list[socket.socket] = field(default_factory=list)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def hung_factory() -> Iterator[Callable[[int], HungServer]]:
    """Start servers that accept connections on a given port and never say a word."""
    started: list[HungServer] = []

    def make(port: int) -> HungServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        sock.settimeout(0.1)
        stopping = threading.Event()
        conns: list[socket.socket] = []

        def accept() -> None:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError, OSError):
                    conn, _ = sock.accept()
                    conns.append(conn)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        server = HungServer(port, sock, thread, stopping, conns)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
