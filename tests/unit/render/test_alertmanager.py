"""Alertmanager's config: a route and a receiver per priority (no Alertmanager needed)."""

from __future__ import annotations

from senex_scale.render.alertmanager import PRIORITIES, config
from senex_scale.render.monitoring import rule_groups


def test_each_priority_routes_to_its_own_receiver() -> None:
    """Four routes matching priority="..." to receivers of the same name; medium by default."""
    doc = config({})
    routes = doc["route"]["routes"]
    assert [r["receiver"] for r in routes] == list(PRIORITIES)
    assert [r["matchers"] for r in routes] == [[f'priority="{p}"'] for p in PRIORITIES]
    assert doc["route"]["receiver"] == "medium"
    assert [r["name"] for r in doc["receivers"]] == list(PRIORITIES)


def test_a_webhook_is_used_only_for_its_priority() -> None:
    """A priority with a webhook sends there (and the resolution); the others send nowhere."""
    doc = config({"critical": "https://pager.example/hook"})
    by_name = {r["name"]: r for r in doc["receivers"]}
    assert by_name["critical"]["webhook_configs"] == [
        {"url": "https://pager.example/hook", "send_resolved": True}
    ]
    assert "webhook_configs" not in by_name["low"]


def test_every_alert_rule_has_a_priority_alertmanager_routes() -> None:
    """Matrix and controller alerts alike carry a priority label with a route."""
    groups = rule_groups(postgres_hosts=["db01"], interval="15s")["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert len(alerts) == 9
    assert all(a["labels"]["priority"] in PRIORITIES for a in alerts)
