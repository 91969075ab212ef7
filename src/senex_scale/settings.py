"""Driver settings: what every source, runtime and balancer table shares.

A driver validates its own table when it is built (the policy only checks ``type``), with a
``Settings`` model: unknown keys rejected with "did you mean", every problem reported with
the path a user finds in the file (``sources.prom.timeout``, ``pools.web.balancer.file``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from senex_scale.errors import PolicyError
from senex_scale.policy.models import Duration


class Settings(BaseModel):
    """Base of a driver's settings model: frozen, unknown keys rejected, like the policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")


S = TypeVar("S", bound=Settings)


def parse_settings(model: type[S], where: tuple[str, ...], options: dict[str, Any]) -> S:
    """Validated settings; each problem is named ``where`` + field: ``pools.web.balancer.file``."""
    from senex_scale.policy.loading import format_errors

    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise PolicyError(".".join(where), format_errors(exc, model, where)) from None


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
