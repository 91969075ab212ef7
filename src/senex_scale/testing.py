"""Public fakes for tests of code built on Senex Scale (and for our own sequence tests).

``free_port`` and ``wait_until`` serve tests that start real servers. ``FakeClock`` is time
as data: ``sleep`` advances it, nothing waits. ``RecordingRuntime`` and
``RecordingBalancer`` keep their state in memory and record every call, and can be told to
fail a call or to report an instance unhealthy, so orchestration logic can be tested for
its failure paths. They are fakes of our own protocols, not of any server: everything that
talks to a real server is tested against that server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from senex_scale.balancers.base import Member, MemberState
from senex_scale.core.state import Sample
from senex_scale.errors import PermanentError, SourceError, TemporaryError
from senex_scale.runtimes.base import RuntimeInstance, UnitState
from senex_scale.sources.base import MetricRequest


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at ``host`` right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = 0.05,
) -> None:
    """Poll ``check`` until it is true (exceptions in ``ignore`` count as not yet); raise
    AssertionError naming ``what`` after ``timeout`` seconds. Bounded waits for real servers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ignore:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class FakeClock:
    """A clock that moves only when told (``sleep`` or ``advance``)."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once."""
        self.now += seconds

    advance = sleep


@dataclass
class RecordingRuntime:
    """An in-memory runtime: instances 1..size, all stopped at first."""

    pool: str = "web"
    size: int = 5
    running: set[int] = field(default_factory=set)
    calls: list[tuple[str, int]] = field(default_factory=list)
    fail: dict[tuple[str, int], Exception] = field(default_factory=dict)
    """(method, n) -> the exception that call raises."""
    graces: list[float | None] = field(default_factory=list)
    """The ``grace`` of every ``stop`` call."""

    def list(self) -> list[RuntimeInstance]:
        return [
            RuntimeInstance(n, UnitState.RUNNING if n in self.running else UnitState.STOPPED)
            for n in range(1, self.size + 1)
        ]

    def start(self, n: int) -> None:
        self.calls.append(("start", n))
        if ("start", n) in self.fail:
            raise self.fail[("start", n)]
        if n > self.size:
            raise PermanentError(f"no instance {n}")
        self.running.add(n)

    def stop(self, n: int, grace: float | None = None) -> None:
        self.calls.append(("stop", n))
        self.graces.append(grace)
        if ("stop", n) in self.fail:
            raise self.fail[("stop", n)]
        self.running.discard(n)


@dataclass
class RecordingHost(RecordingRuntime):
    """One host's instances of a pool on several hosts (the per-host runtimes of a
    ``SpreadRuntime``): listed with the host's name, running ones and instance 1 (as systemd
    lists the template's first instance); ``down`` fails every call as an unreachable ssh."""

    host: str = ""
    down: bool = False

    def _reach(self) -> None:
        if self.down:
            raise TemporaryError(f"ssh {self.host}: unreachable (Connection timed out)")

    def list(self) -> list[RuntimeInstance]:
        self._reach()
        return [
            RuntimeInstance(i.n, i.state, host=self.host)
            for i in super().list()
            if i.state is UnitState.RUNNING or i.n == 1
        ]

    def start(self, n: int) -> None:
        self._reach()
        super().start(n)

    def stop(self, n: int, grace: float | None = None) -> None:
        self._reach()
        super().stop(n, grace)


@dataclass
class RecordingBalancer:
    """An in-memory balancer; ``open`` sets a member's open connections."""

    pool: str = "web"
    state: dict[int, tuple[str, MemberState]] = field(default_factory=dict)
    open: dict[int, int] = field(default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)
    fail: dict[tuple[str, int], Exception] = field(default_factory=dict)

    def _call(self, what: str, n: int) -> None:
        self.calls.append((what, n))
        if (what, n) in self.fail:
            raise self.fail[(what, n)]

    def members(self) -> list[Member]:
        return [
            Member(n, address, state, self.open.get(n))
            for n, (address, state) in sorted(self.state.items())
        ]

    def add(self, n: int, address: str) -> None:
        self._call("add", n)
        self.state[n] = (address, MemberState.READY)

    def drain(self, n: int) -> None:
        self._call("drain", n)
        if n not in self.state:
            raise PermanentError(f"no member {n}")
        self.state[n] = (self.state[n][0], MemberState.DRAINING)

    def disable(self, n: int) -> None:
        self._call("disable", n)
        if n in self.state:
            self.state[n] = (self.state[n][0], MemberState.DOWN)

    def remove(self, n: int) -> None:
        self._call("remove", n)
        self.state.pop(n, None)

    def connections(self, n: int) -> int | None:
        if ("connections", n) in self.fail:
            raise TemporaryError("cannot count")
        return self.open.get(n, 0)


@dataclass
class MemorySource:
    """A metric source whose values a test sets: ``values[query]`` is the current value
    (a float for the pool, or a dict instance -> value); ``down`` makes every query fail."""

    name: str = "mem"
    values: dict[str, float | dict[str, float]] = field(default_factory=dict)
    down: str | None = None
    calls: int = 0

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        self.calls += 1
        if self.down is not None:
            raise SourceError(f"sources.{self.name}: {self.down}")
        value = self.values.get(request.metric.query)
        if value is None:
            return []
        if isinstance(value, dict):
            return [Sample(now, v, instance) for instance, v in sorted(value.items())]
        return [Sample(now, value)]

    def close(self) -> None:
        pass
