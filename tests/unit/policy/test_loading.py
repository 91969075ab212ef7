"""Policy loading: the default policy validates and expresses the seed; every problem is reported
with its dotted path."""

from __future__ import annotations

from pathlib import Path

import pytest

from senex_scale.errors import PolicyError
from senex_scale.policy import (
    ActionRule,
    Policy,
    Priority,
    ThresholdRule,
    default_policy_text,
    load_default,
    load_policy,
    parse_policy,
)
from senex_scale.policy.models import Notify

DEFAULT = default_policy_text()


def problems_of(text: str) -> list[str]:
    """The problems ``parse_policy`` reports for ``text`` (fails if it validates)."""
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return info.value.problems


def mutate(*changes: tuple[str, str]) -> str:
    """The default policy text with each (old, new) applied once; ``old`` must be present."""
    text = DEFAULT
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


# --------------------------------------------------------------------------- the default


def test_default_policy_validates() -> None:
    """The built-in default policy text is a valid policy."""
    policy = parse_policy(DEFAULT)
    assert isinstance(policy, Policy)
    assert sorted(policy.pools) == ["celery", "celery-trading", "django"]
    assert load_default() == policy


def rule(policy: Policy, name: str) -> ThresholdRule | ActionRule:
    """The threshold or action rule called ``name``."""
    found = [r for r in policy.rules if r.name == name]
    assert len(found) == 1, name
    assert isinstance(found[0], ThresholdRule | ActionRule)
    return found[0]


# (rule, pool, signal, above, for (s), priority, action type): the seed's decision matrix.
MATRIX = [
    pytest.param("django-cpu", "django", "cpu", 70, 300, "high", None, id="django-cpu"),
    pytest.param("postgres-cpu", None, "db_cpu", 80, 600, "high", "notify", id="postgres-cpu"),
    pytest.param("redis-memory", None, "memory", 90, 0, "critical", "notify", id="redis-memory"),
    pytest.param("celery-queue", "celery", "queue", 100, 300, "medium", None, id="celery-queue"),
    pytest.param(
        "websocket-connections", "django", "connections", 1500, 60, "medium", None, id="websockets"
    ),
    pytest.param("disk-usage", None, "disk", 80, 0, "high", "notify", id="disk"),
    pytest.param("celery-backlog", "celery", "queue", 50, 1800, "low", None, id="backlog"),
]


@pytest.mark.parametrize(("name", "pool", "signal", "above", "for_", "priority", "action"), MATRIX)
def test_default_policy_expresses_the_decision_matrix(
    name: str,
    pool: str | None,
    signal: str,
    above: float,
    for_: float,
    priority: str,
    action: str | None,
) -> None:
    """Each row of the seed's decision matrix is a rule with the seed's threshold and priority."""
    found = rule(load_default(), name)
    assert found.pool == pool
    assert found.metric.signal == signal
    assert found.priority is Priority(priority)
    assert found.enabled
    if action is None:
        assert isinstance(found, ThresholdRule)
        assert found.scale_out is not None
        condition = found.scale_out
    else:
        assert isinstance(found, ActionRule)
        assert found.action.type == action
        condition = found.when
    assert (condition.above, condition.below, condition.for_) == (above, None, for_)


def test_default_postgres_rule_names_the_replica_command() -> None:
    """PostgreSQL CPU notifies a person with the command that adds a read replica (nothing
    the default cannot ship, such as a playbook, is run)."""
    found = rule(load_default(), "postgres-cpu")
    assert isinstance(found, ActionRule)
    assert isinstance(found.action, Notify)
    assert "senex-scale replica add" in found.action.message


def test_default_redis_and_disk_rules_notify() -> None:
    """Redis memory and disk usage notify a person with a message saying what to do."""
    policy = load_default()
    for name, words in (("redis-memory", "Redis"), ("disk-usage", "Disk")):
        found = rule(policy, name)
        assert isinstance(found, ActionRule)
        assert isinstance(found.action, Notify)
        assert words in found.action.message


def test_default_django_pool_and_scale_in() -> None:
    """Django: min 2, max 5 (the autoscale script), scale in below 30 % CPU."""
    policy = load_default()
    django = policy.pools["django"]
    assert (django.min, django.max) == (2, 5)
    cpu = rule(policy, "django-cpu")
    assert isinstance(cpu, ThresholdRule)
    assert cpu.scale_in is not None
    assert (cpu.scale_in.below, cpu.scale_in.above) == (30, None)


def test_default_caps_no_night() -> None:
    """No schedule lowers a pool's max: the seed scales down at night (its script still adds
    instances above 70 %), so the rules scale in, and out for night load (issue 16)."""
    assert all(s.max is None for s in load_default().schedules)


def test_default_prescales_before_the_open_on_exchange_sessions() -> None:
    """Scale-up before the market opens follows XNYS sessions (holidays, half days)."""
    schedules = {s.name: s for s in load_default().schedules}
    spike = schedules["open-spike"]
    assert (spike.start, spike.end, spike.calendar, spike.min) == ("open-2m", "open+10m", "XNYS", 5)
    assert spike.pools == ("django",)


# --------------------------------------------------------------------------- problems

CPU_OUT = 'scale_out = { above = 70, for = "5m", step = 1 }'

# (old, new, exact problem)
MUTATIONS = [
    pytest.param(
        CPU_OUT,
        CPU_OUT.replace('"5m"', '"5x"'),
        'rules[0].scale_out.for: "5x" is not a duration (e.g. "5m")',
        id="bad-duration",
    ),
    pytest.param(
        CPU_OUT,
        CPU_OUT.replace('"5m"', "-5"),
        'rules[0].scale_out.for: -5 is negative; a duration is at least "0s"',
        id="negative-duration",
    ),
    pytest.param(
        "min = 2                       # MIN_DJANGO_INSTANCES",
        "min = 7",
        "pools.django: min (7) is greater than max (5)",
        id="min-above-max",
    ),
    pytest.param(
        'health = "/health/"',
        'helth = "/health/"',
        'pools.django: unknown key "helth" (did you mean "health"?)',
        id="unknown-pool-key",
    ),
    pytest.param(
        'interval = "15s"',
        'intervall = "15s"',
        'controller: unknown key "intervall" (did you mean "interval"?)',
        id="unknown-controller-key",
    ),
    pytest.param(
        CPU_OUT,
        CPU_OUT.replace("step = 1", "step = 1, fr = 3"),
        'rules[0].scale_out: unknown key "fr" (did you mean "for"?)',
        id="unknown-condition-key",
    ),
    pytest.param(
        'name = "django-cpu"\npool = "django"',
        'name = "django-cpu"\npool = "djang"',
        'rules[0].pool: unknown pool "djang" (did you mean "django"?)',
        id="unknown-pool",
    ),
    pytest.param(
        'metric = { source = "prom", signal = "cpu"',
        'metric = { source = "promm", signal = "cpu"',
        'rules[0].metric.source: unknown source "promm" (did you mean "prom"?)',
        id="unknown-source",
    ),
    pytest.param(
        'pools = ["django"]',
        'pools = ["django", "celeri"]',
        'schedules[0].pools[1]: unknown pool "celeri" (did you mean "celery"?)',
        id="schedule-unknown-pool",
    ),
    pytest.param(
        'start = "open-2m"',
        'start = "0 25 * * *"',
        'schedules[0].start: "0 25 * * *" is neither a 5-field cron line (e.g. "0 8 * * MON-FRI") '
        'nor a market anchor (e.g. "open-90m", "close+15m")',
        id="impossible-cron",
    ),
    pytest.param(
        'end = "open+10m"',
        'end = "0 0 30 2 *"',
        'schedules[0].end: cron line "0 0 30 2 *" never fires',
        id="cron-never-fires",
    ),
    pytest.param(
        'timezone = "America/New_York"',
        'timezone = "America/Nowhere"',
        'schedules[0].timezone: "America/Nowhere" is not an IANA timezone '
        '(e.g. "America/New_York")',
        id="bad-timezone",
    ),
    pytest.param(
        'calendar = "XNYS"',
        'calendar = "XNYSS"',
        'schedules[0].calendar: unknown exchange calendar "XNYSS" (did you mean "XNYS"?)',
        id="unknown-calendar",
    ),
    pytest.param(
        'start = "open-2m"',
        'start = "open-2m"\nfoo = 1',
        'schedules[0]: unknown key "foo"',
        id="unknown-schedule-key-no-hint",
    ),
    pytest.param(
        'scale_in = { below = 30, for = "10m", step = 1 }',
        'scale_in = { below = 70, for = "10m", step = 1 }',
        "rules[0]: scale_in.below (70) must be lower than scale_out.above (70), "
        "or the pool would oscillate",
        id="hysteresis-equal",
    ),
    pytest.param(
        'scale_in = { below = 30, for = "10m", step = 1 }',
        'scale_in = { below = 85, for = "10m", step = 1 }',
        "rules[0]: scale_in.below (85) must be lower than scale_out.above (70), "
        "or the pool would oscillate",
        id="hysteresis-crossed",
    ),
    pytest.param(
        'name = "websocket-connections"',
        'name = "django-cpu"',
        'rules[1].name: "django-cpu" is already used by rules[0]',
        id="duplicate-rule-name",
    ),
    pytest.param(
        'type = "action"\nmetric = { source = "postgres"',
        'type = "acton"\nmetric = { source = "postgres"',
        'rules[6].type: unknown type "acton" (did you mean "action"?); '
        'known: "threshold", "target", "action", "predictive"',
        id="unknown-rule-type",
    ),
    pytest.param(
        'action = { type = "notify", message = "Redis',
        'action = { type = "notfy", message = "Redis',
        'rules[7].action.type: unknown type "notfy" (did you mean "notify"?); '
        'known: "notify", "runbook"',
        id="unknown-action-type",
    ),
    pytest.param(
        "step = 1 }\nscale_in = { below = 30",
        'step = "0%" }\nscale_in = { below = 30',
        'rules[0].scale_out.step: "0%" is not a step: use a count >= 1 or a percent like "50%"',
        id="bad-step",
    ),
]


@pytest.mark.parametrize(("old", "new", "problem"), MUTATIONS)
def test_mutation_reports_dotted_path(old: str, new: str, problem: str) -> None:
    """Each broken default policy reports exactly one problem, with its dotted path."""
    assert problems_of(mutate((old, new))) == [problem]


@pytest.mark.parametrize(
    ("old", "new", "prefix"),
    [
        pytest.param(
            'type = "prometheus"',
            'type = "prometheus2"',
            'sources.prom.type: unknown source type "prometheus2" (did you mean "prometheus"?); '
            "known: ",
            id="source",
        ),
        pytest.param(
            'runtime = { type = "systemd", unit = "django@',
            'runtime = { type = "sytemd", unit = "django@',
            'pools.django.runtime.type: unknown runtime type "sytemd" (did you mean "systemd"?); '
            "known: ",
            id="runtime",
        ),
        pytest.param(
            'balancer = { type = "haproxy"',
            'balancer = { type = "haproxyy"',
            'pools.django.balancer.type: unknown balancer type "haproxyy" (did you mean '
            '"haproxy"?); known: ',
            id="balancer",
        ),
    ],
)
def test_unknown_plugin_type(old: str, new: str, prefix: str) -> None:
    """An unknown driver name gets "did you mean" and the list of known names."""
    problems = problems_of(mutate((old, new)))
    assert len(problems) == 1
    assert problems[0].startswith(prefix), problems[0]
    known = problems[0].removeprefix(prefix).split(", ")
    assert known == sorted(known)
    assert new.split('"')[1] not in known


def test_non_number_threshold() -> None:
    """A threshold that is not a number names the path and the input."""
    problems = problems_of(mutate((CPU_OUT, CPU_OUT.replace("70", '"lots"'))))
    assert problems == ['rules[0].scale_out.above: must be a number, not the string "lots"']


def test_a_quoted_number_is_not_a_number() -> None:
    """``above = "70"`` is refused (not converted), and the message says how to write it."""
    problems = problems_of(mutate((CPU_OUT, CPU_OUT.replace("70", '"70"'))))
    assert problems == [
        'rules[0].scale_out.above: must be a number, not the string "70" (write 70 without quotes)'
    ]


def test_toml_syntax_error_reports_the_line() -> None:
    """A TOML syntax error is one problem naming the line of the broken table header."""
    lines = DEFAULT.splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.startswith("[pools.django]"))
    problems = problems_of(mutate(("[pools.django]", "[pools.django")))
    assert len(problems) == 1
    assert problems[0].startswith("not valid TOML: ")
    assert f"line {line}," in problems[0]


def test_several_model_errors_are_all_reported() -> None:
    """Problems in different parts of one file all come out in one run, in file order."""
    text = mutate(
        (CPU_OUT, CPU_OUT.replace('"5m"', '"5x"')),
        ("min = 2                       # MIN_DJANGO_INSTANCES", "min = 7"),
        ('calendar = "XNYS"', 'calendar = "XNYSS"'),
        ('interval = "15s"', 'intervall = "15s"'),
    )
    assert problems_of(text) == [
        'controller: unknown key "intervall" (did you mean "interval"?)',
        "pools.django: min (7) is greater than max (5)",
        'rules[0].scale_out.for: "5x" is not a duration (e.g. "5m")',
        'schedules[0].calendar: unknown exchange calendar "XNYSS" (did you mean "XNYS"?)',
    ]


def test_several_reference_errors_are_all_reported() -> None:
    """Cross-reference problems (pools, sources, duplicate names) are all listed together."""
    text = mutate(
        ('name = "django-cpu"\npool = "django"', 'name = "django-cpu"\npool = "djang"'),
        (
            'metric = { source = "prom", signal = "cpu"',
            'metric = { source = "promm", signal = "cpu"',
        ),
        ('name = "websocket-connections"', 'name = "django-cpu"'),
        ('pools = ["django"]', 'pools = ["django", "celeri"]'),
    )
    assert problems_of(text) == [
        'rules[0].pool: unknown pool "djang" (did you mean "django"?)',
        'rules[0].metric.source: unknown source "promm" (did you mean "prom"?)',
        'rules[1].name: "django-cpu" is already used by rules[0]',
        'schedules[0].pools[1]: unknown pool "celeri" (did you mean "celery"?)',
    ]


def test_model_and_reference_errors_are_reported_together() -> None:
    """A bad value and an unknown pool in the same file are both reported in one run."""
    # The loader promises "every problem in it at once": a user fixing the duration must not
    # discover the unknown pool only on the next run.
    text = mutate(
        (CPU_OUT, CPU_OUT.replace('"5m"', '"5x"')),
        (
            'name = "websocket-connections"\npool = "django"',
            'name = "websocket-connections"\npool = "djang"',
        ),
    )
    problems = problems_of(text)
    assert 'rules[0].scale_out.for: "5x" is not a duration (e.g. "5m")' in problems
    assert 'rules[1].pool: unknown pool "djang" (did you mean "django"?)' in problems


def test_policy_error_message_counts_problems() -> None:
    """The exception text names the source and the number of problems, one per line."""
    text = mutate(
        (CPU_OUT, CPU_OUT.replace('"5m"', '"5x"')),
        ('interval = "15s"', 'intervall = "15s"'),
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="mine.toml")
    assert str(info.value) == (
        "mine.toml: 2 problems\n"
        '  controller: unknown key "intervall" (did you mean "interval"?)\n'
        '  rules[0].scale_out.for: "5x" is not a duration (e.g. "5m")'
    )
    assert info.value.exit_code == 2


def test_load_policy_missing_file(tmp_path: Path) -> None:
    """A missing policy file is a PolicyError, not an OSError traceback."""
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (info.value.source, info.value.problems) == (str(path), ["file not found"])


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    """load_policy reads and validates a file; "default" means the built-in policy."""
    path = tmp_path / "p.toml"
    path.write_text(DEFAULT, encoding="utf-8")
    assert load_policy(path) == load_default()
    assert load_policy("default") == load_default()
