"""What the core is given: instances, metric samples, source errors and the controller's memory.

All times are float epoch seconds (UTC). These are plain frozen dataclasses, not pydantic
models: the simulator builds one observation per simulated tick, so they must be cheap.
The JSON shape of an observation (``senex-scale plan --observe``) is parsed in
``senex_scale.observe``.

Instance lifecycle as the core sees it::

    starting --healthy--> ready --(warm-up passed)--> counted as capacity
        |                   |
        +---- never healthy: stopped by the controller (a failed action)
                            +--drain--> draining --idle or drain_timeout--> stopped (gone)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple


class InstanceState(StrEnum):
    """Lifecycle state of one instance."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance of a pool (``django@3``): its id, state and start time."""

    id: str
    state: InstanceState = InstanceState.READY
    started_at: float | None = None
    """When it was started; None when unknown (found running at start-up: treated as warm)."""
    ready_at: float | None = None
    """When it last became ready; None when unknown (long ago). Only the HPA mode reads it."""

    def warm(self, now: float, warmup: float) -> bool:
        """Ready and past its warm-up, so it counts as capacity."""
        if self.state is not InstanceState.READY:
            return False
        return self.started_at is None or now - self.started_at >= warmup


class Sample(NamedTuple):
    """One metric value at one time, for a pool (instance None) or one instance.

    A NamedTuple: the loop and the simulator make one per rule and instance every tick.
    """

    at: float
    value: float
    instance: str | None = None


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """A completed change of a pool's instance count."""

    at: float
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class PoolMemory:
    """What the controller remembers about one pool between ticks (persisted)."""

    events: tuple[ScaleEvent, ...] = ()
    recommendations: Mapping[str, tuple[tuple[float, int], ...]] = field(default_factory=dict)
    """Per target rule: (time, raw HPA recommendation), for the scale-in stabilization window."""

    def last_scale(self, direction: str) -> float | None:
        """Time of the latest scale-out ("out"), scale-in ("in") or either ("any")."""
        for event in reversed(self.events):
            if (
                direction == "any"
                or (direction == "out" and event.after > event.before)
                or (direction == "in" and event.after < event.before)
            ):
                return event.at
        return None


@dataclass(frozen=True, slots=True)
class Memory:
    """The controller's memory across ticks: per pool, and last firing per action rule."""

    pools: Mapping[str, PoolMemory] = field(default_factory=dict)
    actions: Mapping[str, float] = field(default_factory=dict)

    def pool(self, name: str) -> PoolMemory:
        """Memory of pool ``name`` (empty if none yet)."""
        return self.pools.get(name) or _EMPTY_POOL

    def with_scale(self, pool: str, at: float, before: int, after: int, keep: float) -> Memory:
        """A copy that records a completed scale event (events older than ``keep`` s dropped)."""
        old = self.pool(pool)
        kept = (e for e in old.events if at - e.at <= keep)
        events = (*kept, ScaleEvent(at, before, after))
        pools = dict(self.pools)
        pools[pool] = replace(old, events=events)
        return replace(self, pools=pools)

    def with_action(self, rule: str, at: float) -> Memory:
        """A copy that records that action rule ``rule`` fired at ``at``."""
        actions = dict(self.actions)
        actions[rule] = at
        return replace(self, actions=actions)


_EMPTY_POOL = PoolMemory()


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the core reads in one tick.

    ``samples`` is keyed by rule name and must be sorted by time; only the recent part
    (the longest ``for`` window plus the gap bound) is needed. ``errors`` names the rules
    whose source failed this tick: their metric is missing, never zero.
    """

    instances: Mapping[str, Sequence[Instance]]
    samples: Mapping[str, Sequence[Sample]] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)
    memory: Memory = field(default_factory=Memory)
    desired: Mapping[str, int] = field(default_factory=dict)
    """Per pool, the count last asked for when it differs from the live instances (a scale
    still in progress); the HPA mode scales from it, as the HPA from ``spec.replicas``."""
