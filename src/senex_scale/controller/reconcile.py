"""Reconcile: make the balancers agree with the runtimes, at takeover and every tick.

::

    takeover (a new fencing token)      journal entries still "running" -> "interrupted",
                                        their count change remembered (cooldowns hold, nothing
                                        is done twice); every pool gets a repair job, and a
                                        pool whose scale-in was cut short finishes its drains
    every tick (live), per idle pool    drift seen in the tick's listing -> a repair job,
                                        at most one per pool per interval; journal entries
                                        "running" whose pool has no job in flight -> closed

    repair (a pool worker job, on a fresh listing):
        member, instance not running      -> removed (the balancer must not point at nothing)
        instance running, not a member    -> probed: healthy -> added; unhealthy -> left
                                             running and probed again; stopped only once it
                                             has stayed unhealthy for start_timeout (the
                                             audit log says so)
        member draining, scale-in cut short (takeover only) -> waited, disabled, stopped, removed
        member failing its health probes (probe.py)          -> drained (one at a time per
                                                                pool, never the last healthy)
        member drained for its health, probes pass again     -> added back
        (several hosts) a host not answering whose members all fail a probe -> lost: its
                          members removed, replacements started on the other hosts (max)
        (several hosts) an instance of a returned host, replaced meanwhile, or a number
                          running on two hosts (not the balancer's)  -> stopped

Every repair is a "reconcile" row in the audit log with one reason per change, and a
``senex_scale_repairs_total{pool, kind}`` count.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from senex_scale.balancers.base import Member, MemberState
from senex_scale.controller.act import Workers
from senex_scale.controller.collect import Drift, Listing
from senex_scale.controller.context import Context, PoolHandle
from senex_scale.controller.probe import SICK_AFTER, Prober
from senex_scale.controller.sequence import Outcome, ScaleSequence
from senex_scale.errors import SenexError
from senex_scale.runtimes.base import UnitState, probe_health
from senex_scale.runtimes.spread import SpreadRuntime


class Reconciler:
    """Takeover and live reconciliation of one controller."""

    def __init__(self, ctx: Context, workers: Workers, prober: Prober | None = None) -> None:
        self.ctx = ctx
        self.workers = workers
        self.prober = prober
        self._last_repair: dict[str, float] = {}
        self._unhealthy_since: dict[tuple[str, int], float] = {}

    # ------------------------------------------------------------------ takeover

    def takeover(self, *, dry_run: bool) -> list[str]:
        """Close interrupted journal entries; a repair job for every pool."""
        interrupted = self.ctx.store.open_actions()
        scaling_in = {a.pool for a in interrupted if a.direction == "in"}
        notes = self.close_interrupted(interrupted)
        if not dry_run:
            for name in self.ctx.pools:
                self.submit(name, finish_drain=name in scaling_in, force=True)
        return notes

    def close_interrupted(self, actions: list[Any]) -> list[str]:
        """Journal entries left "running" (a crash, a deposed leader, a bug) closed as
        interrupted, with the count they left remembered as a scale event."""
        ctx = self.ctx
        notes = []
        for action in actions:
            found = ctx.pools.get(action.pool)
            after = action.before
            if found is not None and found.runtime is not None:
                with contextlib.suppress(SenexError):
                    after = len(_running(found))
            end = ctx.clock()
            ctx.store.finish_action(action.id, "interrupted", action.steps, end, fence=ctx.fence)
            note = (
                f"{action.pool}: action {action.id} ({action.direction} {action.before} -> "
                f"{action.desired}) was interrupted; {after} running now"
            )
            if action.decision_id is not None:
                ctx.store.set_outcome(
                    action.decision_id,
                    "interrupted",
                    {"before": action.before, "after": after, "reconciled": [note]},
                    fence=ctx.fence,
                )
            ctx.remember_scale(action.pool, end, action.before, after)
            notes.append(note)
        if notes:
            self._record(notes)
        return notes

    # ------------------------------------------------------------------ live

    def live(self, listing: Listing, now: float) -> None:
        """Per tick: orphaned journal entries closed; drifted idle pools get a repair job."""
        ctx = self.ctx
        orphans = [a for a in ctx.store.open_actions() if self.workers.busy(a.pool) is None]
        if orphans:
            self.close_interrupted(orphans)
        for name in ctx.pools:
            drift = listing.drift.get(name) or Drift()
            hosts = _hosts_need_care(ctx.pools.get(name))
            if not (drift or hosts) or self.workers.busy(name) is not None:
                continue
            if now - self._last_repair.get(name, -1e18) < ctx.policy.controller.interval:
                continue
            ctx.log.warning("drift", pool=name, drift=drift.describe() or hosts)
            self.submit(name)

    def submit(self, name: str, *, finish_drain: bool = False, force: bool = False) -> bool:
        """A repair job for pool ``name`` (unless one of its jobs is in flight)."""
        handle = self.ctx.pools.get(name)
        if handle is None or handle.runtime is None:
            return False
        if handle.balancer is None and not isinstance(handle.runtime, SpreadRuntime):
            return False
        self._last_repair[name] = self.ctx.clock()

        def job() -> None:
            self.repair(handle, finish_drain)

        return self.workers.submit(name, "repair", job)

    def repair(self, handle: PoolHandle, finish_drain: bool = False) -> list[str]:
        """Make one pool's balancer agree with its runtime (see the module docstring)."""
        ctx = self.ctx
        name = handle.name
        assert handle.runtime is not None
        sequence = ctx.sequence(handle)
        notes: list[str] = []
        if handle.balancer is None:
            # a worker pool on several hosts: only its hosts need care
            if not isinstance(handle.runtime, SpreadRuntime):
                return []
            try:
                sequence.running()
                notes = self._hosts(handle, handle.runtime, sequence, {})
            except SenexError as exc:
                notes = [f"{name}: cannot reconcile: {exc}"]
            if notes:
                self._record(notes)
            return notes
        try:
            running = set(sequence.running())
            members = {m.n: m for m in handle.balancer.members()}
        except SenexError as exc:
            self._record([f"{name}: cannot reconcile: {exc}"])
            return []
        if isinstance(handle.runtime, SpreadRuntime):
            notes += self._hosts(handle, handle.runtime, sequence, members)
            if notes:
                running = set(sequence.running())
                members = {m.n: m for m in handle.balancer.members()}
        taken_out = set(ctx.store.get("sick", {}).get(name, []))
        for n, member in sorted(members.items()):
            if n not in running:
                result = sequence.forget(n)
                notes.append(
                    f"{name}@{n}: in the balancer but not running: removed" + _fail(result)
                )
                ctx.metrics.repairs.labels(name, "dead-member").inc()
            elif member.state is MemberState.DRAINING and finish_drain and n not in taken_out:
                result = sequence.retire(n)
                notes.append(
                    f"{name}@{n}: drained by an interrupted scale-in: stopped" + _fail(result)
                )
                ctx.metrics.repairs.labels(name, "finish-drain").inc()
        states = {u.n: u.state for u in handle.runtime.list()}
        for n in sorted(running - set(members)):
            if states.get(n) is not UnitState.RUNNING:
                continue  # still starting: next time
            notes += self._adopt(handle, sequence, n)
        notes += self._health(handle, members, running, taken_out)
        if notes:
            self._record(notes)
        return notes

    def _hosts(
        self,
        handle: PoolHandle,
        runtime: SpreadRuntime,
        sequence: ScaleSequence,
        members: dict[int, Member],
    ) -> list[str]:
        """A pool on several hosts: an unreachable host whose members all fail their health
        probe is lost (its members leave the balancer, replacements start on the other
        hosts, within max); a returned host's extras and duplicate numbers are stopped."""
        ctx = self.ctx
        name = handle.name
        notes: list[str] = []
        for host in runtime.unreachable():
            # its members by address: also one whose instance died as the host went down
            # (its last listing already lacked it) was capacity the loss took
            address = runtime.hosts[host].address
            on = sorted(
                set(runtime.on_host(host)) & set(members)
                | {n for n, m in members.items() if m.address.rpartition(":")[0] == address}
            )
            since = runtime.state[host].since or ctx.clock()
            if not on and ctx.clock() - since < 3 * ctx.policy.controller.interval:
                continue  # nothing to probe (a worker pool): a few intervals of silence first
            # evidence already at hand: the balancer's own checks put them all down (HAProxy
            # checks every server every few hundred ms), or the prober's last round failed;
            # else a probe now, and none of them answering is the verdict
            failing = all(
                members[n].state is MemberState.DOWN
                or (self.prober is not None and self.prober.failing(name, n))
                for n in on
            )
            # the prober's latest round already failed them all, or a probe now does
            answering = not failing and self._answering(
                [members[n].address for n in on], handle.spec.health
            )
            if on and answering:
                ctx.log.warning(
                    "host does not answer its transport but its instances do: left in service",
                    pool=name,
                    host=host,
                    error=runtime.state[host].error,
                )
                continue
            ctx.guard()
            error = runtime.state[host].error
            live_before = sum(runtime.counts().values())
            lost = runtime.declare_lost(host)
            # what counted as capacity: all but members being drained out (their checks
            # failing since the loss puts them down, which is why down ones count)
            counted = [
                n
                for n in sorted(set(lost) | set(on))
                if n not in members or members[n].state is not MemberState.DRAINING
            ]
            ctx.metrics.repairs.labels(name, "host-lost").inc()
            note = (
                f"{name}: host {host} does not answer ({error}) and none of its instances "
                f"passes a health probe: lost; {lost or 'no instances'} out of the pool"
            )
            live = sum(runtime.counts().values())
            dead = len(set(counted) - set(lost))  # died just before (not in live_before)
            want = min(handle.spec.max, live_before + dead)
            count = min(want - live, len(counted))
            if count > 0:
                # capacity first: the lost members get no requests (the balancer's own checks
                # fail too); taking them out of its configuration can wait for the new ones
                result = sequence.scale_out(count, parallel=True, taken=runtime.live_numbers())
                ctx.metrics.repairs.labels(name, "replace").inc()
                note += (
                    f"; {len(result.done)} of {count} replacements started on "
                    f"{runtime.describe_room()}: {result.done}" + _fail(result)
                )
            for n in on:
                sequence.forget(n)
            if on:
                note += f"; {on} out of the balancer"
            notes.append(note)
        for host, n in runtime.extras():
            member = members.get(n)
            if member is not None and member.address == runtime.address_on(host, n):
                continue  # the balancer's own instance: the other one is the extra
            ctx.guard()
            try:
                runtime.stop_on(host, n)
            except SenexError as exc:
                notes.append(
                    f"{name}@{n} on {host}: an extra (its number runs elsewhere or "
                    f"was replaced while {host} was lost); stopping it failed: {exc}"
                )
                continue
            ctx.metrics.repairs.labels(name, "extra").inc()
            notes.append(
                f"{name}@{n} on {host}: an extra (its number runs elsewhere or was replaced "
                f"while {host} was lost), not in the balancer: stopped"
            )
        return notes

    def _answering(self, addresses: list[str], path: str) -> bool:
        """Does any of ``addresses`` pass a health probe now? (all at once)"""
        if not addresses:
            return False
        probe = self.ctx.healthy or probe_health
        if self.ctx.healthy is None:
            timeout = min(2.0, max(0.5, self.ctx.policy.controller.interval / 2))
            probe = lambda a, p: probe_health(a, p, timeout=timeout)  # noqa: E731
        with ThreadPoolExecutor(min(16, len(addresses)), thread_name_prefix="host-probe") as ex:
            return any(ex.map(lambda a: probe(a, path), addresses))

    def _health(
        self,
        handle: PoolHandle,
        members: dict[int, Member],
        running: set[int],
        taken_out: set[int],
    ) -> list[str]:
        """Sick serving members out of service; recovered ones back (see probe.py). At most one
        member of a pool is out for its health at a time, and never the last one that passes
        its probes: if many fail, the cause is shared (overload, a database down) and taking
        them out would only turn slow into down."""
        ctx = self.ctx
        if self.prober is None or handle.balancer is None:
            return []
        name = handle.name
        notes = []
        before = set(taken_out)
        sick = self.prober.sick(name)
        serving = [
            n
            for n, m in members.items()
            if m.state is MemberState.READY and n in running and n not in sick
        ]
        for n in sorted(sick):
            member = members.get(n)
            if member is None or member.state is not MemberState.READY or n not in running:
                continue
            if not serving:
                ctx.log.warning("every member fails its health probe: left in service", pool=name)
                break
            if taken_out & set(members):
                # one at a time: under overload every probe gets slow, and taking members out
                # one after another would pile their load on the rest (a cascade)
                ctx.log.warning("another member is out for its health already", pool=name, n=n)
                break
            ctx.guard()
            handle.balancer.drain(n)
            taken_out.add(n)
            ctx.metrics.repairs.labels(name, "sick").inc()
            notes.append(
                f"{name}@{n}: failing its health probe (GET {member.address}"
                f"{handle.spec.health}) {SICK_AFTER} times in a row: taken out of service"
            )
        for n in sorted(taken_out):
            if n not in members or n not in running:
                taken_out.discard(n)
            elif self.prober.healthy(name, n):
                ctx.guard()
                handle.balancer.add(n, members[n].address)
                taken_out.discard(n)
                ctx.metrics.repairs.labels(name, "recovered").inc()
                notes.append(f"{name}@{n}: passes its health probe again: back in service")
        if taken_out != before:
            with ctx.backoff_lock:
                every = dict(ctx.store.get("sick", {}))
                every[name] = sorted(taken_out)
                ctx.store.put("sick", every, fence=ctx.fence)
        return notes

    def _adopt(self, handle: PoolHandle, sequence: Any, n: int) -> list[str]:
        """A running instance the balancer does not know: added once healthy; stopped only
        after start_timeout of failed probes, with the reason in the audit log."""
        ctx = self.ctx
        name = handle.name
        key = (name, n)
        address = sequence.address(n)
        if sequence.healthy(address, handle.spec.health):
            self._unhealthy_since.pop(key, None)
            result = sequence.adopt(n)
            ctx.metrics.repairs.labels(name, "lost-member").inc()
            what = "healthy: added" if result.ok else "not added"
            return [f"{name}@{n}: running but not in the balancer: {what}" + _fail(result)]
        now = ctx.clock()
        first = self._unhealthy_since.setdefault(key, now)
        if now - first < handle.spec.start_timeout:
            ctx.log.warning(
                "running, not in the balancer, not healthy yet",
                pool=name,
                n=n,
                probe=f"GET {address}{handle.spec.health}",
                seconds=round(now - first, 1),
            )
            return []
        self._unhealthy_since.pop(key, None)
        assert handle.runtime is not None
        ctx.guard()
        why = (
            f"{name}@{n}: running but not in the balancer and not healthy for {now - first:.0f}s"
            f" (start_timeout {handle.spec.start_timeout:g}s)"
        )
        try:
            handle.runtime.stop(n)
        except SenexError as exc:
            return [f"{why}; stopping it failed: {exc}"]
        ctx.metrics.repairs.labels(name, "never-healthy").inc()
        return [f"{why}: stopped"]

    # ------------------------------------------------------------------ audit

    def _record(self, notes: list[str]) -> None:
        ctx = self.ctx
        doc = {
            "kind": "reconcile",
            "pool": None,
            "rule": None,
            "priority": "critical",
            "reasons": notes,
        }
        ctx.store.record_decision(ctx.clock(), doc, "done", {"fence": ctx.fence}, fence=ctx.fence)
        for note in notes:
            ctx.log.warning("reconciled", note=note)


def _hosts_need_care(handle: PoolHandle | None) -> str:
    """Why a pool on several hosts needs a repair even without drift ("" when it does not)."""
    runtime = handle.runtime if handle is not None else None
    if not isinstance(runtime, SpreadRuntime):
        return ""
    why = []
    if runtime.unreachable():
        why.append(f"hosts not answering {runtime.unreachable()}")
    if runtime.extras():
        why.append(f"extras {runtime.extras()}")
    return "; ".join(why)


def _running(handle: PoolHandle) -> list[int]:
    assert handle.runtime is not None
    live = (UnitState.RUNNING, UnitState.STARTING)
    return sorted(i.n for i in handle.runtime.list() if i.state in live)


def _fail(outcome: Outcome) -> str:
    return f" (failed: {'; '.join(outcome.failed.values())})" if outcome.failed else ""
