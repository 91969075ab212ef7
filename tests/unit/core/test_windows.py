"""Sustained windows: Prometheus ``for:`` semantics over pool and per-instance samples."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from senex_scale.core.state import Sample
from senex_scale.core.windows import latest, latest_by_instance, pool_values, sustained

NOW = 1_000_000.0
WINDOW = 300.0
GAP = 45.0
STALE = 45.0


def above_70(value: float) -> bool:
    """The condition used by every table below: value > 70."""
    return value > 70


def series(points: Sequence[tuple[float, float]]) -> tuple[Sample, ...]:
    """Pool samples from (seconds before NOW, value) pairs, sorted oldest first."""
    return tuple(Sample(NOW - ago, value) for ago, value in sorted(points, reverse=True))


def every_15s(oldest: float, value: float = 80.0, newest: float = 0.0) -> list[tuple[float, float]]:
    """(ago, value) every 15 s from ``oldest`` s before NOW to ``newest`` s before NOW."""
    return [(float(ago), value) for ago in range(int(oldest), int(newest) - 1, -15)]


def without(points: list[tuple[float, float]], *agos: float) -> list[tuple[float, float]]:
    """``points`` minus the samples taken ``agos`` seconds before NOW."""
    return [p for p in points if p[0] not in agos]


def replaced(
    points: list[tuple[float, float]], ago: float, value: float
) -> list[tuple[float, float]]:
    """``points`` with the sample ``ago`` seconds before NOW set to ``value``."""
    return [(a, value if a == ago else v) for a, v in points]


# (points, window, fires, held): held = NOW - the oldest sample of the unbroken streak.
SUSTAINED_CASES = [
    pytest.param(every_15s(300), WINDOW, True, 300.0, id="every-sample-breaches-for-the-window"),
    # The walk stops once the streak reaches the window's start: held is 300, not 600.
    pytest.param(every_15s(600), WINDOW, True, 300.0, id="longer-streak-reports-window"),
    # Streak only reaches back to 285 s < 300 s: pending, not firing (Prometheus fires at 315).
    pytest.param(every_15s(285), WINDOW, False, 285.0, id="streak-shorter-than-window"),
    # One 60 inside the window (150 s ago): the streak starts at the next sample, 135 s ago.
    pytest.param(
        replaced(every_15s(300), 150, 60.0), WINDOW, False, 135.0, id="one-low-sample-breaks"
    ),
    # The newest sample is exactly 70 (not > 70): nothing holds.
    pytest.param(replaced(every_15s(300), 0, 70.0), WINDOW, False, 0.0, id="newest-not-breaching"),
    # A low sample at exactly the window start (300 s ago): streak starts 285 s ago.
    pytest.param(
        replaced(every_15s(300), 300, 10.0), WINDOW, False, 285.0, id="low-at-window-start"
    ),
    # A low sample just before the window (315 s ago) does not matter.
    pytest.param(replaced(every_15s(330), 315, 10.0), WINDOW, True, 300.0, id="low-before-window"),
    # Gap 120 s -> 60 s ago is 60 s > max_gap 45 s: the streak starts 60 s ago.
    pytest.param(without(every_15s(300), 105, 90, 75), WINDOW, False, 60.0, id="gap-60s-breaks"),
    # Gap 120 s -> 75 s ago is 45 s = max_gap: still one streak.
    pytest.param(without(every_15s(300), 105, 90), WINDOW, True, 300.0, id="gap-45s-holds"),
    # Only two samples, 300 s apart: the gap breaks the streak at the newest one.
    pytest.param([(0.0, 80.0), (300.0, 80.0)], WINDOW, False, 0.0, id="two-samples-far-apart"),
    # Newest sample 30 s old (fresh): the streak 330 s -> 30 s reaches the window start.
    pytest.param(every_15s(330, newest=30), WINDOW, True, 300.0, id="fresh-but-not-current"),
    # Window 0: the newest sample alone decides; older low samples do not matter.
    pytest.param([(0.0, 80.0), (15.0, 10.0)], 0.0, True, 0.0, id="window-0-newest-breaches"),
    pytest.param([(0.0, 50.0), (15.0, 99.0)], 0.0, False, 0.0, id="window-0-newest-low"),
    # Window 0 with a newest sample 10 s old: held is its age.
    pytest.param([(10.0, 80.0)], 0.0, True, 10.0, id="window-0-held-is-age"),
]


@pytest.mark.parametrize(("points", "window", "fires", "held"), SUSTAINED_CASES)
def test_sustained_streaks(
    points: list[tuple[float, float]], window: float, fires: bool, held: float
) -> None:
    """A condition fires only when an unbroken run of breaching samples spans the window."""
    streak = sustained(series(points), "avg", above_70, NOW, window, GAP, STALE)
    assert (streak.fires, streak.held) == (fires, held)
    assert streak.missing is None
    assert streak.value == min(points)[1]  # the newest sample's value


@pytest.mark.parametrize(
    ("points", "missing"),
    [
        pytest.param([], "no samples", id="none"),
        # Only samples after now: nothing at or before now.
        pytest.param([(-15.0, 80.0), (-30.0, 80.0)], "no samples", id="only-future"),
        pytest.param(
            [(46.0, 80.0), (61.0, 80.0)], "newest sample is 46s old (stale after 45s)", id="stale"
        ),
        pytest.param(
            every_15s(600, newest=300), "newest sample is 300s old (stale after 45s)", id="old"
        ),
    ],
)
def test_sustained_missing(points: list[tuple[float, float]], missing: str) -> None:
    """No samples, or a stale newest sample, is missing data: no value and never fires."""
    streak = sustained(series(points), "avg", above_70, NOW, WINDOW, GAP, STALE)
    assert (streak.value, streak.held, streak.fires, streak.missing) == (None, 0.0, False, missing)


def test_sustained_newest_exactly_stale_bound_is_fresh() -> None:
    """A newest sample exactly ``stale`` seconds old still counts (stale means older)."""
    streak = sustained(series(every_15s(345, newest=45)), "avg", above_70, NOW, WINDOW, GAP, STALE)
    assert (streak.missing, streak.fires, streak.held) == (None, True, 300.0)


@pytest.mark.parametrize(
    ("future_value", "fires"),
    [
        pytest.param(10.0, True, id="low-future-sample-ignored"),
        pytest.param(99.0, True, id="high-future-sample-ignored"),
    ],
)
def test_sustained_ignores_samples_after_now(future_value: float, fires: bool) -> None:
    """Samples stamped after ``now`` are not looked at (replaying history must be exact)."""
    points = [*every_15s(300), (-15.0, future_value), (-30.0, future_value)]
    streak = sustained(series(points), "avg", above_70, NOW, WINDOW, GAP, STALE)
    assert (streak.fires, streak.held, streak.value) == (fires, 300.0, 80.0)


def test_sustained_future_breach_does_not_complete_a_streak() -> None:
    """A low sample at now is what counts, even when a later sample breaches."""
    points = [*every_15s(300, newest=15), (0.0, 10.0), (-15.0, 99.0)]
    streak = sustained(series(points), "avg", above_70, NOW, WINDOW, GAP, STALE)
    assert (streak.fires, streak.held, streak.value) == (False, 0.0, 10.0)


def per_instance(values: Sequence[float], oldest: float = 300.0) -> tuple[Sample, ...]:
    """Every 15 s from ``oldest`` s ago to now, one sample per value, instances "1", "2", ..."""
    return tuple(
        Sample(NOW - ago, value, str(i + 1))
        for ago in range(int(oldest), -1, -15)
        for i, value in enumerate(values)
    )


# Instances at 60 and 90 each tick: avg 75, max 90, min 60, sum 150.
@pytest.mark.parametrize(
    ("how", "value", "fires"),
    [
        pytest.param("avg", 75.0, True, id="avg"),
        pytest.param("max", 90.0, True, id="max"),
        pytest.param("min", 60.0, False, id="min"),
        pytest.param("sum", 150.0, True, id="sum"),
    ],
)
def test_sustained_combines_instances_at_the_same_time(how: str, value: float, fires: bool) -> None:
    """Samples of several instances at one time become one pool value before the check."""
    streak = sustained(per_instance([60.0, 90.0]), how, above_70, NOW, WINDOW, GAP, STALE)
    assert (streak.value, streak.fires) == (value, fires)
    assert streak.held == (300.0 if fires else 0.0)


def test_sustained_avg_breaks_on_one_low_tick() -> None:
    """One tick whose instance average is low breaks an averaged streak."""
    samples = list(per_instance([80.0, 80.0]))
    # 120 s ago both instances read 50: the average is 50, the streak starts 105 s ago.
    samples = [Sample(s.at, 50.0, s.instance) if s.at == NOW - 120 else s for s in samples]
    streak = sustained(samples, "avg", above_70, NOW, WINDOW, GAP, STALE)
    assert (streak.fires, streak.held, streak.value) == (False, 105.0, 80.0)


def test_sustained_below_condition() -> None:
    """The breach test is a parameter: a "below 30" condition works the same way."""
    samples = series(every_15s(600, value=12.0))
    streak = sustained(samples, "avg", lambda v: v < 30, NOW, 600.0, GAP, STALE)
    assert (streak.fires, streak.held, streak.value) == (True, 600.0, 12.0)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        pytest.param("avg", [(NOW, 2.0), (NOW - 15, 20.0)], id="avg"),
        pytest.param("max", [(NOW, 3.0), (NOW - 15, 30.0)], id="max"),
        pytest.param("min", [(NOW, 1.0), (NOW - 15, 10.0)], id="min"),
        pytest.param("sum", [(NOW, 6.0), (NOW - 15, 60.0)], id="sum"),
    ],
)
def test_pool_values_newest_first(how: str, expected: list[tuple[float, float]]) -> None:
    """pool_values yields one combined value per time, newest first, none after now."""
    samples = [
        Sample(NOW - 15, 10.0, "1"),
        Sample(NOW - 15, 20.0, "2"),
        Sample(NOW - 15, 30.0, "3"),
        Sample(NOW, 1.0, "1"),
        Sample(NOW, 2.0, "2"),
        Sample(NOW, 3.0, "3"),
        Sample(NOW + 15, 1000.0, "1"),
    ]
    assert list(pool_values(samples, how, NOW)) == expected


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        pytest.param([(30.0, 5.0), (0.0, 7.0)], (7.0, None), id="fresh"),
        pytest.param([(45.0, 5.0)], (5.0, None), id="exactly-at-bound"),
        pytest.param(
            [(60.0, 5.0)], (None, "newest sample is 60s old (stale after 45s)"), id="stale"
        ),
        pytest.param([], (None, "no samples"), id="none"),
        pytest.param([(-5.0, 5.0)], (None, "no samples"), id="only-future"),
    ],
)
def test_latest(
    points: list[tuple[float, float]], expected: tuple[float | None, str | None]
) -> None:
    """latest() returns the newest fresh pool value, or None with the reason."""
    assert latest(series(points), "avg", NOW, STALE) == expected


def test_latest_by_instance() -> None:
    """Newest fresh value per instance; stale, future and pool-level samples are skipped."""
    samples = [
        Sample(NOW - 60, 1.0, "old"),  # stale: older than 45 s
        Sample(NOW - 30, 2.0, "a"),
        Sample(NOW - 30, 3.0, "b"),
        Sample(NOW - 15, 4.0, "a"),
        Sample(NOW - 15, 99.0),  # pool-level sample: no instance
        Sample(NOW + 15, 5.0, "b"),  # after now
    ]
    assert latest_by_instance(samples, NOW, STALE) == {"a": 4.0, "b": 3.0}
