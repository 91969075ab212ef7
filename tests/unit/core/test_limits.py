"""Rate limits (HPA behavior policies, selectPolicy Max) and scale-in stabilization."""

from __future__ import annotations

import pytest

from senex_scale.core.limits import scale_in_limit, scale_out_limit, stabilized
from senex_scale.core.state import ScaleEvent
from senex_scale.policy.models import Pool, RateLimit

NOW = 1_000_000.0

# The HPA defaults, as a pool gets them when the policy says nothing.
HPA_OUT = Pool(min=0, max=100).scale_out_limits
HPA_IN = Pool(min=0, max=100).scale_in_limits


def ev(ago: float, before: int, after: int) -> ScaleEvent:
    """A scale event ``ago`` seconds before NOW."""
    return ScaleEvent(NOW - ago, before, after)


def test_pool_defaults_are_the_hpa_defaults() -> None:
    """A pool without limits gets HPA's: out 100 % or 4 per 15 s, in 100 % per 15 s."""
    pool = Pool(min=0, max=100)
    assert pool.scale_out_limits == (
        RateLimit(percent=100, period=15),
        RateLimit(instances=4, period=15),
    )
    assert pool.scale_in_limits == (RateLimit(percent=100, period=15),)


# (current, events, limits, allowed, which)
SCALE_OUT_CASES = [
    # 2: 100 % -> ceil(2 * 2) = 4; 4 instances -> 6; Max -> 6.
    pytest.param(2, [], HPA_OUT, 6, "4 per 15s", id="small-pool-4-instances-wins"),
    # 10: 100 % -> 20; +4 -> 14; Max -> 20.
    pytest.param(10, [], HPA_OUT, 20, "100% per 15s", id="large-pool-percent-wins"),
    # 4: both 8; the first policy listed is named.
    pytest.param(4, [], HPA_OUT, 8, "100% per 15s", id="tie"),
    # 0: 100 % of 0 is 0, +4 is 4.
    pytest.param(0, [], HPA_OUT, 4, "4 per 15s", id="from-zero"),
    # 6 now, 2 -> 6 ten seconds ago: the period started at 2 -> 100 % gives 4, +4 gives 6:
    # nothing more this period (never below current).
    pytest.param(6, [ev(10, 2, 6)], HPA_OUT, 6, "100% per 15s", id="event-inside-period"),
    # The same event 15 s ago is outside the period (now - at < period): from 6 -> 12 / 10.
    pytest.param(6, [ev(15, 2, 6)], HPA_OUT, 12, "100% per 15s", id="event-at-period-edge"),
    pytest.param(6, [ev(14.9, 2, 6)], HPA_OUT, 6, "100% per 15s", id="event-just-inside"),
    # 5 now, 4 -> 5 five seconds ago: start 4 -> 8 vs 8 -> 8.
    pytest.param(5, [ev(5, 4, 5)], HPA_OUT, 8, "100% per 15s", id="partial-use"),
    # Scale-in events do not count against a scale-out limit: start 6 -> 12.
    pytest.param(6, [ev(5, 8, 6)], HPA_OUT, 12, "100% per 15s", id="scale-in-event-ignored"),
    # Two scale-outs in the period add up: 2 -> 3 -> 5, start 2 -> 4 / 6 -> 6.
    pytest.param(5, [ev(12, 2, 3), ev(3, 3, 5)], HPA_OUT, 6, "4 per 15s", id="events-add-up"),
    # Custom: 1 instance per minute; 3 -> 4 thirty seconds ago: start 3 -> 4 = current.
    pytest.param(
        4, [ev(30, 3, 4)], (RateLimit(instances=1, period=60),), 4, "1 per 1m", id="custom-used-up"
    ),
    # Custom: 50 % per 2 minutes from 3: ceil(4.5) = 5.
    pytest.param(3, [], (RateLimit(percent=50, period=120),), 5, "50% per 2m", id="custom-percent"),
]


@pytest.mark.parametrize(("current", "events", "limits", "allowed", "which"), SCALE_OUT_CASES)
def test_scale_out_limit(
    current: int,
    events: list[ScaleEvent],
    limits: tuple[RateLimit, ...],
    allowed: int,
    which: str,
) -> None:
    """The most instances allowed now: the policy allowing the largest change wins."""
    assert scale_out_limit(current, events, NOW, limits) == (allowed, which)


HALF_PER_MINUTE = (RateLimit(percent=50, period=60),)
ONE_PER_MINUTE = (RateLimit(instances=1, period=60),)

# (current, events, limits, allowed, which)
SCALE_IN_CASES = [
    # HPA default 100 % per 15 s: down to 0 allowed.
    pytest.param(10, [], HPA_IN, 0, "100% per 15s", id="default-anything"),
    # 50 % of 10 -> 5.
    pytest.param(10, [], HALF_PER_MINUTE, 5, "50% per 1m", id="half"),
    # 12 -> 10 thirty seconds ago: the period started at 12 -> 6.
    pytest.param(10, [ev(30, 12, 10)], HALF_PER_MINUTE, 6, "50% per 1m", id="event-inside"),
    # The same event 60 s ago is outside the period: from 10 -> 5.
    pytest.param(10, [ev(60, 12, 10)], HALF_PER_MINUTE, 5, "50% per 1m", id="event-outside"),
    # 1 per minute, 11 -> 10 twenty seconds ago: start 11 -> 10: nothing more.
    pytest.param(10, [ev(20, 11, 10)], ONE_PER_MINUTE, 10, "1 per 1m", id="used-up"),
    # Scale-out events do not count against a scale-in limit: start 10 -> 9.
    pytest.param(10, [ev(20, 9, 10)], ONE_PER_MINUTE, 9, "1 per 1m", id="scale-out-ignored"),
    # Two policies: 1 instance vs 50 % of 10 -> 9 vs 5: the largest change (5) wins.
    pytest.param(10, [], ONE_PER_MINUTE + HALF_PER_MINUTE, 5, "50% per 1m", id="max-change-wins"),
    # 3 instances removed per minute, 2 already gone this minute: start 10 -> 7.
    pytest.param(
        8, [ev(10, 10, 8)], (RateLimit(instances=3, period=60),), 7, "3 per 1m", id="partly-used"
    ),
    # Never below 0: 2 - 3 instances -> 0.
    pytest.param(2, [], (RateLimit(instances=3, period=60),), 0, "3 per 1m", id="floor-zero"),
    # 50 % of 5 = 2.5: rounded up to 3 (one fewer removal than HPA's truncation to 2).
    pytest.param(5, [], HALF_PER_MINUTE, 3, "50% per 1m", id="percent-rounds-up"),
]


@pytest.mark.parametrize(("current", "events", "limits", "allowed", "which"), SCALE_IN_CASES)
def test_scale_in_limit(
    current: int,
    events: list[ScaleEvent],
    limits: tuple[RateLimit, ...],
    allowed: int,
    which: str,
) -> None:
    """The fewest instances allowed now: the policy allowing the largest change wins."""
    assert scale_in_limit(current, events, NOW, limits) == (allowed, which)


RECS = [(NOW - 400, 9), (NOW - 300, 7), (NOW - 200, 6), (NOW - 100, 4)]


@pytest.mark.parametrize(
    ("recommendations", "window", "raw", "expected"),
    [
        # Within 300 s: 7 (300 s ago, the edge is included), 6, 4 and raw 3 -> 7; 9 is too old.
        pytest.param(RECS, 300.0, 3, 7, id="highest-of-window"),
        # 250 s window: 6, 4 and raw 3 -> 6.
        pytest.param(RECS, 250.0, 3, 6, id="shorter-window"),
        # A raw value above everything wins.
        pytest.param(RECS, 300.0, 8, 8, id="raw-highest"),
        # Window 0: only raw.
        pytest.param(RECS, 0.0, 2, 2, id="no-window"),
        # No history: raw.
        pytest.param([], 300.0, 2, 2, id="no-history"),
        # 1000 s window: everything -> 9.
        pytest.param(RECS, 1000.0, 1, 9, id="long-window"),
    ],
)
def test_stabilized(
    recommendations: list[tuple[float, int]], window: float, raw: int, expected: int
) -> None:
    """Scale-in stabilization takes the highest recommendation of the window, raw included."""
    assert stabilized(recommendations, NOW, window, raw) == expected
