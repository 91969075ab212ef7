"""The controller's tick keeps its interval while long actions run (issue 14, goal: p99 of the
deviation under 1 s during a 120 s drain and a runbook).

One ``ControllerLoop`` on the real clock with a real SQLite store, in-memory runtime and
balancer (``senex_scale.testing``) and a metric source the bench sets. Two phases, in the same
run:

- quiet: the load sits between the thresholds; nothing acts (the baseline);
- busy: pool ``web`` scales in 2 -> 1 while its members keep connections open, so the drain
  takes the whole ``drain_timeout``; pool ``worker`` scales out at the same time, and a runbook
  rule runs ``sleep``.

It prints, per phase, the deviation of each tick's start from the one before plus the
interval (p50, p99, max, seconds), the busy/quiet ratio, and whether the other pool's
scale-out finished while the drain was still running (it could not, before issue 14: one
thread did everything).

Run: .venv/bin/python bench/bench_tick.py [--drain 120] [--quiet 20]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from pathlib import Path

import structlog

from senex_scale.controller.leader import NoLeader
from senex_scale.controller.loop import ControllerLoop
from senex_scale.policy import parse_policy
from senex_scale.store import open_store
from senex_scale.testing import MemorySource, RecordingBalancer, RecordingRuntime

POLICY = """
[controller]
interval = "1s"
backoff = "60s"

[sources.mem]
type = "prometheus"
url = "http://127.0.0.1:1"

[pools.web]
min = 1
max = 4
port = "8000 + n"
start_timeout = "30s"
drain_timeout = "{drain}s"
warmup = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"

[pools.worker]
kind = "worker"
min = 1
max = 4
warmup = "0s"

[[rules]]
name = "cpu"
pool = "web"
metric = {{ source = "mem", query = "cpu" }}
scale_out = {{ above = 70, for = "2s" }}
scale_in = {{ below = 30, for = "2s" }}

[[rules]]
name = "queue"
pool = "worker"
metric = {{ source = "mem", query = "queue" }}
scale_out = {{ above = 50, for = "2s" }}
scale_in = {{ below = 1, for = "600s" }}

[[rules]]
name = "db-cpu"
metric = {{ source = "mem", query = "db" }}
when = {{ above = 80, for = "2s" }}
action = {{ type = "runbook", argv = ["sleep", "{runbook}"], timeout = "{timeout}s" }}
"""


def _stats(gaps: list[float], interval: float) -> tuple[float, float, float]:
    deviations = sorted(abs(g - interval) for g in gaps)
    p99 = deviations[min(len(deviations) - 1, int(0.99 * len(deviations)))]
    return statistics.median(deviations), p99, deviations[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain", type=float, default=120.0, help="drain_timeout (s)")
    parser.add_argument("--quiet", type=int, default=20, help="ticks of the quiet phase")
    args = parser.parse_args()
    drain = args.drain

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:{Path(tmp) / 'state.db'}")
        source = MemorySource("mem", values={"cpu": 50.0, "queue": 10.0, "db": 10.0})
        web = RecordingRuntime(pool="web", size=4, running={1, 2})
        lb = RecordingBalancer()
        for n in (1, 2):
            lb.add(n, f"127.0.0.1:{8000 + n}")
        lb.open = {1: 3, 2: 3}  # members never go idle: the drain takes drain_timeout
        workers = RecordingRuntime(pool="worker", size=4, running={1})
        policy = parse_policy(
            POLICY.format(drain=f"{drain:g}", runbook=f"{drain / 2:g}", timeout=f"{drain:g}")
        )
        loop = ControllerLoop(
            policy,
            store,
            NoLeader(),
            healthy=lambda address, path: True,
            log=structlog.wrap_logger(structlog.ReturnLogger()),
            build_source=lambda name, spec: source,
            build_pool=lambda name, spec: (web, lb) if name == "web" else (workers, None),
        )
        starts: list[float] = []
        tick = loop.tick

        def timed() -> object:
            starts.append(time.monotonic())
            return tick()

        loop.tick = timed  # type: ignore[method-assign]
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        while len(starts) < args.quiet:
            time.sleep(0.1)
        quiet_end = len(starts)
        print(f"quiet: {quiet_end} ticks; now: web 2 -> 1 (drain {drain:g}s), workers out, runbook")
        source.values.update({"cpu": 10.0, "queue": 200.0, "db": 95.0})
        busy_from = time.monotonic()
        worker_done_at = None
        while time.monotonic() - busy_from < drain + 5:
            if worker_done_at is None and len(workers.running) > 1:
                worker_done_at = time.monotonic() - busy_from
            time.sleep(0.1)
        drained_at = next((i for i, call in enumerate(web.calls) if call == ("stop", 2)), None)
        loop.stop()
        thread.join(timeout=drain + 30)
        store.close()

    interval = policy.controller.interval
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    quiet = gaps[: quiet_end - 1]
    busy = gaps[quiet_end - 1 :]
    q50, q99, qmax = _stats(quiet, interval)
    b50, b99, bmax = _stats(busy, interval)
    print(f"{'phase':<8}{'ticks':>7}{'p50 dev':>10}{'p99 dev':>10}{'max dev':>10}")
    print(f"{'quiet':<8}{len(quiet):>7}{q50:>10.3f}{q99:>10.3f}{qmax:>10.3f}")
    print(f"{'busy':<8}{len(busy):>7}{b50:>10.3f}{b99:>10.3f}{bmax:>10.3f}")
    print(f"busy/quiet p99: {b99 / max(q99, 1e-3):.1f}x")
    expected = (drain + 5) / interval
    print(f"ticks during the busy phase: {len(busy)} of ~{expected:.0f} expected")
    if worker_done_at is not None:
        print(f"worker scale-out done {worker_done_at:.1f}s into the {drain:g}s drain")
    print(f"web@2 stopped: {'yes' if drained_at is not None else 'no'}")
    print(f"goal p99 < 1 s during the drain: {'met' if b99 < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
