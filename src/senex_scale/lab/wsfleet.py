"""Long-lived WebSockets held through a sequence of scale-outs and scale-ins (issue 22).

Shared by ``tests/integration/traffic/test_long_websockets.py`` and
``bench/bench_websockets.py``. One ``Fleet`` is one front measured end to end::

    LongClients (N asyncio tasks, one thread)          senex-scale run (a process, JSON log)
      each holds ws://127.0.0.1:FRONT/ws/stream/         policy: pool web, min = max = the step,
      and reads {"instance": n, "seq": i} every 200 ms   rewritten + SIGHUP for the next step
             |                                              |  supervisor runtime, balancer
             v                                              v  (HAProxy runtime API | nginx file)
      front:  haproxy         HAProxy (leastconn | roundrobin), admin socket
              nginx-haproxy   nginx, static upstream --> that HAProxy (no reload on scaling)
              nginx           nginx balancer (upstream file rewritten, reload): the "before"
             |
             v
      supervisord [program:web] numprocs = 4: Daphne on 127.0.0.1:BASE+n, SENEX_INSTANCE=n
        WebSocketControl(WebSocketGauge(ProtocolTypeRouter(http: Django /health/,
                                                           websocket: the streaming consumer)))

The instances are a minimal Django + Channels project written to the fleet's directory (no
database, no channel layer). A client reconnects 0-250 ms after any close, like a dashboard.
``Fleet.run`` drives the sequence (``2 -> 4 -> 2 -> 3 -> 1`` by default) and then an
"empty probe" (rebalancing off, ``1 -> 3 -> 1``: the two new instances hold nothing, so the
scale-in time of empty instances is measured on every front), and returns a ``Report``
built from the clients' records and the controller's logged steps:

- closes without a close frame (goal 0);
- clients cut on an instance that was not drained (goal 0): a close on instance n outside
  every drain window of n (its ``drain`` step to its ``stop`` step, with ``SLACK`` either side)
  that is not a clean 1012 ("service restart", how the controller moves a client to
  rebalance): those are counted apart;
- per scale-out, how the clients sit on the pool ``2 x interval + SETTLE`` after the last new
  instance joined the balancer, as the worst deviation from an even share (goal <= 20 %);
- the longest gap between two messages a client saw (across its reconnects), p50 and p99;
- per scale-in, drain to the last stop, and whether the drained instances held no client.

Only 127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from senex_scale.balancers.base import Balancer, MemberState, build_balancer
from senex_scale.errors import SenexError
from senex_scale.lab.base import HOST, free_port_range
from senex_scale.lab.haproxy import HAProxy, haproxy_binary, http_proxy
from senex_scale.lab.multihost import Controller, Event, read_events
from senex_scale.lab.nginx import Nginx, nginx_binary, proxy_http
from senex_scale.lab.supervisord import Supervisord
from senex_scale.policy import load_policy
from senex_scale.runtimes.base import Runtime, UnitState, build_runtime
from senex_scale.testing import wait_until

INSTANCES = 4
"""``numprocs``: the largest step of any sequence here."""
WS_PATH = "/ws/stream/"
EVERY = 0.2
"""Seconds between two messages of the instance's stream."""
JITTER = 0.25
"""A client waits a random 0..JITTER seconds before it reconnects (a dashboard's backoff)."""
STALL = 5.0
"""A connection with no message for this long is given up by its client (and counted)."""
SLACK = 1.0
"""Seconds either side of a drain window that still count as that drain (the client sees the
close a little after the server sent it; the ``stop`` step is logged once the process exited)."""
SETTLE = 1.0
"""After a scale-out the spread is read 2 intervals + SETTLE after the last ``add``: the
rebalancing closes of the next tick, the 0..0.25 s jitter and a reconnect (< 0.35 s measured
in issue 22) fit in SETTLE."""
SEQUENCE = (2, 4, 2, 3, 1)
EMPTY_PROBE = (3, 1)
"""After the sequence, rebalancing off: 1 -> 3 leaves two empty instances, 3 -> 1 drains them."""

FRONTS = ("haproxy", "nginx-haproxy", "nginx", "haproxy-rr")
"""haproxy, nginx-haproxy: the deployment of issue 22 (leastconn, ``[pools.web.websockets]``).
nginx: the nginx balancer (reload per change, round robin), haproxy-rr: HAProxy round robin,
both without ``[pools.web.websockets]``: the "before" baselines."""


# --------------------------------------------------------------------------- the instances

PROJECT = {
    "wsapp/__init__.py": "",
    "wsapp/settings.py": '''\
"""The streaming instance of senex_scale.lab.wsfleet: no database, no channel layer."""
SECRET_KEY = "senex-lab-wsfleet"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = []
MIDDLEWARE = []
ROOT_URLCONF = "wsapp.urls"
DATABASES = {}
CHANNEL_LAYERS = {}
ASGI_APPLICATION = "wsapp.asgi.application"
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
''',
    "wsapp/urls.py": """\
from django.http import HttpResponse
from django.urls import path


def health(request):
    return HttpResponse("ok")


urlpatterns = [path("health/", health)]
""",
    "wsapp/consumers.py": '''\
"""Every EVERY seconds: {"instance": n, "seq": i} on each open WebSocket."""
import asyncio
import json
import os

from channels.generic.websocket import AsyncWebsocketConsumer

INSTANCE = int(os.environ["SENEX_INSTANCE"])
EVERY = float(os.environ.get("SENEX_EVERY", "0.2"))


class Stream(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        self.streaming = asyncio.ensure_future(self.stream())

    async def stream(self):
        seq = 0
        while True:
            await self.send(text_data=json.dumps({"instance": INSTANCE, "seq": seq}))
            seq += 1
            await asyncio.sleep(EVERY)

    async def disconnect(self, code):
        streaming = getattr(self, "streaming", None)
        if streaming is not None:
            streaming.cancel()
''',
    "wsapp/asgi.py": """\
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wsapp.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from senex_scale.contrib.django.metrics import WebSocketGauge  # noqa: E402
from wsapp.consumers import Stream  # noqa: E402

application = WebSocketGauge(
    ProtocolTypeRouter(
        {
            "http": django_app,
            "websocket": URLRouter([path("WS_PATH", Stream.as_asgi())]),
        }
    )
)
try:
    from senex_scale.contrib.django.websockets import WebSocketControl
except ImportError:  # not built yet: the fleet reports "control: missing"
    CONTROL = False
else:
    CONTROL = True
    application = WebSocketControl(application)
""",
}

PROGRAM = """\
[program:web]
directory={root}
command=/bin/sh -c 'exec {python} -m daphne -b 127.0.0.1 -p $(({base} + %(process_num)d)) wsapp.asgi:application'
process_name=%(program_name)s-%(process_num)d
numprocs={instances}
numprocs_start=1
environment=SENEX_INSTANCE="%(process_num)d",SENEX_EVERY="{every}",PYTHONPATH="{root}",DJANGO_SETTINGS_MODULE="wsapp.settings"
autostart=false
autorestart=unexpected
startsecs=1
stopsignal=TERM
stopwaitsecs=15
redirect_stderr=true
stdout_logfile={root}/web-%(process_num)d.log
"""  # noqa: E501 - an ini line is one line
"""Daphne per instance as docs/runtime-supervisor.md has it; ``stopwaitsecs`` above Daphne's
10 s application close timeout."""


def write_project(root: Path) -> None:
    """The Django + Channels project under ``root`` (importable with ``root`` on the path)."""
    for name, text in PROJECT.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("WS_PATH", WS_PATH.lstrip("/")))


class DaphnePool(Supervisord):
    """The lab's supervisord running pool ``web``: Daphne instance n on ``BASE + n``."""

    def __init__(self, root: Path, base: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        write_project(root)
        program = PROGRAM.format(
            root=root, python=sys.executable, base=base, instances=INSTANCES, every=EVERY
        )
        super().__init__(root, programs=program)
        self.base = base


# --------------------------------------------------------------------------- the fronts


def haproxy_conf(balance: str) -> str:
    """The lab's HTTP proxy (``http_proxy``: ``retries 0``, ``timeout tunnel 1h``, checks on
    /health/, no cookie) with ``balance`` (``leastconn``: a reconnecting client goes to the
    instance with the fewest connections)."""
    return http_proxy(retries=0, balance=balance)


NGINX_HTTP = proxy_http(next_upstream="off", websocket="/ws/")
"""nginx: ``/ws/`` proxied with the Upgrade headers and a one-hour read timeout."""

STATIC_UPSTREAM = """\
upstream senex_web {{
    # the local HAProxy: scaling changes its servers, never this file (no nginx reload)
    server 127.0.0.1:{port};
    keepalive 16;
}}
"""

EMPTY_UPSTREAM = """\
upstream senex_web {
    # senex-scale placeholder: nginx needs a server in an upstream
    server 127.0.0.1:9 down;
}
"""


@dataclass(frozen=True)
class Tuning:
    """The controller's settings for a fleet (the issue's: interval 2 s, drain_timeout 10 s)."""

    interval: float = 2.0
    drain_timeout: float = 10.0
    drain_close: float = 5.0
    """``websockets.drain_close``; the controller caps it at drain_timeout / 2."""
    rebalance_share: float | None = None
    """``websockets.rebalance_share`` etc.; None: the policy's defaults (what operators get,
    and what the goals are reported on)."""
    rebalance_tolerance: float | None = None
    rebalance_min: int | None = None
    nginx_shutdown: str = "20s"
    """worker_shutdown_timeout of the reloading nginx (baseline): short enough that its cuts
    show within a run."""
    extra_balancer: dict[str, Any] = field(default_factory=dict)
    """More balancer settings (e.g. nginx ``balance = "least_conn"`` once it exists)."""
    websockets: bool | None = None
    """Force the ``[pools.web.websockets]`` table on or off (default: on for the fronts of
    issue 22, off for the baselines)."""


def _toml(value: Any) -> str:
    """A TOML value: JSON's spelling of strings, booleans and numbers is valid TOML."""
    return json.dumps(value)


# --------------------------------------------------------------------------- the clients


@dataclass
class Link:
    """One WebSocket connection of one client."""

    client: int
    opened: float
    """Epoch seconds: the handshake completed."""
    instance: int | None = None
    """Which instance streamed on it (its first message)."""
    first: float | None = None
    last: float | None = None
    messages: int = 0
    skipped: int = 0
    """Sequence numbers missing between two messages on this connection."""
    closed: float | None = None
    code: int | None = None
    """The close code the server sent (None: no close frame came)."""
    frame: bool = False
    """A close frame was received from the server."""
    why: str = ""
    """server (it closed), stall (no message for STALL s), error: ..., end (we closed)."""

    def open_at(self, at: float) -> bool:
        return self.opened <= at and (self.closed is None or self.closed > at)


@dataclass
class ClientLog:
    """Everything one client saw."""

    client: int
    links: list[Link] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    """Seconds between two consecutive messages, across reconnects."""
    longest: tuple[float, float] = (0.0, 0.0)
    """(gap, epoch at its end)."""
    reconnects: list[float] = field(default_factory=list)
    """Seconds from a close to the first message on the next connection."""
    failed_opens: list[tuple[float, str]] = field(default_factory=list)


class LongClients:
    """``count`` clients, each an asyncio task (all in one thread), each holding a WebSocket to
    ``url`` until the block ends, reading every message and reconnecting after any close."""

    def __init__(self, url: str, count: int = 40, *, jitter: float = JITTER) -> None:
        if not url.startswith(f"ws://{HOST}:"):
            raise ValueError(f"{url}: the lab's clients only connect to {HOST}")
        self.url = url
        self.count = count
        self.jitter = jitter
        # Its own generator: the global one belongs to the process (a thread that draws
        # from it changes the state other code, such as Hypothesis, relies on).
        self._random = random.Random()
        self.logs = [ClientLog(i) for i in range(count)]
        self.started = 0.0
        self.ended = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="long-clients", daemon=True)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> Self:
        self.started = time.time()
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.ended = self.ended or time.time()

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Until every client has had a message."""
        wait_until(
            lambda: all(log.links and log.links[-1].messages for log in self.logs),
            timeout,
            f"{self.count} WebSocket clients streaming from {self.url}",
        )

    # ------------------------------------------------------------------ what they hold

    def open_links(self, at: float | None = None) -> list[Link]:
        at = time.time() if at is None else at
        return [
            link
            for log in self.logs
            for link in list(log.links)
            if link.open_at(at) and link.instance is not None
        ]

    def by_instance(self, at: float | None = None) -> dict[int, int]:
        """Open connections per instance at ``at`` (default now)."""
        counts = Counter(link.instance for link in self.open_links(at))
        return {n: c for n, c in sorted(counts.items()) if n is not None}

    # ------------------------------------------------------------------ the clients

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the fleet, not lost in a thread
            self.error = exc
        finally:
            self.ended = time.time()
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        tasks = [
            asyncio.create_task(self._client(log, delay=i * 0.02))
            for i, log in enumerate(self.logs)
        ]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, log: ClientLog, delay: float) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        await asyncio.sleep(delay)
        last_message: float | None = None
        closed_at: float | None = None
        while True:
            try:
                ws = await connect(
                    self.url, open_timeout=5, close_timeout=2, proxy=None, max_queue=64
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, 502/503 through the front, timeouts: retried
                log.failed_opens.append((time.time(), f"{type(exc).__name__}: {exc}"[:200]))
                await asyncio.sleep(self._random.uniform(0, self.jitter) + 0.05)
                continue
            link = Link(log.client, time.time())
            log.links.append(link)
            try:
                while True:
                    try:
                        text = await asyncio.wait_for(ws.recv(), STALL)
                    except TimeoutError:
                        link.why = "stall"
                        link.closed = time.time()
                        await ws.close()
                        break
                    now = time.time()
                    message = json.loads(text)
                    if link.instance is None:
                        link.instance = int(message["instance"])
                        link.first = now
                        if closed_at is not None:
                            log.reconnects.append(now - closed_at)
                    elif int(message["seq"]) != link.messages:
                        link.skipped += int(message["seq"]) - link.messages
                    link.messages = int(message["seq"]) + 1
                    link.last = now
                    if last_message is not None:
                        gap = now - last_message
                        log.gaps.append(gap)
                        if gap > log.longest[0]:
                            log.longest = (gap, now)
                    last_message = now
            except ConnectionClosed as exc:
                link.closed = time.time()
                link.why = "server"
                link.frame = exc.rcvd is not None
                link.code = exc.rcvd.code if exc.rcvd is not None else None
            except asyncio.CancelledError:
                link.closed = time.time()
                link.why = "end"
                with contextlib.suppress(Exception):
                    await asyncio.shield(ws.close())
                raise
            except Exception as exc:  # a bad message: counted, then reconnect
                link.closed = time.time()
                link.why = f"error: {type(exc).__name__}: {exc}"[:200]
                with contextlib.suppress(Exception):
                    await ws.close()
            closed_at = link.closed
            await asyncio.sleep(self._random.uniform(0, self.jitter))


# --------------------------------------------------------------------------- the controller's log


def steps(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if e.event == "step" and e.n is not None]


# --------------------------------------------------------------------------- the report


@dataclass
class Spread:
    """Where the clients sat after a scale-out."""

    step: str
    added_at: float
    """Seconds into the run when the last new instance joined the balancer."""
    read_at: float
    counts: dict[int, int]
    even: float
    worst: float
    """Largest |count - even| / even over the members (0.2 = 20 %)."""
    new_share: float
    """Share of the clients on the instances this scale-out added."""
    at_end: dict[int, int]
    """The same just before the next step."""
    probe: bool = False
    """The empty probe's scale-out (rebalancing off): not held to the spread goal."""


@dataclass
class ScaleIn:
    """One scale-in: drain of the chosen instances to their last stop."""

    step: str
    drained: dict[int, int]
    """Instance -> clients on it when it was drained."""
    seconds: float | None
    """First drain to the last stop (None: no stop logged)."""
    requested: float | None
    """From the policy change to the last stop."""
    empty: bool


@dataclass
class Report:
    """The numbers of one front (the issue's five, and what explains them)."""

    front: str
    clients: int
    seconds: float
    sequence: list[int]
    control: bool
    """The instances served WebSocketControl and the policy had [pools.web.websockets]."""
    connections: int
    closes: int
    no_close_frame: int
    cut_undrained: int
    drained_closes: int
    rebalance_closes: int
    rebalance_asked: int
    """WebSockets the controller's ``rebalance`` log lines asked instances to close."""
    stalls: int
    failed_opens: int
    skipped_messages: int
    spread: list[Spread]
    spread_worst: float | None
    gap_p50: float
    gap_p99: float
    gap_max: float
    gap_max_at: float
    reconnect_p50: float | None
    reconnect_max: float | None
    scale_ins: list[ScaleIn]
    empty_scale_in_max: float | None
    close_codes: dict[str, int]
    cuts: list[str]
    """The first cuts, explained (client, instance, code, time)."""
    timeline: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The report as a few lines (CI logs carry them)."""
        lines = [
            f"[{self.front}] {self.clients} clients for {self.seconds:.0f} s through "
            f"{' -> '.join(map(str, self.sequence))} (control: {self.control}): "
            f"{self.connections} connections, {self.closes} closes "
            f"{dict(sorted(self.close_codes.items()))}",
            f"  closes without a close frame: {self.no_close_frame} (goal 0); clients cut on "
            f"undrained instances: {self.cut_undrained} (goal 0); drained: "
            f"{self.drained_closes}; rebalanced (1012): {self.rebalance_closes} (asked "
            f"{self.rebalance_asked}); stalls: "
            f"{self.stalls}; failed opens: {self.failed_opens}; skipped messages: "
            f"{self.skipped_messages}",
            f"  message gap p50 {self.gap_p50:.3f} s, p99 {self.gap_p99:.3f} s, max "
            f"{self.gap_max:.3f} s (at {self.gap_max_at:.1f} s); reconnect p50 "
            f"{_secs(self.reconnect_p50)}, max {_secs(self.reconnect_max)}",
        ]
        for s in self.spread:
            lines.append(
                f"  scale-out {s.step}{' (probe)' if s.probe else ''}: at "
                f"+{s.read_at - s.added_at:.1f} s after the last add "
                f"{s.counts} (even {s.even:.1f}, worst {s.worst:.0%}, on new "
                f"{s.new_share:.0%}); before the next step {s.at_end}"
            )
        for i in self.scale_ins:
            lines.append(
                f"  scale-in {i.step}: drained {i.drained} {'(empty) ' if i.empty else ''}"
                f"drain -> last stop {_secs(i.seconds)}, policy change -> last stop "
                f"{_secs(i.requested)}"
            )
        lines.append(
            f"  worst spread {_pct(self.spread_worst)} (goal <= 20 %); empty-instance "
            f"scale-in max {_secs(self.empty_scale_in_max)}"
        )
        lines += [f"  cut: {cut}" for cut in self.cuts[:10]]
        return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Action:
    """A step of the sequence: the policy changed to ``count`` at ``at`` (epoch)."""

    at: float
    count: int
    label: str


def build_report(
    front: str,
    clients: LongClients,
    events: Sequence[Event],
    actions: Sequence[Action],
    *,
    interval: float,
    control: bool,
    end: float,
) -> Report:
    """The report from the clients' records and the controller's steps."""
    start = clients.started
    logged = steps(events)
    windows: dict[int, list[tuple[float, float]]] = {}
    for e in logged:
        if e.what == "drain":
            stop = next(
                (
                    s.at
                    for s in logged
                    if s.n == e.n and s.at >= e.at and s.what in ("stop", "remove", "failed")
                ),
                end,
            )
            windows.setdefault(e.n or 0, []).append((e.at - SLACK, stop + SLACK))

    links = [link for log in clients.logs for link in log.links]
    ended = [link for link in links if link.closed is not None and link.why != "end"]
    codes: Counter[str] = Counter()
    no_frame = cut = drained = rebalanced = stalls = 0
    cuts: list[str] = []
    for link in ended:
        assert link.closed is not None
        codes[str(link.code) if link.frame else ("stall" if link.why == "stall" else "none")] += 1
        if link.why == "stall":
            stalls += 1
        elif not link.frame:
            no_frame += 1
        in_drain = link.instance is not None and any(
            a <= link.closed <= b for a, b in windows.get(link.instance, [])
        )
        if in_drain:
            drained += 1
        elif link.frame and link.code == 1012:
            rebalanced += 1
        else:
            cut += 1
            cuts.append(
                f"client {link.client} on instance {link.instance} at "
                f"{link.closed - start:.1f} s: {link.why} code {link.code} "
                f"frame {link.frame} (after: {_last_before(events, link.closed, start)})"
            )

    gaps = [g for log in clients.logs for g in log.gaps]
    longest = max((log.longest for log in clients.logs), default=(0.0, start))
    reconnects = [r for log in clients.logs for r in log.reconnects]

    spread: list[Spread] = []
    scale_ins: list[ScaleIn] = []
    previous: int | None = None
    for index, action in enumerate(actions):
        until = actions[index + 1].at if index + 1 < len(actions) else end
        mine = [e for e in logged if action.at <= e.at < until]
        label = f"{previous} -> {action.count}" if previous is not None else str(action.count)
        if previous is not None and action.count > previous:
            adds = [e for e in mine if e.what == "add"]
            if adds:
                added = max(e.at for e in adds)
                read = min(added + 2 * interval + SETTLE, until - 0.1)
                members = _members(logged, read)
                counts = _with_members(clients.by_instance(read), members)
                total = sum(counts.values())
                even = total / len(counts) if counts else 0.0
                worst = (
                    max((abs(c - even) / even for c in counts.values()), default=0.0)
                    if even
                    else 1.0
                )
                new = {e.n for e in adds}
                spread.append(
                    Spread(
                        label,
                        added - start,
                        read - start,
                        counts,
                        even,
                        worst,
                        sum(c for n, c in counts.items() if n in new) / total if total else 0.0,
                        _with_members(clients.by_instance(until - 0.2), _members(logged, until)),
                        probe=action.label == "empty probe",
                    )
                )
        elif previous is not None and action.count < previous:
            drains = [e for e in mine if e.what == "drain"]
            if drains:
                first = min(e.at for e in drains)
                stopped = [e.at for e in mine if e.what == "stop"]
                held = clients.by_instance(first - 0.05)
                chosen = {e.n or 0: held.get(e.n or 0, 0) for e in drains}
                last = max(stopped) if stopped else None
                scale_ins.append(
                    ScaleIn(
                        label,
                        chosen,
                        last - first if last is not None else None,
                        last - action.at if last is not None else None,
                        not any(chosen.values()),
                    )
                )
        previous = action.count

    empty = [i.seconds for i in scale_ins if i.empty and i.seconds is not None]
    return Report(
        front=front,
        clients=clients.count,
        seconds=end - start,
        sequence=[a.count for a in actions],
        control=control,
        connections=len(links),
        closes=len(ended),
        no_close_frame=no_frame,
        cut_undrained=cut,
        drained_closes=drained,
        rebalance_closes=rebalanced,
        rebalance_asked=sum(
            sum(v for v in (e.raw.get("closing") or {}).values() if isinstance(v, int))
            for e in events
            if e.event == "rebalance" and e.at >= start
        ),
        stalls=stalls,
        failed_opens=sum(len(log.failed_opens) for log in clients.logs),
        skipped_messages=sum(link.skipped for link in links),
        spread=spread,
        spread_worst=max((s.worst for s in spread if not s.probe), default=None),
        gap_p50=statistics.median(gaps) if gaps else 0.0,
        gap_p99=_quantile(gaps, 0.99),
        gap_max=longest[0],
        gap_max_at=longest[1] - start,
        reconnect_p50=statistics.median(reconnects) if reconnects else None,
        reconnect_max=max(reconnects) if reconnects else None,
        scale_ins=scale_ins,
        empty_scale_in_max=max(empty) if empty else None,
        close_codes=dict(codes),
        cuts=cuts[:20],
        timeline=[_line(e, start) for e in events if e.at >= start][:400],
    )


def _with_members(counts: dict[int, int], members: set[int]) -> dict[int, int]:
    """``counts`` with every member present (0 when it holds no client)."""
    return dict(sorted({**dict.fromkeys(members, 0), **counts}.items()))


TIMELINE_KEYS = ("counts", "closing", "over", "error", "unknown", "drift", "note")


def _line(e: Event, start: float) -> str:
    """One controller event for the timeline: a step, or an event with what explains it."""
    if e.event == "step":
        return f"{e.at - start:7.2f} {e.what} {e.n} {e.detail}".rstrip()
    extra = " ".join(f"{k}={e.raw[k]}" for k in TIMELINE_KEYS if k in e.raw)
    return f"{e.at - start:7.2f} {e.event} {extra}".rstrip()


def _members(logged: Sequence[Event], at: float) -> set[int]:
    """Instances in service at ``at``: added and not drained since (from the steps)."""
    members: set[int] = set()
    for e in logged:
        if e.at > at or e.n is None:
            continue
        if e.what == "add":
            members.add(e.n)
        elif e.what in ("drain", "remove", "disable"):
            members.discard(e.n)
    return members


def _last_before(events: Sequence[Event], at: float, start: float) -> str:
    before = [e for e in steps(events) if e.at <= at]
    if not before:
        return "no step yet"
    e = before[-1]
    return f"{e.what} {e.n} at {e.at - start:.1f} s"


# --------------------------------------------------------------------------- the fleet


class Fleet:
    """One front, the pool behind it and the controller, measured through a sequence.

    Everything lives under ``root`` and is stopped at the end of the ``with`` block."""

    def __init__(
        self,
        root: Path,
        front: str,
        *,
        clients: int = 40,
        tuning: Tuning | None = None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        if front not in FRONTS:
            raise ValueError(f"front {front!r}: one of {', '.join(FRONTS)}")
        self.root = root
        self.front = front
        self.clients = clients
        self.tuning = tuning or Tuning()
        self.say = say
        default = front in ("haproxy", "nginx-haproxy")
        self.websockets = default if self.tuning.websockets is None else self.tuning.websockets
        self.rebalance = True
        self.pool = DaphnePool(root / "pool", free_port_range(INSTANCES))
        self.haproxy: HAProxy | None = None
        self.nginx: Nginx | None = None
        self.controller: Controller | None = None
        self.policy_file = root / "policy.toml"
        self.actions: list[Action] = []
        self._stack = contextlib.ExitStack()
        self._balancer: dict[str, Any] = {}
        self._runtime: Runtime | None = None
        self._lb: Balancer | None = None

    # ------------------------------------------------------------------ servers

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._stack.enter_context(self.pool)
        self._stack.callback(self._stop_instances)
        if self.front in ("haproxy", "nginx-haproxy", "haproxy-rr"):
            balance = "roundrobin" if self.front == "haproxy-rr" else "leastconn"
            self.haproxy = HAProxy(self.root / "haproxy", conf=haproxy_conf(balance))
            self._stack.enter_context(self.haproxy)
            self._balancer = {
                "type": "haproxy",
                "socket": str(self.haproxy.socket),
                "backend": "web_backend",
                "config": str(self.haproxy.config),
                "haproxy": haproxy_binary(),
                "cookie": False,
                "server_options": "inter 1s rise 1 fall 2",
            }
        if self.front == "nginx-haproxy":
            assert self.haproxy is not None
            self.nginx = self._new_nginx(STATIC_UPSTREAM.format(port=self.haproxy.port))
            self._stack.enter_context(self.nginx)
        if self.front == "nginx":
            self.nginx = self._new_nginx(EMPTY_UPSTREAM)
            upstream = self.nginx.root / "upstream.conf"
            self._balancer = {
                "type": "nginx",
                "upstream": "senex_web",
                "file": str(upstream),
                "nginx": nginx_binary(),
                "conf": str(self.nginx.conf),
                "prefix": str(self.nginx.root),
                "ip_hash": False,
                "reload_timeout": "10s",
            }
            self._stack.enter_context(self.nginx)
        if "balance" in self.tuning.extra_balancer:
            self._balancer.pop("ip_hash", None)  # balance replaces the older switch
        self._balancer.update(self.tuning.extra_balancer)

    @property
    def port(self) -> int:
        """Where the clients connect: nginx if there is one, else HAProxy."""
        server = self.nginx or self.haproxy
        assert server is not None
        return server.port

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}{WS_PATH}"

    def _stop_instances(self) -> None:
        if self.pool.alive:
            with contextlib.suppress(Exception):
                self.pool.call("stopAllProcesses", True, timeout=60)

    # ------------------------------------------------------------------ the policy

    def policy(self, count: int) -> str:
        """The controller's policy: pool ``web`` held at ``count`` (min = max), no rules."""
        t = self.tuning
        lines = [
            "[controller]",
            f'interval = "{t.interval:g}s"',
            f"state = {_toml('sqlite:' + str(self.root / 'state.db'))}",
            "",
            "[pools.web]",
            f"min = {count}",
            f"max = {count}",
            f'port = "{self.pool.base} + n"',
            'health = "/health/"',
            'start_timeout = "30s"',
            f'drain_timeout = "{t.drain_timeout:g}s"',
            'warmup = "0s"',
            'scale_out_cooldown = "0s"',
            'scale_in_cooldown = "0s"',
            'scale_in_stabilization = "0s"',
            "",
            "[pools.web.runtime]",
            'type = "supervisor"',
            f"url = {_toml(self.pool.url)}",
            'group = "web"',
            "",
            "[pools.web.balancer]",
            *(f"{key} = {_toml(value)}" for key, value in self._balancer.items()),
        ]
        if self.websockets:
            lines += [
                "",
                "[pools.web.websockets]",
                f'drain_close = "{t.drain_close:g}s"',
                f"rebalance = {_toml(self.rebalance)}",
            ]
            tuned = {
                "rebalance_share": t.rebalance_share,
                "rebalance_tolerance": t.rebalance_tolerance,
                "rebalance_min": t.rebalance_min,
            }
            lines += [f"{k} = {_toml(v)}" for k, v in tuned.items() if v is not None]
        return "\n".join(lines) + "\n"

    def _new_nginx(self, upstream: str) -> Nginx:
        """An nginx front (one worker; ``/ws/`` proxied) with ``upstream`` in its
        ``upstream.conf``, not started."""
        nginx = Nginx(
            self.root / "nginx",
            http=NGINX_HTTP,
            worker_shutdown_timeout=self.tuning.nginx_shutdown,
            worker_connections=1024,
        )
        nginx.root.mkdir(parents=True, exist_ok=True)
        (nginx.root / "upstream.conf").write_text(upstream)
        return nginx

    def _pool_handles(self) -> tuple[Runtime, Balancer]:
        if self._runtime is None or self._lb is None:
            spec = load_policy(self.policy_file).pools["web"]
            self._runtime = build_runtime("web", spec)
            self._lb = build_balancer("web", spec)
        return self._runtime, self._lb

    def serving(self) -> list[int]:
        """Instances running and READY in the balancer (none starting or stopping)."""
        runtime, balancer = self._pool_handles()
        listed = runtime.list()
        if any(i.state in (UnitState.STARTING, UnitState.STOPPING) for i in listed):
            return []
        running = sorted(i.n for i in listed if i.state is UnitState.RUNNING)
        members = balancer.members()
        if sorted(m.n for m in members) != running:
            return []
        if any(m.state is not MemberState.READY for m in members):
            return []
        return running

    def wait_serving(self, count: int, timeout: float = 90.0) -> None:
        wait_until(
            lambda: len(self.serving()) == count,
            timeout,
            f"{self.front}: {count} instances serving",
            ignore=(SenexError, OSError),
            interval=0.2,
        )

    def control_present(self) -> bool:
        """The instances' app wraps WebSocketControl (it is importable here)."""
        try:
            import senex_scale.contrib.django.websockets as module
        except ImportError:
            return False
        return hasattr(module, "WebSocketControl")

    # ------------------------------------------------------------------ the sequence

    def step(self, count: int, label: str) -> None:
        """The policy changed to ``count`` (SIGHUP); recorded as an action."""
        assert self.controller is not None
        self.actions.append(Action(time.time(), count, label))
        self.say(f"  {time.strftime('%H:%M:%S')} {self.front}: {label} -> {count}")
        self.controller.set(count, count)

    def run(
        self,
        sequence: Sequence[int] = SEQUENCE,
        *,
        hold: float = 25.0,
        warm: float = 5.0,
        empty_probe: bool = True,
        probe_hold: float | None = None,
    ) -> Report:
        """Start the controller at ``sequence[0]``, bring the clients on, then each next count
        ``hold`` seconds after the previous one; then the empty probe; the report."""
        self.policy_file.write_text(self.policy(sequence[0]))
        self.controller = Controller(
            self.policy_file, self.root / "controller.log", lambda low, high: self.policy(low)
        )
        self._stack.callback(self.controller.stop)
        self.controller.start(sequence[0], sequence[0])
        try:
            self.wait_serving(sequence[0])
        except AssertionError:
            raise AssertionError(
                f"{self.front}: pool did not come up\n{self.controller.log_tail()}"
            ) from None
        clients = LongClients(self.ws_url, self.clients)
        with clients:
            clients.wait_connected(30)
            self.actions.append(Action(clients.started, sequence[0], "start"))
            time.sleep(warm)
            for count in sequence[1:]:
                self.step(count, "sequence")
                self._hold(count, hold)
            if empty_probe:
                probe = probe_hold if probe_hold is not None else 2 * self.tuning.interval + 3
                self.rebalance = False
                for count in EMPTY_PROBE:
                    self.step(count, "empty probe")
                    self._hold(count, probe)
                self.rebalance = True
            end = time.time()
        if clients.error is not None:
            raise AssertionError(f"the clients failed: {clients.error!r}")
        time.sleep(0.5)  # the controller's last log lines
        events = read_events(self.controller.log_file)
        return build_report(
            self.front,
            clients,
            events,
            self.actions,
            interval=self.tuning.interval,
            control=self.websockets and self.control_present(),
            end=end,
        )

    def _hold(self, count: int, hold: float) -> None:
        started = self.actions[-1].at
        try:
            self.wait_serving(count, timeout=max(hold, 60.0))
        except AssertionError:
            assert self.controller is not None
            raise AssertionError(
                f"{self.front}: {count} instances not serving\n{self.controller.log_tail()}"
            ) from None
        left = started + hold - time.time()
        if left > 0:
            time.sleep(left)
