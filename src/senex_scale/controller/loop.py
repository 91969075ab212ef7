"""The controller: every interval, collect -> decide -> act -> record. ``senex-scale run``.

One tick::

    leader lock? --no--> standby: record the status, act on nothing
        | yes (newly: take a fencing token, reconcile first)
    collect every rule's metric (a failed source = missing data, never zero; counted)
    store the samples; read back each rule's window from the store (survives restarts)
    instances = runtime.list() + balancer.members()     (a pool that cannot be listed: held)
    plan = core.Decider.decide(observation, now)
    per decision: hold | dry-run | backoff | act (journal "running" -> sequence -> outcome)
    record the tick (chart rows, status snapshot), metrics; prune old rows hourly

Reconciliation (at start and at every takeover), before deciding anything: balancer members
whose instance is not running are removed; running instances missing from the balancer are
added once healthy or stopped; a drained member left by an interrupted scale-in is stopped
and removed. Journal entries still "running" are closed as "interrupted", and the count
change they made is remembered as a scale event, so cooldowns hold and nothing is done twice.

A failed scale action is retried with backoff (``controller.backoff``, doubling per failure,
at most 16x); instances that failed to start were stopped by the sequence and are not capacity.
``stop()`` (SIGTERM) ends the loop after the action in flight; ``request_reload()`` (SIGHUP)
loads the policy file again at the next tick and keeps the old one if the new one is invalid.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from senex_scale.actions.base import ActionContext
from senex_scale.balancers.base import Balancer, MemberState, build_balancer
from senex_scale.controller.leader import Leader
from senex_scale.controller.sequence import Outcome, ScaleSequence, Step
from senex_scale.core.decide import Decider, Decision, Plan, RuleStatus
from senex_scale.core.state import Instance, InstanceState, Observation
from senex_scale.errors import PolicyError, SenexError
from senex_scale.plugins import resolve
from senex_scale.policy import load_policy
from senex_scale.policy.models import ActionRule, Policy, Pool, TargetRule, ThresholdRule
from senex_scale.runtimes.base import Runtime, UnitState, build_runtime
from senex_scale.sources.base import MetricSource
from senex_scale.sources.collect import Collector, Reading, requests_for
from senex_scale.store.sql import Store, redact_url
from senex_scale.telemetry.metrics import Metrics

PRUNE_EVERY = 3600.0
"""Seconds between retention prunes."""
BACKOFF_CAP = 16
"""The backoff doubles per consecutive failure up to this many times ``controller.backoff``."""


@dataclass
class PoolHandle:
    """A pool's runtime, balancer and sequence, or why they could not be built."""

    name: str
    spec: Pool
    runtime: Runtime | None = None
    balancer: Balancer | None = None
    error: str | None = None

    def sequence(self, **kwargs: Any) -> ScaleSequence:
        assert self.runtime is not None
        return ScaleSequence(self.name, self.spec, self.runtime, self.balancer, **kwargs)


@dataclass
class TickReport:
    """What one tick did (for tests and the log)."""

    at: float
    leading: bool
    plan: Plan | None = None
    outcomes: dict[str, str] = field(default_factory=dict)
    """Per pool or action rule: the outcome recorded."""
    reconciled: list[str] = field(default_factory=list)


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
    ) -> None:
        self.policy_path = policy_path
        self.store = store
        self.leader = leader
        self.dry_run = dry_run or policy.controller.dry_run
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.sleep = sleep
        self.healthy = healthy
        self.log = log or structlog.get_logger("senex_scale.controller")
        self.leading = False
        self.fence = 0
        self.paused = False
        self.reload_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = False
        self._last_prune = 0.0
        self._source_errors: dict[str, str] = {}
        self._build_source = build_source
        self._build_pool = build_pool or _build_pool
        self._apply(policy)

    # ------------------------------------------------------------------ policy

    def _apply(self, policy: Policy) -> None:
        old = getattr(self, "collector", None)
        if old is not None:
            old.close()
        self.policy = policy
        self.decider = Decider(policy)
        self.collector = Collector(policy, self._build_source)
        self.windows = {r.rule: r.window for r in requests_for(policy)}
        self.pools: dict[str, PoolHandle] = {}
        for name, spec in policy.pools.items():
            handle = PoolHandle(name, spec)
            try:
                handle.runtime, handle.balancer = self._build_pool(name, spec)
            except SenexError as exc:
                handle.error = str(exc)
            self.pools[name] = handle

    def request_reload(self) -> None:
        """Load the policy file again before the next tick (SIGHUP)."""
        self._reload = True
        self._wake.set()

    def _maybe_reload(self) -> None:
        if not self._reload:
            return
        self._reload = False
        if self.policy_path is None:
            return
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

    def stop(self) -> None:
        """End the loop after the tick (and action) in flight (SIGTERM)."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, ticks: int | None = None) -> None:
        """Tick every interval until ``stop()`` (or ``ticks`` ticks)."""
        done = 0
        try:
            while not self._stop.is_set():
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
                if wait > 0:
                    self._wake.wait(wait)
        finally:
            self.leader.release()
            self.metrics.leader.set(0)
            self.collector.close()

    # ------------------------------------------------------------------ one tick

    def tick(self) -> TickReport:
        """One pass: lead? reconcile? collect, decide, act, record."""
        started = time.monotonic()
        now = self.clock()
        report = TickReport(now, leading=False)
        was_leading = self.leading
        self.leading = self.leader.acquire()
        self.metrics.leader.set(1 if self.leading else 0)
        report.leading = self.leading
        if not self.leading:
            if was_leading:
                self.log.warning("lost the leader lock; standing by")
            self._record_status(now, None, {}, {}, role="standby")
            return report
        if not was_leading:
            self.fence = self.store.next_fence()
            self.log.info("leading", lock=self.leader.kind, fence=self.fence)
            report.reconciled = self.reconcile()
            now = self.clock()

        readings = self.collector.collect(now)
        errors = self._ingest(readings)
        instances, broken = self._instances()
        samples = {
            rule: self.store.samples(rule, now - window - self.policy.controller.gap_bound)
            for rule, window in self.windows.items()
        }
        memory = self.store.load_memory()
        plan = self.decider.decide(Observation(instances, samples, errors, memory), now)
        self.store.save_memory(plan.memory)
        for decision in plan.decisions:
            key = decision.pool if decision.kind == "scale" else decision.rule
            assert key is not None
            report.outcomes[key] = self._carry_out(decision, broken, now)
        report.plan = plan
        counts = {name: len(items) for name, items in instances.items()}
        self._record_status(now, plan, counts, broken, role="leader")
        self._update_metrics(plan, counts, broken)
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            self.store.prune(now - self.policy.controller.retention)
        self.metrics.tick_duration.observe(time.monotonic() - started)
        self.metrics.last_tick.set(now)
        return report

    def _ingest(self, readings: list[Reading]) -> dict[str, str]:
        errors: dict[str, str] = {}
        self._source_errors = {}
        for reading in readings:
            if reading.error is not None:
                errors[reading.rule] = reading.error
                self._source_errors[reading.source] = reading.error
                self.metrics.source_errors.labels(reading.source).inc()
                self.log.warning(
                    "source failed", source=reading.source, rule=reading.rule, error=reading.error
                )
            elif reading.samples:
                self.store.add_samples(reading.rule, reading.samples)
        return errors

    def _instances(self) -> tuple[dict[str, list[Instance]], dict[str, str]]:
        """Core instances per pool from its runtime and balancer; pools that cannot be listed."""
        out: dict[str, list[Instance]] = {}
        broken: dict[str, str] = {}
        for name, handle in self.pools.items():
            if handle.runtime is None:
                broken[name] = handle.error or "no runtime"
                out[name] = []
                continue
            try:
                units = handle.runtime.list()
                members = {m.n: m for m in handle.balancer.members()} if handle.balancer else None
            except SenexError as exc:
                broken[name] = f"cannot list instances: {exc}"
                out[name] = []
                continue
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
            out[name] = items
        return out, broken

    # ------------------------------------------------------------------ acting

    def _carry_out(self, decision: Decision, broken: dict[str, str], now: float) -> str:
        doc = decision.as_dict()
        label = decision.pool or ""
        if decision.kind == "action":
            outcome = self._run_action(decision, doc, now)
            self.metrics.decisions.labels(label, outcome).inc()
            return outcome
        assert decision.pool is not None
        pool = decision.pool
        detail: dict[str, Any] = {}
        if not decision.act:
            outcome = "hold"
        elif pool in broken:
            outcome, detail = "failed", {"error": broken[pool]}
        elif self.dry_run or self.paused:
            outcome, detail = "dry-run", {"paused": self.paused}
        elif (wait := self._backoff_left(pool, now)) > 0:
            outcome, detail = "backoff", {"retry_in": round(wait, 1)}
        else:
            outcome = self._scale(decision, doc, now)
            self.metrics.decisions.labels(label, outcome).inc()
            return outcome
        if pool in broken and decision.act:
            self.log.error("pool cannot act", pool=pool, error=broken[pool])
        self.store.record_decision(now, doc, outcome, detail, dry_run=self.dry_run)
        self.metrics.decisions.labels(label, outcome).inc()
        return outcome

    def _scale(self, decision: Decision, doc: dict[str, Any], now: float) -> str:
        pool = decision.pool
        assert pool is not None
        handle = self.pools[pool]
        decision_id = self.store.record_decision(now, doc, "running", {}, dry_run=False)
        action_id = self.store.begin_action(
            decision_id,
            pool,
            decision.direction,
            decision.current,
            decision.desired,
            self.fence,
            now,
        )
        self.log.info(
            "scaling",
            pool=pool,
            direction=decision.direction,
            current=decision.current,
            desired=decision.desired,
            reasons=list(decision.reasons),
        )
        started = time.monotonic()
        sequence = handle.sequence(**self._sequence_kwargs(pool))
        try:
            if decision.direction == "out":
                result = sequence.scale_out(decision.desired - decision.current)
            else:
                result = sequence.scale_in(decision.current - decision.desired)
            after = len(sequence.running())
            error = None
        except SenexError as exc:
            result, after, error = Outcome(), decision.current, str(exc)
        elapsed = time.monotonic() - started
        self.metrics.action_duration.labels(pool, decision.direction).observe(elapsed)
        steps = [_step_dict(s) for s in result.steps]
        if error is None and result.ok:
            outcome = "done"
        elif result.done:
            outcome = "partial"
        else:
            outcome = "failed"
        end = self.clock()
        detail: dict[str, Any] = {
            "before": decision.current,
            "after": after,
            "done": result.done,
            "failed": {str(n): why for n, why in result.failed.items()},
            "seconds": round(elapsed, 2),
            "steps": steps,
        }
        if error is not None:
            detail["error"] = error
        self.store.finish_action(action_id, outcome, steps, end)
        self.store.set_outcome(decision_id, outcome, detail)
        if after != decision.current:
            memory = self.store.load_memory().with_scale(
                pool, end, decision.current, after, self._keep()
            )
            self.store.save_memory(memory)
        self._note_result(pool, outcome, end)
        log = self.log.info if outcome == "done" else self.log.error
        log(
            "scaled",
            pool=pool,
            outcome=outcome,
            before=decision.current,
            after=after,
            seconds=round(elapsed, 2),
            failed=detail["failed"],
        )
        return outcome

    def _sequence_kwargs(self, pool: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"clock": self.clock, "sleep": self.sleep}
        if self.healthy is not None:
            kwargs["healthy"] = self.healthy

        def on_step(step: Step) -> None:
            self.log.info("step", pool=pool, n=step.n, what=step.what, detail=step.detail)

        kwargs["on_step"] = on_step
        return kwargs

    def _keep(self) -> float:
        return self.decider.keep

    def _backoff_left(self, pool: str, now: float) -> float:
        state = self.store.get("backoff", {}).get(pool)
        return max(0.0, float(state["until"]) - now) if state else 0.0

    def _note_result(self, pool: str, outcome: str, now: float) -> None:
        backoff = dict(self.store.get("backoff", {}))
        if outcome == "done":
            if backoff.pop(pool, None) is not None:
                self.store.put("backoff", backoff)
            return
        failures = int(backoff.get(pool, {}).get("failures", 0)) + 1
        wait = self.policy.controller.backoff * min(2 ** (failures - 1), BACKOFF_CAP)
        backoff[pool] = {"failures": failures, "until": now + wait}
        self.store.put("backoff", backoff)

    def _run_action(self, decision: Decision, doc: dict[str, Any], now: float) -> str:
        if decision.action is None or not decision.act:
            return "hold"
        if self.dry_run or self.paused:
            self.store.record_decision(now, doc, "dry-run", {}, dry_run=True)
            return "dry-run"
        assert decision.rule is not None
        context = ActionContext(
            decision.rule, decision.pool, decision.priority.value, decision.reasons, now
        )
        try:
            action = resolve("action", decision.action.type)(decision.action)
            result = action.run(context)
        except SenexError as exc:
            self.store.record_decision(now, doc, "failed", {"error": str(exc)})
            self.log.error("action failed", rule=decision.rule, error=str(exc))
            return "failed"
        memory = self.store.load_memory().with_action(decision.rule, now)
        self.store.save_memory(memory)
        self.store.record_decision(now, doc, "done", {"result": result})
        self.log.info("action done", rule=decision.rule, result=result)
        return "done"

    # ------------------------------------------------------------------ reconciliation

    def reconcile(self) -> list[str]:
        """Repair drift between runtimes and balancers, close interrupted actions."""
        notes: list[str] = []
        now = self.clock()
        interrupted = self.store.open_actions()
        scaling_in = {a.pool for a in interrupted if a.direction == "in"}
        for name, handle in self.pools.items():
            if handle.runtime is None:
                continue
            if self.dry_run:
                continue
            try:
                notes += self._repair(name, handle, finish_drain=name in scaling_in)
            except SenexError as exc:
                notes.append(f"{name}: cannot reconcile: {exc}")
        for action in interrupted:
            found = self.pools.get(action.pool)
            after = action.before
            if found is not None and found.runtime is not None:
                with contextlib.suppress(SenexError):
                    after = len(found.sequence().running())
            end = self.clock()
            self.store.finish_action(action.id, "interrupted", action.steps, end)
            if action.decision_id is not None:
                self.store.set_outcome(
                    action.decision_id,
                    "interrupted",
                    {"before": action.before, "after": after, "reconciled": notes},
                )
            if after != action.before:
                memory = self.store.load_memory().with_scale(
                    action.pool, end, action.before, after, self._keep()
                )
                self.store.save_memory(memory)
            notes.append(
                f"{action.pool}: action {action.id} ({action.direction} {action.before} -> "
                f"{action.desired}) was interrupted; {after} running now"
            )
        if notes:
            doc = {
                "kind": "reconcile",
                "pool": None,
                "rule": None,
                "priority": "critical",
                "reasons": notes,
            }
            self.store.record_decision(now, doc, "done", {"fence": self.fence})
            for note in notes:
                self.log.warning("reconciled", note=note)
        return notes

    def _repair(self, name: str, handle: PoolHandle, *, finish_drain: bool) -> list[str]:
        if handle.balancer is None:
            return []
        notes = []
        sequence = handle.sequence(**self._sequence_kwargs(name))
        running = set(sequence.running())
        members = {m.n: m for m in handle.balancer.members()}
        for n, member in sorted(members.items()):
            if n not in running:
                result = sequence.forget(n)
                notes.append(
                    f"{name}@{n}: in the balancer but not running: removed" + _fail(result)
                )
            elif member.state is MemberState.DRAINING and finish_drain:
                result = sequence.retire(n)
                notes.append(
                    f"{name}@{n}: drained by an interrupted scale-in: stopped" + _fail(result)
                )
        for n in sorted(running - set(members)):
            result = sequence.adopt(n)
            what = "added once healthy" if result.ok else "never healthy: stopped"
            notes.append(f"{name}@{n}: running but not in the balancer: {what}" + _fail(result))
        return notes

    # ------------------------------------------------------------------ recording

    def _record_status(
        self,
        now: float,
        plan: Plan | None,
        counts: dict[str, int],
        broken: dict[str, str],
        *,
        role: str,
    ) -> None:
        pools: list[dict[str, Any]] = []
        pool_rows = []
        if plan is not None:
            for decision in plan.decisions:
                if decision.kind != "scale" or decision.pool is None:
                    continue
                low = decision.min if decision.min is not None else 0
                high = decision.max if decision.max is not None else 0
                if decision.pool in broken:
                    # its instances could not be listed: the count is unknown, not 0
                    pools.append(
                        {
                            "pool": decision.pool,
                            "current": None,
                            "desired": None,
                            "min": low,
                            "max": high,
                            "reasons": [],
                            "error": broken[decision.pool],
                        }
                    )
                    continue
                pools.append(
                    {
                        "pool": decision.pool,
                        "current": counts.get(decision.pool, decision.current),
                        "desired": decision.desired,
                        "min": low,
                        "max": high,
                        "reasons": list(decision.reasons),
                        "error": broken.get(decision.pool),
                        "backoff": self.store.get("backoff", {}).get(decision.pool),
                    }
                )
                pool_rows.append(
                    (
                        decision.pool,
                        counts.get(decision.pool, decision.current),
                        decision.desired,
                        low,
                        high,
                    )
                )
        rules = [self._rule_doc(status) for status in plan.rules] if plan is not None else []
        rule_rows = [
            (s.rule, s.pool, _finite(s.value), str(s.vote), s.held)
            for s in (plan.rules if plan is not None else ())
        ]
        status = {
            "at": now,
            "role": role,
            "lock": self.leader.kind,
            "fence": self.fence,
            "dry_run": self.dry_run,
            "paused": self.paused,
            "interval": self.policy.controller.interval,
            "policy": str(self.policy_path) if self.policy_path else "default",
            "reload_error": self.reload_error,
            "state": redact_url(self.store.url),
            "pools": pools,
            "rules": rules,
            "source_errors": dict(self._source_errors),
        }
        if plan is None:
            self.store.put("status", status)
        else:
            self.store.record_tick(now, pool_rows, rule_rows, status)

    def _rule_doc(self, status: RuleStatus) -> dict[str, Any]:
        rule = next((r for r in self.policy.rules if r.name == status.rule), None)
        out: dict[str, Any] = {
            "rule": status.rule,
            "pool": status.pool,
            "value": _finite(status.value),
            "vote": str(status.vote),
            "held": status.held,
            "reason": status.reason,
        }
        out |= {"out": None, "in": None, "target": None}
        if isinstance(rule, ThresholdRule):
            out["out"] = _bound(rule.scale_out)
            out["in"] = _bound(rule.scale_in)
        elif isinstance(rule, TargetRule):
            out["target"] = rule.target
        elif isinstance(rule, ActionRule):
            out["out"] = _bound(rule.when)
        return out

    def _update_metrics(self, plan: Plan, counts: dict[str, int], broken: dict[str, str]) -> None:
        m = self.metrics
        for decision in plan.decisions:
            if decision.kind != "scale" or decision.pool is None or decision.pool in broken:
                continue
            pool = decision.pool
            m.instances.labels(pool, "current").set(counts.get(pool, decision.current))
            m.instances.labels(pool, "desired").set(decision.desired)
            m.instances.labels(pool, "min").set(decision.min or 0)
            m.instances.labels(pool, "max").set(decision.max or 0)
        for status in plan.rules:
            m.set_rule(status.rule, status.pool, _finite(status.value), status.held)
            doc = self._rule_doc(status)
            for direction in ("out", "in"):
                bound = doc[direction]
                if bound is not None:
                    m.rule_threshold.labels(status.rule, status.pool or "", direction).set(
                        bound["value"]
                    )
            if doc["target"] is not None:
                m.rule_threshold.labels(status.rule, status.pool or "", "target").set(doc["target"])


def _build_pool(name: str, spec: Pool) -> tuple[Runtime, Balancer | None]:
    runtime = build_runtime(name, spec)
    balancer = build_balancer(name, spec) if spec.balancer is not None else None
    return runtime, balancer


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _bound(condition: Any) -> dict[str, Any] | None:
    if condition is None:
        return None
    if condition.above is not None:
        return {"op": ">", "value": condition.above, "for": condition.for_}
    return {"op": "<", "value": condition.below, "for": condition.for_}


def _fail(outcome: Outcome) -> str:
    return f" (failed: {'; '.join(outcome.failed.values())})" if outcome.failed else ""


def _step_dict(step: Step) -> dict[str, Any]:
    return {"at": step.at, "n": step.n, "what": step.what, "detail": step.detail}
