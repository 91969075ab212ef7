"""Chaos: at least ten scale cycles under HTTP, WebSocket and Celery load while the faults of
the suite are injected at random (seeded: ``SENEX_CHAOS_SEED``, printed on failure). Every
invariant holds at every sample; requests may fail, and WebSockets be cut, only inside the
window of a fault that takes serving members away by itself (the balancer restarted without
its servers, an instance frozen).

The balancer is HAProxy: its servers change through the runtime API, with no reload. Behind
nginx every scale action is a reload, and a WebSocket opened before it is cut without a close
frame when the old worker's ``worker_shutdown_timeout`` runs out (measured with this test on
nginx: 18 of 25 closes were such cuts, on an instance never scaled); that is issue 22's to fix,
and ``docs/balancer-nginx.md`` says so."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from senex_scale.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

CYCLES = 10


def test_chaos_scale_cycles_with_random_faults(haproxy_stack: Any, kit: Any) -> None:
    """Ten scale cycles, one random fault each; invariants at every sample; users lose
    nothing outside the faults' own windows."""
    seed = int(os.environ.get("SENEX_CHAOS_SEED", "20261202"))
    rng = random.Random(seed)
    s = haproxy_stack
    policy = s.policy()
    controller = [s.run(policy=policy)]
    run = kit.start_load(s, sockets=6, rate=3.0)
    allowed: list[tuple[float, float]] = []
    injected: list[str] = []

    def source_down() -> None:
        s.prometheus.stop()
        time.sleep(3)
        s.prometheus.start()

    def members_lost() -> None:
        started = time.time()
        with run.invariants.excuse(settle=1):
            s.front.stop()
            s.front.config.unlink()  # restarted from the base config: no servers
            s.front.start()
            wait_until(
                lambda: len(s.serving()) > 0 and s.serving() == s.running("web"),
                20,
                "members re-added\n" + s.log_tail(),
            )
        allowed.append((started, time.time() + 2))

    def controller_killed() -> None:
        controller[0].send_signal(signal.SIGKILL)
        controller[0].wait(timeout=10)
        time.sleep(rng.uniform(0.2, 2.0))
        controller[0] = s.run(policy=policy)

    def invalid_policy() -> None:
        good = policy.read_text()
        policy.write_text(good.replace("[pools.web]", "[pools.web]\nmn = 1"))
        controller[0].send_signal(signal.SIGHUP)
        time.sleep(2)
        policy.write_text(good)
        controller[0].send_signal(signal.SIGHUP)

    def frozen() -> None:
        serving = sorted(s.serving())
        if len(serving) < 2:
            return
        n = rng.choice(serving)
        pid = s.pid("web", n)
        started = time.time()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(rng.uniform(3, 6))
        os.kill(pid, signal.SIGCONT)
        allowed.append((started, time.time() + 6))

    def balancer_conf_broken() -> None:
        # haproxy -c refuses the persisted config: every server change fails and rolls back
        good = s.front.config.read_text()
        s.front.config.write_text(good + "\nnot a keyword\n")
        time.sleep(rng.uniform(2, 4))
        s.front.config.write_text(good)

    def task_burst() -> None:
        run.tasks.send(rng.randint(40, 120))

    faults: list[Callable[[], None]] = [
        source_down,
        members_lost,
        controller_killed,
        invalid_policy,
        frozen,
        balancer_conf_broken,
        task_burst,
    ]
    try:
        for cycle in range(CYCLES):
            fault = faults[cycle % len(faults)] if cycle < len(faults) else rng.choice(faults)
            injected.append(fault.__name__)
            target = rng.randint(2, 4)
            rising = rng.random() < 0.5
            s.gauge.value = 95
            if rising:
                time.sleep(rng.uniform(0.5, 3))
                fault()
            wait_until(
                lambda t=target: len(s.serving()) >= t, 90, f"cycle {cycle}: web at {target}"
            )
            s.gauge.value = 10
            if not rising:
                time.sleep(rng.uniform(0.5, 3))
                fault()
            wait_until(
                lambda: len(s.running("web")) == 1 and s.serving() == s.running("web"),
                120,
                f"cycle {cycle}: web back at 1",
            )
        run.finish(allowed=allowed)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}, faults {injected}: {exc}\n{s.log_tail()}") from None
    cycles = [r for r in s.history(outcome="done") if r.pool == "web" and r.direction == "in"]
    assert len(cycles) >= CYCLES, f"only {len(cycles)} scale-ins of web"
