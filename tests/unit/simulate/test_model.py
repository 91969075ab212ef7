"""The capacity model: web CPU and SLO, worker queues, demand d(t) and the model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from senex_scale.errors import InputError
from senex_scale.policy.loading import validate_policy
from senex_scale.policy.models import Policy
from senex_scale.simulate.engine import PoolView, run
from senex_scale.simulate.model import (
    PoolLoad,
    PoolModel,
    SimModel,
    lindley,
    load_model,
    pool_loads,
)
from senex_scale.simulate.trace import Trace

T0 = 1795530600.0  # 2026-11-24T09:30:00-05:00
STEP = 15.0


def _trace(n: int = 1, **columns: float | list[float]) -> Trace:
    """A trace of ``n`` ticks at 15 s; scalars are held constant."""
    arrays = {
        name: np.full(n, float(v)) if isinstance(v, int | float) else np.asarray(v, np.float64)
        for name, v in columns.items()
    }
    return Trace("t", T0 + STEP * np.arange(n, dtype=np.float64), arrays)


def _web(model: PoolModel | None = None, **columns: float | list[float]) -> PoolLoad:
    trace = _trace(max((np.size(v) for v in columns.values()), default=1), **columns)
    return PoolLoad("web", "web", (), model or PoolModel(), trace)


def _worker(
    model: PoolModel | None = None,
    queues: tuple[str, ...] = ("a", "b"),
    **columns: float | list[float],
) -> PoolLoad:
    trace = _trace(max((np.size(v) for v in columns.values()), default=1), **columns)
    return PoolLoad("w", "worker", queues, model or PoolModel(), trace)


def _policy() -> Policy:
    return validate_policy(
        {
            "pools": {
                "web": {"kind": "web", "min": 1, "max": 10},
                "w": {"kind": "worker", "queues": ["a", "b"], "min": 0, "max": 10},
            }
        },
        source="<test>",
    )


class _Recorder:
    """Holds the initial counts and records what the controller sees at each tick."""

    name = "recorder"
    period: float | None = None

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.seen: list[dict[str, dict[str, float]]] = []

    def initial(self, pool: str, at: float) -> int:
        """The scripted initial count."""
        return self.counts[pool]

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        """Record the metrics, never change anything."""
        self.seen.append({name: dict(view.metrics) for name, view in pools.items()})
        return {}


QUIET = SimModel(pools={"web": PoolModel(cpu_noise=0), "w": PoolModel(cpu_noise=0)})


# --------------------------------------------------------------------------- web pools


@pytest.mark.parametrize(
    ("rps", "ws", "instances", "cpu", "connections"),
    [
        # work = 90/60 + 1000 * 8 / 1e5 = 1.58; cpu = 100 * 1.58 / n + 3
        (90.0, 1000.0, 2, 82.0, 500.0),
        (90.0, 1000.0, 3, 100 * 1.58 / 3 + 3, 1000 / 3),
        (90.0, 1000.0, 1, 100.0, 1000.0),  # 161 % capped at 100
        (0.0, 0.0, 4, 3.0, 0.0),  # idle: base CPU only
        (30.0, 0.0, 1, 53.0, 0.0),
    ],
)
def test_web_cpu_per_serving_instance(
    rps: float, ws: float, instances: int, cpu: float, connections: float
) -> None:
    """Without noise, cpu = min(100, 100 * work / n + base_cpu) and connections = ws / n."""
    recorder = _Recorder({"web": instances, "w": 1})
    run(recorder, _trace(2, http_rps=rps, ws_connections=ws), _policy(), QUIET)
    metrics = recorder.seen[0]["web"]
    assert metrics["cpu"] == pytest.approx(cpu)
    assert metrics["busy"] == pytest.approx(cpu)
    assert metrics["connections"] == pytest.approx(connections)


def test_web_noise_is_seeded_and_bounded() -> None:
    """CPU noise varies per tick, repeats with the model's seed and stays within 0..100."""
    policy = _policy()
    trace = _trace(200, http_rps=60.0)
    runs = []
    for seed in (7, 7, 8):
        recorder = _Recorder({"web": 2, "w": 1})
        run(recorder, trace, policy, SimModel(seed=seed))
        runs.append([seen["web"]["cpu"] for seen in recorder.seen])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert len(set(runs[0])) > 100
    assert all(0.0 <= c <= 100.0 for c in runs[0])
    assert np.mean(runs[0]) == pytest.approx(53.0, abs=1.0)


@pytest.mark.parametrize(
    ("rps", "ws", "expected"),
    [
        # headroom = 0.8 - 0.03 = 0.77 instances of work per instance
        (90.0, 1000.0, 3),  # 1.58 / 0.77 = 2.05 -> 3
        (0.0, 0.0, 1),  # no load: still at least one
        (0.77 * 60, 0.0, 1),  # exactly one instance of headroom (float noise tolerated)
        (0.77 * 60 * 4, 0.0, 4),
        (0.77 * 60 * 4 + 0.1, 0.0, 5),
        (0.0, 6000.0, 3),  # connections: 6000 / 2500 -> 3 (CPU alone needs 1)
        (60.0, 2500.0, 2),  # CPU (1.2 / 0.77 -> 2) and connections (1) both count
        (30.0, 7600.0, 4),  # connections win: 7600 / 2500 -> 4; CPU 1.108 / 0.77 -> 2
    ],
)
def test_web_demand(rps: float, ws: float, expected: int) -> None:
    """d(t) = max(1, ceil(work / headroom), ceil(ws / ws_per_instance))."""
    load = _web(http_rps=rps, ws_connections=ws)
    assert load.demand.tolist() == [float(expected)]


def test_web_demand_uses_the_pool_model() -> None:
    """Another rps_per_instance, base CPU and target change d(t) accordingly."""
    model = PoolModel(rps_per_instance=100, base_cpu=0, target_utilisation=0.5)
    load = _web(model, http_rps=[49.0, 50.0, 51.0, 250.0])
    # work / 0.5 = rps / 50
    assert load.demand.tolist() == [1.0, 1.0, 2.0, 5.0]


@pytest.mark.parametrize(
    ("rps", "ws", "serving", "violated"),
    [
        (60.0, 0.0, 1, False),  # utilisation exactly 1.0 is not above it
        (120.0, 0.0, 2, False),
        (61.0, 0.0, 1, True),
        (121.0, 0.0, 2, True),
        (0.0, 5000.0, 2, False),  # 2500 connections each: at capacity
        (0.0, 5001.0, 2, True),  # one connection too many
        (1.0, 0.0, 0, True),  # load and nobody serving
        (0.0, 0.0, 0, False),  # no load, nobody serving: nothing to violate
        (0.0, 0.0, 3, False),
    ],
)
def test_web_violations(rps: float, ws: float, serving: int, violated: bool) -> None:
    """A web SLO violation is utilisation above 1 or connections above capacity per instance."""
    load = _web(PoolModel(base_cpu=0), http_rps=rps, ws_connections=ws)
    result = load.violations(np.array([float(serving)]), STEP)
    assert result.tolist() == [violated]


def test_web_violation_counts_base_cpu() -> None:
    """With 3 % base CPU, work 0.98 per instance is already above 100 %."""
    load = _web(http_rps=[0.96 * 60, 0.98 * 60])
    assert load.violations(np.array([1.0, 1.0]), STEP).tolist() == [False, True]


# --------------------------------------------------------------------------- worker pools


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # per worker: 120 tasks/min * 0.8 = 96
        (0.0, 0.0, 1),
        (50.0, 46.0, 1),  # exactly 96
        (50.0, 46.5, 2),
        (100.0, 100.0, 3),  # 200 / 96 = 2.08
        (960.0, 0.0, 10),
    ],
)
def test_worker_demand_sums_the_pool_queues(a: float, b: float, expected: int) -> None:
    """d(t) = max(1, ceil(arrivals / (tasks_per_minute * target))) over the pool's own queues."""
    load = _worker(tasks_a=a, tasks_b=b, tasks_other=1000.0, http_rps=500.0)
    assert load.arrivals.tolist() == [a + b]
    assert load.demand.tolist() == [float(expected)]


def test_worker_queue_missing_from_trace_counts_as_zero() -> None:
    """A pool queue without a tasks_ column adds nothing; no queue at all is demand 1."""
    assert _worker(queues=("a", "zzz"), tasks_a=200.0).arrivals.tolist() == [200.0]
    assert _worker(queues=("zzz",), tasks_a=200.0).demand.tolist() == [1.0]


def test_worker_metrics_busy_and_queue() -> None:
    """busy = 100 * arrivals / capacity without a backlog, 100 with one; the queue grows."""
    # 60 tasks/min, 1 worker of 120: half busy; then 180/min: +15 tasks per 15 s tick
    trace = _trace(4, tasks_a=[60.0, 60.0, 180.0, 180.0], http_rps=1.0)
    recorder = _Recorder({"web": 1, "w": 1})
    run(recorder, trace, _policy(), QUIET)
    seen = [(s["w"]["busy"], s["w"]["queue"]) for s in recorder.seen]
    assert seen == [(50.0, 0.0), (50.0, 0.0), (100.0, 15.0), (100.0, 30.0)]


def test_worker_violation_when_wait_exceeds_slo() -> None:
    """Queue +30 per tick with one worker: the wait passes 60 s (q > 120) at the 5th tick."""
    # (240 - 120) * 15 / 60 = 30 tasks per tick; wait = q / 120 * 60 s
    load = _worker(tasks_a=[240.0] * 8)
    violated = load.violations(np.ones(8), STEP)
    assert violated.tolist() == [False] * 4 + [True] * 4
    # two workers keep up: no queue, no violation
    assert not load.violations(np.full(8, 2.0), STEP).any()


def test_worker_violation_follows_slo_and_drains() -> None:
    """A longer SLO tolerates the backlog; a queue draining after the burst still counts."""
    arrivals = [240.0] * 6 + [0.0] * 6
    strict = _worker(PoolModel(queue_wait_slo=30), tasks_a=arrivals)
    relaxed = _worker(PoolModel(queue_wait_slo="5m"), tasks_a=arrivals)
    ones = np.ones(12)
    # queue: 30, 60, ..., 180, then -30 per tick: 150, 120, 90, 60, 30, 0; wait = q / 2 s
    assert strict.violations(ones, STEP).tolist() == [False] * 2 + [True] * 7 + [False] * 3
    assert not relaxed.violations(ones, STEP).any()


@pytest.mark.parametrize(
    ("arrivals", "serving", "violated"),
    [
        (10.0, 0.0, True),  # tasks and no worker
        (0.0, 0.0, False),  # nothing to do and no worker
        (0.0, 1.0, False),
    ],
)
def test_worker_violation_without_capacity(arrivals: float, serving: float, violated: bool) -> None:
    """No capacity is a violation only while tasks arrive or wait."""
    load = _worker(tasks_a=[arrivals] * 3)
    assert load.violations(np.full(3, serving), STEP).tolist() == [violated] * 3


# --------------------------------------------------------------------------- lindley


def _loop(arrivals: np.ndarray, capacity: np.ndarray, step: float) -> np.ndarray:
    q, out = 0.0, []
    for a, c in zip(arrivals.tolist(), capacity.tolist(), strict=True):
        q = max(0.0, q + (a - c) * step / 60)
        out.append(q)
    return np.array(out)


@pytest.mark.parametrize(
    ("seed", "n", "step", "capacities"),
    [
        (1, 1, 15.0, (120.0,)),
        (2, 500, 15.0, (0.0,)),  # no capacity at all: the queue only grows
        (3, 2000, 15.0, (0.0, 120.0, 240.0, 360.0)),
        (4, 2000, 60.0, (100.0, 200.0)),
        (5, 5000, 15.0, (150.0, 300.0)),  # mostly enough: the queue empties again and again
        (6, 300, 1.0, (0.0, 500.0)),
    ],
)
def test_lindley_equals_plain_loop(
    seed: int, n: int, step: float, capacities: tuple[float, ...]
) -> None:
    """The closed form equals q = max(0, q + (a - c) * dt / 60) tick by tick."""
    rng = np.random.default_rng(seed)
    arrivals = rng.uniform(0.0, 300.0, n) * (rng.random(n) < 0.8)
    capacity = rng.choice(np.array(capacities), n)
    got = lindley(arrivals, capacity, step)
    expected = _loop(arrivals, capacity, step)
    assert got.shape == (n,)
    assert (got >= 0).all()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-6)


def test_lindley_hand_computed() -> None:
    """Arrivals 240, 0, 0, 240 against 120/min at 15 s: 30, 0, 0, 30."""
    got = lindley(np.array([240.0, 0.0, 0.0, 240.0]), np.full(4, 120.0), 15.0)
    assert got.tolist() == [30.0, 0.0, 0.0, 30.0]


# --------------------------------------------------------------------------- the model file


def test_load_model_none_is_defaults() -> None:
    """No file: the documented defaults for every pool."""
    model = load_model(None)
    assert model == SimModel()
    pool = model.pool("anything")
    assert (pool.rps_per_instance, pool.tasks_per_minute, pool.startup, pool.drain) == (
        60.0,
        120.0,
        40.0,
        20.0,
    )


def test_load_model_reads_toml(tmp_path: Path) -> None:
    """Seed, per-pool values and durations come from the file; other pools keep defaults."""
    path = tmp_path / "model.toml"
    path.write_text(
        'seed = 3\n[pools.django]\nrps_per_instance = 50\nstartup = "1m30s"\n'
        '[pools.celery]\ntasks_per_minute = 200\nqueue_wait_slo = "2m"\n',
        encoding="utf-8",
    )
    model = load_model(path)
    assert model.seed == 3
    assert (model.pool("django").rps_per_instance, model.pool("django").startup) == (50.0, 90.0)
    assert (model.pool("celery").tasks_per_minute, model.pool("celery").queue_wait_slo) == (
        200.0,
        120.0,
    )
    assert model.pool("celery-trading") == PoolModel()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[pools.django\nx = 1\n", ["not valid TOML"]),
        ("[pools.django]\nrps_per_instance = 50\nbogus_key = 1\n", ["pools.django", "bogus_key"]),
        ("sed = 3\n", ['"sed"', "seed"]),
        ("[pools.django]\nrps_per_instance = 0\n", ["pools.django.rps_per_instance"]),
        ('[pools.django]\nstartup = "soon"\n', ["pools.django.startup", "soon"]),
    ],
)
def test_load_model_errors_name_file_and_key(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    """Bad TOML, an unknown key or a bad value is an InputError naming the file and the key."""
    path = tmp_path / "bad-model.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


def test_load_model_is_read_like_a_policy(tmp_path: Path) -> None:
    """A directory, bytes that are not UTF-8 or deep nesting: one problem naming the file."""
    (tmp_path / "bytes.toml").write_bytes(b"seed = 7\n\xff\n")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 40 + "]" * 40 + "\n", encoding="utf-8")
    cases = {
        tmp_path: "is a directory, not a file",
        tmp_path / "bytes.toml": "not UTF-8 text (byte 0xff at line 2, column 1)",
        tmp_path / "deep.toml": "nested more than 32 levels deep",
    }
    for path, problem in cases.items():
        with pytest.raises(InputError) as info:
            load_model(path)
        assert str(info.value).startswith(f"{path}: "), str(info.value)
        assert problem in str(info.value)


def test_load_model_lists_every_problem_on_its_line(tmp_path: Path) -> None:
    """Several bad values: counted and listed one per line, like a policy's problems."""
    path = tmp_path / "m.toml"
    path.write_text('seed = "7"\n[pools.web]\ncpu_noise = inf\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_model(path)
    assert str(info.value) == (
        f"{path}: 2 problems\n"
        '  seed: must be an integer, not the string "7" (write 7 without quotes)\n'
        "  pools.web.cpu_noise: +inf: expected a finite number (not nan or inf)"
    )


def test_load_model_numbers_are_strict() -> None:
    """A number in quotes or a boolean is refused, not converted (pydantic's lax mode)."""
    for data in ({"seed": "7"}, {"pools": {"w": {"rps_per_instance": "60"}}}, {"seed": True}):
        with pytest.raises(ValidationError):
            SimModel.model_validate(data)


def test_load_model_missing_file(tmp_path: Path) -> None:
    """A missing model file is an InputError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(InputError, match=r"nope\.toml: file not found$"):
        load_model(path)


def test_pool_loads_follow_the_policy() -> None:
    """One PoolLoad per policy pool, with its kind, queues and capacity model."""
    model = SimModel(pools={"w": PoolModel(tasks_per_minute=60)})
    loads = pool_loads(_policy(), model, _trace(1, tasks_a=60.0, tasks_b=30.0))
    assert [(p.name, p.kind) for p in loads] == [("web", "web"), ("w", "worker")]
    assert loads[1].model.tasks_per_minute == 60.0
    # 90 / (60 * 0.8) = 1.9 -> 2
    assert loads[1].demand.tolist() == [2.0]
