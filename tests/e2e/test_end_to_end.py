"""The whole strategy live: the reference app's stack on loopback, the controller on the
default policy at demo speed, and a compressed trading day of HTTP, WebSocket and Celery
traffic. The controller must scale Django from 2 to at least 4 on WebSocket load and the
Celery trading workers on queue length, then scale both back in with drains, while nothing
fails: zero failed requests, zero WebSockets closed before their drain, zero lost or
duplicated tasks. The numbers are printed; a screenshot of the status page is taken in
headless Chromium at the peak (in the test's directory, and in $SENEX_ARTIFACTS if set).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from senex_scale.demo.load import Phase
from senex_scale.demo.run import Demo, run_demo
from senex_scale.lab.chromium import Chromium

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]


def test_the_strategy_live(tmp_path: Path) -> None:
    shot: dict[str, Any] = {}
    threads: list[threading.Thread] = []

    def screenshot(demo: Demo) -> None:
        try:
            with Chromium() as browser:
                page = browser.page()
                page.open(demo.stack.status_url, settle=3.0)
                shot["png"] = page.screenshot(tmp_path / "status-page-e2e.png")
                shot["problems"] = page.problems()
                shot["pools"] = page.evaluate(
                    "[...document.querySelectorAll('#pools tbody tr')].map(r => r.innerText)"
                )
        except Exception as exc:  # reported by the assertions below
            shot["error"] = repr(exc)

    def on_phase(demo: Demo, phase: Phase) -> None:
        if phase.name == "busy":
            thread = threading.Thread(target=screenshot, args=(demo,), daemon=True)
            thread.start()
            threads.append(thread)

    result = run_demo("e2e", say=lambda line: print(line, flush=True), on_phase=on_phase)
    for thread in threads:
        thread.join(timeout=60)
    print("\nend-to-end numbers:\n" + json.dumps(result, indent=2))
    if artifacts := os.environ.get("SENEX_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / "e2e-result.json").write_text(json.dumps(result, indent=2))
        if (tmp_path / "status-page-e2e.png").exists():
            shutil.copy(tmp_path / "status-page-e2e.png", Path(artifacts))

    events = result["scale_events"]
    django_out = [e for e in events if e[0] == "django" and e[1] == "out" and e[4] == "done"]
    assert max(e[3] for e in django_out) >= 4, events
    assert any(e[0] == "django" and e[1] == "in" for e in events), "scaled back in"
    trading = [e for e in events if e[0] == "celery-trading" and e[4] == "done"]
    assert any(e[1] == "out" and e[3] >= 2 for e in trading), events
    assert any(e[1] == "in" for e in trading), events
    assert result["failed_requests"] == 0, result["failed_examples"]
    assert result["websockets_closed_early"] == 0
    assert result["websocket_connect_errors"] == 0
    assert result["tasks_queued"] > 100
    assert result["tasks_lost"] == 0
    assert result["tasks_duplicated"] == 0
    assert result["controller_exit"] == 0
    assert "error" not in shot, shot.get("error")
    assert shot["problems"] == []
    assert shot["png"].startswith(b"\x89PNG")
    assert any(row.startswith("django") for row in shot["pools"])
