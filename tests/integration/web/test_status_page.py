"""The status page in a real headless Chromium (Debian's), driven over the DevTools protocol:
it renders the pools, rules, decisions and both charts from a store filled by the real
controller loop, raises no console error or exception, and is saved as a screenshot.

The page is served by the same uvicorn thread ``senex-scale run`` uses. The screenshot goes
to the test's directory and, when ``SENEX_ARTIFACTS`` is set, to that directory too.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from senex_scale.controller.daemon import WebThread
from senex_scale.controller.leader import NoLeader
from senex_scale.controller.loop import ControllerLoop
from senex_scale.lab import free_port
from senex_scale.lab.chromium import Chromium
from senex_scale.policy import parse_policy
from senex_scale.runtimes.spread import SpreadRuntime
from senex_scale.store import Store, open_store
from senex_scale.telemetry.metrics import Metrics
from senex_scale.testing import (
    FakeClock,
    MemorySource,
    RecordingBalancer,
    RecordingHost,
    RecordingRuntime,
)
from senex_scale.web.app import create_app

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

POLICY = """
[controller]
interval = "15s"

[sources.mem]
type = "prometheus"
url = "http://127.0.0.1:1"

[pools.django]
min = 2
max = 6
port = "8000 + n"
warmup = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"

[[rules]]
name = "django-cpu"
pool = "django"
metric = { source = "mem", query = "cpu" }
scale_out = { above = 70, for = "1m" }
scale_in = { below = 30, for = "2m" }
"""


@pytest.fixture
def filled_store(tmp_path: Path) -> Iterator[tuple[Store, Metrics, ControllerLoop]]:
    """Two hours of a trading morning through the real loop (in-memory instances)."""
    clock = FakeClock(time.time() - 7200)
    source = MemorySource("mem")
    runtime = RecordingRuntime(pool="django", size=6, running={1, 2})
    lb = RecordingBalancer()
    for n in (1, 2):
        lb.add(n, f"127.0.0.1:{8000 + n}")
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    metrics = Metrics()
    loop = ControllerLoop(
        parse_policy(POLICY),
        store,
        NoLeader(),
        metrics=metrics,
        clock=clock,
        sleep=clock.sleep,
        healthy=lambda address, path: True,
        log=structlog.get_logger("test"),
        build_source=lambda name, spec: source,
        build_pool=lambda name, spec: (runtime, lb),
    )
    shape = itertools.chain([20.0] * 120, [92.0] * 100, [55.0] * 60, [12.0] * 200)
    for value in itertools.islice(shape, 480):
        source.values["cpu"] = value
        loop.tick()
        assert loop.settle(30)
        clock.advance(15)
    yield store, metrics, loop
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium() as chromium:
        yield chromium


def test_status_page_renders_without_console_errors(
    filled_store: tuple[Store, Metrics, ControllerLoop], browser: Chromium, tmp_path: Path
) -> None:
    store, metrics, loop = filled_store
    port = free_port()
    web = WebThread(create_app(store, metrics=metrics, control=loop), "127.0.0.1", port)
    web.start()
    try:
        page = browser.page()
        page.open(f"http://127.0.0.1:{port}/")
        rows = page.evaluate(
            "({pools: document.querySelectorAll('#pools tbody tr').length,"
            " rules: document.querySelectorAll('#rules tbody tr').length,"
            " decisions: document.querySelectorAll('#decisions tbody tr').length,"
            " poolLines: document.querySelectorAll('#chart-pools path').length,"
            " ruleLines: document.querySelectorAll('#chart-rules path').length,"
            " banner: document.getElementById('banner').hidden,"
            " role: document.getElementById('role').textContent})"
        )
        path = tmp_path / "status-page.png"
        png = page.screenshot(path)
        problems = page.problems()
    finally:
        web.stop()
    if artifacts := os.environ.get("SENEX_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / "status-page.png")
    print(f"\nscreenshot: {path} ({len(png)} bytes)")
    assert problems == []
    assert png.startswith(b"\x89PNG")
    assert len(png) > 20_000, "a blank page is much smaller"
    assert rows["pools"] == 1
    assert rows["rules"] == 1
    assert rows["decisions"] >= 4, "scale-outs and scale-ins of the morning"
    assert rows["poolLines"] == 2, "current and desired"
    assert rows["ruleLines"] == 3, "the metric and its two thresholds"
    assert rows["banner"] is True, "no problem to report"
    assert rows["role"].startswith("leader")


def test_api_and_controls(filled_store: tuple[Store, Metrics, ControllerLoop], serve: Any) -> None:
    """The JSON API, /metrics, /healthz, and pause/resume behind a token."""
    store, metrics, loop = filled_store
    with httpx.Client(base_url=serve(create_app(store, metrics=metrics, control=loop))) as c:
        status = c.get("/api/status").json()
        assert status["status"]["pools"][0]["pool"] == "django"
        history = c.get("/api/history", params={"pool": "django", "limit": 3}).json()
        assert len(history["decisions"]) == 3
        assert c.get("/api/history", params={"limit": "x"}).status_code == 400
        series = c.get("/api/series", params={"hours": 3}).json()
        assert len(series["pools"]["django"]) == 480
        assert "senex_scale_pool_instances" in c.get("/metrics").text
        assert c.get("/healthz").status_code == 200, "the last tick was one interval ago"
        refused = c.post("/api/pause")
        assert refused.status_code == 403
        assert "read-only" in refused.json()["error"]
    app = create_app(store, control=loop, token="t0ken-secret")
    with httpx.Client(base_url=serve(app)) as c:
        assert c.post("/api/pause").status_code == 401
        assert c.post("/api/pause", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = c.post("/api/pause", headers={"Authorization": "Bearer t0ken-secret"})
        assert ok.json() == {"paused": True}
        assert loop.paused
        c.post("/api/resume", headers={"Authorization": "Bearer t0ken-secret"})
        assert not loop.paused


HOSTS_POLICY = """
[controller]
interval = "15s"

[hosts.web01]
address = "10.9.0.11"

[hosts.web02]
address = "10.9.0.12"

[pools.django]
runtime = { type = "systemd", unit = "django@{n}.service" }
hosts = ["web01", "web02"]
min = 2
max = 6
port = "8000 + n"
"""


def test_the_hosts_panel_shows_a_lost_host(tmp_path: Path, browser: Chromium, serve: Any) -> None:
    """A pool on two hosts, one of them lost: the Hosts panel lists both, the lost one with
    its error, and the banner says so."""
    policy = parse_policy(HOSTS_POLICY)
    clock = FakeClock(time.time() - 600)
    hosts = {
        "web01": RecordingHost(pool="django", size=6, running={1}, host="web01"),
        "web02": RecordingHost(pool="django", size=6, running={2}, host="web02"),
    }
    runtime = SpreadRuntime("django", policy.pools["django"], policy.hosts, runtimes=hosts)
    lb = RecordingBalancer()
    lb.add(1, "10.9.0.11:8001")
    lb.add(2, "10.9.0.12:8002")
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    loop = ControllerLoop(
        policy,
        store,
        NoLeader(),
        clock=clock,
        sleep=clock.sleep,
        healthy=lambda address, path: address.startswith("10.9.0.11:"),
        log=structlog.get_logger("test"),
        build_pool=lambda name, spec: (runtime, lb),
    )
    loop.tick()
    assert loop.settle(30)
    hosts["web02"].down = True
    for _ in range(3):
        clock.advance(15)
        loop.prober.probe_all()
        loop.tick()
        assert loop.settle(30)
    base = serve(create_app(store, control=loop))
    page = browser.page()
    page.open(base + "/")
    seen = page.evaluate(
        "({rows: [...document.querySelectorAll('#hosts tbody tr')].map(r => r.innerText),"
        " hidden: document.getElementById('hosts-panel').hidden,"
        " banner: document.getElementById('banner').innerText})"
    )
    problems = page.problems()
    store.close()
    assert problems == []
    assert seen["hidden"] is False
    assert len(seen["rows"]) == 2
    assert "web01" in seen["rows"][0]
    assert "reachable" in seen["rows"][0]
    assert "web02" in seen["rows"][1]
    assert "lost" in seen["rows"][1]
    assert "Connection timed out" in seen["rows"][1]
    assert "host web02 lost" in seen["banner"]
