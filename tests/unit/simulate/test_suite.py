"""The trace suite: seeded families, misbehaving metrics, distributions and worst traces."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from senex_scale.errors import InputError
from senex_scale.policy import load_default
from senex_scale.simulate.generate import FAMILIES, family_trace
from senex_scale.simulate.model import MetricFaults, SimModel, faulty
from senex_scale.simulate.suite import (
    ALL,
    METRICS,
    SuiteResult,
    cases,
    parse_case,
    render_html,
    run_suite,
)


def test_cases_cycle_through_the_families_with_consecutive_seeds() -> None:
    """Case i is family i mod 13 with seed first + i; its name replays it."""
    chosen = cases(15, first_seed=100)
    assert [c.family for c in chosen[:13]] == list(FAMILIES)
    assert chosen[13].family == FAMILIES[0]
    assert [c.seed for c in chosen] == list(range(100, 115))
    assert parse_case(chosen[3].name) == chosen[3]


def test_unknown_case_is_an_input_error() -> None:
    """A name that is not FAMILY-SEED says which families exist."""
    with pytest.raises(InputError, match="flash-crash"):
        parse_case("flash-crsh-3")


def test_family_traces_are_seeded() -> None:
    """The same name gives the same trace; another seed another one."""
    a, _ = family_trace("flash-crash", 5)
    b, _ = family_trace("flash-crash", 5)
    c, _ = family_trace("flash-crash", 6)
    assert a.name == "flash-crash-5"
    assert np.array_equal(a.columns["http_rps"], b.columns["http_rps"])
    assert not np.array_equal(a.columns["http_rps"], c.columns["http_rps"])


def test_flash_crash_reaches_ten_times_within_two_minutes() -> None:
    """The flash crash multiplies the load by 10 within two minutes of its start."""
    trace, faults = family_trace("flash-crash", 1)
    assert faults is None
    assert trace.columns["http_rps"].max() > 5 * np.median(trace.columns["http_rps"])


def test_faulty_families_carry_faults() -> None:
    """outliers, dropouts and stuck come with metric faults of their kind."""
    for family, kind in (("outliers", "outlier"), ("dropouts", "dropout"), ("stuck", "stuck")):
        _, faults = family_trace(family, 2)
        assert faults is not None
        assert faults.intervals
        assert {i[2] for i in faults.intervals} == {kind}


def test_fault_masks_and_outliers() -> None:
    """Intervals are [start, end) on the grid; an outlier caps percentages at 100."""
    faults = MetricFaults(((15.0, 45.0, "dropout", 1.0), (45.0, 60.0, "outlier", 3.0)))
    factor, dropped, stuck = faults.masks([0.0, 15.0, 30.0, 45.0, 60.0])
    assert dropped == [False, True, True, False, False]
    assert factor == [1.0, 1.0, 1.0, 3.0, 1.0]
    assert not any(stuck)
    assert faulty({"cpu": 50.0, "queue": 10.0}, 3.0) == {"cpu": 100.0, "queue": 30.0}


@pytest.fixture(scope="module")
def result() -> SuiteResult:
    """Three cases (normal, news, macro) through the default policy and every baseline."""
    return run_suite(load_default(), SimModel(), count=3, first_seed=7, workers=1)


def test_suite_rows_cover_every_case_controller_and_pool(result: SuiteResult) -> None:
    """Each case has every controller, every pool plus all, every metric."""
    assert [c.name for c in result.cases] == ["normal-7", "news-8", "macro-9"]
    assert result.controllers == ["policy", "seed-script", "hpa", "static", "oracle"]
    assert result.pools == ["django", "celery", "celery-trading", ALL]
    for row in result.rows.values():
        for pools in row.values():
            assert all(set(m) == set(METRICS) for m in pools.values())
    # the HPA against itself, the oracle against itself
    assert result.values("hpa", ALL, "ih_vs_hpa") == pytest.approx([1.0] * 3)
    assert result.values("oracle", ALL, "ih_vs_oracle") == pytest.approx([1.0] * 3)


def test_suite_distributions_and_worst(result: SuiteResult) -> None:
    """median <= p90 <= worst; the worst traces are named by their largest values."""
    for name in result.controllers:
        median, p90, worst = result.stats(name, ALL, "slo_minutes")
        assert median <= p90 <= worst
        named = result.worst(name, "slo_minutes", n=3)
        assert [v for _, v in named] == sorted(result.values(name, ALL, "slo_minutes"))[::-1]
        assert named[0][1] == worst
    goals = result.against_hpa()
    assert 0.0 <= goals["slo_not_above_hpa_share"] <= 1.0
    families = result.by_family()
    assert list(families) == ["normal", "news", "macro"]
    assert all(f["cases"] == 1.0 for f in families.values())


def test_suite_json_and_html(result: SuiteResult) -> None:
    """The JSON document serialises; the HTML page has a plot per metric and the worst list."""
    doc = json.loads(json.dumps(result.as_dict()))
    assert doc["cases"] == ["normal-7", "news-8", "macro-9"]
    assert set(doc["summary"]["policy"][ALL]["slo_minutes"]) == {"median", "p90", "worst"}
    page = render_html(result)
    assert page.count("<svg") == len(METRICS) * len(result.pools)
    assert "--case NAME" in page
    assert "macro-9" in page


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "senex_scale", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_suite_writes_json() -> None:
    """simulate --suite --suite-count 2 --json -: the suite document on stdout."""
    result = _cli("simulate", "--suite", "--suite-count", "2", "--compare", "hpa", "--json", "-")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["cases"] == ["normal-0", "news-1"]
    assert set(doc["summary"]) == {"policy", "hpa"}


def test_cli_case_replays_a_suite_trace() -> None:
    """simulate --case dropouts-11 runs that trace (with its faults) like any other."""
    result = _cli("simulate", "--case", "dropouts-11", "--compare", "none", "--json", "-")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trace"] == "dropouts-11"


@pytest.mark.parametrize(
    "args",
    [("--suite", "--case", "normal-1"), ("--case", "nope-1"), ("--suite", "--trace", "x.csv")],
)
def test_cli_suite_input_errors(args: tuple[str, ...]) -> None:
    """Conflicting options or an unknown case: exit 2 with Error:, no traceback."""
    result = _cli("simulate", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ")
