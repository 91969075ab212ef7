"""The Kubernetes HPA algorithm: per-instance average and pool-total targets."""

from __future__ import annotations

import pytest

from senex_scale.core.targets import average_replicas, total_replicas


def vals(*values: float) -> dict[str, float]:
    """Ready values keyed by instance id "1", "2", ..."""
    return {str(i + 1): v for i, v in enumerate(values)}


# (current, ready values, missing, unready, target, tol_out, tol_in, expected)
AVERAGE_CASES = [
    # ---- no missing, no unready: ceil(ratio * ready)
    # 75/70 = 1.071: |1 - 1.071| = 0.071 <= 0.1 -> current.
    pytest.param(4, vals(75, 75, 75, 75), 0, 0, 70, 0.1, 0.1, 4, id="in-band-above"),
    # 65/70 = 0.929: within 0.1 -> current.
    pytest.param(4, vals(65, 65, 65, 65), 0, 0, 70, 0.1, 0.1, 4, id="in-band-below"),
    pytest.param(4, vals(70, 70, 70, 70), 0, 0, 70, 0.1, 0.1, 4, id="on-target"),
    # 80/70 = 1.143: outside -> ceil(1.143 * 4) = ceil(4.571) = 5.
    pytest.param(4, vals(80, 80, 80, 80), 0, 0, 70, 0.1, 0.1, 5, id="just-outside-above"),
    # avg(50, 90, 100, 80) = 80: same as above -> 5.
    pytest.param(4, vals(50, 90, 100, 80), 0, 0, 70, 0.1, 0.1, 5, id="uneven-instances"),
    # 140/70 = 2.0 -> 8.
    pytest.param(4, vals(140, 140, 140, 140), 0, 0, 70, 0.1, 0.1, 8, id="double"),
    # 52.5/70 = 0.75 -> ceil(0.75 * 4) = 3.
    pytest.param(4, vals(52.5, 52.5, 52.5, 52.5), 0, 0, 70, 0.1, 0.1, 3, id="just-outside-below"),
    # 60/70 = 0.857: outside, but ceil(0.857 * 4) = ceil(3.43) = 4: HPA rounds up.
    pytest.param(4, vals(60, 60, 60, 60), 0, 0, 70, 0.1, 0.1, 4, id="below-rounds-back-up"),
    # 17.5/70 = 0.25 -> ceil(0.25 * 4) = 1.
    pytest.param(4, vals(17.5, 17.5, 17.5, 17.5), 0, 0, 70, 0.1, 0.1, 1, id="quarter"),
    # Exactly on the tolerance edge (exact binary values): 125/100 = 1.25, |1 - 1.25| <= 0.25.
    pytest.param(4, vals(125, 125, 125, 125), 0, 0, 100, 0.25, 0.25, 4, id="edge-inclusive"),
    # 126/100 = 1.26 > 1.25 -> ceil(1.26 * 4) = ceil(5.04) = 6.
    pytest.param(4, vals(126, 126, 126, 126), 0, 0, 100, 0.25, 0.25, 6, id="edge-just-past"),
    # ---- per-direction tolerance
    # 75.6/70 = 1.08: inside the default 0.1 ...
    pytest.param(4, vals(75.6, 75.6, 75.6, 75.6), 0, 0, 70, 0.1, 0.1, 4, id="1.08-default"),
    # ... but outside a 0.05 scale-out tolerance: ceil(1.08 * 4) = ceil(4.32) = 5.
    pytest.param(4, vals(75.6, 75.6, 75.6, 75.6), 0, 0, 70, 0.05, 0.3, 5, id="1.08-tight-out"),
    # 52.5/70 = 0.75 on 10: outside 0.1 -> ceil(7.5) = 8 ...
    pytest.param(10, vals(*[52.5] * 10), 0, 0, 70, 0.1, 0.1, 8, id="0.75-default"),
    # ... inside a 0.3 scale-in tolerance -> current.
    pytest.param(10, vals(*[52.5] * 10), 0, 0, 70, 0.05, 0.3, 10, id="0.75-loose-in"),
    # 84/70 = 1.2: inside a 0.3 scale-out tolerance even with a tight scale-in one.
    pytest.param(4, vals(84, 84, 84, 84), 0, 0, 70, 0.3, 0.05, 4, id="1.2-loose-out"),
    # ---- missing instances (warm, no sample)
    # ratio 35/70 = 0.5 (scale-in): 2 missing count as 70 -> (70 + 140) / 4 / 70 = 0.75
    # -> ceil(0.75 * 4) = 3 (without them it would be ceil(0.5 * 2) = 1).
    pytest.param(4, vals(35, 35), 2, 0, 70, 0.1, 0.1, 3, id="missing-100pct-on-scale-in"),
    # ratio 50/70 = 0.714: (50 + 210) / 4 / 70 = 0.929 -> within tolerance -> current.
    pytest.param(4, vals(50), 3, 0, 70, 0.1, 0.1, 4, id="missing-in-lands-in-band"),
    # ratio 140/70 = 2 (scale-out): 2 missing count as 0 -> 280 / 4 / 70 = 1.0 -> current.
    pytest.param(4, vals(140, 140), 2, 0, 70, 0.1, 0.1, 4, id="missing-0pct-lands-in-band"),
    # ratio 105/70 = 1.5: 210 / 4 / 70 = 0.75 flips to a scale-in -> no change.
    pytest.param(4, vals(105, 105), 2, 0, 70, 0.1, 0.1, 4, id="missing-flips-direction"),
    # ratio 210/70 = 3: 420 / 4 / 70 = 1.5 -> ceil(1.5 * 4) = 6.
    pytest.param(4, vals(210, 210), 2, 0, 70, 0.1, 0.1, 6, id="missing-still-out"),
    # ratio 1.0 exactly, 3 instances without samples: HPA adds no fallback value at a ratio
    # of exactly 1 (missing pods are 100 % only when < 1, 0 % only when > 1), so the ratio
    # stays 1.0, within tolerance -> current.
    pytest.param(4, vals(70), 3, 0, 70, 0.1, 0.1, 4, id="missing-on-target"),
    # ---- unready instances (starting or warming)
    # ratio 2 (scale-out): 2 unready count as 0 -> 280 / 4 / 70 = 1.0 -> current.
    pytest.param(4, vals(140, 140), 0, 2, 70, 0.1, 0.1, 4, id="unready-0pct-lands-in-band"),
    # ratio 3: 420 / 4 / 70 = 1.5 -> 6.
    pytest.param(4, vals(210, 210), 0, 2, 70, 0.1, 0.1, 6, id="unready-still-out"),
    # ratio 1.5: 210 / 4 / 70 = 0.75 flips -> no change.
    pytest.param(4, vals(105, 105), 0, 2, 70, 0.1, 0.1, 4, id="unready-flips-direction"),
    # ratio 1.014 (> 1 but in band): 142 / 4 / 70 = 0.507 flips -> no change.
    pytest.param(4, vals(70, 72), 0, 2, 70, 0.1, 0.1, 4, id="unready-in-band-above"),
    # ratio 0.5 (scale-in): unready are ignored -> ceil(0.5 * 2) = 1.
    pytest.param(4, vals(35, 35), 0, 2, 70, 0.1, 0.1, 1, id="unready-ignored-on-scale-in"),
    # ratio 3 with 1 missing and 1 unready: 420 / 4 / 70 = 1.5 -> 6.
    pytest.param(4, vals(210, 210), 1, 1, 70, 0.1, 0.1, 6, id="missing-and-unready-out"),
    # ratio 0.5 with 1 missing and 1 unready: missing as 70: (70 + 70) / 3 / 70 = 0.667
    # -> ceil(0.667 * 3) = 2; the unready one is ignored.
    pytest.param(4, vals(35, 35), 1, 1, 70, 0.1, 0.1, 2, id="missing-and-unready-in"),
    # ---- nothing to go on
    pytest.param(4, {}, 4, 0, 70, 0.1, 0.1, 4, id="no-ready-values"),
]


@pytest.mark.parametrize(
    ("current", "ready", "missing", "unready", "target", "tol_out", "tol_in", "expected"),
    AVERAGE_CASES,
)
def test_average_replicas(
    current: int,
    ready: dict[str, float],
    missing: int,
    unready: int,
    target: float,
    tol_out: float,
    tol_in: float,
    expected: int,
) -> None:
    """HPA average-target recommendation, with missing and unready instances."""
    desired, reason = average_replicas(current, ready, missing, unready, target, tol_out, tol_in)
    assert desired == expected
    assert reason


@pytest.mark.parametrize(
    ("ready", "missing", "unready", "reason"),
    [
        pytest.param(vals(75, 75), 0, 0, "ratio 1.07 within tolerance 0.1", id="in-band"),
        pytest.param(vals(80, 80), 0, 0, "ratio 1.14", id="out"),
        pytest.param({}, 0, 0, "no ready instance has a sample", id="none"),
        pytest.param(
            vals(105, 105),
            2,
            0,
            "ratio 1.50, 0.75 counting 2 without samples and 0 warming: no change",
            id="flip",
        ),
    ],
)
def test_average_replicas_reason(
    ready: dict[str, float], missing: int, unready: int, reason: str
) -> None:
    """The reason names the ratio and why the count stays or moves."""
    assert average_replicas(2, ready, missing, unready, 70, 0.1, 0.1)[1] == reason


# (current, total, target, tol_out, tol_in, expected): External AverageValue, ceil(total / target).
TOTAL_CASES = [
    # 310 / (100 * 3) = 1.033: within 0.1 -> current.
    pytest.param(3, 310.0, 100.0, 0.1, 0.1, 3, id="in-band"),
    # 450 / 300 = 1.5 -> ceil(450 / 100) = 5.
    pytest.param(3, 450.0, 100.0, 0.1, 0.1, 5, id="out"),
    # 180 / 300 = 0.6 -> ceil(1.8) = 2.
    pytest.param(3, 180.0, 100.0, 0.1, 0.1, 2, id="in"),
    # 250 / 300 = 0.833: outside, ceil(2.5) = 3 = current.
    pytest.param(3, 250.0, 100.0, 0.1, 0.1, 3, id="in-rounds-back-up"),
    # An empty queue recommends 0 (bounds apply later).
    pytest.param(3, 0.0, 100.0, 0.1, 0.1, 0, id="empty"),
    # No instances: no ratio, just ceil(250 / 100) = 3.
    pytest.param(0, 250.0, 100.0, 0.1, 0.1, 3, id="from-zero"),
    pytest.param(0, 0.0, 100.0, 0.1, 0.1, 0, id="zero-stays-zero"),
    # 420 / 300 = 1.4: within a 0.5 scale-out tolerance -> current.
    pytest.param(3, 420.0, 100.0, 0.5, 0.1, 3, id="loose-out"),
    # 180 / 300 = 0.6: within a 0.5 scale-in tolerance -> current.
    pytest.param(3, 180.0, 100.0, 0.1, 0.5, 3, id="loose-in"),
    # 101 / (50 * 2) = 1.01 -> current.
    pytest.param(2, 101.0, 50.0, 0.1, 0.1, 2, id="just-over"),
    # 1201 / (100 * 10) = 1.201 -> ceil(12.01) = 13.
    pytest.param(10, 1201.0, 100.0, 0.1, 0.1, 13, id="ceil"),
]


@pytest.mark.parametrize(
    ("current", "total", "target", "tol_out", "tol_in", "expected"), TOTAL_CASES
)
def test_total_replicas(
    current: int, total: float, target: float, tol_out: float, tol_in: float, expected: int
) -> None:
    """HPA pool-total recommendation: ceil(total / target) outside the tolerance band."""
    desired, reason = total_replicas(current, total, target, tol_out, tol_in)
    assert desired == expected
    assert reason
