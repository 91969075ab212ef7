"""A balancer on each web host: one pool, one nginx (or HAProxy) per host of the pool.

``balancer = { type = "nginx", per_host = true, ... }`` on a pool with ``hosts``: each host
runs its own nginx whose upstream holds that host's instances only (the strategy's "nginx on
every web server"; a balancer host or DNS in front spreads clients over the hosts).
``build_balancer`` builds one inner balancer per host of the pool, each with ``host = NAME``
(its file written and checked on that host, through its transport) and ``{host}`` and
``{address}`` in the string settings filled in with the host's name and address::

                        PerHostBalancer (pool django)
               add(n, "10.0.0.11:8001")       drain / disable / remove / connections (n)
                        |  by the address's host          |  to every host listing n
          +-------------+-------------+        members(): the union, each Member's address
          v                           v                   telling its host
    nginx on web01 (10.0.0.11)   nginx on web02 (10.0.0.12)
    django@1, django@3           django@2

Instance numbers are unique within a pool across its hosts, so a member ``n`` is normally on
exactly one host; should two hosts list it (a hand edit), ``members()`` lists both and
``drain``/``disable``/``remove`` act on each. A member's address is the one the controller
gives (``HOSTADDRESS:PORT``), which the host's own balancer reaches as well.

Failures: an address on none of the pool's hosts is a ``PermanentError``. A host whose
balancer cannot be reached is left out of ``members()`` (named in ``unreachable``): it is
that host's own balancer, down with its host, and the other hosts go on (the controller
decides whether the host is lost: ``runtimes/spread.py``). Every host failing, or an
operation on ``n`` that is on no reachable host, is a ``TemporaryError`` naming the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from senex_scale.balancers.base import PLACEHOLDERS, Balancer, Member
from senex_scale.errors import PermanentError, PolicyError, SenexError, TemporaryError

if TYPE_CHECKING:
    from senex_scale.policy.models import Host, Pool

T = TypeVar("T")


class PerHostBalancer:
    """One pool's inner balancers, one per host (see the module docstring)."""

    def __init__(
        self, pool_name: str, inner: Mapping[str, Balancer], addresses: Mapping[str, str]
    ) -> None:
        """``inner``: host name -> that host's balancer, in the pool's order; ``addresses``:
        host name -> the address its instances answer on (``Host.address``)."""
        self.pool = pool_name
        self.inner = dict(inner)
        self.addresses = {name: addresses[name] for name in self.inner}
        self._by_address = {_bare(a): name for name, a in self.addresses.items()}
        self._where: dict[int, str] = {}
        """Instance -> the host whose balancer listed it last (for ``connections``)."""
        self.unreachable: dict[str, str] = {}
        """Hosts whose balancer did not answer the last ``members()``, with the error."""

    def __repr__(self) -> str:
        return f"PerHostBalancer(pool={self.pool!r}, hosts={list(self.inner)!r})"

    @classmethod
    def build(
        cls, pool_name: str, pool: Pool, hosts: Mapping[str, Host], balancer_cls: Any
    ) -> PerHostBalancer:
        """The inner balancers of ``pool`` (``per_host = true``), built by ``balancer_cls``
        with ``host`` set to each host of the pool."""
        assert pool.balancer is not None
        options = {k: v for k, v in pool.balancer.options.items() if k != "per_host"}
        inner: dict[str, Balancer] = {}
        addresses: dict[str, str] = {}
        for i, entry in enumerate(pool.hosts):
            host = hosts.get(entry.name)
            if host is None:
                where = f"pools.{pool_name}.hosts[{i}]"
                raise PolicyError(
                    f"pools.{pool_name}", [f'{where}: unknown host "{entry.name}" (not in [hosts])']
                )
            filled = {k: _fill(v, entry.name, host.address) for k, v in options.items()}
            filled["host"] = entry.name
            inner[entry.name] = balancer_cls(pool_name, pool, filled, hosts=hosts)
            addresses[entry.name] = host.address
        return cls(pool_name, inner, addresses)

    # ------------------------------------------------------------------ the protocol

    def members(self) -> list[Member]:
        """Every reachable host's members, by instance number (each Member's address names
        its host). A host whose balancer does not answer is left out and named in
        ``unreachable``: its balancer serves only its own instances, and when the host is
        down it serves nothing (whatever is in front of the hosts stops sending to it), so
        the pool's other hosts go on. Every host failing is a ``TemporaryError``."""
        found: list[tuple[int, int, Member]] = []
        failures: dict[str, str] = {}
        for order, (host, balancer) in enumerate(self.inner.items()):
            try:
                members = self._on(host, balancer.members)
            except TemporaryError as exc:
                failures[host] = str(exc)
                continue
            for member in members:
                found.append((member.n, order, member))
                self._where[member.n] = host
        self.unreachable = failures
        if failures and len(failures) == len(self.inner):
            raise TemporaryError("; ".join(failures.values()))
        return [member for _, _, member in sorted(found, key=lambda x: (x[0], x[1]))]

    def add(self, n: int, address: str) -> None:
        """Add ``n`` to the balancer of the host ``address`` is on."""
        host = self.host_of(address)
        self._on(host, self.inner[host].add, n, address)
        self._where[n] = host

    def drain(self, n: int) -> None:
        """Drain ``n`` on the host(s) listing it (nothing when no host does)."""
        for host in self._owners(n):
            self._on(host, self.inner[host].drain, n)

    def disable(self, n: int) -> None:
        """Disable ``n`` on the host(s) listing it (nothing when no host does)."""
        for host in self._owners(n):
            self._on(host, self.inner[host].disable, n)

    def remove(self, n: int) -> None:
        """Remove ``n`` from every host listing it (nothing when none does)."""
        for host in self._owners(n):
            self._on(host, self.inner[host].remove, n)
        self._where.pop(n, None)

    def connections(self, n: int) -> int | None:
        """Open connections of ``n`` as its host's balancer counts them (None: cannot tell)."""
        host = self._where.get(n)
        hosts = [host] if host is not None else self._owners(n)
        counts = [self._on(h, self.inner[h].connections, n) for h in hosts]
        known = [c for c in counts if c is not None]
        return sum(known) if known else None

    # ------------------------------------------------------------------ routing

    def host_of(self, address: str) -> str:
        """The host (name) whose address ``address`` has (``10.0.0.11:8001`` -> web01)."""
        part = _bare(address.rpartition(":")[0]) if ":" in address else ""
        host = self._by_address.get(part)
        if host is None:
            known = ", ".join(f"{name} ({a})" for name, a in self.addresses.items())
            raise PermanentError(
                f"pools.{self.pool}: {address} is on none of the pool's hosts ({known}); "
                "a per-host balancer takes an instance on its own host's address"
            )
        return host

    def _owners(self, n: int) -> list[str]:
        """The hosts whose balancers list ``n``. If none of the reachable ones does and a host
        did not answer, ``n`` may be there: a ``TemporaryError`` naming that host."""
        owners: list[str] = []
        unreachable: list[TemporaryError] = []
        for host, balancer in self.inner.items():
            try:
                members = self._on(host, balancer.members)
            except TemporaryError as exc:
                unreachable.append(exc)
                continue
            if any(m.n == n for m in members):
                owners.append(host)
        if not owners and unreachable:
            raise TemporaryError(
                f"pools.{self.pool}: instance {n} is on no reachable host's balancer; "
                + "; ".join(str(e) for e in unreachable)
            )
        if owners:
            self._where[n] = owners[0]
        return owners

    def _on(self, host: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on ``host``'s balancer; its failure names the host."""
        try:
            return call(*args)
        except PolicyError:
            raise
        except SenexError as exc:
            if re.search(rf"\bhost {re.escape(host)}\b", str(exc)):
                raise
            cls = TemporaryError if isinstance(exc, TemporaryError) else PermanentError
            raise cls(f"balancer on host {host}: {exc}") from exc


def _bare(host: str) -> str:
    """A host part without IPv6 brackets: ``[::1]`` -> ``::1``."""
    return host.strip().strip("[]")


def _fill(value: object, name: str, address: str) -> object:
    """``value`` with ``{host}`` and ``{address}`` filled in (strings only)."""
    if not isinstance(value, str):
        return value
    host, addr = PLACEHOLDERS
    return value.replace(host, name).replace(addr, address)
