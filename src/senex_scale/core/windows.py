"""Sustained windows with Prometheus ``for:`` semantics, over per-instance or pool samples.

A condition "value > 70 for 5m" holds at ``now`` when the newest sample is fresh, breaches,
and an unbroken run of breaching samples reaches back at least 5 minutes::

    time ->   |-------- for = 5m --------|
    samples   o   o   o   o   o   o   o   o        all breach, no gap > max_gap: fires
    samples   o   o   x   o   o   o   o   o        x is below: the streak starts after x
    samples   o   o       ....        o   o        a gap longer than max_gap breaks it

Samples of several instances taken at the same time are first combined into one pool value
(avg, max, min or sum). Walking backwards from the newest sample stops as soon as the answer
is known, so a long streak does not cost a long walk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from senex_scale.core.state import Sample


def _combine(values: list[float], how: str) -> float:
    if how == "avg":
        return sum(values) / len(values)
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    return sum(values)


def pool_values(samples: Sequence[Sample], how: str, now: float) -> Iterator[tuple[float, float]]:
    """(time, pool value) pairs, newest first, at or before ``now``; same-time samples combined."""
    i = len(samples) - 1
    while i >= 0 and samples[i].at > now:
        i -= 1
    while i >= 0:
        at = samples[i].at
        group = [samples[i].value]
        i -= 1
        while i >= 0 and samples[i].at == at:
            group.append(samples[i].value)
            i -= 1
        yield at, group[0] if len(group) == 1 else _combine(group, how)


class Streak(NamedTuple):
    """How a condition stands at one time (a NamedTuple: made several times per rule a tick)."""

    value: float | None
    """Newest pool value (None when missing)."""
    held: float
    """Seconds the condition has held without a break (>= window once it fires)."""
    fires: bool
    missing: str | None = None
    """Why there is no usable value (no samples, stale), or None."""


def latest(
    samples: Sequence[Sample], how: str, now: float, stale: float
) -> tuple[float | None, str | None]:
    """Newest pool value if it is fresh, else (None, why)."""
    for at, value in pool_values(samples, how, now):
        age = now - at
        if age > stale:
            return None, f"newest sample is {age:.0f}s old (stale after {stale:.0f}s)"
        return value, None
    return None, "no samples"


Memo = dict[object, tuple[float, float | None]]
"""Per condition: (newest sample time seen, streak start then, or None if not breaching)."""


def sustained(
    samples: Sequence[Sample],
    how: str,
    breached: Callable[[float], bool],
    now: float,
    window: float,
    max_gap: float,
    stale: float,
    memo: Memo | None = None,
    key: object = None,
) -> Streak:
    """Whether ``breached`` has held for every sample in the last ``window`` seconds.

    With a ``memo`` (one per caller, ``key`` per condition), a call whose samples extend the
    previous call's by one new sample continues the previous streak instead of walking back:
    same result, constant cost. Any other history falls back to the walk.
    """
    # the newest pool value, read in place (no generator): most calls need only it and the
    # time of the one before, so the walk below is the rare case
    i = len(samples) - 1
    while i >= 0 and samples[i].at > now:
        i -= 1
    if i < 0:
        return Streak(None, 0.0, False, "no samples")
    newest_at = samples[i].at
    j = i - 1
    while j >= 0 and samples[j].at == newest_at:
        j -= 1
    if j == i - 1:
        newest = samples[i].value
    else:
        newest = _combine([samples[k].value for k in range(i, j, -1)], how)
    if now - newest_at > stale:
        return Streak(
            None,
            0.0,
            False,
            f"newest sample is {now - newest_at:.0f}s old (stale after {stale:.0f}s)",
        )
    if not breached(newest):
        if memo is not None:
            memo[key] = (newest_at, None)
        return Streak(newest, 0.0, False)
    horizon = now - window
    start: float | None = None
    if memo is not None and key in memo:
        seen_at, seen_start = memo[key]
        if seen_at == newest_at:
            start = seen_start
        elif j >= 0 and samples[j].at == seen_at:
            # the newest sample is the only one since the last call
            joined = seen_start is not None and newest_at - seen_at <= max_gap
            start = seen_start if joined else newest_at
    if start is None:
        start = previous = newest_at
        if start > horizon:
            values = pool_values(samples, how, now)
            next(values)
            for at, value in values:
                if previous - at > max_gap or not breached(value):
                    break
                start = previous = at
                if start <= horizon:
                    break
    if memo is not None:
        memo[key] = (newest_at, start)
    held = now - start
    return Streak(newest, held, held >= window)


def latest_by_instance(samples: Sequence[Sample], now: float, stale: float) -> dict[str, float]:
    """Newest fresh value of each instance (samples without an instance are skipped)."""
    out: dict[str, float] = {}
    for sample in reversed(samples):
        if sample.at > now:
            continue
        if now - sample.at > stale:
            break
        if sample.instance is not None and sample.instance not in out:
            out[sample.instance] = sample.value
    return out


def latest_by_instance_at(
    samples: Sequence[Sample], now: float, stale: float
) -> dict[str, tuple[float, float]]:
    """Newest fresh (value, time) of each instance (samples without an instance are skipped)."""
    out: dict[str, tuple[float, float]] = {}
    for sample in reversed(samples):
        if sample.at > now:
            continue
        if now - sample.at > stale:
            break
        if sample.instance is not None and sample.instance not in out:
            out[sample.instance] = (sample.value, sample.at)
    return out
