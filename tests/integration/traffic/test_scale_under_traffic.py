"""Scaling a real pool in and out under HTTP and WebSocket traffic drops nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from senex_scale.balancers.base import Balancer, MemberState, build_balancer
from senex_scale.controller.sequence import ScaleSequence, Step
from senex_scale.policy import load_policy
from senex_scale.runtimes.base import Runtime, UnitState, build_runtime
from senex_scale.testing import wait_until

pytestmark = pytest.mark.integration

CYCLES = 5
"""Scale 1 -> 3 -> 1 this many times."""
CLI_CYCLE = 2
"""The cycle (from 0) run through ``python -m senex_scale scale`` instead of in-process."""
REQUEST_TIMEOUT = 10.0
"""Per HTTP request and per WebSocket open/receive: a longer stall is a failure."""
HTTP_PAUSE = 0.002
"""Between two requests, so the client does not take a whole core of a 2-core CI machine."""
WS_MESSAGES = 5
WS_PAUSE = 0.25
"""A WebSocket session lasts WS_MESSAGES * WS_PAUSE (~1.25 s): well under any drain_timeout."""
LOAD_LIMIT = 300.0
"""The load threads stop on their own after this many seconds (the test takes far less)."""
MIN_REQUESTS = 500
MIN_SESSIONS = 10
SETTLE_TIMEOUT = 10.0
"""Bound on supervisord's STARTING (startsecs=1) and HAProxy's first health check after a step."""


class Front(Protocol):
    """What the tests use of the conftest's balancer fixtures."""

    kind: str
    policy: Path

    @property
    def url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...

    def log_tail(self) -> str: ...


# --------------------------------------------------------------------------- load


@dataclass
class HttpCounts:
    """What the HTTP thread saw."""

    ok: int = 0
    failed: int = 0
    longest: float = 0.0
    served_by: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class WsCounts:
    """What the WebSocket thread saw."""

    completed: int = 0
    failed_open: int = 0
    closed_by_server: int = 0
    other: int = 0
    """Wrong echo, a receive timing out, anything unexpected."""
    errors: list[tuple[float, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.failed_open + self.closed_by_server + self.other


class Traffic:
    """Two threads through the balancer until stopped: HTTP GETs, and short WebSocket sessions.

    Every request uses a new connection (``Connection: close``) and is never retried. A session
    opens ``/ws``, echoes WS_MESSAGES messages WS_PAUSE apart and closes normally; it fails when
    it cannot open, when the server closes it first (or not with 1000), or on a wrong echo.
    """

    def __init__(self, front: Front) -> None:
        self.front = front
        self.http = HttpCounts()
        self.ws = WsCounts()
        self.started = 0.0
        self.ended = 0.0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._http_loop, name="http-load", daemon=True),
            threading.Thread(target=self._ws_loop, name="ws-load", daemon=True),
        ]

    def __enter__(self) -> Traffic:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT * (WS_MESSAGES + 2))
        self.ended = time.monotonic()
        alive = [t.name for t in self._threads if t.is_alive()]
        if kind is None:
            assert not alive, f"load threads still running: {alive}"

    def wait_flowing(self) -> None:
        """Wait until requests and a WebSocket session have gone through."""
        wait_until(
            lambda: (
                (self.http.ok >= 20 and self.ws.completed >= 1)
                or self.http.failed + self.ws.failed > 0
            ),
            15,
            f"traffic through {self.front.kind}",
        )

    def _http_loop(self) -> None:
        deadline = time.monotonic() + LOAD_LIMIT
        counts = self.http
        with httpx.Client(
            base_url=self.front.url,
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
            headers={"Connection": "close"},
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            for _ in range(1_000_000):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                sent = time.monotonic()
                try:
                    response = client.get("/")
                    body = response.text
                    error = None
                    if response.status_code != 200 or body not in ("1", "2", "3", "4"):
                        error = f"HTTP {response.status_code} {body[:100]!r}"
                except Exception as exc:  # httpx errors, and anything unexpected: a failure
                    error = f"{type(exc).__name__}: {exc}"
                counts.longest = max(counts.longest, time.monotonic() - sent)
                if error is None:
                    counts.ok += 1
                    counts.served_by[body] += 1
                else:
                    counts.failed += 1
                    counts.errors.append((time.time(), f"GET /: {error}"))
                time.sleep(HTTP_PAUSE)

    def _ws_loop(self) -> None:
        deadline = time.monotonic() + LOAD_LIMIT
        counts = self.ws
        for session in range(100_000):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            at = time.time()
            # connect() returns after the handshake; entering it below (rather than as
            # ``with connect(...)``) tells a failed open from a session that broke later.
            try:
                ws = connect(
                    self.front.ws_url,
                    open_timeout=REQUEST_TIMEOUT,
                    close_timeout=REQUEST_TIMEOUT,
                    proxy=None,
                )
            except Exception as exc:
                counts.failed_open += 1
                counts.errors.append((at, f"WS open: {type(exc).__name__}: {exc}"))
                time.sleep(WS_PAUSE)
                continue
            try:
                with ws:
                    for i in range(WS_MESSAGES):
                        message = f"{session}-{i}"
                        ws.send(message)
                        reply = ws.recv(timeout=REQUEST_TIMEOUT)
                        if reply != message:
                            raise AssertionError(f"echo {reply!r}, not {message!r}")
                        time.sleep(WS_PAUSE)
            except ConnectionClosed as exc:
                counts.closed_by_server += 1
                counts.errors.append((time.time(), f"WS closed by the server: {exc}"))
                continue
            except Exception as exc:
                counts.other += 1
                counts.errors.append((time.time(), f"WS: {type(exc).__name__}: {exc}"))
                continue
            if ws.protocol.close_rcvd_then_sent is not False or ws.close_code != 1000:
                counts.closed_by_server += 1
                counts.errors.append(
                    (
                        time.time(),
                        f"WS close: code {ws.close_code}, server first: "
                        f"{ws.protocol.close_rcvd_then_sent}",
                    )
                )
            else:
                counts.completed += 1


# --------------------------------------------------------------------------- checks


def settled_members(runtime: Runtime, balancer: Balancer, want: int, label: str) -> list[int]:
    """The running instances once settled; the balancer's members must be exactly those."""

    def settled() -> bool:
        moving = (UnitState.STARTING, UnitState.STOPPING)
        return not any(i.state in moving for i in runtime.list())

    wait_until(settled, SETTLE_TIMEOUT, f"{label}: supervisord to settle")
    running = sorted(i.n for i in runtime.list() if i.state is UnitState.RUNNING)

    def members_ready() -> bool:
        members = balancer.members()
        return [m.n for m in members] == running and all(
            m.state is MemberState.READY for m in members
        )

    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not members_ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    members = {m.n: m.state.value for m in balancer.members()}
    assert sorted(members) == running, f"{label}: balancer has {members}, running {running}"
    assert set(members.values()) == {"ready"}, f"{label}: balancer members {members}"
    assert len(running) == want, f"{label}: {running} running, not {want}"
    return running


def scale_with_cli(
    front: Front, count: int, timeline: list[tuple[float, str]], drains: list[str]
) -> list[int]:
    """``python -m senex_scale scale web COUNT --policy P --json``: its ``after`` list."""
    argv = [sys.executable, "-m", "senex_scale", "scale", "web", str(count)]
    argv += ["--policy", str(front.policy), "--json"]
    argv += ["--state", f"sqlite:{front.policy.parent / 'state.db'}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr}"
    doc = json.loads(done.stdout)
    for step in doc["steps"]:
        timeline.append((step["at"], f"(cli) {step['what']} web@{step['n']} {step['detail']}"))
        if step["what"] == "idle":
            drains.append(step["detail"])
    assert doc["failed"] == {}, doc
    after: list[int] = doc["after"]
    return after


def during(at: float, timeline: list[tuple[float, str]]) -> str:
    """The last step taken at or before ``at`` (which step a failure happened in)."""
    before = [what for when, what in sorted(timeline) if when <= at]
    return before[-1] if before else "before the first step"


def explain(errors: list[tuple[float, str]], timeline: list[tuple[float, str]]) -> str:
    return "\n".join(f"  {error}  [after: {during(at, timeline)}]" for at, error in errors[:20])


# --------------------------------------------------------------------------- the scenario


def scale_under_traffic(front: Front) -> None:
    """Scale 1 -> 3 -> 1 CYCLES times under load; nothing may fail, members follow processes."""
    spec = load_policy(front.policy).pools["web"]
    runtime = build_runtime("web", spec)
    balancer = build_balancer("web", spec)
    timeline: list[tuple[float, str]] = []
    drains: list[str] = []
    """How each drain ended (the sequence's ``idle`` step detail)."""

    def record(step: Step) -> None:
        timeline.append((step.at, f"{step.what} web@{step.n} {step.detail}".strip()))
        if step.what == "idle":
            drains.append(step.detail)

    sequence = ScaleSequence("web", spec, runtime, balancer, on_step=record)
    first = sequence.scale_to(1)
    assert first.ok, f"initial scale to 1: {first.failed}"
    settled_members(runtime, balancer, 1, "initial scale to 1")

    with Traffic(front) as traffic:
        traffic.wait_flowing()
        for cycle in range(CYCLES):
            for count in (3, 1):
                label = f"cycle {cycle + 1}: scale to {count}"
                timeline.append((time.time(), label))
                if cycle == CLI_CYCLE:
                    after = scale_with_cli(front, count, timeline, drains)
                    label += " (cli)"
                else:
                    outcome = sequence.scale_to(count)
                    assert outcome.ok, f"{label}: {outcome.failed}"
                    after = sequence.running()
                running = settled_members(runtime, balancer, count, label)
                assert after == running, f"{label}: after {after}, running {running}"

    http, ws = traffic.http, traffic.ws
    seconds = traffic.ended - traffic.started
    print(
        f"\n[{front.kind}] {seconds:.1f}s of load: {http.ok + http.failed} requests "
        f"({(http.ok + http.failed) / seconds:.0f}/s), {http.failed} failed, longest "
        f"{http.longest * 1000:.0f} ms, served by {dict(sorted(http.served_by.items()))}; "
        f"{ws.completed + ws.failed} WebSocket sessions, {ws.completed} completed, "
        f"{ws.failed_open} failed to open, {ws.closed_by_server} closed by the server, "
        f"{ws.other} other failures; drains: {Counter(drains).most_common()}"
    )
    assert http.failed == 0, f"{http.failed} failed requests:\n{explain(http.errors, timeline)}"
    assert ws.failed == 0, f"{ws.failed} failed WebSockets:\n{explain(ws.errors, timeline)}"
    assert http.ok >= MIN_REQUESTS, f"only {http.ok} requests went through"
    assert ws.completed >= MIN_SESSIONS, f"only {ws.completed} WebSocket sessions"
    assert len(http.served_by) >= 3, f"requests did not spread: {http.served_by}"


def test_haproxy_scale_under_traffic(haproxy_front: Front) -> None:
    """HAProxy: drain waits for zero sessions; no request or WebSocket is dropped."""
    scale_under_traffic(haproxy_front)


def test_nginx_scale_under_traffic(nginx_front: Front) -> None:
    """nginx: drain (down + reload) waits drain_timeout; no request or WebSocket is dropped."""
    scale_under_traffic(nginx_front)
