"""Liveness for the balancer and the container, readiness for people and the controller.

Two endpoints, because they answer different questions. ``/health/`` (``liveness``) says "this
process serves HTTP": it touches no database, cache or broker, so a database failover does not
make every instance fail its HealthCmd at once and get restarted in a loop, and Senex Scale's
scale-out waits on something the instance controls. ``/ready/`` (``ReadinessView``, built on
django-health-check) checks the primary, each replica with its lag, the cache and the Celery
broker, and answers 500 when the instance cannot do its work. A lagging or dead replica is a
warning, not a failure: the router reads from the primary meanwhile.

``urls.py``::

    from senex_scale.contrib.django.health import ReadinessView, liveness

    path("health/", liveness), path("ready/", ReadinessView.as_view())
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import time
from typing import Any, ClassVar

from django.http import HttpRequest, HttpResponse, JsonResponse
from health_check.base import HealthCheck, HealthCheckResult
from health_check.exceptions import ServiceUnavailable, ServiceWarning
from health_check.views import HealthCheckView

from senex_scale.contrib.django.router import ReplicaHealth, format_lsn, get_router

STARTED = time.time()


async def liveness(request: HttpRequest) -> HttpResponse:
    """200 while the process serves requests; reads nothing but the clock."""
    response = HttpResponse(
        f"ok pid={os.getpid()} uptime={time.time() - STARTED:.0f}s\n",
        content_type="text/plain; charset=utf-8",
    )
    response["Cache-Control"] = "no-store"
    return response


@dataclasses.dataclass
class Replicas(HealthCheck):
    """Probes every replica the router knows now; a lagging or dead one is a warning."""

    timeout: datetime.timedelta = dataclasses.field(
        default=datetime.timedelta(seconds=5), repr=False
    )

    def run(self) -> None:
        from django.db import connections

        router = get_router()
        if router is None:
            return
        try:
            router.monitor.refresh()
        finally:
            # This runs in an executor thread: its connections would stay open otherwise.
            connections.close_all()
        bad = [s for s in router.monitor.states() if not s.healthy]
        if bad:
            raise ServiceWarning("; ".join(f"{s.alias}: {s.reason}" for s in bad))


@dataclasses.dataclass
class CeleryBroker(HealthCheck):
    """Connects to the Celery broker (through Sentinel when configured); no worker needed."""

    timeout: datetime.timedelta = dataclasses.field(
        default=datetime.timedelta(seconds=3), repr=False
    )

    def run(self) -> None:
        from django.conf import settings
        from kombu.connection import Connection

        url = getattr(settings, "CELERY_BROKER_URL", None)
        if not url:
            return
        options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {})
        seconds = self.timeout.total_seconds()
        try:
            with Connection(url, transport_options=options, connect_timeout=seconds) as conn:
                conn.ensure_connection(max_retries=1, timeout=seconds)
                conn.default_channel.client.ping()  # a real round trip to the master
        except Exception as exc:  # kombu raises many kinds; the name is enough here
            raise ServiceUnavailable(f"broker unreachable ({type(exc).__name__})") from None


class ReadinessView(HealthCheckView):
    """Deep readiness: JSON with every check, and each replica's lag.

    ``{"status": "ok" | "degraded" | "down", "checks": {...}, "replicas": {...}}``; 200 unless a
    check other than a warning failed.
    """

    checks: ClassVar[Any] = (
        ("health_check.checks.Database", {"alias": "default"}),
        "senex_scale.contrib.django.health.Replicas",
        "health_check.checks.Cache",
        "senex_scale.contrib.django.health.CeleryBroker",
    )

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with self.get_executor() as executor:
            results: list[HealthCheckResult] = list(
                await asyncio.gather(*(c.get_result(executor) for c in self.get_checks()))
            )
        failed = [r for r in results if r.error and not isinstance(r.error, ServiceWarning)]
        warned = [r for r in results if isinstance(r.error, ServiceWarning)]
        status = "down" if failed else "degraded" if warned else "ok"
        router = get_router()
        replicas = (
            {s.alias: _replica(s) for s in router.monitor.states()} if router is not None else {}
        )
        body = {
            "status": status,
            "checks": {repr(r.check): "OK" if r.error is None else str(r.error) for r in results},
            "replicas": replicas,
        }
        return JsonResponse(body, status=500 if failed else 200)


def _replica(state: ReplicaHealth) -> dict[str, Any]:
    return {
        "healthy": state.healthy,
        "reason": state.reason,
        "lag_seconds": state.lag_seconds,
        "lag_bytes": state.lag_bytes,
        "replay_lsn": format_lsn(state.replay_lsn) if state.replay_lsn is not None else None,
    }
