"""``senex-scale forecast --pool P``: the coming session's forecast of a pool's predictive rule.

It learns from the store exactly as the controller does (the rule's recorded demand,
``senex_scale.controller.forecasting.report``) and prints the forecast per 30-minute bucket
(``--bucket 15m`` for quarter hours): the mean and the peak demand in instances, and the floor
the rule holds (peak plus margin, rounded up), with the sessions it learned from, its recent
error and whether it would act.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from senex_scale.errors import InputError

out = Console(highlight=False, soft_wrap=True, markup=False)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def forecast_command(
    pool: Annotated[str, typer.Option("--pool", help="The pool (it needs a predictive rule).")],
    policy: Annotated[
        str,
        typer.Option("--policy", "-p", help='Policy file (TOML); "default" is the built-in one.'),
    ] = "default",
    state: Annotated[
        str | None,
        typer.Option("--state", help="State URL (default: the policy's controller.state)."),
    ] = None,
    bucket: Annotated[str, typer.Option("--bucket", help="Bucket length: 15m or 30m.")] = "30m",
    now: Annotated[
        str | None,
        typer.Option(help="Forecast as of this time (ISO 8601 or epoch); default: now."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Print the next session's forecast of POOL's predictive rule (learned from the store)."""
    from senex_scale.controller.forecasting import report
    from senex_scale.policy import load_policy
    from senex_scale.store import open_store

    if bucket not in ("15m", "30m"):
        raise InputError(f"--bucket: {bucket!r} is not 15m or 30m")
    at = time.time()
    if now is not None:
        from senex_scale.observe import parse_time

        try:
            at = parse_time(float(now) if now.replace(".", "", 1).isdigit() else now)
        except ValueError as exc:
            raise InputError(f"--now: {exc}") from None
    loaded = load_policy(policy)
    store = open_store(state or loaded.controller.state)
    try:
        doc = report(loaded, store, pool, at, bucket=900.0 if bucket == "15m" else 1800.0)
    finally:
        store.close()
    if json_out:
        print(json.dumps(doc.as_dict(), indent=2))
        return
    day = time.strftime("%Y-%m-%d", time.gmtime(doc.session_open))
    title = (
        f"{doc.rule} ({doc.mode}) on {doc.pool}: {doc.calendar} session {day} "
        f"{doc.local(doc.session_open)}-{doc.local(doc.session_close)} ({doc.timezone})"
    )
    out.print(title)
    table = Table()
    for column in ("from", "mean", "peak", "floor"):
        table.add_column(column, justify="left" if column == "from" else "right")
    for b in doc.buckets:
        table.add_row(
            doc.local(b.start), _num(b.mean), _num(b.peak), "-" if b.floor is None else str(b.floor)
        )
    wide = Console(highlight=False, width=max(out.width, 100), markup=False)
    wide.print(table)
    error = "not scored yet" if doc.mape is None else f"{doc.mape:.0%}"
    lines = [
        f"learned from {doc.sessions} sessions (acts from {doc.min_sessions}); "
        f"recent error (MAPE) {error}, max_error {doc.max_error:.0%}; margin {doc.margin:.0%}; "
        f"lead {doc.lead:g}s",
    ]
    out.print(lines[0])
    acts = Text(f"acts: {doc.acts}", style="green" if doc.acts == "yes" else "yellow")
    out.print(acts)
    if doc.sessions == 0:
        out.print(
            "no history yet: the controller records the rule's demand every tick; "
            "run it (forecast-only is fine) for a few sessions"
        )
