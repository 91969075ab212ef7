"""The WebSocket gauge middleware on the ASGI protocol itself (an in-process ASGI app)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from senex_scale.contrib.django.metrics import WebSocketGauge


def _gauge() -> Gauge:
    return Gauge("ws_test", "test gauge", registry=CollectorRegistry())


def _value(gauge: Gauge) -> float:
    """The gauge's current value, read the way a scrape reads it."""
    (metric,) = gauge.collect()
    return float(metric.samples[0].value)


async def _run(app: Any, gauge: Gauge, messages: list[dict[str, Any]]) -> list[float]:
    """Drive one connection; record the gauge each time the app sends something."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in messages:
        inbox.put_nowait(message)
    seen: list[float] = []

    async def send(message: dict[str, Any]) -> None:
        seen.append(_value(gauge))

    await WebSocketGauge(app, gauge)({"type": "websocket"}, inbox.get, send)
    seen.append(_value(gauge))
    return seen


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Accept, answer one message, end on disconnect."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        await send({"type": "websocket.send", "text": "x"})


def test_an_accepted_connection_counts_until_it_ends() -> None:
    """1 while open (after accept), 0 after the disconnect."""
    gauge = _gauge()
    messages = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    # Recorded as each message reaches the server: counted from the accept on.
    assert asyncio.run(_run(echo, gauge, messages)) == [1.0, 1.0, 0.0]


def test_a_rejected_connection_is_never_counted() -> None:
    """A close before accept (a denied handshake) leaves the gauge alone."""

    async def deny(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 403})

    gauge = _gauge()
    assert asyncio.run(_run(deny, gauge, [{"type": "websocket.connect"}])) == [0.0, 0.0]


def test_a_crashing_consumer_does_not_leak_a_count() -> None:
    """An exception after accept still decrements."""

    async def crash(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise RuntimeError("consumer bug")

    gauge = _gauge()
    with pytest.raises(RuntimeError):
        asyncio.run(_run(crash, gauge, [{"type": "websocket.connect"}]))
    assert _value(gauge) == 0.0


def test_http_passes_through_uncounted() -> None:
    """Non-WebSocket scopes are not touched."""
    gauge = _gauge()
    called: list[str] = []

    async def http(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["type"])

    async def nothing() -> dict[str, Any]:
        return {}

    async def drop(message: dict[str, Any]) -> None:
        return None

    asyncio.run(WebSocketGauge(http, gauge)({"type": "http"}, nothing, drop))
    assert called == ["http"]
    assert _value(gauge) == 0.0


def test_the_disconnect_uncounts_before_the_application_ends() -> None:
    """The server's disconnect ends the connection: 0 while the application still tidies up
    (a Channels consumer cancelling its channel-layer receive), still 0 once it returns."""
    gauge = _gauge()
    seen: list[float] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        seen.append(_value(gauge))
        await asyncio.sleep(0.01)

    messages = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1012}]
    assert asyncio.run(_run(slow, gauge, messages)) == [1.0, 0.0]
    assert seen == [0.0]
