"""The rendered deployment runs for real in the host lab and scales live (issue 20).

``senex-scale render`` of examples/hostlab-inventory.toml, installed in the lab as an operator
would (``senex_scale.lab.deployment``): the reference app's image (demo/Containerfile, built
in the lab and cached), PostgreSQL, PgBouncer, Redis, nginx and the web HAProxy, and the pools
``django@N``, ``celery-worker-trading@N`` and ``celery-worker@N`` as the rendered Quadlet
templates, rootless under the lingering user ``senex``. Then the controller's scale sequence,
through the systemd runtime (nsenter into the lab, ``systemctl --user`` as that user) and the
HAProxy balancer (the rendered admin socket), scales Django 2 -> 5 -> 2 and the trading
workers 1 -> 3 -> 1 under HTTP, WebSocket and Celery load through the rendered nginx.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from senex_scale.balancers.base import build_balancer
from senex_scale.controller.sequence import ScaleSequence, Step
from senex_scale.demo.load import LoadGenerator, Phase
from senex_scale.demo.measure import percentile
from senex_scale.demo.podman import play
from senex_scale.errors import SourceError
from senex_scale.lab.deployment import (
    INVENTORY,
    STATE,
    Deployment,
    Lab,
    build_images,
    busy_ports,
    pools_running,
    random_secrets,
    render,
)
from senex_scale.lab.haproxy import haproxy_binary
from senex_scale.policy import load_policy
from senex_scale.policy.models import Metric, Pool
from senex_scale.runtimes.base import build_runtime, probe_health
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.process import ProcessSource
from senex_scale.testing import wait_until

from .conftest import say

pytestmark = [pytest.mark.hostlab, pytest.mark.integration, pytest.mark.slow]

LAB = Path(os.environ.get("SENEX_HOSTLAB_DIR", "/var/cache/senex-scale/hostlab"))
FRONT = "http://127.0.0.1:8000"
DJANGO_BASE = 8000
SHIM = "/usr/local/sbin/senex-systemctl-user"
BUSY = 10
"""Seconds of load on five instances: the new WebSocket clients open (5 a second)."""


@pytest.fixture(scope="module")
def deployment(
    request: pytest.FixtureRequest, hostlab_up: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The rendered deployment installed and started in the lab (images built when the cache
    has none of this key); everything removed afterwards."""
    busy = busy_ports()
    assert not busy, f"the inventory's ports are taken on this host: {busy}"

    def progress(line: str) -> None:
        say(request.config, line)

    lab = Lab(LAB / "rootfs", hostlab_up)
    images = build_images(lab, log=progress)
    env = random_secrets()
    out = tmp_path_factory.mktemp("rendered")
    render(INVENTORY, out, env)
    deployed = Deployment(lab, out, images, env)
    try:
        started = time.monotonic()
        deployed.install()
        installed = time.monotonic() - started
        took = deployed.start(log=lambda _: None)
        progress(
            f"\nrendered deployment: images {'built' if images.built else 'cached'} in "
            f"{images.seconds:.0f} s; install {installed:.1f} s; start "
            + ", ".join(f"{k} {v} s" for k, v in took.items())
        )
        yield deployed
    finally:
        deployed.remove()


def _policy(path: Path, deployed: Deployment) -> Path:
    """Pools ``django`` and ``celery-worker-trading``: the lab's user manager through nsenter
    (systemctl as ``senex``), the rendered web HAProxy's admin socket and config."""
    root = deployed.lab.root
    runtime = {"type": "systemd", "scope": "user", "nsenter": str(deployed.lab.pid_file)}
    runtime |= {"systemctl": SHIM, "start_timeout": "90s", "stop_timeout": "60s"}
    doc: dict[str, Any] = {
        "pools": {
            "django": {
                "min": 2,
                "max": 12,
                "port": f"{DJANGO_BASE} + n",
                "health": "/health/",
                "start_timeout": "90s",
                "drain_timeout": "20s",
                "runtime": {**runtime, "unit": "django@{n}.service"},
                "balancer": {
                    "type": "haproxy",
                    "socket": str(root / STATE.lstrip("/") / "haproxy-web.sock"),
                    "backend": "django_backend",
                    "config": str(root / STATE.lstrip("/") / "haproxy-web.cfg"),
                    "haproxy": haproxy_binary(),
                    "cookie": False,
                },
                "websockets": {"drain_close": "4s"},
            },
            "celery-worker-trading": {
                "kind": "worker",
                "min": 1,
                "max": 4,
                "start_timeout": "90s",
                "drain_timeout": "40s",
                "runtime": {**runtime, "unit": "celery-worker-trading@{n}.service"},
            },
        }
    }
    path.write_text(_toml(doc))
    return path


def _toml(doc: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(doc)


def test_health_gate_and_ports_from_ten(deployment: Deployment) -> None:
    """``Notify=healthy``: ``systemctl start`` returns once the HealthCmd passed (the instance
    answers at once); django@10 and django@11 publish 8010 and 8011 (the ExecStartPre)."""
    shown = deployment.user_systemctl("show", "-p", "Type,NotifyAccess", "django@1.service")
    assert "Type=notify" in shown, shown
    for n in (10, 11):
        deployment.user_systemctl("start", f"django@{n}.service")
        try:
            reply = httpx.get(
                f"http://127.0.0.1:{DJANGO_BASE + n}/health/", timeout=5, trust_env=False
            )
            assert reply.status_code == 200, reply.text
            health = deployment.lab.check_user(
                deployment.user, "podman", "inspect", "--format", "{{.State.Health.Status}}",
                f"senex-django-{n}",
            ).split()  # fmt: skip
            assert health[-1] == "healthy", health
        finally:
            deployment.user_systemctl("stop", f"django@{n}.service")
    assert pools_running(deployment, "django") == [1, 2]


def test_process_source_reads_the_pools_podman_stats(deployment: Deployment) -> None:
    """The process source's ``mode = "podman"`` on the lab's rootless Podman, as the service
    user (``podman_command`` through nsenter and runuser): a CPU and a memory reading for each
    running ``senex-django-{n}`` container, none for a number that is not running."""
    lab, user = deployment.lab, deployment.user
    podman = lab.user_argv(user, "podman")
    source = ProcessSource(
        "proc",
        {"mode": "podman", "container": "senex-django-{n}", "podman_command": podman,
         "timeout": "60s"},
    )  # fmt: skip
    pool = Pool.model_validate({"min": 0, "max": 3})  # django@3 is not running
    assert pools_running(deployment, "django") == [1, 2]

    def read(query: str) -> dict[str | None, float]:
        request = MetricRequest("r", Metric(source="proc", query=query), "django", pool)
        return {s.instance: s.value for s in source.query(request, time.time())}

    version = lab.check_user(user, "podman", "info", "--format", "{{.Host.CgroupsVersion}}")
    if version.strip() == "v1":
        # A cgroup v1 host (this project's CI machine): rootless containers have no cgroups
        # of their own, and Podman says so; the source says it will not pass by itself.
        with pytest.raises(SourceError) as info:
            read("cpu")
        assert info.value.temporary is False
        assert "not supported in rootless mode without cgroups v2" in str(info.value)
        assert 'use mode = "psutil"' in str(info.value)
        return
    assert version.strip() == "v2", version
    cpu = read("cpu")
    assert set(cpu) == {"1", "2"}, cpu
    assert all(0.0 <= value <= 100.0 * (os.cpu_count() or 1) for value in cpu.values()), cpu
    memory = read("memory")
    assert set(memory) == {"1", "2"}, memory
    # Daphne with Django loaded: tens of MiB, well under the machine's memory
    assert all(20.0 < mib < 4096.0 for mib in memory.values()), memory


class Load(LoadGenerator):
    """The demo's load (HTTP reads and quotes, WebSocket clients, queued trades through
    nginx), whose phases named in ``until`` last until their event is set."""

    def __init__(self, phases: tuple[Phase, ...], until: dict[str, threading.Event]) -> None:
        super().__init__(FRONT, phases)
        self.until = until

    async def _play(self, phase: Phase, pending: set[asyncio.Task[None]]) -> None:
        event = self.until.get(phase.name)
        if event is None:
            await super()._play(phase, pending)
            return
        while not event.is_set():
            await super()._play(replace(phase, seconds=1.0), pending)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _trade_rows(deployed: Deployment, symbols: list[str]) -> dict[str, int]:
    """Rows per queued symbol in ``trading_trade`` (through PgBouncer, as the app)."""
    dsn = "host=127.0.0.1 port=6432 dbname=senextrader user=senex_user"
    with psycopg.connect(dsn, password=deployed.env["SENEX_DB_PASSWORD"], autocommit=True) as db:
        rows = db.execute(
            "SELECT symbol, count(*) FROM trading_trade WHERE symbol = ANY(%s) GROUP BY 1",
            (symbols,),
        ).fetchall()
    return {str(symbol): int(count) for symbol, count in rows}


def test_scales_live_under_load(
    deployment: Deployment, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Django 2 -> 5 -> 2 and the trading workers 1 -> 3 -> 1 under HTTP, WebSocket and
    Celery load: no failed request, no WebSocket closed but by a drain (1012), no task lost
    or run twice; HAProxy's servers are the running units after each step."""
    policy = load_policy(_policy(tmp_path / "policy.toml", deployment))
    timeline: list[tuple[float, str]] = []

    def record(step: Step) -> None:
        timeline.append((step.at, f"{step.what} {step.pool}@{step.n} {step.detail}".strip()))

    sequences = {}
    for name, spec in policy.pools.items():
        runtime = build_runtime(name, spec)
        balancer = build_balancer(name, spec) if spec.balancer is not None else None
        sequences[name] = ScaleSequence(name, spec, runtime, balancer, on_step=record)
    django, trading = sequences["django"], sequences["celery-worker-trading"]
    assert django.running() == [1, 2]
    assert trading.running() == [1]
    assert django.balancer is not None
    assert sorted(m.n for m in django.balancer.members()) == [1, 2]

    # 12 WebSockets on 2 instances; after the scale-out 28 more, which HAProxy's leastconn
    # gives to the new instances: the scale-in then drains instances that hold WebSockets
    scaled_out, scaled_in = threading.Event(), threading.Event()
    phases = (
        Phase("two", 1, ws=12, rps=12, trades=3, quotes=0.2),
        Phase("five", BUSY, ws=40, rps=12, trades=3, quotes=0.2),
        Phase("back", 1, ws=40, rps=12, trades=3, quotes=0.2),
        Phase("after", 5, ws=40, rps=12, trades=3, quotes=0.2),
    )
    load = Load(phases, {"two": scaled_out, "back": scaled_in})
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(record=load.run()), daemon=True)
    started = time.monotonic()
    thread.start()

    took: dict[str, float] = {}

    def scale(name: str, count: int) -> None:
        timeline.append((time.time(), f"scale {name} to {count}"))
        begun = time.monotonic()
        outcome = sequences[name].scale_to(count)
        assert outcome.ok, f"{name} to {count}: {outcome.failed}"
        took[f"{name} to {count}"] = round(time.monotonic() - begun, 1)
        running = sequences[name].running()
        assert len(running) == count, running
        assert pools_running(deployment, name) == running
        if name == "django":
            members = django.balancer.members() if django.balancer is not None else []
            assert sorted(m.n for m in members) == running, members
            for n in running:
                assert probe_health(f"127.0.0.1:{DJANGO_BASE + n}", "/health/")

    try:
        time.sleep(8)
        scale("django", 5)
        scale("celery-worker-trading", 3)
        scaled_out.set()
        time.sleep(BUSY + 1)
        scale("django", 2)
        scale("celery-worker-trading", 1)
    finally:
        scaled_out.set()
        scaled_in.set()
        thread.join(120)
    seconds = time.monotonic() - started
    assert "record" in result, "the load generator did not finish"
    doc = result["record"].as_json()

    requests = doc["requests"]
    failed = [r for r in requests if r["status"] is None or not 200 <= r["status"] < 300]
    sockets = doc["sockets"]
    drained = [s for s in sockets if s["by"] == "server" and s["detail"].startswith("code 1012")]
    early = [s for s in sockets if s["by"] == "error" or (s["by"] == "server" and s not in drained)]
    drains = [at for at, what in timeline if what.startswith("drain django@")]
    stops = [at for at, what in timeline if what.startswith("remove django@")]
    outside = [
        s for s in drained if not drains or not min(drains) - 1 <= s["closed"] <= max(stops) + 1
    ]

    latency = [r["latency"] for r in requests if r["status"] is not None]
    queued = doc["queued"]
    deadline = time.monotonic() + 90
    rows = _trade_rows(deployment, queued)
    while any(rows.get(s, 0) == 0 for s in queued) and time.monotonic() < deadline:
        time.sleep(1)
        rows = _trade_rows(deployment, queued)
    lost = [s for s in queued if rows.get(s, 0) == 0]
    twice = [s for s in queued if rows.get(s, 0) > 1]

    numbers = {
        "seconds": round(seconds, 1),
        "requests": len(requests),
        "failed_requests": len(failed),
        "websockets": len(sockets),
        "websockets_closed_by_drain": len(drained),
        "websockets_closed_early": len(early),
        "tasks_queued": len(queued),
        "tasks_lost": len(lost),
        "tasks_duplicated": len(twice),
        "latency_p50_ms": _ms(percentile(latency, 0.5)),
        "latency_p99_ms": _ms(percentile(latency, 0.99)),
        "scale_seconds": took,
    }
    say(request.config, f"\nrendered deployment under load: {json.dumps(numbers)}")
    (tmp_path / "timeline.txt").write_text(
        "\n".join(f"{at:.2f} {what}" for at, what in sorted(timeline)) + "\n"
    )
    assert not failed, f"{len(failed)} failed requests: {failed[:5]}"
    assert not early, f"{len(early)} WebSockets closed before their drain: {early[:5]}"
    assert not outside, f"1012 closes outside Django's drains: {outside[:5]}"
    assert not lost, f"{len(lost)} tasks lost: {lost[:5]}"
    assert not twice, f"{len(twice)} tasks run twice: {twice[:5]}"
    assert len(drained) >= 10, f"the drains closed only {len(drained)} WebSockets: {numbers}"
    assert len(requests) >= 200, numbers
    assert len(queued) >= 30, numbers


CONTROLLER_POLICY = """\
# The controller in the lab (the rendered senex-scale.service): local systemctl --user as
# senex, the web HAProxy's admin socket, the broker's trading queue.
[controller]
interval = "1s"
state = "sqlite:///var/lib/senex-scale/state.db"
listen = "127.0.0.1:9308"

[sources.broker]
type = "celery-redis"
url = "redis://127.0.0.1:6379/0"
password_env = "SENEX_REDIS_PASSWORD"

[pools.django]
kind = "web"
port = "8000 + n"
health = "/health/"
min = 2
max = 5
start_timeout = "90s"
drain_timeout = "20s"
websockets = { drain_close = "4s" }

[pools.django.runtime]
type = "systemd"
unit = "django@{n}.service"
scope = "user"
start_timeout = "90s"

[pools.django.balancer]
type = "haproxy"
socket = "/var/lib/senex-scale/haproxy-web.sock"
backend = "django_backend"
config = "/var/lib/senex-scale/haproxy-web.cfg"
haproxy = "/usr/sbin/haproxy"
cookie = false

[pools.celery-worker-trading]
kind = "worker"
queues = ["trading"]
min = 2                       # one is running: the controller starts the second
max = 3
start_timeout = "90s"
drain_timeout = "40s"

[pools.celery-worker-trading.runtime]
type = "systemd"
unit = "celery-worker-trading@{n}.service"
scope = "user"
start_timeout = "90s"

[[rules]]
name = "trading-queue"
pool = "celery-worker-trading"
metric = { source = "broker", signal = "queue", aggregate = "sum", query = "trading" }
scale_out = { above = 100, for = "10s", step = 1 }
priority = "medium"
"""
CONTROLLER = "http://127.0.0.1:9308"


def test_controller_deploys_itself(deployment: Deployment) -> None:
    """The rendered ``senex-scale.service`` runs the controller in the lab as the service
    user: it brings the trading workers up to the policy's minimum (2) through its own
    ``systemctl --user``, and serves its status page and /metrics; its state is on disk."""
    deployment.install_controller(CONTROLLER_POLICY)
    deployment.user_systemctl("start", "senex-scale.service")
    try:
        before = pools_running(deployment, "celery-worker-trading")
        assert len(before) == 1, before
        wait_until(
            lambda: len(pools_running(deployment, "celery-worker-trading")) == 2,
            120,
            "the controller to start a second trading worker",
        )
        with httpx.Client(base_url=CONTROLLER, timeout=10, trust_env=False) as client:
            current = 'senex_scale_pool_instances{pool="celery-worker-trading",state="current"} 2.0'
            wait_until(lambda: current in client.get("/metrics").text, 30, "/metrics")
            metrics = client.get("/metrics").text
            assert 'senex_scale_pool_instances{pool="django",state="current"} 2.0' in metrics
            page = client.get("/")
            assert page.status_code == 200
            assert "celery-worker-trading" in page.text
        assert deployment.lab.path(f"{STATE}/state.db").is_file()
        assert len(pools_running(deployment, "django")) == 2
        active = deployment.user_systemctl("is-active", "senex-scale.service").strip()
        assert active == "active"
    except AssertionError:
        print(deployment.journal("senex-scale.service", user=True, lines=80))
        raise
    finally:
        deployment.user_systemctl("stop", "senex-scale.service")


def test_the_podman_demo_on_the_deployment(
    deployment: Deployment, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``senex-scale demo --runtime podman``'s run (``demo.podman.play``) on this deployment:
    the controller as the rendered unit on the default policy at 60x, the end-to-end
    profile's load through nginx: Django scales out on the WebSocket load and back in, with
    0 failed requests, 0 WebSockets closed but by a drain or a rebalance, 0 tasks lost or run
    twice; the controller stops cleanly."""
    result = play(deployment, tmp_path, "e2e", say=lambda line: say(request.config, line))
    shown = {k: result[k] for k in ("requests", "websockets", "tasks_queued", "scale_events")}
    shown |= {k: result[k] for k in ("failed_requests", "websockets_closed_early")}
    say(request.config, f"\npodman demo: {json.dumps(shown)}")
    django = {e[1] for e in result["scale_events"] if e[0] == "django" and e[4] == "done"}
    assert django == {"out", "in"}, result["scale_events"]
    assert result["failed_requests"] == 0, result["failed_examples"]
    assert result["websockets_closed_early"] == 0
    assert result["websocket_connect_errors"] == 0
    assert result["tasks_queued"] > 100
    assert result["tasks_lost"] == 0
    assert result["tasks_duplicated"] == 0
    assert result["controller_exit"] == 0
