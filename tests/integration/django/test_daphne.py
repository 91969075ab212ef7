"""The reference app served by a real Daphne: WebSocket gauge, pushes, health during an outage.

Daphne runs ``senextrader.asgi:application`` as a child process configured only through
environment variables, with its own PgBouncer (so the outage test can take the database
away from this instance without touching the other tests' pooler).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from senex_scale.lab import PgBouncer
from senex_scale.testing import wait_until

from .conftest import APP_PASSWORD, DEMO, Stack, daphne_server

pytestmark = pytest.mark.integration


@dataclass
class Instance:
    """One Daphne of the reference app on ``port``."""

    port: int
    bouncer: PgBouncer
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, user_id: int, cookies: dict[str, str] | None = None) -> ClientConnection:
        """A connection to the positions socket of ``user_id`` (use it in ``with``)."""
        headers = {"Origin": f"http://127.0.0.1:{self.port}"}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return connect(
            f"ws://127.0.0.1:{self.port}/ws/positions/{user_id}/",
            origin=None,
            additional_headers=headers,
            proxy=None,
            open_timeout=10,
        )

    def gauge(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        match = re.search(r"^senex_websocket_connections (\S+)$", text, re.MULTILINE)
        assert match, "senex_websocket_connections missing from /metrics"
        return float(match.group(1))


@pytest.fixture(scope="module")
def daphne(stack: Stack) -> Iterator[Instance]:
    root = stack.root / "daphne-bouncer"
    bouncer = PgBouncer(
        root,
        databases={
            "senextrader": f"host=127.0.0.1 port={stack.primary.port} dbname=senextrader",
            "senextrader_replica": f"host=127.0.0.1 port={stack.replica.port} dbname=senextrader",
        },
        users={"app": APP_PASSWORD},
        settings={"server_login_retry": "1", "query_wait_timeout": "5"},
    ).start()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(DEMO),
        **stack.env(),
        "SENEX_DATABASE_URL": f"postgresql://app@127.0.0.1:{bouncer.port}/senextrader",
        "SENEX_REPLICA_URLS": (
            f"replica=postgresql://app@127.0.0.1:{bouncer.port}/senextrader_replica"
        ),
        "SENEX_MAX_LAG_SECONDS": "3600",
    }
    log = stack.root / "daphne-module.log"
    # Migrations are applied by the session's django_setup; run them here too for a
    # module run on its own (idempotent).
    manage = [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"]
    try:
        subprocess.run(manage, cwd=DEMO, env=env, check=True, timeout=120)
        with daphne_server("senextrader.asgi:application", DEMO, log, env) as url:
            yield Instance(int(url.rsplit(":", 1)[1]), bouncer, log)
    finally:
        bouncer.stop()


def test_websocket_gauge_follows_real_connections(daphne: Instance) -> None:
    """Open 3 WebSockets: 3; close one cleanly and drop one without a close frame: 1; 0."""
    assert daphne.gauge() == 0
    with contextlib.ExitStack() as opened:
        sockets = [opened.enter_context(daphne.ws(9001 + i)) for i in range(3)]
        for ws in sockets:
            assert json.loads(ws.recv(timeout=10))["type"] == "positions"
        assert daphne.gauge() == 3
        sockets[0].close()
        dropped = sockets[1].socket
        dropped.shutdown(socket.SHUT_RDWR)
        dropped.close()
        wait_until(lambda: daphne.gauge() == 1, 15, "the gauge to drop to 1")
        sockets[2].close()
        wait_until(lambda: daphne.gauge() == 0, 15, "the gauge to drop to 0")
    assert "senex_websocket_accepted_total 3.0" in httpx.get(f"{daphne.url}/metrics").text


def test_a_rejected_websocket_is_not_counted(daphne: Instance) -> None:
    """A handshake from a foreign origin is refused and never shows in the gauge."""
    from websockets.exceptions import InvalidStatus

    foreign = {"Origin": "http://evil.example"}
    url = f"ws://127.0.0.1:{daphne.port}/ws/positions/1/"
    with pytest.raises(InvalidStatus), connect(url, additional_headers=foreign, proxy=None):
        pass
    assert daphne.gauge() == 0


def test_a_trade_is_pushed_to_the_users_websocket(daphne: Instance, paused_replay: Stack) -> None:
    """POST a trade while replay is paused: the user's socket gets positions with it."""
    with daphne.ws(9100) as ws:
        assert json.loads(ws.recv(timeout=10))["positions"] == []
        trade = {"user_id": 9100, "symbol": "PSH", "side": "buy", "quantity": "5", "price": "3"}
        response = httpx.post(f"{daphne.url}/api/trades/", json=trade, timeout=10)
        assert response.status_code == 201
        pushed = json.loads(ws.recv(timeout=10))
    assert [(p["symbol"], p["quantity"]) for p in pushed["positions"]] == [("PSH", "5.0000")]
    # the trades are read uncached: only the adopted pin keeps them off the paused replica
    assert [t["symbol"] for t in pushed["trades"]] == ["PSH"]
    body = httpx.get(f"{daphne.url}/api/positions/9100/", timeout=10).json()
    assert body["positions"] == pushed["positions"]


def test_bad_trade_input_names_the_field(daphne: Instance) -> None:
    """A trade without a price is a 400 naming ``price``."""
    trade = {"user_id": 1, "symbol": "X", "side": "buy", "quantity": "1"}
    response = httpx.post(f"{daphne.url}/api/trades/", json=trade, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"].startswith("price:")


def test_liveness_stays_up_during_a_database_outage(daphne: Instance) -> None:
    """PgBouncer gone: /health/ keeps answering 200, /ready/ says down (within READY_TTL) and
    which check failed; back: ready."""
    ready = httpx.get(f"{daphne.url}/ready/", timeout=20)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    assert ready.json()["replicas"]["replica"]["healthy"] is True
    daphne.bouncer.stop()
    try:
        for _ in range(5):
            assert httpx.get(f"{daphne.url}/health/", timeout=5).status_code == 200
        # the last result is reused for READY_TTL (2 s): down within it, not at once
        answers: list[httpx.Response] = []
        wait_until(
            lambda: (
                answers.append(httpx.get(f"{daphne.url}/ready/", timeout=20)) is None
                and answers[-1].status_code == 500
            ),
            10,
            "readiness to say down",
        )
        body = answers[-1].json()
        assert body["status"] == "down"
        assert body["checks"]["Database(alias='default')"].startswith("Unavailable")
        assert body["checks"]["Cache(alias='default')"] == "OK"
        assert httpx.get(f"{daphne.url}/health/", timeout=5).status_code == 200
    finally:
        daphne.bouncer.start()
    wait_until(
        lambda: httpx.get(f"{daphne.url}/ready/", timeout=20).status_code == 200,
        30,
        "readiness after PgBouncer is back",
    )


def test_requests_are_counted_on_metrics(daphne: Instance) -> None:
    """Responses show in django_http_requests_total by method and status."""
    httpx.get(f"{daphne.url}/api/positions/1/", timeout=10)
    text = httpx.get(f"{daphne.url}/metrics", timeout=10).text
    assert re.search(r'^django_http_requests_total\{method="GET",status="200"\} [1-9]', text, re.M)
    assert "django_http_request_duration_seconds_bucket" in text
    assert "process_cpu_seconds_total" in text
    assert re.search(r'^senex_replica_healthy\{alias="replica"\} [01]', text, re.M)


def test_read_your_writes_across_a_redirect_through_daphne(
    daphne: Instance, paused_replay: Stack
) -> None:
    """Under ASGI too: the 303 sets the pin cookie and the next page shows the new trade;
    a client without the cookie reads the paused replica."""
    trade = {"user_id": 9200, "symbol": "RDR", "side": "buy", "quantity": "1", "price": "2"}
    with httpx.Client(base_url=daphne.url, timeout=10, follow_redirects=False) as client:
        posted = client.post("/api/trades/?redirect=1", json=trade)
        assert posted.status_code == 303
        assert "senex_pin" in posted.cookies
        latest = client.get("/api/trades/latest/9200/").json()["trades"]
        assert [t["symbol"] for t in latest] == ["RDR"]
    stranger = httpx.get(f"{daphne.url}/api/trades/latest/9200/", timeout=10).json()
    assert stranger["trades"] == []


def control(daphne: Instance, **kwargs: object) -> httpx.Response:
    url = f"{daphne.url}/senex/websockets/"
    if kwargs:
        return httpx.post(url, json=kwargs, timeout=10, trust_env=False)
    return httpx.get(url, timeout=10, trust_env=False)


def test_a_drain_closes_every_websocket_with_1012_paced(daphne: Instance) -> None:
    """Daphne and the Channels consumer: 6 sockets open, counted; "close all over 1.5 s":
    every client gets a close frame with 1012, spread over the window (not in one instant);
    the counts go back to 0 and the gauge with them."""
    from websockets.exceptions import ConnectionClosed

    with contextlib.ExitStack() as opened:
        sockets = [opened.enter_context(daphne.ws(9200 + i)) for i in range(6)]
        for ws in sockets:
            assert json.loads(ws.recv(timeout=10))["type"] == "positions"
        assert control(daphne).json() == {"websockets": 6, "requests": 0, "closing": 0}
        asked = time.monotonic()
        answer = control(daphne, count=None, over=1.5, reason="drain")
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"closing": 6, "over": 1.5}
        closed_at = []
        for ws in sockets:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            closed_at.append(time.monotonic() - asked)
            assert info.value.rcvd is not None, "closed without a close frame (1006)"
            assert info.value.rcvd.code == 1012
            assert info.value.rcvd.reason == "drain"
        wait_until(lambda: control(daphne).json()["websockets"] == 0, 10, "counts back to 0")
    # paced: the last close comes about 1.5 * 5/6 s after the first, not with it
    assert max(closed_at) - min(closed_at) > 0.8, closed_at
    assert daphne.gauge() == 0


def test_a_rebalance_closes_only_the_oldest(daphne: Instance) -> None:
    """count = 2 of 4: the two oldest get 1012, the two newest keep streaming."""
    from websockets.exceptions import ConnectionClosed

    with contextlib.ExitStack() as opened:
        sockets = []
        for i in range(4):
            ws = opened.enter_context(daphne.ws(9300 + i))
            assert json.loads(ws.recv(timeout=10))["type"] == "positions"
            sockets.append(ws)
        answer = control(daphne, count=2, over=0)
        assert answer.json()["closing"] == 2
        for ws in sockets[:2]:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012
        wait_until(lambda: control(daphne).json()["websockets"] == 2, 10, "2 left open")
        for ws in sockets[2:]:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}


def test_the_control_endpoint_is_internal_and_checks_its_input(daphne: Instance) -> None:
    """Through a proxy (X-Forwarded-For): 403 and nothing closed; bad bodies: 400 naming
    the key; another method: 405."""
    with daphne.ws(9400) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "positions"
        url = f"{daphne.url}/senex/websockets/"
        proxied = {"X-Forwarded-For": "203.0.113.9"}
        refused = httpx.post(url, json={"count": None}, headers=proxied, trust_env=False)
        assert refused.status_code == 403
        assert "websockets" not in refused.text
        for body, key in (
            ({"count": -1}, "count"),
            ({"count": "3"}, "count"),
            ({"over": 1e9}, "over"),
            ({"over": True}, "over"),
            ({"cuont": 1}, "cuont"),
        ):
            bad = httpx.post(url, json=body, trust_env=False)
            assert bad.status_code == 400, body
            assert key in bad.json()["error"], bad.text
        assert httpx.delete(url, trust_env=False).status_code == 405
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
        assert control(daphne).json()["websockets"] == 1


def test_a_websocket_opened_after_a_write_reads_the_write(
    daphne: Instance, paused_replay: Stack
) -> None:
    """An HTTP write, then a new WebSocket from the same client (its pin cookie): the first
    push has the trade; the same socket without the cookie reads the paused replica."""
    trade = {"user_id": 9500, "symbol": "WSC", "side": "buy", "quantity": "1", "price": "2"}
    with httpx.Client(base_url=daphne.url, timeout=10) as client:
        assert client.post("/api/trades/", json=trade).status_code == 201
        cookies = {"senex_pin": client.cookies["senex_pin"]}
    with daphne.ws(9500, cookies) as ws:
        first = json.loads(ws.recv(timeout=10))
    assert [t["symbol"] for t in first["trades"]] == ["WSC"]
    with daphne.ws(9500) as ws:
        assert json.loads(ws.recv(timeout=10))["trades"] == []
