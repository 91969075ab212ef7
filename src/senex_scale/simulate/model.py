"""The capacity model: turns demand (a trace) and supply (serving instances) into metrics.

One ``PoolModel`` per pool, configurable in a TOML file (``senex-scale simulate --model``)::

    [pools.django]                 # a web pool (Django/Daphne behind the balancer)
    rps_per_instance = 60          # requests/s one instance serves at 100 % CPU
    ws_per_instance = 2500         # WebSocket connections one instance holds at most
    ws_cpu_per_1000 = 8            # CPU % one instance spends per 1000 open connections
    base_cpu = 3                   # CPU % of an idle instance
    startup = "40s"                # start -> healthy (then it serves)
    drain = "20s"                  # drain -> stopped
    cpu_noise = 3                  # std dev of per-tick CPU noise, percentage points
    target_utilisation = 0.8       # d(t) keeps every instance at or below this

    [pools.celery-trading]         # a worker pool (its queues come from the policy)
    tasks_per_minute = 120         # tasks one worker completes per minute
    queue_wait_slo = "60s"         # a task waiting longer than this is an SLO violation

Web pools: load in "instances of work" is ``rps / rps_per_instance + ws * ws_cpu_per_1000 /
1e5``; per serving instance ``cpu = 100 * load / n + base_cpu (+ noise)``, capped at 100.
The SLO is violated while utilisation is above 100 % or connections per instance are above
``ws_per_instance``. Demand ``d(t)`` is the fewest instances that keep utilisation at or below
``target_utilisation`` and connections within capacity.

Worker pools: a fluid queue ``q += (arrivals - n * tasks_per_minute) * dt / 60`` (never < 0);
``busy = 100 * min(1, arrivals / capacity)`` (100 while a backlog exists); the SLO is violated
while the wait ``q / capacity`` exceeds ``queue_wait_slo``. ``d(t) = ceil(arrivals /
(tasks_per_minute * target_utilisation))``.

Shared signals: PostgreSQL CPU grows with requests and tasks, Redis memory with connections,
disk stays flat; they feed the matrix's notify/runbook rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from senex_scale.errors import InputError
from senex_scale.policy.loading import format_errors, load_toml, read_input
from senex_scale.policy.models import Duration, Policy
from senex_scale.simulate.trace import Trace

Array = npt.NDArray[np.float64]


class PoolModel(BaseModel):
    """Capacity of one pool's instances (see the module docstring for the equations).

    Numbers are strict and finite, as in the policy: ``"60"``, ``true`` or ``inf`` is refused
    by its path, not converted (an infinite noise or capacity would reach the simulation).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rps_per_instance: StrictFloat = Field(default=60.0, gt=0)
    ws_per_instance: StrictFloat = Field(default=2500.0, gt=0)
    ws_cpu_per_1000: StrictFloat = Field(default=8.0, ge=0)
    base_cpu: StrictFloat = Field(default=3.0, ge=0, lt=100)
    tasks_per_minute: StrictFloat = Field(default=120.0, gt=0)
    queue_wait_slo: Duration = 60.0
    startup: Duration = 40.0
    drain: Duration = 20.0
    cpu_noise: StrictFloat = Field(default=3.0, ge=0)
    target_utilisation: StrictFloat = Field(default=0.8, gt=0, le=1)


class SimModel(BaseModel):
    """Capacity models by pool name; pools not named get the defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seed: StrictInt = 7
    pools: dict[str, PoolModel] = {}

    def pool(self, name: str) -> PoolModel:
        """The model of pool ``name``."""
        return self.pools.get(name) or PoolModel()


MAX_MODEL_BYTES = 1 << 20
"""Largest capacity-model file read (1 MiB): a model is a few lines per pool."""


def load_model(path: str | Path | None) -> SimModel:
    """Read a capacity-model TOML file (None: all defaults); ``InputError`` names the file.

    Read like a policy (``read_input`` and ``load_toml``): a directory, a missing file, bytes
    that are not UTF-8, a file over ``MAX_MODEL_BYTES`` or nesting too deep is one problem
    naming the file; field problems are listed one per line with their dotted paths.
    """
    if path is None:
        return SimModel()
    try:
        data = load_toml(read_input(Path(path), limit=MAX_MODEL_BYTES))
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    try:
        return SimModel.model_validate(data)
    except ValidationError as exc:
        problems = format_errors(exc, SimModel)
    if len(problems) == 1:
        raise InputError(f"{path}: {problems[0]}")
    body = "\n".join(f"  {p}" for p in problems)
    raise InputError(f"{path}: {len(problems)} problems\n{body}")


class PoolLoad:
    """A pool's demand on the simulation grid, and the metrics for a given supply."""

    def __init__(
        self, name: str, kind: str, queues: tuple[str, ...], model: PoolModel, trace: Trace
    ):
        self.name = name
        self.kind = kind
        self.model = model
        n = len(trace.times)
        zeros: Array = np.zeros(n)
        if kind == "web":
            self.rps = trace.columns.get("http_rps", zeros)
            self.ws = trace.columns.get("ws_connections", zeros)
            self.work = self.rps / model.rps_per_instance + self.ws * model.ws_cpu_per_1000 / 1e5
            headroom = model.target_utilisation - model.base_cpu / 100
            need = np.maximum(
                np.ceil(self.work / headroom - 1e-9), np.ceil(self.ws / model.ws_per_instance)
            )
            self.arrivals = zeros
        else:
            self.rps = self.ws = self.work = zeros
            self.arrivals = sum(
                (trace.columns[f"tasks_{q}"] for q in queues if f"tasks_{q}" in trace.columns),
                zeros,
            )
            per = model.tasks_per_minute * model.target_utilisation
            need = np.ceil(self.arrivals / per - 1e-9)
        self.demand: Array = np.maximum(need, 1.0)
        # Python lists: per-tick scalar access in the simulation loop is faster than numpy's.
        self.rps_l: list[float] = self.rps.tolist()
        self.ws_l: list[float] = self.ws.tolist()
        self.work_l: list[float] = self.work.tolist()
        self.arrivals_l: list[float] = self.arrivals.tolist()

    def violations(self, serving: Array, step: float) -> npt.NDArray[np.bool_]:
        """Per tick: is the SLO violated with ``serving`` instances? (vectorised)"""
        m = self.model
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.kind == "web":
                util = np.where(serving > 0, self.work / serving + m.base_cpu / 100, np.inf)
                per = np.where(serving > 0, self.ws / serving, np.inf)
                loaded = (self.work > 0) | (self.ws > 0)
                return ((util > 1.0) | (per > m.ws_per_instance)) & (loaded | (serving > 0))
            capacity = serving * m.tasks_per_minute
            queue = lindley(self.arrivals, capacity, step)
            wait = np.where(capacity > 0, queue / capacity * 60.0, np.inf)
            busy = (queue > 0) | (self.arrivals > 0)
            result: npt.NDArray[np.bool_] = (wait > m.queue_wait_slo) & busy
            return result


def lindley(arrivals: Array, capacity: Array, step: float) -> Array:
    """Queue length per tick: q[k] = max(0, q[k-1] + (arrivals[k] - capacity[k]) * step / 60).

    Lindley's recursion in closed form: with S the running sum of the increments,
    q[k] = S[k] - min(0, min(S[0..k])). Vectorised, so a month of ticks costs milliseconds.
    """
    increments = (arrivals - capacity) * step / 60.0
    total = np.cumsum(increments)
    floor = np.minimum.accumulate(np.minimum(total, 0.0))
    queue: Array = np.maximum(total - floor, 0.0)
    return queue


def shared_signals(loads: list[PoolLoad], k: int) -> dict[str, float]:
    """Stack-wide signals at index ``k``: PostgreSQL CPU, Redis memory and disk use (%)."""
    rps = sum(p.rps_l[k] for p in loads)
    ws = sum(p.ws_l[k] for p in loads)
    tasks = sum(p.arrivals_l[k] for p in loads)
    return {
        "db_cpu": min(100.0, 5.0 + 0.12 * rps + 0.02 * tasks),
        "memory": min(100.0, 35.0 + ws / 250.0),
        "disk": 55.0,
    }


def shared_block(loads: list[PoolLoad], start: int, end: int) -> dict[str, Array]:
    """``shared_signals`` for ticks ``start`` to ``end - 1`` at once (the same operations in
    the same order: the same values to the bit)."""
    rps: Array | float = 0.0
    ws: Array | float = 0.0
    tasks: Array | float = 0.0
    for p in loads:
        rps = rps + p.rps[start:end]
        ws = ws + p.ws[start:end]
        tasks = tasks + p.arrivals[start:end]
    return {
        "db_cpu": np.minimum(100.0, 5.0 + 0.12 * np.asarray(rps) + 0.02 * np.asarray(tasks)),
        "memory": np.minimum(100.0, 35.0 + np.asarray(ws) / 250.0),
        "disk": np.full(end - start, 55.0),
    }


def pool_loads(policy: Policy, model: SimModel, trace: Trace) -> list[PoolLoad]:
    """One ``PoolLoad`` per pool of ``policy``, on ``trace``'s grid."""
    return [
        PoolLoad(name, pool.kind, pool.queues, model.pool(name), trace)
        for name, pool in policy.pools.items()
    ]


FaultKind = Literal["outlier", "dropout", "stuck"]


@dataclass(frozen=True)
class MetricFaults:
    """Metrics that misbehave, as time intervals ``[start, end)`` (the suite's faulty traces).

    ``outlier``: every metric multiplied by ``factor`` (percentages capped at 100);
    ``dropout``: no metric at all (a source outage); ``stuck``: every metric frozen at its
    value just before the interval. The load itself, and so the scores, are unchanged.
    """

    intervals: tuple[tuple[float, float, FaultKind, float], ...] = ()

    def masks(self, times: list[float]) -> tuple[list[float], list[bool], list[bool]]:
        """Per tick: (factor, dropped, stuck)."""
        grid = np.asarray(times)
        factor = np.ones(len(times))
        dropped = np.zeros(len(times), dtype=bool)
        stuck = np.zeros(len(times), dtype=bool)
        for start, end, kind, value in self.intervals:
            inside = (grid >= start) & (grid < end)
            if kind == "outlier":
                factor[inside] *= value
            elif kind == "dropout":
                dropped |= inside
            else:
                stuck |= inside
        return factor.tolist(), dropped.tolist(), stuck.tolist()


PERCENT_SIGNALS = frozenset({"cpu", "busy", "memory", "disk", "db_cpu"})


def faulty(metrics: dict[str, float], factor: float) -> dict[str, float]:
    """``metrics`` as an outlier reports them: multiplied, percentages capped at 100."""
    return {
        k: min(100.0, v * factor) if k in PERCENT_SIGNALS else v * factor
        for k, v in metrics.items()
    }
