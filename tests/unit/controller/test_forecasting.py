"""Predictive rules at the edges: history from the store (``prime``), ``senex-scale forecast``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from senex_scale.controller.forecasting import prime, report
from senex_scale.core import Decider, Instance, Observation, Sample
from senex_scale.core.forecast import SessionClock
from senex_scale.errors import InputError
from senex_scale.policy import Policy, parse_policy
from senex_scale.store import Store, open_store

# Tuesday 2026-11-24, XNYS open 14:30 UTC; the store holds the four sessions before it.
OPEN = datetime(2026, 11, 24, 14, 30, tzinfo=UTC).timestamp()

POLICY = """
[controller]
interval = "15s"
state = "sqlite:///nonexistent/state.db"

[sources.s]
type = "prometheus"

[pools.web]
min = 1
max = 10
warmup = "60s"

[pools.other]
min = 1
max = 2

[[rules]]
name = "web-ahead"
type = "predictive"
pool = "web"
metric = { source = "s", aggregate = "sum", signal = "requests" }
target = 50.0
mode = "on"
"""


def record_history(store: Store, sessions: int = 4) -> None:
    """Per minute of each past session's window: demand 2, 6 in the first five minutes."""
    clock = SessionClock("XNYS")
    today = clock.around(OPEN)
    assert today is not None
    for number in range(today.number - sessions, today.number):
        s = clock.session(number)
        at = s.open - 90 * 60
        while at < s.close + 3600:
            demand = 6.0 if 0 <= at - s.open < 300 else 2.0
            store.record_tick(at, [], [("web-ahead", "web", demand, "abstain", 0.0)], {})
            at += 60.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A SQLite state with four sessions of recorded demand."""
    opened = open_store(f"sqlite:{tmp_path / 'state.db'}")
    record_history(opened)
    return opened


@pytest.fixture
def policy() -> Policy:
    """Pool web with an acting predictive rule (requests / 50)."""
    return parse_policy(POLICY)


def test_prime_feeds_the_recorded_history_once(store: Store, policy: Policy) -> None:
    """A fresh Decider learns the stored sessions, then decides ahead of the open."""
    decider = Decider(policy)
    fed = prime(decider, store, OPEN - 120, policy)
    assert fed == 4 * (390 + 150)
    assert prime(decider, store, OPEN - 105, policy) == 0, "caught up: nothing fed twice"
    instances = {"web": [Instance("1"), Instance("2"), Instance("3")], "other": [Instance("1")]}
    observation = Observation(instances, {"web-ahead": [Sample(OPEN - 105, 100.0)]})
    plan = decider.decide(observation, OPEN - 105)
    assert plan.for_pool("web").desired == 7  # 6 x 1.1 -> 7
    (forecast,) = plan.forecasts
    assert forecast.sessions == 4
    assert forecast.mape == pytest.approx(0.0)


def test_report_buckets_the_next_session(store: Store, policy: Policy) -> None:
    """The report covers open-30m to close+30m; the open's bucket peaks at the spike."""
    doc = report(policy, store, "web", OPEN - 3600, bucket=1800.0)
    assert doc.sessions == 4
    assert doc.acts == "yes"
    assert doc.session_open == OPEN
    by_start = {b.start: b for b in doc.buckets}
    assert by_start[OPEN].peak == pytest.approx(6.0)
    assert by_start[OPEN].floor == 7
    assert by_start[OPEN + 3600].peak == pytest.approx(2.0)
    assert len(doc.buckets) == (390 + 60) // 30
    assert doc.local(OPEN) == "09:30"


def test_report_names_pools_without_a_rule(store: Store, policy: Policy) -> None:
    """A pool without a predictive rule is an input error that names the ones with one."""
    with pytest.raises(InputError, match=r'"other" has no type = "predictive" rule.*web'):
        report(policy, store, "other", OPEN)
    with pytest.raises(InputError, match='unknown pool "nope"'):
        report(policy, store, "nope", OPEN)


def test_forecast_command_prints_json_and_a_table(store: Store, tmp_path: Path) -> None:
    """``senex-scale forecast --pool web --json`` and the table, against the stored history."""
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    base = [sys.executable, "-m", "senex_scale", "forecast", "--pool", "web", "--policy"]
    args = [
        *base,
        str(path),
        "--state",
        f"sqlite:{tmp_path / 'state.db'}",
        "--now",
        str(OPEN - 600),
    ]
    done = subprocess.run([*args, "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["sessions_learned"] == 4
    assert doc["acts"] == "yes"
    assert max(b["floor"] or 0 for b in doc["buckets"]) == 7
    table = subprocess.run([*args, "--bucket", "15m"], capture_output=True, text=True, check=False)
    assert table.returncode == 0, table.stderr
    assert "09:30" in table.stdout
    assert "09:45" in table.stdout
    assert "acts: yes" in table.stdout
