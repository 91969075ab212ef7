"""``senex-scale trace from-store`` on a store written by a real ``senex-scale run`` (the
controller stack: Prometheus scraping a gauge the test sets), then replayed by ``simulate``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from senex_scale.simulate.trace import read_trace
from senex_scale.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("senex-scale")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_controllers_samples_become_a_trace_the_simulator_replays(
    stack: Any, tmp_path: Path
) -> None:
    """The gauge's values as the controller recorded them, one row per tick, in order."""
    policy = stack.policy()
    proc = stack.run("--no-web", policy=policy)
    wait_until(
        lambda: stack.running("web") == {1}, 40, "the controller running\n" + stack.log_tail()
    )
    for value in (10, 20, 40):
        stack.gauge.value = value
        time.sleep(3)
    proc.terminate()
    assert proc.wait(timeout=60) == 0

    out = tmp_path / "mine.csv"
    done = _cli(
        "trace", "from-store", "--state", stack.state, "--policy", str(policy), "--since", "1h",
        "--column", "http_rps=web-load", "--column", "tasks_trading=trading-queue",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote " in done.stderr
    trace = read_trace(out)
    assert list(trace.columns) == ["http_rps", "tasks_trading"]
    assert trace.step == pytest.approx(1.0, abs=0.05)  # the controller's interval
    values = trace.columns["http_rps"].tolist()
    seen = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    assert seen[-3:] == [10, 20, 40], seen  # the gauge's steps, in order
    assert "http_rps = rule web-load: sum of the samples at each time" in out.read_text()

    sim = _cli("simulate", "--policy", str(policy), "--trace", str(out), "--compare", "hpa")
    assert sim.returncode == 0, sim.stderr
    assert "web" in sim.stdout


def test_bad_input_is_refused_before_anything_is_written(stack: Any, tmp_path: Path) -> None:
    """An unknown rule, a malformed --since, a store that is not a URL: exit 2, no file."""
    out = tmp_path / "x.csv"
    policy = stack.policy()
    cases = {
        ("--column", "http_rps=web-lod"): '--column http_rps: no rule "web-lod" in the policy',
        ("--since", "yesterday"): "--since:",
        ("--column", "rps=web-load"): '--column: "rps" is not a demand column',
    }
    for args, message in cases.items():
        done = _cli(
            "trace", "from-store", "--state", stack.state, "--policy", str(policy),
            "--out", str(out), *args,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert not out.exists()
