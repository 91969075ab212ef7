"""The business operations, shared by the views, the consumer and the tasks.

``record_trade`` writes a trade and moves the position in one transaction; after COMMIT the
user's cached positions are retired and the user's WebSocket clients are told, with the
writer's read-your-writes pin so the consumer reads what was just written.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from senex_scale.contrib.django.cache import VersionedCache
from senex_scale.contrib.django.router import get_router
from trading.models import Position, Trade

positions_cache = VersionedCache("positions", timeout=120)


class TradeError(ValueError):
    """A trade request is invalid; the message names the field."""


def group(user_id: int) -> str:
    return f"positions.{user_id}"


def positions_of(user_id: int) -> list[dict[str, Any]]:
    """A user's open positions, from the cache or (on a miss) a replica or the primary."""
    return positions_cache.get_or_set(
        user_id,
        lambda: [
            p.as_dict()
            for p in Position.objects.filter(user_id=user_id, status=Position.Status.OPEN).order_by(
                "symbol"
            )
        ],
    )


def latest_trades_of(user_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """A user's latest trades, newest first, never cached: what read-your-writes shows."""
    rows = Trade.objects.filter(user_id=user_id).order_by("-created_at", "-id")[:limit]
    return [t.as_dict() for t in rows]


def push_state(user_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a WebSocket push carries: the positions (cached) and the 5 latest trades."""
    return positions_of(user_id), latest_trades_of(user_id, 5)


def parse_trade(data: Any) -> dict[str, Any]:
    """Validated trade fields from a request body."""
    if not isinstance(data, dict):
        raise TradeError("body: must be a JSON object")
    out: dict[str, Any] = {}
    try:
        out["user_id"] = int(data["user_id"])
    except (KeyError, TypeError, ValueError):
        raise TradeError("user_id: required, an integer") from None
    symbol = data.get("symbol")
    if not isinstance(symbol, str) or not 0 < len(symbol) <= 16:
        raise TradeError("symbol: required, 1 to 16 characters")
    out["symbol"] = symbol.upper()
    if data.get("side") not in ("buy", "sell"):
        raise TradeError('side: "buy" or "sell"')
    out["side"] = data["side"]
    for name in ("quantity", "price"):
        try:
            value = Decimal(str(data[name]))
        except (KeyError, InvalidOperation):
            raise TradeError(f"{name}: required, a decimal number") from None
        if not value.is_finite() or value <= 0:
            raise TradeError(f"{name}: must be above 0")
        out[name] = value
    return out


def record_trade(
    user_id: int, symbol: str, side: str, quantity: Decimal, price: Decimal
) -> dict[str, Any]:
    """Write the trade and move the position atomically; notify after COMMIT."""
    with transaction.atomic():
        Trade.objects.create(
            user_id=user_id, symbol=symbol, side=side, quantity=quantity, price=price
        )
        position, _ = Position.objects.select_for_update().get_or_create(
            user_id=user_id, symbol=symbol
        )
        signed = quantity if side == "buy" else -quantity
        new_quantity = position.quantity + signed
        if side == "buy" and new_quantity:
            position.avg_price = (
                position.avg_price * position.quantity + price * quantity
            ) / new_quantity
        position.quantity = new_quantity
        position.status = Position.Status.OPEN if new_quantity else Position.Status.CLOSED
        position.save()
        positions_cache.invalidate(user_id)
        transaction.on_commit(lambda: notify(user_id))
    return position.as_dict()


def notify(user_id: int) -> None:
    """Tell the user's WebSocket clients their positions changed (with our pin)."""
    layer = get_channel_layer()
    if layer is None:
        return
    router = get_router()
    pin = router.resolve_pin() if router is not None else None
    message = {"type": "position.update", "pin": pin.token() if pin is not None else None}
    async_to_sync(layer.group_send)(group(user_id), message)
