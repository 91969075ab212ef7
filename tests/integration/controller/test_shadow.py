"""``senex-scale run --shadow`` as a real process against the controller stack (supervisord,
nginx, Redis, Prometheus): under load it records would-be scale actions while supervisord's
processes and nginx's upstream and workers stay exactly as they were; it never takes the
leader lock, so a real controller on the same state leads beside it; ``shadow report``'s
numbers match what the test itself observed."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from senex_scale.store import open_store
from senex_scale.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextmanager
def _watch(stack: Any) -> Iterator[list[str]]:
    """Every 100 ms: supervisord's running processes, the upstream file and nginx's workers;
    any change is appended to the yielded list."""
    changes: list[str] = []
    upstream = stack.nginx.root / "upstream.conf"
    first = (stack.running("web"), stack.running("worker"), upstream.read_bytes())
    assert stack.nginx.pid is not None
    workers = {c.pid for c in psutil.Process(stack.nginx.pid).children()}
    stop = threading.Event()

    def look() -> None:
        while not stop.wait(0.1):
            now = (stack.running("web"), stack.running("worker"), upstream.read_bytes())
            if now != first:
                changes.append(
                    f"{time.time():.1f}: {now[:2]} upstream changed: {now[2] != first[2]}"
                )
            seen = {c.pid for c in psutil.Process(stack.nginx.pid).children()}
            if seen != workers:
                changes.append(f"{time.time():.1f}: nginx workers {seen} (was {workers})")

    thread = threading.Thread(target=look, daemon=True)
    thread.start()
    try:
        yield changes
    finally:
        stop.set()
        thread.join(5)


def _shadow_rows(stack: Any) -> list[tuple[Any, ...]]:
    store = open_store(stack.state)
    try:
        return list(store.shadow_ticks(0.0))
    finally:
        store.close()


def _shadow_count(stack: Any, pool: str) -> int | None:
    rows = [r for r in _shadow_rows(stack) if r[1] == pool]
    return rows[-1][3] if rows else None


def test_shadow_changes_nothing_and_records_what_it_would_do(stack: Any, tmp_path: Path) -> None:
    """Load up: the shadow would scale both pools out to max, then back in; supervisord and
    nginx never change; the report's numbers are what the test saw."""
    policy = stack.policy()
    for pool in ("web", "worker"):  # one of each, started and added the way an operator would
        done = subprocess.run(
            [str(Path(sys.executable).with_name("senex-scale")), "scale", pool, "1",
             "--policy", str(policy), "--state", stack.state],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    wait_until(lambda: stack.upstream() == {1} and stack.nginx_settled(), 30, "web-1 serving")
    began = time.time()
    with _watch(stack) as changes:
        proc = stack.run("--shadow", "--no-web")
        wait_until(
            lambda: _shadow_count(stack, "web") == 1, 30, "first shadow tick\n" + stack.log_tail()
        )
        loaded = time.time()
        stack.gauge.value = 95
        stack.redis.client().lpush("trading", *[f"task-{i}" for i in range(200)])
        wait_until(
            lambda: _shadow_count(stack, "web") == 4 and _shadow_count(stack, "worker") == 4,
            60,
            "the shadow at max\n" + stack.log_tail(),
        )
        unloaded = time.time()
        stack.gauge.value = 5
        stack.redis.client().delete("trading")
        wait_until(
            lambda: _shadow_count(stack, "web") == 1 and _shadow_count(stack, "worker") == 1,
            60,
            "the shadow back at 1\n" + stack.log_tail(),
        )
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert changes == [], changes[:5]
    assert stack.running("web") == {1}
    assert stack.running("worker") == {1}

    # the would-be actions are in the audit log as "shadow", with reasons; nothing else is
    decisions = [d for d in stack.cli("history", "--limit", "500")["decisions"] if d["at"] >= began]
    assert {d["outcome"] for d in decisions} == {"shadow"}, decisions[:3]
    web = sorted((d for d in decisions if d["pool"] == "web"), key=lambda d: d["at"])
    assert [(d["current"], d["desired"]) for d in web] == [
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 3),
        (3, 2),
        (2, 1),
    ]
    assert all(d["reasons"] for d in web)
    store = open_store(stack.state)
    try:
        statuses = store.statuses()
    finally:
        store.close()
    assert [s["role"] for s in statuses.values()] == ["shadow"], statuses
    assert not any(e.get("event") in ("scaling", "step", "leading") for e in stack.events(proc)), (
        "the shadow acted or led"
    )

    # the report against the test's own view
    html = tmp_path / "shadow.html"
    report = stack.cli("shadow", "report", "--since", "1h", "--html", str(html))
    pools = {p["pool"]: p for p in report["pools"]}
    rows = [r for r in _shadow_rows(stack) if r[1] == "web"]
    span = (rows[-1][0] - rows[0][0]) / 60 + 1 / 60  # the last tick counts one interval
    w = pools["web"]
    assert w["minutes"] == pytest.approx(span, rel=0.02)
    assert w["real"]["instance_minutes"] == pytest.approx(span, rel=0.02)  # web-1 throughout
    assert w["real"]["actions"] == 0
    assert w["shadow"]["actions"] == len(web) == 6
    # shadow instance-minutes: the shadow's count integrated over the decisions' times
    count, last, expected = 1, rows[0][0], 0.0
    for d in web:
        expected += count * (d["at"] - last)
        count, last = d["desired"], d["at"]
    expected = (expected + count * (rows[-1][0] + 1 - last)) / 60
    assert w["shadow"]["instance_minutes"] == pytest.approx(expected, rel=0.03)
    # short: web-load over 70 from the load until it fell again (one stretch), for the real
    # pool all along; the shadow (a pool-total value: short while it had no more instances)
    # only until its first would-be scale-out
    assert w["real"]["short_times"] == 1
    assert w["real"]["short_minutes"] == pytest.approx((unloaded - loaded) / 60, abs=0.1)
    assert w["shadow"]["short_times"] == 1
    first_out = web[0]["at"]
    assert w["shadow"]["short_minutes"] == pytest.approx((first_out - loaded) / 60, abs=0.05)
    assert pools["worker"]["shadow"]["actions"] == 6
    assert pools["all"]["shadow"]["actions"] == 12
    page = html.read_text()
    assert page.count("<svg") == 2
    assert "Shadow against real" in page


def test_shadow_never_blocks_a_real_controller(stack: Any) -> None:
    """A shadow on the same state takes no lock: the real controller started after it leads
    and brings the pools to their minimum; the shadow records the real counts it sees."""
    shadow = stack.run("--shadow", "--no-web")
    wait_until(lambda: _shadow_count(stack, "web") is not None, 30, "first shadow tick")
    real = stack.run("--no-web")
    wait_until(
        lambda: stack.running("web") == {1} and stack.upstream() == {1},
        40,
        "the real controller leads and acts\n" + stack.log_tail(),
    )
    wait_until(
        lambda: [r[2] for r in _shadow_rows(stack) if r[1] == "web"][-1] == 1,
        20,
        "the shadow sees web-1",
    )
    assert any(e.get("event") == "leading" for e in stack.events(real))
    assert not any(e.get("event") == "leading" for e in stack.events(shadow))
    report = stack.cli("shadow", "report", "--since", "1h")
    web = next(p for p in report["pools"] if p["pool"] == "web")
    assert web["real"]["actions"] >= 1  # 0 -> 1, as the shadow observed it
    assert web["shadow"]["actions"] >= 1  # the shadow too would have started one
