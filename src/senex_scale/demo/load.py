"""The demo's load: a trading day played as HTTP, WebSocket and Celery traffic.

A profile is a list of phases; each phase holds a number of open WebSocket clients (one per
user, each receiving its positions), a rate of HTTP reads (the cached positions API), and a
rate of queued trades (``POST /api/trades/async/``: HTTP into Django, then a Celery task on
the ``trading`` queue). Every request, connection and queued trade is recorded:

- requests: start time, latency, status (or the error);
- WebSocket connections: which instance served them (the port in the first message), when
  they opened and closed, and who closed them (we, ramping down; or the server);
- queued trades: each carries a unique symbol (``Q`` + a sequence number), so afterwards the
  database says which were lost (no trade row) or done twice (two rows).

Requests are fired on schedule (an open-loop generator): a slow answer does not slow the
load down, so latency under scaling is measured honestly (no coordinated omission).
Why our own instead of Locust or k6: this needs the three kinds of traffic, per-connection
instance attribution and task accounting in one process with one clock, which neither gives
without writing the same code as plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN")
WS_RATE = 5.0
"""New WebSocket clients a second while a phase ramps up (users arrive, not all at once)."""


@dataclass(frozen=True)
class Phase:
    """``seconds`` of ``ws`` open WebSockets, ``rps`` reads/s (``quotes`` of them from the
    slow quote API, the rest of the cached positions API) and ``trades`` queued trades/s."""

    name: str
    seconds: float
    ws: int
    rps: float
    trades: float = 0.0
    quotes: float = 0.0
    """The share of the reads that ask for a quote (100 ms on one of one broker connection
    per instance: I/O-bound, queueing on a busy instance)."""


PROFILES: dict[str, tuple[Phase, ...]] = {
    # a trading day in six minutes (60x): quiet pre-market, the opening rush, a busy
    # morning, the lunch lull, the close, after hours
    "day": (
        Phase("pre-market", 40, ws=8, rps=4, quotes=0.2),
        Phase("open", 20, ws=60, rps=26, trades=25, quotes=0.6),
        Phase("morning", 80, ws=70, rps=26, trades=4, quotes=0.6),
        Phase("lunch", 60, ws=25, rps=8, trades=1, quotes=0.3),
        Phase("close", 40, ws=65, rps=26, trades=20, quotes=0.6),
        Phase("after-hours", 120, ws=4, rps=2),
    ),
    # the end-to-end test: up, hold, down, long enough at the bottom to scale back in
    "e2e": (
        Phase("quiet", 10, ws=6, rps=4, quotes=0.2),
        Phase("rush", 15, ws=70, rps=26, trades=25, quotes=0.6),
        Phase("busy", 20, ws=70, rps=26, trades=2, quotes=0.6),
        Phase("calm", 35, ws=4, rps=4, quotes=0.2),
    ),
}


@dataclass
class Request:
    at: float
    latency: float
    status: int | None
    error: str | None = None


@dataclass
class Socket:
    user: int
    opened: float
    port: int | None = None
    instance: int | None = None
    """The instance number its first message named (SENEX_INSTANCE), when it did."""
    closed: float | None = None
    by: str | None = None
    """``client`` (we closed it: ramping down or the end), ``server``, or ``error``."""
    detail: str = ""


@dataclass
class Record:
    """Everything the load saw; ``as_json`` for the measurements and the report."""

    started: float = 0.0
    ended: float = 0.0
    requests: list[Request] = field(default_factory=list)
    sockets: list[Socket] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    """Symbols of the trades accepted for the queue (HTTP 202)."""
    phases: list[tuple[str, float]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "ended": self.ended,
            "requests": [asdict(r) for r in self.requests],
            "sockets": [asdict(s) for s in self.sockets],
            "queued": self.queued,
            "phases": self.phases,
        }


class LoadGenerator:
    """Plays ``phases`` against ``front`` (the balancer's URL)."""

    def __init__(
        self,
        front: str,
        phases: tuple[Phase, ...],
        *,
        on_phase: Callable[[Phase], None] | None = None,
        seed: int = 7,
    ) -> None:
        self.front = front.rstrip("/")
        self.ws_front = "ws" + self.front.removeprefix("http")
        self.phases = phases
        self.on_phase = on_phase
        self.random = random.Random(seed)
        self.record = Record()
        self._sockets: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._next_user = 1
        self._sequence = 0
        self._stopping = False
        self._opener: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ running

    def run(self) -> Record:
        """Play every phase (blocking); the record."""
        asyncio.run(self._run())
        return self.record

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            self.client = client
            self.record.started = time.time()
            pending: set[asyncio.Task[None]] = set()
            try:
                for phase in self.phases:
                    self.record.phases.append((phase.name, time.time()))
                    if self.on_phase is not None:
                        self.on_phase(phase)
                    await self._resize(phase.ws)
                    await self._play(phase, pending)
            finally:
                self._stopping = True
                await self._resize(0)
                if pending:
                    await asyncio.wait(pending, timeout=15)
                self.record.ended = time.time()

    async def _play(self, phase: Phase, pending: set[asyncio.Task[None]]) -> None:
        """Fire reads and trades on schedule (exponential gaps) for the phase's length."""
        end = time.monotonic() + phase.seconds
        next_read = next_trade = time.monotonic()
        while (now := time.monotonic()) < end:
            if phase.rps > 0 and now >= next_read:
                next_read += self.random.expovariate(phase.rps)
                quote = self.random.random() < phase.quotes
                self._spawn(self._quote() if quote else self._read(), pending)
            if phase.trades > 0 and now >= next_trade:
                next_trade += self.random.expovariate(phase.trades)
                self._spawn(self._trade(), pending)
            wake = min(
                next_read if phase.rps > 0 else end,
                next_trade if phase.trades > 0 else end,
                end,
            )
            await asyncio.sleep(max(0.0, min(wake - time.monotonic(), 0.25)))

    @staticmethod
    def _spawn(coro: Any, pending: set[asyncio.Task[None]]) -> None:
        task = asyncio.ensure_future(coro)
        pending.add(task)
        task.add_done_callback(pending.discard)

    # ------------------------------------------------------------------ HTTP

    async def _read(self) -> None:
        user = self.random.randint(1, 50)
        await self._request("GET", f"/api/positions/{user}/")

    async def _quote(self) -> None:
        symbol = self.random.choice(SYMBOLS)
        await self._request("GET", f"/api/quotes/{symbol}/")

    async def _trade(self) -> None:
        self._sequence += 1
        symbol = f"Q{self._sequence:07d}"
        body = {
            "user_id": self.random.randint(1, 50),
            "symbol": symbol,
            "side": "buy",
            "quantity": "1",
            "price": "10.5",
        }
        status = await self._request("POST", "/api/trades/async/", json=body)
        if status == 202:
            self.record.queued.append(symbol)

    async def _request(self, method: str, path: str, **kwargs: Any) -> int | None:
        started = time.time()
        clock = time.monotonic()
        try:
            reply = await self.client.request(method, self.front + path, **kwargs)
        except httpx.HTTPError as exc:
            latency = time.monotonic() - clock
            self.record.requests.append(Request(started, latency, None, type(exc).__name__))
            return None
        latency = time.monotonic() - clock
        self.record.requests.append(Request(started, latency, reply.status_code))
        return reply.status_code

    # ------------------------------------------------------------------ WebSockets

    async def _resize(self, target: int, *, wait: bool = True) -> None:
        """Open or close WebSocket clients until ``target`` are open: closing the oldest
        first (the first to come are the first to leave), opening ``WS_RATE`` a second in
        the background, so new clients land on instances as they are added."""
        if self._opener is not None:
            self._opener.cancel()
        alive = [
            u for u, (task, stop) in self._sockets.items() if not (task.done() or stop.is_set())
        ]
        closing = []
        for user in alive[: max(0, len(alive) - target)]:
            task, stop = self._sockets[user]
            stop.set()
            closing.append(task)
        if target > len(alive):
            self._opener = asyncio.ensure_future(self._open(target - len(alive)))
        if closing and wait:
            await asyncio.wait(closing, timeout=10)

    async def _open(self, count: int) -> None:
        for _ in range(count):
            user = self._next_user
            self._next_user += 1
            stop = asyncio.Event()
            self._sockets[user] = (asyncio.ensure_future(self._socket(user, stop)), stop)
            await asyncio.sleep(1 / WS_RATE)

    async def _socket(self, user: int, stop: asyncio.Event) -> None:
        """One client: connect, read pushes; reconnect when the server closes it."""
        while not stop.is_set() and not self._stopping:
            sock = Socket(user, time.time())
            self.record.sockets.append(sock)
            try:
                url = f"{self.ws_front}/ws/positions/{user}/"
                async with connect(url, origin=self.front, open_timeout=10) as ws:  # type: ignore[arg-type]
                    first = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                    sock.port = first.get("port")
                    sock.instance = first.get("instance")
                    await self._hold(ws, sock, stop)
            except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
                if sock.closed is None:
                    sock.closed, sock.by = time.time(), "error"
                    sock.detail = f"{type(exc).__name__}: {exc}"[:160]
                await asyncio.sleep(0.5)

    async def _hold(self, ws: ClientConnection, sock: Socket, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receive = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({receive, stopper}, return_when="FIRST_COMPLETED")
                if stopper in done:
                    receive.cancel()
                    sock.closed, sock.by = time.time(), "client"
                    with contextlib.suppress(WebSocketException, OSError):
                        await ws.close()
                    return
                try:
                    receive.result()
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    reason = exc.rcvd.reason if exc.rcvd is not None else ""
                    detail = f"code {code} {reason}".strip()
                    sock.closed, sock.by, sock.detail = time.time(), "server", detail
                    return
        finally:
            stopper.cancel()
