"""``type = "predictive"`` rules in the policy file: defaults, and every problem by its field."""

from __future__ import annotations

import pytest

from senex_scale.errors import PolicyError
from senex_scale.policy import PredictiveRule, parse_policy

BASE = """
[sources.s]
type = "prometheus"

[pools.web]
min = 1
max = 5
warmup = "45s"

[[rules]]
name = "ahead"
type = "predictive"
pool = "web"
metric = { source = "s", query = "sum(rate(http_requests_total[1m]))", signal = "requests" }
target = 50.0
"""


def problems(extra: str, base: str = BASE) -> list[str]:
    """The problems reported for the base policy plus ``extra`` lines in its rule."""
    with pytest.raises(PolicyError) as info:
        parse_policy(base + extra)
    return info.value.problems


def test_defaults() -> None:
    """forecast-only, lead = 60s start-up + the pool's warm-up, margin 10 %, 3 sessions, 30 %."""
    policy = parse_policy(BASE)
    (rule,) = policy.rules
    assert isinstance(rule, PredictiveRule)
    assert rule.mode == "forecast-only"
    assert rule.lead_for(policy.pools["web"]) == 105.0
    assert (rule.margin, rule.min_sessions, rule.max_error) == (0.1, 3, 0.3)
    assert policy.exchange(rule) == "XNYS"


def test_calendar_from_the_schedules() -> None:
    """Without its own calendar a rule takes the first schedule's."""
    schedule = (
        '\n[[schedules]]\nname = "s"\npools = ["web"]\nstart = "open-5m"\nend = "open+5m"\n'
        'calendar = "XLON"\nmin = 2\n'
    )
    policy = parse_policy(BASE + schedule)
    rule = policy.rules[0]
    assert isinstance(rule, PredictiveRule)
    assert policy.exchange(rule) == "XLON"


def test_not_a_reactive_count_rule() -> None:
    """Predictive rules are not among a pool's threshold/target rules."""
    policy = parse_policy(BASE)
    assert policy.rules_for("web") == ()
    assert [r.name for r in policy.predictive_rules("web")] == ["ahead"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('mode = "auto"', 'rules[0].mode: "auto": expected one of "on", "forecast-only"'),
        ('lead = "soon"', 'rules[0].lead: "soon" is not a duration'),
        ('lead = "2h"', "rules[0].lead:"),
        ("margin = -0.5", "rules[0].margin:"),
        ('margin = "10%"', 'rules[0].margin: must be a number, not the string "10%"'),
        ("min_sessions = 0", "rules[0].min_sessions:"),
        ("min_sessions = 2.0", "rules[0].min_sessions: must be an integer"),
        ("max_error = 0", "rules[0].max_error:"),
        ('calendar = "nyse"', 'rules[0].calendar: unknown exchange calendar "nyse"'),
        ('target_type = "utilization"', "rules[0].target_type:"),
        ("half_life = 0", "rules[0].half_life:"),
        ("scale_out = { above = 1 }", 'rules[0]: unknown key "scale_out"'),
    ],
)
def test_problems_name_the_field(extra: str, expected: str) -> None:
    """Each wrong value is reported at its dotted path."""
    found = problems(extra)
    assert any(expected in p for p in found), found


def test_target_is_required_and_strict() -> None:
    """target must be given, as a number."""
    assert any(
        "rules[0].target: required" in p for p in problems("", BASE.replace("target = 50.0", ""))
    )
    found = problems("", BASE.replace("target = 50.0", 'target = "50"'))
    assert any('rules[0].target: must be a number, not the string "50"' in p for p in found)


def test_unknown_pool_is_named() -> None:
    """The rule's pool must exist."""
    found = problems("", BASE.replace('pool = "web"', 'pool = "wbe"'))
    assert any('rules[0].pool: unknown pool "wbe"' in p for p in found), found


def test_unknown_type_lists_predictive() -> None:
    """A misspelt type suggests predictive."""
    found = problems("", BASE.replace('type = "predictive"', 'type = "predictve"'))
    assert any('did you mean "predictive"' in p for p in found), found
