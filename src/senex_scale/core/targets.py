"""Target tracking with the Kubernetes HPA algorithm (replica_calculator.go), instance-based.

``desired = ceil(current * value / target)``, with the details that make HPA safe:

* no change while ``|value/target - 1|`` is within the tolerance (0.1 by default; one per
  direction, as in Kubernetes 1.33's configurable tolerance);
* instances still starting or warming up are not capacity: their samples are ignored, and
  when the ready ones ask for more they count as 0 % (so the scale-out is not overstated);
* instances without a sample count as 100 % of target on a scale-in and 0 % on a scale-out
  (conservative both ways); if that flips the direction or lands in the tolerance: no change;
* a pool-total metric (queue length) uses HPA's External AverageValue rule:
  ``ceil(total / target)``.

Each function returns the raw recommendation and a reason; stabilization and rate limits are
applied by ``senex_scale.core.limits``. This is the ``default`` mode of a target rule, with our
warm-up and guards; ``mode = "hpa"`` is the HPA exactly (``senex_scale.core.hpa``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def average_replicas(
    current: int,
    ready_values: Mapping[str, float],
    missing: int,
    unready: int,
    target: float,
    tolerance_out: float,
    tolerance_in: float,
) -> tuple[int, str]:
    """HPA recommendation for a per-instance average target.

    ``ready_values``: metric of each warm, ready instance that has one; ``missing``: warm
    instances without a metric; ``unready``: instances starting or warming up.
    """
    if not ready_values:
        return current, "no ready instance has a sample"
    ratio = sum(ready_values.values()) / len(ready_values) / target
    tolerance = tolerance_out if ratio > 1 else tolerance_in
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if abs(1.0 - ratio) <= tolerance:
            return current, f"ratio {ratio:.2f} within tolerance {tolerance:g}"
        return math.ceil(ratio * len(ready_values)), f"ratio {ratio:.2f}"
    total = sum(ready_values.values())
    count = len(ready_values)
    if missing and ratio < 1.0:
        total += missing * target  # missing on a scale-in: assume 100 % of target
        count += missing
    elif missing and ratio > 1.0:
        count += missing  # missing on a scale-out: assume 0 %
    if scale_up_with_unready:
        count += unready  # unready instances count as 0 % on a scale-out
    new_ratio = total / count / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current, (
            f"ratio {ratio:.2f}, {new_ratio:.2f} counting {missing} without samples "
            f"and {unready if scale_up_with_unready else 0} warming: no change"
        )
    desired = math.ceil(new_ratio * count)
    if (new_ratio < 1.0 and desired > current) or (new_ratio > 1.0 and desired < current):
        return current, f"ratio {new_ratio:.2f} would move against its direction: no change"
    return desired, f"ratio {new_ratio:.2f} counting {missing} without samples, {unready} warming"


def total_replicas(
    current: int, total: float, target: float, tolerance_out: float, tolerance_in: float
) -> tuple[int, str]:
    """HPA recommendation for a pool total against a per-instance target (External AverageValue)."""
    if current <= 0:
        return math.ceil(total / target), f"total {total:g} / {target:g} per instance"
    ratio = total / (target * current)
    tolerance = tolerance_out if ratio > 1 else tolerance_in
    if abs(1.0 - ratio) <= tolerance:
        return current, f"ratio {ratio:.2f} within tolerance {tolerance:g}"
    return math.ceil(total / target), f"total {total:g} / {target:g} per instance"
