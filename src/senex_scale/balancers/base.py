"""The Balancer protocol."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from senex_scale.errors import PermanentError
from senex_scale.plugins import resolve
from senex_scale.policy.models import Pool


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


def build_balancer(pool_name: str, pool: Pool) -> Balancer:
    """The balancer of ``[pools.NAME] balancer = {...}``, imported on first use."""
    if pool.balancer is None:
        raise PermanentError(f"pools.{pool_name}.balancer: not set")
    cls = resolve("balancer", pool.balancer.type)
    balancer: Balancer = cls(pool_name, pool, pool.balancer.options)
    return balancer
