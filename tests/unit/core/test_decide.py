"""One tick of decisions through ``Decider.decide``: votes, guards, bounds, limits, actions."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from senex_scale.core import Decider, Instance, InstanceState, Memory, Observation, Plan, Sample
from senex_scale.policy import Policy, Priority, load_default, parse_policy

# Tuesday 2026-11-24 15:00 UTC = 10:00 in New York (EST), an XNYS trading day.
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()

SOURCE = '[sources.s]\ntype = "prometheus"\n'


def make_policy(
    rules: str = "", *, min: int = 1, max: int = 10, pool: str = "", extra: str = ""
) -> Policy:
    """A policy with one source ``s``, one pool ``web`` (extra pool keys in ``pool``) and rules."""
    return parse_policy(
        f"{SOURCE}\n[pools.web]\nmin = {min}\nmax = {max}\n{pool}\n{rules}\n{extra}"
    )


def threshold(
    name: str = "cpu",
    out: str | None = 'above = 70, for = "5m"',
    inn: str | None = 'below = 30, for = "10m"',
    *,
    priority: str = "medium",
    aggregate: str = "avg",
    pool: str = "web",
) -> str:
    """A ``[[rules]]`` threshold entry; ``out``/``inn`` are the inline-table bodies."""
    lines = [
        "[[rules]]",
        f'name = "{name}"',
        f'pool = "{pool}"',
        f'metric = {{ source = "s", aggregate = "{aggregate}" }}',
        f'priority = "{priority}"',
    ]
    if out is not None:
        lines.append(f"scale_out = {{ {out} }}")
    if inn is not None:
        lines.append(f"scale_in = {{ {inn} }}")
    return "\n".join(lines) + "\n"


def target(
    name: str = "tcpu", value: float = 50, *, type_: str = "average", aggregate: str = "avg"
) -> str:
    """A ``[[rules]]`` target entry on pool web."""
    return (
        f'[[rules]]\nname = "{name}"\ntype = "target"\npool = "web"\n'
        f'metric = {{ source = "s", aggregate = "{aggregate}" }}\n'
        f'target = {value}\ntarget_type = "{type_}"\n'
    )


def action(name: str, above: float, priority: str, *, for_: str = "0s", extra: str = "") -> str:
    """A ``[[rules]]`` notify action entry."""
    return (
        f'[[rules]]\nname = "{name}"\ntype = "action"\nmetric = {{ source = "s" }}\n'
        f'when = {{ above = {above}, for = "{for_}" }}\npriority = "{priority}"\n'
        f'action = {{ type = "notify", message = "{name} is high" }}\n{extra}'
    )


def steady(
    value: float, seconds: float, *, now: float = NOW, ago: float = 0.0
) -> tuple[Sample, ...]:
    """Pool samples of ``value`` every 15 s covering ``seconds`` up to ``ago`` s before ``now``."""
    return tuple(Sample(now - ago - 15.0 * i, value) for i in range(int(seconds // 15), -1, -1))


def per_instance(
    values: Mapping[str, float], seconds: float = 0.0, *, now: float = NOW
) -> tuple[Sample, ...]:
    """Per-instance samples every 15 s covering ``seconds`` up to ``now``."""
    return tuple(
        Sample(now - 15.0 * i, value, iid)
        for i in range(int(seconds // 15), -1, -1)
        for iid, value in values.items()
    )


def ready(n: int) -> tuple[Instance, ...]:
    """``n`` ready, warm instances "1".."n"."""
    return tuple(Instance(str(i + 1)) for i in range(n))


def run(
    policy: Policy,
    n: int = 3,
    samples: Mapping[str, Sequence[Sample]] | None = None,
    *,
    errors: Mapping[str, str] | None = None,
    memory: Memory | None = None,
    instances: Sequence[Instance] | None = None,
    now: float = NOW,
) -> Plan:
    """Decide one tick for pool web with ``n`` ready instances (or ``instances``)."""
    obs = Observation(
        instances={"web": tuple(instances) if instances is not None else ready(n)},
        samples=dict(samples or {}),
        errors=dict(errors or {}),
        memory=memory or Memory(),
    )
    plan = Decider(policy).decide(obs, now)
    for decision in plan.decisions:
        assert decision.reasons, decision
        assert all(isinstance(r, str) and r for r in decision.reasons), decision
    return plan


# --------------------------------------------------------------------------- thresholds

THRESHOLD = make_policy(threshold())

# (samples, desired, reasons) on 3 instances; cpu: out > 70 for 5m, in < 30 for 10m.
THRESHOLD_CASES = [
    pytest.param(
        steady(85, 300), 4, ("cpu 85.0 > 70 for 5m: +1 (3 -> 4)", "scale out 3 -> 4"), id="out"
    ),
    pytest.param(
        steady(85, 285),
        3,
        ("cpu 85.0 > 70 for 4m45s of 5m", "no change: 3 instances"),
        id="out-not-yet",
    ),
    pytest.param(
        steady(20, 600), 2, ("cpu 20.0 < 30 for 10m: -1 (3 -> 2)", "scale in 3 -> 2"), id="in"
    ),
    pytest.param(
        steady(20, 540),
        3,
        ("cpu 20.0 < 30 for 9m of 10m", "no change: 3 instances"),
        id="in-not-yet",
    ),
    pytest.param(
        steady(50, 600),
        3,
        ("cpu 50.0: within out > 70 for 5m, in < 30 for 10m", "no change: 3 instances"),
        id="in-band",
    ),
    # 10 min above, but the newest sample is back at 60: nothing holds.
    pytest.param(
        (*steady(85, 600, ago=15), Sample(NOW, 60.0)),
        3,
        ("cpu 60.0: within out > 70 for 5m, in < 30 for 10m", "no change: 3 instances"),
        id="newest-back-in-band",
    ),
]


@pytest.mark.parametrize(("samples", "desired", "reasons"), THRESHOLD_CASES)
def test_threshold_rule(
    samples: tuple[Sample, ...], desired: int, reasons: tuple[str, ...]
) -> None:
    """A threshold rule scales by one step once its condition held for the whole window."""
    decision = run(THRESHOLD, 3, {"cpu": samples}).for_pool("web")
    assert (decision.current, decision.desired, decision.reasons) == (3, desired, reasons)


@pytest.mark.parametrize(
    ("step", "current", "desired"),
    [
        pytest.param("2", 3, 5, id="count"),
        pytest.param('"50%"', 4, 6, id="percent"),  # ceil(4 * 0.5) = 2
        pytest.param('"10%"', 4, 5, id="percent-at-least-one"),  # ceil(0.4) = 1
    ],
)
def test_threshold_step(step: str, current: int, desired: int) -> None:
    """A step is a count or a percent of the current count (rounded up, at least 1)."""
    policy = make_policy(threshold(out=f"above = 70, step = {step}", inn=None))
    assert run(policy, current, {"cpu": steady(85, 0)}).for_pool("web").desired == desired


# --------------------------------------------------------------------------- several rules

OUT = "above = 70"
OUT2 = "above = 70, step = 2"
IN = "below = 30"
IN2 = "below = 30, step = 2"

# (rule a (out, in), value a, rule b (out, in), value b, desired from 4, a reason that must appear)
COMBINE_CASES = [
    pytest.param(
        (OUT, None), 80, (OUT2, None), 80, 6, "b 80.0 > 70: +2 (4 -> 6)", id="larger-out-wins"
    ),
    pytest.param((OUT, IN), 80, (OUT, IN), 10, 5, "a 80.0 > 70: +1 (4 -> 5)", id="out-beats-in"),
    pytest.param(
        (OUT, IN),
        50,
        (OUT, IN),
        10,
        4,
        "no change: a does not agree to scale in",
        id="none-beats-in",
    ),
    # a has no scale_in: below its line it abstains, so b's scale-in goes through.
    pytest.param((OUT, None), 50, (OUT, IN), 10, 3, "b 10.0 < 30: -1 (4 -> 3)", id="abstain"),
    # a has only scale_in and is in its band: that is a "no change" vote.
    pytest.param(
        (None, IN),
        50,
        (OUT, IN),
        10,
        4,
        "no change: a does not agree to scale in",
        id="in-only-none",
    ),
    pytest.param((OUT, IN), 10, (OUT, IN2), 10, 2, "b 10.0 < 30: -2 (4 -> 2)", id="larger-in-wins"),
    pytest.param((OUT, IN), 50, (OUT, IN), 50, 4, "no change: 4 instances", id="both-in-band"),
]


@pytest.mark.parametrize(("a", "a_value", "b", "b_value", "desired", "reason"), COMBINE_CASES)
def test_rules_combine(
    a: tuple[str | None, str | None],
    a_value: float,
    b: tuple[str | None, str | None],
    b_value: float,
    desired: int,
    reason: str,
) -> None:
    """Out beats no change beats in; same direction: the larger change; abstain does not block."""
    policy = make_policy(threshold("a", *a, aggregate="sum") + threshold("b", *b, aggregate="sum"))
    decision = run(policy, 4, {"a": steady(a_value, 0), "b": steady(b_value, 0)}).for_pool("web")
    assert decision.desired == desired
    assert reason in decision.reasons


def test_out_priority_is_the_most_urgent_out_rule() -> None:
    """A scale-out decision carries the highest priority among the rules voting out."""
    policy = make_policy(
        threshold("a", OUT, None, priority="low") + threshold("b", OUT2, None, priority="critical")
    )
    decision = run(policy, 2, {"a": steady(80, 0), "b": steady(80, 0)}).for_pool("web")
    assert (decision.desired, decision.priority) == (4, Priority.CRITICAL)


# --------------------------------------------------------------------------- missing data

BOTH = make_policy(threshold("cpu", OUT, IN) + threshold("conn", "above = 1500", None))
LOW_CPU = steady(10, 600)


@pytest.mark.parametrize(
    ("conn", "errors", "why"),
    [
        pytest.param(steady(100, 600), {"conn": "timeout"}, "source error: timeout", id="error"),
        pytest.param(
            steady(100, 600, ago=60), {}, "newest sample is 60s old (stale after 45s)", id="stale"
        ),
        pytest.param((), {}, "no samples", id="no-samples"),
        pytest.param((Sample(NOW + 15, 100.0),), {}, "no samples", id="only-future-samples"),
    ],
)
def test_no_scale_in_on_missing_data(
    conn: tuple[Sample, ...], errors: dict[str, str], why: str
) -> None:
    """A rule with missing data blocks every scale-in of its pool, even if it never scales in."""
    decision = run(BOTH, 4, {"cpu": LOW_CPU, "conn": conn}, errors=errors).for_pool("web")
    assert decision.desired == 4
    assert f"conn: no data ({why})" in decision.reasons
    assert "no change: no scale-in while conn has no data" in decision.reasons


def test_missing_data_does_not_block_scale_out() -> None:
    """Missing data never holds back a scale-out voted by another rule."""
    decision = run(BOTH, 4, {"cpu": steady(90, 0)}, errors={"conn": "timeout"}).for_pool("web")
    assert decision.desired == 5


def test_rule_own_error_means_no_change() -> None:
    """A rule whose own source failed votes "missing", never "in" (missing is not zero)."""
    decision = run(THRESHOLD, 3, {"cpu": steady(10, 600)}, errors={"cpu": "refused"}).for_pool(
        "web"
    )
    assert decision.desired == 3
    assert decision.reasons == ("cpu: no data (source error: refused)", "no change: 3 instances")


def test_no_scale_in_while_an_instance_starts() -> None:
    """While a new instance is starting, no scale-in (the scale-out is not finished)."""
    instances = (*ready(3), Instance("4", InstanceState.STARTING, NOW - 20))
    decision = run(THRESHOLD, samples={"cpu": steady(10, 600)}, instances=instances).for_pool("web")
    assert (decision.current, decision.desired) == (4, 4)
    assert "no change: scale-out in progress (1 starting)" in decision.reasons


def test_draining_instances_are_not_counted() -> None:
    """Draining instances are on their way out: ``current`` counts the others only."""
    instances = (*ready(3), Instance("4", InstanceState.DRAINING))
    decision = run(THRESHOLD, samples={"cpu": steady(10, 600)}, instances=instances).for_pool("web")
    assert (decision.current, decision.desired) == (3, 2)


# --------------------------------------------------------------------------- cooldowns

# 0s windows: a window restarts at each scale change, which would hide the cooldown under test
COOL = make_policy(
    threshold(out="above = 70", inn="below = 30"),
    pool='scale_out_cooldown = "2m"\nscale_in_cooldown = "5m"',
)


@pytest.mark.parametrize(
    ("event", "samples", "desired", "reason"),
    [
        # scale-out 60 s ago, cooldown 2m: 1m left.
        pytest.param(
            (60, 2, 3),
            steady(85, 300),
            3,
            "no change: scale-out cooldown, 1m of 2m left",
            id="out-cool",
        ),
        pytest.param((120, 2, 3), steady(85, 300), 4, "scale out 3 -> 4", id="out-cooldown-over"),
        # A scale-in does not start the scale-out cooldown.
        pytest.param((10, 4, 3), steady(85, 300), 4, "scale out 3 -> 4", id="out-after-in"),
        # scale-in cooldown counts from the last scale in either direction: 300 - 100 = 200 s.
        pytest.param(
            (100, 2, 3),
            steady(10, 600),
            3,
            "no change: scale-in cooldown, 3m20s of 5m left",
            id="in-cool",
        ),
        pytest.param(
            (290, 4, 3),
            steady(10, 600),
            3,
            "no change: scale-in cooldown, 10s of 5m left",
            id="in-after-in",
        ),
        pytest.param((300, 2, 3), steady(10, 600), 2, "scale in 3 -> 2", id="in-cooldown-over"),
    ],
)
def test_cooldowns(
    event: tuple[float, int, int], samples: tuple[Sample, ...], desired: int, reason: str
) -> None:
    """Cooldowns from the memory's scale events hold rule-driven changes back."""
    ago, before, after = event
    memory = Memory().with_scale("web", NOW - ago, before, after, keep=3600)
    decision = run(COOL, 3, {"cpu": samples}, memory=memory).for_pool("web")
    assert decision.desired == desired
    assert reason in decision.reasons


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("current", "value", "desired", "reasons"),
    [
        pytest.param(
            5,
            85,
            5,
            ("cpu 85.0 > 70 for 5m: +1 (5 -> 6)", "capped 6 -> 5 by max", "no change: 5 instances"),
            id="capped",
        ),
        pytest.param(
            1,
            50,
            3,
            (
                "cpu 50.0: within out > 70 for 5m, in < 30 for 10m",
                "raised 1 -> 3 by min",
                "scale out 1 -> 3",
            ),
            id="raised",
        ),
        pytest.param(
            7,
            50,
            5,
            (
                "cpu 50.0: within out > 70 for 5m, in < 30 for 10m",
                "capped 7 -> 5 by max",
                "scale in 7 -> 5",
            ),
            id="above-max",
        ),
        pytest.param(
            3,
            10,
            3,
            (
                "cpu 10.0 < 30 for 10m: -1 (3 -> 2)",
                "raised 2 -> 3 by min",
                "no change: 3 instances",
            ),
            id="in-stopped-at-min",
        ),
    ],
)
def test_min_max(current: int, value: float, desired: int, reasons: tuple[str, ...]) -> None:
    """Rule results are capped by max and raised to min, and the reasons say so."""
    policy = make_policy(threshold(), min=3, max=5)
    decision = run(policy, current, {"cpu": steady(value, 600)}).for_pool("web")
    assert (decision.desired, decision.reasons) == (desired, reasons)
    assert (decision.min, decision.max) == (3, 5)


def test_raised_by_min_takes_the_pool_priority() -> None:
    """A count raised to min carries the pool's priority, not that of a quiet rule."""
    policy = make_policy(threshold(priority="low"), min=3, max=5, pool='priority = "critical"')
    decision = run(policy, 1, {"cpu": steady(50, 0)}).for_pool("web")
    assert (decision.desired, decision.priority) == (3, Priority.CRITICAL)


def test_percent_rate_limit_does_not_pin_an_empty_pool() -> None:
    """A pool at 0 instances below its min can start one, even with a percent-only limit."""
    # 50 % of 0 is 0 in every period: without a floor the pool stays empty forever (HPA never
    # meets this, it does not run at 0 replicas).
    policy = make_policy(
        threshold("queue", "above = 100", None, aggregate="sum"),
        min=2,
        max=6,
        pool='scale_out_limits = [{ percent = 50, period = "1m" }]',
    )
    decision = run(policy, 0, {"queue": steady(500, 0)}).for_pool("web")
    assert decision.current == 0
    assert decision.desired > 0, decision.reasons


# --------------------------------------------------------------------------- schedules

MARKET = """
[[schedules]]
name = "market-hours"
pools = ["web"]
start = "0 8 * * MON-FRI"
end = "0 23 * * MON-FRI"
timezone = "America/New_York"
calendar = "XNYS"
min = 3
"""

SCHEDULED = make_policy(threshold(), min=2, max=5, extra=MARKET)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> float:
    """Epoch seconds of a UTC wall time."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now", "low"),
    [
        pytest.param(utc(2026, 11, 24, 15, 0), 3, id="tuesday-10:00-ET"),
        pytest.param(utc(2026, 11, 28, 15, 0), 2, id="saturday-10:00-ET"),
        pytest.param(utc(2026, 11, 26, 15, 0), 2, id="thanksgiving-10:00-ET"),
        pytest.param(utc(2026, 11, 24, 12, 59), 2, id="tuesday-07:59-ET"),
        pytest.param(utc(2026, 11, 24, 13, 0), 3, id="tuesday-08:00-ET"),
        pytest.param(utc(2026, 11, 25, 3, 59), 3, id="tuesday-22:59-ET"),
        pytest.param(utc(2026, 11, 25, 4, 0), 2, id="tuesday-23:00-ET"),
    ],
)
def test_schedule_raises_min(now: float, low: int) -> None:
    """The market-hours schedule raises min to 3 from 08:00 to 23:00 New York on XNYS days."""
    decision = run(SCHEDULED, 2, {"cpu": steady(50, 0, now=now)}, now=now).for_pool("web")
    assert (decision.min, decision.max, decision.desired) == (low, 5, low)
    if low == 3:
        assert "schedule market-hours: min 2 -> 3" in decision.reasons
        assert "raised 2 -> 3 by min" in decision.reasons
    else:
        assert not any("market-hours" in r for r in decision.reasons)


def test_schedule_max_lowers_and_min_above_max_raises_max() -> None:
    """A schedule max caps the pool; a min above the effective max raises that max."""
    extra = (
        '[[schedules]]\nname = "night"\npools = ["web"]\nstart = "0 0 * * *"\nend = "0 6 * * *"\n'
        "max = 2\n"
        '[[schedules]]\nname = "floor"\npools = ["web"]\nstart = "0 0 * * *"\nend = "0 6 * * *"\n'
        "min = 3\nmax = 5\n"
    )
    policy = make_policy(threshold(), min=1, max=8, extra=extra)
    at = utc(2026, 11, 24, 3, 0)
    low, high, notes = Decider(policy).bounds("web", at)
    assert (low, high) == (3, 3)
    assert notes == [
        "schedule floor: min 1 -> 3",
        "schedule night: max 8 -> 2",
        "min 3 above max 2: max raised to 3",
    ]
    assert Decider(policy).bounds("web", utc(2026, 11, 24, 7, 0)) == (1, 8, [])


# --------------------------------------------------------------------------- target rules

TARGET = make_policy(target("tcpu", 50), pool='scale_in_cooldown = "0s"')


def tick(policy: Policy, n: int, cpu: float, now: float, memory: Memory) -> Plan:
    """One tick with ``n`` warm instances all at ``cpu``."""
    values = {str(i + 1): cpu for i in range(n)}
    return run(policy, n, {"tcpu": per_instance(values, now=now)}, memory=memory, now=now)


def test_target_scale_in_is_stabilized_over_ticks() -> None:
    """A target rule scales in only to the highest recommendation of the last 5 minutes."""
    memory = Memory()
    plan = tick(TARGET, 4, 50, NOW, memory)  # ratio 1.0: recommendation 4
    assert plan.for_pool("web").desired == 4
    memory = plan.memory
    desired_at: dict[float, int] = {}
    reasons_at: dict[float, tuple[str, ...]] = {}
    for k in range(1, 23):
        at = NOW + 15 * k
        # 25/50 = 0.5 -> raw ceil(0.5 * 4) = 2, except one tick at 50 (raw 4) 150 s in.
        plan = tick(TARGET, 4, 50 if k == 10 else 25, at, memory)
        memory = plan.memory
        desired_at[at - NOW] = plan.for_pool("web").desired
        reasons_at[at - NOW] = plan.for_pool("web").reasons
    # The 4 of t=150 is in the window until t=450 (inclusive); 465 is the first tick without it.
    assert [t for t, d in desired_at.items() if d != 4] == []
    assert (
        "tcpu 25.0 (target 50): ratio 0.50: wants 2, stabilization holds 4 (highest of last 5m)"
        in (reasons_at[15])
    )
    for k in range(23, 32):
        at = NOW + 15 * k
        plan = tick(TARGET, 4, 25, at, memory)
        memory = plan.memory
        desired_at[at - NOW] = plan.for_pool("web").desired
    assert desired_at[450] == 4
    assert desired_at[465] == 2
    history = memory.pool("web").recommendations["tcpu"]
    assert all(NOW + 465 - at <= 300 for at, _ in history)
    assert history[-1] == (NOW + 465, 2)


def test_target_scale_out_is_not_stabilized() -> None:
    """Stabilization only delays scale-in: a scale-out follows the raw recommendation at once."""
    memory = Memory()
    for k in range(5):
        memory = tick(TARGET, 4, 10, NOW + 15 * k, memory).memory  # low recommendations
    decision = tick(TARGET, 4, 75, NOW + 75, memory).for_pool("web")  # 1.5 -> 6
    assert decision.desired == 6


def test_target_rate_limited_jump() -> None:
    """A big target jump is limited by the scale-out rate limit (HPA: 100 % or 4 per 15 s)."""
    policy = make_policy(target("tcpu", 50), max=30)
    # 500/50 = 10 -> raw 20; from 2: 100 % -> 4, 4 instances -> 6: the larger wins.
    plan = tick(policy, 2, 500, NOW, Memory())
    decision = plan.for_pool("web")
    assert decision.desired == 6
    assert "limited 20 -> 6 by rate limit (4 per 15s)" in decision.reasons
    # 10 s later, 6 running (2 -> 6 just happened): still 2 + 4 = 6 allowed this period.
    memory = plan.memory.with_scale("web", NOW, 2, 6, keep=3600)
    decision = tick(policy, 6, 500, NOW + 10, memory).for_pool("web")
    assert decision.desired == 6
    assert decision.reasons[1:3] == (
        "capped 60 -> 30 by max",
        "limited 30 -> 6 by rate limit (100% per 15s)",
    )
    # 15 s after the event the period is over: from 6, 100 % -> 12.
    decision = tick(policy, 6, 500, NOW + 15, memory).for_pool("web")
    assert decision.desired == 12


def test_target_total_type() -> None:
    """A pool-total target (a queue) recommends ceil(total / target)."""
    policy = make_policy(target("queue", 100, type_="total", aggregate="sum"), max=20)
    decision = run(policy, 2, {"queue": steady(730, 0)}).for_pool("web")
    assert decision.desired == 6  # 730 / 200 = 3.65 -> ceil(7.3) = 8, limited to 2 + 4 = 6
    assert "limited 8 -> 6 by rate limit (4 per 15s)" in decision.reasons


def test_target_warming_instances_count_zero_on_scale_out() -> None:
    """Warming instances do not count as capacity, and count as 0 % when ready ones want more."""
    instances = (*ready(2), Instance("3", started_at=NOW - 30), Instance("4", started_at=NOW - 30))
    # Ready ones at 100 (ratio 2); 2 warming as 0: 200 / 4 / 50 = 1.0 -> no change.
    samples = per_instance({"1": 100, "2": 100, "3": 5, "4": 5})
    decision = run(TARGET, samples={"tcpu": samples}, instances=instances).for_pool("web")
    assert (decision.current, decision.desired) == (4, 4)


def test_target_missing_instance_on_target_does_not_scale_in() -> None:
    """One instance exactly on target and three without samples is no reason to scale in."""
    # HPA: at a usage ratio of exactly 1.0 missing pods get no fallback value, so the ratio
    # stays 1.0 and the count stays. Aggregate "max" turns off the averaged anti-flap veto,
    # which would otherwise hide the problem.
    policy = make_policy(target("tcpu", 50, aggregate="max"), pool='scale_in_cooldown = "0s"')
    decision = run(policy, 4, {"tcpu": per_instance({"1": 50})}).for_pool("web")
    assert decision.desired == 4


# --------------------------------------------------------------------------- anti-flap


@pytest.mark.parametrize(
    ("current", "desired", "reason"),
    [
        # 2 -> 1 at 38: 38 * 2 / 1 = 76 > 70.
        pytest.param(
            2,
            2,
            "no change: 2 -> 1 would put cpu at 76.0, above 90% of its scale-out line 70",
            id="veto",
        ),
        # 3 -> 2 at 38: 38 * 3 / 2 = 57 <= 0.9 * 70 = 63.
        pytest.param(3, 2, "scale in 3 -> 2", id="allowed"),
    ],
)
def test_anti_flap_threshold(current: int, desired: int, reason: str) -> None:
    """A scale-in that would push an averaged metric over its scale-out line is refused."""
    policy = make_policy(threshold(out="above = 70", inn="below = 40"))
    decision = run(policy, current, {"cpu": steady(38, 0)}).for_pool("web")
    assert decision.desired == desired
    assert reason in decision.reasons


def test_anti_flap_target_vetoes_a_larger_threshold_scale_in() -> None:
    """A target rule refuses a scale-in (asked by another rule) that would overshoot its target."""
    # tcpu 35/50 = 0.7 -> 3 of 4; queue < 5 asks 4 -> 2; at 2, tcpu would be 35 * 4 / 2 = 70 > 55.
    policy = make_policy(
        target("tcpu", 50) + threshold("queue", None, "below = 5, step = 2", aggregate="sum"),
        pool='scale_in_cooldown = "0s"',
    )
    samples = {"tcpu": per_instance(dict.fromkeys("1234", 35.0)), "queue": steady(0, 0)}
    decision = run(policy, 4, samples).for_pool("web")
    assert decision.desired == 4
    assert "no change: 4 -> 2 would put tcpu at 70.0, over its target 50 (+0.1)" in decision.reasons


# --------------------------------------------------------------------------- actions

ACTIONS = make_policy(
    threshold()
    + action("redis", 90, "critical")
    + action("pg", 80, "high", for_="10m", extra='cooldown = "10m"\n')
)


def test_action_fires_with_priority() -> None:
    """An action rule whose condition holds yields an action decision with its priority."""
    plan = run(ACTIONS, 3, {"cpu": steady(50, 0), "redis": steady(95, 0), "pg": steady(85, 600)})
    actions = [d for d in plan.decisions if d.kind == "action"]
    assert [(d.rule, d.priority) for d in actions] == [
        ("redis", Priority.CRITICAL),
        ("pg", Priority.HIGH),
    ]
    assert actions[0].reasons == ("redis 95.0 > 90: notify redis is high",)
    assert actions[1].reasons == ("pg 85.0 > 80 for 10m: notify pg is high",)
    assert actions[0].action is not None
    assert actions[0].action.type == "notify"


def test_action_not_sustained_does_not_fire() -> None:
    """An action with a window does not fire before its condition held for all of it."""
    plan = run(ACTIONS, 3, {"cpu": steady(50, 0), "pg": steady(85, 540)})
    assert [d for d in plan.decisions if d.kind == "action"] == []
    status = {s.rule: s for s in plan.rules}
    assert (status["pg"].vote, status["pg"].held) == ("none", 540.0)
    assert status["redis"].vote == "missing"


@pytest.mark.parametrize(
    ("rule", "fired_ago", "fires", "reason"),
    [
        pytest.param(
            "redis", 60, False, "redis 95.0 > 90: fired 1m ago, cooldown 1h", id="default-1h"
        ),
        pytest.param(
            "redis", 3599, False, "redis 95.0 > 90: fired 59m59s ago, cooldown 1h", id="1h-edge"
        ),
        pytest.param("redis", 3600, True, "redis 95.0 > 90: notify redis is high", id="1h-over"),
        pytest.param(
            "pg", 300, False, "pg 85.0 > 80 for 10m: fired 5m ago, cooldown 10m", id="own-10m"
        ),
        pytest.param("pg", 600, True, "pg 85.0 > 80 for 10m: notify pg is high", id="own-10m-over"),
    ],
)
def test_action_cooldown(rule: str, fired_ago: float, fires: bool, reason: str) -> None:
    """After firing, an action is quiet for its cooldown (default controller.action_cooldown)."""
    memory = Memory().with_action(rule, NOW - fired_ago)
    samples = {"cpu": steady(50, 0), "redis": steady(95, 0), "pg": steady(85, 600)}
    plan = run(ACTIONS, 3, samples, memory=memory)
    fired = [d.rule for d in plan.decisions if d.kind == "action"]
    assert (rule in fired) is fires
    status = next(s for s in plan.rules if s.rule == rule)
    assert status.reason == reason
    assert status.vote == ("fires" if fires else "cooldown")


def test_action_with_source_error_does_not_fire() -> None:
    """An action whose source failed reports missing data and does not fire."""
    plan = run(ACTIONS, 3, {"cpu": steady(50, 0), "redis": steady(95, 0)}, errors={"redis": "down"})
    assert [d for d in plan.decisions if d.kind == "action"] == []
    status = next(s for s in plan.rules if s.rule == "redis")
    assert (status.vote, status.reason) == ("missing", "redis: no data (source error: down)")


# --------------------------------------------------------------------------- reasons


def default_observation(kind: str, now: float) -> Observation:
    """An observation for the default policy: empty, every source failing, or under load."""
    default = load_default()
    instances = {name: ready(3) for name in default.pools}
    if kind == "empty":
        return Observation(dict.fromkeys(default.pools, ()))
    if kind == "errors":
        return Observation(instances, errors={r.name: "refused" for r in default.rules})
    samples = {r.name: steady(95, 1800, now=now) for r in default.rules}
    return Observation(instances, samples)


@pytest.mark.parametrize("kind", ["empty", "errors", "load"])
@pytest.mark.parametrize(
    "now", [pytest.param(NOW, id="tuesday"), pytest.param(utc(2026, 11, 28, 15, 0), id="saturday")]
)
def test_every_decision_has_reasons(kind: str, now: float) -> None:
    """Every decision of the default policy carries non-empty reasons stating its outcome."""
    plan = Decider(load_default()).decide(default_observation(kind, now), now)
    assert {d.pool for d in plan.decisions if d.kind == "scale"} == {
        "django",
        "celery",
        "celery-trading",
    }
    for decision in plan.decisions:
        assert decision.reasons
        assert all(isinstance(r, str) and r.strip() for r in decision.reasons)
        if decision.kind == "scale":
            last = decision.reasons[-1]
            assert last.startswith("scale ") or any(
                r.startswith("no change") for r in decision.reasons
            )
    fired = {d.rule for d in plan.decisions if d.kind == "action"}
    assert fired == ({"postgres-cpu", "redis-memory", "disk-usage"} if kind == "load" else set())


# --------------------------------------------------------------------------- ordering


def test_decisions_ordered_by_priority() -> None:
    """Decisions come out critical > high > medium > low, pools before actions, then by name."""
    text = (
        SOURCE
        + '[pools.web]\nmin = 1\nmax = 9\npriority = "high"\n'
        + '[pools.worker]\nmin = 1\nmax = 9\npriority = "low"\n'
        + '[pools.api]\nmin = 1\nmax = 9\npriority = "low"\n'
        + threshold("cpu", OUT, IN, priority="medium")
        + action("zz-low", 10, "low")
        + action("medium-act", 10, "medium")
        + action("crit", 10, "critical")
        + action("high-act", 10, "high")
    )
    policy = parse_policy(text)
    obs = Observation(
        instances={"web": ready(2), "worker": ready(1), "api": ready(1)},
        samples={
            name: steady(50, 0) for name in ("cpu", "zz-low", "medium-act", "crit", "high-act")
        },
    )
    plan = Decider(policy).decide(obs, NOW)
    assert [(d.priority.value, d.kind, d.pool or d.rule) for d in plan.decisions] == [
        ("critical", "action", "crit"),
        ("high", "scale", "web"),  # the pool's own priority: no rule moved it
        ("high", "action", "high-act"),
        ("medium", "action", "medium-act"),
        ("low", "scale", "api"),
        ("low", "scale", "worker"),
        ("low", "action", "zz-low"),
    ]
    assert all(d.reasons for d in plan.decisions)


# --------------------------------------------------------------------------- fallback

FALLBACK = make_policy(threshold(), pool='fallback = { count = 4, after = "5m" }')


@pytest.mark.parametrize(
    ("current", "samples", "errors", "desired"),
    [
        # Newest sample 6 min old: missing for more than 5 min -> at least 4.
        pytest.param(2, steady(50, 300, ago=360), {}, 4, id="stale-6m"),
        pytest.param(2, steady(50, 300, ago=300), {}, 4, id="stale-exactly-5m"),
        # Missing (stale after 45 s) but only for 2 min: not yet.
        pytest.param(2, steady(50, 300, ago=120), {}, 2, id="stale-2m"),
        # A source error with a sample 15 s old: missing now, but not for 5 min.
        pytest.param(2, steady(50, 300, ago=15), {"cpu": "timeout"}, 2, id="error-just-now"),
        pytest.param(2, steady(50, 300, ago=400), {"cpu": "timeout"}, 4, id="error-long"),
        # Never scales in: 6 stay 6.
        pytest.param(6, steady(50, 300, ago=360), {}, 6, id="above-fallback"),
    ],
)
def test_fallback(
    current: int, samples: tuple[Sample, ...], errors: dict[str, str], desired: int
) -> None:
    """When every metric of a pool is missing long enough, the count goes to the fallback."""
    decision = run(FALLBACK, current, {"cpu": samples}, errors=errors).for_pool("web")
    assert decision.desired == desired
    fell_back = any(r.startswith("every metric missing for 5m or more") for r in decision.reasons)
    assert fell_back is (desired != current)


def test_fallback_reason_text() -> None:
    """The fallback reason says how long and from what to what."""
    decision = run(FALLBACK, 2, {"cpu": steady(50, 300, ago=360)}).for_pool("web")
    assert decision.reasons == (
        "cpu: no data (newest sample is 360s old (stale after 45s))",
        "every metric missing for 5m or more: fallback 2 -> 4",
        "scale out 2 -> 4",
    )


def test_no_fallback_while_one_metric_has_data() -> None:
    """The fallback needs every metric missing: one live rule keeps it off."""
    policy = make_policy(
        threshold() + threshold("conn", "above = 1500", None),
        pool='fallback = { count = 4, after = "5m" }',
    )
    samples = {"cpu": steady(50, 300, ago=900), "conn": steady(10, 0)}
    assert run(policy, 2, samples).for_pool("web").desired == 2


# --------------------------------------------------------------------------- oscillation


def simulate(policy: Policy, demand: float, seed: int, hours: float = 2.0) -> tuple[list[str], int]:
    """Ticks every 15 s: per-instance cpu = demand / n, slow +-3 swing, +-3 noise.

    Scale decisions are carried out at once (new instances start warming), and completed
    changes are fed back into the memory, as the controller does. Returns the directions of
    the changes made and the final count.
    """
    rng = random.Random(seed)
    rule_names = [r.name for r in policy.rules]
    instances = [Instance(str(i + 1)) for i in range(3)]
    next_id = 4
    samples: list[Sample] = []
    memory = Memory()
    decider = Decider(policy)
    directions: list[str] = []
    for k in range(int(hours * 3600 / 15)):
        now = NOW + 15 * k
        swing = 3.0 * ((k % 160) / 40.0 - 1.0 if (k % 160) < 80 else 3.0 - (k % 160) / 40.0)
        per = demand / len(instances)
        for inst in instances:
            samples.append(Sample(now, per + swing + rng.uniform(-3.0, 3.0), inst.id))
        samples = [s for s in samples if now - s.at <= 1200]
        obs = Observation(
            instances={"web": tuple(instances)},
            samples=dict.fromkeys(rule_names, tuple(samples)),
            memory=memory,
        )
        plan = decider.decide(obs, now)
        memory = plan.memory
        decision = plan.for_pool("web")
        assert decision.reasons
        if decision.desired != decision.current:
            directions.append(decision.direction)
            memory = memory.with_scale("web", now, decision.current, decision.desired, keep=3600)
            while len(instances) < decision.desired:
                instances.append(Instance(str(next_id), started_at=now))
                next_id += 1
            del instances[decision.desired :]
    return directions, len(instances)


def changes(directions: list[str]) -> int:
    """How often consecutive scale changes switch direction."""
    return sum(1 for a, b in pairwise(directions) if a != b)


DJANGO = threshold("cpu", 'above = 70, for = "5m"', 'below = 30, for = "10m"')
POOL = 'warmup = "60s"\nscale_out_cooldown = "2m"\nscale_in_cooldown = "5m"'


@pytest.mark.parametrize(
    ("rules", "demand", "final"),
    [
        # 70 +- 6 per instance on 3: 5 min above 70 at a swing's top; then 52.5 on 4 stays.
        pytest.param(DJANGO, 210.0, 4, id="threshold-at-70"),
        # Target 70: ratio 0.91..1.09 on 3 stays within the tolerance: never moves.
        pytest.param(target("tcpu", 70), 210.0, 3, id="target-at-70"),
        # 77 +- 6 on 3 (ratio 1.01..1.19): out to 4 (57.75, raw 4) and stays there.
        pytest.param(target("tcpu", 70), 231.0, 4, id="target-at-tolerance-edge"),
        # 81.7 on 3: both rules want 4; on 4 (61) neither wants 3.
        pytest.param(DJANGO + target("tcpu", 70), 245.0, 4, id="both-rules"),
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_oscillation_around_a_threshold(
    rules: str, demand: float, final: int, seed: int
) -> None:
    """Input hovering around a threshold for 2 hours does not make the pool flap."""
    policy = make_policy(rules, min=2, max=6, pool=POOL)
    directions, count = simulate(policy, demand, seed)
    assert changes(directions) <= 2, directions
    assert len(directions) <= 3, directions
    assert count == final, directions


def test_constant_70_with_noise_does_not_flap() -> None:
    """CPU = 70 +- 3 on every instance whatever the count (the load does not follow) stays put."""
    policy = make_policy(DJANGO + target("tcpu", 70), min=2, max=6, pool=POOL)
    rng = random.Random(7)
    memory = Memory()
    decider = Decider(policy)
    instances = ready(3)
    counts = []
    for k in range(480):
        now = NOW + 15 * k
        samples = tuple(
            Sample(now - 15 * j, 70 + rng.uniform(-3, 3), i.id)
            for j in range(40, -1, -1)
            for i in instances
        )
        obs = Observation({"web": instances}, {"cpu": samples, "tcpu": samples}, memory=memory)
        plan = decider.decide(obs, now)
        memory = plan.memory
        counts.append(plan.for_pool("web").desired)
    assert set(counts) == {3}


# --------------------------------------------------------------------------- band and target


@pytest.mark.parametrize(
    ("cpu", "desired"),
    [
        # target 50, 5 instances at 40 %: HPA wants ceil(5 * 40 / 50) = 4; the threshold rule is
        # in its band (30..70) but 40 * 5 / 4 = 50 <= 0.9 * 70 = 63: no objection.
        pytest.param(40.0, 4, id="band-allows"),
        # 45 %: ratio 45 / 50 = 0.9 and |1 - 0.9| <= tolerance 0.1: HPA keeps 5.
        pytest.param(45.0, 5, id="tolerance-holds"),
    ],
)
def test_in_band_threshold_lets_target_scale_in(cpu: float, desired: int) -> None:
    """An averaged threshold rule in its band does not hold a target rule's safe scale-in."""
    rules = threshold("cpu") + target("tcpu", 50)
    policy = make_policy(rules, pool='scale_in_cooldown = "0s"\nscale_in_stabilization = "0s"')
    samples = {"cpu": steady(cpu, 900), "tcpu": per_instance({str(i): cpu for i in range(1, 6)})}
    assert run(policy, 5, samples).for_pool("web").desired == desired


def test_in_band_threshold_holds_when_scale_in_would_near_its_line() -> None:
    """The band rule objects when the projected average would pass 90 % of its out line."""
    # target 80 at 60 %: HPA wants ceil(5 * 60 / 80) = 4; 60 * 5 / 4 = 75 > 0.9 * 70 = 63.
    rules = threshold("cpu") + target("tcpu", 80)
    policy = make_policy(rules, pool='scale_in_cooldown = "0s"\nscale_in_stabilization = "0s"')
    samples = {"cpu": steady(60.0, 900), "tcpu": per_instance({str(i): 60.0 for i in range(1, 6)})}
    decision = run(policy, 5, samples).for_pool("web")
    assert decision.desired == 5
    assert "no change: cpu does not agree to scale in" in decision.reasons


def test_in_band_sum_rule_always_holds() -> None:
    """A summed metric cannot be projected: an in-band queue rule holds the scale-in."""
    rules = threshold("queue", aggregate="sum") + target("tcpu", 50)
    policy = make_policy(rules, pool='scale_in_cooldown = "0s"\nscale_in_stabilization = "0s"')
    samples = {
        "queue": steady(50.0, 900),
        "tcpu": per_instance({str(i): 10.0 for i in range(1, 6)}),
    }
    assert run(policy, 5, samples).for_pool("web").desired == 5


# --------------------------------------------------------------------------- window restart


@pytest.mark.parametrize(
    ("ago", "desired"),
    [
        # out > 70 for 5m; the pool grew 2 -> 3 four minutes ago: only 4m of evidence since.
        pytest.param(240, 3, id="too-recent"),
        # five minutes ago: the window is whole again.
        pytest.param(300, 4, id="window-whole"),
        # no change at all in memory: the 10 minutes of samples count.
        pytest.param(None, 4, id="no-change"),
    ],
)
def test_threshold_window_restarts_at_scale_change(ago: float | None, desired: int) -> None:
    """Samples from before the pool last changed size do not count toward a window."""
    memory = Memory()
    if ago is not None:
        memory = memory.with_scale("web", NOW - ago, 2, 3, keep=3600)
    decision = run(THRESHOLD, 3, {"cpu": steady(85, 600)}, memory=memory).for_pool("web")
    assert decision.desired == desired


def test_zero_window_needs_a_sample_after_the_change() -> None:
    """A 0s window does not fire again on the tick of the change itself."""
    policy = make_policy(threshold(out="above = 70", inn=None))
    memory = Memory().with_scale("web", NOW, 2, 3, keep=3600)
    assert run(policy, 3, {"cpu": steady(85, 60)}, memory=memory).for_pool("web").desired == 3
