"""Limits applied after the rules: stabilization, rate limits and cooldowns.

Rate limits follow the Kubernetes HPA ``behavior`` policies with ``selectPolicy: Max``: for each
policy the count at the start of its period is ``current`` minus what was added (or plus what
was removed) within the period, and the policy allowing the largest change wins. A scale-out
limit never forces a scale-in, nor a scale-in limit a scale-out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from senex_scale.core.state import ScaleEvent
from senex_scale.policy.durations import format_duration
from senex_scale.policy.models import RateLimit


def _describe(limit: RateLimit) -> str:
    amount = f"{limit.instances}" if limit.instances is not None else f"{limit.percent:g}%"
    return f"{amount} per {format_duration(limit.period)}"


def scale_out_limit(
    current: int, events: Sequence[ScaleEvent], now: float, limits: Sequence[RateLimit]
) -> tuple[int, str]:
    """Most instances allowed now, and which policy allowed it."""
    best, which = current, ""
    for limit in limits:
        added = sum(
            e.after - e.before for e in events if now - e.at < limit.period and e.after > e.before
        )
        start = current - added
        if limit.instances is not None:
            proposed = start + limit.instances
        else:
            assert limit.percent is not None
            # a percent of nothing is nothing: from zero, a percent policy allows one instance
            proposed = max(math.ceil(start * (1 + limit.percent / 100)), start + 1)
        if proposed > best or not which:
            best, which = max(proposed, current), _describe(limit)
    return best, which


def scale_in_limit(
    current: int, events: Sequence[ScaleEvent], now: float, limits: Sequence[RateLimit]
) -> tuple[int, str]:
    """Fewest instances allowed now, and which policy allowed it."""
    best, which = current, ""
    for limit in limits:
        removed = sum(
            e.before - e.after for e in events if now - e.at < limit.period and e.after < e.before
        )
        start = current + removed
        if limit.instances is not None:
            proposed = start - limit.instances
        else:
            assert limit.percent is not None
            proposed = math.ceil(start * (1 - limit.percent / 100))
        if proposed < best or not which:
            best, which = min(max(proposed, 0), current), _describe(limit)
    return best, which


def stabilized(
    recommendations: Sequence[tuple[float, int]], now: float, window: float, raw: int
) -> int:
    """Highest recommendation within the last ``window`` seconds, ``raw`` (now) included."""
    best = raw
    for at, value in reversed(recommendations):
        if now - at > window:
            break
        best = max(best, value)
    return best
