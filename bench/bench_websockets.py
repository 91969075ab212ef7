"""Long-lived WebSockets through scaling, before and after issue 22, as ratios against the
"before" deployments measured in the same run.

``--clients`` (40) clients each hold a WebSocket streaming a message every 200 ms from Daphne
instances while ``senex-scale run`` scales the pool 2 -> 4 -> 2 -> 3 -> 1, ``--hold`` (60) s
apart, then the empty probe (rebalancing off, 1 -> 3 -> 1: two instances that hold nothing
are drained). Everything is ``senex_scale.lab.wsfleet``; the variants:

    nginx           before: the nginx balancer (upstream rewritten and reloaded on every
                    change, round robin, worker_shutdown_timeout --nginx-shutdown), no
                    [pools.web.websockets]
    haproxy-rr      before: HAProxy round robin through its runtime API, no
                    [pools.web.websockets] (no drain closes, no rebalancing)
    haproxy         after: HAProxy leastconn + [pools.web.websockets]
    nginx-haproxy   after: nginx with a static upstream to that HAProxy (no nginx reload)
    nginx-lc        after, reloading nginx kept: balance = "least_conn" +
                    [pools.web.websockets] (what is left when nginx still reloads)

Printed per variant: closes without a close frame, clients cut on instances that were not
drained, rebalancing closes, the worst spread 2 intervals after a scale-out and the share on
the new instances after 2 -> 4, message gaps, reconnect times, the scale-in time of empty
instances and of the others; then each "after" variant's ratio to each "before" one.

Run: .venv/bin/python bench/bench_websockets.py [--hold 60] [--clients 40]
     [--variants nginx,haproxy-rr,haproxy,nginx-haproxy,nginx-lc] [--json] [--timeline]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from senex_scale.lab.wsfleet import Fleet, Report, Tuning

BEFORE = ("nginx", "haproxy-rr")
AFTER = ("haproxy", "nginx-haproxy", "nginx-lc")


def variants(args: argparse.Namespace) -> dict[str, tuple[str, Tuning]]:
    """Variant name -> (front, tuning)."""
    common: dict[str, Any] = {
        "interval": args.interval,
        "drain_timeout": args.drain_timeout,
        "drain_close": args.drain_close,
        "rebalance_share": args.rebalance_share,
        "rebalance_tolerance": args.rebalance_tolerance,
        "rebalance_min": args.rebalance_min,
        "nginx_shutdown": args.nginx_shutdown,
    }
    return {
        "nginx": ("nginx", Tuning(**common, websockets=False)),
        "haproxy-rr": ("haproxy-rr", Tuning(**common, websockets=False)),
        "haproxy": ("haproxy", Tuning(**common)),
        "nginx-haproxy": ("nginx-haproxy", Tuning(**common)),
        "nginx-lc": (
            "nginx",
            Tuning(**common, websockets=True, extra_balancer={"balance": "least_conn"}),
        ),
    }


def new_share(report: Report) -> float | None:
    """Share of the clients on the new instances after the first 2 -> 4 (an even share: 50 %)."""
    first = next((s for s in report.spread if not s.probe and s.step.endswith("-> 4")), None)
    return first.new_share if first else None


def scale_in_max(report: Report, *, empty: bool) -> float | None:
    found = [i.seconds for i in report.scale_ins if i.empty is empty and i.seconds is not None]
    return max(found) if found else None


ROWS: tuple[tuple[str, Callable[[Report], float | int | None], str], ...] = (
    ("closes without a close frame", lambda r: r.no_close_frame, "d"),
    ("clients cut, instance not drained", lambda r: r.cut_undrained, "d"),
    ("closes on drained instances", lambda r: r.drained_closes, "d"),
    ("rebalancing closes (1012)", lambda r: r.rebalance_closes, "d"),
    ("failed reconnects / stalls", lambda r: r.failed_opens + r.stalls, "d"),
    ("worst spread after scale-out", lambda r: r.spread_worst, "%"),
    ("on new instances after 2 -> 4", new_share, "%"),
    ("message gap p50 (s)", lambda r: r.gap_p50, "f"),
    ("message gap p99 (s)", lambda r: r.gap_p99, "f"),
    ("message gap max (s)", lambda r: r.gap_max, "f"),
    ("reconnect p50 (s)", lambda r: r.reconnect_p50, "f"),
    ("reconnect max (s)", lambda r: r.reconnect_max, "f"),
    ("empty scale-in, drain->stop (s)", lambda r: scale_in_max(r, empty=True), "f"),
    ("other scale-in, drain->stop (s)", lambda r: scale_in_max(r, empty=False), "f"),
)


def show(value: float | int | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "d":
        return str(int(value))
    if kind == "%":
        return f"{value:.0%}"
    return f"{value:.2f}"


def ratio(after: float | int | None, before: float | int | None) -> str:
    if after is None or before is None or before == 0:
        return "-"
    return f"{after / before:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=60.0, help="seconds between steps")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--variants", default=",".join(BEFORE + AFTER))
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--drain-close", type=float, default=5.0)
    parser.add_argument("--rebalance-share", type=float, default=Tuning.rebalance_share)
    parser.add_argument("--rebalance-tolerance", type=float, default=Tuning.rebalance_tolerance)
    parser.add_argument("--rebalance-min", type=int, default=Tuning.rebalance_min)
    parser.add_argument("--nginx-shutdown", default="20s", help="worker_shutdown_timeout")
    parser.add_argument("--json", action="store_true", help="also print every report as JSON")
    parser.add_argument("--timeline", action="store_true", help="print the controller's log")
    args = parser.parse_args()
    table = variants(args)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in table]
    if unknown:
        parser.error(f"unknown variants {unknown}: {', '.join(table)}")

    reports: dict[str, Report] = {}
    with tempfile.TemporaryDirectory(prefix="senex-bench-ws-") as tmp:
        for name in chosen:
            front, tuning = table[name]
            print(f"== {name} ({front}) {time.strftime('%H:%M:%S')}", flush=True)
            with Fleet(Path(tmp) / name, front, clients=args.clients, tuning=tuning) as fleet:
                reports[name] = fleet.run(hold=args.hold)
            print(reports[name].text(), flush=True)
            if args.timeline:
                print("\n".join(f"    {line}" for line in reports[name].timeline))

    width = max(11, *(len(n) + 1 for n in chosen))
    print(f"\n{'measure':36}" + "".join(f"{n:>{width}}" for n in chosen))
    for label, get, kind in ROWS:
        cells = "".join(f"{show(get(reports[n]), kind):>{width}}" for n in chosen)
        print(f"{label:36}{cells}")

    befores = [n for n in chosen if n in BEFORE]
    afters = [n for n in chosen if n not in BEFORE]
    if befores and afters:
        print("\nratios after / before (- : the baseline is 0 or was not measured)")
        header = "".join(
            f"{a + ' / ' + b:>{max(len(a + b) + 4, 12)}}" for a in afters for b in befores
        )
        print(f"{'measure':36}{header}")
        for label, get, _kind in ROWS:
            cells = "".join(
                f"{ratio(get(reports[a]), get(reports[b])):>{max(len(a + b) + 4, 12)}}"
                for a in afters
                for b in befores
            )
            print(f"{label:36}{cells}")
    if args.json:
        doc = {}
        for name, report in reports.items():
            data = report.to_json()
            if not args.timeline:
                data.pop("timeline")
            doc[name] = data
        print("\n" + json.dumps(doc))


if __name__ == "__main__":
    main()
