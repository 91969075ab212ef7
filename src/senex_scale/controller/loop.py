"""The controller: every interval, collect -> decide -> act -> record. ``senex-scale run``.

One tick (it never waits for an action; see ``act.py`` for the workers)::

    leader lock? --no--> standby: record its own status, act on nothing
        | yes (newly: a fencing token, then takeover reconcile: reconcile.py)
    deposed (a worker met a newer fence)? --> step down, lead again next tick with a new token
    collect every rule's metric (a failed source = missing data, never zero; counted)
    store the samples; read back each rule's window from the store (survives restarts)
    instances = runtime.list() + balancer.members(), and the drift between them  (collect.py);
        members failing their health probes (probe.py, its own thread) are not capacity
    plan = core.Decider.decide(observation, now)                      (pure; memory is data)
    live reconcile: orphaned journal entries closed; drifted idle pools repaired
    per decision: hold | busy | dry-run | backoff | a job on the pool's worker       (act.py)
    idle WebSocket pools: a rebalance job (a bounded share of connections moved) (rebalance.py)
    record the tick (chart rows, status snapshot, jobs in flight), metrics      (record.py)

The module is split by responsibility: ``context`` (what the parts share: store, fence,
pools, memory lock), ``collect``, ``act`` (workers, scale jobs, action rules, backoff),
``reconcile`` (takeover and live), ``probe`` (members' health), ``rebalance`` (WebSockets
spread after a scale-out) and ``record``; this one holds the lifecycle (run, stop, reload)
and the order of a tick.

``stop()`` (SIGTERM) ends the loop and then waits for the actions in flight to finish;
``request_reload()`` (SIGHUP) loads the policy file again at the next tick and keeps the
old one if the new one is invalid.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from senex_scale.balancers.base import Balancer
from senex_scale.controller.act import Actor, Workers
from senex_scale.controller.collect import Listing, ingest, list_instances
from senex_scale.controller.context import Context, PoolHandle, build_pool
from senex_scale.controller.forecasting import prime
from senex_scale.controller.leader import Leader
from senex_scale.controller.probe import Prober
from senex_scale.controller.rebalance import Rebalancer
from senex_scale.controller.reconcile import Reconciler
from senex_scale.controller.record import status_doc, update_metrics
from senex_scale.controller.shadow import Shadow
from senex_scale.core.decide import Decider, Plan
from senex_scale.core.state import Observation
from senex_scale.errors import FencedError, PolicyError, SenexError
from senex_scale.policy import load_policy
from senex_scale.policy.models import Host, Policy, Pool
from senex_scale.runtimes.base import Runtime
from senex_scale.sources.base import MetricSource
from senex_scale.sources.collect import Collector, requests_for
from senex_scale.store.sql import Store
from senex_scale.telemetry.metrics import Metrics

PRUNE_EVERY = 3600.0
"""Seconds between retention prunes."""
STOP_WAIT = 900.0
"""Longest wait at SIGTERM for the actions in flight (a drain is bounded by its timeout)."""


@dataclass
class TickReport:
    """What one tick did (for tests and the log)."""

    at: float
    leading: bool
    plan: Plan | None = None
    outcomes: dict[str, str] = field(default_factory=dict)
    """Per pool or action rule: hold, busy, dry-run, backoff, failed, or running (a job)."""
    reconciled: list[str] = field(default_factory=list)


def default_controller_id() -> str:
    """``host:pid``: unique among the controllers sharing one state."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ControllerLoop:
    """Runs a policy against real sources, runtimes and balancers."""

    def __init__(
        self,
        policy: Policy,
        store: Store,
        leader: Leader,
        *,
        policy_path: str | Path | None = None,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        healthy: Callable[[str, str], bool] | None = None,
        log: Any = None,
        build_source: Callable[[str, Any], MetricSource] | None = None,
        build_pool: Callable[[str, Pool], tuple[Runtime, Balancer | None]] | None = None,
        controller_id: str | None = None,
        shadow: bool = False,
    ) -> None:
        self.policy_path = policy_path
        self.shadow = Shadow() if shadow else None
        """``run --shadow``: every tick reads and records only (controller/shadow.py)."""
        self.store = store
        self.leader = leader
        self.dry_run = dry_run or policy.controller.dry_run
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.log = log or structlog.get_logger("senex_scale.controller")
        self.ctx = Context(
            store=store,
            leader=leader,
            metrics=self.metrics,
            log=self.log,
            controller_id=controller_id or default_controller_id(),
            policy=policy,
            clock=clock,
            sleep=sleep,
            healthy=healthy,
        )
        self.workers = Workers(self.ctx)
        self.actor = Actor(self.ctx, self.workers)
        self.prober = Prober(self.ctx)
        self.reconciler = Reconciler(self.ctx, self.workers, self.prober)
        self.rebalancer = Rebalancer(self.ctx, self.workers)
        self.leading = False
        self.paused = False
        self.reload_error: str | None = None
        self._stop = False
        self._stop_signal: str | None = None
        self._wake = Waker()
        self._reload = False
        self._last_prune = 0.0
        self._source_errors: dict[str, str] = {}
        self._build_source = build_source
        self._build_pool = build_pool or (
            lambda name, spec: build_pool_default(name, spec, self.policy.hosts)
        )
        self._apply(policy)

    @property
    def fence(self) -> int:
        """This controller's fencing token (0 before it first leads)."""
        return self.ctx.fence

    @property
    def controller_id(self) -> str:
        return self.ctx.controller_id

    # ------------------------------------------------------------------ policy

    def _apply(self, policy: Policy) -> None:
        old = getattr(self, "collector", None)
        if old is not None:
            old.close()
        self.policy = policy
        self.ctx.policy = policy
        self.decider = Decider(policy)
        self.ctx.keep = self.decider.keep
        self.collector = Collector(policy, self._build_source)
        self.windows = {r.rule: r.window for r in requests_for(policy)}
        pools: dict[str, PoolHandle] = {}
        for name, spec in policy.pools.items():
            handle = PoolHandle(name, spec)
            try:
                handle.runtime, handle.balancer = self._build_pool(name, spec)
            except SenexError as exc:
                handle.error = str(exc)
            pools[name] = handle
        self.ctx.pools = pools  # jobs in flight keep the handles they started with

    def request_reload(self) -> None:
        """Load the policy file again before the next tick (SIGHUP). Safe in a signal handler:
        it sets a flag and wakes the loop, and takes no lock (``Waker``)."""
        self._reload = True
        self._wake.set()

    def _maybe_reload(self) -> None:
        if not self._reload:
            return
        self._reload = False
        if self.policy_path is None:
            return
        self.log.info("reloading the policy", path=str(self.policy_path))
        try:
            policy = load_policy(self.policy_path)
        except PolicyError as exc:
            self.reload_error = f"{exc}; keeping the policy loaded before"
            self.log.error("policy reload refused", path=str(self.policy_path), error=str(exc))
            return
        self.reload_error = None
        self._apply(policy)
        self.log.info("policy reloaded", path=str(self.policy_path))

    # ------------------------------------------------------------------ lifecycle

    def stop(self, signal_name: str | None = None) -> None:
        """End the loop; the actions in flight finish first (SIGTERM: ``signal_name``, logged
        by the loop). Safe in a signal handler, like ``request_reload``."""
        self._stop_signal = signal_name
        self._stop = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until no action is in flight (tests, ``--once``, shutdown)."""
        return self.workers.wait(timeout)

    def in_flight(self) -> list[dict[str, Any]]:
        """The jobs running now: pool (or action:RULE), what, since."""
        return self.workers.in_flight()

    def run(self, ticks: int | None = None) -> None:
        """Tick every interval until ``stop()`` (or ``ticks`` ticks)."""
        done = 0
        if self.shadow is None:  # a shadow uses no probe result: it repairs nothing
            self.prober.start()
        try:
            while not self._stop:
                started = time.monotonic()
                self._maybe_reload()
                try:
                    self.tick()
                except SenexError as exc:
                    # a broken store or lock: say so, try again next interval
                    self.log.error("tick failed", error=str(exc))
                done += 1
                if ticks is not None and done >= ticks:
                    break
                wait = self.policy.controller.interval - (time.monotonic() - started)
                self._wake.clear()
                if wait > 0 and not self._stop and not self._reload:
                    self._wake.wait(wait)
        finally:
            if self._stop_signal is not None:
                self.log.info("stopping after the tick in flight", signal=self._stop_signal)
            self.prober.stop()
            if self.in_flight():
                self.log.info("waiting for the actions in flight", jobs=self.in_flight())
            self.settle(STOP_WAIT)
            self.leader.release()
            self.metrics.leader.set(0)
            self.collector.close()

    # ------------------------------------------------------------------ one tick

    def tick(self) -> TickReport:
        """One pass: lead? reconcile? collect, decide, act, record."""
        started = time.monotonic()
        now = self.clock()
        report = TickReport(now, leading=False)
        if self.shadow is not None:  # no lock, no fence, no action: shadow.py
            self.shadow.tick(self, report)
            self.metrics.tick_duration.observe(time.monotonic() - started)
            self.metrics.last_tick.set(now)
            return report
        try:
            self._lead(report)
            if not report.leading:
                self._record(now, None, None, role="standby")
                return report
            now = self.clock()
            self._leading_tick(now, report)
        except FencedError as exc:
            self._step_down(str(exc))
            report.leading = False
            return report
        self.metrics.tick_duration.observe(time.monotonic() - started)
        self.metrics.last_tick.set(now)
        return report

    def _lead(self, report: TickReport) -> None:
        was_leading = self.leading
        if was_leading and self.ctx.deposed.is_set():
            self._step_down("a newer fencing token was handed out")
            was_leading = False
        self.leading = self.leader.acquire()
        self.metrics.leader.set(1 if self.leading else 0)
        report.leading = self.leading
        if not self.leading:
            if was_leading:
                self.log.warning("lost the leader lock; standing by")
            return
        if not was_leading:
            self.ctx.deposed.clear()
            self.ctx.fence = self.store.next_fence()
            self.log.info("leading", lock=self.leader.kind, fence=self.ctx.fence)
            report.reconciled = self.reconciler.takeover(dry_run=self.dry_run)

    def _step_down(self, why: str) -> None:
        self.log.warning("stepping down", why=why)
        self.leading = False
        self.metrics.leader.set(0)
        self.leader.release()

    def _leading_tick(self, now: float, report: TickReport) -> None:
        ctx = self.ctx
        errors, self._source_errors = ingest(ctx, self.collector.collect(now))
        listing = list_instances(ctx, self.prober)
        samples = {
            rule: self.store.samples(rule, now - window - self.policy.controller.gap_bound)
            for rule, window in self.windows.items()
        }
        if self.decider.forecasters:  # what predictive rules learned before (or elsewhere)
            prime(self.decider, self.store, now, self.policy)
        with ctx.memory_lock:
            memory = self.store.load_memory()
            plan = self.decider.decide(Observation(listing.instances, samples, errors, memory), now)
            self.store.save_memory(plan.memory, fence=ctx.fence)
        acting = not (self.dry_run or self.paused)
        if acting:
            self.reconciler.live(listing, now)
        for decision in plan.decisions:
            if decision.kind == "action":
                assert decision.rule is not None
                report.outcomes[decision.rule] = self.actor.action(
                    decision, dry_run=not acting, now=now
                )
                continue
            assert decision.pool is not None
            report.outcomes[decision.pool] = self.actor.scale(
                decision,
                broken=listing.broken.get(decision.pool),
                dry_run=not acting,
                now=now,
            )
        if acting:
            self.rebalancer.tick(report.outcomes)
        report.plan = plan
        self._record(now, plan, listing, role="leader")
        update_metrics(ctx, plan, listing)
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            self.store.prune(now - self.policy.controller.retention)

    # ------------------------------------------------------------------ recording

    def _record(self, now: float, plan: Plan | None, listing: Listing | None, *, role: str) -> None:
        extra = {
            "dry_run": self.dry_run,
            "paused": self.paused,
            "policy": str(self.policy_path) if self.policy_path else "default",
            "reload_error": self.reload_error,
            "source_errors": dict(self._source_errors) if plan is not None else {},
            "in_flight": self.in_flight(),
        }
        status, pool_rows, rule_rows = status_doc(
            self.ctx, now, plan, listing, role=role, extra=extra
        )
        if plan is None:
            self.store.put_status(self.controller_id, status, leader=False)
        else:
            self.store.record_tick(
                now,
                pool_rows,
                rule_rows,
                status,
                controller=self.controller_id,
                fence=self.ctx.fence,
            )


def build_pool_default(
    name: str, spec: Pool, hosts: Mapping[str, Host] | None = None
) -> tuple[Runtime, Balancer | None]:
    """The runtime and balancer of a pool from its settings."""
    return build_pool(name, spec, hosts)


class Waker:
    """Wakes the loop's wait between ticks early, from another thread or a signal handler.

    A self-pipe, not a ``threading.Event``: a signal handler runs in the main thread between
    two bytecodes of whatever it was doing, and if that was ``Event.clear()`` or the start or
    end of ``Event.wait()`` the Event's lock (not reentrant) is held, so the handler's
    ``set()`` waits for it forever. The daemon froze so on a SIGHUP in a chaos test.
    ``os.write`` on a non-blocking pipe takes no lock.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the loop is woken already
            os.write(self._write, b"\0")

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> bool:
        """Until ``set()`` or ``timeout`` seconds; whether it was set."""
        readable, _, _ = select.select([self._read], [], [], timeout)
        return bool(readable)

    def __del__(self) -> None:
        for fd in (getattr(self, "_read", None), getattr(self, "_write", None)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
