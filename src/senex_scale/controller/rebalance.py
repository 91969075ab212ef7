"""Rebalance: spread long-lived WebSockets after a scale-out, a bounded share per interval.

A WebSocket stays where it was opened. After 2 -> 4 instances the two old ones hold every
dashboard and the new ones none, for hours; the balancer's least-connections choice helps only
the connections opened from now on. So every interval, for a pool with
``[pools.NAME.websockets] rebalance = true`` (the default when the table is there)::

    counts = each READY member's open WebSockets (its control endpoint: runtimes.sessions),
             less those it is closing already
    mean   = total / members
    uneven = some member further than rebalance_tolerance x mean from the mean (above or
             below), by at least rebalance_min connections
    shed   = then every member above the mean closes (count - mean)       (plan(), pure)
    bound  = at most ceil(rebalance_share x total) per interval, shared in proportion
    ask    = POST close {count, over: 0.8 x interval}: 1012, paced; the clients reconnect
             and the balancer (HAProxy leastconn, nginx least_conn) gives them the emptiest

Nothing is asked while the pool has a job in flight (a scale action or a repair), for members
that are draining or failing their checks, or when a member cannot be counted (its count is
unknown, so the mean would be wrong). It runs as the pool's job on the workers, so it never
interleaves with a scale action of the same pool.

Rebalancing that does not spread (the clients come back to the instance that closed them:
a sticky cookie, ``ip_hash``, a balancer not choosing by connections) would only churn. After
``FUTILE`` asks in a row without the spread (the largest count less the smallest) shrinking,
the pool's rebalancing pauses for ``PAUSE`` intervals and the log says why.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from senex_scale.balancers.base import MemberState
from senex_scale.controller.act import Workers
from senex_scale.controller.context import Context, PoolHandle
from senex_scale.errors import SenexError
from senex_scale.policy.models import WebSockets
from senex_scale.runtimes.sessions import Sessions

PACE = 0.8
"""Closes are spread over this share of the interval (done before the next look)."""
FUTILE = 4
"""Asks in a row that did not shrink the spread before the pool's rebalancing pauses."""
PAUSE = 20
"""Intervals a futile rebalancing pauses for."""


def plan(counts: Mapping[int, int], settings: WebSockets) -> dict[int, int]:
    """How many WebSockets each instance should close now (only those above the mean).

    Nothing moves while every instance is within ``rebalance_tolerance`` of the mean, or the
    largest deviation is under ``rebalance_min`` connections. Otherwise every instance above
    the mean sheds its excess (whole connections), at most ``ceil(rebalance_share x total)``
    in all, shared in proportion to the excess. An instance below the mean counts too: after
    2 -> 3 with {15, 15, 10} the new one is 25 % short while the old ones are only 12 % over.

    ``counts``: open WebSockets per serving instance (none closing). Pure: the same counts
    give the same answer, largest excess first when the bound cuts.
    """
    if len(counts) < 2:
        return {}
    total = sum(counts.values())
    if total <= 0:
        return {}
    mean = total / len(counts)
    worst = max(abs(c - mean) for c in counts.values())
    if worst <= settings.rebalance_tolerance * mean or worst < settings.rebalance_min:
        return {}
    wants = {n: math.floor(c - mean) for n, c in counts.items() if c > mean}
    wants = {n: w for n, w in wants.items() if w > 0}
    budget = math.ceil(settings.rebalance_share * total)
    asked = sum(wants.values())
    if asked <= budget:
        return wants
    # share the budget in proportion to the excess (largest remainders, then the larger
    # excess, then the lower number: deterministic)
    exact = {n: w * budget / asked for n, w in wants.items()}
    given = {n: math.floor(x) for n, x in exact.items()}
    left = budget - sum(given.values())
    order = sorted(exact, key=lambda n: (-(exact[n] - given[n]), -wants[n], n))
    for n in order[:left]:
        given[n] += 1
    return {n: g for n, g in given.items() if g > 0}


class Rebalancer:
    """Submits a rebalance job per pool each tick, when the pool is idle."""

    def __init__(self, ctx: Context, workers: Workers) -> None:
        self.ctx = ctx
        self.workers = workers
        self._spreads: dict[str, list[int]] = {}
        """Per pool: the spread at each ask since it last shrank."""
        self._paused_until: dict[str, float] = {}

    def tick(self, busy: Mapping[str, str]) -> list[str]:
        """Start a rebalance job for each pool that wants one; ``busy``: this tick's outcome
        per pool (a pool that started a job this tick is left alone). The pools started."""
        started = []
        for name, handle in self.ctx.pools.items():
            ws = handle.spec.websockets
            if ws is None or not ws.rebalance or handle.balancer is None:
                continue
            if handle.error is not None or busy.get(name) == "running":
                continue
            if self.workers.busy(name) is not None:
                continue
            if self.workers.submit(name, "rebalance", functools.partial(self._job, handle)):
                started.append(name)
        return started

    def _job(self, handle: PoolHandle) -> None:
        self.run(handle)

    def run(self, handle: PoolHandle) -> dict[int, int]:
        """One look at the pool: counts, plan, closes asked. What was asked per instance."""
        ctx = self.ctx
        settings = handle.spec.websockets
        assert settings is not None and handle.balancer is not None
        try:
            members = [m for m in handle.balancer.members() if m.state is MemberState.READY]
        except SenexError as exc:
            ctx.log.warning("rebalance: no members", pool=handle.name, error=str(exc))
            return {}
        if len(members) < 2:
            return {}
        sessions = Sessions(settings)
        address = {m.n: m.address for m in members}
        with ThreadPoolExecutor(min(8, len(members)), thread_name_prefix="ws-count") as ex:
            found = dict(zip(address, ex.map(sessions.counts, address.values()), strict=True))
        if any(c is None for c in found.values()):
            unknown = sorted(n for n, c in found.items() if c is None)
            ctx.log.info("rebalance: not every member counted", pool=handle.name, unknown=unknown)
            return {}
        counts = {n: c.websockets - c.closing for n, c in found.items() if c is not None}
        wanted = plan(counts, settings)
        if not wanted:
            self._spreads.pop(handle.name, None)
            return {}
        if self._futile(handle.name, max(counts.values()) - min(counts.values())):
            return {}
        over = PACE * ctx.policy.controller.interval
        asked: dict[int, int] = {}
        for n, count in sorted(wanted.items()):
            ctx.guard()
            try:
                asked[n] = sessions.close(address[n], count, over, "rebalance")
            except SenexError as exc:
                ctx.log.warning("rebalance: close not taken", pool=handle.name, n=n, error=str(exc))
                continue
            ctx.metrics.websockets_rebalanced.labels(handle.name).inc(asked[n])
        ctx.log.info(
            "rebalance",
            pool=handle.name,
            counts={str(n): c for n, c in sorted(counts.items())},
            closing={str(n): c for n, c in asked.items()},
            over=round(over, 1),
        )
        return asked

    def _futile(self, pool: str, spread: int) -> bool:
        """True while the pool's rebalancing is paused (it did not spread anything)."""
        now = self.ctx.clock()
        if now < self._paused_until.get(pool, 0.0):
            return True
        seen = self._spreads.setdefault(pool, [])
        if seen and spread < min(seen):
            seen.clear()
        seen.append(spread)
        if len(seen) <= FUTILE:
            return False
        interval = self.ctx.policy.controller.interval
        self._paused_until[pool] = now + PAUSE * interval
        seen.clear()
        self.ctx.log.warning(
            "rebalance paused: the closed WebSockets came back to the same instances",
            pool=pool,
            spread=spread,
            asks=FUTILE,
            pause=round(PAUSE * interval, 1),
            hint="is the balancer sticky (cookie, ip_hash) or not choosing by connections "
            "(leastconn / least_conn)?",
        )
        return True
