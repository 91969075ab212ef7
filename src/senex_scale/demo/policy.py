"""The default policy scaled to demo time, pointed at the demo's servers.

A trading day does not fit in a demo, so time is compressed by ``speed`` (60: a minute of
the real policy is a second of the demo): every ``for`` window, cooldown, stabilization,
drain timeout and warm-up is divided by it (the interval stops at 1 s, the controller's
floor here). The demo's load is small, so the count thresholds (WebSocket connections per
instance, queue lengths) are divided too (``COUNT_DIVISORS``); percentages (CPU, busy
workers, memory) stay as they are; PromQL ranges (``rate(x[1m])``) are compressed like the
windows, to at least 5 s. Everything else is the default policy itself, rule for rule, with the
changes the demo needs and says so in ``CHANGES``.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from typing import Any

import tomli_w

from senex_scale.policy import default_policy_text
from senex_scale.policy.durations import format_duration, parse_duration
from senex_scale.policy.loading import validate_policy

CHANGES = (
    "schedules are dropped: they follow the New York clock, which a compressed day does not",
    "predictive rules are dropped: they learn the exchange's sessions, which a compressed day"
    " does not have (docs/predictive.md)",
    "disk-usage watches the demo's directory instead of /var/lib/containers",
)

DURATION_KEYS = {
    "for",
    "drain_timeout",
    "warmup",
    "start_timeout",
    "scale_out_cooldown",
    "scale_in_cooldown",
    "scale_in_stabilization",
    "cooldown",
    "period",
    "action_cooldown",
}
COUNT_DIVISORS = {"connections": 100.0, "queue": 5.0}
"""Signals whose thresholds are counts, and how much smaller the demo's load is: a few dozen
WebSocket clients instead of thousands, bursts of tens of tasks instead of hundreds."""
RANGE = re.compile(r"\[(\d+[smhd])\]")
"""A PromQL range (``rate(x[1m])``): compressed like the windows."""
MIN_RANGE = 5.0
"""The shortest range that still holds several 1 s scrapes."""
MIN_START_TIMEOUT = 30.0
MIN_SETTLE = {"scale_in_cooldown": 10.0, "scale_in_stabilization": 10.0}
"""Scale-in waits are not compressed below 10 s: at 60x the default's 2 minutes would be 2 s,
shorter than a Celery worker takes to start, and the pools would flap."""
"""A Daphne instance needs a few seconds to import Django, whatever the demo's speed."""


@dataclass(frozen=True)
class Endpoints:
    """Where the demo's servers are."""

    state: str
    listen: str
    prometheus: str
    redis: str
    postgres_dsn: str
    disk: str
    supervisor: str
    haproxy_socket: str
    haproxy_config: str
    django_base: int
    trading_base: int
    celery_base: int
    monitor_password_env: str
    max_django: int = 5
    max_trading: int = 4
    max_celery: int = 3


def _scale_duration(value: Any, speed: float, floor: float = 0.0) -> str:
    seconds = parse_duration(value) / speed
    return format_duration(max(seconds, floor))


def demo_policy_doc(
    endpoints: Endpoints, *, speed: float = 60.0, static: bool = False
) -> dict[str, Any]:
    """The demo policy as a TOML-ready mapping; ``static``: every pool pinned at its minimum
    (the baseline of the benchmark: what a fixed deployment of the seed's minimums does)."""
    doc: dict[str, Any] = tomllib.loads(default_policy_text())
    out = copy.deepcopy(doc)
    out.pop("schedules", None)
    out["rules"] = [r for r in out["rules"] if r.get("type") != "predictive"]

    ctl = out["controller"]
    ctl["interval"] = _scale_duration(ctl.get("interval", "15s"), speed, floor=1.0)
    ctl["action_cooldown"] = _scale_duration(ctl.get("action_cooldown", "1h"), speed)
    ctl["state"] = endpoints.state
    ctl["listen"] = endpoints.listen
    ctl["backoff"] = "2s"

    sources = out["sources"]
    sources["prom"]["url"] = endpoints.prometheus
    sources["broker"]["url"] = endpoints.redis
    sources["redis"]["url"] = endpoints.redis
    sources["postgres"]["dsn"] = endpoints.postgres_dsn
    sources["postgres"]["password_env"] = endpoints.monitor_password_env

    limits = {
        "django": endpoints.max_django,
        "celery-trading": endpoints.max_trading,
        "celery": endpoints.max_celery,
    }
    for name, pool in out["pools"].items():
        for key in list(pool):
            if key in DURATION_KEYS:
                pool[key] = _scale_duration(pool[key], speed, floor=MIN_SETTLE.get(key, 0.0))
        pool["max"] = min(int(pool["max"]), limits.get(name, int(pool["max"])))
        if static:
            pool["max"] = pool["min"]
        pool["start_timeout"] = format_duration(MIN_START_TIMEOUT)
        pool["runtime"] = {"type": "supervisor", "url": endpoints.supervisor, "group": name}
        # workers have a port too: their /metrics, so Prometheus' instance labels map to N
        bases = {
            "django": endpoints.django_base,
            "celery-trading": endpoints.trading_base,
            "celery": endpoints.celery_base,
        }
        pool["port"] = f"{bases[name]} + n"
        if name == "django":
            pool["balancer"] = {
                "type": "haproxy",
                "socket": endpoints.haproxy_socket,
                "backend": "django",
                "config": endpoints.haproxy_config,
                "cookie": False,
            }
            # clean drains (1012, paced) and rebalancing after a scale-out (docs/websockets.md)
            pool.setdefault("websockets", {})
    for rule in out["rules"]:
        metric = rule["metric"]
        for key in ("scale_out", "scale_in", "when"):
            condition = rule.get(key)
            if condition is None:
                continue
            if "for" in condition:
                condition["for"] = _scale_duration(condition["for"], speed)
            divisor = COUNT_DIVISORS.get(metric.get("signal", ""))
            if divisor is not None:
                for bound in ("above", "below"):
                    if bound in condition:
                        condition[bound] = max(1, round(condition[bound] / divisor))
        if "cooldown" in rule:
            rule["cooldown"] = _scale_duration(rule["cooldown"], speed)
        metric["query"] = RANGE.sub(
            lambda m: f"[{_scale_duration(m.group(1), speed, floor=MIN_RANGE)}]", metric["query"]
        )
        if rule["name"] == "disk-usage":
            metric["query"] = endpoints.disk
    validate_policy(out, source="<demo policy>")
    return out


def demo_policy_text(endpoints: Endpoints, *, speed: float = 60.0, static: bool = False) -> str:
    """The demo policy as TOML, with a header saying how it differs from the default."""
    counts = ", ".join(f"{k} /{v:g}" for k, v in COUNT_DIVISORS.items())
    header = [
        f"# The default policy at {speed:g}x speed (a minute is a second), count thresholds",
        f"# scaled down ({counts}); written by senex-scale demo. Other changes:",
        *(f"# - {change}" for change in CHANGES),
        "",
    ]
    return "\n".join(header) + tomli_w.dumps(demo_policy_doc(endpoints, speed=speed, static=static))
