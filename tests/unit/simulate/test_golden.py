"""Golden file: the decisions and scores of the default policy, hpa and seed-script at the open.

The bundled trading day cut to 08:45-10:45 New York (pre-open schedules, the 09:30 spike and
its decay) is simulated and compared with ``tests/golden/trading-open.json``. After an
intended change of behaviour, regenerate the file and review its diff::

    SENEX_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/simulate/test_golden.py
"""

from __future__ import annotations

import json
import os
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from senex_scale.policy import load_default
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.runner import simulate
from senex_scale.simulate.trace import Trace, read_trace

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden" / "trading-open.json"
SOURCE = ROOT / "traces" / "trading-day.csv"
NY = ZoneInfo("America/New_York")
FROM, TO = time(8, 45), time(10, 45)
RUNS = ("policy", "seed-script", "hpa")


def _cut() -> Trace:
    """The bundled trading day from 08:45 (included) to 10:45 (excluded), New York time."""
    full = read_trace(SOURCE)
    clock = np.array([datetime.fromtimestamp(t, NY).time() for t in full.times.tolist()])
    keep = (clock >= FROM) & (clock < TO)
    columns = {name: values[keep] for name, values in full.columns.items()}
    return Trace("trading-open", full.times[keep], columns, full.timezone)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, NY).isoformat()


def _document() -> dict[str, Any]:
    """What the golden file pins: trace, events and per-pool scores of each run."""
    trace = _cut()
    sim = simulate(trace, load_default(), SimModel(), ["seed-script", "hpa"])
    return {
        "trace": {
            "source": "traces/trading-day.csv",
            "start": _iso(trace.start),
            "end": _iso(trace.end),
            "ticks": len(sim.trace.times),
        },
        "runs": {
            name: {
                "events": [
                    {"at": _iso(at), "what": what, "detail": detail}
                    for at, what, detail in sim.runs[name].events
                ],
                "scores": {
                    pool: {field: round(v, 4) for field, v in score.as_dict().items()}
                    for pool, score in sim.scores[name].items()
                },
            }
            for name in RUNS
        },
    }


@pytest.fixture(scope="module")
def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """(expected from the golden file, actual from this run); writes the file on request."""
    actual = _document()
    if os.environ.get("SENEX_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(actual, indent=2) + "\n", encoding="utf-8")
        pytest.skip(f"SENEX_UPDATE_GOLDEN=1: wrote {GOLDEN.relative_to(ROOT)}; review its diff")
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing; create it with SENEX_UPDATE_GOLDEN=1")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return expected, actual


def _show(event: dict[str, str] | None) -> str:
    if event is None:
        return "(none)"
    return f"{event['at']}  {event['what']}  {event['detail']}"


def test_golden_trace_cut(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The cut is the same two hours: 08:45:00 to 10:44:45 at 15 s, 480 ticks."""
    expected, actual = documents
    assert actual["trace"] == expected["trace"]
    assert actual["trace"]["ticks"] == 480
    assert actual["trace"]["start"] == "2026-11-24T08:45:00-05:00"


@pytest.mark.parametrize("name", RUNS)
def test_golden_events(documents: tuple[dict[str, Any], dict[str, Any]], name: str) -> None:
    """Every scale change and fired action of the run matches the golden file, in order."""
    expected, actual = documents
    want: list[dict[str, str]] = expected["runs"][name]["events"]
    got: list[dict[str, str]] = actual["runs"][name]["events"]
    for i in range(max(len(want), len(got))):
        a = want[i] if i < len(want) else None
        b = got[i] if i < len(got) else None
        if a != b:
            pytest.fail(
                f"{name}: event #{i + 1} differs from {GOLDEN.name} "
                f"({len(want)} expected, {len(got)} now)\n"
                f"  expected: {_show(a)}\n"
                f"  actual:   {_show(b)}\n"
                "If the change is intended: SENEX_UPDATE_GOLDEN=1 and review the diff.",
                pytrace=False,
            )


@pytest.mark.parametrize("name", RUNS)
def test_golden_scores(documents: tuple[dict[str, Any], dict[str, Any]], name: str) -> None:
    """Per-pool scores (rounded to 4 decimals) match the golden file."""
    expected, actual = documents
    want: dict[str, dict[str, float]] = expected["runs"][name]["scores"]
    got: dict[str, dict[str, float]] = actual["runs"][name]["scores"]
    diffs = [
        f"  {pool}.{field}: expected {want.get(pool, {}).get(field)}, "
        f"actual {got.get(pool, {}).get(field)}"
        for pool in sorted(set(want) | set(got))
        for field in sorted(set(want.get(pool, {})) | set(got.get(pool, {})))
        if want.get(pool, {}).get(field) != got.get(pool, {}).get(field)
    ]
    if diffs:
        pytest.fail(
            f"{name}: scores differ from {GOLDEN.name}:\n" + "\n".join(diffs), pytrace=False
        )


def test_golden_runs_are_not_empty(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The cut exercises each controller: every run scales at least once around the open."""
    expected, _ = documents
    for name in RUNS:
        assert expected["runs"][name]["events"], name
        assert set(expected["runs"][name]["scores"]) == {"django", "celery", "celery-trading"}
