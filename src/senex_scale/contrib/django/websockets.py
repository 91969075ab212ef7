"""Each instance's WebSockets, counted and closed cleanly when the controller asks.

``WebSocketControl`` is ASGI middleware around the whole application (Daphne, uvicorn or any
ASGI server; it needs no Django of its own)::

    application = WebSocketControl(ProtocolTypeRouter({...}))

It keeps the instance's open WebSockets (accepted and not yet ended: the server's disconnect
ends one even while the application still tidies up, oldest first) and the
HTTP requests in progress, and answers the controller on one internal path (default
``/senex/websockets/``, the pool's ``websockets.control``)::

    GET  /senex/websockets/    200 {"websockets": 12, "requests": 1, "closing": 0}
    POST /senex/websockets/    {"count": 5, "over": 10, "reason": "rebalance"}
                               202 {"closing": 5, "over": 10.0}

A POST closes the ``count`` oldest open WebSockets (``null``: all of them) that are not closing
already, paced evenly over ``over`` seconds (the first at once), each with code 1012 ("service
restart") and a close frame, so the client knows to reconnect at once and the balancer sends
it to another instance. Why the controller asks:

- **drain**: the instance is leaving; its clients move before the stop instead of being cut
  by it (Daphne cuts them with no close frame, 1006, when it is stopped), and spread over
  the window instead of reconnecting in the same second;
- **rebalance**: after a scale-out the old instances hold every connection and the new ones
  none; a few close so their clients land on the least-loaded instances.

After the close, anything the application still sends on that connection is dropped (the
server would refuse it), and the application gets its ``websocket.disconnect`` from the server
as for any close. The counts are exact where a balancer cannot count (nginx), so a drained
instance with nothing open is stopped at once.

Access is ``access.allowed``'s, as for ``/ready/`` and ``/metrics``: straight from loopback
or a private network without proxy headers, or with the bearer token of
``SENEX_SCALE_ENDPOINTS["TOKEN_ENV"]``; anyone else gets 403 and learns nothing. Pass
``config`` to use it without Django settings.

Written here rather than taken from a library: neither Channels nor Daphne nor uvicorn keeps a
registry of open connections or can close them from outside their own consumer; the ASGI
``send`` of each connection is the one handle every server offers.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from senex_scale.contrib.django.access import EndpointConfig, allowed, endpoint_config

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SERVICE_RESTART = 1012
"""RFC 6455 registry: "the server is restarting"; browsers and client libraries reconnect."""
MAX_BODY = 4096
MAX_OVER = 3600.0
MAX_REASON = 100
"""Characters of the close reason (the frame allows 123 bytes)."""


@dataclass(eq=False)
class _Connection:
    """One accepted WebSocket: its server-side ``send`` is how it is closed from outside."""

    send: Send
    opened: float
    closing: bool = False
    closed: bool = False
    """A close went out (ours or the application's): nothing more is sent."""
    ended: bool = False
    """The server said disconnect: the connection is gone, whatever the application does."""


@dataclass
class _Counts:
    requests: int = 0
    order: itertools.count[int] = field(default_factory=itertools.count)


class WebSocketControl:
    """ASGI middleware: the instance's open WebSockets, counted and closable (module docs)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str = "/senex/websockets/",
        config: EndpointConfig | None = None,
        code: int = SERVICE_RESTART,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f'path "{path}" must start with "/"')
        self.app = app
        self.path = path
        self.config = config
        self.code = code
        self.clock = clock
        self._open: dict[int, _Connection] = {}
        """Open WebSockets by accept order: iteration is oldest first."""
        self._counts = _Counts()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ what it reports

    @property
    def websockets(self) -> int:
        """Open WebSockets (accepted; no disconnect from the server yet, and the application
        call not over)."""
        return len(self._open)

    @property
    def closing(self) -> int:
        """Open WebSockets that are on their way out: chosen to close, or closed and not yet
        ended (``websockets - closing`` are the ones nobody has asked to leave)."""
        return sum(1 for c in self._open.values() if c.closing or c.closed)

    @property
    def requests(self) -> int:
        """HTTP requests in progress (the control endpoint's own not counted)."""
        return self._counts.requests

    def counts(self) -> dict[str, int]:
        return {"websockets": self.websockets, "requests": self.requests, "closing": self.closing}

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http" and scope.get("path") == self.path:
            await self._control(scope, receive, send)
        elif kind == "http":
            self._counts.requests += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self._counts.requests -= 1
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = next(self._counts.order)
        connection = _Connection(send, self.clock())

        async def tracked_send(message: Message) -> None:
            kind = message.get("type")
            if connection.closed:
                return  # we closed it: the server would refuse anything more
            if kind == "websocket.accept" and not connection.ended:
                self._open[key] = connection
            elif kind == "websocket.close":
                connection.closed = True
            await send(message)

        async def tracked_receive() -> Message:
            message = await receive()
            if message.get("type") == "websocket.disconnect":
                # Gone now, though the application may take a while to return (a Channels
                # consumer cancelling its channel-layer receive waits out Redis's blocking
                # pop; Daphne cancels it after 10 s): a drain need not wait for that.
                connection.ended = True
                self._open.pop(key, None)
            return message

        try:
            await self.app(scope, tracked_receive, tracked_send)
        finally:
            self._open.pop(key, None)

    async def close(self, count: int | None, over: float, reason: str = "") -> int:
        """Close the ``count`` oldest open WebSockets (None: all) over ``over`` seconds, in
        the background; how many were chosen."""
        chosen = [c for c in self._open.values() if not c.closing and not c.closed]
        if count is not None:
            chosen = chosen[:count]
        for connection in chosen:
            connection.closing = True
        if chosen:
            task = asyncio.get_running_loop().create_task(self._pace(chosen, over, reason))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(chosen)

    async def _pace(self, chosen: list[_Connection], over: float, reason: str) -> None:
        step = over / len(chosen) if chosen else 0.0
        start = self.clock()
        for index, connection in enumerate(chosen):
            wait = start + index * step - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if connection.closed or connection.ended:
                continue  # it ended on its own meanwhile
            connection.closed = True
            try:
                await send_close(connection.send, self.code, reason)
            except Exception:  # the client went away first: nothing to close
                continue

    # ------------------------------------------------------------------ the endpoint

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not allowed(_request(scope), self._config()):
            await _answer(send, 403, {"error": "forbidden"})
            return
        method = scope.get("method")
        if method in ("GET", "HEAD"):
            await _answer(send, 200, self.counts(), head=method == "HEAD")
            return
        if method != "POST":
            await _answer(send, 405, {"error": "GET or POST"}, allow="GET, HEAD, POST")
            return
        body = await _body(receive)
        if body is None:
            await _answer(send, 413, {"error": f"the body is over {MAX_BODY} bytes"})
            return
        try:
            count, over, reason = _close_request(body)
        except ValueError as exc:
            await _answer(send, 400, {"error": str(exc)})
            return
        closing = await self.close(count, over, reason)
        await _answer(send, 202, {"closing": closing, "over": over})

    def _config(self) -> EndpointConfig:
        if self.config is not None:
            return self.config
        try:
            from django.conf import settings
        except ImportError:  # an ASGI app without Django: the defaults
            return EndpointConfig.from_settings(None)
        if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            return EndpointConfig.from_settings(None)
        return endpoint_config()


async def send_close(send: Send, code: int, reason: str) -> None:
    """Close a WebSocket with ``code`` and a close frame, through the server's ``send``.

    Daphne 4.2 passes ASGI close messages to autobahn's ``sendClose``, which refuses every code
    but 1000 and 3000-4999 from a server (it raises, and nothing is sent), so 1012 never
    leaves. Daphne's ``send`` is ``partial(server.handle_reply, protocol)``: on it the frame
    is written with the protocol's ``sendCloseFrame`` (the same frame, without that check;
    on the reactor's own loop, as Daphne's ``handle_reply`` does), and autobahn runs the
    close handshake and tells the application as for any close. Every other server gets the
    ASGI message (uvicorn sends 1012 as asked).
    """
    protocol = _autobahn_protocol(send)
    if protocol is not None:
        protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123], isReply=False)
        return
    await send({"type": "websocket.close", "code": code, "reason": reason})


def _autobahn_protocol(send: Send) -> Any:
    """The open autobahn protocol behind Daphne's ``send``, or None (another server)."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    write = getattr(protocol, "sendCloseFrame", None)
    open_state = getattr(protocol, "STATE_OPEN", None)
    if not callable(write) or open_state is None:
        return None
    return protocol if getattr(protocol, "state", None) == open_state else None


def _close_request(body: bytes) -> tuple[int | None, float, str]:
    """``{"count": k|null, "over": s, "reason": "..."}`` checked; ValueError names the key."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError('the body must be an object: {"count": 5, "over": 10}')
    unknown = sorted(set(data) - {"count", "over", "reason"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (count, over, reason)")
    count = data.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"count: {count!r} is not a whole number >= 0 (or null: all)")
    over = data.get("over", 0)
    if isinstance(over, bool) or not isinstance(over, int | float) or not 0 <= over <= MAX_OVER:
        raise ValueError(f"over: {over!r} is not seconds in [0, {MAX_OVER:g}]")
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
        raise ValueError(f"reason: must be printable text of at most {MAX_REASON} characters")
    return count, float(over), reason


def _request(scope: Scope) -> Any:
    """What ``access.allowed`` reads of a request (Django's ``META`` names), from the scope."""
    meta: dict[str, str] = {}
    client = scope.get("client")
    if client:
        meta["REMOTE_ADDR"] = str(client[0])
    for name, value in scope.get("headers") or ():
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        meta[key] = value.decode("latin-1")
    return SimpleNamespace(META=meta)


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(
    send: Send, status: int, data: dict[str, Any], *, head: bool = False, allow: str = ""
) -> None:
    body = (json.dumps(data) + "\n").encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
