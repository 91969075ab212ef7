"""What the parts of one controller share: the store, its lead (lock + fencing token), the
pools' runtimes and balancers, time, logs and metrics.

The tick (``loop.py``), the pool workers (``act.py``) and reconciliation (``reconcile.py``)
all act through one ``Context``. Two rules hold for every write and every step:

- **fencing**: ``guard()`` (before each step of a scale sequence) and every write to the
  store carry ``fence``; the store refuses them once a newer token was handed out, so a
  deposed leader stops between two steps instead of finishing a sequence it no longer owns;
- **one memory writer at a time**: the core's memory (scale events, action firings) is read,
  changed and written under ``memory_lock``, by the tick (after deciding) and by workers
  (after a scale action), so neither overwrites the other's change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from senex_scale.balancers.base import Balancer, build_balancer
from senex_scale.controller.leader import Leader
from senex_scale.controller.sequence import ScaleSequence, Step
from senex_scale.core.state import Memory
from senex_scale.errors import FencedError
from senex_scale.policy.models import Host, Policy, Pool
from senex_scale.runtimes.base import Runtime, build_runtime
from senex_scale.store.sql import Store
from senex_scale.telemetry.metrics import Metrics


@dataclass
class PoolHandle:
    """A pool's runtime, balancer and sequence, or why they could not be built."""

    name: str
    spec: Pool
    runtime: Runtime | None = None
    balancer: Balancer | None = None
    error: str | None = None


def build_pool(
    name: str, spec: Pool, hosts: Mapping[str, Host] | None = None
) -> tuple[Runtime, Balancer | None]:
    """The runtime and balancer a pool's settings name (``hosts``: the policy's ``[hosts]``)."""
    runtime = build_runtime(name, spec, hosts)
    balancer = build_balancer(name, spec, hosts) if spec.balancer is not None else None
    return runtime, balancer


@dataclass
class Context:
    """One controller's shared parts (see the module docstring)."""

    store: Store
    leader: Leader
    metrics: Metrics
    log: Any
    controller_id: str
    policy: Policy
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    healthy: Callable[[str, str], bool] | None = None
    pools: dict[str, PoolHandle] = field(default_factory=dict)
    fence: int = 0
    deposed: threading.Event = field(default_factory=threading.Event)
    """Set by whoever meets a ``FencedError`` (a worker between two steps): the tick steps down."""
    keep: float = 3600.0
    """How long scale events are remembered (the decider's ``keep`` for this policy)."""
    memory_lock: threading.Lock = field(default_factory=threading.Lock)
    backoff_lock: threading.Lock = field(default_factory=threading.Lock)

    def guard(self) -> None:
        """Raise ``FencedError`` unless this controller still holds the lock and the newest
        fencing token (called before every step that changes something)."""
        if self.deposed.is_set():
            raise FencedError("this controller was deposed: another one leads")
        if not self.leader.acquire():
            self.deposed.set()
            raise FencedError(f"lost the leader lock ({self.leader.kind})")
        try:
            self.store.check_fence(self.fence)
        except FencedError:
            self.deposed.set()
            raise

    def sequence(self, handle: PoolHandle, *, fenced: bool = True) -> ScaleSequence:
        """The scale sequence of a pool, logging its steps, checking the fence before each."""
        assert handle.runtime is not None
        kwargs: dict[str, Any] = {"clock": self.clock, "sleep": self.sleep}
        if self.healthy is not None:
            kwargs["healthy"] = self.healthy

        def on_step(step: Step) -> None:
            self.log.info("step", pool=handle.name, n=step.n, what=step.what, detail=step.detail)

        return ScaleSequence(
            handle.name,
            handle.spec,
            handle.runtime,
            handle.balancer,
            on_step=on_step,
            guard=self.guard if fenced else None,
            **kwargs,
        )

    def update_memory(self, change: Callable[[Memory], Memory]) -> None:
        """Read, change and write the core's memory under the memory lock (fenced)."""
        with self.memory_lock:
            memory = change(self.store.load_memory())
            self.store.save_memory(memory, fence=self.fence)

    def remember_scale(self, pool: str, at: float, before: int, after: int) -> None:
        """A count change, as a scale event the cooldowns and windows see."""
        if after != before:
            keep = self.keep
            self.update_memory(lambda m: m.with_scale(pool, at, before, after, keep))
