"""One pool on several hosts: a runtime per host (systemd over each host's transport) behind
the Runtime protocol, with placement and the hosts' reachability.

::

    [hosts.web01] address = "10.0.0.11"        [pools.django] hosts = ["web01", "web02"]
    [hosts.web02] address = "10.0.0.12"                       runtime = { type = "systemd", ... }

    list()    every host listed at once (threads); an instance is (host, n) with n unique in
              the pool. A host that does not answer is *unreachable*: its last listing
              stands in (its instances may well be serving: an ssh outage is not a dead
              host) and it is asked again at most every ``RECHECK`` seconds. Every host
              failing at once is an error (the pool cannot be listed: nothing is decided).
    lost      the controller's verdict (reconcile.py): unreachable AND every member on it
              fails its health probe. Its instances leave the listing, their numbers stay
              reserved (a host that returns may still run them: no number is used twice),
              and the pool is brought back to its count on the other hosts.
    returned  a lost host that answers again: instances it still runs under reserved numbers
              are *extras* (replaced meanwhile) that the controller stops; the numbers are
              free again once they are gone.
    start(n)  on the host placement chooses (placement.py: spread, within each host's max)
    stop(n)   on the host that runs n

Why not one runtime object per (host, pool) in the controller: the scale sequence, the
reconciler and the audit log all work per pool, and a pool's count is what the core decides;
keeping hosts inside the pool's runtime keeps every one of them unchanged but the address.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from senex_scale.errors import PermanentError, SenexError, TemporaryError
from senex_scale.policy.models import Host, Pool
from senex_scale.runtimes.base import Runtime, RuntimeInstance, UnitState
from senex_scale.runtimes.placement import choose_host

RECHECK = 5.0
"""Seconds between attempts to list a host that did not answer (each costs up to its
``connect_timeout``, and the sequence lists the pool every half second while it waits)."""

_LIVE = (UnitState.RUNNING, UnitState.STARTING)


@dataclass
class HostState:
    """What the pool's runtime knows of one host."""

    reachable: bool | None = None
    """None until first asked."""
    error: str | None = None
    since: float | None = None
    """Unreachable since (epoch seconds)."""
    checked: float = 0.0
    lost: bool = False
    reserved: set[int] = field(default_factory=set)
    """Numbers the host ran when it was lost (not reused until it is seen without them)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "error": self.error,
            "since": self.since,
            "lost": self.lost,
            "reserved": sorted(self.reserved),
        }


class SpreadRuntime:
    """The instances of one pool over its hosts (see the module docstring)."""

    def __init__(
        self,
        pool_name: str,
        pool: Pool,
        hosts: Mapping[str, Host],
        *,
        runtimes: Mapping[str, Runtime] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool_name
        self._pool = pool
        self.order = [entry.name for entry in pool.hosts]
        missing = [name for name in self.order if name not in hosts]
        if missing:
            raise PermanentError(f'pools.{pool_name}.hosts: unknown host "{missing[0]}"')
        self.hosts = {name: hosts[name] for name in self.order}
        self.maxima = {name: pool.host_max(name) for name in self.order}
        if runtimes is None:
            from senex_scale.runtimes.systemd import SystemdRuntime

            assert pool.runtime is not None
            runtimes = {
                name: SystemdRuntime(
                    pool_name, pool, pool.runtime.options, host=self.hosts[name], host_name=name
                )
                for name in self.order
            }
        self.runtimes = dict(runtimes)
        self.clock = clock
        self.state = {name: HostState() for name in self.order}
        self._last: dict[str, list[RuntimeInstance]] = {name: [] for name in self.order}
        self._where: dict[int, str] = {}
        self.duplicates: list[RuntimeInstance] = []
        """Instances whose number another host runs too (seen in the last listing)."""
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SpreadRuntime(pool={self.pool!r}, hosts={self.order!r})"

    # ------------------------------------------------------------------ Runtime

    def list(self) -> list[RuntimeInstance]:
        """The pool's instances on every host (see the module docstring)."""
        now = self.clock()
        ask = [h for h in self.order if self._due(h, now)]
        results: dict[str, builtins.list[RuntimeInstance] | SenexError] = {}
        if ask:
            with ThreadPoolExecutor(len(ask), thread_name_prefix=f"list-{self.pool}") as ex:
                futures = {h: ex.submit(self.runtimes[h].list) for h in ask}
                for host, future in futures.items():
                    try:
                        results[host] = future.result()
                    except SenexError as exc:
                        results[host] = exc
        with self._lock:
            for host, result in results.items():
                self._note(host, result, now)
            if all(self.state[h].reachable is False for h in self.order):
                errors = "; ".join(f"{h}: {self.state[h].error}" for h in self.order)
                raise TemporaryError(f"pool {self.pool}: no host answers ({errors})")
            seen: dict[int, RuntimeInstance] = {}
            idle: dict[int, RuntimeInstance] = {}
            duplicates: list[RuntimeInstance] = []
            # a live number's earlier home first, so a duplicate is the newcomer; stopped
            # units (every host knows a stopped django@1) only fill numbers nobody runs
            for host in self.order:
                state = self.state[host]
                if state.lost and not state.reachable:
                    continue
                for item in self._last[host]:
                    if state.lost and item.n in state.reserved:
                        continue  # an extra of a returned host: extras()
                    if item.state not in _LIVE:
                        idle.setdefault(item.n, item)
                        continue
                    other = seen.get(item.n)
                    if other is None:
                        seen[item.n] = item
                    elif self._where.get(item.n) == host:
                        duplicates.append(other)
                        seen[item.n] = item
                    else:
                        duplicates.append(item)
            for n, item in seen.items():
                if item.host is not None:
                    self._where[n] = item.host
            for n, item in idle.items():
                seen.setdefault(n, item)
            self.duplicates = duplicates
            return [seen[n] for n in sorted(seen)]

    def start(self, n: int) -> None:
        """Start ``n`` on the host placement chooses."""
        with self._lock:
            counts = self.counts()
            host = choose_host(self.order, counts, self.maxima, self.placeable)
            if host is None:
                raise TemporaryError(
                    f"pool {self.pool}: no reachable host has room for another instance "
                    f"({self.describe_room(counts)})"
                )
            if n in self._where and self._where[n] != host and self._runs(n):
                raise PermanentError(f"pool {self.pool}: {n} runs on {self._where[n]} already")
            # placed before it starts, so that starts running at once spread too
            self._where[n] = host
            self._last[host] = [i for i in self._last[host] if i.n != n]
            self._last[host].append(RuntimeInstance(n, UnitState.STARTING, host=host))
        try:
            self.runtimes[host].start(n)
        except SenexError:
            with self._lock:
                self._last[host] = [i for i in self._last[host] if i.n != n]
            raise

    def stop(self, n: int, grace: float | None = None) -> None:
        """Stop ``n`` on the host that runs it."""
        host = self.host_of(n)
        if host is None:
            return  # never placed (its start failed before a host took it): nothing runs
        self.stop_on(host, n, grace)

    def stop_on(self, host: str, n: int, grace: float | None = None) -> None:
        """Stop ``n`` on ``host`` (also a duplicate or an extra of a returned host)."""
        self.runtimes[host].stop(n, grace=grace)
        with self._lock:
            self._last[host] = [i for i in self._last[host] if i.n != n]
            if self._where.get(n) == host:
                self._where.pop(n, None)

    def address(self, n: int) -> str:
        """``HOSTADDRESS:BASE+n`` of the host that runs ``n``."""
        host = self.host_of(n)
        if host is None:
            raise TemporaryError(f"pool {self.pool}: instance {n} is on no host listed")
        return self.address_on(host, n)

    # ------------------------------------------------------------------ hosts

    def address_on(self, host: str, n: int) -> str:
        """Where ``n`` answers if it runs on ``host``."""
        return f"{self.hosts[host].address}:{self._pool.port_of(n)}"

    def host_of(self, n: int) -> str | None:
        """The host that runs ``n`` (as last listed or started)."""
        with self._lock:
            return self._where.get(n)

    def counts(self) -> dict[str, int]:
        """Live instances per host (lost hosts count none)."""
        with self._lock:
            return {
                h: sum(1 for i in self._last[h] if i.state in _LIVE)
                if not self.state[h].lost
                else 0
                for h in self.order
            }

    def live_numbers(self) -> set[int]:
        """Numbers running or starting on hosts not lost, as last listed or started."""
        with self._lock:
            return {
                i.n
                for h in self.order
                if not self.state[h].lost
                for i in self._last[h]
                if i.state in _LIVE
            }

    def placeable(self, host: str) -> bool:
        """May a new instance go to ``host`` now (answering, not lost)?"""
        state = self.state[host]
        return state.reachable is not False and not state.lost

    def reserved(self) -> set[int]:
        """Numbers not to give a new instance: held by lost hosts, or by unreachable ones."""
        with self._lock:
            numbers: set[int] = set()
            for host in self.order:
                state = self.state[host]
                numbers |= state.reserved
                if state.reachable is False:
                    numbers |= {i.n for i in self._last[host]}
            return numbers

    def unreachable(self) -> builtins.list[str]:
        """Hosts that did not answer their last listing and are not declared lost yet."""
        with self._lock:
            return [
                h for h in self.order if self.state[h].reachable is False and not self.state[h].lost
            ]

    def on_host(self, host: str) -> builtins.list[int]:
        """Numbers ``host`` ran when last listed."""
        with self._lock:
            return sorted(i.n for i in self._last[host] if i.state in _LIVE)

    def declare_lost(self, host: str) -> builtins.list[int]:
        """``host`` is gone: its instances stop counting; their numbers stay reserved."""
        with self._lock:
            state = self.state[host]
            numbers = {i.n for i in self._last[host] if i.state in _LIVE}
            state.lost = True
            state.reserved |= numbers
            for n in numbers:
                if self._where.get(n) == host:
                    self._where.pop(n)
            return sorted(numbers)

    def extras(self) -> builtins.list[tuple[str, int]]:
        """(host, n) a returned host still runs under a reserved number, or that duplicate
        another host's number: to be stopped (they are not in the balancer)."""
        with self._lock:
            found = [
                (h, i.n)
                for h in self.order
                if self.state[h].lost and self.state[h].reachable
                for i in self._last[h]
                if i.n in self.state[h].reserved and i.state in _LIVE
            ]
            found += [(i.host, i.n) for i in self.duplicates if i.host is not None]
            return found

    def report(self) -> builtins.list[dict[str, Any]]:
        """Per host: address, reachable, lost, last error, instances."""
        with self._lock:
            return [
                {
                    "host": h,
                    "address": self.hosts[h].address,
                    "instances": self.on_host(h) if not self.state[h].lost else [],
                    "max": self.maxima[h],
                    **self.state[h].as_dict(),
                }
                for h in self.order
            ]

    def describe_room(self, counts: Mapping[str, int] | None = None) -> str:
        counts = counts if counts is not None else self.counts()
        parts = []
        for h in self.order:
            state = self.state[h]
            if state.lost:
                parts.append(f"{h} lost")
            elif state.reachable is False:
                parts.append(f"{h} unreachable")
            else:
                limit = self.maxima[h]
                parts.append(f"{h} {counts.get(h, 0)}/{limit if limit is not None else '-'}")
        return ", ".join(parts)

    # ------------------------------------------------------------------ internals

    def _due(self, host: str, now: float) -> bool:
        state = self.state[host]
        return state.reachable is not False or now - state.checked >= RECHECK

    def _runs(self, n: int) -> bool:
        host = self._where.get(n)
        return host is not None and any(i.n == n and i.state in _LIVE for i in self._last[host])

    def _note(
        self, host: str, result: builtins.list[RuntimeInstance] | SenexError, now: float
    ) -> None:
        state = self.state[host]
        state.checked = now
        if isinstance(result, SenexError):
            if state.reachable is not False:
                state.since = now
            state.reachable = False
            state.error = str(result)
            return
        state.reachable, state.error, state.since = True, None, None
        self._last[host] = [i if i.host == host else _on(i, host) for i in result]
        if state.lost:
            # returned: numbers it no longer runs are free again
            running = {i.n for i in result if i.state in _LIVE}
            state.reserved &= running
            if not state.reserved:
                state.lost = False


def _on(item: RuntimeInstance, host: str) -> RuntimeInstance:
    return RuntimeInstance(item.n, item.state, item.started_at, item.pid, host)
