"""The matrix as Prometheus rules, the dashboard's queries, and PromQL metric-name extraction."""

from __future__ import annotations

import pytest

from senex_scale.render.monitoring import (
    dashboard,
    dashboard_queries,
    matrix,
    metric_names,
    rule_groups,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'avg(rate(process_cpu_seconds_total{job="django"}[1m])) * 100',
            {"process_cpu_seconds_total"},
        ),
        (
            'sum by (queue_name) (celery_queue_length{queue_name="trading"})',
            {"celery_queue_length"},
        ),
        (
            "a_metric / on (instance) group_left (pool) b:metric:ratio offset 5m > 1e3",
            {"a_metric", "b:metric:ratio"},
        ),
        ('{__name__="x"}', set()),
        ('max by (pool) (x{state="current"}) >= bool max by (pool) (x{state="max"})', {"x"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    """Function names, labels, durations, keywords and numbers are not metric names."""
    assert metric_names(expr) == names


def test_every_matrix_row_has_a_recording_rule_and_an_alert() -> None:
    """Six rows, each recorded and alerted on at its threshold and window."""
    groups = rule_groups(postgres_hosts=["db01"], interval="15s")["groups"]
    records = {r["record"] for r in groups[0]["rules"]}
    alerts = {r["alert"]: r for r in groups[1]["rules"]}
    rows = matrix(postgres_hosts=["db01"])
    assert len(rows) == 6
    for row in rows:
        assert row.record in records
        assert alerts[row.alert]["expr"] == f"{row.record} > {row.threshold:g}"
        assert alerts[row.alert]["for"] == row.for_
    assert alerts["DjangoCPUHigh"]["for"] == "5m"
    assert alerts["PostgresCPUHigh"]["for"] == "10m"
    assert alerts["RedisMemoryHigh"]["labels"]["severity"] == "critical"


def test_seed_metric_mistakes_are_fixed() -> None:
    """The app's own request counter (not django-prometheus's), no celery queue label
    "queue", no count(up)."""
    doc = dashboard(title="t", web_pool="django")
    exprs = [e for _, e in dashboard_queries(doc)]
    names = set().union(*(metric_names(e) for e in exprs))
    assert "django_http_requests_total" in names
    assert "django_http_requests_total_by_view_transport_method_total" not in names
    assert "up" not in names
    assert all('queue="' not in e for e in exprs)
    assert {p["title"] for p in doc["panels"]} >= {
        "Instances per pool",
        "CPU per instance",
        "Memory per instance",
        "Request distribution",
        "Queue lengths",
    }
    assert doc["annotations"]["list"][0]["name"] == "Scaling events"
