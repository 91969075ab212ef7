"""The Balancer protocol, and ``build_balancer``: a pool's balancer from its settings.

Where a balancer lives (every balancer takes ``hosts``, the policy's ``[hosts]``)::

    no host                 this machine: its files with Python's file I/O (as always)
    host = "lb01"           one balancer on its own host: its files there, through the host's
                            transport (``balancers.files``); HAProxy's runtime API over TCP
    per_host = true         one balancer on each of the pool's hosts, each with that host's
                            instances (``balancers.perhost.PerHostBalancer``)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from senex_scale.errors import PermanentError, PolicyError
from senex_scale.plugins import resolve
from senex_scale.policy.models import Pool

if TYPE_CHECKING:
    from senex_scale.policy.models import Host


class MemberState(StrEnum):
    """A member's state in the balancer."""

    READY = "ready"
    """Receives new requests."""
    DRAINING = "draining"
    """Keeps its open connections, gets no new ones."""
    DOWN = "down"
    """Gets nothing (maintenance, or failing its health checks)."""


@dataclass(frozen=True, slots=True)
class Member:
    """One server of the upstream/backend."""

    n: int
    address: str
    state: MemberState
    connections: int | None = None
    """Open connections now, when the balancer can tell."""


class Balancer(Protocol):
    """Adds, drains and removes the members of one pool's upstream. Failures raise
    ``TemporaryError`` or ``PermanentError``; a failed change leaves the previous
    configuration in force (never a half-applied one)."""

    pool: str

    def members(self) -> list[Member]:
        """The current members with their state."""
        ...

    def add(self, n: int, address: str) -> None:
        """Put instance ``n`` at ``address`` into service (idempotent)."""
        ...

    def drain(self, n: int) -> None:
        """Stop sending new requests to ``n``; its open connections continue."""
        ...

    def disable(self, n: int) -> None:
        """Send ``n`` nothing more, not even clients a cookie or hash sticks to it (HAProxy:
        maintenance); its open connections go on until the instance stops. Called after the
        drain, right before the stop, so no client can reach a stopping instance."""
        ...

    def remove(self, n: int) -> None:
        """Take ``n`` out of the configuration (after it was drained and stopped)."""
        ...

    def connections(self, n: int) -> int | None:
        """Open connections of member ``n`` (None when the balancer cannot tell)."""
        ...


def build_balancer(pool_name: str, pool: Pool, hosts: Mapping[str, Host] | None = None) -> Balancer:
    """The balancer of ``[pools.NAME] balancer = {...}``, imported on first use.

    ``hosts``: the policy's ``[hosts]``, for a balancer with ``host`` or ``per_host``. With
    ``per_host = true`` this is a ``PerHostBalancer`` over one balancer per host of the pool.
    Settings that do not fit the pool are a ``PolicyError`` naming the field.
    """
    if pool.balancer is None:
        raise PermanentError(f"pools.{pool_name}.balancer: not set")
    problems = balancer_problems(pool_name, pool, hosts)
    if problems:
        raise PolicyError(f"pools.{pool_name}.balancer", problems)
    cls = resolve("balancer", pool.balancer.type)
    if pool.balancer.options.get("per_host") is True:
        from senex_scale.balancers.perhost import PerHostBalancer

        return PerHostBalancer.build(pool_name, pool, hosts or {}, cls)
    balancer: Balancer = cls(pool_name, pool, pool.balancer.options, hosts=hosts)
    return balancer


PLACEHOLDERS = ("{host}", "{address}")
"""Filled in per host in a ``per_host`` balancer's string settings."""


def balancer_problems(
    pool_name: str, pool: Pool, hosts: Mapping[str, Host] | None = None
) -> list[str]:
    """What is wrong with a pool's balancer settings given the pool (and ``[hosts]``, when
    known), each with its dotted path; the driver's own settings model checks the rest.

    - ``per_host`` needs the pool to list its ``hosts`` and leaves ``host`` out;
    - per host, HAProxy's ``socket`` must name each host's own (``{address}``, ``{host}``);
    - the pool's hosts must have distinct addresses (the address says which host's balancer
      an instance belongs to);
    - ``{host}`` and ``{address}`` mean something only with ``per_host``.
    """
    if pool.balancer is None:
        return []
    where = f"pools.{pool_name}.balancer"
    options: dict[str, Any] = pool.balancer.options
    texts = {k: v for k, v in options.items() if isinstance(v, str)}
    per_host = options.get("per_host") is True
    problems: list[str] = []
    if not per_host:
        for key, value in texts.items():
            if any(p in value for p in PLACEHOLDERS):
                problems.append(
                    f"{where}.{key}: {{host}} and {{address}} are filled in only with "
                    "per_host = true"
                )
        return problems
    if not pool.hosts:
        problems.append(
            f"{where}.per_host: needs the pool to list its hosts (pools.{pool_name}.hosts), "
            "one balancer on each"
        )
    if "host" in options:
        problems.append(
            f"{where}.host: per_host puts a balancer on each of the pool's hosts; leave host out"
        )
    socket = texts.get("socket")
    if pool.balancer.type == "haproxy" and socket and not any(p in socket for p in PLACEHOLDERS):
        problems.append(
            f'{where}.socket: "{socket}" would be every host\'s HAProxy; per host it is each '
            "one's own socket, e.g. \"{address}:9999\" (stats socket on the host's address)"
        )
    if hosts is not None:
        seen: dict[str, str] = {}
        for entry in pool.hosts:
            host = hosts.get(entry.name)
            if host is None:
                continue  # the policy's cross-check names it (pools.NAME.hosts[i])
            other = seen.setdefault(host.address, entry.name)
            if other != entry.name:
                problems.append(
                    f"pools.{pool_name}.hosts: {other} and {entry.name} have the same address "
                    f"({host.address}); per_host tells hosts' instances apart by address"
                )
    return problems


def refuse_per_host(pool_name: str, per_host: bool) -> None:
    """A balancer class built directly with ``per_host = true``: that is ``build_balancer``'s
    (a ``PerHostBalancer`` over one balancer per host)."""
    if per_host:
        where = f"pools.{pool_name}.balancer"
        raise PolicyError(
            where,
            [f"{where}.per_host: a balancer per host is built by build_balancer (PerHostBalancer)"],
        )
