"""Collect: what the tick knows before it decides. The rules' readings go into the store (a
failed source is an error per rule, never a zero); each pool's instances come from its
runtime and balancer, with the drift between the two that live reconcile repairs.

A pool whose instances cannot be listed is *broken* this tick: it is never acted on, and
its count is unknown (never 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from senex_scale.balancers.base import Member, MemberState
from senex_scale.controller.context import Context
from senex_scale.controller.probe import Prober
from senex_scale.core.state import Instance, InstanceState
from senex_scale.errors import SenexError
from senex_scale.runtimes.base import RuntimeInstance, UnitState
from senex_scale.sources.collect import Reading


@dataclass
class Drift:
    """Where a pool's balancer and runtime disagree (seen in one listing)."""

    dead_members: list[int] = field(default_factory=list)
    """Members whose instance is not running: the balancer points at nothing."""
    lost_members: list[int] = field(default_factory=list)
    """Instances running (not starting) that the balancer does not know."""
    sick: list[int] = field(default_factory=list)
    """Serving members that failed their health probes (frozen, deadlocked)."""
    recovered: list[int] = field(default_factory=list)
    """Members taken out for their health that pass their probes again."""

    def __bool__(self) -> bool:
        return bool(self.dead_members or self.lost_members or self.sick or self.recovered)

    def describe(self) -> str:
        parts = []
        if self.dead_members:
            parts.append(f"members not running {self.dead_members}")
        if self.lost_members:
            parts.append(f"running, not in the balancer {self.lost_members}")
        if self.sick:
            parts.append(f"failing their health probes {self.sick}")
        if self.recovered:
            parts.append(f"healthy again {self.recovered}")
        return "; ".join(parts)


@dataclass
class Listing:
    """Every pool's instances as the core sees them, pools that could not be listed, and
    the drift found."""

    instances: dict[str, list[Instance]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    drift: dict[str, Drift] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.instances.items()}


def ingest(ctx: Context, readings: list[Reading]) -> tuple[dict[str, str], dict[str, str]]:
    """Store the samples; per rule and per source, the errors of this tick."""
    errors: dict[str, str] = {}
    source_errors: dict[str, str] = {}
    for reading in readings:
        if reading.error is not None:
            errors[reading.rule] = reading.error
            source_errors[reading.source] = reading.error
            ctx.metrics.source_errors.labels(reading.source).inc()
            ctx.log.warning(
                "source failed", source=reading.source, rule=reading.rule, error=reading.error
            )
        elif reading.samples:
            ctx.store.add_samples(reading.rule, reading.samples)
    return errors, source_errors


def list_instances(ctx: Context, prober: Prober | None = None) -> Listing:
    """Core instances per pool from its runtime and balancer, and the drift between them
    (members failing their health probes among it)."""
    listing = Listing()
    taken_out = ctx.store.get("sick", {})
    for name, handle in ctx.pools.items():
        if handle.runtime is None:
            listing.broken[name] = handle.error or "no runtime"
            listing.instances[name] = []
            continue
        try:
            units = handle.runtime.list()
            members = {m.n: m for m in handle.balancer.members()} if handle.balancer else None
        except SenexError as exc:
            listing.broken[name] = f"cannot list instances: {exc}"
            listing.instances[name] = []
            continue
        sick = prober.sick(name) if prober is not None and members is not None else set()
        # a sick member stops counting once the repair has taken it out (then it is not
        # READY in the balancer); never before, so that when every probe fails at once
        # (overload) the core does not see a pool of 0 and start a crowd of new instances
        listing.instances[name] = core_instances(units, members)
        if members is not None:
            drift = drift_of(units, members)
            drift.sick = sorted(
                n for n in sick if n in members and members[n].state is MemberState.READY
            )
            if prober is not None:
                drift.recovered = sorted(
                    n for n in taken_out.get(name, []) if n in members and prober.healthy(name, n)
                )
            listing.drift[name] = drift
    return listing


def core_instances(
    units: list[RuntimeInstance], members: dict[int, Member] | None
) -> list[Instance]:
    """Running instances as the core counts them: ready (serving), starting (not in the
    balancer yet) or draining (in the balancer, taking no new work, e.g. out for its health)."""
    items = []
    for unit in units:
        if unit.state not in (UnitState.RUNNING, UnitState.STARTING):
            continue
        state = InstanceState.READY
        if unit.state is UnitState.STARTING:
            state = InstanceState.STARTING
        elif members is not None:
            member = members.get(unit.n)
            if member is None:
                state = InstanceState.STARTING
            elif member.state is not MemberState.READY:
                state = InstanceState.DRAINING
        items.append(Instance(str(unit.n), state, unit.started_at))
    return items


def drift_of(units: list[RuntimeInstance], members: dict[int, Member]) -> Drift:
    """Members without a running instance; running instances without a member."""
    live = {u.n for u in units if u.state in (UnitState.RUNNING, UnitState.STARTING)}
    running = {u.n for u in units if u.state is UnitState.RUNNING}
    return Drift(
        dead_members=sorted(set(members) - live),
        lost_members=sorted(running - set(members)),
    )
