"""Every HTTP read of a source is bounded: a total deadline and a byte cap.

Real servers on 127.0.0.1 that misbehave the way a hostile or broken endpoint does: one
trickles its answer a byte at a time (each byte well inside ``timeout``, so a per-read
timeout never fires), one in its headers, one in its body; one sends a body far larger than
any metric answer, with and without a ``Content-Length``. Each is read by the ``prometheus``
and the ``scrape`` source; the query must fail within the deadline (plus one read) and
without reading the whole body.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from senex_scale.errors import SourceError
from senex_scale.policy.models import Metric, Pool
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.prometheus import PrometheusSource
from senex_scale.sources.scrape import ScrapeSource

pytestmark = pytest.mark.integration

TRICKLE_FOR = 12.0
"""How long a trickling server keeps going: well past any deadline under test."""
PROM_JSON = b'{"status":"success","data":{"resultType":"scalar","result":[0,"1"]}}'
METRICS = b"# TYPE up gauge\nup 1\n"


@dataclass
class BadServer:
    """A TCP server on loopback whose every connection is handled by ``behave(conn)``."""

    port: int
    sock: socket.socket
    stopping: threading.Event
    threads: list[threading.Thread] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    """Bytes written per connection (appended when a connection ends)."""

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(TRICKLE_FOR + 2)
        self.sock.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


@pytest.fixture
def bad_server() -> Iterator[
    Callable[[Callable[[socket.socket, threading.Event], int]], BadServer]
]:
    started: list[BadServer] = []

    def make(behave: Callable[[socket.socket, threading.Event], int]) -> BadServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.1)  # accept() wakes up to see ``stopping``
        server = BadServer(sock.getsockname()[1], sock, threading.Event())

        def handle(conn: socket.socket) -> None:
            sent = 0
            with contextlib.suppress(OSError), conn:
                _read_request(conn)
                sent = behave(conn, server.stopping)
            server.sent.append(sent)

        def accept() -> None:
            while not server.stopping.is_set():
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                thread = threading.Thread(target=handle, args=(conn,), daemon=True)
                server.threads.append(thread)
                thread.start()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        server.threads.append(thread)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def trickle(head: bytes, body_bytes: bytes) -> Callable[[socket.socket, threading.Event], int]:
    """Send ``head`` at once, then ``body_bytes`` one byte every 0.2 s, repeated until
    TRICKLE_FOR has passed (each byte arrives well inside a 1 s read timeout)."""

    def behave(conn: socket.socket, stopping: threading.Event) -> int:
        conn.sendall(head)
        sent = len(head)
        end = time.monotonic() + TRICKLE_FOR
        while time.monotonic() < end and not stopping.is_set():
            for byte in body_bytes:
                conn.sendall(bytes([byte]))
                sent += 1
                if stopping.wait(0.2) or time.monotonic() > end:
                    return sent
        return sent

    return behave


def flood(total: int, *, length: bool) -> Callable[[socket.socket, threading.Event], int]:
    """A 200 answer with ``total`` bytes of body (``Content-Length`` or chunked)."""

    def behave(conn: socket.socket, stopping: threading.Event) -> int:
        if length:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {total}\r\n\r\n"
        else:
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
        conn.sendall(head.encode())
        block = b"0" * 65536
        sent = 0
        while sent < total and not stopping.is_set():
            piece = block if length else b"%x\r\n%s\r\n" % (len(block), block)
            conn.sendall(piece)
            sent += len(block)
        return sent

    return behave


HEADER_TRICKLE = trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 4000 + b"\r\n")
"""Headers that never end (h11 accepts 16 KiB of them)."""


def body_trickle(body: bytes) -> Callable[[socket.socket, threading.Event], int]:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {100 * len(body)}\r\n\r\n"
    )
    return trickle(head.encode(), body * 100)


def prometheus(port: int, **options: object) -> PrometheusSource:
    return PrometheusSource("prom", {"url": f"http://127.0.0.1:{port}", **options})


def scrape(**options: object) -> ScrapeSource:
    return ScrapeSource("scrape", dict(options))


def prom_request() -> MetricRequest:
    return MetricRequest("r", Metric(source="prom", query="up"))


def scrape_request(port: int) -> MetricRequest:
    pool = Pool.model_validate({"port": f"{port - 1} + n", "min": 0, "max": 1})
    return MetricRequest(
        "r", Metric(source="scrape", query="up"), "web", pool, targets=(("1", f"127.0.0.1:{port}"),)
    )


def timed_failure(call: Callable[[], object]) -> tuple[float, SourceError]:
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        call()
    return time.monotonic() - started, info.value


@pytest.mark.parametrize("where", ["headers", "body"])
def test_prometheus_trickle_is_cut_at_the_deadline(
    bad_server: Callable[..., BadServer], where: str
) -> None:
    """timeout 1s, deadline 2s: a server trickling its headers or its body is given up on
    after about 2 s (not after TRICKLE_FOR), as a temporary failure naming the deadline."""
    server = bad_server(HEADER_TRICKLE if where == "headers" else body_trickle(PROM_JSON))
    source = prometheus(server.port, timeout="1s", deadline="2s")
    try:
        took, error = timed_failure(lambda: source.query(prom_request(), time.time()))
    finally:
        source.close()
    assert took < 3.0, took
    assert error.temporary is True
    assert "within the 2s deadline" in str(error)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_scrape_trickle_is_cut_at_the_deadline(
    bad_server: Callable[..., BadServer], where: str
) -> None:
    """The same for an instance's /metrics."""
    server = bad_server(HEADER_TRICKLE if where == "headers" else body_trickle(METRICS))
    source = scrape(timeout="1s", deadline="2s")
    try:
        took, error = timed_failure(lambda: source.query(scrape_request(server.port), time.time()))
    finally:
        source.close()
    assert took < 3.0, took
    assert error.temporary is True
    assert "within the 2s deadline" in str(error)


def test_default_deadline_is_twice_the_timeout(bad_server: Callable[..., BadServer]) -> None:
    """Without ``deadline``, a request may take twice ``timeout`` in all."""
    server = bad_server(body_trickle(PROM_JSON))
    source = prometheus(server.port, timeout="0.5s")
    try:
        took, error = timed_failure(lambda: source.query(prom_request(), time.time()))
    finally:
        source.close()
    assert took < 2.0, took
    assert "within the 1s deadline" in str(error)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_prometheus_huge_body_is_refused(
    bad_server: Callable[..., BadServer], length: bool
) -> None:
    """400 MB of body against max_bytes = 1 MiB: refused (permanent, naming the cap) after
    reading about the cap, and the process does not grow by the body."""
    server = bad_server(flood(400 * 1024 * 1024, length=length))
    source = prometheus(server.port, timeout="5s", max_bytes=1024 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        took, error = timed_failure(lambda: source.query(prom_request(), time.time()))
    finally:
        source.close()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert error.temporary is False
    assert "more than 1048576 bytes (max_bytes)" in str(error)
    assert took < 5.0
    assert grown_mb < 50, grown_mb


def test_scrape_huge_body_is_refused(bad_server: Callable[..., BadServer]) -> None:
    """An instance's /metrics past max_bytes: refused the same way."""
    server = bad_server(flood(400 * 1024 * 1024, length=False))
    source = scrape(max_bytes=1024 * 1024)
    try:
        _, error = timed_failure(lambda: source.query(scrape_request(server.port), time.time()))
    finally:
        source.close()
    assert error.temporary is False
    assert "more than 1048576 bytes (max_bytes)" in str(error)


def test_settings_have_bounds() -> None:
    """max_bytes and deadline are checked when the source is built, named by field."""
    from senex_scale.errors import PolicyError

    with pytest.raises(PolicyError) as info:
        prometheus(1, max_bytes=10, deadline="0s")
    text = str(info.value)
    assert "sources.prom.max_bytes" in text
    assert "sources.prom.deadline" in text
