"""The rebalance plan: who closes how many WebSockets after a scale-out (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from senex_scale.controller.rebalance import plan
from senex_scale.policy.models import WebSockets

DEFAULT = WebSockets()


def test_after_2_to_4_the_old_instances_shed_within_the_share() -> None:
    """40 on two old instances, two new ones empty: 25 % per interval at most, shared."""
    settings = WebSockets(rebalance_share=0.25)
    assert plan({1: 20, 2: 20, 3: 0, 4: 0}, settings) == {1: 5, 2: 5}
    # the next interval, after those reconnected to the new ones
    assert plan({1: 15, 2: 15, 3: 5, 4: 5}, settings) == {1: 5, 2: 5}
    assert plan({1: 10, 2: 10, 3: 10, 4: 10}, settings) == {}


def test_an_instance_short_of_its_share_counts_too() -> None:
    """2 -> 3 with 40: {15, 15, 10}: the old ones are 12 % over (within 20 %), the new one
    25 % short: each old one sheds one, and {14, 14, 12} is within 20 % everywhere."""
    assert plan({1: 15, 2: 15, 3: 10}, DEFAULT) == {1: 1, 2: 1}
    assert plan({1: 14, 2: 14, 3: 12}, DEFAULT) == {}


def test_within_the_tolerance_or_the_minimum_nothing_moves() -> None:
    assert plan({1: 11, 2: 9}, DEFAULT) == {}  # 10 % above the mean: within 20 %
    assert plan({1: 3, 2: 1}, DEFAULT) == {}  # 50 % above, but only 1 over the mean
    assert plan({1: 5}, DEFAULT) == {}  # one instance: nowhere to go
    assert plan({1: 0, 2: 0}, DEFAULT) == {}


def test_the_bound_is_shared_in_proportion_to_the_excess() -> None:
    settings = WebSockets(rebalance_share=0.1)
    asked = plan({1: 60, 2: 35, 3: 0, 4: 5}, settings)  # mean 25, budget 10, excess 35:10
    assert asked == {1: 8, 2: 2}
    assert sum(asked.values()) == 10


@given(
    st.dictionaries(st.integers(1, 50), st.integers(0, 5000), min_size=0, max_size=12),
    st.floats(0.01, 1.0),
    st.floats(0.0, 2.0),
    st.integers(1, 10),
)
def test_never_over_the_share_never_below_the_mean(
    counts: dict[int, int], share: float, tolerance: float, minimum: int
) -> None:
    settings = WebSockets(
        rebalance_share=share, rebalance_tolerance=tolerance, rebalance_min=minimum
    )
    asked = plan(counts, settings)
    total = sum(counts.values())
    assert sum(asked.values()) <= max(0, -(-share * total // 1))
    if asked:
        mean = total / len(counts)
        for n, count in asked.items():
            assert count > 0
            assert counts[n] - count >= mean - 1  # nobody is pushed below the mean
            assert counts[n] > mean
        worst = max(abs(c - mean) for c in counts.values())
        assert worst > tolerance * mean
        assert worst >= minimum


@pytest.mark.parametrize(
    ("field", "value"),
    [("rebalance_share", 0.0), ("rebalance_share", 1.5), ("rebalance_tolerance", -0.1),
     ("rebalance_min", 0), ("drain_close", "-1s"), ("control", "senex/ws"), ("token_env", "A-B")],
)  # fmt: skip
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        WebSockets.model_validate({field: value})
    assert field in str(info.value)
