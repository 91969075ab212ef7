"""The same load against a static deployment (every pool at the seed's minimum) and against
the controller: p99 latency and instance-minutes, printed as ratios (controller / static).

    .venv/bin/python bench/bench_e2e.py [--profile e2e|day]

Both runs go through ``senex_scale.demo.run_demo`` on this machine, one after the other, so
the ratio compares like with like; absolute numbers move with the machine's load.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    from senex_scale.demo.run import run_demo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="e2e")
    args = parser.parse_args()
    runs = {}
    for name, static in (("static", True), ("controller", False)):
        print(f"== {name}", flush=True)
        runs[name] = run_demo(args.profile, static=static, say=lambda line: None)
    rows = (
        ("latency p50 (ms)", "latency_p50_ms"),
        ("latency p99 (ms)", "latency_p99_ms"),
        ("failed requests", "failed_requests"),
        ("WebSockets closed early", "websockets_closed_early"),
    )
    print(f"\n{'measure':34} {'static':>10} {'controller':>11} {'ratio':>7}")
    for label, key in rows:
        a, b = runs["static"][key], runs["controller"][key]
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"{label:34} {a!s:>10} {b!s:>11} {ratio:>7}")
    for phase, numbers in runs["controller"]["latency_by_phase"].items():
        a = runs["static"]["latency_by_phase"][phase]["p99_ms"]
        b = numbers["p99_ms"]
        ratio = f"{b / a:.2f}" if a and b else "-"
        print(f"{'latency p99, ' + phase + ' (ms)':34} {a!s:>10} {b!s:>11} {ratio:>7}")
    for pool in sorted(runs["controller"]["instance_minutes"]):
        a = runs["static"]["instance_minutes"].get(pool, 0.0)
        b = runs["controller"]["instance_minutes"][pool]
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"{'instance-minutes ' + pool:34} {a:>10.2f} {b:>11.2f} {ratio:>7}")
    print("\n" + json.dumps({k: {"p99": v["latency_p99_ms"]} for k, v in runs.items()}))


if __name__ == "__main__":
    main()
