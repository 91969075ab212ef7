"""One scale sequence for every caller (the daemon, ``senex-scale scale``, the demo).

::

    scale-out, per new instance n (lowest free number):
        runtime.start(n) --> healthy within start_timeout? --yes--> balancer.add(n)   done
                                        |                                |
                                        no: runtime.stop(n), failed      add failed: stop(n), failed

    scale-in, the chosen instances (least loaded first, then the newest) all at once:
        balancer.drain(each) --> WebSockets (if any): ask each to close them, paced
          --> wait until each has no connections or drain_timeout (one wait for all)
          --> disable(n) --> runtime.stop(n) (stops in parallel) --> balancer.remove(n)
        drain failed: nothing stopped | disable failed: n is not stopped | stop failed: n
        runs, out of service (down/maint), not removed

A pool whose instances hold WebSockets (``[pools.NAME.websockets]``) also asks each drained
instance, right after the drain, to close its WebSockets with 1012 paced over ``drain_close``
(at most half the drain_timeout: ``runtimes.sessions``), so clients reconnect elsewhere
before the stop instead of being cut by it; and the wait reads the instance's own counts,
exact where the balancer cannot count (nginx), so an empty instance is stopped at once (behind
a balancer that cannot count, once ``SWITCH_OVER`` has passed). WebSockets that reach it
after the ask (a balancer still routing to it for a moment) are asked to leave too.

The balancer never sends a request to a stopped instance: an instance is added only once
healthy, and stopped only once it is out of service (drained, then disabled: HAProxy's
maintenance, so not even a cookie-sticky client reaches it; nginx's ``down``). Its open
connections go on until the stop, so the app server closes them itself (uvicorn and Daphne
send close frames on SIGTERM) rather than the balancer cutting them. Worker pools' stop gets
``drain_timeout`` as its grace (Celery's warm shutdown), and they wait for the runtime to
report the process running instead of an HTTP health check.

``guard`` is called before every step that changes something: the daemon passes its fencing
check, so a controller that lost the lead stops between two steps (``FencedError`` leaves the
sequence at once; the new leader reconciles what it left). Time comes from an injected clock
and sleep, so tests can run it on a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from senex_scale.balancers.base import Balancer, MemberState
from senex_scale.errors import FencedError, SenexError
from senex_scale.policy.models import Pool
from senex_scale.runtimes.base import (
    Runtime,
    UnitState,
    address_of,
    instance_address,
    probe_health,
)
from senex_scale.runtimes.placement import removal_order
from senex_scale.runtimes.sessions import Counts, Sessions

POLL = 0.5
"""Seconds between health or connection checks while waiting."""
LATE_ASK = 1.0
"""Seconds between asks to close the WebSockets that reached a drained instance late."""
SWITCH_OVER = 4.0
"""Seconds after a drain before an instance counted idle only by itself may stop, when the
balancer cannot count connections: ``nginx -s reload`` returns before the master has started
the new workers, and until then the old ones still send new requests to the drained
instance (docs/balancer-nginx.md measured 4 s safe under load, 0 s not). Bounded by the
pool's drain_timeout."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a sequence, for progress output and the audit log."""

    at: float
    pool: str
    n: int
    what: str
    """start, healthy, add, drain, idle, stop, remove, or failed."""
    detail: str = ""


@dataclass
class Outcome:
    """What a sequence did: instances changed, instances that failed, and every step."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every instance went through."""
        return not self.failed


class ScaleSequence:
    """Scale one pool through its runtime and balancer."""

    def __init__(
        self,
        pool_name: str,
        pool: Pool,
        runtime: Runtime,
        balancer: Balancer | None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        healthy: Callable[[str, str], bool] | None = None,
        on_step: Callable[[Step], None] | None = None,
        host: str | None = None,
        guard: Callable[[], None] | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.name = pool_name
        self.pool = pool
        self.runtime = runtime
        self.balancer = balancer
        self.clock = clock
        self.sleep = sleep
        self.healthy = healthy or probe_health
        self.on_step = on_step
        self.host = host
        """Override of where instances answer (default: the runtime's own address)."""
        self.guard = guard
        self.sessions = sessions
        """The instances' WebSocket control (a pool with ``websockets``); else None."""
        if sessions is None and pool.websockets is not None:
            self.sessions = Sessions(pool.websockets)
        self.avoid: set[int] = set()
        """Instance numbers to take last on scale-out (their start failed recently)."""

    # ------------------------------------------------------------------ helpers

    def _check(self) -> None:
        """Before a step that changes something: may we still act? (raises FencedError)"""
        if self.guard is not None:
            self.guard()

    def _step(self, outcome: Outcome, n: int, what: str, detail: str = "") -> None:
        step = Step(self.clock(), self.name, n, what, detail)
        outcome.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def address(self, n: int) -> str:
        """Where instance ``n`` answers: ``host:BASE+n`` of the host that runs it."""
        if self.host is not None:
            return instance_address(self.name, self.pool, n, self.host)
        return address_of(self.runtime, self.name, self.pool, n)

    def reserved(self) -> set[int]:
        """Numbers no new instance may take (held by a host that does not answer)."""
        reserved = getattr(self.runtime, "reserved", None)
        return set(reserved()) if callable(reserved) else set()

    def running(self) -> list[int]:
        """Instance numbers the runtime reports running or starting."""
        live = (UnitState.RUNNING, UnitState.STARTING)
        return sorted(i.n for i in self.runtime.list() if i.state in live)

    def _wait_ready(self, n: int) -> str | None:
        """None once ``n`` is healthy (web) or running (worker); else why not, at the timeout."""
        deadline = self.clock() + self.pool.start_timeout
        address = self.address(n) if self.balancer else ""
        wait = POLL / 8
        checked = self.clock()
        while True:
            if self.balancer is not None:
                if self.healthy(address, self.pool.health):
                    return None
                # a process that died at start will never answer: say so now, not at the
                # timeout (asked every POLL: listing may cost an ssh round trip)
                if self.clock() - checked >= POLL:
                    checked = self.clock()
                    state = {i.n: i.state for i in self.runtime.list()}.get(n)
                    if state is UnitState.FAILED:
                        return "the runtime reports it failed (it exited while starting)"
            else:
                states = {i.n: i.state for i in self.runtime.list()}
                if states.get(n) is UnitState.RUNNING:
                    return None
                if states.get(n) in (UnitState.FAILED, UnitState.STOPPED):
                    return f"the runtime reports it {states[n].value}"
            if self.clock() >= deadline:
                what = f"GET {address}{self.pool.health}" if self.balancer else "running"
                return f"not healthy ({what}) within {self.pool.start_timeout:g}s"
            # often at first (most instances answer within a second), then every POLL
            self.sleep(wait)
            wait = min(POLL, wait * 2)

    # ------------------------------------------------------------------ directions

    def scale_out(
        self, count: int, *, parallel: bool = False, taken: set[int] | None = None
    ) -> Outcome:
        """Start ``count`` instances (lowest free numbers), each added once healthy; one after
        another, or all at once with ``parallel`` (replacing a lost host's instances: the
        capacity is missing now). ``taken``: the numbers in use when the caller has just
        listed them (else the runtime is asked)."""
        outcome = Outcome()
        running = set(self.running()) if taken is None else set(taken)
        # not free either: numbers held by a host that does not answer, and (several hosts)
        # numbers the balancer still has a member for (the instance died, the member is not
        # removed yet: a new instance elsewhere could not be added under that name); the
        # range grows by as many, so that max instances can still run
        blocked = self.reserved() - running
        if callable(getattr(self.runtime, "host_of", None)):
            # on several hosts the same number may come back elsewhere: another address
            blocked |= self._member_numbers() - running
        top = self.pool.max + len(blocked)
        free = [
            n
            for n in range(1, top + 1)
            if n not in running and n not in blocked and self._port_ok(n)
        ]
        candidates = sorted(free, key=lambda n: (n in self.avoid, n))[:count]
        if parallel and len(candidates) > 1:
            with ThreadPoolExecutor(len(candidates), thread_name_prefix=f"start-{self.name}") as ex:
                list(ex.map(lambda n: self._bring_in(n, outcome, start=True), candidates))
        else:
            for n in candidates:
                self._bring_in(n, outcome, start=True)
        if len(candidates) < count:
            outcome.failed[0] = (
                f"only {len(candidates)} free instance numbers below max {self.pool.max}"
            )
        return outcome

    def _bring_in(self, n: int, outcome: Outcome, *, start: bool) -> None:
        """(Start,) wait until healthy, add; on any failure stop it again (never added)."""
        try:
            if start:
                self._check()
                self.runtime.start(n)
                self._step(outcome, n, "start")
            why = self._wait_ready(n)
            if why is not None:
                raise _StepFailedError(why)
            self._step(outcome, n, "healthy")
            if self.balancer is not None:
                self._check()
                self.balancer.add(n, self.address(n))
                self._step(outcome, n, "add")
            outcome.done.append(n)
        except FencedError:
            raise
        except (SenexError, _StepFailedError) as exc:
            outcome.failed[n] = str(exc)
            self._step(outcome, n, "failed", str(exc))
            self._stop_quietly(n, outcome)

    def scale_in(self, count: int) -> Outcome:
        """Drain, wait, disable, stop and remove ``count`` instances: those out of service
        first (drained for their health, not in the balancer), then the least loaded, then
        the newest; the chosen instances drain at the same time (one wait for all)."""
        outcome = Outcome()
        running = self.running()
        load = {n: self._open_count(n) for n in running}
        serving = self._serving()
        order = sorted(
            running,
            key=lambda n: (n in serving, load[n] if load[n] is not None else 0, -n),
        )
        self._take_out(self._spread_pick(order, serving, count), outcome, drain=True)
        return outcome

    def _spread_pick(self, order: list[int], serving: set[int], count: int) -> list[int]:
        """The first ``count`` of ``order``; on several hosts, out-of-service ones first and
        then from the host with the most (placement.py), so the hosts stay even."""
        host_of = getattr(self.runtime, "host_of", None)
        counts = getattr(self.runtime, "counts", None)
        hosts = getattr(self.runtime, "order", None)
        if not callable(host_of) or not callable(counts) or hosts is None:
            return order[:count]
        idle = [n for n in order if n not in serving][:count]
        rest = [n for n in order if n not in idle]
        left = dict(counts())
        for n in idle:
            where = host_of(n)
            if where is not None:
                left[where] = left.get(where, 0) - 1
        return idle + removal_order(rest, host_of, left, hosts, count - len(idle))

    def _port_ok(self, n: int) -> bool:
        port = self.pool.port_of(n)
        return port is None or port <= 65535

    def _take_out(self, chosen: list[int], outcome: Outcome, *, drain: bool) -> None:
        """(Drain,) wait until idle, disable, stop, remove; failures go into ``outcome``."""
        draining = []
        for n in chosen:
            try:
                if self.balancer is not None and drain:
                    self._check()
                    self.balancer.drain(n)
                    self._step(outcome, n, "drain")
                draining.append(n)
            except FencedError:
                raise
            except SenexError as exc:
                outcome.failed[n] = str(exc)
                self._step(outcome, n, "failed", str(exc))
        if self.balancer is not None:
            self._close_websockets(draining, outcome)
            for n, why in self._wait_idle(draining).items():
                self._step(outcome, n, "idle", why)
        stopping = []
        for n in draining:
            try:
                if self.balancer is not None:
                    self._check()
                    self.balancer.disable(n)
                    self._step(outcome, n, "disable")
                stopping.append(n)
            except FencedError:
                raise
            except SenexError as exc:
                outcome.failed[n] = f"not stopped: {exc}"
                self._step(outcome, n, "failed", f"disable: {exc}")
        if not stopping:
            return
        self._check()
        if len(stopping) == 1:
            self._stop_one(stopping[0], outcome)
        else:
            # stops take the runtime's graceful-stop time each: all at once, not in a row
            with ThreadPoolExecutor(len(stopping), thread_name_prefix=f"stop-{self.name}") as ex:
                list(ex.map(lambda n: self._stop_one(n, outcome), stopping))
        for n in stopping:
            if n in outcome.failed:
                continue
            try:
                if self.balancer is not None:
                    self._check()
                    self.balancer.remove(n)
                    self._step(outcome, n, "remove")
                outcome.done.append(n)
            except FencedError:
                raise
            except SenexError as exc:
                # stopped and out of service (down/maint): live reconcile removes it later
                outcome.failed[n] = f"stopped, not removed: {exc}"
                self._step(outcome, n, "failed", f"remove: {exc}")

    def _stop_one(self, n: int, outcome: Outcome) -> None:
        # a worker's graceful stop is its drain: drain_timeout bounds its warm shutdown
        grace = self.pool.drain_timeout if self.balancer is None else None
        try:
            self.runtime.stop(n, grace=grace)
            self._step(outcome, n, "stop")
        except SenexError as exc:
            outcome.failed[n] = str(exc)
            self._step(outcome, n, "failed", f"stop: {exc}")

    def scale_to(self, desired: int) -> Outcome:
        """Scale out or in to ``desired`` running instances."""
        current = len(self.running())
        if desired > current:
            return self.scale_out(desired - current)
        if desired < current:
            return self.scale_in(current - desired)
        return Outcome()

    # ------------------------------------------------------------------ repairs

    def adopt(self, n: int) -> Outcome:
        """Finish a start a crash cut short: ``n`` runs but is not in the balancer. Added once
        healthy (bounded by start_timeout); stopped when it never becomes healthy."""
        outcome = Outcome()
        self._bring_in(n, outcome, start=False)
        return outcome

    def retire(self, n: int) -> Outcome:
        """Finish a scale-in a crash cut short: ``n`` is draining; wait, remove, stop."""
        outcome = Outcome()
        self._take_out([n], outcome, drain=False)
        return outcome

    def forget(self, n: int) -> Outcome:
        """Remove member ``n`` whose instance is not running (the balancer must never point
        at a stopped instance)."""
        outcome = Outcome()
        if self.balancer is None:
            return outcome
        try:
            self._check()
            self.balancer.remove(n)
            self._step(outcome, n, "remove", "not running")
            outcome.done.append(n)
        except FencedError:
            raise
        except SenexError as exc:
            outcome.failed[n] = str(exc)
            self._step(outcome, n, "failed", str(exc))
        return outcome

    # ------------------------------------------------------------------ waiting

    def _serving(self) -> set[int]:
        """Members that get new requests (everything, without a balancer)."""
        if self.balancer is None:
            return set(self.running())
        try:
            return {m.n for m in self.balancer.members() if m.state is MemberState.READY}
        except SenexError:
            return set(self.running())

    def _member_numbers(self) -> set[int]:
        if self.balancer is None:
            return set()
        try:
            return {m.n for m in self.balancer.members()}
        except SenexError:
            return set()

    def _connections(self, n: int) -> int | None:
        if self.balancer is None:
            return None
        try:
            return self.balancer.connections(n)
        except SenexError:
            return None

    def drain_close_over(self) -> float:
        """Seconds over which a drained instance closes its WebSockets."""
        if self.pool.websockets is None:
            return 0.0
        return min(self.pool.websockets.drain_close, self.pool.drain_timeout / 2)

    def _close_websockets(self, draining: list[int], outcome: Outcome) -> None:
        """Ask each drained instance to close its WebSockets with 1012 over the window; one
        that does not answer is waited for as before (drain_timeout bounds it)."""
        sessions = self.sessions
        if sessions is None or not draining:
            return
        over = self.drain_close_over()

        def ask(n: int) -> None:
            try:
                self._check()
                closing = sessions.close(self.address(n), None, over, "drain")
            except FencedError:
                raise
            except SenexError as exc:
                self._step(outcome, n, "close", f"not asked: {exc}")
                return
            self._step(outcome, n, "close", f"{closing} WebSockets over {over:g}s")

        if len(draining) == 1:
            ask(draining[0])
            return
        with ThreadPoolExecutor(len(draining), thread_name_prefix=f"close-{self.name}") as ex:
            list(ex.map(ask, draining))

    def _open_count(self, n: int) -> int | None:
        """Connections open on ``n``: the more of what the balancer and the instance itself
        say (None when neither can tell)."""
        return _larger(self._connections(n), self._instance_counts(n))

    def _instance_counts(self, n: int) -> Counts | None:
        if self.sessions is None:
            return None
        return self.sessions.counts(self.address(n))

    def _close_late(self, n: int, counts: Counts | None, asked: dict[int, float]) -> None:
        """WebSockets that reached ``n`` after its close was asked (a balancer still routing
        to it for a moment, e.g. nginx mid-reload): asked to leave too, at most once a
        second, so the drain does not wait for them until drain_timeout."""
        if self.sessions is None or counts is None or counts.websockets <= counts.closing:
            return
        if self.clock() - asked.get(n, 0.0) < LATE_ASK:
            return
        asked[n] = self.clock()
        try:
            self._check()
            self.sessions.close(self.address(n), None, LATE_ASK / 2, "drain")
        except FencedError:
            raise
        except SenexError:
            return  # waited for as before: drain_timeout bounds it

    def _wait_idle(self, draining: list[int]) -> dict[int, str]:
        """Wait until every instance of ``draining`` has no open connections, or until
        drain_timeout; say per instance which happened."""
        started = self.clock()
        deadline = started + self.pool.drain_timeout
        switched = started + min(SWITCH_OVER, self.pool.drain_timeout)
        waiting = list(draining)
        said: dict[int, str] = {}
        asked = dict.fromkeys(draining, started)
        while waiting:
            for n in list(waiting):
                by_balancer = self._connections(n)
                counts = self._instance_counts(n)
                self._close_late(n, counts, asked)
                open_now = _larger(by_balancer, counts)
                if open_now == 0 and by_balancer is None and self.clock() < switched:
                    continue  # the balancer may still route to it (nginx mid-reload)
                if open_now == 0:
                    said[n] = f"no connections after {self.clock() - started:.1f}s"
                    waiting.remove(n)
                elif self.clock() >= deadline:
                    if open_now is None:
                        said[n] = (
                            f"drain_timeout {self.pool.drain_timeout:g}s passed "
                            "(neither the balancer nor the instance counts connections)"
                        )
                    else:
                        said[n] = (
                            f"drain_timeout {self.pool.drain_timeout:g}s passed "
                            f"with {open_now} open"
                        )
                    waiting.remove(n)
            if waiting:
                self.sleep(POLL)
        return said

    def _stop_quietly(self, n: int, outcome: Outcome) -> None:
        try:
            self.runtime.stop(n)
            self._step(outcome, n, "stop", "after a failed start")
        except SenexError as exc:
            self._step(outcome, n, "failed", f"stop after a failed start: {exc}")


def _larger(by_balancer: int | None, counts: Counts | None) -> int | None:
    """The more of the balancer's count and the instance's own (None: neither known)."""
    known = [c for c in (by_balancer, None if counts is None else counts.total) if c is not None]
    return max(known) if known else None


class _StepFailedError(Exception):
    """A step that did not succeed (not a bug): carried into the outcome."""
