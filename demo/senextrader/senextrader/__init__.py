"""Senex Trader: the reference workload Senex Scale scales (see demo/README.md)."""

from senextrader.celery import app as celery_app

__all__ = ["celery_app"]
