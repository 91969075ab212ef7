"""``run``, ``status`` and ``history`` through the real console script: exit codes, errors
that name what is wrong, and the JSON shapes scripts read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from senex_scale.store import open_store

EXE = str(Path(sys.executable).with_name("senex-scale"))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def state(tmp_path: Path) -> str:
    url = f"sqlite:{tmp_path / 'state.db'}"
    store = open_store(url)
    decision = {
        "kind": "scale",
        "pool": "web",
        "priority": "high",
        "current": 1,
        "desired": 2,
        "direction": "out",
        "reasons": ["cpu 91 > 70 for 5m"],
    }
    store.record_decision(100.0, decision, "done", {"steps": [{"what": "start"}]})
    store.record_decision(115.0, decision | {"desired": 1, "direction": "none"}, "hold")
    store.close()
    return url


def test_history_json_lists_acted_decisions_with_reasons(state: str) -> None:
    done = cli("history", "--state", state, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["decisions"]
    assert [(r["outcome"], r["reasons"]) for r in rows] == [("done", ["cpu 91 > 70 for 5m"])]
    everything = json.loads(cli("history", "--state", state, "--json", "--all").stdout)
    assert [r["outcome"] for r in everything["decisions"]] == ["hold", "done"]


def test_history_table_and_filters(state: str) -> None:
    table = cli("history", "--state", state)
    assert table.returncode == 0
    assert "cpu 91 > 70 for 5m" in table.stdout
    none = cli("history", "--state", state, "--pool", "celery")
    assert none.returncode == 0
    assert "no decisions recorded that match" in none.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "--outcome", "exploded"], "--outcome: 'exploded' is not one of"),
        (["history", "--since", "5x"], "--since:"),
        (["run", "--log-format", "xml", "--once"], "--log-format: 'xml' is not console or json"),
        (["run", "--once", "--policy", "/nonexistent/policy.toml"], "policy file not found"),
        (["run", "--listen", "localhost"], "listen: 'localhost' is not HOST:PORT"),
    ],
)
def test_bad_input_exits_2_naming_it(state: str, args: list[str], message: str) -> None:
    if args[0] == "history":
        args = [*args, "--state", state]
    done = cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr


def test_status_without_a_tick_says_so_and_exits_1(tmp_path: Path) -> None:
    done = cli("status", "--state", f"sqlite:{tmp_path / 'empty.db'}")
    assert done.returncode == 1
    assert "no tick recorded yet" in done.stdout


def test_run_once_dry_run_records_a_tick(tmp_path: Path) -> None:
    """The default policy with nothing running: every source down, every pool unlistable
    (no systemd here); one tick is still recorded and explained."""
    url = f"sqlite:{tmp_path / 'state.db'}"
    done = cli("run", "--once", "--dry-run", "--state", url, "--log-format", "json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert {"controller starting", "leading", "controller stopped"} <= {e["event"] for e in events}
    status = json.loads(cli("status", "--state", url, "--json").stdout)["status"]
    assert status["dry_run"] is True
    assert status["source_errors"], "the default policy's servers are not running here"
    assert {p["pool"] for p in status["pools"]} == {"django", "celery", "celery-trading"}
