"""Properties of ``Decider.decide`` over random pools, instances, samples, rules and memory.

Each example is one pool ``web`` with 1-3 random rules (threshold, average target, total
target), an optional daily UTC schedule that replaces min and/or max from 08:00 to 20:00,
random limits, cooldowns and fallback, random instances (ready, warming, starting,
draining), random scale events in memory, and per rule one kind of data: fresh samples,
a source error, no samples, only samples after ``now``, or a stale newest sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from senex_scale.core import (
    Decider,
    Decision,
    Instance,
    InstanceState,
    Memory,
    Observation,
    PoolMemory,
    Sample,
    ScaleEvent,
)
from senex_scale.policy import parse_policy

# Midnight UTC; ``now`` is drawn within the following day.
DAY = datetime(2026, 11, 24, tzinfo=UTC).timestamp()
STALE = 45.0  # the controller's default stale bound (3 x 15 s)
MISSING_MODES = ("error", "none", "future", "stale")

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Scenario:
    """One generated tick: the policy text, the observation, the time and what was generated."""

    toml: str
    observation: Observation
    now: float
    pool_min: int
    pool_max: int
    schedule: tuple[int | None, int | None] | None
    modes: dict[str, str]

    @property
    def bounds(self) -> tuple[int, int]:
        """Effective (min, max), computed here independently of the core."""
        low, high = self.pool_min, self.pool_max
        hour = datetime.fromtimestamp(self.now, UTC).hour
        if self.schedule is not None and 8 <= hour < 20:
            smin, smax = self.schedule
            low = smin if smin is not None else low
            high = smax if smax is not None else high
        return low, max(low, high)

    @property
    def current(self) -> int:
        """Instances that are not draining."""
        return sum(
            1 for i in self.observation.instances["web"] if i.state is not InstanceState.DRAINING
        )

    def decide(self) -> Decision:
        """The scale decision of pool web."""
        return Decider(parse_policy(self.toml)).decide(self.observation, self.now).for_pool("web")


def _condition(draw: st.DrawFn, side: str, value: float) -> str:
    window = draw(st.sampled_from([0, 15, 60, 300]))
    step = draw(st.sampled_from(["1", "2", '"50%"']))
    return f'{{ {side} = {value:g}, for = "{window}s", step = {step} }}'


@st.composite
def rule_toml(draw: st.DrawFn, name: str) -> tuple[str, str]:
    """A random rule on pool web: (kind, TOML)."""
    kind = draw(st.sampled_from(["threshold", "average", "total"]))
    aggregate = draw(st.sampled_from(["avg", "max", "min", "sum"]))
    head = (
        f'[[rules]]\nname = "{name}"\npool = "web"\n'
        f'metric = {{ source = "s", aggregate = "{aggregate}" }}\n'
    )
    if kind == "threshold":
        above = draw(st.integers(20, 150))
        below = draw(st.integers(0, above - 1))
        sides = draw(st.sampled_from(["both", "out", "in"]))
        body = ""
        if sides in ("both", "out"):
            body += f"scale_out = {_condition(draw, 'above', above)}\n"
        if sides in ("both", "in"):
            body += f"scale_in = {_condition(draw, 'below', below)}\n"
        return kind, head + body
    target = draw(st.integers(10, 100))
    tolerance = draw(st.sampled_from([0.0, 0.1, 0.3]))
    return (
        kind,
        head
        + f'type = "target"\ntarget = {target}\ntarget_type = "{kind}"\ntolerance = {tolerance}\n',
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A random pool, rules, schedule, instances, samples, errors and memory."""
    now = DAY + draw(st.integers(0, 86399))
    pool_min = draw(st.integers(0, 5))
    pool_max = draw(st.integers(max(1, pool_min), 8))
    pool = f'min = {pool_min}\nmax = {pool_max}\nwarmup = "60s"\n'
    pool += f'scale_out_cooldown = "{draw(st.sampled_from([0, 120]))}s"\n'
    pool += f'scale_in_cooldown = "{draw(st.sampled_from([0, 300]))}s"\n'
    pool += f'scale_in_stabilization = "{draw(st.sampled_from([0, 300]))}s"\n'
    if draw(st.booleans()):
        count = draw(st.integers(0, 6))
        after = draw(st.sampled_from([0, 300]))
        pool += f'fallback = {{ count = {count}, after = "{after}s" }}\n'
    limits = draw(st.sampled_from(["default", "percent", "instances"]))
    if limits == "percent":
        pool += 'scale_out_limits = [{ percent = 50, period = "1m" }]\n'
        pool += 'scale_in_limits = [{ percent = 25, period = "1m" }]\n'
    elif limits == "instances":
        pool += 'scale_out_limits = [{ instances = 1, period = "1m" }]\n'
        pool += 'scale_in_limits = [{ instances = 1, period = "2m" }]\n'

    names = [f"r{i}" for i in range(draw(st.integers(1, 3)))]
    rules = [draw(rule_toml(name)) for name in names]

    schedule: tuple[int | None, int | None] | None = None
    schedule_toml = ""
    if draw(st.booleans()):
        smin = draw(st.none() | st.integers(0, 6))
        smax = draw(st.none() | st.integers(max(1, smin or 0), 8))
        if smin is None and smax is None:
            smin = 1
        if smax is None and smin is not None and smin > pool_max:
            smax = smin  # a schedule min above the pool max must raise max too
        schedule = (smin, smax)
        schedule_toml = (
            '[[schedules]]\nname = "day"\npools = ["web"]\n'
            + 'start = "0 8 * * *"\nend = "0 20 * * *"\n'
            + (f"min = {smin}\n" if smin is not None else "")
            + (f"max = {smax}\n" if smax is not None else "")
        )

    # Mostly ready instances: a starting one blocks every scale-in, which hides the rest.
    ready, starting, draining = InstanceState.READY, InstanceState.STARTING, InstanceState.DRAINING
    states = st.sampled_from([ready] * 6 + [starting, draining])
    started = st.sampled_from([None, None, 30, 120]).map(
        lambda ago: None if ago is None else now - ago
    )
    instances = tuple(
        Instance(str(i + 1), draw(states), draw(started)) for i in range(draw(st.integers(0, 10)))
    )
    ids = [i.id for i in instances] + ["ghost"]

    samples: dict[str, tuple[Sample, ...]] = {}
    errors: dict[str, str] = {}
    modes: dict[str, str] = {}
    for name, (kind, _) in zip(names, rules, strict=True):
        mode = draw(st.sampled_from(["fresh", "fresh", *MISSING_MODES]))
        modes[name] = mode
        if mode == "error":
            errors[name] = "source failed"
            # An error wins even over fresh samples.
            mode = "fresh" if draw(st.booleans()) else "none"
        if mode == "none":
            continue
        count = draw(st.integers(1, 25))
        if mode == "future":  # every sample after now
            oldest = now + draw(st.integers(1, 60))
            times = [oldest + 15 * k for k in range(count)]
        else:
            newest = now - draw(
                st.integers(0, int(STALE)) if mode == "fresh" else st.integers(int(STALE) + 1, 900)
            )
            times = [newest - 15 * (count - 1 - k) for k in range(count)]
        constant = draw(st.sampled_from([True, True, False]))
        base = draw(st.floats(0, 200, allow_nan=False))
        values = [
            base if constant else draw(st.floats(0, 200, allow_nan=False)) for _ in range(count)
        ]
        if kind == "average":
            reporting = draw(
                st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True)
            )
            series = [
                Sample(at, v, iid) for at, v in zip(times, values, strict=True) for iid in reporting
            ]
        else:
            series = [Sample(at, v) for at, v in zip(times, values, strict=True)]
        samples[name] = tuple(series)

    events = []
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):
        before = draw(st.integers(0, 10))
        after = draw(st.sampled_from([a for a in range(11) if a != before]))
        events.append(ScaleEvent(now - draw(st.integers(0, 900)), before, after))
    # Events are in time order, as the controller records them.
    events.sort(key=lambda e: e.at)
    memory = Memory(pools={"web": PoolMemory(events=tuple(events))})

    toml = (
        '[sources.s]\ntype = "prometheus"\n[pools.web]\n'
        + pool
        + "".join(text for _, text in rules)
        + schedule_toml
    )
    observation = Observation({"web": instances}, samples, errors, memory)
    return Scenario(toml, observation, float(now), pool_min, pool_max, schedule, modes)


@SETTINGS
@given(scenarios())
def test_desired_within_bounds_unless_rate_limited(scenario: Scenario) -> None:
    """desired is within [min, max] (effective, after schedules), except that a rate limit may
    hold it short of a bound on the way there from outside.

    Precisely, with ``low, high`` the effective bounds and ``current`` the non-draining count:

    * ``min(current, low) <= desired <= max(current, high)``: the core never goes past a
      bound, and never moves away from the bounds;
    * if ``desired`` is outside ``[low, high]`` then a rate limit was applied (a "limited ...
      by rate limit" reason) and ``desired`` lies between ``current`` and the bound it is
      heading for: ``current <= desired < low`` or ``high < desired <= current``.
    """
    decision = scenario.decide()
    low, high = scenario.bounds
    current = scenario.current
    assert (decision.min, decision.max) == (low, high)
    assert decision.current == current
    assert min(current, low) <= decision.desired <= max(current, high)
    if not low <= decision.desired <= high:
        assert any("by rate limit" in r for r in decision.reasons), decision.reasons
        assert current <= decision.desired < low or high < decision.desired <= current


@SETTINGS
@given(scenarios())
def test_no_scale_in_with_missing_data(scenario: Scenario) -> None:
    """No scale-in while any rule of the pool has missing data (a source error, no samples,
    only samples after ``now``, or a stale newest sample), except down towards an effective
    max below ``current``: bounds are not data-driven.

    Precisely: if some rule's data is missing, ``desired >= min(current, high)``. When
    ``current <= high`` that is ``desired >= current``; when ``current > high`` the pool
    may shrink, but not below ``high``.
    """
    decision = scenario.decide()
    _, high = scenario.bounds
    if any(mode in MISSING_MODES for mode in scenario.modes.values()):
        assert decision.desired >= min(scenario.current, high), (scenario.modes, decision.reasons)


@st.composite
def blocked_scale_ins(draw: st.DrawFn) -> tuple[str, str, Observation, float]:
    """A scale-in that is certain but for 1-2 rules with missing data.

    Pool web: min 0, max 10, no cooldown, no events, 1-10 warm ready instances; rule "low"
    (scale_in only, so no anti-flap line) reads 10 < 50 for 10 minutes. Returns the policy
    with and without the extra rules whose data is missing, the observation and ``now``.
    """
    now = float(DAY + draw(st.integers(0, 86399)))
    instances = tuple(Instance(str(i + 1)) for i in range(draw(st.integers(1, 10))))
    window = draw(st.sampled_from([0, 60, 300]))
    step = draw(st.sampled_from(["1", "2", '"50%"']))
    base = (
        '[sources.s]\ntype = "prometheus"\n'
        '[pools.web]\nmin = 0\nmax = 10\nscale_in_cooldown = "0s"\n'
        '[[rules]]\nname = "low"\npool = "web"\nmetric = { source = "s", aggregate = "sum" }\n'
        f'scale_in = {{ below = 50, for = "{window}s", step = {step} }}\n'
    )
    samples = {"low": tuple(Sample(now - 15 * k, 10.0) for k in range(40, -1, -1))}
    errors: dict[str, str] = {}
    extra = ""
    for name in [f"m{i}" for i in range(draw(st.integers(1, 2)))]:
        extra += draw(rule_toml(name))[1]
        mode = draw(st.sampled_from(MISSING_MODES))
        times: list[float] = []
        if mode == "error":
            errors[name] = "source failed"
            if draw(st.booleans()):  # an error wins over fresh samples
                times = [now - 15 * k for k in range(10, -1, -1)]
        elif mode == "stale":
            newest = now - draw(st.integers(int(STALE) + 1, 900))
            times = [newest - 15 * k for k in range(10, -1, -1)]
        elif mode == "future":
            oldest = now + draw(st.integers(1, 60))
            times = [oldest + 15 * k for k in range(11)]
        if times:
            value = draw(st.floats(0, 200, allow_nan=False))
            samples[name] = tuple(Sample(at, value, i.id) for at in times for i in instances)
    return base + extra, base, Observation({"web": instances}, samples, errors), now


@SETTINGS
@given(blocked_scale_ins())
def test_missing_data_blocks_an_otherwise_certain_scale_in(
    case: tuple[str, str, Observation, float],
) -> None:
    """A scale-in that happens without them is held by rules whose data is missing."""
    with_missing, without, observation, now = case
    current = len(observation.instances["web"])
    free = Decider(parse_policy(without)).decide(observation, now).for_pool("web")
    assert free.desired < current  # the control: "low" alone scales in
    held = Decider(parse_policy(with_missing)).decide(observation, now).for_pool("web")
    assert held.desired == current, held.reasons
    assert any(r.startswith("no change: no scale-in while ") for r in held.reasons)


@SETTINGS
@given(scenarios())
def test_decision_is_explained(scenario: Scenario) -> None:
    """Every decision has reasons, and the last one states the outcome."""
    decision = scenario.decide()
    assert decision.reasons
    assert all(decision.reasons)
    last = decision.reasons[-1]
    if decision.desired > decision.current:
        assert last == f"scale out {decision.current} -> {decision.desired}"
    elif decision.desired < decision.current:
        assert last == f"scale in {decision.current} -> {decision.desired}"
    else:
        assert any(r.startswith("no change") for r in decision.reasons)


@SETTINGS
@given(scenarios())
def test_decide_is_deterministic(scenario: Scenario) -> None:
    """The core is pure: the same observation and time give the same plan."""
    policy = parse_policy(scenario.toml)
    first = Decider(policy).decide(scenario.observation, scenario.now)
    second = Decider(policy).decide(scenario.observation, scenario.now)
    assert first == second
