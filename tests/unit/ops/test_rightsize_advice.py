"""``rightsize``'s arithmetic: percentiles, instance-hours, limits, idle workers, queues."""

from __future__ import annotations

import pytest

from senex_scale.ops.rightsize import (
    MIB,
    Usage,
    advise,
    cpu_limit,
    instance_hours,
    memory_limit,
    p95,
)


def test_p95() -> None:
    assert p95([]) is None
    assert p95(list(range(101))) == pytest.approx(95)


def test_instance_hours_caps_gaps_where_the_controller_was_down() -> None:
    """Ticks every 60 s, then a 1 h hole: the hole counts as one interval."""
    ticks = [(0.0, 2), (60.0, 2), (120.0, 4), (3720.0, 4), (3780.0, 4)]
    inst, hours, mean = instance_hours(ticks)
    assert hours == pytest.approx(4 * 60 / 3600)
    assert inst == pytest.approx((2 * 60 + 2 * 60 + 4 * 60 + 4 * 60) / 3600)
    assert mean == pytest.approx(3)
    assert instance_hours([]) == (0.0, 0.0, 0.0)


def test_limits_round_up() -> None:
    assert cpu_limit(50, 0.3) == 0.7  # 0.65 cores -> 0.7
    assert cpu_limit(1, 0.3) == 0.1
    assert memory_limit(100 * MIB, 0.3) == 192 * MIB  # 130 MiB -> 3 x 64 MiB
    assert memory_limit(0, 0.3) == 64 * MIB


def _ticks(n: int, count: int) -> list[tuple[float, int]]:
    return [(i * 300.0, count) for i in range(n)]


def test_idle_workers_are_consolidated_with_the_money_saved() -> None:
    ticks = _ticks(13, 4)  # one hour
    usage = Usage(
        ticks=ticks, busy=[(at, 10.0 if i % 2 else 20.0) for i, (at, _) in enumerate(ticks)]
    )
    advice = advise("celery", "worker", 1, usage, price=0.10)
    assert advice.idle
    assert advice.recommended_instances == 2
    assert advice.saved_instance_hours == pytest.approx(2.0)
    assert advice.saved == pytest.approx(0.2)
    assert advice.saved_per_30_days == pytest.approx(2.0 * 720 * 0.1)


def test_never_below_the_pool_minimum_and_never_for_web_pools() -> None:
    ticks = _ticks(13, 4)
    busy = [(at, 5.0) for at, _ in ticks]
    assert (
        advise("w", "worker", 3, Usage(ticks=ticks, busy=busy), price=None).recommended_instances
        == 3
    )
    web = advise("django", "web", 1, Usage(ticks=ticks, busy=busy), price=1.0)
    assert not web.idle
    assert web.saved == 0


def test_queue_consistently_above_needs_a_worker() -> None:
    """80 % of the window above the line: flagged; 70 %: not."""
    ticks = _ticks(10, 2)
    flagged = advise(
        "w", "worker", 1, Usage(ticks=ticks, queues={"q": [60.0] * 8 + [1.0] * 2}), price=None
    )
    assert flagged.queues_needing_worker == ["q"]
    calm = advise(
        "w", "worker", 1, Usage(ticks=ticks, queues={"q": [60.0] * 7 + [1.0] * 3}), price=None
    )
    assert calm.queues_needing_worker == []


def test_idle_and_queued_is_not_consolidated() -> None:
    ticks = _ticks(10, 4)
    usage = Usage(ticks=ticks, busy=[(at, 5.0) for at, _ in ticks], queues={"q": [90.0] * 10})
    advice = advise("w", "worker", 1, usage, price=0.1)
    assert advice.recommended_instances is None
    assert advice.saved == 0
    assert any("idle and queued" in n for n in advice.notes)
