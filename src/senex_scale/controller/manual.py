"""``senex-scale scale POOL N``: an operator's scale action, with the daemon's guarantees.

It takes the same leader lock as ``senex-scale run`` (refused while a controller leads the
same state), takes a fencing token, writes the decision and the journal entry "running"
before anything is touched, checks the fence before every step, and records the outcome
with every step in the audit log. A crash in the middle is reconciled by the next
controller like any other interrupted action.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from senex_scale.controller.act import step_dict
from senex_scale.controller.context import Context, PoolHandle, build_pool
from senex_scale.controller.leader import build_leader
from senex_scale.controller.sequence import Outcome, Step
from senex_scale.errors import SenexError, TemporaryError
from senex_scale.policy.models import Policy
from senex_scale.store.sql import open_store
from senex_scale.telemetry.metrics import Metrics


@dataclass
class ManualResult:
    """What a manual scale did."""

    before: list[int]
    after: list[int]
    outcome: Outcome
    decision_id: int | None


def manual_scale(
    policy: Policy,
    pool: str,
    count: int,
    *,
    state: str | None = None,
    on_step: Callable[[Step], None] | None = None,
    dry_run: bool = False,
    command: str = "",
) -> ManualResult:
    """Scale ``pool`` to ``count`` under the leader lock, journaled and fenced."""
    spec = policy.pools[pool]
    runtime, balancer = build_pool(pool, spec, policy.hosts)
    url = state or policy.controller.state
    store = open_store(url)
    ttl = policy.controller.leader_ttl or 1.5 * policy.controller.interval
    leader = build_leader(policy.controller.leader, url, ttl)
    try:
        if not leader.acquire():
            raise TemporaryError(
                f"another controller leads {_where(store.statuses())}(lock: {leader.kind}); "
                "stop it (or let it scale) and try again"
            )
        # progress goes to the caller's on_step (stderr); stdout stays the --json document
        log = structlog.wrap_logger(structlog.ReturnLogger())
        ctx = Context(
            store=store,
            leader=leader,
            metrics=Metrics(),
            log=log,
            controller_id="senex-scale scale",
            policy=policy,
        )
        handle = PoolHandle(pool, spec, runtime, balancer)
        sequence = ctx.sequence(handle)
        if on_step is not None:
            logged = sequence.on_step

            def both(step: Step) -> None:
                on_step(step)
                if logged is not None:
                    logged(step)

            sequence.on_step = both
        before = sequence.running()
        if dry_run or count == len(before):
            return ManualResult(before, before, Outcome(), None)
        ctx.fence = store.next_fence()
        direction = "out" if count > len(before) else "in"
        now = time.time()
        doc = {
            "kind": "scale",
            "pool": pool,
            "rule": None,
            "priority": "critical",
            "current": len(before),
            "desired": count,
            "direction": direction,
            "reasons": [f"manual: {command or f'senex-scale scale {pool} {count}'}"],
        }
        decision_id = store.record_decision(now, doc, "running", {}, fence=ctx.fence)
        action_id = store.begin_action(
            decision_id, pool, direction, len(before), count, ctx.fence, now
        )
        error = None
        try:
            outcome = sequence.scale_to(count)
        except SenexError as exc:
            outcome, error = Outcome(), str(exc)
        after = sequence.running()
        ok = outcome.ok and error is None
        status = "done" if ok else "partial" if outcome.done else "failed"
        end = time.time()
        steps = [step_dict(s) for s in outcome.steps]
        detail = {
            "before": len(before),
            "after": len(after),
            "done": outcome.done,
            "failed": {str(n): why for n, why in outcome.failed.items()},
            "steps": steps,
        } | ({"error": error} if error else {})
        store.finish_action(action_id, status, steps, end, fence=ctx.fence)
        store.set_outcome(decision_id, status, detail, fence=ctx.fence)
        ctx.remember_scale(pool, end, len(before), len(after))
        if error is not None:
            outcome.failed.setdefault(0, error)
        return ManualResult(before, after, outcome, decision_id)
    finally:
        leader.release()
        store.close()


def _where(statuses: dict[str, dict[str, object]]) -> str:
    leaders = [cid for cid, doc in statuses.items() if doc.get("role") == "leader"]
    return f"this state ({', '.join(sorted(leaders))}) " if leaders else "this state "
