"""``senex-scale rightsize`` on a real state store (SQLite, written through ``Store``'s public
methods as the controller writes it) and a real Prometheus scraping a real process."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from senex_scale.core.state import Sample
from senex_scale.lab import Prometheus
from senex_scale.lab.prometheus import static_job
from senex_scale.store import open_store

from .conftest import cli

pytestmark = pytest.mark.integration

POLICY = """
[controller]
interval = "5m"
state = "sqlite:///{state}"

[sources.prom]
type = "prometheus"
url = "http://127.0.0.1:9090"

[sources.broker]
type = "celery-redis"
url = "redis://127.0.0.1:6379/1"

[pools.web]
kind = "web"
runtime = {{ type = "supervisor", url = "unix:///run/s.sock", program = "web" }}
min = 1
max = 4

[pools.worker]
kind = "worker"
runtime = {{ type = "supervisor", url = "unix:///run/s.sock", program = "worker" }}
min = 1
max = 6

[[rules]]
name = "web-cpu"
pool = "web"
metric = {{ source = "prom", signal = "cpu", query = "cpu" }}
scale_out = {{ above = 70, for = "5m" }}

[[rules]]
name = "worker-busy"
type = "target"
pool = "worker"
metric = {{ source = "prom", signal = "busy", query = "busy" }}
target = 70

[[rules]]
name = "worker-queue"
pool = "worker"
metric = {{ source = "broker", signal = "queue", aggregate = "sum", query = "general" }}
scale_out = {{ above = 100, for = "5m" }}
"""

STEP = 300.0
TICKS = 7 * 288  # a week of 5-minute ticks


def fill(path: Path, *, busy: list[float], queue: list[float]) -> tuple[Path, list[float]]:
    """A week of ticks: web 3 instances with CPU samples, worker 4 instances with the given
    busy and queue values (cycled). Returns the policy file and the CPU values written."""
    store = open_store(f"sqlite:///{path}")
    now = time.time()
    cpu: list[float] = []
    try:
        for k in range(TICKS):
            at = now - 60 - (TICKS - 1 - k) * STEP
            values = [20 + 30 * math.sin(k / 40 + i) ** 2 for i in range(3)]
            cpu += values
            store.add_samples("web-cpu", [Sample(at, v, str(i)) for i, v in enumerate(values)])
            b = busy[k % len(busy)]
            q = queue[k % len(queue)]
            store.add_samples("worker-busy", [Sample(at, b, str(i)) for i in range(4)])
            store.record_tick(
                at,
                [("web", 3, 3, 1, 4), ("worker", 4, 4, 1, 6)],
                [
                    ("web-cpu", "web", float(np.mean(values)), "none", 0.0),
                    ("worker-busy", "worker", b, "none", 0.0),
                    ("worker-queue", "worker", q, "none", 0.0),
                ],
                {},
            )
    finally:
        store.close()
    policy = path.with_suffix(".toml")
    policy.write_text(POLICY.format(state=path))
    return policy, cpu


def test_rightsize_idle_workers_and_limits(tmp_path: Path) -> None:
    """Workers busy 15 % on average: 2 instead of 4, with the instance-hours and money saved;
    the web pool's CPU limit is its p95 plus 30 %."""
    policy, cpu = fill(tmp_path / "state.db", busy=[10.0, 20.0], queue=[3.0])
    result = cli("rightsize", "--pool", "worker", "--since", "7d", "--price", "0.05",
                 "--policy", policy, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    hours = (TICKS - 1) * STEP / 3600
    assert doc["idle"] is True
    assert doc["busy_mean_percent"] == pytest.approx(15)
    assert doc["recommended_instances"] == 2  # p95 of 4 x 20 % = 80 worker-% -> 2 at 70 %
    assert doc["window_hours"] == pytest.approx(hours, rel=0.01)
    assert doc["saved_instance_hours"] == pytest.approx(2 * hours, rel=0.01)
    assert doc["saved"] == pytest.approx(2 * hours * 0.05, rel=0.01)
    assert doc["queues_needing_worker"] == []
    web = json.loads(cli("rightsize", "--pool", "web", "--policy", policy, "--json").stdout)
    p95 = float(np.percentile(cpu, 95))
    assert web["cpu_p95_percent"] == pytest.approx(p95)
    assert web["cpu_limit_cores"] == math.ceil(p95 / 100 * 1.3 * 10) / 10
    assert web["idle"] is False
    assert web["recommended_instances"] is None
    text = cli("rightsize", "--pool", "worker", "--price", "0.05", "--policy", policy)
    print(text.stdout)
    assert "4.0 -> 2" in text.stdout
    assert "per 30 days" in text.stdout


def test_rightsize_queue_needs_a_worker(tmp_path: Path) -> None:
    """A queue above 50 in 9 of 10 ticks, workers busy: flagged, no consolidation."""
    policy, _ = fill(tmp_path / "state.db", busy=[80.0], queue=[80.0] * 9 + [10.0])
    doc = json.loads(cli("rightsize", "--pool", "worker", "--policy", policy, "--json").stdout)
    assert doc["queues_needing_worker"] == ["worker-queue"]
    assert doc["idle"] is False
    assert doc["saved_instance_hours"] == 0


def test_rightsize_bad_input(tmp_path: Path) -> None:
    """Unknown pool, bad window: exit 2 naming the option; an empty store: exit 1."""
    policy, _ = fill(tmp_path / "state.db", busy=[50.0], queue=[1.0])
    unknown = cli("rightsize", "--pool", "nope", "--policy", policy)
    assert unknown.returncode == 2
    assert "--pool" in unknown.stderr
    window = cli("rightsize", "--pool", "web", "--since", "7x", "--policy", policy)
    assert window.returncode == 2
    assert "--since" in window.stderr
    empty = cli("rightsize", "--pool", "web", "--policy", policy,
                "--state", f"sqlite:///{tmp_path / 'empty.db'}")  # fmt: skip
    assert empty.returncode == 1
    assert "nothing recorded" in empty.stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus scraping itself as the job "web" (its own process_* metrics)."""
    server = Prometheus(tmp_path / "prom")
    server.scrape_configs.append(static_job("web", [server.address]))
    with server:
        deadline = time.monotonic() + 30
        while not server.query('rate(process_cpu_seconds_total{job="web"}[5m])'):
            assert time.monotonic() < deadline, "no scrape"
            time.sleep(0.5)
        yield server


def test_rightsize_memory_and_cpu_from_prometheus(tmp_path: Path, prometheus: Prometheus) -> None:
    """With --prometheus: the memory limit is the process's resident memory p95 + 30 %,
    rounded up to 64 MiB."""
    policy, _ = fill(tmp_path / "state.db", busy=[50.0], queue=[1.0])
    result = cli("rightsize", "--pool", "web", "--since", "10m", "--policy", policy,
                 "--prometheus", prometheus.url, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    [current] = prometheus.query('process_resident_memory_bytes{job="web"}')
    rss = float(current["value"][1])
    assert doc["memory_p95_bytes"] == pytest.approx(rss, rel=0.5)
    step = 64 * 1024 * 1024
    assert doc["memory_limit_bytes"] % step == 0
    assert doc["memory_limit_bytes"] >= doc["memory_p95_bytes"] * 1.3
    assert doc["cpu_limit_cores"] >= 0.1
