"""``senex-scale demo``: the whole strategy live on this machine (registered in ``cli``)."""

from __future__ import annotations

import enum
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class Runtime(enum.StrEnum):
    """Where the demo's pools run."""

    supervisor = "supervisor"
    podman = "podman"


NUMBERS = (
    ("failed_requests", "failed HTTP requests"),
    ("websockets_closed_early", "WebSockets closed before their drain"),
    ("websockets_closed_by_drain", "WebSockets closed by a drain (reconnected)"),
    ("websockets_rebalanced", "WebSockets moved by rebalancing (reconnected)"),
    ("tasks_queued", "Celery tasks queued"),
    ("tasks_lost", "Celery tasks lost"),
    ("tasks_duplicated", "Celery tasks done twice"),
    ("time_to_capacity_median_s", "time to capacity, median (s)"),
    ("latency_p50_ms", "latency p50 (ms)"),
    ("latency_p99_ms", "latency p99 (ms)"),
    ("latency_during_scaling_p99_ms", "latency p99 during scale events (ms)"),
    ("instance_minutes", "instance-minutes per pool"),
)


def demo_command(
    profile: Annotated[
        str, typer.Option("--profile", help="day (six minutes) or e2e (one and a half).")
    ] = "day",
    speed: Annotated[
        float, typer.Option("--speed", min=1.0, help="How much faster than real time.")
    ] = 60.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the numbers to this file.")
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Tear down as soon as the numbers are in.")
    ] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the demo's directory (logs, state, policy).")
    ] = False,
    runtime: Annotated[
        Runtime,
        typer.Option(
            "--runtime",
            help="supervisor: every process on this machine's loopback. podman: the rendered "
            "deployment (Quadlet units, rootless Podman) in the host lab; needs a checkout "
            "and root.",
        ),
    ] = Runtime.supervisor,
) -> None:
    """The reference app scaling itself: its whole stack on loopback, the controller on the
    default policy at demo speed, and a trading day of HTTP, WebSocket and Celery load.

    Prints the status page's URL to watch it live, then the numbers; Ctrl-C tears
    everything down at any time. With ``--runtime podman`` the same day runs on the files
    ``senex-scale render`` writes, installed in the host lab (docs/demo.md).
    """
    from senex_scale.demo.run import Demo, run_demo

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    started = time.monotonic()

    def say(line: str) -> None:
        err.print(f"[{time.monotonic() - started:6.1f}s] {line}", markup=False)

    def hold(demo: Demo) -> None:
        if no_wait or not sys.stdin.isatty():
            return
        err.print(f"\nThe status page stays up at {demo.stack.status_url} — Ctrl-C to finish.")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            err.print("tearing down")

    try:
        if runtime is Runtime.podman:
            from senex_scale.demo.podman import CHANGES, run_podman_demo

            say("the policy differs from the supervisord demo's: " + "; ".join(CHANGES))
            result = run_podman_demo(profile, speed=speed, say=say, keep=keep)
        else:
            result = run_demo(profile, speed=speed, say=say, keep=keep, hold=hold)
    except KeyboardInterrupt:
        err.print("interrupted: everything was stopped")
        raise typer.Exit(130) from None
    _print(result)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2))
    bad = result["failed_requests"] + result["tasks_lost"] + result["websockets_closed_early"]
    if bad:
        raise typer.Exit(1)


def _print(result: dict[str, Any]) -> None:
    table = Table(title="The demo's numbers", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, label in NUMBERS:
        value = result.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:g}" for k, v in sorted(value.items()))
        table.add_row(label, "-" if value is None else str(value))
    Console(highlight=False, width=100).print(table)
    events = [
        f"{p} {d} {a}->{b}" for p, d, a, b, outcome in result["scale_events"] if outcome == "done"
    ]
    print("scale events: " + "; ".join(events))
