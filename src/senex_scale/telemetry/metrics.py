"""The controller's own Prometheus metrics (``/metrics``), in a registry of its own.

Names (the Grafana dashboard and the alert rules that ``senex-scale render`` writes use these;
``METRIC_NAMES`` lists them for the test that checks every panel's query)::

    senex_scale_pool_instances{pool, state="current|desired|min|max"}   gauge
    senex_scale_rule_value{rule, pool}                                  gauge (NaN when missing)
    senex_scale_rule_threshold{rule, pool, direction="out|in"}          gauge
    senex_scale_rule_breach_seconds{rule, pool}                         gauge
    senex_scale_decisions_total{pool, outcome}                          counter
    senex_scale_action_duration_seconds{pool, action="out|in"}          histogram
    senex_scale_source_errors_total{source}                             counter
    senex_scale_actions_in_flight{pool, action="out|in|repair|RULE"}    gauge (running now)
    senex_scale_repairs_total{pool, kind}                               counter (live reconcile)
    senex_scale_leader                                                  gauge (1 when leading)
    senex_scale_tick_duration_seconds                                   histogram
    senex_scale_last_tick_timestamp_seconds                             gauge
    senex_scale_forecast_instances{pool, rule}                          gauge (NaN: no forecast)
    senex_scale_forecast_mape{pool, rule}                               gauge (NaN: not scored)
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

METRIC_NAMES = (
    "senex_scale_pool_instances",
    "senex_scale_rule_value",
    "senex_scale_rule_threshold",
    "senex_scale_rule_breach_seconds",
    "senex_scale_decisions_total",
    "senex_scale_action_duration_seconds",
    "senex_scale_source_errors_total",
    "senex_scale_actions_in_flight",
    "senex_scale_repairs_total",
    "senex_scale_leader",
    "senex_scale_tick_duration_seconds",
    "senex_scale_last_tick_timestamp_seconds",
    "senex_scale_forecast_instances",
    "senex_scale_forecast_mape",
)

ACTION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
"""Seconds: a scale-out is seconds (start, healthy), a scale-in up to drain_timeout."""


class Metrics:
    """Every metric of one controller."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances = Gauge(
            "senex_scale_pool_instances", "Instances per pool", ["pool", "state"], registry=r
        )
        self.rule_value = Gauge(
            "senex_scale_rule_value",
            "Latest value of each rule's metric",
            ["rule", "pool"],
            registry=r,
        )
        self.rule_threshold = Gauge(
            "senex_scale_rule_threshold",
            "Threshold (or target) of each rule, per direction",
            ["rule", "pool", "direction"],
            registry=r,
        )
        self.rule_breach = Gauge(
            "senex_scale_rule_breach_seconds",
            "Seconds each rule's condition has held",
            ["rule", "pool"],
            registry=r,
        )
        self.decisions = Counter(
            "senex_scale_decisions", "Decisions by outcome", ["pool", "outcome"], registry=r
        )
        self.action_duration = Histogram(
            "senex_scale_action_duration_seconds",
            "Duration of scale actions",
            ["pool", "action"],
            buckets=ACTION_BUCKETS,
            registry=r,
        )
        self.source_errors = Counter(
            "senex_scale_source_errors", "Failed metric queries", ["source"], registry=r
        )
        self.in_flight = Gauge(
            "senex_scale_actions_in_flight",
            "Actions running now, per pool (or action rule)",
            ["pool", "action"],
            registry=r,
        )
        self.repairs = Counter(
            "senex_scale_repairs",
            "Drift repaired by reconciliation (member re-added, dead member removed, ...)",
            ["pool", "kind"],
            registry=r,
        )
        self.websockets_rebalanced = Counter(
            "senex_scale_websockets_rebalanced",
            "WebSockets the controller asked instances to close (1012) to spread them",
            ["pool"],
            registry=r,
        )
        self.leader = Gauge("senex_scale_leader", "1 while this controller leads", registry=r)
        self.forecast = Gauge(
            "senex_scale_forecast_instances",
            "Forecast demand now, in instances, per predictive rule (NaN: no forecast)",
            ["pool", "rule"],
            registry=r,
        )
        self.forecast_mape = Gauge(
            "senex_scale_forecast_mape",
            "Recent forecast error of each predictive rule (0.1 = 10 %; NaN: not scored yet)",
            ["pool", "rule"],
            registry=r,
        )
        self.tick_duration = Histogram(
            "senex_scale_tick_duration_seconds", "Duration of one controller tick", registry=r
        )
        self.last_tick = Gauge(
            "senex_scale_last_tick_timestamp_seconds", "When the last tick ran", registry=r
        )

    def set_forecast(
        self, rule: str, pool: str, forecast: float | None, mape: float | None
    ) -> None:
        """Record a predictive rule's forecast demand now and its recent error (NaN: none)."""
        self.forecast.labels(pool, rule).set(math.nan if forecast is None else forecast)
        self.forecast_mape.labels(pool, rule).set(math.nan if mape is None else mape)

    def set_rule(self, rule: str, pool: str | None, value: float | None, held: float) -> None:
        """Record one rule's latest value (NaN when missing) and breach time."""
        label = pool or ""
        self.rule_value.labels(rule, label).set(math.nan if value is None else value)
        self.rule_breach.labels(rule, label).set(held)

    def exposition(self) -> bytes:
        """The text format served on /metrics."""
        return generate_latest(self.registry)
