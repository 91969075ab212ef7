"""The HTTP health probe against real sockets on loopback: straight to the instance, never
through a proxy from the environment, and never reading the body."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from senex_scale.runtimes.base import probe_health

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[Callable[[bytes, bool], str]]:
    """``server(head, endless)``: a listener on 127.0.0.1 answering every connection with
    ``head`` and then, if ``endless``, body bytes until the client goes; its address."""
    stop = threading.Event()
    listeners: list[socket.socket] = []

    def start(head: bytes, endless: bool) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    try:
                        conn.sendall(head)
                        while endless and not stop.is_set():
                            conn.sendall(b"x" * 65536)
                    except OSError:
                        pass

        threading.Thread(target=serve, daemon=True).start()
        host, port = listener.getsockname()
        return f"{host}:{port}"

    yield start
    stop.set()
    for listener in listeners:
        listener.close()


def test_an_endless_body_is_not_read(server: Callable[[bytes, bool], str]) -> None:
    """200 with a body that never ends: healthy, at once (the status line is enough)."""
    address = server(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", True)
    started = time.monotonic()
    assert probe_health(address, "/health/", timeout=2.0)
    assert time.monotonic() - started < 1.5


def test_a_proxy_in_the_environment_is_not_used(
    server: Callable[[bytes, bool], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY pointing at a listener that answers 503 for everything: the probe goes
    to the instance anyway (and a 5xx is unhealthy, so the proxy would have said no)."""
    proxy = server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", False)
    instance = server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy}")
    monkeypatch.setenv("http_proxy", f"http://{proxy}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert probe_health(instance, "/health/")
    assert not probe_health(proxy, "/health/")
