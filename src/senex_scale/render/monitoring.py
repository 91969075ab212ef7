"""The Prometheus rules and the Grafana dashboard: the seed's decision matrix, made queryable.

Every row of the seed's matrix is one recording rule (the signal, named
``level:metric:operation`` as the Prometheus naming guide asks) and one alert on it with the
row's threshold, window and priority. The queries use the names the scraped targets really
publish: the reference app's own middleware (``senex_scale.contrib.django.metrics``:
``django_http_requests_total{method,status}``, ``senex_websocket_connections``, the process
collector), the Celery workers (``install_celery_metrics``), the controller (``senex_scale_*``)
and the exporters the inventory names (``EXPORTER_METRICS``: node_exporter, redis_exporter,
celery-exporter, whose queue label is ``queue_name``). Instance counts and scaling events come
from the controller's own metrics, not from ``count(up)``, which counts targets that are down.

``metric_names`` pulls the metric names out of a PromQL expression and ``rendered_queries``
lists every expression of the rules and the dashboard, so the tests check each name against
live ``/metrics`` of the reference app, a worker and the exporters
(``tests/integration/django/test_metric_names.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class MatrixRow:
    """One row of the seed's scaling decision matrix, as a recording rule and an alert."""

    alert: str
    record: str
    expr: str
    threshold: float
    for_: str
    severity: str
    summary: str
    action: str


def matrix(*, postgres_hosts: list[str]) -> list[MatrixRow]:
    """The six rows of the seed's matrix (PostgreSQL CPU is read on the database hosts)."""
    db = "|".join(re.escape(h) for h in postgres_hosts) or "none"
    fs = 'fstype!~"tmpfs|overlay|squashfs"'
    return [
        MatrixRow(
            alert="DjangoCPUHigh",
            record="pool:django_cpu:avg_percent",
            expr='avg(rate(process_cpu_seconds_total{job="django"}[1m])) * 100',
            threshold=70,
            for_="5m",
            severity="high",
            summary='Django CPU {{ $value | printf "%.0f" }}% > 70% for 5 minutes',
            action="Add a Django instance",
        ),
        MatrixRow(
            alert="PostgresCPUHigh",
            record="host:postgres_cpu:percent",
            expr=(
                "100 * (1 - avg by (host) (rate(node_cpu_seconds_total"
                f'{{job="node",mode="idle",host=~"{db}"}}[5m])))'
            ),
            threshold=80,
            for_="10m",
            severity="high",
            summary="PostgreSQL host {{ $labels.host }} CPU > 80% for 10 minutes",
            action="Add a read replica",
        ),
        MatrixRow(
            alert="RedisMemoryHigh",
            record="instance:redis_memory:percent",
            expr=(
                '100 * redis_memory_used_bytes{job="redis"}'
                ' / (redis_memory_max_bytes{job="redis"} > 0)'
            ),
            threshold=90,
            for_="1m",
            severity="critical",
            summary="Redis {{ $labels.instance }} memory > 90% of maxmemory",
            action="Upgrade the instance or add Sentinel",
        ),
        MatrixRow(
            alert="CeleryQueueBacklog",
            record="queue:celery_queue_length:sum",
            expr='sum by (queue_name) (celery_queue_length{job="celery"})',
            threshold=100,
            for_="5m",
            severity="medium",
            summary="Celery queue {{ $labels.queue_name }} > 100 tasks for 5 minutes",
            action="Add a worker",
        ),
        MatrixRow(
            alert="WebSocketConnectionsHigh",
            record="instance:websocket_connections:sum",
            expr='sum by (instance) (senex_websocket_connections{job="django"})',
            threshold=1500,
            for_="2m",
            severity="medium",
            summary="{{ $labels.instance }} holds > 1500 WebSocket connections",
            action="Add a Daphne instance",
        ),
        MatrixRow(
            alert="DiskUsageHigh",
            record="host:disk_used:percent",
            expr=(
                f'100 * (1 - node_filesystem_avail_bytes{{job="node",{fs}}}'
                f' / node_filesystem_size_bytes{{job="node",{fs}}})'
            ),
            threshold=80,
            for_="5m",
            severity="high",
            summary="{{ $labels.host }} {{ $labels.mountpoint }} is > 80% full",
            action="Expand storage or archive data",
        ),
    ]


def controller_alerts() -> list[dict[str, Any]]:
    """Alerts on the controller itself: blind, leaderless, or pinned at max."""
    return [
        {
            "alert": "SenexScaleSourceErrors",
            "expr": "sum by (source) (rate(senex_scale_source_errors_total[5m])) > 0",
            "for": "5m",
            "labels": {"severity": "high", "priority": "high"},
            "annotations": {
                "summary": "metric source {{ $labels.source }} is failing: the controller holds",
            },
        },
        {
            "alert": "SenexScaleNoLeader",
            "expr": "max(senex_scale_leader) < 1",
            "for": "5m",
            "labels": {"severity": "critical", "priority": "critical"},
            "annotations": {"summary": "no senex-scale controller holds the leader lock"},
        },
        {
            "alert": "SenexScalePoolAtMax",
            "expr": (
                'max by (pool) (senex_scale_pool_instances{state="desired"})'
                ' >= max by (pool) (senex_scale_pool_instances{state="max"})'
            ),
            "for": "15m",
            "labels": {"severity": "medium", "priority": "medium"},
            "annotations": {"summary": "pool {{ $labels.pool }} wants its max: raise it?"},
        },
    ]


def rule_groups(*, postgres_hosts: list[str], interval: str) -> dict[str, Any]:
    """The rules file: recording rules, the matrix alerts and the controller alerts."""
    rows = matrix(postgres_hosts=postgres_hosts)
    return {
        "groups": [
            {
                "name": "senex-scale-signals",
                "interval": interval,
                "rules": [{"record": r.record, "expr": r.expr} for r in rows],
            },
            {
                "name": "senex-scale-matrix",
                "interval": interval,
                "rules": [
                    {
                        "alert": r.alert,
                        "expr": f"{r.record} > {r.threshold:g}",
                        "for": r.for_,
                        "labels": {"severity": r.severity, "priority": r.severity},
                        "annotations": {"summary": r.summary, "action": r.action},
                    }
                    for r in rows
                ],
            },
            {"name": "senex-scale-controller", "rules": controller_alerts()},
        ]
    }


# --------------------------------------------------------------------------- the dashboard

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    pid: int, title: str, targets: list[tuple[str, str]], *, unit: str, x: int, y: int
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": _DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": _DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(*, title: str, web_pool: str) -> dict[str, Any]:
    """The seed's dashboard: instances over time, CPU and memory per instance, request
    distribution, queue lengths, and scaling events as annotations; then the predictive
    rules' forecast beside the instances, and its error (docs/predictive.md)."""
    web = f'job="{web_pool}"'
    panels = [
        _panel(
            1,
            "Instances per pool",
            [
                ('max by (pool) (senex_scale_pool_instances{state="current"})', "{{pool}} current"),
                ('max by (pool) (senex_scale_pool_instances{state="desired"})', "{{pool}} desired"),
                ('max by (pool) (senex_scale_pool_instances{state="max"})', "{{pool}} max"),
            ],
            unit="short",
            x=0,
            y=0,
        ),
        _panel(
            2,
            "CPU per instance",
            [(f"100 * rate(process_cpu_seconds_total{{{web}}}[1m])", "{{instance}}")],
            unit="percent",
            x=12,
            y=0,
        ),
        _panel(
            3,
            "Memory per instance",
            [(f"process_resident_memory_bytes{{{web}}}", "{{instance}}")],
            unit="bytes",
            x=0,
            y=8,
        ),
        _panel(
            4,
            "Request distribution",
            [
                (
                    f"sum by (instance) (rate(django_http_requests_total{{{web}}}[5m]))",
                    "{{instance}}",
                )
            ],
            unit="reqps",
            x=12,
            y=8,
        ),
        _panel(
            5,
            "Queue lengths",
            [('sum by (queue_name) (celery_queue_length{job="celery"})', "{{queue_name}}")],
            unit="short",
            x=0,
            y=16,
        ),
        _panel(
            6,
            "Scaling decisions",
            [
                (
                    "sum by (pool, outcome) (increase(senex_scale_decisions_total[5m]))",
                    "{{pool}} {{outcome}}",
                ),
                (
                    "max by (pool, rule) (senex_scale_rule_value)",
                    "{{pool}} {{rule}}",
                ),
            ],
            unit="short",
            x=12,
            y=16,
        ),
        _panel(
            7,
            "Forecast against instances",
            [
                (
                    "max by (pool, rule) (senex_scale_forecast_instances)",
                    "{{pool}} forecast ({{rule}})",
                ),
                ('max by (pool) (senex_scale_pool_instances{state="current"})', "{{pool}} current"),
            ],
            unit="short",
            x=0,
            y=24,
        ),
        _panel(
            8,
            "Forecast error (MAPE, last two sessions)",
            [("max by (pool, rule) (senex_scale_forecast_mape)", "{{pool}} {{rule}}")],
            unit="percentunit",
            x=12,
            y=24,
        ),
    ]
    return {
        "uid": "senex-scale",
        "title": title,
        "tags": ["senex-scale"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                }
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Scaling events",
                    "datasource": _DATASOURCE,
                    "enable": True,
                    "iconColor": "orange",
                    "expr": 'changes(senex_scale_pool_instances{state="current"}[1m]) > 0',
                    "step": "60s",
                    "titleFormat": "{{pool}} scaled",
                    "textFormat": "{{pool}}: instance count changed",
                    "useValueForTime": False,
                }
            ]
        },
        "panels": panels,
    }


def dashboard_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every query in a dashboard: panel targets and annotations."""
    found: list[tuple[str, str]] = []
    for panel in doc.get("panels", []):
        for target in panel.get("targets", []):
            found.append((f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
    for note in doc.get("annotations", {}).get("list", []):
        if "expr" in note:
            found.append((f"annotation {note.get('name')!r}", note["expr"]))
    return found


# --------------------------------------------------------------------------- PromQL names

EXPORTER_METRICS: dict[str, tuple[str, ...]] = {
    # prometheus-node-exporter (Debian), collectors cpu and filesystem
    "node": ("node_cpu_seconds_total", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"),
    # prometheus-redis-exporter (oliver006/redis_exporter)
    "redis": ("redis_memory_used_bytes", "redis_memory_max_bytes"),
    # danihodovic/celery-exporter (not packaged in Debian nor on PyPI): queue label queue_name
    "celery": ("celery_queue_length",),
}
"""The names the rules and the dashboard read from each exporter the inventory scrapes."""


def rendered_queries(
    *, postgres_hosts: list[str], interval: str, web_pool: str
) -> list[tuple[str, str]]:
    """(where, expr) of every PromQL expression rendered: recording rules, alerts, panels."""
    found: list[tuple[str, str]] = []
    for group in rule_groups(postgres_hosts=postgres_hosts, interval=interval)["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            found.append((f"rule {name}", rule["expr"]))
    found += dashboard_queries(dashboard(title="Senex Scale", web_pool=web_pool))
    return found


def recorded_names(*, postgres_hosts: list[str], interval: str) -> set[str]:
    """The series the recording rules make (alerts read them)."""
    groups = rule_groups(postgres_hosts=postgres_hosts, interval=interval)["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
        "start",
        "end",
    ]
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels and keywords removed)."""
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
