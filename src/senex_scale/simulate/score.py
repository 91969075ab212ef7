r"""Score one simulated run with the SPEC Research Group elasticity metrics.

A run is two series sampled on the same regular grid of step :math:`\Delta t` seconds,
``n`` samples long, each sample standing for the interval that follows it (zero-order hold),
so the run lasts :math:`T = n\,\Delta t`:

* demand :math:`d_t` — resource units (here: instances) needed to meet the SLO, :math:`d_t > 0`;
* supply :math:`s_t` — instances actually serving, :math:`s_t \ge 0`.

Formulas, as computed here (:math:`x^+ = \max(x, 0)`, sums over all ``n`` samples)::

    under-provisioning accuracy   θ_U [%]  = 100/T · Σ (d_t − s_t)⁺ / d_t · Δt
    over-provisioning accuracy    θ_O [%]  = 100/T · Σ (s_t − d_t)⁺ / d_t · Δt
    under-provisioning timeshare  τ_U [%]  = 100/T · Σ [d_t > s_t] · Δt
    over-provisioning timeshare   τ_O [%]  = 100/T · Σ [s_t > d_t] · Δt
    jitter                        j  [1/h] = (E_S − E_D) / T_h,   T_h = T / 3600

E_S is the number of supply adaptations (consecutive samples with :math:`s_{t+1} \ne s_t`),
E_D the number of demand adaptations (see deviation 3). Negative jitter: the policy adapts less
often than demand changes (too inert); positive: it adapts more often (oscillates).

Sources:

* N. Herbst, S. Kounev, A. Weber, H. Groenda. *BUNGEE: An Elasticity Benchmark for
  Self-Adaptive IaaS Cloud Environments.* SEAMS 2015, doi:10.1109/SEAMS.2015.23 — introduces
  accuracy, timeshare and jitter :math:`j = (E_S - E_D)/T`. There the accuracy is the
  un-normalised under/over-provisioned area per time, in resource units.
* N. Herbst et al. (SPEC RG Cloud Working Group). *Ready for Rain? A View from SPEC Research
  on the Future of Cloud Metrics.* Technical report SPEC-RG-2016-01, 2016; and N. Herbst et al.
  *Quantifying Cloud Performance and Dependability: Taxonomy, Metric Design, and Emerging
  Challenges.* ACM TOMPECS 3(4), 2018, doi:10.1145/3236332 — the demand-normalised percentage
  forms of θ_U, θ_O, τ_U, τ_O used above (with :math:`\max(d_t, \varepsilon)` as divisor and the
  timeshare written as :math:`(\operatorname{sgn}(d_t - s_t))^+`).

Deviations from those sources:

1. The divisor is :math:`d_t` itself, not :math:`\max(d_t, \varepsilon)`: a non-positive demand
   is rejected with ``ValueError`` naming the first offending index.
2. Demand may be fractional (2.4 instances of work). BUNGEE's demand is the minimal *integer*
   number of resource units, so with fractional demand even an ideal integer supply shows some
   over-provisioning (d = 2.4, s = 3 gives 25 % over-provisioning accuracy, 100 % timeshare).
3. Demand adaptations E_D are counted on the integer demand :math:`\lceil d_t \rceil` (with a
   1e-9 tolerance against float noise), i.e. the number of times the instance count the SLO
   needs changes. For integer demand this is exactly the published definition; counting every
   change of a fractional series would make E_D roughly the number of samples and jitter
   meaningless.
4. Jitter is reported per hour (T in hours); the papers leave the time unit to the user.

Further per-run figures (not SPEC RG metrics):

* ``instance_hours`` = Σ s_t · Δt / 3600;
* ``actions`` — scaling actions as counted by the caller (one action may move several
  instances); by default the number of supply changes, E_S;
* ``slo_violation_minutes`` = Σ v_t · Δt / 60 for the caller's violation mask ``v`` (from the
  capacity model); by default :math:`v_t = [d_t > s_t]`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import numpy.typing as npt

__all__ = ["FIELDS", "Score", "describe", "score"]

# Tolerance when rounding demand up to whole instances for counting demand adaptations.
_CEIL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Score:
    """The scores of one simulated run; see the module docstring for the formulas."""

    under_accuracy: float
    over_accuracy: float
    under_timeshare: float
    over_timeshare: float
    jitter: float
    instance_hours: float
    actions: int
    slo_violation_minutes: float

    def as_dict(self) -> dict[str, float | int]:
        """Return the scores keyed by field name, in field order."""
        return asdict(self)


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Score))

_DESCRIPTIONS: dict[str, str] = {
    "under_accuracy": "average share of demand not covered, % (lower is better)",
    "over_accuracy": "average surplus supply relative to demand, % (lower is better)",
    "under_timeshare": "share of time with too few instances, % (lower is better)",
    "over_timeshare": "share of time with more instances than needed, % (lower is better)",
    "jitter": "supply minus demand adaptations per hour (0 ideal; < 0 too inert, > 0 oscillating)",
    "instance_hours": "instance-hours paid for over the run (lower is cheaper)",
    "actions": "number of scaling actions taken (lower is calmer)",
    "slo_violation_minutes": "minutes during which the SLO was violated (lower is better)",
}


def describe(field: str) -> str:
    """Return a one-line human explanation of a score field (for report tooltips)."""
    try:
        return _DESCRIPTIONS[field]
    except KeyError:
        raise ValueError(f"unknown score field {field!r}; expected one of {FIELDS}") from None


def _series(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return ``values`` as a 1-D finite float array, or raise ValueError naming ``name``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not numeric ({exc})") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: must not be empty")
    bad = ~np.isfinite(array)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{name}: non-finite value {array[index]} at index {index}")
    return array


def _first(mask: npt.NDArray[np.bool_]) -> int | None:
    """Return the first index where ``mask`` is true, or None."""
    return int(np.argmax(mask)) if mask.any() else None


def _mask(violation: npt.ArrayLike, n: int) -> npt.NDArray[np.bool_]:
    """Return ``violation`` as a 1-D boolean array of length ``n``, or raise ValueError."""
    array = np.asarray(violation)
    if array.ndim != 1:
        raise ValueError(f"violation: expected a 1-D array, got shape {array.shape}")
    if array.size != n:
        raise ValueError(f"violation: length {array.size} differs from demand length {n}")
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind not in "iuf":
        raise ValueError(f"violation: expected a boolean mask, got dtype {array.dtype}")
    index = _first((array != 0) & (array != 1))
    if index is not None:
        raise ValueError(f"violation: expected booleans or 0/1, got {array[index]} at {index}")
    result: npt.NDArray[np.bool_] = array != 0
    return result


def score(
    demand: npt.ArrayLike,
    supply: npt.ArrayLike,
    step: float,
    *,
    actions: int | None = None,
    violation: npt.ArrayLike | None = None,
) -> Score:
    """Score one run: ``demand`` and ``supply`` in instances, sampled every ``step`` seconds.

    ``actions`` is the caller's count of scaling actions (default: the number of supply
    changes); ``violation`` a boolean SLO-violation mask per sample (default: demand > supply).
    Raise ValueError, naming the argument, on invalid input.
    """
    d = _series("demand", demand)
    s = _series("supply", supply)
    n = d.size
    if s.size != n:
        raise ValueError(f"supply: length {s.size} differs from demand length {n}")
    if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)):
        raise ValueError(f"step: expected a number of seconds, got {step!r}")
    dt = float(step)
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"step: must be a finite number of seconds > 0, got {step!r}")
    index = _first(d <= 0)
    if index is not None:
        raise ValueError(f"demand: must be > 0, got {d[index]} at index {index}")
    index = _first(s < 0)
    if index is not None:
        raise ValueError(f"supply: must be >= 0, got {s[index]} at index {index}")
    if actions is not None and (
        isinstance(actions, bool) or not isinstance(actions, (int, np.integer)) or actions < 0
    ):
        raise ValueError(f"actions: expected an int >= 0, got {actions!r}")
    mask = d > s if violation is None else _mask(violation, n)

    gap = d - s  # > 0: under-provisioned, < 0: over-provisioned
    # (100 / T) · Σ x_t · Δt with T = n · Δt is simply 100 · mean(x).
    under_accuracy = 100.0 * float(np.mean(np.maximum(gap, 0.0) / d))
    over_accuracy = 100.0 * float(np.mean(np.maximum(-gap, 0.0) / d))
    under_timeshare = 100.0 * float(np.count_nonzero(gap > 0)) / n
    over_timeshare = 100.0 * float(np.count_nonzero(gap < 0)) / n

    supply_changes = int(np.count_nonzero(np.diff(s)))
    demand_units = np.ceil(d - _CEIL_TOLERANCE)
    demand_changes = int(np.count_nonzero(np.diff(demand_units)))
    hours = n * dt / 3600.0
    jitter = (supply_changes - demand_changes) / hours

    return Score(
        under_accuracy=under_accuracy,
        over_accuracy=over_accuracy,
        under_timeshare=under_timeshare,
        over_timeshare=over_timeshare,
        jitter=jitter,
        instance_hours=float(np.sum(s)) * dt / 3600.0,
        actions=supply_changes if actions is None else int(actions),
        slo_violation_minutes=float(np.count_nonzero(mask)) * dt / 60.0,
    )
