"""``senex-scale trace from-prometheus`` against a real Prometheus scraping real exporters.

The exporters speak the reference app's metric names (``senex_scale.contrib.django.metrics``):
a "django" instance counts every request it answers in ``django_http_requests_total`` while
``HttpLoad`` sends it real HTTP requests, and holds ``senex_websocket_connections``; a
"celery-worker-trading" instance counts ``celery_tasks_total`` at a known pace. Prometheus
(1 s scrapes) scrapes both as the jobs the default policy's rules select, so the queries the
command derives from the default policy run unchanged. The reference app itself under the
demo's load is ``tests/integration/django/test_trace_capture.py``; these exporters make the
counts exact and the gaps and errors easy to cause.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from senex_scale.lab import Prometheus, static_job
from senex_scale.lab.load import HttpLoad
from senex_scale.simulate.trace import read_trace
from senex_scale.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONNECTIONS = 40.0
TASKS_PER_SECOND = 5.0


class Exporter:
    """An HTTP server with its own registry: ``/metrics``, and ``/`` counted as a request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "django_http_requests_total", "requests", ["method", "status"], registry=self.registry
        )
        self.websockets = Gauge(
            "senex_websocket_connections", "open WebSockets", registry=self.registry
        )
        self.tasks = Counter(
            "celery_tasks_total", "tasks", ["task", "state"], registry=self.registry
        )
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # no kept-alive scrape outlives close()

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = generate_latest(exporter.registry)
                else:
                    exporter.requests.labels("GET", "200").inc()
                    body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Lab:
    prometheus: Prometheus
    web: Exporter
    worker: Exporter
    root: Path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    web, worker = Exporter(), Exporter()
    web.websockets.set(CONNECTIONS)
    stop = threading.Event()

    def work() -> None:  # tasks finished at a steady pace
        while not stop.wait(1 / TASKS_PER_SECOND):
            worker.tasks.labels("trade", "SUCCESS").inc()

    pacer = threading.Thread(target=work, daemon=True)
    pacer.start()
    jobs = [
        static_job("django", [f"127.0.0.1:{web.port}"]),
        static_job("celery-worker-trading", [f"127.0.0.1:{worker.port}"]),
    ]
    try:
        with Prometheus(tmp_path / "prom", scrape_configs=jobs) as prometheus:
            yield Lab(prometheus, web, worker, tmp_path)
    finally:
        stop.set()
        web.close()
        worker.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("senex-scale")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_default_policy_queries_make_a_trace_the_simulator_replays(lab: Lab) -> None:
    """Under real HTTP load, the derived queries give the request rate, the connections and
    the trading tasks per minute; chunked under 11,000 points; the simulator replays it."""
    load = HttpLoad(f"http://127.0.0.1:{lab.web.port}/", pause=0.05).start()
    started = time.time()
    try:
        wait_until(
            lambda: bool(lab.prometheus.query("rate(django_http_requests_total[20s]) > 0")),
            60,
            "a request rate in Prometheus",
        )
        time.sleep(25)  # some 1 s rows at a steady rate
    finally:
        load.stop()
    measured = load.ok / (time.time() - started)
    out = lab.root / "mine.csv"
    # 4 h at 1 s is 14,401 points per column: two range queries each (11,000 at most)
    done = _cli(
        "trace", "from-prometheus", "--url", lab.prometheus.url,
        "--since", "4h", "--step", "1s", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert any(" of 11000 points" in line for line in progress), done.stderr
    assert any(" of 3401 points" in line for line in progress), done.stderr
    assert "no data, left out: tasks_accounts" in done.stderr  # no celery-worker job here

    trace = read_trace(out)
    assert list(trace.columns) == ["http_rps", "ws_connections", "tasks_trading"]
    assert trace.step == 1.0
    text = out.read_text()
    assert 'sum(rate(django_http_requests_total{job="django"}[60s]))' in text
    assert "gaps are held at the value before them" in text
    assert set(trace.columns["ws_connections"]) == {CONNECTIONS}
    # every row is what Prometheus itself says at that instant (the last row, checked)
    for column, promql in (
        ("http_rps", 'sum(rate(django_http_requests_total{job="django"}[60s]))'),
        ("tasks_trading", 'sum(rate(celery_tasks_total{job="celery-worker-trading"}[60s])) * 60'),
    ):
        reply = httpx.get(
            f"{lab.prometheus.url}/api/v1/query", params={"query": promql, "time": trace.end}
        ).json()
        expected = float(reply["data"]["result"][0]["value"][1])
        assert trace.columns[column][-1] == pytest.approx(expected, abs=0.006), column
    # a 60 s window over ~30 s of load: the peak is under the rate the client measured
    peak = float(trace.columns["http_rps"].max())
    assert 0.2 * measured < peak <= 1.2 * measured, (peak, measured)

    policy = lab.root / "mine.toml"
    policy.write_text(_cli("policy", "default").stdout)
    sim = _cli(
        "simulate", "--policy", str(policy), "--trace", str(out), "--compare", "hpa",
        "--json", str(lab.root / "sim.json"),
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert "django" in sim.stdout


def test_a_scrape_gap_is_held_and_listed(lab: Lab) -> None:
    """A target down for a while: its column's gap is held and named in the comments."""
    wait_until(
        lambda: bool(lab.prometheus.query("senex_websocket_connections")), 30, "first scrape"
    )
    time.sleep(3)
    lab.web.close()  # scrapes fail: Prometheus marks the series stale
    time.sleep(8)
    out = lab.root / "gap.csv"
    done = _cli(
        "trace", "from-prometheus", "--url", lab.prometheus.url, "--since", "2m",
        "--step", "1s", "--out", str(out),
        "--query", "http_rps=", "--query", "tasks_trading=sum(rate(celery_tasks_total[5s]))*60",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trace = read_trace(out)
    assert list(trace.columns) == ["ws_connections", "tasks_trading"]
    assert "ws_connections 1 gap" in done.stderr
    text = out.read_text()
    assert "gap ws_connections:" in text
    assert "tasks_trading = sum(rate(celery_tasks_total[5s]))*60  (--query)" in text
    assert trace.columns["ws_connections"][-1] == CONNECTIONS  # held through the gap
    # a full 5 s window over the steady pace: the tasks per minute the worker finished
    tasks = float(trace.columns["tasks_trading"][-1])
    assert 0.8 * TASKS_PER_SECOND * 60 <= tasks <= 1.2 * TASKS_PER_SECOND * 60, tasks


def test_bad_input_names_the_flag_and_writes_nothing(lab: Lab) -> None:
    """A malformed query, an unknown column, a bad step: exit 2, the flag named, no file."""
    out = lab.root / "bad.csv"
    wait_until(lambda: len(lab.prometheus.query("up")) == 2, 30, "both targets scraped")
    time.sleep(1)
    cases = {
        ("--query", "http_rps=sum(rate(x[1m]"): "--query http_rps: Prometheus bad_data",
        ("--query", "tasks trading=x"): '--query: "tasks trading" is not a demand column',
        ("--step", "0s"): '--step: "0s" must be longer than 0s',
        ("--query", "http_rps=up"): "--query http_rps: the query returned 2 series",
    }
    for args, message in cases.items():
        done = _cli(
            "trace", "from-prometheus", "--url", lab.prometheus.url, "--since", "1m",
            "--step", "1s", "--out", str(out), *args,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert not out.exists()
        assert not list(lab.root.glob(".bad.csv.*"))


def test_a_password_in_the_url_is_never_printed(lab: Lab) -> None:
    """user:password@ is sent as basic authentication and shown as ***."""
    wait_until(lambda: len(lab.prometheus.query("up")) == 2, 30, "both targets scraped")
    time.sleep(1)
    url = lab.prometheus.url.replace("http://", "http://reader:s3cret@")
    out = lab.root / "auth.csv"
    done = _cli(
        "trace", "from-prometheus", "--url", url, "--since", "30s", "--step", "1s",
        "--out", str(out), "--query", "http_rps=sum(up)",
        "--query", "ws_connections=", "--query", "tasks_trading=", "--query", "tasks_accounts=",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stderr + done.stdout + out.read_text()
    assert "reader:***@" in out.read_text()
