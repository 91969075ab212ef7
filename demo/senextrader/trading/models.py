"""Positions and trades, with the indexes the strategy adds for its hot queries.

``idx_position_user_status`` serves "a user's open positions" (the positions API and the
WebSocket push); ``idx_trade_created`` serves "latest trades first" and the pruning task;
``idx_trade_user_latest`` serves "a user's latest trades" (the trades API and the WebSocket's
first push).
``user_id`` is a plain integer: the demo has no accounts of its own.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models


class Position(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    user_id = models.BigIntegerField()
    symbol = models.CharField(max_length=16)
    quantity = models.DecimalField(max_digits=18, decimal_places=4, default=Decimal(0))
    avg_price = models.DecimalField(max_digits=18, decimal_places=4, default=Decimal(0))
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["user_id", "status"], name="idx_position_user_status")]
        constraints = [
            models.UniqueConstraint(fields=["user_id", "symbol"], name="uniq_position_user_symbol")
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "quantity": f"{self.quantity:.4f}",
            "avg_price": f"{self.avg_price:.4f}",
            "status": self.status,
        }


class Trade(models.Model):
    class Side(models.TextChoices):
        BUY = "buy"
        SELL = "sell"

    user_id = models.BigIntegerField()
    symbol = models.CharField(max_length=16)
    side = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.DecimalField(max_digits=18, decimal_places=4)
    price = models.DecimalField(max_digits=18, decimal_places=4)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["-created_at"], name="idx_trade_created"),
            models.Index(fields=["user_id", "-created_at", "-id"], name="idx_trade_user_latest"),
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.pk,
            "symbol": self.symbol,
            "side": self.side,
            "quantity": f"{self.quantity:.4f}",
            "price": f"{self.price:.4f}",
            "created_at": self.created_at.isoformat(),
        }
