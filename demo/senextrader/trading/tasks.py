"""Celery tasks on the three queues of the strategy (routes in settings.CELERY_TASK_ROUTES)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from celery import shared_task
from django.db.models import F, Sum
from django.utils import timezone

from trading import services
from trading.models import Position, Trade


@shared_task
def execute_trade(
    user_id: int, symbol: str, side: str, quantity: str, price: str
) -> dict[str, object]:
    """Queue ``trading``: record a trade."""
    return services.record_trade(user_id, symbol, side, Decimal(quantity), Decimal(price))


@shared_task
def recalculate_account(user_id: int) -> str:
    """Queue ``accounts``: the book value of a user's open positions."""
    total = Position.objects.filter(user_id=user_id, status=Position.Status.OPEN).aggregate(
        value=Sum(F("quantity") * F("avg_price"))
    )["value"]
    return str(total or Decimal(0))


@shared_task
def prune_trades(days: int = 30) -> int:
    """Queue ``general``: delete trades older than ``days`` (uses ``idx_trade_created``)."""
    deleted, _ = Trade.objects.filter(created_at__lt=timezone.now() - timedelta(days=days)).delete()
    return deleted
