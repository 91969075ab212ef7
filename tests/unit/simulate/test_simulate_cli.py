"""``senex-scale simulate`` and ``senex-scale trace generate`` end to end, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
POLICIES = ("policy", "seed-script", "hpa", "static", "oracle")
POOLS = ("django", "celery", "celery-trading")
FIELDS = (
    "under_accuracy",
    "over_accuracy",
    "under_timeshare",
    "over_timeshare",
    "jitter",
    "instance_hours",
    "actions",
    "slo_violation_minutes",
)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "senex_scale", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """One run on the trading day with every baseline, writing JSON and the HTML report."""
    tmp = tmp_path_factory.mktemp("simulate")
    out, report = tmp / "out.json", tmp / "r.html"
    result = _cli(
        "simulate",
        "--trace",
        "traces/trading-day.csv",
        "--compare",
        "seed-script,hpa,static,oracle",
        "--json",
        str(out),
        "--report",
        str(report),
    )
    return result, out, report


@pytest.fixture(scope="module")
def document(full_run: tuple[subprocess.CompletedProcess[str], Path, Path]) -> dict[str, Any]:
    """The --json document of the full run."""
    result, out, _ = full_run
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def bare_run() -> subprocess.CompletedProcess[str]:
    """``senex-scale simulate`` with no arguments."""
    return _cli("simulate")


# --------------------------------------------------------------------------- --json


def test_json_has_every_score_for_every_policy_and_pool(document: dict[str, Any]) -> None:
    """results[policy][pool] holds all eight scores as numbers for all five runs and 3 pools."""
    results = document["results"]
    assert list(results) == list(POLICIES)
    for name in POLICIES:
        assert list(results[name]) == list(POOLS), name
        for pool in POOLS:
            scores = results[name][pool]
            assert list(scores) == list(FIELDS), (name, pool)
            for field in FIELDS:
                assert isinstance(scores[field], int | float), (name, pool, field)
            assert isinstance(scores["actions"], int)


def test_json_describes_the_trace_and_events(document: dict[str, Any]) -> None:
    """The document names the trace, its span and step, and lists each run's events."""
    assert document["trace"] == "trading-day"
    assert (document["step_seconds"], document["ticks"]) == (15.0, 5760)
    assert document["end"] - document["start"] == 5759 * 15
    assert set(document["events"]) == set(POLICIES)
    assert document["events"]["static"] == document["events"]["oracle"] == []
    first = document["events"]["policy"][0]
    assert set(first) == {"at", "what", "detail"}


@pytest.mark.parametrize(("pool", "maximum"), [("django", 5), ("celery", 6), ("celery-trading", 6)])
def test_json_static_pays_for_max_all_day(
    document: dict[str, Any], pool: str, maximum: int
) -> None:
    """The static baseline runs max instances for 24 h and never acts."""
    static = document["results"]["static"][pool]
    assert static["instance_hours"] == pytest.approx(24 * maximum)
    assert static["actions"] == 0
    assert static["under_accuracy"] <= document["results"]["seed-script"][pool]["under_accuracy"]


def test_json_run_prints_the_table_and_paths(
    full_run: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    """A file --json still prints the table and says where the JSON and report went."""
    result, out, report = full_run
    assert result.returncode == 0, result.stderr
    assert f"scores written to {out}" in result.stdout
    assert f"report written to {report}" in result.stdout


# --------------------------------------------------------------------------- --report


def test_report_is_html_with_inline_svg_and_scores(
    full_run: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    """The report is one HTML file with inline <svg> plots and the score table."""
    _, _, report = full_run
    html = report.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert html.count("<svg") >= 1 + len(POOLS)  # the score plot and one per pool at least
    assert "<table>" in html
    for name in (*POLICIES, *POOLS, *FIELDS):
        assert name in html, name
    # nothing to fetch: it opens offline
    assert "<img" not in html
    assert "src=" not in html


# --------------------------------------------------------------------------- the table


def test_bare_simulate_prints_the_table(bare_run: subprocess.CompletedProcess[str]) -> None:
    """With no arguments: the bundled trading day, every baseline, pools and policies named."""
    assert bare_run.returncode == 0, bare_run.stderr
    text = bare_run.stdout
    assert "trading-day" in text
    for name in (*POLICIES, *POOLS):
        assert name in text, name
    assert "under acc" in text
    assert "SLO min" in text


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("simulate", "--compare", "hpaa"), ['unknown baseline "hpaa"', 'did you mean "hpa"']),
        (("simulate", "--trace", "missing.csv"), ["missing.csv", "file not found"]),
        (("trace", "generate", "bogus", "--out", "-"), ["bogus"]),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: tuple[str, ...], expected: list[str]) -> None:
    """An unknown baseline, a missing trace or an unknown kind: exit 2, Error: on stderr."""
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: "), result.stderr
    for part in expected:
        assert part in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- trace generate


def test_trace_generate_reproduces_the_bundled_news_day(tmp_path: Path) -> None:
    """trace generate news-day --seed 42 writes traces/news-day.csv but for the command line."""
    out = tmp_path / "f.csv"
    result = _cli("trace", "generate", "news-day", "--out", str(out), "--seed", "42")
    assert result.returncode == 0, result.stderr
    assert "wrote 5760 rows" in result.stderr
    got = out.read_text(encoding="utf-8").splitlines()
    want = (ROOT / "traces" / "news-day.csv").read_text(encoding="utf-8").splitlines()
    assert got[0].startswith("# Generated by: senex-scale trace generate news-day --out ")
    assert len(got) == len(want)
    assert got[1:] == want[1:]
