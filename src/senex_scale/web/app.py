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

Who may read it:

- ``Host`` must be an IP address, ``localhost``, this machine's own name, or one of
  ``allowed_hosts`` (``controller.allowed_hosts``; ``*.example.com`` for a suffix); anything
  else is 400. A web page elsewhere can make its own domain resolve to this address (DNS
  rebinding) and read the API as its own origin, but its requests carry that domain.
- with a read token (``controller.read_token_env``) every GET but ``/healthz`` needs
  ``Authorization: Bearer TOKEN`` (the read or the write token) or the cookie a browser gets
  by opening ``/?token=TOKEN`` once (HttpOnly, SameSite=Strict); else 401.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hmac
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

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


READ_COOKIE = "senex_read"
OPEN_PATHS = frozenset({"/healthz"})
"""Paths served without the read token (liveness for systemd and monitoring)."""


def host_of(header: str) -> str:
    """The host part of a ``Host`` header: ``[::1]:9308`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def own_names() -> set[str]:
    """This machine's names: what a browser on the LAN may put in ``Host``."""
    names = {"localhost", socket.gethostname().lower()}
    with contextlib.suppress(OSError):  # resolver trouble: the short name is enough
        names.add(socket.getfqdn().lower())
    return names


def host_allowed(host: str, allowed: Sequence[str], own: set[str]) -> bool:
    """An IP literal, one of ``own``, or a name (or ``*.suffix``) of ``allowed``."""
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    name = host.removesuffix(".")
    return name in own or any(
        fnmatch.fnmatchcase(name, pattern.lower()) if pattern.startswith("*.")
        else name == pattern.lower().removesuffix(".")
        for pattern in allowed
    )  # fmt: skip


class HostCheck:
    """ASGI middleware: 400 for a ``Host`` that ``host_allowed`` refuses (DNS rebinding)."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed = tuple(allowed)
        self.own = own_names()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            host = host_of(headers.get(b"host", b"").decode("latin-1"))
            if not host_allowed(host, self.allowed, self.own):
                response = PlainTextResponse(
                    "Invalid Host header: serve this page by IP address or list the name in "
                    "controller.allowed_hosts\n",
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _bearer(request: Request) -> str:
    return request.headers.get("authorization", "")


def _matches(given: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(given.encode(), token.encode())


def create_app(
    store: Store,
    *,
    metrics: Metrics | None = None,
    control: Control | None = None,
    token: str | None = None,
    clock: Callable[[], float] = time.time,
    controller_id: str | None = None,
    read_token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> Starlette:
    """The status app over ``store`` (and, inside the daemon, its metrics and controls;
    ``/healthz`` then answers for that controller's own ticks, leader or standby).
    ``read_token`` and ``allowed_hosts``: see the module docstring."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), cache_size=0
    )

    def status_doc() -> dict[str, Any]:
        status = store.get("status") or {}
        recent = [row.as_dict() for row in store.history(acted=True, limit=20)]
        controllers = store.statuses()
        return {"status": status, "decisions": recent, "controllers": controllers, "now": clock()}

    def may_read(request: Request) -> bool:
        if read_token is None or request.url.path in OPEN_PATHS:
            return True
        given = _bearer(request)
        if _matches(given, f"Bearer {read_token}") or (
            token is not None and _matches(given, f"Bearer {token}")
        ):
            return True
        return _matches(request.cookies.get(READ_COOKIE, ""), read_token)

    def reading(
        view: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            if not may_read(request):
                return JSONResponse(
                    {"error": "this status page needs its read token (controller.read_token_env)"},
                    401,
                )
            return await view(request)

        return guarded

    async def page(request: Request) -> Response:
        offered = request.query_params.get("token")
        if offered is not None and read_token is not None:
            if not _matches(offered, read_token):
                return JSONResponse({"error": "wrong read token"}, 401)
            moved = RedirectResponse("/", status_code=303)
            moved.set_cookie(READ_COOKIE, read_token, httponly=True, samesite="strict", path="/")
            return moved
        if not may_read(request):
            return JSONResponse(
                {"error": "this status page needs its read token: open /?token=TOKEN once"},
                401,
            )
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
            Route("/api/status", reading(api_status)),
            Route("/api/history", reading(api_history)),
            Route("/api/series", reading(api_series)),
            Route("/metrics", reading(metrics_view)),
            Route("/healthz", healthz),
            Route("/api/pause", pause, methods=["POST"]),
            Route("/api/resume", resume, methods=["POST"]),
        ],
        middleware=[Middleware(HostCheck, allowed=allowed_hosts)],
    )
