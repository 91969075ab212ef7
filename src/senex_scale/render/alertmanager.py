"""Alertmanager for the matrix's alerts: one route per priority, and its systemd unit.

Every alert rule (``monitoring.rule_groups``) carries ``priority`` = critical, high, medium or
low. Alertmanager groups them per alert and per thing they are about (pool, host, queue,
instance) and routes each priority to a receiver of the same name: critical pages fast and
repeats often, low waits and repeats twice a day. A receiver sends to the webhook the
inventory gives for its priority (``[prometheus.alertmanager.webhooks]``), or nowhere (the
alert stays visible in Alertmanager and ``amtool alert``) until one is given. Prometheus is
wired to it by the ``alerting:`` block of the rendered ``prometheus.yml``. The rendered file
is checked by ``amtool check-config`` (``tests/integration/render/test_alerting.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PRIORITIES = ("critical", "high", "medium", "low")
"""The priorities of the policy and of the alert rules, most urgent first."""

TIMING: Mapping[str, tuple[str, str, str]] = {
    # priority: (group_wait, group_interval, repeat_interval)
    "critical": ("10s", "1m", "15m"),
    "high": ("30s", "5m", "1h"),
    "medium": ("1m", "5m", "4h"),
    "low": ("5m", "15m", "12h"),
}
"""How soon each priority is sent and how often it is repeated while it fires."""

GROUP_BY = ("alertname", "pool", "host", "queue_name", "instance")


def config(webhooks: Mapping[str, str]) -> dict[str, Any]:
    """``alertmanager.yml``: a route and a receiver per priority; unlabelled alerts go to
    ``medium`` (the default route)."""
    receivers: list[dict[str, Any]] = []
    for priority in PRIORITIES:
        receiver: dict[str, Any] = {"name": priority}
        if priority in webhooks:
            receiver["webhook_configs"] = [{"url": webhooks[priority], "send_resolved": True}]
        receivers.append(receiver)
    routes = []
    for priority in PRIORITIES:
        wait, interval, repeat = TIMING[priority]
        routes.append(
            {
                "receiver": priority,
                "matchers": [f'priority="{priority}"'],
                "group_wait": wait,
                "group_interval": interval,
                "repeat_interval": repeat,
            }
        )
    wait, interval, repeat = TIMING["medium"]
    return {
        "route": {
            "receiver": "medium",
            "group_by": list(GROUP_BY),
            "group_wait": wait,
            "group_interval": interval,
            "repeat_interval": repeat,
            "routes": routes,
        },
        # a critical alert silences the lower ones about the same thing
        "inhibit_rules": [
            {
                "source_matchers": ['priority="critical"'],
                "target_matchers": ['priority=~"high|medium|low"'],
                "equal": ["alertname", "pool", "host"],
            }
        ],
        "receivers": receivers,
    }
