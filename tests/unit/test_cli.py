"""The ``senex-scale`` command, run for real as ``python -m senex_scale``.

Every command line below runs once per module, four at a time (each one starts a fresh
interpreter, which is what makes these tests slow); the tests then read the results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from senex_scale.policy import default_policy_text

# Tuesday 2026-11-24 10:00 New York: market hours, an XNYS session.
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()
BAD_DURATION = ('scale_out = { above = 70, for = "5m"', 'scale_out = { above = 70, for = "5x"')
BAD_CRON = ('start = "open-2m"', 'start = "0 25 * * *"')
DEFAULT_FILE = "the-default-policy-as-printed-by-senex-scale-policy-default.toml"
DURATION_PROBLEM = 'rules[0].scale_out.for: "5x" is not a duration (e.g. "5m")'
LONG_PROBLEM = (
    'schedules[0].start: "0 25 * * *" is neither a 5-field cron line (e.g. "0 8 * * MON-FRI") '
    'nor a market anchor (e.g. "open-90m", "close+15m")'
)

LATER = f"{NOW + 600:.0f}"  # --now as epoch seconds, 10 minutes after the observation

# A small policy without calendars: quick to load, for the plan error cases and the table.
SMALL = """
[sources.s]
type = "prometheus"
[pools.web]
min = 1
max = 4
[[rules]]
name = "cpu"
pool = "web"
metric = { source = "s" }
scale_out = { above = 70, for = "1m" }
scale_in = { below = 30, for = "1m" }
"""

# name -> arguments, run in the directory holding the files ``runs`` writes.
COMMANDS: dict[str, tuple[str, ...]] = {
    "validate": ("validate", DEFAULT_FILE),
    "validate-bad": ("validate", "bad.toml"),
    "validate-json": ("validate", "policy.toml", "--json"),
    "validate-json-bad": ("validate", "bad.toml", "--json"),
    "plan-json": ("plan", "--observe", "obs.json", "--policy", "policy.toml", "--json"),
    "plan-table": ("plan", "-o", "small-obs.json", "-p", "small.toml"),
    "plan-now": ("plan", "-o", "small-obs.json", "-p", "small.toml", "--now", "{later}", "--json"),
    "missing-policy": ("validate", "missing.toml"),
    "missing-observation": ("plan", "--observe", "missing.json", "-p", "small.toml"),
    "missing-plan-policy": ("plan", "--observe", "obs.json", "-p", "missing.toml"),
    "bad-now": ("plan", "--observe", "obs.json", "-p", "small.toml", "--now", "garbage"),
    "bad-json": ("plan", "--observe", "broken.json", "-p", "small.toml"),
    "bad-observation": ("plan", "--observe", "wrong.json", "-p", "small.toml"),
}


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m senex_scale ARGS`` in ``cwd`` as from a script: no terminal, no width set."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "senex_scale", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


def observation() -> dict[str, Any]:
    """Django at 85 % CPU for 5 minutes on 3 instances, Redis memory at 95 %, Postgres failing."""
    cpu = [
        {"at": NOW - 15 * i, "value": 85.0, "instance": str(n)}
        for i in range(20, -1, -1)
        for n in (1, 2, 3)
    ]
    return {
        "now": "2026-11-24T15:00:00Z",
        "pools": {
            "django": {"instances": [{"id": "1"}, {"id": "2"}, {"id": "3"}]},
            "celery": {"instances": [{"id": "1"}, {"id": "2"}, {"id": "3"}]},
            "celery-trading": {"instances": [{"id": "1"}]},
        },
        "samples": {
            "django-cpu": cpu,
            "websocket-connections": [{"at": NOW, "value": 200.0}],
            "redis-memory": [{"at": NOW - 10, "value": 95.0}],
            "celery-queue": [{"at": NOW, "value": 40.0}],
        },
        "errors": {"postgres-cpu": "connection refused"},
    }


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the files the commands read."""
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def runs(tmp: Path) -> Mapping[str, subprocess.CompletedProcess[str]]:
    """``policy default`` written to a file, then every command of COMMANDS, by name."""
    default = cli("policy", "default")
    (tmp / "policy.toml").write_text(default.stdout, encoding="utf-8")
    text = default_policy_text()
    bad = text.replace(*BAD_DURATION, 1).replace(*BAD_CRON, 1)
    (tmp / "bad.toml").write_text(bad, encoding="utf-8")
    (tmp / DEFAULT_FILE).write_text(default.stdout, encoding="utf-8")
    (tmp / "small.toml").write_text(SMALL, encoding="utf-8")
    (tmp / "obs.json").write_text(json.dumps(observation()), encoding="utf-8")
    small_obs = {
        "now": NOW,
        "pools": {"web": {"instances": [{"id": "1"}, {"id": "2"}]}},
        "samples": {"cpu": [{"at": NOW - 15 * i, "value": 90.0} for i in range(4, -1, -1)]},
    }
    (tmp / "small-obs.json").write_text(json.dumps(small_obs), encoding="utf-8")
    (tmp / "broken.json").write_text("{bad", encoding="utf-8")
    wrong = {"pools": {"django": {"instances": [{"id": "1", "state": "bogus"}]}}}
    (tmp / "wrong.json").write_text(json.dumps(wrong), encoding="utf-8")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            name: pool.submit(cli, *(a.format(later=LATER) for a in args), cwd=tmp)
            for name, args in COMMANDS.items()
        }
        results = {name: future.result() for name, future in futures.items()}
    return {"policy-default": default, **results}


def flat(text: str) -> str:
    """``text`` with every run of whitespace made one space (ignores line wrapping)."""
    return " ".join(text.split())


def user_error(result: subprocess.CompletedProcess[str]) -> None:
    """Exit 2, "Error: ..." on stderr, nothing on stdout and no traceback."""
    assert result.returncode == 2, result
    assert result.stderr.startswith("Error:"), result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_policy_default_prints_the_default(
    runs: Mapping[str, subprocess.CompletedProcess[str]],
) -> None:
    """``policy default`` prints the built-in policy text unchanged, exit 0."""
    result = runs["policy-default"]
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == default_policy_text()


def test_validate_default_file(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """The printed default validates: exit 0 and a one-line summary."""
    result = runs["validate"]
    assert (result.returncode, result.stderr) == (0, "")
    assert (
        flat(result.stdout) == f"{DEFAULT_FILE}: valid (3 pools, 15 rules, 1 schedules, 5 sources)"
    )


def test_validate_bad_file(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """A broken policy exits 2 and names each problem's dotted path on stderr."""
    result = runs["validate-bad"]
    user_error(result)
    assert flat(result.stderr) == flat(
        f"Error: bad.toml: 2 problems\n  {DURATION_PROBLEM}\n  {LONG_PROBLEM}\n"
    )
    assert f"  {DURATION_PROBLEM}\n" in result.stderr


def test_validate_json(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """``validate --json`` prints the verdict as JSON on stdout: exit 0 when valid."""
    result = runs["validate-json"]
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {
        "valid": True,
        "file": "policy.toml",
        "pools": ["celery", "celery-trading", "django"],
        "rules": [
            "django-cpu",
            "websocket-connections",
            "celery-queue",
            "celery-trading-queue",
            "celery-backlog",
            "celery-trading-backlog",
            "postgres-cpu",
            "redis-memory",
            "disk-usage",
            "django-cpu-target",
            "celery-busy",
            "celery-trading-busy",
            "django-forecast",
            "celery-forecast",
            "celery-trading-forecast",
        ],
        "schedules": ["open-spike"],
        "sources": ["broker", "disk", "postgres", "prom", "redis"],
    }


def test_validate_json_bad(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """``validate --json`` on a broken file: exit 2, the problems as JSON, no traceback."""
    result = runs["validate-json-bad"]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout) == {
        "valid": False,
        "file": "bad.toml",
        "problems": [DURATION_PROBLEM, LONG_PROBLEM],
    }


def test_output_is_not_rewrapped(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """Messages reach a pipe whole: no line of a message is re-wrapped at 80 columns."""
    # Scripts and CI logs read this output; a problem split over two lines cannot be grepped
    # or pasted back.
    result = runs["validate-bad"]
    assert result.stderr == (
        f"Error: bad.toml: 2 problems\n  {DURATION_PROBLEM}\n  {LONG_PROBLEM}\n"
    )
    summary = runs["validate"].stdout
    assert summary == f"{DEFAULT_FILE}: valid (3 pools, 15 rules, 1 schedules, 5 sources)\n"


def test_plan_json(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """``plan --observe --json`` lists per pool current/desired/reasons and fired actions."""
    result = runs["plan-json"]
    assert (result.returncode, result.stderr) == (0, "")
    doc = json.loads(result.stdout)
    assert doc["now"] == "2026-11-24T15:00:00Z"
    decisions = doc["decisions"]
    pools = {d["pool"]: d for d in decisions if d["kind"] == "scale"}
    assert {name: (d["current"], d["desired"]) for name, d in pools.items()} == {
        "django": (3, 4),  # 85 > 70 for 5m: +1
        "celery": (3, 3),  # queue 40: no scale-out; celery-busy has no data: no scale-in
        "celery-trading": (1, 1),  # no data: no change, at min
    }
    for d in pools.values():
        assert isinstance(d["reasons"], list)
        assert d["reasons"]
        assert all(isinstance(r, str) and r for r in d["reasons"])
    django = pools["django"]
    assert django["reasons"] == [
        "django-cpu 85.0 > 70 for 5m: +1 (3 -> 4)",
        # the predictive rule (forecast-only in the default) says why it does not act
        "django-forecast (forecast-only): no forecast (0 of 3 sessions learned): reactive only",
        "scale out 3 -> 4",
    ]
    assert (django["priority"], django["direction"], django["act"]) == ("high", "out", True)
    assert (django["min"], django["max"]) == (2, 5)  # 10:00: the open-spike window has ended
    actions = [d for d in decisions if d["kind"] == "action"]
    assert [(a["rule"], a["priority"], a["act"]) for a in actions] == [
        ("redis-memory", "critical", True)
    ]
    assert actions[0]["action"]["type"] == "notify"
    assert actions[0]["action"]["message"].startswith("Redis memory above 90%")
    assert actions[0]["reasons"][0].startswith("redis-memory 95.0 > 90: notify ")
    assert decisions[0]["rule"] == "redis-memory"  # critical comes first
    rules = {r["rule"]: r for r in doc["rules"]}
    assert (rules["postgres-cpu"]["vote"], rules["postgres-cpu"]["value"]) == ("missing", None)
    assert rules["django-cpu"]["held_seconds"] == 300.0


def test_plan_now_override(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """``--now`` (epoch seconds here) decides as of another time than the file's."""
    result = runs["plan-now"]
    assert (result.returncode, result.stderr) == (0, "")
    doc = json.loads(result.stdout)
    assert doc["now"] == "2026-11-24T15:10:00Z"
    # Ten minutes on, the samples are stale: no data, no change.
    (web,) = doc["decisions"]
    assert (web["current"], web["desired"]) == (2, 2)
    assert web["reasons"] == [
        "cpu: no data (newest sample is 600s old (stale after 45s))",
        "no change: 2 instances",
    ]


def test_plan_table(runs: Mapping[str, subprocess.CompletedProcess[str]]) -> None:
    """Without ``--json`` plan prints a table with the pool, its counts and the reasons."""
    result = runs["plan-table"]
    assert (result.returncode, result.stderr) == (0, "")
    text = flat(result.stdout)
    assert "Plan at 2026-11-24T15:00:00Z" in text
    assert "web" in text
    assert "↑ 3" in text
    assert "scale out 2 -> 3" in text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param(
            "missing-policy", "Error: missing.toml: 1 problem file not found", id="validate"
        ),
        pytest.param("missing-observation", "Error: missing.json: file not found", id="observe"),
        pytest.param(
            "missing-plan-policy", "Error: missing.toml: 1 problem file not found", id="policy"
        ),
        pytest.param(
            "bad-now",
            'Error: --now: "garbage" is not an ISO 8601 time (e.g. "2026-11-24T15:00:00Z")',
            id="bad-now",
        ),
        pytest.param(
            "bad-json",
            "Error: broken.json: not valid JSON: Expecting property name enclosed in double "
            "quotes (line 1, column 2)",
            id="bad-json",
        ),
        pytest.param(
            "bad-observation",
            'Error: wrong.json: pools.django.instances[0].state: "bogus": ',
            id="bad-observation",
        ),
    ],
)
def test_user_errors_exit_2_without_traceback(
    runs: Mapping[str, subprocess.CompletedProcess[str]], name: str, message: str
) -> None:
    """Missing or invalid input exits 2 with ``Error: ...`` on stderr and no traceback."""
    result = runs[name]
    user_error(result)
    assert flat(result.stderr).startswith(message), result.stderr
