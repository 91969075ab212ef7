"""A predictive rule in forecast-only mode on the status page, the API and /metrics.

The real controller loop runs ticks before an open with four sessions of demand already in
the store (as an earlier controller recorded them); the page, in headless Chromium, lists
the rule's forecast and error, ``/metrics`` has the gauges, and nothing was scaled.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from senex_scale.controller.leader import NoLeader
from senex_scale.controller.loop import ControllerLoop
from senex_scale.core.forecast import SessionClock
from senex_scale.lab.chromium import Chromium
from senex_scale.policy import parse_policy
from senex_scale.store import Store, open_store
from senex_scale.telemetry.metrics import Metrics
from senex_scale.testing import FakeClock, MemorySource, RecordingBalancer, RecordingRuntime
from senex_scale.web.app import create_app

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OPEN = datetime(2026, 11, 24, 14, 30, tzinfo=UTC).timestamp()

POLICY = """
[controller]
interval = "15s"

[sources.mem]
type = "prometheus"
url = "http://127.0.0.1:1"

[pools.django]
min = 2
max = 8
port = "8000 + n"
warmup = "0s"

[[rules]]
name = "django-ahead"
type = "predictive"
pool = "django"
metric = { source = "mem", query = "requests", aggregate = "sum" }
target = 50.0
"""


@pytest.fixture
def loop_and_store(tmp_path: Path) -> Iterator[tuple[Store, Metrics, ControllerLoop]]:
    """Four sessions of recorded demand, then ten ticks up to 09:29:45 New York time."""
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    clock = SessionClock("XNYS")
    today = clock.around(OPEN)
    assert today is not None
    for number in range(today.number - 4, today.number):
        s = clock.session(number)
        at = s.open - 90 * 60
        while at < s.close + 3600:
            demand = 6.0 if 0 <= at - s.open < 300 else 2.0
            store.record_tick(at, [], [("django-ahead", "django", demand, "abstain", 0.0)], {})
            at += 60.0
    fake = FakeClock(OPEN - 150)
    source = MemorySource("mem")
    source.values["requests"] = 100.0
    runtime = RecordingRuntime(pool="django", size=8, running={1, 2})
    lb = RecordingBalancer()
    for n in (1, 2):
        lb.add(n, f"127.0.0.1:{8000 + n}")
    metrics = Metrics()
    loop = ControllerLoop(
        parse_policy(POLICY),
        store,
        NoLeader(),
        metrics=metrics,
        clock=fake,
        sleep=fake.sleep,
        healthy=lambda address, path: True,
        log=structlog.get_logger("test"),
        build_source=lambda name, spec: source,
        build_pool=lambda name, spec: (runtime, lb),
    )
    for _ in range(10):
        loop.tick()
        assert loop.settle(30)
        fake.advance(15)
    yield store, metrics, loop
    store.close()


def test_forecast_only_on_the_page_api_and_metrics(
    loop_and_store: tuple[Store, Metrics, ControllerLoop], serve: Any
) -> None:
    """The forecast (6 at the open, floor 7), its error and the sessions are shown; the pool
    stays at 2 (forecast-only); the forecast is charted beside the demand."""
    store, metrics, loop = loop_and_store
    at = OPEN  # the page's clock: just after the fake clock's last tick
    base = serve(create_app(store, metrics=metrics, control=loop, clock=lambda: at))
    with httpx.Client(base_url=base) as c:
        status = c.get("/api/status").json()["status"]
        (forecast,) = status["forecasts"]
        assert forecast["mode"] == "forecast-only"
        assert forecast["floor"] == 7
        assert forecast["sessions"] == 4
        assert forecast["acting"] is False
        assert forecast["mape"] == pytest.approx(0.0)
        assert status["pools"][0]["current"] == 2
        assert status["pools"][0]["desired"] == 2
        text = c.get("/metrics").text
        now = re.search(
            r'senex_scale_forecast_instances\{pool="django",rule="django-ahead"\} (\S+)', text
        )
        assert now is not None
        assert float(now.group(1)) == pytest.approx(2.0)
        assert 'senex_scale_forecast_mape{pool="django",rule="django-ahead"} 0.0' in text
        series = c.get("/api/series", params={"hours": 1}).json()["rules"]
        assert len(series["django-ahead forecast"]) == 10
        assert series["django-ahead"][-1][1] == pytest.approx(2.0)
    with Chromium() as browser:
        page = browser.page()
        page.open(base + "/")
        seen = page.evaluate(
            "({hidden: document.getElementById('forecasts-panel').hidden,"
            " rows: [...document.querySelectorAll('#forecasts tbody tr')].map(r => r.innerText)})"
        )
        problems = page.problems()
    assert problems == []
    assert seen["hidden"] is False
    (row,) = seen["rows"]
    assert "django-ahead" in row
    assert "forecast-only" in row
    assert "0%" in row
