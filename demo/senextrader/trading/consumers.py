"""Pushes a user's positions to their WebSocket clients when they change.

On connect the client gets its positions and latest trades; after each trade it gets them
again. The connection starts with the pin of the HTTP client that opened it (the pin cookie,
read by ``PinScopeMiddleware``); the update message carries the writer's read-your-writes
pin, which the consumer adopts before reading, so it never pushes a state from before the
trade. Positions come through the versioned cache, the trades straight from the database
(``idx_trade_user_latest``: every push waits its turn on Django's one sync thread, which the
instance's HTTP views share, so the query must stay cheap as the table grows).
"""

from __future__ import annotations

import os
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from senex_scale.contrib.django.router import adopt_pin
from trading import services

_INSTANCE = os.environ.get("SENEX_INSTANCE", "")
INSTANCE = int(_INSTANCE) if _INSTANCE.isdigit() else None
"""This instance's number (the Quadlet unit's and supervisord's SENEX_INSTANCE), if set."""


class PositionConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        self.user_id = int(self.scope["url_route"]["kwargs"]["user_id"])
        if self.channel_layer is not None:
            await self.channel_layer.group_add(services.group(self.user_id), self.channel_name)
        await self.accept()
        await self.push()

    async def disconnect(self, code: int) -> None:
        if self.channel_layer is not None:
            await self.channel_layer.group_discard(services.group(self.user_id), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content == {"type": "ping"}:
            await self.send_json({"type": "pong"})

    async def position_update(self, event: dict[str, Any]) -> None:
        adopt_pin(event.get("pin"))
        await self.push()

    async def push(self) -> None:
        # one hop to Django's single sync thread for both reads (every hop queues there)
        positions, trades = await database_sync_to_async(services.push_state)(self.user_id)
        # which instance answers: the load generator tells drained closes from early ones.
        # SENEX_INSTANCE (set by the Quadlet unit and supervisord): in a container every
        # instance listens on the same port, so the port alone does not say
        server = self.scope.get("server") or (None, None)
        await self.send_json(
            {
                "type": "positions",
                "positions": positions,
                "trades": trades,
                "port": server[1],
                "instance": INSTANCE,
            }
        )
