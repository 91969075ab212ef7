"""The simulation loop: instance lifecycle, supply and running timelines, actions and events."""

from __future__ import annotations

import numpy as np
import pytest

from senex_scale.core import InstanceState
from senex_scale.policy.loading import validate_policy
from senex_scale.policy.models import Policy
from senex_scale.simulate.engine import PoolRun, PoolView, RunResult, run
from senex_scale.simulate.model import PoolModel, SimModel
from senex_scale.simulate.score import score
from senex_scale.simulate.trace import Trace

T0 = 1795530600.0  # 2026-11-24T09:30:00-05:00, a multiple of 60 s
STEP = 15.0
STARTING, READY, DRAINING = InstanceState.STARTING, InstanceState.READY, InstanceState.DRAINING


class Scripted:
    """Returns scripted desired counts at given ticks and records what it saw."""

    name = "scripted"

    def __init__(
        self,
        script: dict[int, dict[str, int]],
        initial: dict[str, int] | None = None,
        period: float | None = None,
    ) -> None:
        self.script = script
        self.counts = initial or {}
        self.period = period
        self.ticks: list[int] = []
        self.seen: dict[int, dict[str, tuple[int, list[tuple[int, InstanceState]]]]] = {}

    def initial(self, pool: str, at: float) -> int:
        """The scripted initial count (1 by default)."""
        return self.counts.get(pool, 1)

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        """Record running count and instances per pool; return the script for tick k."""
        self.ticks.append(k)
        self.seen[k] = {
            name: (view.running, [(i.n, i.state) for i in view.instances])
            for name, view in pools.items()
        }
        return self.script.get(k, {})


def _policy() -> Policy:
    return validate_policy(
        {
            "pools": {
                "web": {"kind": "web", "min": 0, "max": 20},
                "w": {"kind": "worker", "queues": ["a"], "min": 0, "max": 20},
            }
        },
        source="<test>",
    )


def _trace(n: int, start: float = T0) -> Trace:
    return Trace(
        "t",
        start + STEP * np.arange(n, dtype=np.float64),
        {"http_rps": np.full(n, 30.0), "tasks_a": np.full(n, 60.0)},
    )


def _model(startup: float = 45.0, drain: float = 30.0) -> SimModel:
    pool = PoolModel(startup=startup, drain=drain, cpu_noise=0)
    return SimModel(pools={"web": pool, "w": pool})


def _run(
    controller: Scripted,
    n: int = 12,
    model: SimModel | None = None,
    immediate: bool = False,
    start: float = T0,
) -> RunResult:
    return run(controller, _trace(n, start), _policy(), model or _model(), immediate_stop=immediate)


def _web(result: RunResult) -> tuple[list[float], list[float]]:
    pool = result.pools["web"]
    return pool.supply.tolist(), pool.running.tolist()


# --------------------------------------------------------------------------- starting


@pytest.mark.parametrize(
    ("startup", "first_serving"),
    [
        (45.0, 5),  # started at t=30 (k=2), ready at 75 = tick 5
        (50.0, 6),  # ready at 80: first tick at or after it is 90 = tick 6
        (10.0, 3),  # ready at 40, between ticks: serves from tick 3
        (15.0, 3),  # ready exactly at the next tick
    ],
)
def test_started_instance_serves_after_startup(startup: float, first_serving: int) -> None:
    """Started at k=2: running from k+1 at once, supply from the first tick >= ready time."""
    controller = Scripted({2: {"web": 3}})
    supply, running = _web(_run(controller, model=_model(startup=startup)))
    assert running == [1, 1, 1] + [3] * 9
    assert supply == [1] * first_serving + [3] * (12 - first_serving)


def test_started_instance_state_in_the_controller_view() -> None:
    """The view counts a started instance in running at once; it is READY from its ready tick."""
    controller = Scripted({2: {"web": 3}})
    _run(controller)
    assert controller.seen[2]["web"] == (1, [(1, READY)])
    assert controller.seen[3]["web"] == (3, [(1, READY), (2, STARTING), (3, STARTING)])
    assert controller.seen[4]["web"][1] == [(1, READY), (2, STARTING), (3, STARTING)]
    assert controller.seen[5]["web"][1] == [(1, READY), (2, READY), (3, READY)]


def test_serving_metrics_ignore_starting_instances() -> None:
    """CPU is spread over ready instances only: 30 rps on one is 53 %, on three 19.7 %."""
    cpus: dict[int, float] = {}

    class Cpu(Scripted):
        def step(
            self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
        ) -> dict[str, int]:
            cpus[k] = pools["web"].metrics["cpu"]
            return super().step(k, t, pools, shared)

    _run(Cpu({2: {"web": 3}}))
    assert [round(cpus[k], 2) for k in (2, 3, 4, 5)] == [53.0, 53.0, 53.0, 19.67]


# --------------------------------------------------------------------------- stopping


def test_drained_instance_leaves_supply_next_tick_and_running_after_drain() -> None:
    """Drain at k=4 (t=60): supply drops at tick 5, running at 60 + 30 s = tick 6."""
    controller = Scripted({4: {"web": 1}}, {"web": 3})
    supply, running = _web(_run(controller))
    assert supply == [3] * 5 + [1] * 7
    assert running == [3] * 6 + [1] * 6
    # the newest instances drain; they stay visible as draining until gone
    assert controller.seen[5]["web"] == (1, [(1, READY), (2, DRAINING), (3, DRAINING)])
    assert controller.seen[6]["web"] == (1, [(1, READY)])


def test_immediate_stop_has_no_drain() -> None:
    """With immediate_stop, supply and running drop at the next tick; the instances are gone."""
    controller = Scripted({4: {"web": 1}}, {"web": 3})
    supply, running = _web(_run(controller, immediate=True))
    assert supply == [3] * 5 + [1] * 7
    assert running == [3] * 5 + [1] * 7
    assert controller.seen[5]["web"] == (1, [(1, READY)])


def test_instance_stopped_while_starting_never_serves() -> None:
    """Started at k=1, drained at k=2 before ready: supply never rises; running for the drain."""
    controller = Scripted({1: {"web": 2}, 2: {"web": 1}})
    supply, running = _web(_run(controller))
    assert supply == [1] * 12
    # running from tick 2; drained at t=30, gone at 60 = tick 4
    assert running == [1, 1, 2, 2] + [1] * 8


def test_starting_instances_are_stopped_before_ready_ones() -> None:
    """A starting instance is drained before a ready one, even with a lower number."""
    # #3 drains at k=1 and is gone at tick 3; #4 starts at k=2 (#3 still there),
    # #3 is reused at k=4 and is still starting at k=6, when one must go
    controller = Scripted({1: {"web": 2}, 2: {"web": 3}, 4: {"web": 4}, 6: {"web": 3}}, {"web": 3})
    supply, _ = _web(_run(controller, n=14))
    assert controller.seen[6]["web"][1] == [(1, READY), (2, READY), (4, READY), (3, STARTING)]
    assert controller.seen[7]["web"][1] == [(1, READY), (2, READY), (4, READY), (3, DRAINING)]
    assert max(supply) == 3.0


# --------------------------------------------------------------------------- numbering


def test_lowest_free_number_is_reused() -> None:
    """A new instance takes the lowest number not in use; a draining one still holds its own."""
    controller = Scripted({1: {"web": 3}, 2: {"web": 4}, 5: {"web": 5}}, {"web": 4})
    _run(controller)
    # k=1 drains #4 (gone at 15 + 30 = 45 s, tick 3); at k=2 it is still there: the new one is #5
    assert [n for n, _ in controller.seen[3]["web"][1]] == [1, 2, 3, 5]
    # k=5: #4 is free again
    assert sorted(n for n, _ in controller.seen[6]["web"][1]) == [1, 2, 3, 4, 5]


def test_lowest_free_number_after_immediate_stop() -> None:
    """After an immediate stop of #2 and #3, the next two starts are #2 and #3 again."""
    controller = Scripted({1: {"web": 1}, 2: {"web": 3}}, {"web": 3})
    _run(controller, immediate=True)
    assert controller.seen[2]["web"][1] == [(1, READY)]
    assert controller.seen[3]["web"][1] == [(1, READY), (2, STARTING), (3, STARTING)]


# --------------------------------------------------------------------------- actions and score


def test_actions_and_events_per_pool() -> None:
    """Each scripted change is one action and one event "running -> desired"; pools apart."""
    controller = Scripted({1: {"web": 3, "w": 2}, 4: {"web": 2}, 8: {"web": 4}})
    result = _run(controller)
    assert {name: p.actions for name, p in result.pools.items()} == {"web": 3, "w": 1}
    assert result.events == [
        (T0 + 15, "web", "1 -> 3"),
        (T0 + 15, "w", "1 -> 2"),
        (T0 + 60, "web", "3 -> 2"),
        (T0 + 120, "web", "2 -> 4"),
    ]
    assert result.name == "scripted"


def test_every_tick_without_period_and_wall_clock_multiples_with_one() -> None:
    """period None: every tick; period 60 s: ticks at multiples of 60 s of the epoch only."""
    every = Scripted({})
    _run(every)
    assert every.ticks == list(range(12))
    minute = Scripted({}, period=60.0)
    _run(minute, n=20, start=T0 + 15)  # first multiple of 60 s is at tick 3
    assert minute.ticks == [3, 7, 11, 15, 19]


def test_pool_run_score_counts_running_instance_hours() -> None:
    """instance_hours = Σ running · Δt / 3600; the other scores come from demand and supply."""
    controller = Scripted({2: {"web": 3}, 8: {"web": 1}})
    result = _run(controller, n=16)
    pool = result.pools["web"]
    got = pool.score(STEP)
    expected = score(pool.demand, pool.supply, STEP, actions=2, violation=pool.violation)
    assert got.instance_hours == pytest.approx(float(pool.running.sum()) * STEP / 3600)
    # running (paid) exceeds supply (serving) while starting and draining
    assert pool.running.sum() > pool.supply.sum()
    assert got.instance_hours > expected.instance_hours
    assert got.actions == pool.actions == 2
    for field in ("under_accuracy", "over_accuracy", "jitter", "slo_violation_minutes"):
        assert getattr(got, field) == getattr(expected, field)


def test_pool_run_score_on_hand_made_arrays() -> None:
    """Two instances running for an hour at 15 s are 2 instance-hours, whatever serves."""
    n = 240
    run_ = PoolRun(
        demand=np.ones(n),
        supply=np.concatenate([np.ones(120), np.full(120, 2.0)]),
        running=np.full(n, 2.0),
        violation=np.zeros(n, dtype=bool),
        actions=1,
    )
    result = run_.score(STEP)
    assert result.instance_hours == pytest.approx(2.0)
    assert result.over_accuracy == pytest.approx(50.0)
    assert result.actions == 1


def test_supply_never_exceeds_running_with_zero_startup() -> None:
    """An instance cannot serve before it runs: with startup 0s, supply <= running on every tick."""
    # Bug (engine.py, _apply): a start is added to ``running`` at tick k+1 but to ``serving``
    # at searchsorted(grid, t + startup), which is tick k itself when startup is 0: supply is
    # [1, 1, 2, 2, ...] while running is [1, 1, 1, 2, ...].
    controller = Scripted({2: {"web": 2}})
    supply, running = _web(_run(controller, model=_model(startup=0.0)))
    assert all(s <= r for s, r in zip(supply, running, strict=True)), (supply, running)
