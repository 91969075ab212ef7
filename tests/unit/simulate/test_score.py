"""Unit tests for the SPEC RG elasticity scorer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from senex_scale.simulate.score import FIELDS, Score, describe, score

# Each case: demand, supply, step (s), expected Score — computed by hand in the comment.
HAND_CASES = [
    pytest.param(
        # T = 4·60 = 240 s = 1/15 h. Under at t=2: (4−3)/4 = 1/4; over at t=1: (3−2)/2 = 1/2.
        # θ_U = 100/240·(1/4·60) = 6.25; θ_O = 100/240·(1/2·60) = 12.5; τ_U = τ_O = 60/240 = 25.
        # E_S = 2 (2→3, 3→4), E_D = 1 (2→4): j = 1 / (1/15 h) = 15 per hour.
        # instance_hours = (2+3+3+4)·60/3600 = 0.2; violation (d > s) one sample = 1 min.
        [2, 2, 4, 4],
        [2, 3, 3, 4],
        60.0,
        Score(6.25, 12.5, 25.0, 25.0, 15.0, 0.2, 2, 1.0),
        id="mixed",
    ),
    pytest.param(
        # Supply equals demand: no error, no timeshare; E_S = E_D = 2 so j = 0.
        # instance_hours = (1+3+3+2)·30/3600 = 0.075.
        [1, 3, 3, 2],
        [1, 3, 3, 2],
        30.0,
        Score(0.0, 0.0, 0.0, 0.0, 0.0, 0.075, 2, 0.0),
        id="perfect",
    ),
    pytest.param(
        # T = 4·900 s = 1 h. Always one spare instance on a demand of 2: θ_O = 100·1/2 = 50,
        # τ_O = 100. No adaptations: j = 0. instance_hours = 4·3·900/3600 = 3.
        [2, 2, 2, 2],
        [3, 3, 3, 3],
        900.0,
        Score(0.0, 50.0, 0.0, 100.0, 0.0, 3.0, 0, 0.0),
        id="constant-over",
    ),
    pytest.param(
        # T = 2·1800 s = 1 h. Three of four instances missing: θ_U = 100·3/4 = 75, τ_U = 100.
        # instance_hours = 2·1·1800/3600 = 1; violation all the time = 2·1800/60 = 60 min.
        [4, 4],
        [1, 1],
        1800.0,
        Score(75.0, 0.0, 100.0, 0.0, 0.0, 1.0, 0, 60.0),
        id="constant-under",
    ),
    pytest.param(
        # T = 4·900 s = 1 h. Over: 0.6/2.4 = 0.25 (t=0,1), 0.4/1.6 = 0.25 (t=2) → θ_O =
        # 100/4·0.75 = 18.75; under: 0.6/1.6 = 0.375 (t=3) → θ_U = 100/4·0.375 = 9.375.
        # τ_O = 75, τ_U = 25. E_S = 2 (3→2, 2→1); E_D on ⌈d⌉ = [3,3,2,2] is 1 → j = 1/h.
        # instance_hours = (3+3+2+1)·900/3600 = 2.25; violation one sample = 15 min.
        [2.4, 2.4, 1.6, 1.6],
        [3, 3, 2, 1],
        900.0,
        Score(9.375, 18.75, 25.0, 75.0, 1.0, 2.25, 2, 15.0),
        id="fractional-demand",
    ),
    pytest.param(
        # T = 6·600 s = 1 h. Over by 1 on demand 2 in 3 of 6 samples: θ_O = 100/6·1.5 = 25,
        # τ_O = 50. E_S = 5, E_D = 0 → j = +5/h. instance_hours = 15·600/3600 = 2.5.
        [2, 2, 2, 2, 2, 2],
        [2, 3, 2, 3, 2, 3],
        600.0,
        Score(0.0, 25.0, 0.0, 50.0, 5.0, 2.5, 5, 0.0),
        id="oscillating",
    ),
    pytest.param(
        # T = 4·900 s = 1 h. Over: 3/1 + 2/2 + 1/3 + 0 = 13/3 → θ_O = 25·13/3 = 108.33…,
        # τ_O = 75. E_S = 0, E_D = 3 → j = −3/h. instance_hours = 16·900/3600 = 4.
        [1, 2, 3, 4],
        [4, 4, 4, 4],
        900.0,
        Score(0.0, 325.0 / 3.0, 0.0, 75.0, -3.0, 4.0, 0, 0.0),
        id="inert",
    ),
]


@pytest.mark.parametrize(("demand", "supply", "step", "expected"), HAND_CASES)
def test_hand_computed_cases(
    demand: list[float], supply: list[float], step: float, expected: Score
) -> None:
    """Scores match values computed by hand from the published formulas."""
    result = score(np.array(demand), np.array(supply), step)
    assert result.as_dict() == pytest.approx(expected.as_dict(), rel=1e-12, abs=1e-12)
    assert isinstance(result.actions, int)


def test_accepts_plain_lists_and_integer_arrays() -> None:
    """Lists and integer arrays score the same as float arrays."""
    as_lists = score([2, 2, 4, 4], [2, 3, 3, 4], 60)
    as_arrays = score(np.array([2.0, 2, 4, 4]), np.array([2, 3, 3, 4], dtype=np.int64), 60.0)
    assert as_lists == as_arrays


def test_jitter_ignores_fractional_demand_noise_within_an_instance() -> None:
    """Demand wobbling inside one instance count is not a demand adaptation."""
    # ⌈[1.2, 1.7, 1.1, 1.9]⌉ = [2, 2, 2, 2]: E_D = 0; supply constant: E_S = 0 → j = 0.
    result = score([1.2, 1.7, 1.1, 1.9], [2, 2, 2, 2], 900)
    assert result.jitter == 0.0


@pytest.mark.parametrize(
    ("violation", "minutes"),
    [
        # Three true samples of 60 s each = 3 minutes.
        pytest.param(np.array([True, False, True, True]), 3.0, id="bool-mask"),
        pytest.param(np.array([1, 0, 1, 1]), 3.0, id="int-mask"),
        pytest.param([False, True, False, False], 1.0, id="list-mask"),
        # An all-false mask overrides the default d > s (which would give 1 minute).
        pytest.param(np.zeros(4, dtype=bool), 0.0, id="mask-overrides-default"),
    ],
)
def test_violation_mask_minutes(violation: Any, minutes: float) -> None:
    """SLO violation minutes count the caller's mask, Δt = 60 s per true sample."""
    result = score([2, 2, 4, 4], [2, 3, 3, 4], 60, violation=violation)
    assert result.slo_violation_minutes == pytest.approx(minutes)


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        pytest.param(None, 2, id="derived-from-supply-changes"),
        pytest.param(1, 1, id="passed"),
        pytest.param(0, 0, id="passed-zero"),
        pytest.param(np.int64(7), 7, id="numpy-int"),
    ],
)
def test_actions_passed_or_derived(actions: int | None, expected: int) -> None:
    """Actions default to the count of supply changes; a passed count wins."""
    result = score([2, 2, 4, 4], [2, 3, 3, 4], 60, actions=actions)
    assert result.actions == expected
    assert type(result.actions) is int


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"supply": [1, 1, 1]}, "supply: length 3", id="length-mismatch"),
        pytest.param({"demand": [], "supply": []}, "demand: must not be empty", id="empty"),
        pytest.param({"demand": [[1, 2, 3, 4]]}, "demand: expected a 1-D", id="2d-demand"),
        pytest.param({"demand": ["a", "b", "c", "d"]}, "demand: not numeric", id="text-demand"),
        pytest.param({"step": 0}, "step: must be", id="zero-step"),
        pytest.param({"step": -60.0}, "step: must be", id="negative-step"),
        pytest.param({"step": float("nan")}, "step: must be", id="nan-step"),
        pytest.param({"step": float("inf")}, "step: must be", id="inf-step"),
        pytest.param({"step": "60"}, "step: expected", id="string-step"),
        pytest.param({"demand": [1, float("nan"), 1, 1]}, "demand: non-finite", id="nan-demand"),
        pytest.param(
            {"supply": [1, 1, float("inf"), 1]}, "supply: non-finite .* index 2", id="inf-supply"
        ),
        pytest.param({"demand": [1, 2, 0, 0]}, "demand: must be > 0.* index 2", id="zero-demand"),
        pytest.param({"demand": [-1, 2, 2, 2]}, "demand: must be > 0.* index 0", id="neg-demand"),
        pytest.param({"supply": [1, 1, 1, -1]}, "supply: must be >= 0.* index 3", id="neg-supply"),
        pytest.param({"actions": -1}, "actions:", id="negative-actions"),
        pytest.param({"actions": True}, "actions:", id="bool-actions"),
        pytest.param({"actions": 1.5}, "actions:", id="float-actions"),
        pytest.param({"violation": [True, False]}, "violation: length 2", id="short-mask"),
        pytest.param({"violation": [0, 2, 0, 0]}, "violation: expected booleans", id="mask-2"),
        pytest.param({"violation": ["x", "y", "z", "w"]}, "violation: expected", id="text-mask"),
        pytest.param({"violation": [[True] * 4]}, "violation: expected a 1-D", id="2d-mask"),
    ],
)
def test_invalid_input_raises_naming_the_argument(kwargs: dict[str, Any], message: str) -> None:
    """Invalid input raises ValueError whose message names the offending argument."""
    arguments: dict[str, Any] = {"demand": [2, 2, 4, 4], "supply": [2, 3, 3, 4], "step": 60}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        score(**arguments)


def test_fields_and_as_dict_agree() -> None:
    """FIELDS lists the Score fields in order, and as_dict uses exactly those keys."""
    assert FIELDS == (
        "under_accuracy",
        "over_accuracy",
        "under_timeshare",
        "over_timeshare",
        "jitter",
        "instance_hours",
        "actions",
        "slo_violation_minutes",
    )
    assert tuple(score([1], [1], 1).as_dict()) == FIELDS


@pytest.mark.parametrize("field", FIELDS)
def test_describe_gives_one_line_per_field(field: str) -> None:
    """Every field has a non-empty one-line description."""
    text = describe(field)
    assert text
    assert "\n" not in text


def test_describe_rejects_unknown_field() -> None:
    """An unknown field name raises ValueError naming it."""
    with pytest.raises(ValueError, match="'latency'"):
        describe("latency")


def test_single_sample_has_zero_jitter() -> None:
    """One sample has no adaptations, so jitter is zero rather than undefined."""
    # T = 3600 s = 1 h; 3 instances for demand 3: everything zero, 3 instance-hours.
    assert score([3], [3], 3600) == Score(0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0, 0.0)
