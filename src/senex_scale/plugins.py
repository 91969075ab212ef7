"""Plugin names and where they live, resolved lazily.

A policy names its drivers ("prometheus", "systemd", "nginx"); this table maps each name to
``"module:Class"`` (as kombu's ``TRANSPORT_ALIASES`` does) so an optional driver and its
dependencies are imported only when a policy uses it. An unknown name gets "did you mean".
Some targets are filled in by later work; resolving one that does not exist yet is a
``PermanentError`` naming the module, never an ImportError traceback.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Literal

from senex_scale.errors import PermanentError

Kind = Literal["source", "runtime", "balancer", "action"]

REGISTRY: dict[Kind, dict[str, str]] = {
    "source": {
        "prometheus": "senex_scale.sources.prometheus:PrometheusSource",
        "celery-redis": "senex_scale.sources.celery_redis:CeleryRedisSource",
        "redis": "senex_scale.sources.redis_memory:RedisMemorySource",
        "postgres": "senex_scale.sources.postgres:PostgresSource",
        "pgbouncer": "senex_scale.sources.pgbouncer:PgBouncerSource",
        "process": "senex_scale.sources.process:ProcessSource",
        "scrape": "senex_scale.sources.scrape:ScrapeSource",
        "disk": "senex_scale.sources.disk:DiskSource",
        # only `senex-scale simulate` reads it (the simulator feeds rules by their signal)
        "simulated": "senex_scale.simulate.model:SimulatedSource",
    },
    "runtime": {
        "systemd": "senex_scale.runtimes.systemd:SystemdRuntime",
        "supervisor": "senex_scale.runtimes.supervisor:SupervisorRuntime",
    },
    "balancer": {
        "nginx": "senex_scale.balancers.nginx:NginxBalancer",
        "haproxy": "senex_scale.balancers.haproxy:HAProxyBalancer",
    },
    "action": {
        "notify": "senex_scale.actions.notify:NotifyAction",
        "runbook": "senex_scale.actions.runbook:RunbookAction",
    },
}


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_name(kind: Kind, name: str) -> str:
    """The message for a plugin name that is not in the registry."""
    names = sorted(REGISTRY[kind])
    hint = did_you_mean(name, names)
    return f'unknown {kind} type "{name}"{hint}; known: {", ".join(names)}'


def resolve(kind: Kind, name: str) -> Any:
    """Import and return the class registered as ``name`` for ``kind``."""
    try:
        target = REGISTRY[kind][name]
    except KeyError:
        raise PermanentError(unknown_name(kind, name)) from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PermanentError(
            f'{kind} "{name}" needs {module_name}, which is not installed ({exc.name} missing)'
        ) from exc
    found = getattr(module, attr, None)
    if found is None:
        raise PermanentError(
            f'{kind} "{name}" cannot be used here ({module_name} has no {attr}'
            + ("; it exists only inside senex-scale simulate)" if name == "simulated" else ")")
        )
    return found
