"""Act: carry out the tick's decisions off the tick, one worker per pool.

::

    tick (never blocked)                      workers (threads; one job per key at a time)
      decision for pool P --- P busy? ----> "busy": the job in flight finishes first
                  |
                  +-- hold / dry-run / backoff: recorded at once
                  +-- act: journal "running" -> Job(P): ScaleSequence -> outcome, steps,
                                                scale event, backoff      (fenced per step)
      action rule R ------- R busy? ------> skipped
                  +-- fire: cooldown starts now -> Job(action:R): notify/runbook, bounded by
                                                its timeout; failure recorded (no retry
                                                before the cooldown ends)

Different pools act in parallel; a pool never runs two jobs at once (a scale action and a
repair of the same pool are serialised). Metric collection and deciding go on every interval
whatever the workers do. Why threads and not asyncio: runtimes and balancers are blocking
clients (XML-RPC, subprocess, sockets), one job per pool is a handful of threads, and a
thread per job is the simplest way to bound nothing by anything else.

A failed scale action backs the pool off (``controller.backoff``, doubling per failure, at
most 16x); an instance number whose start failed is avoided until the backoff has passed,
so one broken instance (a port taken, a bad unit) does not block every scale-out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from senex_scale.actions.base import ActionContext
from senex_scale.controller.context import Context
from senex_scale.controller.sequence import Outcome, Step
from senex_scale.core.decide import Decision
from senex_scale.errors import FencedError, SenexError
from senex_scale.plugins import resolve

BACKOFF_CAP = 16
"""The backoff doubles per consecutive failure up to this many times ``controller.backoff``."""


@dataclass
class Job:
    """One piece of work in flight."""

    key: str
    """The pool, or ``action:RULE``."""
    what: str
    """out, in, repair, or the action type."""
    since: float
    thread: threading.Thread

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "what": self.what, "since": self.since}


class Workers:
    """At most one job per key, each on its own thread."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def busy(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def submit(self, key: str, what: str, work: Callable[[], None]) -> bool:
        """Start ``work`` for ``key`` unless a job of that key is in flight."""
        with self._lock:
            if key in self._jobs:
                return False
            thread = threading.Thread(
                target=self._run, args=(key, what, work), name=f"job-{key}", daemon=True
            )
            self._jobs[key] = Job(key, what, self.ctx.clock(), thread)
            pool, action = _labels(key, what)
            self.ctx.metrics.in_flight.labels(pool, action).inc()
            thread.start()
        return True

    def _run(self, key: str, what: str, work: Callable[[], None]) -> None:
        try:
            work()
        except FencedError as exc:
            self.ctx.deposed.set()
            self.ctx.log.warning("deposed mid-action: stopped", key=key, error=str(exc))
        except SenexError as exc:
            self.ctx.log.error("job failed", key=key, what=what, error=str(exc))
        except Exception:  # a bug: say so loudly, keep the controller alive
            self.ctx.log.exception("job crashed", key=key, what=what)
        finally:
            with self._lock:
                self._jobs.pop(key, None)
            pool, action = _labels(key, what)
            self.ctx.metrics.in_flight.labels(pool, action).dec()

    def in_flight(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.as_dict() for job in self._jobs.values()]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every job in flight (and those they hand on); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [job.thread for job in self._jobs.values()]
            if not threads:
                return True
            for thread in threads:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                thread.join(left)
                if deadline is not None and time.monotonic() >= deadline:
                    with self._lock:
                        return not self._jobs


def _labels(key: str, what: str) -> tuple[str, str]:
    if key.startswith("action:"):
        return "", key.removeprefix("action:")
    return key, what


class Actor:
    """Turns decisions into jobs and records what became of them."""

    def __init__(self, ctx: Context, workers: Workers) -> None:
        self.ctx = ctx
        self.workers = workers

    # ------------------------------------------------------------------ scale decisions

    def scale(self, decision: Decision, *, broken: str | None, dry_run: bool, now: float) -> str:
        """What becomes of one scale decision this tick: hold, busy, failed (pool cannot be
        listed), dry-run, backoff, or running (a job started)."""
        ctx = self.ctx
        pool = decision.pool
        assert pool is not None
        doc = decision.as_dict()
        detail: dict[str, Any] = {}
        if not decision.act:
            return "hold"
        if self.workers.busy(pool) is not None:
            return "busy"  # not recorded: the job in flight will be
        if broken is not None:
            outcome, detail = "failed", {"error": broken}
            ctx.log.error("pool cannot act", pool=pool, error=broken)
        elif dry_run:
            outcome, detail = "dry-run", {}
        elif (wait := self.backoff_left(pool, now)) > 0:
            outcome, detail = "backoff", {"retry_in": round(wait, 1)}
        else:
            decision_id = ctx.store.record_decision(now, doc, "running", {}, fence=ctx.fence)
            action_id = ctx.store.begin_action(
                decision_id,
                pool,
                decision.direction,
                decision.current,
                decision.desired,
                ctx.fence,
                now,
            )
            self.workers.submit(
                pool,
                decision.direction,
                lambda: self._scale_job(decision, decision_id, action_id),
            )
            return "running"
        ctx.store.record_decision(now, doc, outcome, detail, dry_run=dry_run, fence=ctx.fence)
        ctx.metrics.decisions.labels(pool, outcome).inc()
        return outcome

    def _scale_job(self, decision: Decision, decision_id: int, action_id: int) -> None:
        ctx = self.ctx
        pool = decision.pool
        assert pool is not None
        handle = ctx.pools[pool]
        ctx.log.info(
            "scaling",
            pool=pool,
            direction=decision.direction,
            current=decision.current,
            desired=decision.desired,
            reasons=list(decision.reasons),
        )
        started = time.monotonic()
        sequence = ctx.sequence(handle)
        error = None
        try:
            if decision.direction == "out":
                sequence.avoid = self.avoided(pool, ctx.clock())
                result = sequence.scale_out(decision.desired - decision.current)
            else:
                result = sequence.scale_in(decision.current - decision.desired)
            after = len(sequence.running())
        except FencedError:
            # another controller leads: it closes this journal entry as interrupted
            raise
        except SenexError as exc:
            result, after, error = Outcome(), decision.current, str(exc)
        elapsed = time.monotonic() - started
        ctx.metrics.action_duration.labels(pool, decision.direction).observe(elapsed)
        steps = [step_dict(s) for s in result.steps]
        if error is None and result.ok:
            outcome = "done"
        elif result.done:
            outcome = "partial"
        else:
            outcome = "failed"
        end = ctx.clock()
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
        ctx.store.finish_action(action_id, outcome, steps, end, fence=ctx.fence)
        ctx.store.set_outcome(decision_id, outcome, detail, fence=ctx.fence)
        ctx.remember_scale(pool, end, decision.current, after)
        bad = [n for n in result.failed if n > 0 and decision.direction == "out"]
        self.note_result(pool, outcome, end, bad)
        ctx.metrics.decisions.labels(pool, outcome).inc()
        log = ctx.log.info if outcome == "done" else ctx.log.error
        log(
            "scaled",
            pool=pool,
            outcome=outcome,
            before=decision.current,
            after=after,
            seconds=round(elapsed, 2),
            failed=detail["failed"],
        )

    # ------------------------------------------------------------------ backoff

    def backoff_left(self, pool: str, now: float) -> float:
        state = self.ctx.store.get("backoff", {}).get(pool)
        return max(0.0, float(state["until"]) - now) if state else 0.0

    def avoided(self, pool: str, now: float) -> set[int]:
        """Instance numbers whose start failed and whose backoff has not passed."""
        state = self.ctx.store.get("backoff", {}).get(pool) or {}
        return {int(n) for n, until in state.get("bad", {}).items() if float(until) > now}

    def note_result(self, pool: str, outcome: str, now: float, bad: list[int]) -> None:
        """Clear the pool's backoff on success; else double it and remember bad numbers."""
        ctx = self.ctx
        with ctx.backoff_lock:
            backoff = dict(ctx.store.get("backoff", {}))
            if outcome == "done":
                if backoff.pop(pool, None) is not None:
                    ctx.store.put("backoff", backoff, fence=ctx.fence)
                return
            failures = int(backoff.get(pool, {}).get("failures", 0)) + 1
            wait = ctx.policy.controller.backoff * min(2 ** (failures - 1), BACKOFF_CAP)
            marks = {
                n: until
                for n, until in backoff.get(pool, {}).get("bad", {}).items()
                if float(until) > now
            }
            # a bad number is avoided for a few backoffs, not only until the next retry
            marks |= {str(n): now + 4 * wait for n in bad}
            backoff[pool] = {"failures": failures, "until": now + wait, "bad": marks}
            ctx.store.put("backoff", backoff, fence=ctx.fence)

    # ------------------------------------------------------------------ action rules

    def action(self, decision: Decision, *, dry_run: bool, now: float) -> str:
        """Fire a notify/runbook rule in the background. Its cooldown starts when it fires,
        so a failing action is not retried every tick; one still running is not fired again."""
        ctx = self.ctx
        if decision.action is None or not decision.act:
            return "hold"
        assert decision.rule is not None
        doc = decision.as_dict()
        key = f"action:{decision.rule}"
        if self.workers.busy(key) is not None:
            return "busy"
        if dry_run:
            ctx.store.record_decision(now, doc, "dry-run", {}, dry_run=True, fence=ctx.fence)
            return "dry-run"
        rule = decision.rule
        ctx.update_memory(lambda m: m.with_action(rule, now))
        decision_id = ctx.store.record_decision(now, doc, "running", {}, fence=ctx.fence)
        spec = decision.action
        context = ActionContext(rule, decision.pool, decision.priority.value, decision.reasons, now)

        def job() -> None:
            started = time.monotonic()
            try:
                action = resolve("action", spec.type)(spec)
                result = action.run(context)
            except SenexError as exc:
                ctx.store.set_outcome(
                    decision_id,
                    "failed",
                    {"error": str(exc), "seconds": round(time.monotonic() - started, 2)},
                    fence=ctx.fence,
                )
                ctx.metrics.decisions.labels(decision.pool or "", "failed").inc()
                ctx.log.error("action failed", rule=rule, error=str(exc))
                return
            ctx.store.set_outcome(
                decision_id,
                "done",
                {"result": result, "seconds": round(time.monotonic() - started, 2)},
                fence=ctx.fence,
            )
            ctx.metrics.decisions.labels(decision.pool or "", "done").inc()
            ctx.log.info("action done", rule=rule, result=result)

        self.workers.submit(key, spec.type, job)
        return "running"


def step_dict(step: Step) -> dict[str, Any]:
    return {"at": step.at, "n": step.n, "what": step.what, "detail": step.detail}
