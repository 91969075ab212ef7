"""The MetricSource protocol, the request it answers, and helpers shared by the drivers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from senex_scale.core.state import Sample
from senex_scale.plugins import resolve
from senex_scale.policy.models import Metric, Pool, SourceSpec
from senex_scale.settings import EnvName, Settings, Timeout
from senex_scale.settings import parse_settings as parse_driver_settings

__all__ = [
    "EnvName",
    "MetricRequest",
    "MetricSource",
    "Settings",
    "Timeout",
    "build_source",
    "instance_from_address",
    "parse_settings",
]

S = TypeVar("S", bound=Settings)


@dataclass(frozen=True, slots=True)
class MetricRequest:
    """One rule's metric, with the pool it belongs to (for mapping results to instances)."""

    rule: str
    metric: Metric
    pool_name: str | None = None
    pool: Pool | None = None
    window: float = 0.0
    """The rule's longest ``for`` window, for sources that can push it down."""
    hosts: tuple[str, ...] = ()
    """Addresses of the pool's hosts (a pool on several hosts): a series names an instance
    only when its ``host:port`` is on one of them."""
    targets: tuple[tuple[str, str], ...] | None = None
    """``(instance, "host:port")`` of each instance the pool's runtime reports running, for
    sources that ask the instances themselves (``scrape``); None: not listed by the caller."""


class MetricSource(Protocol):
    """Where samples come from. ``query`` raises ``SourceError`` on any failure."""

    name: str

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """Samples for ``request`` as of ``now`` (epoch seconds)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def parse_settings(model: type[S], source: str, options: dict[str, Any]) -> S:
    """A source's validated settings; problems are named ``sources.NAME.FIELD``."""
    return parse_driver_settings(model, ("sources", source), options)


def build_source(name: str, spec: SourceSpec) -> MetricSource:
    """The driver for ``[sources.NAME]``, imported on first use."""
    cls = resolve("source", spec.type)
    source: MetricSource = cls(name, spec.options)
    return source


_ADDRESS = re.compile(r"^(?:\[?(?P<host>[^\]]*)\]?:)?(?P<port>\d+)$")


def instance_from_address(address: str, pool: Pool | None, hosts: tuple[str, ...] = ()) -> str:
    """The instance id for a ``host:port`` label, using the pool's port scheme (port = BASE + n).

    ``127.0.0.1:8003`` in a pool with ``port = "8000 + n"`` is instance ``"3"``; anything
    that does not fit the scheme is returned unchanged, so it still names the instance. For
    a pool on several hosts (``hosts``: their addresses) the host must be one of them too:
    ``10.0.0.12:8003`` is instance 3 only if 10.0.0.12 is one of the pool's hosts (numbers
    are unique across a pool's hosts, so host and port name one instance).
    """
    match = _ADDRESS.match(address.strip())
    if pool is None or pool.port is None or match is None:
        return address
    if hosts and (match.group("host") or "") not in hosts:
        return address
    n = int(match.group("port")) - pool.port
    return str(n) if 1 <= n <= max(pool.max, 1) * 10 else address
