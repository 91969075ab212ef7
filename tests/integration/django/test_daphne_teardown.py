"""A real Daphne: a WebSocket is uncounted when it ends, not when its application call does.

The application (``slow_teardown_asgi``) takes 30 s to return after its disconnect, as a
Channels consumer may while its channel-layer receive is cancelled. Found by the reference
app's rebalance test, which failed about one run in three: one of the two closed connections
stayed counted (and "closing") for Daphne's 10 s application_close_timeout.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from senex_scale.testing import wait_until

from .conftest import daphne_server

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def daphne(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with daphne_server("slow_teardown_asgi:application", HERE, log, ready="/metrics") as url:
        yield url


def counts(url: str) -> dict[str, int]:
    answer = httpx.get(f"{url}/senex/websockets/", timeout=10, trust_env=False)
    data: dict[str, int] = answer.json()
    return data


def gauge(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    match = re.search(r"^senex_websocket_connections (\S+)$", text, re.MULTILINE)
    assert match, "senex_websocket_connections missing from /metrics"
    return float(match.group(1))


def test_closed_connections_are_uncounted_while_the_application_tidies_up(daphne: str) -> None:
    """4 open; the controller closes 2 (1012) and a client leaves: the counts and the gauge
    say 1 within 3 s, though every application call runs on for 30 s."""
    port = daphne.rsplit(":", 1)[1]
    with contextlib.ExitStack() as opened:
        sockets = [
            opened.enter_context(connect(f"ws://127.0.0.1:{port}/ws/", proxy=None))
            for _ in range(4)
        ]
        for ws in sockets:
            ws.send("ping")
            assert ws.recv(timeout=10) == "pong"
        assert counts(daphne)["websockets"] == 4
        closing = httpx.post(f"{daphne}/senex/websockets/", json={"count": 2}, trust_env=False)
        assert closing.json()["closing"] == 2
        for ws in sockets[:2]:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012
        sockets[3].close()
        left = time.monotonic()
        wait_until(lambda: counts(daphne)["websockets"] == 1, 3, "1 counted (3 ended)")
        assert counts(daphne) == {"websockets": 1, "requests": 0, "closing": 0}
        assert gauge(daphne) == 1
        assert time.monotonic() - left < 3
        sockets[2].send("ping")
        assert sockets[2].recv(timeout=10) == "pong"
