"""Steady stretches: the values a pool's rules may take while its decision stays "no change".

The simulator spends most of a month on ticks where nothing can happen: the pools sit at
their minimum (or, under the exact HPA, inside its tolerance), every instance ready, every
value inside its line. ``Decider.steady`` answers, once per configuration, how far each
rule's value may move before the decision could change: one closed band per rule. The
simulator then checks a whole block of ticks against the bands with NumPy and skips the ticks
inside them; ``Decider.remember_steady`` brings the memory (the target rules' recent wishes)
to where tick-by-tick decisions would have left it::

    value  ---------x--------------[=========== band ===========]----------x---->
                    a tick out here runs the full decision      and so does one out here

A band is found with the decision code itself, not a copy of its arithmetic: every count a
rule recommends is a monotone step function of its value (the HPA's ratio, ceil(ratio x
ready), the tolerance band, our own average), so the edge where the recommendation passes
the current count is found by bisection over the ordered float values (64 calls of the real
function). The edges are exact: a value inside the band gives the count the tick would give.
Hand-written because no library bisects over IEEE-754 orderings of a black-box predicate.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LIMIT = 1e12
"""Bands are searched within [-LIMIT, LIMIT]: a value beyond is never taken as steady."""

_SIGN = 0x8000_0000_0000_0000
_MAGNITUDE = 0x7FFF_FFFF_FFFF_FFFF
_PACK = struct.Struct("<d")
_UNPACK = struct.Struct("<q")


def _ordered(x: float) -> int:
    """An integer that orders like ``x`` (adjacent floats are adjacent integers)."""
    (bits,) = _UNPACK.unpack(_PACK.pack(x))
    return int(bits) if bits >= 0 else -(int(bits) & _MAGNITUDE)


def _unordered(i: int) -> float:
    bits = i if i >= 0 else (-i) | _SIGN
    (value,) = _PACK.unpack(_UNPACK.pack(bits - (1 << 64) if bits >= 1 << 63 else bits))
    return float(value)


def last_true(pred: Callable[[float], bool]) -> float | None:
    """The largest value in [-LIMIT, LIMIT] where ``pred`` holds, for a ``pred`` that holds
    up to some value and not above it (None: it does not hold at -LIMIT)."""
    if not pred(-LIMIT):
        return None
    if pred(LIMIT):
        return LIMIT
    low, high = _ordered(-LIMIT), _ordered(LIMIT)
    while high - low > 1:
        mid = (low + high) // 2
        if pred(_unordered(mid)):
            low = mid
        else:
            high = mid
    return _unordered(low)


def first_true(pred: Callable[[float], bool]) -> float | None:
    """The smallest value in [-LIMIT, LIMIT] where ``pred`` holds, for a ``pred`` that holds
    from some value on (None: it does not hold at LIMIT)."""
    if not pred(LIMIT):
        return None
    below = last_true(lambda v: not pred(v))
    if below is None:
        return -LIMIT
    return math.nextafter(below, math.inf)


Band = tuple[float, float]
"""Values ``lo <= v <= hi`` (closed; infinite ends allowed)."""

ANY: Band = (-math.inf, math.inf)


def count_band(count: Callable[[float], int | None], current: int, at_most: bool) -> Band | None:
    """The values for which ``count`` (a rule's recommendation, monotone in its value; None:
    no recommendation) is ``current``, or with ``at_most``, no more than it; None if none."""

    def not_above(v: float) -> bool:
        wanted = count(v)
        return wanted is not None and wanted <= current

    def not_below(v: float) -> bool:
        wanted = count(v)
        return wanted is not None and wanted >= current

    high = last_true(not_above)
    low = -LIMIT if at_most else first_true(not_below)
    if high is None or low is None or low > high:
        return None
    return (low, high)


@dataclass(frozen=True, slots=True)
class Steady:
    """Where every pool of a tick stays as it is, and every action rule stays quiet.

    ``bands``: per rule (count rules of the pools asked for, and the action rules), the
    values that keep it so. ``until``: the bands hold for ticks before this time (a schedule
    changes a minimum then). ``memory``: seconds of past ticks ``remember_steady`` needs to
    rebuild the memory (the longest recommendation window, plus a tick).
    """

    bands: Mapping[str, Band]
    until: float
    memory: float
