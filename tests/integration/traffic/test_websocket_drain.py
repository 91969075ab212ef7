"""A clean drain of WebSocket instances, behind HAProxy and behind nginx (issue 22, part 3).

The pool's instances (uvicorn, inside ``WebSocketControl``) hold echo WebSockets opened
through the balancer. A scale-in with ``[pools.web.websockets]``: the sequence asks each
drained instance to close its WebSockets with 1012 paced over ``drain_close``; every such
client gets a close frame (none is cut: no 1006), reconnects through the balancer to an
instance that stays, and the drain ends on the instance's own counts, long before
``drain_timeout``, even behind nginx, which cannot count connections.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from senex_scale.balancers.base import build_balancer
from senex_scale.controller.rebalance import FUTILE
from senex_scale.controller.sequence import SWITCH_OVER, ScaleSequence, Step
from senex_scale.policy import load_policy
from senex_scale.runtimes.base import UnitState, build_runtime
from senex_scale.testing import wait_until

from .conftest import Front
from .test_scale_under_traffic import settled_members

pytestmark = pytest.mark.integration

CLIENTS = 9
DRAIN_TIMEOUT = 20.0
DRAIN_CLOSE = 2.0


@dataclass
class Echoer:
    """One dashboard: holds an echo WebSocket through the front, reconnects when closed."""

    url: str
    closes: list[tuple[int | None, bool]] = field(default_factory=list)
    """(code, a close frame came) per close by the server."""
    errors: list[str] = field(default_factory=list)
    echoes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with connect(self.url, open_timeout=5, proxy=None) as ws:
                    while not self.stop.is_set():
                        ws.send("x")
                        if ws.recv(timeout=5) == "x":
                            self.echoes += 1
                        time.sleep(0.05)
            except ConnectionClosed as exc:
                frame = exc.rcvd
                self.closes.append((frame.code if frame else None, frame is not None))
                time.sleep(0.05)
            except (OSError, TimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.2)


def open_counts(front: Front, base: int, running: list[int]) -> dict[int, int]:
    """Each instance's open WebSockets, asked on its own port (0: not running)."""
    counts = {}
    for n in running:
        url = f"http://127.0.0.1:{base + n}/senex/websockets/"
        try:
            counts[n] = httpx.get(url, timeout=5, trust_env=False).json()["websockets"]
        except httpx.ConnectError:  # not started (yet)
            counts[n] = 0
    return counts


@pytest.fixture(params=["haproxy_front", "nginx_front"])
def front(request: pytest.FixtureRequest) -> Front:
    value: Front = request.getfixturevalue(request.param)
    return value


def with_websockets(front: Front) -> Path:
    """The front's policy with ``[pools.web.websockets]`` (no rebalancing here) and a long
    drain_timeout, so a drain that waited for it would show."""
    text = front.policy.read_text()
    text = text.replace('drain_timeout = "15s"', f'drain_timeout = "{DRAIN_TIMEOUT:g}s"')
    text = text.replace('drain_timeout = "4s"', f'drain_timeout = "{DRAIN_TIMEOUT:g}s"')
    text += f'\n[pools.web.websockets]\ndrain_close = "{DRAIN_CLOSE:g}s"\nrebalance = false\n'
    path = front.policy.with_name("policy-ws.toml")
    path.write_text(text)
    return path


@contextlib.contextmanager
def dashboards(front: Front, count: int) -> Iterator[list[Echoer]]:
    clients = [Echoer(front.ws_url) for _ in range(count)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    try:
        yield clients
    finally:
        for client in clients:
            client.stop.set()
        for thread in threads:
            thread.join(10)


def test_a_drain_moves_websockets_with_a_close_frame(front: Front) -> None:
    """3 -> 1 with 9 dashboards: the drained instances' clients get 1012 with a frame,
    nobody is cut, everyone ends up on the instance that stays, and the drain ends on the
    instances' counts (well under drain_timeout)."""
    spec = load_policy(with_websockets(front)).pools["web"]
    assert spec.port is not None
    runtime = build_runtime("web", spec)
    balancer = build_balancer("web", spec)
    steps: list[Step] = []
    sequence = ScaleSequence("web", spec, runtime, balancer, on_step=steps.append)
    assert sequence.scale_to(3).ok
    running = settled_members(runtime, balancer, 3, "scale to 3")
    with dashboards(front, CLIENTS) as clients:
        wait_until(
            lambda: sum(open_counts(front, spec.port or 0, running).values()) == CLIENTS,
            20,
            f"{CLIENTS} WebSockets open",
        )
        before = open_counts(front, spec.port, running)
        started = time.monotonic()
        outcome = sequence.scale_in(2)
        took = time.monotonic() - started
        assert outcome.ok, outcome.failed
        (kept,) = set(running) - set(outcome.done)
        moved = sum(before[n] for n in outcome.done)
        wait_until(
            lambda: open_counts(front, spec.port or 0, [kept])[kept] == CLIENTS,
            20,
            "every dashboard back, on the instance that stays",
        )
        echoes = sum(c.echoes for c in clients)
        wait_until(
            lambda: sum(c.echoes for c in clients) > echoes + CLIENTS,
            10,
            "echoes flowing after the drain",
        )
    closes = [close for c in clients for close in c.closes]
    asked = [s for s in steps if s.what == "close"]
    idle = [s.detail for s in steps if s.what == "idle"]
    print(
        f"\n[{front.kind}] before {before}, moved {moved}, scale-in {took:.1f}s, "
        f"closes {closes}, asked {[s.detail for s in asked]}, idle {idle}"
    )
    assert moved > 0, f"no dashboard was on a drained instance: {before}"
    assert sorted(s.n for s in asked) == sorted(outcome.done)
    assert all(code == 1012 and frame for code, frame in closes), closes
    # each moved dashboard was closed once; one that reconnected onto the other drained
    # instance (nginx's old workers still route there for a moment after the reload) is
    # asked to move again, with a frame too: never more than twice
    assert moved <= len(closes) <= 2 * moved, f"{len(closes)} closes for {moved} moved"
    assert all(d.startswith("no connections after") for d in idle), idle
    assert took < DRAIN_CLOSE + 6, f"the scale-in took {took:.1f}s"
    assert not any(c.errors for c in clients), [c.errors for c in clients]


def test_empty_instances_leave_at_once(front: Front) -> None:
    """Nothing open: 3 -> 1 ends in seconds, not at drain_timeout, behind nginx too (which
    cannot count connections: the instances count their own)."""
    spec = load_policy(with_websockets(front)).pools["web"]
    runtime = build_runtime("web", spec)
    balancer = build_balancer("web", spec)
    sequence = ScaleSequence("web", spec, runtime, balancer)
    assert sequence.scale_to(3).ok
    settled_members(runtime, balancer, 3, "scale to 3")
    started = time.monotonic()
    outcome = sequence.scale_in(2)
    took = time.monotonic() - started
    print(f"\n[{front.kind}] two empty instances out in {took:.2f}s")
    assert outcome.ok, outcome.failed
    # behind nginx the instance's own count is trusted only after SWITCH_OVER (a reload's
    # old workers may still route to it until the new ones run)
    bound = 3 + (SWITCH_OVER if front.kind == "nginx" else 0)
    assert took < bound, f"two empty instances took {took:.1f}s (drain_timeout {DRAIN_TIMEOUT}s)"


REBALANCE_POLICY = """\
[controller]
interval = "{interval}s"
state = "sqlite:{state}"

[pools.web]
min = {count}
max = {count}
port = "{base} + n"
start_timeout = "20s"
drain_timeout = "20s"
warmup = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"
runtime = {{ type = "supervisor", url = "{url}", group = "web" }}
balancer = {{ type = "haproxy", socket = "{socket}", backend = "web_backend", config = "{config}", haproxy = "{haproxy}", cookie = false, server_options = "inter 200ms rise 1 fall 2" }}

[pools.web.websockets]
rebalance_share = 0.25
"""  # noqa: E501 - TOML inline tables are one line


@dataclass
class Rebalanced:
    """What a scale-out with dashboards open came to."""

    spread: dict[int, int]
    """Open WebSockets per instance at the end."""
    asked: list[dict[str, Any]]
    """The controller's ``rebalance`` log events."""
    events: list[str]
    closes: list[tuple[int | None, bool]]


def scale_out_with_dashboards(
    pool: Any, tmp_path: Path, *, balance: str, looks: int, stop_when_even: bool
) -> Rebalanced:
    """12 dashboards on 2 instances behind HAProxy (``balance``), then the controller (in
    this process, interval 1 s) scales to 4 and ticks up to ``looks`` more times."""
    from senex_scale import lab
    from senex_scale.controller.leader import NoLeader
    from senex_scale.controller.loop import ControllerLoop
    from senex_scale.lab.haproxy import haproxy_binary, http_proxy
    from senex_scale.policy import parse_policy
    from senex_scale.store.sql import open_store

    haproxy = lab.HAProxy(tmp_path / "haproxy", conf=http_proxy(retries=0, balance=balance))
    interval = 1.0
    state = tmp_path / "state.db"

    def policy(count: int) -> str:
        return REBALANCE_POLICY.format(
            interval=interval,
            state=state,
            count=count,
            base=pool.base,
            url=pool.url,
            socket=haproxy.socket,
            config=haproxy.config,
            haproxy=haproxy_binary(),
        )

    asked: list[dict[str, Any]] = []
    events: list[str] = []

    class Log:
        def __getattr__(self, level: str) -> Any:
            def log(event: str, **fields: Any) -> None:
                events.append(f"{level} {event} {fields}")
                if event == "rebalance":
                    asked.append(fields)

            return log

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy(2))
    with haproxy:
        front = Front("haproxy", haproxy.port, policy_file, haproxy.log)
        loop = ControllerLoop(
            parse_policy(policy(2)),
            open_store(f"sqlite:{state}"),
            NoLeader(),
            policy_path=policy_file,
            log=Log(),
        )

        def ticks(count: int) -> None:
            for _ in range(count):
                loop._maybe_reload()  # what run() does before each tick
                loop.prober.probe_all()
                loop.tick()
                assert loop.settle(60), "an action did not finish"
                time.sleep(interval)

        ticks(2)
        runtime = loop.ctx.pools["web"].runtime
        assert runtime is not None
        assert sorted(i.n for i in runtime.list() if i.state is UnitState.RUNNING) == [1, 2]
        with dashboards(front, 12) as clients:
            wait_until(
                lambda: sum(open_counts(front, pool.base, [1, 2]).values()) == 12, 20, "12 open"
            )
            policy_file.write_text(policy(4))
            loop.request_reload()
            ticks(1)  # the scale-out
            spread: dict[int, int] = {}
            for _ in range(looks):
                ticks(1)
                spread = open_counts(front, pool.base, [1, 2, 3, 4])
                even = sum(spread.values()) == 12 and all(2 <= c <= 4 for c in spread.values())
                if even and stop_when_even:
                    break
        closes = [close for c in clients for close in c.closes]
    return Rebalanced(spread, asked, events, closes)


def test_the_controller_rebalances_after_a_scale_out(pool: Any, tmp_path: Path) -> None:
    """12 dashboards on 2 instances; the controller scales to 4 (HAProxy leastconn): within
    a few intervals of the scale-out every instance holds 3 +- 1, by 1012 closes only, none
    cut, and never more than a quarter of the connections asked in one interval."""
    run = scale_out_with_dashboards(
        pool, tmp_path, balance="leastconn", looks=10, stop_when_even=True
    )
    print(f"\n[rebalance] spread {run.spread}, asked {run.asked}")
    assert all(2 <= c <= 4 for c in run.spread.values()), (run.spread, "\n".join(run.events[-30:]))
    assert all(code == 1012 and frame for code, frame in run.closes), run.closes
    assert run.asked, "no rebalance was asked"
    assert all(sum(a["closing"].values()) <= 3 for a in run.asked), run.asked  # 25 % of 12
    assert len(run.closes) == sum(sum(a["closing"].values()) for a in run.asked)


def test_a_rebalance_that_does_not_spread_pauses(pool: Any, tmp_path: Path) -> None:
    """HAProxy ``balance first`` sends every reconnect back to instance 1: after a few asks
    that spread nothing, the controller stops asking (and says why) instead of churning
    the dashboards every interval."""
    run = scale_out_with_dashboards(pool, tmp_path, balance="first", looks=12, stop_when_even=False)
    paused = [e for e in run.events if "rebalance paused" in e]
    print(f"\n[futile] spread {run.spread}, {len(run.asked)} asks, paused: {paused}")
    assert paused, "\n".join(run.events[-30:])
    assert len(run.asked) == FUTILE, run.asked
    assert "sticky" in paused[0]
    assert all(code == 1012 and frame for code, frame in run.closes), run.closes
