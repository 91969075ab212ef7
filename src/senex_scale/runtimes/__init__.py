"""Where a pool's instances live: systemd template units (local or over ssh), supervisor.

A runtime is built per pool (``build_runtime``) and knows the pool's instances by number n
(``django@3`` is n = 3); the instance listens on ``host:BASE+n`` (the pool's port scheme).
"""

from senex_scale.runtimes.base import (
    Runtime,
    RuntimeInstance,
    UnitState,
    build_runtime,
    instance_address,
    probe_health,
)

__all__ = [
    "Runtime",
    "RuntimeInstance",
    "UnitState",
    "build_runtime",
    "instance_address",
    "probe_health",
]
