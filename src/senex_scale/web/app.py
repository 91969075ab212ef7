"""The status page, its JSON API and ``/metrics``: a Starlette app over the store.

::

    GET  /                 the page: pools (current/desired/min/max), rules against their
                           thresholds and how long they have breached, recent decisions with
                           reasons, charts of instance counts and metric values (last hours)
    GET  /api/status       the leader's last tick + every controller's (role, fence, actions in
                           flight) + recent decisions (what the page shows)
    GET  /api/history      decisions: ?pool= &outcome= &since=SECONDS_AGO &limit= &all=1
    GET  /api/series       chart data: ?hours=3
    GET  /metrics          the controller's Prometheus metrics
    GET  /healthz          200 while this controller's last tick is recent (leader or
                           standby: actions run off the tick, so a long drain keeps it 200)
    POST /api/pause        stop acting (decisions are still made and recorded as dry-run)
    POST /api/resume       act again

Read-only unless ``controller.token_env`` names an environment variable holding a token: the
two POSTs then need ``Authorization: Bearer TOKEN`` (compared in constant time); without one
they answer 403. The page draws its charts itself (inline SVG from the JSON API) so it needs
nothing from the internet and works on an air-gapped host.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from senex_scale.store.sql import Store
from senex_scale.telemetry.metrics import Metrics

TEMPLATES = Path(__file__).parent / "templates"
MAX_HOURS = 48.0
MAX_LIMIT = 1000


class Control(Protocol):
    """What the page can change on a running controller."""

    paused: bool


def _int(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequestError(f"{name}: {raw!r} is not a whole number") from None
    if not 1 <= value <= high:
        raise _BadRequestError(f"{name}: must be between 1 and {high}")
    return value


def _float(request: Request, name: str, default: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _BadRequestError(f"{name}: {raw!r} is not a number") from None
    if not 0 < value <= high:
        raise _BadRequestError(f"{name}: must be above 0 and at most {high:g}")
    return value


class _BadRequestError(Exception):
    pass


def create_app(
    store: Store,
    *,
    metrics: Metrics | None = None,
    control: Control | None = None,
    token: str | None = None,
    clock: Callable[[], float] = time.time,
    controller_id: str | None = None,
) -> Starlette:
    """The status app over ``store`` (and, inside the daemon, its metrics and controls;
    ``/healthz`` then answers for that controller's own ticks, leader or standby)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), cache_size=0
    )

    def status_doc() -> dict[str, Any]:
        status = store.get("status") or {}
        recent = [row.as_dict() for row in store.history(acted=True, limit=20)]
        controllers = store.statuses()
        return {"status": status, "decisions": recent, "controllers": controllers, "now": clock()}

    async def page(request: Request) -> Response:
        html = env.get_template("status.html").render(doc=status_doc())
        return HTMLResponse(html)

    async def api_status(request: Request) -> Response:
        return JSONResponse(status_doc())

    async def api_history(request: Request) -> Response:
        try:
            limit = _int(request, "limit", 50, MAX_LIMIT)
            ago = request.query_params.get("since")
            since = clock() - _float(request, "since", 1.0, 10 * 365 * 86400) if ago else None
        except _BadRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rows = store.history(
            pool=request.query_params.get("pool"),
            outcome=request.query_params.get("outcome"),
            since=since,
            acted=request.query_params.get("all") not in ("1", "true"),
            limit=limit,
        )
        return JSONResponse({"decisions": [r.as_dict() for r in rows]})

    async def api_series(request: Request) -> Response:
        try:
            hours = _float(request, "hours", 3.0, MAX_HOURS)
        except _BadRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        since = clock() - hours * 3600
        return JSONResponse(
            {"since": since, "pools": store.pool_series(since), "rules": store.rule_series(since)}
        )

    async def metrics_view(request: Request) -> Response:
        body = metrics.exposition() if metrics is not None else b""
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(request: Request) -> Response:
        key = f"status:{controller_id}" if controller_id else "status"
        status = store.get(key) or {}
        interval = float(status.get("interval", 15.0))
        age = clock() - float(status.get("at", 0.0))
        ok = age <= 3 * interval + 5
        return JSONResponse(
            {"ok": ok, "last_tick_age": round(age, 1), "role": status.get("role")},
            status_code=200 if ok else 503,
        )

    def _authorized(request: Request) -> Response | None:
        if token is None:
            return JSONResponse(
                {"error": "read-only: no token configured (controller.token_env)"}, 403
            )
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "wrong or missing bearer token"}, 401)
        if control is None:
            return JSONResponse({"error": "no controller running here"}, 409)
        return None

    async def pause(request: Request) -> Response:
        if (refused := _authorized(request)) is not None:
            return refused
        assert control is not None
        control.paused = True
        return JSONResponse({"paused": True})

    async def resume(request: Request) -> Response:
        if (refused := _authorized(request)) is not None:
            return refused
        assert control is not None
        control.paused = False
        return JSONResponse({"paused": False})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/status", api_status),
            Route("/api/history", api_history),
            Route("/api/series", api_series),
            Route("/metrics", metrics_view),
            Route("/healthz", healthz),
            Route("/api/pause", pause, methods=["POST"]),
            Route("/api/resume", resume, methods=["POST"]),
        ]
    )
