"""What the controller scales on, measured where it happens: requests, WebSockets, tasks.

Served by ``metrics_view`` on ``/metrics`` from prometheus-client's default registry, so the
process collector's ``process_cpu_seconds_total`` (the default policy's CPU rule) comes along.
The names match the default policy's queries:

- ``django_http_requests_total{method,status}`` and ``django_http_request_duration_seconds``
  (``MetricsMiddleware``; the names of django-prometheus, which the seed's dashboards use);
- ``senex_websocket_connections``: open WebSocket connections of this instance
  (``WebSocketGauge``, an ASGI middleware counting accepted connections until they end;
  Prometheus adds the ``instance`` label per scraped Daphne);
- ``celery_tasks_total{task,state}``, ``celery_task_runtime_seconds{task}``,
  ``celery_worker_tasks_active`` and ``celery_worker_concurrency`` (``install_celery_metrics``);
- ``senex_replica_lag_seconds{alias}`` and ``senex_replica_healthy{alias}`` from the router's
  last probe (no extra queries).

A prefork Celery pool counts in its child processes: run the metrics worker with
``--pool threads`` (or solo), or set ``PROMETHEUS_MULTIPROC_DIR`` as prometheus-client says.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from senex_scale.contrib.django.access import internal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = Counter(
    "django_http_requests_total",
    "HTTP requests answered, by method and status",
    ["method", "status"],
)
LATENCY = Histogram(
    "django_http_request_duration_seconds",
    "Time from the request reaching Django to the response leaving it",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBSOCKETS = Gauge("senex_websocket_connections", "Open WebSocket connections of this instance")
WEBSOCKETS_TOTAL = Counter("senex_websocket_accepted_total", "WebSocket connections accepted")
TASKS = Counter("celery_tasks_total", "Celery tasks finished, by task and state", ["task", "state"])
TASK_RUNTIME = Histogram("celery_task_runtime_seconds", "Celery task run time", ["task"])
TASKS_ACTIVE = Gauge("celery_worker_tasks_active", "Tasks this worker is running now")
CONCURRENCY = Gauge("celery_worker_concurrency", "Tasks this worker can run at once")


class MetricsMiddleware:
    """Counts every response and times it (sync and async stacks)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = inspect.iscoroutinefunction(get_response)
        if self.is_async:
            from asgiref.sync import markcoroutinefunction

            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        start = time.perf_counter()
        response = self.get_response(request)
        self._observe(request, response, start)
        return response

    async def __acall__(self, request: Any) -> Any:
        start = time.perf_counter()
        response = await self.get_response(request)
        self._observe(request, response, start)
        return response

    @staticmethod
    def _observe(request: Any, response: Any, start: float) -> None:
        method = request.method if request.method in _METHODS else "other"
        REQUESTS.labels(method, str(response.status_code)).inc()
        LATENCY.labels(method).observe(time.perf_counter() - start)


_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


@internal
def metrics_view(request: Any) -> Any:
    """``/metrics``: the default registry in Prometheus' text format, to the deployment's
    own scrapers only (``access``: loopback and private networks not through the balancer,
    or a bearer token; 403 otherwise)."""
    from django.http import HttpResponse

    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


class WebSocketGauge:
    """ASGI middleware: ``senex_websocket_connections`` follows accepted, open connections.

    Counted when the application sends ``websocket.accept``, uncounted when the server says
    ``websocket.disconnect`` (the connection is gone, though the application may take seconds
    more to return: a Channels consumer cancelling its channel-layer receive) or when the
    application call returns, whichever comes first, so the gauge cannot drift on an error
    path and never counts a connection that is gone.
    """

    def __init__(self, app: ASGIApp, gauge: Gauge = WEBSOCKETS) -> None:
        self.app = app
        self.gauge = gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            await self.app(scope, receive, send)
            return
        accepted = counted = ended = False

        def uncount() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.gauge.dec()

        async def counting_send(message: Message) -> None:
            nonlocal accepted, counted
            if message.get("type") == "websocket.accept" and not accepted and not ended:
                accepted = counted = True
                self.gauge.inc()
                WEBSOCKETS_TOTAL.inc()
            await send(message)

        async def counting_receive() -> Message:
            nonlocal ended
            message = await receive()
            if message.get("type") == "websocket.disconnect":
                ended = True
                uncount()
            return message

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            uncount()


class ReplicaCollector(Collector):
    """The router's last replica probe as gauges (collected at scrape time, no queries)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from senex_scale.contrib.django.router import get_router

        lag = GaugeMetricFamily(
            "senex_replica_lag_seconds", "Replay delay at the last probe", labels=["alias"]
        )
        healthy = GaugeMetricFamily(
            "senex_replica_healthy", "1 when the router reads from the replica", labels=["alias"]
        )
        try:
            router = get_router()
        except Exception:  # settings not configured: nothing to report
            router = None
        if router is not None and router._monitor is not None:
            for state in router._monitor.states():
                if state.lag_seconds is not None:
                    lag.add_metric([state.alias], state.lag_seconds)
                healthy.add_metric([state.alias], 1.0 if state.healthy else 0.0)
        yield lag
        yield healthy


_replica_collector: ReplicaCollector | None = None


def register_replica_collector() -> None:
    """Add ``ReplicaCollector`` to the default registry once (``AppConfig.ready`` calls it)."""
    global _replica_collector
    if _replica_collector is None:
        _replica_collector = ReplicaCollector()
        REGISTRY.register(_replica_collector)


def install_celery_metrics(port: int | None = None, addr: str = "127.0.0.1") -> None:
    """Count tasks by name and state and time them; with ``port``, serve ``/metrics`` from
    the worker on that port once it is ready (a worker has no web server of its own)."""
    from celery import signals

    started: dict[str, float] = {}

    def prerun(task_id: str | None = None, **_: Any) -> None:
        started[task_id or ""] = time.perf_counter()
        TASKS_ACTIVE.inc()

    def postrun(task_id: str | None = None, task: Any = None, state: str | None = None,
                **_: Any) -> None:  # fmt: skip
        begin = started.pop(task_id or "", None)
        TASKS_ACTIVE.dec()
        name = getattr(task, "name", "unknown")
        TASKS.labels(name, state or "UNKNOWN").inc()
        if begin is not None:
            TASK_RUNTIME.labels(name).observe(time.perf_counter() - begin)

    def ready(sender: Any = None, **_: Any) -> None:
        pool = getattr(getattr(sender, "pool", None), "limit", None)
        if pool:
            CONCURRENCY.set(pool)
        if port is not None:
            start_http_server(port, addr=addr)

    signals.task_prerun.connect(prerun, weak=False, dispatch_uid="senex_metrics_pre")
    signals.task_postrun.connect(postrun, weak=False, dispatch_uid="senex_metrics_post")
    signals.worker_ready.connect(ready, weak=False, dispatch_uid="senex_metrics_ready")
