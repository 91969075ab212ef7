"""Ask every source for every metric a policy references: for ``senex-scale metrics`` and the
controller's tick.

Sources are built on first use and kept; a source that cannot be built (bad settings, a
driver not installed) or that fails a query turns into an error reading for its rules, never
an exception out of ``collect``: one broken source must not hide the others. Two rules with
the same metric on the same pool cost one query.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from senex_scale.core.state import Sample
from senex_scale.errors import SenexError, SourceError
from senex_scale.policy.models import ActionRule, Policy, TargetRule, ThresholdRule
from senex_scale.sources.base import MetricRequest, MetricSource, build_source


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
            assert isinstance(rule, TargetRule)
            window = 0.0
        pool = policy.pools.get(rule.pool) if rule.pool is not None else None
        hosts = tuple(
            policy.hosts[h.name].address
            for h in (pool.hosts if pool is not None else ())
            if h.name in policy.hosts
        )
        out.append(MetricRequest(rule.name, rule.metric, rule.pool, pool, window, hosts))
    return out


class Collector:
    """Queries the sources of a policy; reuse one across ticks to keep connections."""

    def __init__(
        self,
        policy: Policy,
        build: Callable[[str, object], MetricSource] | None = None,
    ) -> None:
        self.policy = policy
        self._build = build
        self._sources: dict[str, MetricSource | SenexError] = {}

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

    def collect(self, now: float) -> list[Reading]:
        """A reading per enabled rule, in policy order."""
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
                self._read(request, reading, now)
                done[key] = reading
            readings.append(reading)
        return readings

    def _read(self, request: MetricRequest, reading: Reading, now: float) -> None:
        source = self.source(request.metric.source)
        if isinstance(source, SenexError):
            reading.error, reading.temporary = f"cannot build source: {source}", False
            return
        try:
            reading.samples = source.query(request, now)
        except SourceError as exc:
            reading.error, reading.temporary = str(exc), exc.temporary
        except SenexError as exc:
            reading.error, reading.temporary = str(exc), False

    def close(self) -> None:
        """Close every source that was built."""
        for source in self._sources.values():
            if not isinstance(source, SenexError):
                # closing must not mask the real outcome of the run
                with contextlib.suppress(Exception):
                    source.close()
