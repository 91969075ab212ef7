"""What the end-to-end run measured, from the load's record and the controller's audit log.

- time to capacity: per Django scale-out, from the decision (the tick at which the rule's
  ``for`` window completed) to the new instance's ``add`` step (healthy, in the balancer);
- failed HTTP requests: errors and non-2xx answers;
- WebSocket connections closed early: closed by the server, or broken, while their
  instance was not being drained (a close after the instance's ``drain`` step is the drain
  doing its job: the client reconnects to another instance), and not asked by the
  controller's rebalancing (1012 "rebalance": counted apart, the client reconnects too);
- lost and duplicated Celery tasks: queued trades without a row, or with two;
- latency p50/p99 overall, per load phase, and during scale events (from a decision to its
  last step);
- instance-minutes per pool, from the controller's per-tick counts.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REBALANCED = "code 1012 rebalance"
"""How the load records a close the controller's rebalancing asked for."""
DRAIN_SLACK = 0.5
"""Seconds of clock difference allowed between a drain step and a close it caused."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by the nearest-rank method; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _windows(decisions: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    out = []
    for d in decisions:
        if d.get("kind") == "scale" and d.get("outcome") in ("done", "partial", "failed"):
            steps = d.get("detail", {}).get("steps", [])
            end = max([s["at"] for s in steps], default=d["at"])
            out.append((d["at"], end))
    return out


def _drains(decisions: Iterable[Mapping[str, Any]], pool: str) -> dict[int, list[float]]:
    """Per instance number of ``pool``: the times it was drained."""
    out: dict[int, list[float]] = {}
    for d in decisions:
        if d.get("pool") != pool:
            continue
        for step in d.get("detail", {}).get("steps", []):
            if step["what"] == "drain":
                out.setdefault(int(step["n"]), []).append(float(step["at"]))
    return out


def time_to_capacity(decisions: Iterable[Mapping[str, Any]], pool: str) -> list[float]:
    """Seconds from each scale-out decision of ``pool`` to its first instance's ``add``."""
    out = []
    for d in decisions:
        if d.get("pool") != pool or d.get("direction") != "out":
            continue
        adds = [s["at"] for s in d.get("detail", {}).get("steps", []) if s["what"] == "add"]
        if adds:
            out.append(min(adds) - d["at"])
    return out


def measure(
    record: Mapping[str, Any],
    decisions: Sequence[Mapping[str, Any]],
    trade_rows: Mapping[str, int],
    *,
    django_base: int,
    pool_minutes: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The numbers of one run (JSON-ready)."""
    requests = record["requests"]
    failed = [r for r in requests if r["status"] is None or not 200 <= r["status"] < 300]
    windows = _windows(decisions)
    all_lat = [r["latency"] for r in requests if r["status"] is not None]
    during = [
        r["latency"]
        for r in requests
        if r["status"] is not None and any(a <= r["at"] <= b for a, b in windows)
    ]
    drains = _drains(decisions, "django")
    early, drained, broken, rebalanced = [], 0, 0, 0
    for sock in record["sockets"]:
        if sock["by"] == "error":
            broken += 1
            early.append(sock)
            continue
        if sock["by"] != "server":
            continue
        n = sock.get("instance")
        if n is None and sock["port"] is not None:
            n = sock["port"] - django_base  # an app that names only its port (BASE + n)
        times = drains.get(n, []) if n is not None else []
        if any(t - DRAIN_SLACK <= sock["closed"] for t in times):
            drained += 1
        elif sock.get("detail") == REBALANCED:
            rebalanced += 1
        else:
            early.append(sock)
    queued = record["queued"]
    lost = [s for s in queued if trade_rows.get(s, 0) == 0]
    duplicated = [s for s in queued if trade_rows.get(s, 0) > 1]
    ttc = time_to_capacity(decisions, "django")
    scale_events = [
        (d["pool"], d["direction"], d["current"], d["desired"], d["outcome"])
        for d in decisions
        if d.get("kind") == "scale" and d.get("outcome") not in ("hold", "dry-run")
    ]
    phases = list(record.get("phases", []))
    by_phase = {}
    for i, (name, start) in enumerate(phases):
        end = phases[i + 1][1] if i + 1 < len(phases) else record["ended"]
        lat = [r["latency"] for r in requests if r["status"] is not None and start <= r["at"] < end]
        by_phase[name] = {
            "requests": len(lat),
            "p50_ms": _ms(percentile(lat, 0.5)),
            "p99_ms": _ms(percentile(lat, 0.99)),
        }
    return {
        "seconds": round(record["ended"] - record["started"], 1),
        "requests": len(requests),
        "failed_requests": len(failed),
        "failed_examples": [f"{r['status'] or r['error']}" for r in failed[:5]],
        "websockets": len(record["sockets"]),
        "websockets_closed_early": len(early),
        "websockets_closed_by_drain": drained,
        "websockets_rebalanced": rebalanced,
        "websocket_connect_errors": broken,
        "websocket_error_examples": [_socket_error(s, phases) for s in early[:5]],
        "tasks_queued": len(queued),
        "tasks_lost": len(lost),
        "tasks_duplicated": len(duplicated),
        "time_to_capacity_s": [round(x, 2) for x in ttc],
        "time_to_capacity_median_s": round(statistics.median(ttc), 2) if ttc else None,
        "latency_p50_ms": _ms(percentile(all_lat, 0.5)),
        "latency_p99_ms": _ms(percentile(all_lat, 0.99)),
        "latency_during_scaling_p50_ms": _ms(percentile(during, 0.5)),
        "latency_during_scaling_p99_ms": _ms(percentile(during, 0.99)),
        "requests_during_scaling": len(during),
        "latency_by_phase": by_phase,
        "scale_events": scale_events,
        "instance_minutes": dict(pool_minutes or {}),
    }


def _socket_error(sock: dict[str, Any], phases: list[Any]) -> str:
    """What ended a socket early: when (phase, seconds into it), after how long, how."""
    phase, start = "?", 0.0
    for name, at in phases:
        if at <= sock["opened"]:
            phase, start = name, at
    held = (sock["closed"] or sock["opened"]) - sock["opened"]
    where = "before its first message" if sock.get("port") is None else "after connecting"
    return (
        f"{phase} +{sock['opened'] - start:.1f} s: {sock['by']} after {held:.1f} s"
        f" ({where}): {sock.get('detail') or '-'}"
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def instance_minutes(series: Mapping[str, Sequence[tuple[float, int, int]]]) -> dict[str, float]:
    """Per pool, the integral of the running count over time (the store's per-tick rows)."""
    out = {}
    for pool, points in series.items():
        total = 0.0
        for (t0, count, _), (t1, _, _) in itertools.pairwise(points):
            total += count * (t1 - t0)
        out[pool] = round(total / 60, 2)
    return out
