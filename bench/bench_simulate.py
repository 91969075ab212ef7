"""Simulator speed: a 30-day trace at 15-second resolution, the default policy and all baselines.

Prints, per controller, wall time, ticks per second, the ratio of simulated time to wall time,
and the cost relative to a null controller measured in the same run (the engine loop with a
controller that never acts), so decision cost and engine overhead can be told apart. Then the
whole `simulate` as the CLI runs it (each pool of the policy and of the HPA, and each other
baseline, as a task in parallel processes) against the sum of the single-process runs. Aim
(issues 3 and 16): the whole run under 10 s on the 2-core machine. Timings on a shared machine
are noisy: compare the ratios within one run.

Run: .venv/bin/python bench/bench_simulate.py [--days 30] [--step 15]
"""

from __future__ import annotations

import argparse
import time

from senex_scale.policy import load_default
from senex_scale.simulate.baselines import BASELINES
from senex_scale.simulate.engine import PoolView, run
from senex_scale.simulate.generate import generate
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.runner import POLICY, _build, simulate


class NullController:
    """Acts on every tick and never changes anything: the engine's own cost."""

    name = "null"
    period: float | None = None

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def initial(self, pool: str, at: float) -> int:
        return self.counts[pool]

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--step", type=float, default=15.0)
    args = parser.parse_args()

    started = time.perf_counter()
    trace = generate("trading-day", days=args.days, step=args.step)
    policy = load_default()
    grid = trace.resample(policy.controller.interval)
    model = SimModel()
    made = time.perf_counter() - started
    ticks = len(grid.times)
    span = grid.end - grid.start + grid.step
    print(f"trace: {args.days} days at {args.step:g} s = {ticks} ticks (made in {made:.2f} s)")

    t0 = time.perf_counter()
    run(NullController({p: v.min for p, v in policy.pools.items()}), grid, policy, model)
    null = time.perf_counter() - t0
    times: dict[str, float] = {}
    for name in (POLICY, *BASELINES):
        controller, immediate = _build(name, policy, "America/New_York")
        t0 = time.perf_counter()
        run(controller, grid, policy, model, immediate_stop=immediate)
        times[name] = time.perf_counter() - t0
    serial = sum(times.values())
    print(f"{'controller':<12} {'seconds':>8} {'ticks/s':>10} {'x real time':>12} {'x null':>8}")
    print(f"{'null':<12} {null:8.2f} {ticks / null:10.0f} {span / null:12.0f} {1.0:8.2f}")
    for name, seconds in times.items():
        print(
            f"{name:<12} {seconds:8.2f} {ticks / seconds:10.0f} {span / seconds:12.0f} "
            f"{seconds / null:8.2f}"
        )
    t0, cpu0 = time.perf_counter(), time.process_time()
    simulate(trace, policy, model, BASELINES)
    whole = time.perf_counter() - t0
    main_cpu = time.process_time() - cpu0
    print(f"one process, all five: {serial:.2f} s ({span / serial:.0f}x real time)")
    print(
        f"simulate() as the CLI runs it: {whole:.2f} s ({span / whole:.0f}x real time, "
        f"{serial / whole:.2f}x faster than one process); aim: under 10 s"
    )
    print(f"  CPU of the coordinating process meanwhile: {main_cpu:.2f} s (it only waits)")


if __name__ == "__main__":
    main()
