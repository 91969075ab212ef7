"""Driver settings: what every source, runtime and balancer table shares.

A driver validates its own table when it is built (the policy only checks ``type``), with a
``Settings`` model: unknown keys rejected with "did you mean", every problem reported with
the path a user finds in the file (``sources.prom.timeout``, ``pools.web.balancer.file``).

Every driver declares its model in ``SETTINGS`` (by name, imported lazily like the drivers
themselves), so ``senex-scale validate`` checks ``[sources.*]`` and each pool's ``runtime`` and
``balancer`` tables with the same models the drivers are built with, without building a
driver or connecting anywhere (``driver_problems``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from senex_scale.errors import PolicyError
from senex_scale.plugins import Kind
from senex_scale.policy.models import Duration, show_value


class Settings(BaseModel):
    """Base of a driver's settings model: frozen, unknown keys rejected, finite numbers.

    Integer, number and boolean fields are declared strict (``StrictInt``, ``StrictFloat``,
    ``StrictBool``), as in the policy's own models: ``max_fails = "3"`` or ``ip_hash = "yes"``
    is refused by its path, not converted (``tests/unit/inputs/test_strict_types.py`` checks
    every driver's model).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


SETTINGS: dict[Kind, dict[str, str]] = {
    "source": {
        "prometheus": "senex_scale.sources.prometheus:PrometheusSettings",
        "celery-redis": "senex_scale.sources.celery_redis:CeleryRedisSettings",
        "redis": "senex_scale.sources.redis_memory:RedisMemorySettings",
        "postgres": "senex_scale.sources.postgres:PostgresSettings",
        "pgbouncer": "senex_scale.sources.pgbouncer:PgBouncerSettings",
        "process": "senex_scale.sources.process:ProcessSettings",
        "scrape": "senex_scale.sources.scrape:ScrapeSettings",
        "disk": "senex_scale.sources.disk:DiskSettings",
        # "simulated" has no settings: senex-scale simulate feeds it from the trace
    },
    "runtime": {
        "systemd": "senex_scale.runtimes.systemd:SystemdSettings",
        "supervisor": "senex_scale.runtimes.supervisor:SupervisorSettings",
    },
    "balancer": {
        "nginx": "senex_scale.balancers.nginx:NginxSettings",
        "haproxy": "senex_scale.balancers.haproxy:HAProxySettings",
    },
}
"""The settings model of every driver in ``senex_scale.plugins.REGISTRY``, as "module:Class"."""


def settings_model(kind: Kind, name: str) -> type[Settings] | None:
    """The settings model of driver ``name`` (None for a driver without settings)."""
    target = SETTINGS.get(kind, {}).get(name)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    model: type[Settings] = getattr(importlib.import_module(module_name), attr)
    return model


def driver_problems(data: Mapping[str, Any]) -> list[str]:
    """Problems in the driver tables of a parsed policy, each with its dotted path.

    Checks ``[sources.NAME]`` and every pool's ``runtime`` and ``balancer`` with the driver's
    own settings model. Tables too malformed to read, or of an unknown type, are left to the
    policy model, which reports them.
    """
    problems: list[str] = []
    sources = data.get("sources")
    if isinstance(sources, dict):
        for name, table in sources.items():
            problems += _table_problems("source", ("sources", str(name)), table)
    pools = data.get("pools")
    if isinstance(pools, dict):
        for name, pool in pools.items():
            if not isinstance(pool, dict):
                continue
            runtime, balancer = pool.get("runtime"), pool.get("balancer")
            problems += _table_problems("runtime", ("pools", str(name), "runtime"), runtime)
            problems += _table_problems("balancer", ("pools", str(name), "balancer"), balancer)
    return problems


def _table_problems(kind: Kind, where: tuple[str, ...], table: object) -> list[str]:
    from senex_scale.policy.loading import dotted, format_errors

    if not isinstance(table, dict) or not isinstance(table.get("type"), str):
        return []
    try:
        model = settings_model(kind, table["type"])
    except ImportError as exc:
        return [f'{dotted((*where, "type"))}: "{table["type"]}" cannot be loaded here ({exc})']
    if model is None:
        return []
    options = {k: v for k, v in table.items() if k != "type"}
    try:
        model.model_validate(options)
    except ValidationError as exc:
        return format_errors(exc, model, where)
    return []


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


_BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def _tls_verify(value: object) -> bool | str:
    """true, false or the path of a CA bundle; never a number, nor a boolean in quotes."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip().lower() in _BOOLEAN_WORDS or not value.strip():
            raise ValueError(
                f"must be true, false or the path of a CA bundle, not the string "
                f"{show_value(value)} (write true or false without quotes)"
            )
        return value
    raise ValueError(f"must be true, false or the path of a CA bundle, not {show_value(value)}")


TlsVerify = Annotated[bool | str, BeforeValidator(_tls_verify)]
"""TLS certificate check: true (system CAs), false (no check) or the path of a CA bundle."""

EnvName = Annotated[str, AfterValidator(_env_name)]
"""The name of an environment variable holding a secret (``password_env = "PGPASSWORD"``)."""

Timeout = Annotated[Duration, AfterValidator(_positive)]
"""A duration that must be longer than 0s (timeouts, sampling intervals)."""
