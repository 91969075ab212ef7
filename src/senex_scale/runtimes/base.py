"""The Runtime protocol and what every runtime shares: addresses and the HTTP health probe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import httpx

from senex_scale.errors import PermanentError
from senex_scale.plugins import resolve
from senex_scale.policy.models import Host, Pool


class UnitState(StrEnum):
    """What the runtime says about one instance's process (not whether it is healthy)."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RuntimeInstance:
    """One instance as the runtime sees it."""

    n: int
    state: UnitState
    started_at: float | None = None
    """Epoch seconds when its process started, when the runtime knows."""
    pid: int | None = None
    host: str | None = None
    """The host (a ``[hosts]`` name) it runs on, for a pool on several hosts."""


class Runtime(Protocol):
    """Starts and stops the instances of one pool. Failures raise ``TemporaryError`` (busy,
    timed out: worth a retry) or ``PermanentError`` (no such unit or program)."""

    pool: str

    def list(self) -> list[RuntimeInstance]:
        """Every instance number the runtime knows for this pool, running or not."""
        ...

    def start(self, n: int) -> None:
        """Start instance ``n``; returns once the runtime accepted it (not when healthy)."""
        ...

    def stop(self, n: int, grace: float | None = None) -> None:
        """Stop instance ``n`` (a graceful stop: SIGTERM, then the runtime's kill timeout).

        ``grace``: seconds the instance may take to finish its work after SIGTERM before the
        runtime's own stop goes on (a worker pool's ``drain_timeout``: Celery's warm
        shutdown finishes the tasks it holds). Runtimes that cannot signal first bound the
        stop by their own timeout (systemd: the unit's ``TimeoutStopSec``/``StopTimeout``)."""
        ...


def build_runtime(pool_name: str, pool: Pool, hosts: Mapping[str, Host] | None = None) -> Runtime:
    """The runtime of ``[pools.NAME] runtime = {...}``, imported on first use; a pool that
    lists ``hosts`` gets one runtime per host behind a ``SpreadRuntime``."""
    if pool.runtime is None:
        raise PermanentError(f"pools.{pool_name}.runtime: not set, so instances cannot be managed")
    if pool.hosts:
        from senex_scale.runtimes.spread import SpreadRuntime

        return SpreadRuntime(pool_name, pool, hosts or {})
    cls = resolve("runtime", pool.runtime.type)
    runtime: Runtime = cls(pool_name, pool, pool.runtime.options)
    return runtime


def instance_address(pool_name: str, pool: Pool, n: int, host: str = "127.0.0.1") -> str:
    """``host:port`` of instance ``n`` by the pool's port scheme (port = BASE + n)."""
    port = pool.port_of(n)
    if port is None:
        raise PermanentError(f'pools.{pool_name}.port: not set (e.g. port = "8000 + n")')
    return f"{host}:{port}"


def address_of(runtime: Runtime, pool_name: str, pool: Pool, n: int) -> str:
    """Where instance ``n`` answers: the runtime's own ``address(n)`` when it has one (a
    runtime on another host, a pool on several hosts), else ``127.0.0.1:BASE+n``."""
    address = getattr(runtime, "address", None)
    if callable(address):
        return str(address(n))
    return instance_address(pool_name, pool, n)


def probe_health(address: str, path: str, timeout: float = 2.0, **client: Any) -> bool:
    """True when ``GET http://ADDRESS/PATH`` answers 2xx within ``timeout`` seconds.

    Straight to the instance: no proxy from the environment (``trust_env=False``: a probe
    through a proxy says nothing of the instance), and the body is never read (an instance
    answering with a huge or endless body costs nothing)."""
    client.setdefault("trust_env", False)
    try:
        with httpx.stream("GET", f"http://{address}{path}", timeout=timeout, **client) as response:
            return 200 <= response.status_code < 300
    except httpx.HTTPError:
        return False
