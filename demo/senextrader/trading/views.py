"""The positions API (cached) and the trade endpoints."""

from __future__ import annotations

import json
import threading
import time
import zlib
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from trading import services, tasks

_BROKER_SESSIONS = threading.BoundedSemaphore(settings.SENEX_QUOTE_CONNECTIONS)


@require_GET
def positions(request: HttpRequest, user_id: int) -> HttpResponse:
    return JsonResponse({"user_id": user_id, "positions": services.positions_of(user_id)})


@require_GET
def quote(request: HttpRequest, symbol: str) -> HttpResponse:
    """A quote from the broker's API, simulated: a blocking call of ``SENEX_QUOTE_MS`` over
    one of ``SENEX_QUOTE_CONNECTIONS`` connections per process (brokers limit sessions per
    client). The I/O-bound kind of request: on a busy instance quotes queue for a connection,
    and more instances, not more CPU, is what shortens the queue."""
    with _BROKER_SESSIONS:
        time.sleep(settings.SENEX_QUOTE_MS / 1000)
    mid = 100 + zlib.crc32(symbol.upper().encode()) % 400 + (time.time() % 60) / 100
    return JsonResponse(
        {"symbol": symbol.upper(), "bid": round(mid - 0.05, 2), "ask": round(mid + 0.05, 2)}
    )


@require_GET
def latest_trades(request: HttpRequest, user_id: int) -> HttpResponse:
    """A user's latest trades, not cached (``idx_trade_created``): read-your-writes shows
    here, after a redirect, through the router's pin cookie."""
    return JsonResponse({"user_id": user_id, "trades": services.latest_trades_of(user_id)})


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        return services.parse_trade(json.loads(request.body or b"null"))
    except json.JSONDecodeError:
        raise services.TradeError("body: not JSON") from None


@csrf_exempt  # a JSON API for the demo's load generator; a real app authenticates it
@require_POST
def trades(request: HttpRequest) -> HttpResponse:
    """Record a trade now. ``?redirect=1``: answer 303 to the positions (read-your-writes
    across the redirect, through the pin cookie)."""
    try:
        fields = _body(request)
    except services.TradeError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    position = services.record_trade(**fields)
    if request.GET.get("redirect") == "1":
        return HttpResponseRedirect(reverse("positions", args=[fields["user_id"]]), status=303)
    return JsonResponse({"position": position}, status=201)


@csrf_exempt
@require_POST
def trades_async(request: HttpRequest) -> HttpResponse:
    """Queue the trade on the ``trading`` queue; 202 with the task id."""
    try:
        fields = _body(request)
    except services.TradeError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    result = tasks.execute_trade.delay(
        fields["user_id"],
        fields["symbol"],
        fields["side"],
        str(fields["quantity"]),
        str(fields["price"]),
    )
    return JsonResponse({"task": result.id}, status=202)


@csrf_exempt
@require_POST
def recalculate(request: HttpRequest, user_id: int) -> HttpResponse:
    """Queue the book value of the user's positions on ``accounts``; 202 with the task id.
    The task reads what this client wrote (the pin travels in the task's header)."""
    result = tasks.recalculate_account.delay(user_id)
    return JsonResponse({"task": result.id}, status=202)
