"""Shadow mode on the public in-memory runtime, balancer and source, a fake clock and a real
SQLite store: it never touches the runtime or the balancer, rescales per-instance load to
its own count, records what it would do, and ``shadow report`` adds it up."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from senex_scale.controller.leader import NoLeader
from senex_scale.controller.loop import ControllerLoop
from senex_scale.controller.shadow_report import compare
from senex_scale.policy import parse_policy
from senex_scale.store import Store, open_store
from senex_scale.testing import FakeClock, MemorySource, RecordingBalancer, RecordingRuntime

POLICY = """
[controller]
interval = "15s"

[sources.mem]
type = "prometheus"
url = "http://127.0.0.1:1"

[pools.web]
min = 1
max = 6
port = "8000 + n"
warmup = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"

[[rules]]
name = "cpu"
pool = "web"
metric = { source = "mem", query = "cpu", signal = "cpu" }
scale_out = { above = 70, for = "30s" }
scale_in = { below = 30, for = "60s" }
"""


def _shadow(
    tmp_path: Path, source: MemorySource
) -> tuple[ControllerLoop, Store, RecordingRuntime, RecordingBalancer, FakeClock]:
    clock = FakeClock()
    runtime = RecordingRuntime(pool="web", size=6, running={1, 2})
    lb = RecordingBalancer()
    for n in runtime.running:
        lb.add(n, f"127.0.0.1:{8000 + n}")
    lb.calls.clear()
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    loop = ControllerLoop(
        parse_policy(POLICY),
        store,
        NoLeader(),
        clock=clock,
        sleep=clock.sleep,
        log=structlog.get_logger("test"),
        build_source=lambda name, spec: source,
        build_pool=lambda name, spec: (runtime, lb),
        controller_id="shadow-test",
        shadow=True,
    )
    return loop, store, runtime, lb, clock


def test_a_shadow_follows_its_own_count_and_touches_nothing(tmp_path: Path) -> None:
    """CPU 90 on 2 instances: the shadow goes to 3 (2 x 90 / 3 = 60, under the line) and
    stays; the runtime and the balancer see no call."""
    source = MemorySource("mem", values={"cpu": {"1": 90.0, "2": 90.0}})
    loop, store, runtime, lb, clock = _shadow(tmp_path, source)
    runtime.calls.clear()
    for _ in range(12):
        loop.tick()
        clock.advance(15)
    rows = store.shadow_ticks(0.0)
    assert [r[3] for r in rows][:4] == [2, 2, 3, 3]  # out once the 30 s window is full
    assert {r[3] for r in rows[2:]} == {3}
    assert {r[2] for r in rows} == {2}  # the real pool never changed
    assert [r[4] for r in rows][:3] == [True, True, True]
    assert [r[5] for r in rows][:3] == [True, True, False]  # 60 on 3 is not short
    assert runtime.calls == []
    assert lb.calls == []
    shadows = store.history(outcome="shadow")
    assert [(d.current, d.desired) for d in shadows] == [(2, 3)]
    assert store.get("memory") is None  # the leader's memory is not the shadow's
    assert store.get("status") is None
    loop.collector.close()
    store.close()


def test_a_pool_total_is_not_rescaled(tmp_path: Path) -> None:
    """Without a per-instance signal the value reads the same at any count (a queue)."""
    from senex_scale.controller.shadow import rescale
    from senex_scale.core.state import Sample

    policy = parse_policy(POLICY.replace(', signal = "cpu"', ', signal = "queue"'))
    got = rescale(policy, {"cpu": [Sample(0.0, 90.0)]}, {"web": 2 / 3})
    assert got["cpu"][0].value == 90.0
    policy = parse_policy(POLICY)
    got = rescale(policy, {"cpu": [Sample(0.0, 90.0)]}, {"web": 2 / 3})
    assert got["cpu"][0].value == pytest.approx(60.0)


def test_the_report_adds_up_minutes_short_spells_and_actions() -> None:
    """Four 1-minute ticks: counts times minutes, a run of short ticks counted once, the
    real count's changes against the shadow's would-be actions."""
    rows = [
        (0.0, "web", 2, 2, True, True, "", ""),
        (60.0, "web", 2, 3, True, False, "out", "cpu > 70"),
        (120.0, "web", 3, 3, True, False, "", ""),
        (180.0, "web", 3, 3, False, False, "", ""),
    ]
    report = compare(rows, since=0.0, until=240.0, interval=60.0)
    (web,) = report.pools
    assert web.minutes == 4.0
    assert web.real.instance_minutes == 2 + 2 + 3 + 3
    assert web.shadow.instance_minutes == 2 + 3 + 3 + 3
    assert (web.real.short_times, web.real.short_minutes) == (1, 3.0)
    assert (web.shadow.short_times, web.shadow.short_minutes) == (1, 1.0)
    assert (web.real.actions, web.shadow.actions) == (1, 1)


def test_a_tick_without_a_real_count_and_a_long_silence_add_nothing() -> None:
    """A pool that could not be listed is left out; a gap longer than three intervals (the
    shadow was down) counts three intervals at most."""
    rows = [
        (0.0, "web", 1, 1, False, False, "", ""),
        (60.0, "web", None, 1, False, False, "", ""),
        (120.0, "web", 1, 1, False, False, "", ""),
        (3600.0, "web", 1, 1, False, False, "", ""),
    ]
    (web,) = compare(rows, since=0.0, until=3660.0, interval=60.0).pools
    assert web.unlisted_ticks == 1
    assert web.minutes == 1 + 3 + 1
