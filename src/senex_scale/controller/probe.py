"""Probe: the health of every serving instance, in the background, every interval.

A process can live and still not serve (frozen by SIGSTOP, deadlocked, its event loop
blocked): the runtime says "running" and nginx, which only checks passively, keeps sending it
requests. So each web pool's members are probed (``GET /health/``, all at once, a short
timeout) on a thread of their own, never on the tick; the tick reads the results::

    member READY, SICK_AFTER probes failed in a row   -> sick: a repair takes it out of
                                                         service (drain); from then on it is
                                                         not capacity (the core may scale out
                                                         a replacement)
    member taken out for its health, probes pass again -> a repair puts it back (add)

Why not the balancer's own checks: HAProxy has them, nginx open source has only passive
ones, and the controller must count capacity the same way behind either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from senex_scale.controller.context import Context
from senex_scale.errors import SenexError
from senex_scale.runtimes.base import instance_address, probe_health

SICK_AFTER = 3
"""Failed probes in a row before a member counts as sick (a timeout or two under load is not
a verdict)."""


@dataclass
class Health:
    """One member's probe record."""

    failures: int = 0
    """Failed probes in a row (0 after a success)."""
    probes: int = 0


class Prober:
    """Probes the members of every pool with a balancer, every ``interval`` seconds."""

    def __init__(self, ctx: Context, probe: Callable[[str, str], bool] | None = None) -> None:
        self.ctx = ctx
        self.probe = probe or ctx.healthy or _probe
        self._health: dict[tuple[str, int], Health] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="health-probes", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_all()
            self._stop.wait(self.ctx.policy.controller.interval)

    def probe_all(self) -> None:
        """One round over every member of every pool with a balancer."""
        targets: list[tuple[str, int, str, str]] = []
        for name, handle in list(self.ctx.pools.items()):
            if handle.balancer is None:
                continue
            try:
                members = handle.balancer.members()
            except SenexError:
                continue  # the tick reports the pool as broken
            for member in members:
                try:
                    # on several hosts the member's address says which host; else the port
                    address = (
                        member.address
                        if handle.spec.hosts
                        else instance_address(name, handle.spec, member.n)
                    )
                except SenexError:
                    address = member.address
                targets.append((name, member.n, address, handle.spec.health))
        if not targets:
            return
        with ThreadPoolExecutor(min(16, len(targets)), thread_name_prefix="probe") as pool:
            results = list(pool.map(lambda t: self.probe(t[2], t[3]), targets))
        seen = set()
        with self._lock:
            for (name, n, _address, _path), ok in zip(targets, results, strict=True):
                key = (name, n)
                seen.add(key)
                record = self._health.setdefault(key, Health())
                record.probes += 1
                record.failures = 0 if ok else record.failures + 1
            for key in set(self._health) - seen:
                del self._health[key]

    def sick(self, pool: str) -> set[int]:
        """Members of ``pool`` that failed SICK_AFTER probes in a row."""
        with self._lock:
            return {
                n for (p, n), h in self._health.items() if p == pool and h.failures >= SICK_AFTER
            }

    def failing(self, pool: str, n: int) -> bool:
        """``n`` failed its last probe (not yet a verdict: see ``sick``)."""
        with self._lock:
            record = self._health.get((pool, n))
            return record is not None and record.failures > 0

    def healthy(self, pool: str, n: int) -> bool:
        """``n`` passed its last probe."""
        with self._lock:
            record = self._health.get((pool, n))
            return record is not None and record.probes > 0 and record.failures == 0


def _probe(address: str, path: str) -> bool:
    return probe_health(address, path, timeout=2.0)
