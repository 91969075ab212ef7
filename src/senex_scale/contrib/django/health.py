"""Liveness for the balancer and the container, readiness for people and the controller.

Two endpoints, because they answer different questions. ``/health/`` (``liveness``) says "this
process serves HTTP": it touches no database, cache or broker, so a database failover does not
make every instance fail its HealthCmd at once and get restarted in a loop, and Senex Scale's
scale-out waits on something the instance controls. ``/ready/`` (``ReadinessView``, built on
django-health-check) checks the primary, each replica with its lag, the cache and the Celery
broker, and answers 500 when the instance cannot do its work. A lagging or dead replica is a
warning, not a failure: the router reads from the primary meanwhile.

``/ready/`` is for the deployment's own probes (``access``: loopback and private networks,
not through the balancer, or a bearer token; everyone else gets 403). One result is computed
at most every ``READY_TTL`` seconds and shared by the requests meanwhile (a request flood is
not a probe flood; the replicas are probed at the router's ``HEALTH_TTL``). The body names
each check's and replica's state by kind only ("Unavailable", "down", "lagging"); the raw
errors, with host names and ports, go to the log (or into the body with ``DETAIL``).

``urls.py``::

    from senex_scale.contrib.django.health import ReadinessView, liveness

    path("health/", liveness), path("ready/", ReadinessView.as_view())
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import threading
import time
from typing import Any, ClassVar

from django.http import HttpRequest, HttpResponse, JsonResponse
from health_check.base import HealthCheck, HealthCheckResult
from health_check.exceptions import ServiceUnavailable, ServiceWarning
from health_check.views import HealthCheckView

from senex_scale.contrib.django.access import allowed, endpoint_config, forbidden
from senex_scale.contrib.django.router import ReplicaHealth, format_lsn, get_router

log = logging.getLogger(__name__)

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
            states = router.monitor.states()  # probes only when HEALTH_TTL has passed
        finally:
            # This runs in an executor thread: its connections would stay open otherwise.
            connections.close_all()
        bad = [s for s in states if not s.healthy]
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


@dataclasses.dataclass(frozen=True)
class _Readiness:
    at: float
    body: dict[str, Any]
    status: int


_cache: dict[bool, _Readiness] = {}
"""The last result, with and without detail."""
_computing = threading.Lock()


def forget_readiness() -> None:
    """Drop the cached result: the next request probes (tests, after a known change)."""
    _cache.clear()


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
        config = endpoint_config()
        if not allowed(request, config):
            response: HttpResponse = forbidden()
            return response
        result = await self._result(config.ready_ttl, config.detail)
        response = JsonResponse(result.body, status=result.status)
        response["Cache-Control"] = "no-store"
        return response

    async def _result(self, ttl: float, detail: bool) -> _Readiness:
        """The cached result when fresh; else this request computes it, unless another one
        is doing so (then the last result is served, or awaited when there is none yet)."""
        waited = 0.0
        while True:
            last = _cache.get(detail)
            if last is not None and time.monotonic() - last.at < ttl:
                return last
            if _computing.acquire(blocking=False):
                try:
                    fresh = await self._compute()
                finally:
                    _computing.release()
                _cache[False] = fresh[False]
                _cache[True] = fresh[True]
                return fresh[detail]
            if last is not None:
                return last
            if waited > 30:
                return _Readiness(time.monotonic(), {"status": "starting"}, 503)
            await asyncio.sleep(0.05)
            waited += 0.05

    async def _compute(self) -> dict[bool, _Readiness]:
        with self.get_executor() as executor:
            results: list[HealthCheckResult] = list(
                await asyncio.gather(*(c.get_result(executor) for c in self.get_checks()))
            )
        failed = [r for r in results if r.error and not isinstance(r.error, ServiceWarning)]
        warned = [r for r in results if isinstance(r.error, ServiceWarning)]
        status = "down" if failed else "degraded" if warned else "ok"
        router = get_router()
        states = router.monitor.states() if router is not None else []
        for r in [*failed, *warned]:
            log.warning("readiness: %r: %s", r.check, r.error)
        at = time.monotonic()
        code = 500 if failed else 200
        return {
            detail: _Readiness(
                at,
                {
                    "status": status,
                    "checks": {repr(r.check): _check_text(r, detail) for r in results},
                    "replicas": {s.alias: _replica(s, detail) for s in states},
                },
                code,
            )
            for detail in (False, True)
        }


def _check_text(result: HealthCheckResult, detail: bool) -> str:
    """A check's state: OK, the error's kind ("Unavailable", "Warning"), or with ``detail``
    its message."""
    if result.error is None:
        return "OK"
    if detail:
        return str(result.error)
    return str(getattr(result.error, "message_type", "Unavailable"))


_REASON_KINDS = (
    ("down", "down"),
    ("lag", "lagging"),
    ("not in recovery", "not a replica"),
    ("has not replayed", "starting"),
    ("ok", "ok"),
)


def _generic(reason: str) -> str:
    """The kind of a replica's state, without the driver's words (hosts, ports)."""
    return next((kind for prefix, kind in _REASON_KINDS if reason.startswith(prefix)), "unhealthy")


def _replica(state: ReplicaHealth, detail: bool = False) -> dict[str, Any]:
    return {
        "healthy": state.healthy,
        "reason": state.reason if detail else _generic(state.reason),
        "lag_seconds": state.lag_seconds,
        "lag_bytes": state.lag_bytes,
        "replay_lsn": format_lsn(state.replay_lsn) if state.replay_lsn is not None else None,
    }
