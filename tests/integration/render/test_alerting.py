"""The alerts go somewhere: Alertmanager's rendered config passes ``amtool check-config``
and routes each priority to its own receiver, Prometheus is wired to it, and every alert rule
has a ``promtool test rules`` case that fires it from synthetic series and one that does not."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

SERIES = 121
"""Samples per synthetic series (every 15 s: 30 minutes)."""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_amtool_accepts_the_rendered_config(deployment: Any) -> None:
    """``amtool check-config`` passes: four receivers, one per priority."""
    config = deployment.file("lb01", "alertmanager/alertmanager.yml")
    result = _run("amtool", "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Found 4 receivers" in result.stdout or " - 4 receivers" in result.stdout, result.stdout


@pytest.mark.parametrize("priority", ["critical", "high", "medium", "low"])
def test_each_priority_has_its_route(deployment: Any, priority: str) -> None:
    """``amtool config routes test``: an alert of a priority reaches that priority's receiver."""
    config = deployment.file("lb01", "alertmanager/alertmanager.yml")
    result = _run(
        "amtool", "config", "routes", "test", f"--config.file={config}",
        f"priority={priority}", "alertname=X",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == priority


def test_prometheus_sends_its_alerts_to_alertmanager(deployment: Any) -> None:
    """prometheus.yml has an ``alerting:`` block naming Alertmanager's address; the rendered
    unit runs Alertmanager on that address with the rendered config."""
    doc = yaml.safe_load(deployment.file("lb01", "prometheus/prometheus.yml").read_text())
    listen = deployment.inv.prometheus.alertmanager.listen
    targets = [t for am in doc["alerting"]["alertmanagers"] for c in am["static_configs"]
               for t in c["targets"]]  # fmt: skip
    assert targets == [listen]
    unit = deployment.file("lb01", "systemd/alertmanager.service").read_text()
    assert f"--web.listen-address={listen}" in unit
    assert "--config.file=/etc/prometheus/alertmanager.yml" in unit


def _alerts(rules: Path) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(rules.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def _s(series: str, values: str) -> dict[str, str]:
    return {"series": series, "values": values}


Case = tuple[list[dict[str, str]], list[dict[str, str]], dict[str, Any]]


def _expect(labels: dict[str, str], summary: str, action: str | None = None) -> dict[str, Any]:
    annotations = {"summary": summary} | ({"action": action} if action else {})
    return {"exp_labels": labels, "exp_annotations": annotations}


def _cases(db: str) -> dict[str, Case]:
    """Per alert: (series that fire it, series that do not, the alert expected)."""
    n = SERIES - 1
    cpu = 'process_cpu_seconds_total{job="django",instance="web01:8001"}'
    idle = f'node_cpu_seconds_total{{job="node",mode="idle",host="{db}",cpu="0"}}'
    used = 'redis_memory_used_bytes{job="redis",instance="r:9121"}'
    cap = 'redis_memory_max_bytes{job="redis",instance="r:9121"}'
    queue = 'celery_queue_length{job="celery",queue_name="trading"}'
    ws = 'senex_websocket_connections{job="django",instance="web01:8001"}'
    fs = 'job="node",host="web01",mountpoint="/",fstype="ext4"'
    avail, size = f"node_filesystem_avail_bytes{{{fs}}}", f"node_filesystem_size_bytes{{{fs}}}"
    errors = 'senex_scale_source_errors_total{source="prom"}'
    leader = 'senex_scale_leader{instance="c1"}'
    desired = 'senex_scale_pool_instances{pool="django",state="desired"}'
    top = 'senex_scale_pool_instances{pool="django",state="max"}'
    high = {"severity": "high", "priority": "high"}
    critical = {"severity": "critical", "priority": "critical"}
    medium = {"severity": "medium", "priority": "medium"}
    return {
        "DjangoCPUHigh": (
            [_s(cpu, f"0+12x{n}")],  # 80 %
            [_s(cpu, f"0+6x{n}")],  # 40 %
            _expect(high, "Django CPU 80% > 70% for 5 minutes", "Add a Django instance"),
        ),
        "PostgresCPUHigh": (
            [_s(idle, f"0+1.5x{n}")],  # idle 10 %
            [_s(idle, f"0+7.5x{n}")],  # idle 50 %
            _expect(
                high | {"host": db},
                f"PostgreSQL host {db} CPU > 80% for 10 minutes",
                "Add a read replica",
            ),
        ),
        "RedisMemoryHigh": (
            [_s(used, f"95x{n}"), _s(cap, f"100x{n}")],
            [_s(used, f"50x{n}"), _s(cap, f"100x{n}")],
            _expect(
                critical | {"job": "redis", "instance": "r:9121"},
                "Redis r:9121 memory > 90% of maxmemory",
                "Upgrade the instance or add Sentinel",
            ),
        ),
        "CeleryQueueBacklog": (
            [_s(queue, f"150x{n}")],
            [_s(queue, f"20x{n}")],
            _expect(
                medium | {"queue_name": "trading"},
                "Celery queue trading > 100 tasks for 5 minutes",
                "Add a worker",
            ),
        ),
        "WebSocketConnectionsHigh": (
            [_s(ws, f"1600x{n}")],
            [_s(ws, f"1000x{n}")],
            _expect(
                medium | {"instance": "web01:8001"},
                "web01:8001 holds > 1500 WebSocket connections",
                "Add a Daphne instance",
            ),
        ),
        "DiskUsageHigh": (
            [_s(avail, f"10x{n}"), _s(size, f"100x{n}")],
            [_s(avail, f"50x{n}"), _s(size, f"100x{n}")],
            _expect(
                high | {"job": "node", "host": "web01", "mountpoint": "/", "fstype": "ext4"},
                "web01 / is > 80% full",
                "Expand storage or archive data",
            ),
        ),
        "SenexScaleSourceErrors": (
            [_s(errors, f"0+1x{n}")],
            [_s(errors, f"3x{n}")],
            _expect(
                high | {"source": "prom"}, "metric source prom is failing: the controller holds"
            ),
        ),
        "SenexScaleNoLeader": (
            [_s(leader, f"0x{n}")],
            [_s(leader, f"1x{n}")],
            _expect(critical, "no senex-scale controller holds the leader lock"),
        ),
        "SenexScalePoolAtMax": (
            [_s(desired, f"5x{n}"), _s(top, f"5x{n}")],
            [_s(desired, f"3x{n}"), _s(top, f"5x{n}")],
            _expect(medium | {"pool": "django"}, "pool django wants its max: raise it?"),
        ),
    }


def test_every_alert_fires_from_its_series_and_only_then(deployment: Any, tmp_path: Path) -> None:
    """``promtool test rules``: per alert, series that breach its threshold for its window fire
    it (with its labels and annotations) and series just inside it do not."""
    rules = deployment.file("lb01", "prometheus/rules/senex-scale.yml")
    alerts = _alerts(rules)
    recorded = yaml.safe_load(rules.read_text())["groups"][0]["rules"]
    cpu_rule = next(r for r in recorded if r["record"] == "host:postgres_cpu:percent")
    match = re.search(r'host=~"([^"|]+)', cpu_rule["expr"])
    assert match, "the PostgreSQL CPU rule names its hosts"
    cases = _cases(match.group(1).replace("\\", ""))
    assert set(cases) == set(alerts), "every alert rule needs a case here"
    tests = []
    for name, (fire, quiet, expected) in cases.items():
        for series, exp in ((fire, [expected]), (quiet, [])):
            tests.append(
                {
                    "name": f"{name} {'fires' if exp else 'stays quiet'}",
                    "interval": "15s",
                    "input_series": series,
                    "alert_rule_test": [{"eval_time": "29m", "alertname": name, "exp_alerts": exp}],
                }
            )
    doc = {"rule_files": [str(rules)], "evaluation_interval": "15s", "tests": tests}
    test_file = tmp_path / "alerts-test.yml"
    test_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = _run("promtool", "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
