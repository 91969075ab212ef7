"""Every metric name in every rendered Prometheus rule and Grafana panel is one that a running
target really publishes.

The reference app (Daphne) and a Celery worker run from the demo's settings, and take some
traffic (HTTP, a WebSocket, a task) so that their labelled series exist; Debian's
node_exporter and redis_exporter run on loopback against this machine and the lab's Redis.
Their ``/metrics`` are scraped; each name a rule or panel reads must be among the scraped
names, the controller's own (``senex_scale.telemetry.metrics.METRIC_NAMES``), a recording
rule's, or celery-exporter's ``celery_queue_length`` (not packaged here: the one name taken
on trust, from ``EXPORTER_METRICS``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from senex_scale.lab import free_port
from senex_scale.render.monitoring import (
    EXPORTER_METRICS,
    metric_names,
    recorded_names,
    rendered_queries,
)
from senex_scale.testing import wait_until

from .conftest import Stack, reference_app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_setup")]

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{| )", re.MULTILINE)


def scraped_names(url: str) -> set[str]:
    """The series names in a ``/metrics`` page (samples only: what PromQL can select)."""
    text = httpx.get(url, timeout=10).text
    return set(_SAMPLE.findall(text))


def _exporter(argv: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(
            lambda: httpx.get(url, timeout=2).status_code == 200,
            20,
            f"{argv[0]} (log: {log})",
            ignore=(httpx.HTTPError,),
        )
    except BaseException:
        proc.kill()
        raise
    return proc


@pytest.fixture(scope="module")
def live_names(stack: Stack) -> Iterator[dict[str, set[str]]]:
    """Names scraped from the app, a worker, node_exporter and redis_exporter, by job."""
    node_bin = shutil.which("prometheus-node-exporter")
    redis_bin = shutil.which("prometheus-redis-exporter")
    assert node_bin, "scripts/services installs prometheus-node-exporter"
    assert redis_bin, "scripts/services installs prometheus-redis-exporter"
    node_port, redis_port = free_port(), free_port()
    node = _exporter(
        [node_bin, f"--web.listen-address=127.0.0.1:{node_port}", "--collector.disable-defaults",
         "--collector.cpu", "--collector.filesystem"],
        node_port,
        stack.root / "node-exporter.log",
    )  # fmt: skip
    redis = _exporter(
        [redis_bin, f"--redis.addr={stack.redis.url()}",
         f"--web.listen-address=127.0.0.1:{redis_port}"],
        redis_port,
        stack.root / "redis-exporter.log",
    )  # fmt: skip
    try:
        with reference_app(stack, "metric-names") as app:
            httpx.get(f"{app.url}/api/positions/1/", timeout=10)
            trade = {"user_id": 1, "symbol": "MN", "side": "buy", "quantity": "1", "price": "1"}
            httpx.post(f"{app.url}/api/trades/", json=trade, timeout=10)
            ws_url = f"ws://127.0.0.1:{app.port}/ws/positions/1/"
            with connect(ws_url, additional_headers={"Origin": app.url}, proxy=None) as ws:
                json.loads(ws.recv(timeout=10))
                django = scraped_names(f"{app.url}/metrics")
            task = "trading.tasks.recalculate_account"
            app.celery.send_task(task, args=[1], queue="accounts").get(timeout=30)
            celery = scraped_names(f"http://127.0.0.1:{app.worker_metrics}/metrics")
        yield {
            "django": django,
            "celery-worker": celery,
            "node": scraped_names(f"http://127.0.0.1:{node_port}/metrics"),
            "redis": scraped_names(f"http://127.0.0.1:{redis_port}/metrics"),
        }
    finally:
        for proc in (node, redis):
            proc.terminate()
            proc.wait(10)


def _known(live: dict[str, set[str]]) -> set[str]:
    from senex_scale.telemetry.metrics import METRIC_NAMES

    known = set().union(*live.values()) | set(METRIC_NAMES)
    known |= set(EXPORTER_METRICS["celery"])
    return known | recorded_names(postgres_hosts=["db01"], interval="15s")


def test_every_rendered_query_reads_names_that_are_scraped(live_names: dict[str, set[str]]) -> None:
    """Each rule and panel reads only names a live target (or a recording rule) publishes."""
    known = _known(live_names)
    queries = rendered_queries(postgres_hosts=["db01"], interval="15s", web_pool="django")
    assert len(queries) >= 20
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown = names - known
        assert not unknown, f"{where}: {sorted(unknown)} is scraped from nothing ({expr})"


def test_the_exporters_publish_the_names_the_rules_expect(
    live_names: dict[str, set[str]],
) -> None:
    """node_exporter and redis_exporter really publish EXPORTER_METRICS (the list is checked,
    not trusted), and the app its request counter."""
    for job in ("node", "redis"):
        assert set(EXPORTER_METRICS[job]) <= live_names[job], job
    assert "django_http_requests_total" in live_names["django"]
    assert "senex_websocket_connections" in live_names["django"]


def test_the_check_catches_a_name_nothing_publishes(live_names: dict[str, set[str]]) -> None:
    """The panel query rendered before issue 18 (django-prometheus's name) fails the check."""
    old = "sum by (instance) (rate(django_http_requests_total_by_view_transport_method_total[5m]))"
    assert metric_names(old) - _known(live_names) == {
        "django_http_requests_total_by_view_transport_method_total"
    }
