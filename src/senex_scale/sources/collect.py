"""Ask every source for every metric a policy references: for ``senex-scale metrics`` and the
controller's tick.

Sources are built on first use and kept; a source that cannot be built (bad settings, a
driver not installed) or that fails a query turns into an error reading for its rules, never
an exception out of ``collect``: one broken source must not hide the others. Two rules with
the same metric on the same pool cost one query.

A source that asks the instances themselves (``needs_targets``: ``scrape``) is given the
pool's running instances and their addresses (``MetricRequest.targets``), from the caller's
listing (``collect(now, running=...)``) or else from the pool's runtime, asked once per
collect; it never guesses them from the port range.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from senex_scale.core.state import Sample
from senex_scale.errors import PermanentError, SenexError, SourceError
from senex_scale.policy.models import (
    ActionRule,
    Host,
    Policy,
    Pool,
    PredictiveRule,
    TargetRule,
    ThresholdRule,
)
from senex_scale.sources.base import MetricRequest, MetricSource, build_source

if TYPE_CHECKING:  # runtimes are imported when a source needs a pool's running instances
    from senex_scale.runtimes.base import Runtime


@dataclass
class Reading:
    """What one rule's metric read this time: samples, or why there are none."""

    rule: str
    source: str
    pool: str | None
    query: str
    signal: str | None
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    temporary: bool | None = None


def requests_for(policy: Policy) -> list[MetricRequest]:
    """One request per enabled rule, with its pool and longest window."""
    out = []
    for rule in policy.rules:
        if not rule.enabled:
            continue
        if isinstance(rule, ThresholdRule):
            window = max(c.for_ for c in (rule.scale_out, rule.scale_in) if c is not None)
        elif isinstance(rule, ActionRule):
            window = rule.when.for_
        else:
            assert isinstance(rule, TargetRule | PredictiveRule)
            window = 0.0
        pool = policy.pools.get(rule.pool) if rule.pool is not None else None
        hosts = tuple(
            policy.hosts[h.name].address
            for h in (pool.hosts if pool is not None else ())
            if h.name in policy.hosts
        )
        out.append(MetricRequest(rule.name, rule.metric, rule.pool, pool, window, hosts))
    return out


Targets = Sequence[tuple[str, str]]
"""``(instance, "host:port")`` of a pool's running instances."""


class RuntimeLister:
    """The running instances of a pool and their addresses, asked from its runtime (built
    on first use with ``build``, default ``runtimes.build_runtime``, and kept)."""

    def __init__(
        self,
        policy: Policy,
        build: Callable[[str, Pool, Mapping[str, Host]], Runtime] | None = None,
    ) -> None:
        self.policy = policy
        self._build = build
        self._runtimes: dict[str, Runtime] = {}

    def __call__(self, pool_name: str) -> list[tuple[str, str]]:
        from senex_scale.runtimes.base import UnitState, address_of, build_runtime

        pool = self.policy.pools[pool_name]
        if pool_name not in self._runtimes:
            build = self._build or build_runtime
            self._runtimes[pool_name] = build(pool_name, pool, self.policy.hosts)
        runtime = self._runtimes[pool_name]
        return [
            (str(unit.n), address_of(runtime, pool_name, pool, unit.n))
            for unit in runtime.list()
            if unit.state is UnitState.RUNNING
        ]


class Collector:
    """Queries the sources of a policy; reuse one across ticks to keep connections.

    ``lister``: a pool's running instances for the sources that need them (default: ask the
    pool's runtime, ``RuntimeLister``)."""

    def __init__(
        self,
        policy: Policy,
        build: Callable[[str, object], MetricSource] | None = None,
        lister: Callable[[str], Targets] | None = None,
    ) -> None:
        self.policy = policy
        self._build = build
        self._sources: dict[str, MetricSource | SenexError] = {}
        self._lister = lister or RuntimeLister(policy)

    def source(self, name: str) -> MetricSource | SenexError:
        """The built source ``name``, or the error that stopped it being built."""
        if name not in self._sources:
            spec = self.policy.sources[name]
            try:
                self._sources[name] = (
                    self._build(name, spec) if self._build else build_source(name, spec)
                )
            except SenexError as exc:
                self._sources[name] = exc
        return self._sources[name]

    def collect(self, now: float, running: Mapping[str, Targets] | None = None) -> list[Reading]:
        """A reading per enabled rule, in policy order. ``running``: each pool's running
        instances as the caller just listed them (pools not in it are asked of the lister)."""
        targets: dict[str, Targets | SenexError] = dict(running or {})
        readings: list[Reading] = []
        done: dict[tuple[str, str, str, str | None, float], Reading] = {}
        for request in requests_for(self.policy):
            metric = request.metric
            reading = Reading(
                request.rule, metric.source, request.pool_name, metric.query, metric.signal
            )
            # the window matters to sources that push it down (Prometheus min_over_time)
            key = (metric.source, metric.query, metric.aggregate, request.pool_name, request.window)
            if key in done:
                first = done[key]
                reading.samples, reading.error = list(first.samples), first.error
                reading.temporary = first.temporary
            else:
                self._read(request, reading, now, targets)
                done[key] = reading
            readings.append(reading)
        return readings

    def _read(
        self,
        request: MetricRequest,
        reading: Reading,
        now: float,
        targets: dict[str, Targets | SenexError],
    ) -> None:
        source = self.source(request.metric.source)
        if isinstance(source, SenexError):
            reading.error, reading.temporary = f"cannot build source: {source}", False
            return
        if getattr(source, "needs_targets", False) and request.pool_name is not None:
            listed = self._targets(request.pool_name, targets)
            if isinstance(listed, SenexError):
                reading.error = f"cannot list the running instances of pool {request.pool_name}: "
                reading.error += str(listed)
                reading.temporary = not isinstance(listed, PermanentError)
                return
            if listed is not None:
                request = dataclasses.replace(request, targets=tuple(listed))
        try:
            reading.samples = source.query(request, now)
        except SourceError as exc:
            reading.error, reading.temporary = str(exc), exc.temporary
        except SenexError as exc:
            reading.error, reading.temporary = str(exc), False

    def _targets(
        self, pool: str, cache: dict[str, Targets | SenexError]
    ) -> Targets | SenexError | None:
        """The running instances of ``pool`` (listed once per collect), the error that kept
        them from being listed, or None when the pool has no runtime to list them."""
        spec = self.policy.pools.get(pool)
        if spec is None or (spec.runtime is None and not spec.hosts):
            return None
        if pool not in cache:
            try:
                cache[pool] = list(self._lister(pool))
            except SenexError as exc:
                cache[pool] = exc
        return cache[pool]

    def close(self) -> None:
        """Close every source that was built."""
        for source in self._sources.values():
            if not isinstance(source, SenexError):
                # closing must not mask the real outcome of the run
                with contextlib.suppress(Exception):
                    source.close()
