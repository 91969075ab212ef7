"""The baselines a policy is scored against, in the same run and on the same trace.

* ``seed-script``: SCALING-STRATEGY.md's ``autoscale.sh`` exactly as written: cron every 5
  minutes, average CPU of the running Django containers (starting ones included, as ``podman
  stats`` shows them), +1 above 70, -1 below 30 (``systemctl stop``: no drain), min 2, max 5,
  no memory between runs; plus the strategy's crontab (start instance 3 of Django and Celery
  at 08:00, stop it at 23:00, every day). Pools the script does not touch stay as deployed.
* ``hpa``: the Kubernetes HPA with its defaults (target 70 % CPU, tolerance 0.1, 15 s sync,
  300 s scale-down stabilization, default rate policies), run through our own core as a
  policy of one target rule per pool (the core implements the HPA algorithm), same min/max,
  same start-up delay.
* ``static``: max instances all the time.
* ``oracle``: the least supply that meets demand with perfect foresight: it starts instances
  one start-up delay before they are needed.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from senex_scale.core import InstanceState
from senex_scale.policy.loading import validate_policy
from senex_scale.policy.models import Policy
from senex_scale.simulate.engine import PoolView
from senex_scale.simulate.model import PoolLoad

Array = npt.NDArray[np.float64]

BASELINES = ("seed-script", "hpa", "static", "oracle")


class StaticController:
    """Max instances all the time."""

    def __init__(self, policy: Policy) -> None:
        self.name = "static"
        self.policy = policy

    def supply(self, load: PoolLoad, times: Array) -> tuple[Array, Array, int]:
        """The pool's max on every tick, no actions."""
        flat = np.full(len(times), float(self.policy.pools[load.name].max))
        return flat, flat.copy(), 0


class OracleController:
    """Perfect foresight: supply equals demand, each instance started one start-up delay early.

    Serving follows ``min(d(t), max)`` exactly; running (what is paid for) also holds the
    instances that are starting for demand coming within the start-up delay.
    """

    def __init__(self, policy: Policy) -> None:
        self.name = "oracle"
        self.policy = policy

    def supply(self, load: PoolLoad, times: Array) -> tuple[Array, Array, int]:
        """Serving = capped demand; running = its maximum over the next start-up delay."""
        serving = np.minimum(load.demand, float(self.policy.pools[load.name].max))
        step = float(times[1] - times[0]) if len(times) > 1 else 1.0
        ahead = math.ceil(load.model.startup / step)
        running = serving.copy()
        for shift in range(1, ahead + 1):
            running[:-shift] = np.maximum(running[:-shift], serving[shift:])
        actions = int(np.count_nonzero(np.diff(running)))
        return serving, running, actions


class SeedScriptController:
    """``autoscale.sh`` from cron every 5 minutes, plus the strategy's 08:00/23:00 crontab."""

    CPU_UP, CPU_DOWN, MIN, MAX = 70.0, 30.0, 2, 5
    period: float | None = 300.0  # */5 * * * *

    def __init__(self, policy: Policy, timezone: str = "America/New_York") -> None:
        self.name = "seed-script"
        self.policy = policy
        self.zone = ZoneInfo(timezone)
        self.web = next((n for n, p in policy.pools.items() if p.kind == "web"), None)
        self.generic = "celery" if "celery" in policy.pools else None

    def initial(self, pool: str, at: float) -> int:
        """As deployed: django@1-2 (the script's MIN; its later count depends on the load
        history); celery-worker@1-2, plus @3 between the crontab's 08:00 start and 23:00 stop
        (the script never touches Celery); one worker per queue-specific pool."""
        if pool == self.web:
            return self.MIN
        if pool == self.generic:
            hour = datetime.fromtimestamp(at, self.zone).hour
            return 3 if 8 <= hour < 23 else 2
        return max(1, self.policy.pools[pool].min)

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        """Run the cron jobs whose minute has come (the engine calls every 5 minutes).

        At 08:00 and 23:00 the script and the crontab entry start together; the script reads
        the state first (its `systemctl list-units` is the quicker command), then the crontab's
        `systemctl start django@3` (a no-op if the script just started @3) or `stop django@3`.
        """
        changes: dict[str, int] = {}
        if self.web is not None and self.web in pools and "cpu" in pools[self.web].metrics:
            view = pools[self.web]  # (no metrics: `podman stats` failed, the script does nothing)
            current = view.running
            cpus = [
                view.metrics["cpu"] if i.state is InstanceState.READY else _booting_cpu()
                for i in view.instances
                if i.state is not InstanceState.DRAINING
            ]
            avg = sum(cpus) / len(cpus) if cpus else 0.0
            if avg > self.CPU_UP and current < self.MAX:
                changes[self.web] = current + 1
            elif avg < self.CPU_DOWN and current > self.MIN:
                changes[self.web] = current - 1
        local = datetime.fromtimestamp(t, self.zone)
        for name in (self.web, self.generic):
            if name is None or name not in pools:
                continue
            count = changes.get(name, pools[name].running)
            if local.hour == 8 and local.minute < 5 and count < 3:
                changes[name] = 3  # systemctl --user start django@3 celery-worker@3
            elif local.hour == 23 and local.minute < 5 and count >= 3:
                changes[name] = count - 1  # systemctl --user stop django@3 celery-worker@3
        return changes


def _booting_cpu() -> float:
    """CPU a container shows in ``podman stats`` while Daphne is still starting."""
    return 5.0


def hpa_policy(policy: Policy, target: float = 70.0) -> Policy:
    """The Kubernetes HPA with default behaviour over the pools of ``policy``: one exact
    ``mode = "hpa"`` CPU utilization rule per pool (its ``behavior`` left at the HPA's
    defaults; the pool-level cooldowns and limits below are the same defaults, unused by that
    mode)."""
    pools: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []
    for name, pool in policy.pools.items():
        pools[name] = {
            "kind": pool.kind,
            "queues": list(pool.queues),
            "min": pool.min,
            "max": pool.max,
            "warmup": pool.warmup,
            "scale_out_cooldown": 0,
            "scale_in_cooldown": 0,
            "scale_in_stabilization": 300,
        }
        rules.append(
            {
                "name": f"hpa-{name}",
                "type": "target",
                "pool": name,
                "metric": {"source": "sim", "signal": "cpu"},
                "target": target,
                "target_type": "utilization",
                "tolerance": 0.1,
                "mode": "hpa",
            }
        )
    data = {
        "controller": {"interval": "15s"},
        "sources": {"sim": {"type": "simulated"}},
        "pools": pools,
        "rules": rules,
    }
    return validate_policy(data, source="<hpa baseline>")
