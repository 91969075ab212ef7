"""An ASGI app for a real Daphne whose WebSocket connections end slowly after the disconnect.

A Channels consumer with a Redis channel layer does this in production: on the disconnect it
cancels its pending channel-layer receive, and that cancellation can wait out the blocking
Redis pop (seconds). The middleware must count the connection gone from the disconnect on,
not from the end of the application call. ``/metrics`` serves the process's registry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import generate_latest

from senex_scale.contrib.django.access import EndpointConfig
from senex_scale.contrib.django.metrics import WebSocketGauge
from senex_scale.contrib.django.websockets import WebSocketControl

TEARDOWN_SECONDS = 30.0
"""Longer than Daphne's application_close_timeout (10 s): Daphne cancels the call first."""


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        body = generate_latest()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        await send({"type": "websocket.send", "text": "pong"})
    await asyncio.sleep(TEARDOWN_SECONDS)


application = WebSocketControl(WebSocketGauge(app), config=EndpointConfig.from_settings(None))
