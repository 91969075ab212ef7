"""The controller's side of an instance's WebSocket control endpoint (``WebSocketControl``).

A pool with ``[pools.NAME.websockets]`` serves ``contrib.django.websockets.WebSocketControl``
on ``control`` (default ``/senex/websockets/``)::

    GET  http://ADDRESS/senex/websockets/   {"websockets": N, "requests": M, "closing": K}
    POST http://ADDRESS/senex/websockets/   {"count": k|null, "over": s, "reason": "..."}

``Sessions`` reads the counts (``None`` when the instance does not answer: unknown, never
zero) and asks for closes (a ``TemporaryError`` when it cannot). Like the health probe, it
goes straight to the instance (no proxy from the environment) and reads at most
``MAX_BYTES`` of an answer within one deadline; the bearer token (``token_env``) is sent
only in the header, never logged.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

from senex_scale.errors import TemporaryError
from senex_scale.policy.models import WebSockets

MAX_BYTES = 4096
TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Counts:
    """What an instance holds open now."""

    websockets: int
    requests: int
    closing: int = 0

    @property
    def total(self) -> int:
        """Everything a drain waits for: WebSockets and HTTP requests in progress."""
        return self.websockets + self.requests


class Sessions:
    """One pool's control endpoint on its instances."""

    def __init__(self, settings: WebSockets, timeout: float = TIMEOUT) -> None:
        self.settings = settings
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.settings.token_env:
            token = os.environ.get(self.settings.token_env)
            if token:
                headers["Authorization"] = f"Bearer {token}"
        return headers

    def _call(self, method: str, address: str, body: dict[str, Any] | None = None) -> Any:
        url = f"http://{address}{self.settings.control}"
        deadline = time.monotonic() + self.timeout
        try:
            with httpx.stream(
                method,
                url,
                json=body,
                headers=self._headers(),
                timeout=self.timeout,
                trust_env=False,
            ) as response:
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_BYTES or time.monotonic() > deadline:
                        raise TemporaryError(f"{url}: answer too long or too slow")
                if response.status_code not in (200, 202):
                    raise TemporaryError(f"{url}: HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            raise TemporaryError(f"{url}: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(data)
        except ValueError:
            raise TemporaryError(f"{url}: the answer is not JSON") from None

    def counts(self, address: str) -> Counts | None:
        """The instance's open WebSockets and requests, or None when it cannot tell."""
        try:
            data = self._call("GET", address)
        except TemporaryError:
            return None
        values = [data.get(k) if isinstance(data, dict) else None for k in _KEYS]
        numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
        if len(numbers) != len(_KEYS):
            return None
        return Counts(*numbers)

    def close(self, address: str, count: int | None, over: float, reason: str) -> int:
        """Ask the instance to close ``count`` WebSockets (None: all) over ``over`` seconds
        with 1012; how many it is closing. ``TemporaryError`` when it did not take it."""
        body = {"count": count, "over": round(max(0.0, over), 3), "reason": reason}
        data = self._call("POST", address, body)
        closing = data.get("closing") if isinstance(data, dict) else None
        if not isinstance(closing, int) or isinstance(closing, bool):
            raise TemporaryError(f"{address}{self.settings.control}: no count in the answer")
        return closing


_KEYS = ("websockets", "requests", "closing")
