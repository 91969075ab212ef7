"""``senex-scale trace from-prometheus`` and ``trace from-store`` (registered in ``cli.py``).

Exit 0: the trace was written; 2: bad input (a flag, the policy, a query Prometheus refuses
as malformed); 1: Prometheus or the store could not answer, or there was no data. Nothing is
written unless the whole trace was read (a temporary file renamed into place).
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from senex_scale.errors import InputError

if TYPE_CHECKING:
    from senex_scale.simulate.capture import Capture

_POLICY_HELP = 'Policy file (TOML); "default" is the built-in seed policy.'


def _duration(flag: str, text: str, *, positive: bool = True) -> float:
    from senex_scale.policy.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{flag}: {exc}") from None
    if positive and seconds <= 0:
        raise InputError(f'{flag}: "{text}" must be longer than 0s')
    return seconds


def _timezone(policy: object, given: str | None) -> str | None:
    """``--timezone``, else the zone of the policy's first schedule, else None (UTC)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if given is not None:
        try:
            ZoneInfo(given)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f'--timezone: "{given}" is not an IANA time zone') from None
        return given
    schedules = getattr(policy, "schedules", ())
    return schedules[0].timezone if schedules else None


def _command(argv: list[str]) -> str:
    """The command line for the file's first comment, with any URL password masked."""
    from senex_scale.simulate.capture import redact

    return "senex-scale " + " ".join(shlex.quote(redact(a)) for a in argv)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def from_prometheus_command(
    out: Annotated[str, typer.Option("--out", "-o", help="CSV file to write ('-': stdout).")],
    url: Annotated[
        str | None,
        typer.Option(help="Prometheus base URL; default: the policy's Prometheus source."),
    ] = None,
    since: Annotated[str, typer.Option(help="How far back (e.g. 7d, 36h).")] = "7d",
    step: Annotated[str, typer.Option(help="Seconds between rows (e.g. 15s, 1m).")] = "15s",
    policy: Annotated[str, typer.Option("--policy", "-p", help=_POLICY_HELP)] = "default",
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            help="COLUMN=PROMQL replacing a derived query (repeatable); COLUMN= leaves it out.",
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="IANA zone the file is written in; default: the policy's schedules'."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each range query may take.", min=1.0)
    ] = 30.0,
) -> None:
    """Your own traffic from Prometheus as a trace (docs/traces.md).

    One range query per demand column (http_rps, ws_connections, tasks_<queue>), derived from
    the policy's rules unless --query gives it, chunked to Prometheus' 11,000 points per
    query. Gaps hold the value before them and are listed in the file's comments.
    """
    from senex_scale.policy import load_policy
    from senex_scale.simulate.capture import (
        MAX_ROWS,
        DemandQuery,
        RangeReader,
        check_out,
        default_queries,
        from_prometheus,
        parse_overrides,
        write_atomic,
    )

    if out != "-":
        check_out(out)
    span = _duration("--since", since)
    every = _duration("--step", step)
    if span / every > MAX_ROWS:
        raise InputError(
            f"--since/--step: {span / every:.3g} rows, more than {MAX_ROWS:,} (a longer step?)"
        )
    overrides = parse_overrides(query or [])
    loaded = load_policy(policy)
    zone = _timezone(loaded, timezone)
    derived, notes = default_queries(loaded, every)
    queries = {q.column: q for q in derived}
    for column, promql in overrides.items():
        if promql:
            queries[column] = DemandQuery(column, promql, "--query")
        else:
            queries.pop(column, None)
    if not queries:
        detail = "; ".join(notes) or "the policy has no pools"
        raise InputError(f"--query: no demand query to run ({detail})")
    options: dict[str, object] = {}
    prometheus = [s for s in loaded.sources.values() if s.type == "prometheus"]
    if url is None:
        if not prometheus:
            raise InputError("--url: not given, and the policy has no Prometheus source")
        options = dict(prometheus[0].options)
        url = str(options.get("url", ""))
    elif prometheus and str(prometheus[0].options.get("url", "")).rstrip("/") == url.rstrip("/"):
        options = dict(prometheus[0].options)  # its credentials only for its own URL
    reader = RangeReader(url, options, timeout=timeout)
    try:
        end = time.time() // every * every
        start = end - (span // every) * every
        capture = from_prometheus(
            reader,
            list(queries.values()),
            start=start,
            end=end,
            step=every,
            timezone=zone,
            name=out.rsplit("/", 1)[-1].removesuffix(".csv") if out != "-" else "prometheus",
            progress=_say,
        )
    finally:
        reader.close()
    for note in notes:
        if not any(q in note for q in queries):
            _say(f"note: {note}")
    write_atomic(capture, out, command=_command(sys.argv[1:]))
    _summary(capture, out)


def _summary(capture: Capture, out: str) -> None:
    from senex_scale.simulate.capture import summarise_gaps

    trace = capture.trace
    if capture.dropped:
        _say(f"no data, left out: {', '.join(capture.dropped)}")
    gaps = summarise_gaps(capture.gaps) if capture.gaps else "no gaps"
    where = "stdout" if out == "-" else out
    _say(
        f"wrote {len(trace)} rows ({', '.join(trace.columns)}) to {where}; {gaps} "
        "(held at the value before)"
    )


def from_store_command(
    out: Annotated[str, typer.Option("--out", "-o", help="CSV file to write ('-': stdout).")],
    state: Annotated[
        str | None,
        typer.Option(
            help="State store URL (sqlite:PATH or postgresql://...); default: the policy's."
        ),
    ] = None,
    since: Annotated[str, typer.Option(help="How far back (e.g. 7d, 36h).")] = "7d",
    policy: Annotated[str, typer.Option("--policy", "-p", help=_POLICY_HELP)] = "default",
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="COLUMN=RULE: the rule's samples (summed per time) as that column; "
            "COLUMN= leaves it out (repeatable).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Capacity model TOML that turns CPU and busy % into demand."),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="IANA zone the file is written in; default: the policy's schedules'."),
    ] = None,
) -> None:
    """The controller's own recorded samples as a trace (docs/traces.md).

    Web pools: the CPU rule's per-instance samples become http_rps through the capacity model,
    the connections rule's become ws_connections; worker pools: the busy rule's become
    tasks per minute of the pool's first queue. --column takes any rule's samples as demand.
    """
    from pathlib import Path

    from senex_scale.policy import load_policy
    from senex_scale.simulate.capture import (
        check_out,
        from_store,
        parse_overrides,
        redact,
        store_columns,
        write_atomic,
    )
    from senex_scale.simulate.model import SimModel, load_model
    from senex_scale.store import open_store

    if out != "-":
        check_out(out)
    span = _duration("--since", since)
    overrides = parse_overrides(column or [], "--column", "RULE")
    loaded = load_policy(policy)
    zone = _timezone(loaded, timezone)
    sim_model = load_model(Path(model)) if model is not None else SimModel()
    columns = store_columns(loaded, overrides)
    if not columns:
        raise InputError(
            "--column: the policy has no rule whose samples make a demand column "
            "(cpu or connections on a web pool, busy on a worker pool); name one with "
            "--column COLUMN=RULE"
        )
    url = state or loaded.controller.state
    store = open_store(url)
    try:
        until = time.time()
        capture = from_store(
            store.samples,
            loaded,
            columns,
            since=until - span,
            until=until,
            model=sim_model,
            timezone=zone,
            name=out.rsplit("/", 1)[-1].removesuffix(".csv") if out != "-" else "store",
            shown=redact(url),
        )
    finally:
        store.close()
    write_atomic(capture, out, command=_command(sys.argv[1:]))
    _summary(capture, out)
