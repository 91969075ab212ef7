"""The baselines: the seed's script and crontab as written, the HPA, static and the oracle."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from senex_scale.policy import TargetRule, load_default
from senex_scale.policy.models import Policy, RateLimit
from senex_scale.simulate.baselines import (
    OracleController,
    SeedScriptController,
    StaticController,
    hpa_policy,
)
from senex_scale.simulate.engine import RunResult, run
from senex_scale.simulate.model import PoolModel, SimModel
from senex_scale.simulate.runner import simulate
from senex_scale.simulate.trace import Trace

NY = ZoneInfo("America/New_York")
DAY = "2026-11-24"  # a Tuesday
STEP = 15.0

# Django CPU without noise: 100 * rps / (60 * n) + 3 on n ready instances (capped at 100)
HIGH = 600.0  # 100 % on up to 5 instances
MID = 60.0  # 53 % on 2, 36 % on 3: inside 30..70
MID4 = 120.0  # 53 % on 4, 70 % (69.7) on 3: inside 30..70
LOW = 6.0  # 8 % on 2, 5 % on 5


def _at(clock: str) -> float:
    """Epoch seconds of ``clock`` (HH:MM[:SS]) on DAY in New York."""
    return datetime.fromisoformat(f"{DAY}T{clock}").replace(tzinfo=NY).timestamp()


def _trace(start: str, end: str, segments: list[tuple[str, float]]) -> Trace:
    """A 15 s trace from ``start`` to before ``end``; http_rps from (from-clock, rps) segments."""
    times = np.arange(_at(start), _at(end), STEP)
    rps = np.zeros(times.size)
    for clock, value in segments:
        rps[times >= _at(clock)] = value
    n = times.size
    return Trace(
        "hand-made",
        times,
        {
            "http_rps": rps,
            "ws_connections": np.zeros(n),
            "tasks_trading": np.full(n, 30.0),
            "tasks_accounts": np.full(n, 20.0),
            "tasks_general": np.full(n, 20.0),
        },
        "America/New_York",
    )


def _model(**django: float | str) -> SimModel:
    return SimModel(pools={"django": PoolModel.model_validate({"cpu_noise": 0, **django})})


@pytest.fixture(scope="module")
def policy() -> Policy:
    """The built-in default policy (its pools: django, celery, celery-trading)."""
    return load_default()


def _seed(
    policy: Policy, trace: Trace, model: SimModel | None = None
) -> tuple[RunResult, list[tuple[str, str, str]]]:
    result = run(
        SeedScriptController(policy), trace, policy, model or _model(), immediate_stop=True
    )
    events = [
        (datetime.fromtimestamp(t, NY).strftime("%H:%M:%S"), who, what)
        for t, who, what in result.events
    ]
    return result, events


def _count_at(result: RunResult, pool: str, trace: Trace, clock: str) -> float:
    """Running instances of ``pool`` at ``clock``."""
    return float(result.pools[pool].running[trace.index_at(_at(clock))])


# --------------------------------------------------------------------------- seed-script


def test_seed_acts_only_on_five_minute_marks(policy: Policy) -> None:
    """cron */5: from 10:02:30 at 100 % CPU the first +1 is at 10:05, then +1 per 5 min to 5."""
    trace = _trace("10:02:30", "10:40", [("10:02:30", HIGH)])
    result, events = _seed(policy, trace)
    assert events == [
        ("10:05:00", "django", "2 -> 3"),
        ("10:10:00", "django", "3 -> 4"),
        ("10:15:00", "django", "4 -> 5"),
    ]
    assert all(t % 300 == 0 for t, _, _ in result.events)
    assert result.pools["django"].running[-1] == 5  # MAX_DJANGO_INSTANCES


def test_seed_scales_in_one_per_run_down_to_two(policy: Policy) -> None:
    """Below 30 % the script stops one instance per run while more than 2 run, then nothing."""
    trace = _trace("10:00", "11:00", [("10:00", HIGH), ("10:20", LOW)])
    result, events = _seed(policy, trace)
    assert events == [
        ("10:00:00", "django", "2 -> 3"),
        ("10:05:00", "django", "3 -> 4"),
        ("10:10:00", "django", "4 -> 5"),
        ("10:20:00", "django", "5 -> 4"),
        ("10:25:00", "django", "4 -> 3"),
        ("10:30:00", "django", "3 -> 2"),
    ]
    assert result.pools["django"].actions == 6


def test_seed_holds_inside_the_band(policy: Policy) -> None:
    """Between 30 % and 70 % (53 % on two instances) the script never acts."""
    trace = _trace("10:00", "12:00", [("10:00", MID)])
    result, events = _seed(policy, trace)
    assert events == []
    assert set(result.pools["django"].running.tolist()) == {2.0}


def test_seed_has_no_memory_between_runs(policy: Policy) -> None:
    """One hot sample at 10:05 adds an instance (no window); 10:10 removes it (no cooldown)."""
    trace = _trace(
        "10:00",
        "10:30",
        [
            ("10:00", MID),
            ("10:05", HIGH),
            ("10:05:15", MID),
            ("10:07:30", HIGH),
            ("10:07:45", MID),
            ("10:10", LOW),
        ],
    )
    _, events = _seed(policy, trace)
    assert events == [("10:05:00", "django", "2 -> 3"), ("10:10:00", "django", "3 -> 2")]


@pytest.mark.parametrize(
    ("rps", "expected"),
    [
        # 08:00 crontab starts @3; startup 400 s: at 08:05 it is still starting, showing 5 %.
        # CPU of the two ready ones: 100 * rps / 120 + 3
        (49.2, []),  # 44 %: (44 + 44 + 5) / 3 = 31 -> hold (at 0 % it would be 29.3: stop)
        (38.4, [("08:05:00", "django", "3 -> 2")]),  # 35 %: 25 -> stop (without @3: 35, hold)
    ],
)
def test_seed_counts_starting_containers_at_five_percent(
    policy: Policy, rps: float, expected: list[tuple[str, str, str]]
) -> None:
    """podman stats shows a starting container at ~5 % CPU, and it is in the average."""
    trace = _trace("07:58", "08:08", [("07:58", rps)])
    _, events = _seed(policy, trace, _model(startup="400s"))
    django = [e for e in events if e[1] == "django"]
    assert django == [("08:00:00", "django", "2 -> 3"), *expected]


def test_seed_starting_container_holds_back_the_next_scale_out(policy: Policy) -> None:
    """At 100 % on two ready and one starting (5 %) the average is 68.3: no +1 until it is up."""
    trace = _trace("10:00", "10:20", [("10:00", HIGH)])
    _, events = _seed(policy, trace, _model(startup="400s"))
    # 10:05: (100 + 100 + 5) / 3 = 68.3; 10:10: all ready, 100; 10:15: (300 + 5) / 4 = 76.25
    assert events == [
        ("10:00:00", "django", "2 -> 3"),
        ("10:10:00", "django", "3 -> 4"),
        ("10:15:00", "django", "4 -> 5"),
    ]


def test_seed_stop_is_immediate_through_simulate(policy: Policy) -> None:
    """systemctl stop: the runner runs seed-script without a drain; running drops a tick later."""
    trace = _trace("10:00", "10:40", [("10:00", HIGH), ("10:20", LOW)])
    model = _model(drain="2m")
    sim = simulate(trace, policy, model, ["seed-script"])
    pool = sim.runs["seed-script"].pools["django"]
    k = trace.index_at(_at("10:20"))
    assert pool.running[k] == 5
    assert pool.running[k + 1] == 4
    assert pool.supply[k + 1] == 4


def test_seed_crontab_starts_and_stops_the_third_instance(policy: Policy) -> None:
    """08:00 starts django@3 and celery-worker@3, 23:00 stops them; celery-trading stays at 1."""
    trace = _trace("07:55", "23:10", [("07:55", MID)])
    result, events = _seed(policy, trace)
    assert events == [
        ("08:00:00", "django", "2 -> 3"),
        ("08:00:00", "celery", "2 -> 3"),
        ("23:00:00", "django", "3 -> 2"),
        ("23:00:00", "celery", "3 -> 2"),
    ]
    for pool in ("django", "celery"):
        assert _count_at(result, pool, trace, "07:59:45") == 2
        assert _count_at(result, pool, trace, "08:00:15") == 3
        assert _count_at(result, pool, trace, "22:59:45") == 3
        assert _count_at(result, pool, trace, "23:00:15") == 2
    trading = result.pools["celery-trading"]
    assert set(trading.running.tolist()) == set(trading.supply.tolist()) == {1.0}
    assert trading.actions == 0


def test_seed_crontab_leaves_more_than_three_at_eight(policy: Policy) -> None:
    """At 08:00 with four Django instances running, the crontab's start of @3 changes nothing."""
    trace = _trace("07:40", "08:10", [("07:40", HIGH), ("07:50", MID4)])
    _, events = _seed(policy, trace)
    assert events == [
        ("07:40:00", "django", "2 -> 3"),
        ("07:45:00", "django", "3 -> 4"),
        ("08:00:00", "celery", "2 -> 3"),
    ]


def test_seed_crontab_stops_one_of_four_at_eleven(policy: Policy) -> None:
    """At 23:00 with four Django instances the crontab stops @3: three remain (70 % holds)."""
    trace = _trace("22:40", "23:10", [("22:40", HIGH), ("22:50", MID4)])
    result, events = _seed(policy, trace)
    django = [e for e in events if e[1] == "django"]
    assert django == [
        ("22:40:00", "django", "2 -> 3"),
        ("22:45:00", "django", "3 -> 4"),
        ("23:00:00", "django", "4 -> 3"),
    ]
    assert _count_at(result, "django", trace, "23:05") == 3


def test_seed_crontab_and_script_at_eight_start_the_same_instance(policy: Policy) -> None:
    """At 08:00 with two hot instances, crontab and script both start django@3: three, not four."""
    # Bug (baselines.py, SeedScriptController.step): the script's run at 08:00 takes
    # ``current = changes.get(web)``, the count *after* the crontab's start, and adds one:
    # 2 -> 4. As written, autoscale.sh starts django@$((CURRENT_INSTANCES + 1)): if it reads
    # the count before the crontab's start, that is django@3, the unit the crontab starts; if
    # after, the starting container shows ~5 % and the average (100 + 100 + 5) / 3 = 68.3
    # stays below 70. Either way three instances run at 08:00; the fourth comes at 08:05.
    trace = _trace("07:58", "08:10", [("07:58", 300.0)])
    _, events = _seed(policy, trace)
    django = [e for e in events if e[1] == "django"]
    assert django == [("08:00:00", "django", "2 -> 3"), ("08:05:00", "django", "3 -> 4")]


def test_seed_celery_starts_with_three_workers_in_the_day(policy: Policy) -> None:
    """A trace starting at 09:00 finds celery-worker@3 running: the crontab started it at 08:00."""
    # Bug (baselines.py, SeedScriptController.initial): the generic Celery pool always starts
    # at 2, whatever the trace's start time; between 08:00 and 23:00 New York the seed's
    # crontab keeps celery-worker@1..3 running (the script never touches Celery), so a trace
    # starting in that span begins with 3. The bundled traces start at midnight: unaffected.
    trace = _trace("09:00", "09:30", [("09:00", MID)])
    result, _ = _seed(policy, trace)
    assert result.pools["celery"].running[0] == 3


# --------------------------------------------------------------------------- HPA


def test_hpa_policy_is_one_target_rule_per_pool(policy: Policy) -> None:
    """Target 70 % CPU utilization on each pool, tolerance 0.1 both ways, the exact HPA mode."""
    hpa = hpa_policy(policy)
    assert list(hpa.pools) == list(policy.pools)
    assert len(hpa.rules) == len(policy.pools)
    for rule, name in zip(hpa.rules, policy.pools, strict=True):
        assert isinstance(rule, TargetRule)
        assert rule.enabled
        assert (rule.name, rule.pool) == (f"hpa-{name}", name)
        assert (rule.target, rule.target_type, rule.mode) == (70.0, "utilization", "hpa")
        assert (rule.tolerance.scale_out, rule.tolerance.scale_in) == (0.1, 0.1)
        assert rule.metric.signal == "cpu"
    assert hpa.schedules == ()
    assert hpa.controller.interval == 15.0


def test_hpa_pools_have_hpa_behaviour(policy: Policy) -> None:
    """Same min/max/kind/queues; no cooldowns; 300 s scale-in stabilization; default rates."""
    hpa = hpa_policy(policy)
    for name, pool in hpa.pools.items():
        seed = policy.pools[name]
        assert (pool.kind, pool.queues, pool.min, pool.max) == (
            seed.kind,
            seed.queues,
            seed.min,
            seed.max,
        )
        assert (pool.scale_out_cooldown, pool.scale_in_cooldown) == (0.0, 0.0)
        assert pool.scale_in_stabilization == 300.0
        # Kubernetes defaults: up 100 % or 4 pods per 15 s (the larger), down 100 % per 15 s
        assert pool.scale_out_limits == (
            RateLimit(percent=100, period=15),
            RateLimit(instances=4, period=15),
        )
        assert pool.scale_in_limits == (RateLimit(percent=100, period=15),)


def test_hpa_target_is_a_parameter(policy: Policy) -> None:
    """hpa_policy(target=...) sets every rule's target."""
    rules = hpa_policy(policy, target=50.0).rules
    assert {r.target for r in rules if isinstance(r, TargetRule)} == {50.0}
    assert len(rules) == len(policy.pools)


# --------------------------------------------------------------------------- static and oracle


def test_static_is_max_everywhere(policy: Policy) -> None:
    """Static supply and running are each pool's max on every tick, with no actions."""
    trace = _trace("10:00", "11:00", [("10:00", HIGH), ("10:30", LOW)])
    result = run(StaticController(policy), trace, policy, _model())
    assert result.events == []
    for name, pool in policy.pools.items():
        run_ = result.pools[name]
        assert set(run_.supply.tolist()) == set(run_.running.tolist()) == {float(pool.max)}
        assert run_.actions == 0


def test_oracle_serves_capped_demand_and_starts_ahead(policy: Policy) -> None:
    """Serving = min(d, max); running rises ceil(startup / step) ticks before demand does."""
    # demand: 1 (10 rps), then 4 (150 rps: 2.5 / 0.77 = 3.2), then 22 capped at max 5
    trace = _trace(
        "10:00", "10:05", [("10:00", 10.0), ("10:02", 150.0), ("10:03", 1000.0), ("10:04", 10.0)]
    )
    result = run(OracleController(policy), trace, policy, _model(startup="40s"))
    django = result.pools["django"]
    ones, fours, fives = [1.0] * 8, [4.0] * 4, [5.0] * 4
    assert django.demand.tolist() == ones + fours + [22.0] * 4 + [1.0] * 4
    assert django.supply.tolist() == ones + fours + fives + [1.0] * 4
    # 40 s start-up: 3 ticks ahead (45 s)
    assert django.running.tolist() == [1.0] * 5 + [4.0] * 4 + [5.0] * 7 + [1.0] * 4
    assert django.actions == 3
    assert result.events == []


def test_oracle_startup_changes_the_lead(policy: Policy) -> None:
    """A 2-minute start-up starts the 4 instances 8 ticks ahead."""
    trace = _trace("10:00", "10:05", [("10:00", 10.0), ("10:03", 150.0)])
    result = run(OracleController(policy), trace, policy, _model(startup="2m"))
    assert result.pools["django"].running.tolist() == [1.0] * 4 + [4.0] * 16
    assert result.pools["django"].supply.tolist() == [1.0] * 12 + [4.0] * 8
