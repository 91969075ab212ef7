"""promtool reads the rendered Prometheus config and rules, and the rules fire as the seed's
matrix says; the Grafana dashboard only queries metric names that exist."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from senex_scale.render.monitoring import EXPORTER_METRICS, dashboard_queries, metric_names

pytestmark = pytest.mark.integration

BRIEF_SENEX_METRICS = (
    "senex_scale_pool_instances",
    "senex_scale_rule_value",
    "senex_scale_rule_threshold",
    "senex_scale_decisions_total",
    "senex_scale_action_duration_seconds",
    "senex_scale_source_errors_total",
    "senex_scale_leader",
)
"""The controller's metrics as agreed, used when senex_scale.telemetry.metrics is absent."""

APP_METRICS = (
    # senex_scale.contrib.django.metrics, what the reference app exports (checked against its
    # live /metrics in tests/integration/django/test_metric_names.py)
    "django_http_requests_total",
    "django_http_request_duration_seconds_bucket",
    "senex_websocket_connections",
)
EXPORTERS = tuple(name for names in EXPORTER_METRICS.values() for name in names)


def senex_metrics() -> set[str]:
    """Names the controller exports: its module's list when it exists, else the agreed list."""
    try:
        from senex_scale.telemetry.metrics import METRIC_NAMES
    except ImportError:
        return set(BRIEF_SENEX_METRICS)
    return set(METRIC_NAMES)


def process_metrics() -> set[str]:
    """What prometheus_client's process collector (django-prometheus uses it) really exports."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    text = generate_latest(registry).decode()
    return {line.split()[0].split("{")[0] for line in text.splitlines() if line[:1] != "#"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; skip the module's tests when it is missing."""
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def test_promtool_check_config(deployment: Any) -> None:
    """``promtool check config`` accepts prometheus.yml and the rule file it includes."""
    result = promtool("check", "config", str(deployment.file("lb01", "prometheus/prometheus.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_check_rules(deployment: Any) -> None:
    """``promtool check rules`` accepts the rules: 6 recorded signals + 6 matrix alerts + 3."""
    result = promtool(
        "check", "rules", str(deployment.file("lb01", "prometheus/rules/senex-scale.yml"))
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout


def test_scrape_config_covers_every_tier(deployment: Any) -> None:
    """Django instances (1..max, n >= 10 too), Celery, Redis, PostgreSQL, PgBouncer, node,
    senex-scale are scraped."""
    doc = yaml.safe_load(deployment.file("lb01", "prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(jobs) == {
        "django",
        "celery",
        "redis",
        "postgres",
        "pgbouncer",
        "node",
        "senex-scale",
    }
    targets = jobs["django"]["static_configs"][0]["targets"]
    pool = deployment.inv.pools["django"]
    assert targets == [f"127.0.0.1:{pool.port_of(n)}" for n in range(1, pool.max + 1)]


RULE_TEST = """
rule_files: [{rules}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'process_cpu_seconds_total{{job="django",instance="web01:8001"}}'
        values: '0+12x80'
      - series: 'celery_queue_length{{job="celery",queue_name="trading"}}'
        values: '150x80'
      - series: 'celery_queue_length{{job="celery",queue_name="general"}}'
        values: '20x80'
    alert_rule_test:
      - eval_time: 4m
        alertname: DjangoCPUHigh
        exp_alerts: []
      - eval_time: 10m
        alertname: DjangoCPUHigh
        exp_alerts:
          - exp_labels: {{severity: high, priority: high}}
            exp_annotations:
              summary: "Django CPU 80% > 70% for 5 minutes"
              action: "Add a Django instance"
      - eval_time: 10m
        alertname: CeleryQueueBacklog
        exp_alerts:
          - exp_labels: {{severity: medium, priority: medium, queue_name: trading}}
            exp_annotations:
              summary: "Celery queue trading > 100 tasks for 5 minutes"
              action: "Add a worker"
"""


def test_matrix_alerts_fire_as_the_seed_says(deployment: Any, tmp_path: Path) -> None:
    """``promtool test rules``: 80 % CPU alerts after 5 minutes, not before; a queue of 150
    alerts for its queue_name only."""
    rules = deployment.file("lb01", "prometheus/rules/senex-scale.yml")
    test = tmp_path / "matrix-test.yml"
    test.write_text(RULE_TEST.format(rules=json.dumps(str(rules))))
    result = promtool("test", "rules", str(test))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_use_exported_metric_names(deployment: Any) -> None:
    """Every panel query and annotation of the dashboard reads only metrics that exist."""
    doc = json.loads(deployment.file("lb01", "grafana/senex-scale.json").read_text())
    known = senex_metrics() | process_metrics() | set(APP_METRICS) | set(EXPORTERS)
    queries = dashboard_queries(doc)
    assert len(queries) >= 7
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown = names - known
        assert not unknown, f"{where}: {sorted(unknown)} not exported by anything ({expr})"
    titles = {panel["title"] for panel in doc["panels"]}
    assert {"Instances per pool", "CPU per instance", "Memory per instance"} <= titles
    assert {"Request distribution", "Queue lengths"} <= titles
    assert {"Forecast against instances", "Forecast error (MAPE, last two sessions)"} <= titles
    assert doc["annotations"]["list"][0]["name"] == "Scaling events"


def test_name_check_can_fail() -> None:
    """The seed's queries fail the same check (no such metric; wrong label is not a name)."""
    known = senex_metrics() | process_metrics() | set(APP_METRICS)
    old = "sum(rate(django_http_requests_total_by_view_transport_method_total[5m])) by (instance)"
    assert metric_names(old) - known == {
        "django_http_requests_total_by_view_transport_method_total"
    }
