"""The MetricSource protocol, the request it answers, and helpers shared by the drivers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError
from senex_scale.plugins import resolve
from senex_scale.policy.models import Duration, Metric, Pool, SourceSpec


@dataclass(frozen=True, slots=True)
class MetricRequest:
    """One rule's metric, with the pool it belongs to (for mapping results to instances)."""

    rule: str
    metric: Metric
    pool_name: str | None = None
    pool: Pool | None = None
    window: float = 0.0
    """The rule's longest ``for`` window, for sources that can push it down."""


class MetricSource(Protocol):
    """Where samples come from. ``query`` raises ``SourceError`` on any failure."""

    name: str

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """Samples for ``request`` as of ``now`` (epoch seconds)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f'"{value}" is not an environment variable name')
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than 0s")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
"""The name of an environment variable holding a secret (``password_env = "PGPASSWORD"``)."""

Timeout = Annotated[Duration, AfterValidator(_positive)]
"""A duration that must be longer than 0s (timeouts, sampling intervals)."""


class Settings(BaseModel):
    """Base of a driver's settings model: unknown keys rejected, like the policy file."""

    model_config = ConfigDict(frozen=True, extra="forbid")


S = TypeVar("S", bound=Settings)


def parse_settings(model: type[S], source: str, options: dict[str, Any]) -> S:
    """A driver's validated settings; problems are named ``sources.NAME.FIELD``."""
    from senex_scale.policy.loading import format_errors

    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = format_errors(exc, model, ("sources", source))
        raise PolicyError(f"sources.{source}", problems) from None


def build_source(name: str, spec: SourceSpec) -> MetricSource:
    """The driver for ``[sources.NAME]``, imported on first use."""
    cls = resolve("source", spec.type)
    source: MetricSource = cls(name, spec.options)
    return source


_ADDRESS = re.compile(r"^(?:\[?(?P<host>[^\]]*)\]?:)?(?P<port>\d+)$")


def instance_from_address(address: str, pool: Pool | None) -> str:
    """The instance id for a ``host:port`` label, using the pool's port scheme (port = BASE + n).

    ``127.0.0.1:8003`` in a pool with ``port = "8000 + n"`` is instance ``"3"``; anything
    that does not fit the scheme is returned unchanged, so it still names the instance.
    """
    match = _ADDRESS.match(address.strip())
    if pool is None or pool.port is None or match is None:
        return address
    n = int(match.group("port")) - pool.port
    return str(n) if 1 <= n <= max(pool.max, 1) * 10 else address
