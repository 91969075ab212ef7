"""``type = "predictive"`` rules through ``Decider.decide``: a floor ahead, never a scale-in."""

from __future__ import annotations

from datetime import UTC, datetime

from senex_scale.core import Decider, Instance, Observation, Plan, Sample
from senex_scale.policy import Policy, parse_policy

# Tuesday 2026-11-24: XNYS opens 14:30 UTC. The sessions before it: 17, 18, 19, 20, 23 Nov.
OPEN = datetime(2026, 11, 24, 14, 30, tzinfo=UTC).timestamp()


def policy(rule: str = "", *, mode: str = "on", rules: str = "") -> Policy:
    """Pool ``web`` (warmup 60s) with a predictive rule ``web-ahead`` (requests / 50)."""
    return parse_policy(
        '[sources.s]\ntype = "prometheus"\n'
        '[pools.web]\nmin = 1\nmax = 10\nwarmup = "60s"\nscale_in_cooldown = "0s"\n'
        '[[rules]]\nname = "web-ahead"\ntype = "predictive"\npool = "web"\n'
        'metric = { source = "s", aggregate = "sum", signal = "requests" }\n'
        f'target = 50.0\nmode = "{mode}"\n{rule}\n{rules}'
    )


def learn(decider: Decider, sessions: int, spike: float = 300.0, base: float = 90.0) -> None:
    """``sessions`` past XNYS sessions: requests ``base``, ``spike`` in the open's 5 minutes."""
    forecaster = decider.forecasters["web-ahead"]
    clock = forecaster.clock
    today = clock.around(OPEN)
    assert today is not None
    for number in range(today.number - sessions, today.number):
        s = clock.session(number)
        t = s.open - 90 * 60
        while t < s.close + 3600:
            minute = (t - s.open) / 60
            forecaster.observe(t, (spike if 0 <= minute < 5 else base) / 50.0)
            t += 15.0


def tick(
    decider: Decider, now: float, count: int, requests: float = 100.0, **samples: list[Sample]
) -> Plan:
    """One decision with ``count`` ready instances and the request rate now."""
    instances = {"web": [Instance(str(i + 1)) for i in range(count)]}
    data = {"web-ahead": [Sample(now, requests)], **samples}
    return decider.decide(Observation(instances, data), now)


def test_too_short_history_is_reactive_only() -> None:
    """With 2 of 3 sessions learned the rule holds nothing and says why."""
    decider = Decider(policy())
    learn(decider, 2)
    decision = tick(decider, OPEN - 60, 2).for_pool("web")
    assert decision.desired == 2
    assert any("2 of 3 sessions learned" in r and "reactive only" in r for r in decision.reasons)


def test_scales_out_ahead_of_the_open() -> None:
    """Two minutes before the open (lead: 60s start-up + 60s warm-up) the pool meets the spike."""
    decider = Decider(policy())
    learn(decider, 5)
    early = tick(decider, OPEN - 300, 3).for_pool("web")
    assert early.desired == 3  # the spike is more than the lead away (90/50 x 1.1 -> 2)
    decision = tick(decider, OPEN - 120, 3).for_pool("web")
    # 300 requests/s / 50 = 6 instances, + 10 % margin = 6.6 -> 7
    assert decision.desired == 7
    assert any("web-ahead: at least 7: 3 -> 7" in r for r in decision.reasons)


def test_never_scales_in_on_a_forecast() -> None:
    """A low forecast with many instances running: the rule alone changes nothing."""
    decider = Decider(policy())
    learn(decider, 5)
    decision = tick(decider, OPEN + 3600, 8).for_pool("web")
    assert decision.desired == 8


def test_holds_a_reactive_scale_in_at_its_floor() -> None:
    """A target rule wants 1; the forecast (spike ahead) holds the pool at 7."""
    target = (
        '[[rules]]\nname = "cpu"\ntype = "target"\npool = "web"\n'
        'metric = { source = "s" }\ntarget = 50.0\n'
    )
    decider = Decider(policy(rules=target))
    learn(decider, 5)
    now = OPEN - 60
    cpu = [Sample(now, 5.0, str(i + 1)) for i in range(8)]
    decision = tick(decider, now, 8, cpu=cpu).for_pool("web")
    assert decision.desired == 7


def test_forecast_only_records_without_acting() -> None:
    """forecast-only: the plan carries the forecast and the floor; the count does not move."""
    decider = Decider(policy(mode="forecast-only"))
    learn(decider, 5)
    plan = tick(decider, OPEN - 120, 2, requests=90.0)
    assert plan.for_pool("web").desired == 2
    (forecast,) = plan.forecasts
    assert forecast.mode == "forecast-only"
    assert forecast.floor == 7
    assert not forecast.acting
    assert forecast.demand == 1.8
    assert "not acting" in forecast.reason


def test_high_recent_error_falls_back() -> None:
    """Sessions that alternate 1x / 3x: error above max_error, reactive only, reason given."""
    decider = Decider(policy("max_error = 0.2"))
    forecaster = decider.forecasters["web-ahead"]
    today = forecaster.clock.around(OPEN)
    assert today is not None
    for k, number in enumerate(range(today.number - 6, today.number)):
        s = forecaster.clock.session(number)
        t = s.open - 90 * 60
        while t < s.close + 3600:
            forecaster.observe(t, 2.0 if k % 2 else 6.0)
            t += 15.0
    decision = tick(decider, OPEN - 120, 2).for_pool("web")
    assert decision.desired == 2
    assert any("above max_error 20%" in r for r in decision.reasons)


def test_missing_metric_still_forecasts() -> None:
    """No sample this tick: nothing learned now, but the forecast from history still holds."""
    decider = Decider(policy())
    learn(decider, 5)
    instances = {"web": [Instance("1"), Instance("2"), Instance("3")]}
    plan = decider.decide(Observation(instances, {}), OPEN - 120)
    assert plan.for_pool("web").desired == 7
    status = next(s for s in plan.rules if s.rule == "web-ahead")
    assert status.vote == "missing"


def test_floor_on_an_hpa_pool() -> None:
    """Beside a mode = "hpa" rule the floor raises the HPA's count (within max)."""
    hpa = (
        '[[rules]]\nname = "hpa"\ntype = "target"\nmode = "hpa"\npool = "web"\n'
        'metric = { source = "s", signal = "cpu" }\ntarget = 70.0\n'
        'target_type = "utilization"\n'
    )
    decider = Decider(policy(rules=hpa))
    learn(decider, 5)
    now = OPEN - 120
    cpu = [Sample(now, 50.0, str(i + 1)) for i in range(3)]
    decision = tick(decider, now, 3, hpa=cpu).for_pool("web")
    assert decision.desired == 7
    assert any("web-ahead: at least 7: 3 -> 7" in r for r in decision.reasons)
