"""Traces from your own traffic (``simulate/capture.py``): chunking, assembling with gaps,
the queries a policy implies, and the store's samples turned into demand."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from senex_scale.core.state import Sample
from senex_scale.errors import InputError, SourceError
from senex_scale.policy import load_policy
from senex_scale.simulate.capture import (
    MAX_POINTS,
    assemble,
    chunks,
    default_queries,
    from_store,
    parse_overrides,
    store_columns,
    write_atomic,
)
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.trace import read_trace
from senex_scale.store import open_store


def test_chunks_never_exceed_the_point_limit_and_cover_the_grid_once() -> None:
    """7 days at 15 s is 40,321 points: four queries, none above 11,000, no point twice."""
    parts = chunks(0.0, 7 * 86400.0, 15.0)
    sizes = [round((b - a) / 15) + 1 for a, b in parts]
    assert sizes == [MAX_POINTS, MAX_POINTS, MAX_POINTS, 40321 - 3 * MAX_POINTS]
    assert all(b + 15 == c for (_, b), (c, _) in itertools.pairwise(parts))
    assert parts[-1][1] == 7 * 86400.0


def test_one_point_is_one_chunk() -> None:
    """A range shorter than a step asks for its one point."""
    assert chunks(100.0, 100.0, 15.0) == [(100.0, 100.0)]


def _ms(seconds: list[int], value: float = 1.0) -> dict[int, float]:
    return {s * 1000: value + s for s in seconds}


def test_a_gap_in_one_column_is_held_and_listed() -> None:
    """The missing points hold the value before them; the comment names the gap."""
    got = assemble(
        {"http_rps": _ms([0, 1, 2, 6, 7]), "ws_connections": _ms(list(range(8)))},
        step=1.0, name="t", timezone=None, header=[], end=7.0,
    )  # fmt: skip
    assert got.trace.columns["http_rps"].tolist() == [1, 2, 3, 3, 3, 3, 7, 8]
    assert [(g.column, g.start, g.end) for g in got.gaps] == [("http_rps", 3.0, 6.0)]
    assert any("http_rps 1 gap (3s)" in line for line in got.comment)


def test_a_gap_in_every_column_is_left_out() -> None:
    """No row where nothing was measured: step-hold carries the row before through it."""
    got = assemble(
        {"http_rps": _ms([0, 1, 5]), "ws_connections": _ms([0, 1, 5])},
        step=1.0, name="t", timezone=None, header=[],
    )  # fmt: skip
    assert got.trace.times.tolist() == [0.0, 1.0, 5.0]
    assert len(got.gaps) == 2


def test_the_start_is_trimmed_until_every_column_has_a_value() -> None:
    """Rows before the last column's first value would be invented: they are cut and said."""
    got = assemble(
        {"http_rps": _ms([0, 1, 2, 3]), "tasks_trading": _ms([2, 3])},
        step=1.0, name="t", timezone=None, header=[],
    )  # fmt: skip
    assert got.trace.times.tolist() == [2.0, 3.0]
    assert got.trimmed == 2.0
    assert any("first 2s left out" in line for line in got.comment)


def test_an_empty_column_is_dropped_and_no_data_at_all_is_an_error() -> None:
    """A query with no data is left out (and said); none with data is an error."""
    got = assemble(
        {"http_rps": _ms([0, 1]), "ws_connections": {}},
        step=1.0, name="t", timezone=None, header=[],
    )  # fmt: skip
    assert got.dropped == ["ws_connections"]
    assert list(got.trace.columns) == ["http_rps"]
    with pytest.raises(SourceError, match="no data"):
        assemble({"http_rps": {}}, step=1.0, name="t", timezone=None, header=[])


def test_the_default_policy_implies_a_query_per_demand_column() -> None:
    """HTTP rate and connections from the django rules, tasks per worker pool's first queue."""
    queries, notes = default_queries(load_policy("default"), 15.0)
    got = {q.column: q.promql for q in queries}
    assert got == {
        "http_rps": 'sum(rate(django_http_requests_total{job="django"}[60s]))',
        "ws_connections": 'sum(sum by (instance) (senex_websocket_connections{job="django"}))',
        "tasks_accounts": 'sum(rate(celery_tasks_total{job="celery-worker"}[60s])) * 60',
        "tasks_trading": 'sum(rate(celery_tasks_total{job="celery-worker-trading"}[60s])) * 60',
    }
    assert notes == []


def test_the_rate_window_is_never_shorter_than_the_step() -> None:
    """At a 5 minute step, consecutive points must not skip samples between them."""
    queries, _ = default_queries(load_policy("default"), 300.0)
    assert "[300s]" in queries[0].promql


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("http_rps", "is not COLUMN=PROMQL"),
        ("rps=sum(x)", '"rps" is not a demand column'),
        ("ws_conections=x", 'did you mean "ws_connections"'),
    ],
)
def test_a_bad_override_names_the_flag(item: str, message: str) -> None:
    """Each malformed --query is an InputError naming the flag."""
    with pytest.raises(InputError, match="--query") as caught:
        parse_overrides([item])
    assert message in str(caught.value)


def test_an_override_given_twice_is_refused() -> None:
    """Two values for one column cannot both be meant."""
    with pytest.raises(InputError, match="given twice"):
        parse_overrides(["http_rps=a", "http_rps=b"])


def test_the_stores_samples_become_demand_through_the_capacity_model(tmp_path: Path) -> None:
    """CPU above idle less the connections' share is requests; busy slots are tasks/min."""
    policy = load_policy("default")
    model = SimModel()
    web, trading = model.pool("django"), model.pool("celery-trading")
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    try:
        for t in (1000.0, 1015.0):
            store.add_samples("django-cpu", [Sample(t, 43.0, "1"), Sample(t, 53.0, "2")])
            store.add_samples(
                "websocket-connections", [Sample(t, 1000.0, "1"), Sample(t, 500.0, "2")]
            )
            store.add_samples("celery-trading-busy", [Sample(t, 50.0, "1")])
        columns = store_columns(policy)
        got = from_store(store.samples, policy, columns, since=0.0, until=2000.0, model=model)
    finally:
        store.close()
    trace = got.trace
    assert set(trace.columns) == {"http_rps", "ws_connections", "tasks_trading"}
    work = (43 + 53 - 2 * web.base_cpu) / 100
    rps = (work - 1500 * web.ws_cpu_per_1000 / 1e5) * web.rps_per_instance
    assert trace.columns["http_rps"].tolist() == pytest.approx([rps, rps])
    assert trace.columns["ws_connections"].tolist() == [1500.0, 1500.0]
    assert trace.columns["tasks_trading"].tolist() == [0.5 * trading.tasks_per_minute] * 2


def test_an_unknown_rule_in_a_column_mapping_is_refused() -> None:
    """--column COLUMN=RULE names a rule of the policy, with a hint for a typo."""
    with pytest.raises(InputError, match='did you mean "django-cpu"'):
        store_columns(load_policy("default"), {"http_rps": "django-cpx"})


def test_the_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    """Written through a temporary file renamed into place; it reads back as a trace."""
    got = assemble({"http_rps": _ms([0, 1])}, step=1.0, name="t", timezone=None, header=["h"])
    out = tmp_path / "t.csv"
    write_atomic(got, str(out), command="senex-scale trace from-prometheus")
    assert read_trace(out).columns["http_rps"].tolist() == [1.0, 2.0]
    assert out.read_text().startswith("# Captured by: senex-scale trace from-prometheus\n# h\n")
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(got, str(tmp_path / "nope" / "t.csv"), command="x")
