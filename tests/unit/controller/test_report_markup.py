"""Stored text is printed as text: reasons, errors and names are never Rich markup.

Decisions, statuses and errors come from servers, runbooks and files; whatever they say is
stored and later printed by ``status`` and ``history``. Through the real console script,
with Rich forced to think it writes to a terminal (so it would emit hyperlinks and colours).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from senex_scale.store import open_store

EXE = str(Path(sys.executable).with_name("senex-scale"))
HOSTILE = [
    "closing tag [/bogus] with no opening",
    "[link=https://evil.example/x]click me[/link]",
    "[bold red]alarm[/bold red] \\[escaped]",
]
OSC8 = "\x1b]8;"
"""The terminal escape that starts a hyperlink."""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "300", "TERM": "xterm-256color"}
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture
def state(tmp_path: Path) -> str:
    url = f"sqlite:{tmp_path / 'state.db'}"
    store = open_store(url)
    now = time.time()
    decision = {
        "kind": "scale",
        "pool": "web",
        "priority": "high",
        "current": 1,
        "desired": 2,
        "direction": "out",
        "reasons": HOSTILE[:2],
    }
    store.record_decision(
        now - 5, decision, "failed", {"error": HOSTILE[2], "failed": {"2": HOSTILE[0]}}
    )
    status = {
        "at": now,
        "interval": 15.0,
        "role": "leader",
        "lock": "file",
        "policy": "[link=https://evil.example/p]policy[/link]",
        "state": url,
        "source_errors": {"prom": HOSTILE[0]},
        "pools": [
            {"pool": "web", "current": 1, "desired": 2, "min": 1, "max": 3,
             "reasons": HOSTILE[1:], "error": None},
        ],
        "rules": [{"rule": "cpu", "pool": "web", "value": 91.0, "vote": "out", "held": 60}],
        "hosts": [{"host": "web01", "address": "10.0.0.1", "reachable": False, "since": now,
                   "error": HOSTILE[1], "pools": {"web": [1]}}],
    }  # fmt: skip
    store.put_status("c1", status, leader=True)
    store.close()
    return url


def assert_printed_as_text(done: subprocess.CompletedProcess[str], texts: list[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert OSC8 not in done.stdout
    plain = done.stdout
    for text in texts:
        assert text in plain, text


def test_history_prints_hostile_reasons_as_they_are(state: str) -> None:
    """A reason with "[/bogus]" does not crash history; "[link=...]" is not a link."""
    assert_printed_as_text(cli("history", "--state", state), HOSTILE)


def test_status_prints_hostile_text_as_it_is(state: str) -> None:
    """Problems, reasons, host errors and recent decisions: literal text, no links."""
    done = cli("status", "--state", state)
    assert_printed_as_text(done, [*HOSTILE, "[link=https://evil.example/p]policy[/link]"])
