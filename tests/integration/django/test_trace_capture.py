"""``senex-scale trace from-prometheus`` on a real Prometheus fed by the reference app under
the demo's load (issue 17): Daphne and a Celery worker of ``demo/senextrader`` (this folder's
``reference_app``: PostgreSQL, PgBouncer and Redis from the lab), scraped every second as the
jobs the default policy's rules select, while ``senex_scale.demo.load.LoadGenerator`` plays a
steady phase of HTTP reads, WebSocket clients and queued trades. The trace the default
policy's derived queries give is checked against what the load generator itself recorded,
then replayed by ``simulate``."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from senex_scale.demo.load import LoadGenerator, Phase
from senex_scale.lab import Prometheus, static_job
from senex_scale.simulate.trace import read_trace
from senex_scale.testing import wait_until

from .conftest import Stack, reference_app

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("django_setup")]

SOCKETS = 12
PHASE = Phase("steady", 75, ws=SOCKETS, rps=8, trades=2, quotes=0.0)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("senex-scale")), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _trades_recorded(symbols: list[str], since: float, window: tuple[float, float]) -> int:
    """Trades of ``symbols`` recorded (by their task) after ``since``, within ``window``."""
    from trading.models import Trade

    def at(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    return Trade.objects.filter(
        symbol__in=symbols,
        created_at__gte=at(since),
        created_at__gt=at(window[0]),
        created_at__lte=at(window[1]),
    ).count()


def test_the_reference_app_under_load_becomes_a_trace(stack: Stack, tmp_path: Path) -> None:
    """Requests/s, open WebSockets and trading tasks/min as the load generator counted them."""
    with reference_app(stack, "capture") as app:
        jobs = [
            static_job("django", [f"127.0.0.1:{app.port}"]),
            static_job("celery-worker-trading", [f"127.0.0.1:{app.worker_metrics}"]),
        ]
        with Prometheus(tmp_path / "prom", scrape_configs=jobs) as prometheus:
            wait_until(lambda: len(prometheus.query("up == 1")) == 2, 30, "both targets up")
            record = LoadGenerator(app.url, (PHASE,)).run()
            out = tmp_path / "mine.csv"
            done = _cli(
                "trace", "from-prometheus", "--url", prometheus.url, "--since", "5m",
                "--step", "1s", "--out", str(out),
            )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no data, left out: tasks_accounts" in done.stderr  # no generic workers' job
    trace = read_trace(out)
    assert list(trace.columns) == ["http_rps", "ws_connections", "tasks_trading"]

    # the WebSocket clients, as the app's gauge counted them
    assert int(trace.columns["ws_connections"].max()) == SOCKETS
    # requests/s over the default query's 60 s window, at a row late in the phase: the load's
    # requests in that window plus Prometheus' own scrapes of /metrics (one a second, counted
    # by the same middleware)
    start = record.phases[0][1]
    at = start + PHASE.seconds - 5
    row = trace.index_at(at)
    t = float(trace.times[row])
    sent = sum(1 for r in record.requests if t - 60 < r.at + r.latency <= t)
    expected = sent / 60 + 1.0
    assert float(trace.columns["http_rps"][row]) == pytest.approx(expected, rel=0.12)
    # trading tasks finished per minute: the load's trades the worker recorded in that window
    # (each trade row is written by its task; the queued pace is only an upper bound, as a
    # worker slowed by a busy machine falls behind it)
    finished = _trades_recorded(record.queued, since=start, window=(t - 60, t))
    assert finished > 0
    assert float(trace.columns["tasks_trading"][row]) == pytest.approx(finished, rel=0.3)
    assert finished <= len(record.queued) / PHASE.seconds * 60 * 1.3

    policy = tmp_path / "mine.toml"
    policy.write_text(_cli("policy", "default").stdout)
    sim = _cli("simulate", "--policy", str(policy), "--trace", str(out), "--compare", "hpa")
    assert sim.returncode == 0, sim.stderr
    assert "celery-trading" in sim.stdout
