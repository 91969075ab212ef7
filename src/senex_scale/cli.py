"""The ``senex-scale`` command.

Exit codes: 0 success; 1 a failure while doing the work; 2 bad input (a policy, observation
or trace that does not validate, or a usage error). Errors print ``Error: message`` on stderr
without a traceback; ``--json`` output goes to stdout so scripts can parse it.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from senex_scale import __version__
from senex_scale.errors import InputError, SenexError

app = typer.Typer(
    name="senex-scale",
    help="Autoscaling for Django/Daphne + Celery + PostgreSQL + Redis on Podman/systemd hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
policy_app = typer.Typer(help="Work with policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

# soft_wrap: messages and paths are never re-wrapped at 80 columns when piped.
# markup=False: what is printed (reasons, errors, names) comes from the store, servers and
# files; "[/x]" must not crash a command nor "[link=...]" reach a terminal. Style with Text.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

PolicyOption = Annotated[
    str,
    typer.Option(
        "--policy",
        "-p",
        help='Policy file (TOML); "default" is the built-in seed policy.',
        show_default=True,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"senex-scale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Autoscaling for Django/Daphne + Celery + PostgreSQL + Redis on Podman/systemd hosts."""


# --------------------------------------------------------------------------- policy


@policy_app.command("default")
def policy_default() -> None:
    """Print the built-in default policy (the seed's strategy) as a commented TOML file."""
    from senex_scale.policy import default_policy_text

    sys.stdout.write(default_policy_text())


@app.command()
def validate(
    policy: Annotated[Path, typer.Argument(help="Policy file to check.")],
    json_out: JsonFlag = False,
) -> None:
    """Check a policy file; list every problem with its dotted path (exit 2 if any).

    The drivers' tables (``sources.*``, each pool's ``runtime`` and ``balancer``) are checked
    with the drivers' own settings models; nothing is connected to.
    """
    from senex_scale.balancers.base import balancer_problems
    from senex_scale.errors import PolicyError
    from senex_scale.policy import load_policy
    from senex_scale.settings import driver_problems

    try:
        loaded = load_policy(policy, checks=(driver_problems,))
        problems = [
            problem
            for name, pool in loaded.pools.items()
            for problem in balancer_problems(name, pool, loaded.hosts)
        ]
        if problems:
            raise PolicyError(str(policy), problems)
    except PolicyError as exc:
        if json_out:
            print(
                json.dumps(
                    {"valid": False, "file": str(policy), "problems": exc.problems}, indent=2
                )
            )
            raise typer.Exit(2) from None
        raise
    summary = {
        "valid": True,
        "file": str(policy),
        "pools": sorted(loaded.pools),
        "rules": [r.name for r in loaded.rules],
        "schedules": [s.name for s in loaded.schedules],
        "sources": sorted(loaded.sources),
    }
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    out.print(
        f"{policy}: valid ({len(loaded.pools)} pools, {len(loaded.rules)} rules, "
        f"{len(loaded.schedules)} schedules, {len(loaded.sources)} sources)"
    )


# --------------------------------------------------------------------------- plan


@app.command()
def plan(
    observe: Annotated[
        Path,
        typer.Option("--observe", "-o", help="Observation JSON (see README: observation format)."),
    ],
    policy: PolicyOption = "default",
    now: Annotated[
        str | None,
        typer.Option(help="Decide as of this time (ISO 8601 or epoch); default: the file's now."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Print the decisions the policy makes for an observed state, with their reasons."""
    from senex_scale.core import Decider
    from senex_scale.observe import format_time, load_observation, parse_time
    from senex_scale.policy import load_policy

    given: float | None = None
    if now is not None:  # the command line first: it is the quickest to fix
        try:
            given = parse_time(float(now) if now.replace(".", "", 1).isdigit() else now)
        except ValueError as exc:
            raise InputError(f"--now: {exc}") from None
    loaded = load_policy(policy)
    observation, file_now = load_observation(observe, loaded)
    if given is not None:
        at = given
    elif file_now is not None:
        at = file_now
    else:
        at = time.time()
    result = Decider(loaded).decide(observation, at)
    if json_out:
        doc: dict[str, Any] = {
            "now": format_time(at),
            "decisions": [d.as_dict() for d in result.decisions],
            "rules": [
                {
                    "rule": s.rule,
                    "pool": s.pool,
                    "value": s.value,
                    "vote": s.vote,
                    "held_seconds": s.held,
                    "reason": s.reason,
                }
                for s in result.rules
            ],
        }
        print(json.dumps(doc, indent=2))
        return
    table = Table(title=f"Plan at {format_time(at)}", show_lines=True)
    table.add_column("priority")
    table.add_column("pool / action")
    table.add_column("now", justify="right")
    table.add_column("desired", justify="right")
    table.add_column("reasons")
    for d in result.decisions:
        what = d.pool if d.kind == "scale" else f"{d.rule} ({d.action.type if d.action else ''})"
        arrow = {"out": "↑ ", "in": "↓ ", "none": ""}[d.direction] if d.kind == "scale" else ""
        table.add_row(
            d.priority.value,
            what or "",
            str(d.current) if d.kind == "scale" else "",
            f"{arrow}{d.desired}" if d.kind == "scale" else "run",
            "\n".join(d.reasons),
        )
    out.print(table)


def _print_table(table: RenderableType) -> None:
    """Print a table; a pipe or CI log gets it whole rather than at Rich's 80-column guess."""
    wide = (
        Console(highlight=False, width=max(out.width, 140), markup=False)
        if not out.is_terminal
        else out
    )
    wide.print(table)


# --------------------------------------------------------------------------- metrics


@app.command()
def metrics(
    policy: PolicyOption = "default",
    json_out: JsonFlag = False,
) -> None:
    """Read every metric the policy references, now: values per pool and instance, and errors.

    Exit 0 when every metric answered, 1 when any failed (the output says which and why).
    """
    from senex_scale.observe import format_time
    from senex_scale.policy import load_policy
    from senex_scale.sources.collect import Collector

    loaded = load_policy(policy)
    collector = Collector(loaded)
    now = time.time()
    try:
        readings = collector.collect(now)
    finally:
        collector.close()
    failed = [r for r in readings if r.error is not None]
    if json_out:
        doc = {
            "at": format_time(now),
            "metrics": [
                {
                    "rule": r.rule,
                    "source": r.source,
                    "pool": r.pool,
                    "query": r.query,
                    "signal": r.signal,
                    "ok": r.error is None,
                    "error": r.error,
                    "temporary": r.temporary,
                    "samples": [{"instance": s.instance, "value": s.value} for s in r.samples],
                }
                for r in readings
            ],
        }
        print(json.dumps(doc, indent=2))
    else:
        table = Table(title=f"Metrics at {format_time(now)}")
        for column in ("rule", "source", "pool", "instance", "value", "status"):
            table.add_column(column, justify="right" if column == "value" else "left")
        for r in readings:
            if r.error is not None:
                kind = "temporary" if r.temporary else "permanent"
                table.add_row(r.rule, r.source, r.pool or "", "", "", f"FAILED ({kind}): {r.error}")
                continue
            if not r.samples:
                table.add_row(r.rule, r.source, r.pool or "", "", "", "no samples")
            for s in r.samples:
                table.add_row(
                    r.rule, r.source, r.pool or "", s.instance or "(pool)", f"{s.value:g}", "ok"
                )
        _print_table(table)
        if failed:
            out.print(f"{len(failed)} of {len(readings)} metrics failed")
    if failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- scale


StateOption = Annotated[
    str | None,
    typer.Option(
        "--state",
        help="State store URL (sqlite:PATH or postgresql://...); default: the policy's.",
    ),
]


@app.command()
def scale(
    pool: Annotated[str, typer.Argument(help="Pool name from the policy.")],
    count: Annotated[int, typer.Argument(help="Instances wanted.", min=0)],
    policy: PolicyOption = "default",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be done; change nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a count outside the pool's min..max.")
    ] = False,
    state: StateOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Scale a pool to COUNT instances, safely: start, healthy, add; drain, wait, remove, stop.

    The seed's manual procedure in one command, each step printed as it happens. It takes the
    controller's leader lock (refused while `senex-scale run` leads the same state), and the
    action is journaled and in the audit log like the daemon's. Exit 1 if any instance failed
    (the balancer is left pointing only at healthy, running instances).
    """
    from senex_scale.controller.manual import manual_scale
    from senex_scale.controller.sequence import Step
    from senex_scale.plugins import did_you_mean
    from senex_scale.policy import load_policy

    loaded = load_policy(policy)
    if pool not in loaded.pools:
        hint = did_you_mean(pool, list(loaded.pools))
        raise InputError(f'unknown pool "{pool}"{hint}; pools: {", ".join(loaded.pools)}')
    spec = loaded.pools[pool]
    if not force and not spec.min <= count <= spec.max:
        raise InputError(
            f"{pool}: {count} is outside min..max ({spec.min}..{spec.max}); --force to do it anyway"
        )

    def show(step: Step) -> None:
        if not json_out:
            detail = f": {step.detail}" if step.detail else ""
            err.print(f"{pool}@{step.n}: {step.what}{detail}", markup=False)

    result = manual_scale(
        loaded,
        pool,
        count,
        state=state,
        on_step=show,
        dry_run=dry_run,
        command=f"senex-scale scale {pool} {count}" + (" --force" if force else ""),
    )
    running = result.before
    direction = "out" if count > len(running) else "in" if count < len(running) else "none"
    if dry_run:
        doc = {"pool": pool, "running": running, "desired": count, "direction": direction}
        if json_out:
            print(json.dumps(doc, indent=2))
        else:
            out.print(
                f"{pool}: {len(running)} running {running}; would scale {direction} to {count}"
            )
        return
    outcome = result.outcome
    after = result.after
    if json_out:
        print(
            json.dumps(
                {
                    "pool": pool,
                    "before": running,
                    "after": after,
                    "done": outcome.done,
                    "failed": {str(n): why for n, why in outcome.failed.items()},
                    "steps": [
                        {"at": s.at, "n": s.n, "what": s.what, "detail": s.detail}
                        for s in outcome.steps
                    ],
                },
                indent=2,
            )
        )
    else:
        out.print(f"{pool}: {len(running)} -> {len(after)} running {after}")
        for n, why in outcome.failed.items():
            out.print(f"{pool}@{n}: FAILED: {why}")
    if not outcome.ok:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- simulate

trace_app = typer.Typer(
    help="Make and inspect load traces for the simulator.", no_args_is_help=True
)
app.add_typer(trace_app, name="trace")


def _load_trace(path: Path | None) -> Any:
    """The trace to replay: a file, else a bundled trace by name; default the trading day."""
    from senex_scale.simulate.generate import generate
    from senex_scale.simulate.trace import bundled_trace, read_trace

    if path is not None:
        bundled = None if path.exists() else bundled_trace(str(path))
        return read_trace(bundled or path)
    bundled = bundled_trace("trading-day")
    if bundled is not None:
        return read_trace(bundled)
    # the package data is missing (a broken install): the bundled file is this generator's output
    return generate("trading-day")


@app.command()
def simulate(
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            "-t",
            help="Trace CSV, or a bundled trace by name (trading-day, news-day, holiday, "
            "slow-week); default: the bundled trading day.",
        ),
    ] = None,
    policy: PolicyOption = "default",
    compare: Annotated[
        str,
        typer.Option(help="Baselines to run in the same pass (comma-separated, or 'none')."),
    ] = "seed-script,hpa,static,oracle",
    model: Annotated[
        Path | None, typer.Option(help="Capacity model TOML (see docs/simulator.md).")
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write the scores as JSON to this file ('-': stdout)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write an HTML report with plots to this file.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No table, no progress bar.")
    ] = False,
    suite: Annotated[
        bool,
        typer.Option(
            "--suite", help="Run the seeded trace suite (docs/simulator.md) instead of one trace."
        ),
    ] = False,
    suite_count: Annotated[
        int, typer.Option("--suite-count", min=1, help="Traces in the suite.")
    ] = 200,
    suite_seed: Annotated[
        int, typer.Option("--suite-seed", min=0, help="Seed of the suite's first trace.")
    ] = 0,
    case: Annotated[
        str | None,
        typer.Option("--case", help="Replay one suite trace by name, e.g. flash-crash-17."),
    ] = None,
) -> None:
    """Replay a load trace through the policy and score it against the baselines."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from senex_scale.policy import load_policy
    from senex_scale.simulate.model import load_model
    from senex_scale.simulate.runner import parse_compare, span_problem
    from senex_scale.simulate.runner import simulate as run_simulation

    loaded = load_policy(policy)
    baselines = [] if compare.strip() == "none" else parse_compare(compare)
    if model is not None:  # a directory, bytes that are not UTF-8, nesting too deep
        from senex_scale.policy.loading import load_toml, read_input

        try:
            load_toml(read_input(model))
        except ValueError as exc:
            raise InputError(f"{model}: {exc}") from None
    sim_model = load_model(model)
    for option, target in (("--json", json_path), ("--report", report)):
        if target is not None and str(target) != "-" and not target.absolute().parent.is_dir():
            raise InputError(f"{option} {target}: the directory {target.parent} does not exist")
    if suite:
        if trace is not None or case is not None:
            raise InputError("--suite runs its own traces: leave out --trace and --case")
        _run_suite(loaded, sim_model, baselines, suite_count, suite_seed, json_path, report, quiet)
        return
    faults = None
    if case is not None:
        if trace is not None:
            raise InputError("--case replays a suite trace: leave out --trace")
        from senex_scale.simulate.generate import family_trace
        from senex_scale.simulate.suite import parse_case

        chosen = parse_case(case)
        loaded_trace, faults = family_trace(chosen.family, chosen.seed)
    else:
        loaded_trace = _load_trace(trace)
    problem = span_problem(loaded_trace.end - loaded_trace.start, loaded.controller.interval)
    if problem:
        raise InputError(f"{trace or 'the trace'}: {problem}")
    show = not quiet and json_path != Path("-")
    progress_bar = Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ticks"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show,
    )
    tasks: dict[str, Any] = {}

    def progress(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = progress_bar.add_task(name, total=total)
        progress_bar.update(tasks[name], completed=done)

    with progress_bar:
        result = run_simulation(
            loaded_trace, loaded, sim_model, baselines, progress=progress, faults=faults
        )
    doc = result.as_dict()
    if json_path is not None:
        text = json.dumps(doc, indent=2)
        if str(json_path) == "-":
            print(text)
        else:
            json_path.write_text(text + "\n", encoding="utf-8")
    if report is not None:
        from senex_scale.simulate.report import write_report

        write_report(result, report, "the built-in default" if policy == "default" else policy)
    if show:
        _print_scores(result)
        if json_path is not None:
            out.print(f"scores written to {json_path}")
        if report is not None:
            out.print(f"report written to {report}")


def _run_suite(
    loaded: Any,
    sim_model: Any,
    baselines: list[str],
    count: int,
    first_seed: int,
    json_path: Path | None,
    report: Path | None,
    quiet: bool,
) -> None:
    """``simulate --suite``: the distribution table, the goals and the worst traces."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from senex_scale.simulate.suite import METRICS, POLICY, render_html, run_suite

    show = not quiet and json_path != Path("-")
    bar = Progress(
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show,
    )
    with bar:
        task = bar.add_task("suite", total=count)
        result = run_suite(
            loaded,
            sim_model,
            count=count,
            first_seed=first_seed,
            compare=baselines,
            progress=lambda done, _total: bar.update(task, completed=done),
        )
    if json_path is not None:
        text = json.dumps(result.as_dict(), indent=2)
        if str(json_path) == "-":
            print(text)
        else:
            json_path.write_text(text + "\n", encoding="utf-8")
    if report is not None:
        report.write_text(render_html(result), encoding="utf-8")
    if not show:
        return
    table = Table(
        title=f"suite: {count} traces from seed {first_seed} (median / p90 / worst; "
        "lower is better)"
    )
    table.add_column("pool")
    table.add_column("policy")
    for metric in METRICS:
        table.add_column(metric.replace("_", " "), justify="right")
    for pool in result.pools:
        names = result.controllers
        for i, name in enumerate(names):
            cells = [
                " / ".join(
                    f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}" for v in result.stats(name, pool, m)
                )
                for m in METRICS
            ]
            table.add_row(
                pool if i == 0 else "",
                name,
                *cells,
                style="bold" if name == POLICY else None,
                end_section=i == len(names) - 1,
            )
    _print_table(table)
    if "hpa" in result.controllers:
        goals = result.against_hpa()
        out.print(
            f"policy vs hpa: SLO minutes <= hpa's on {goals['slo_not_above_hpa_share']:.0%} "
            f"of traces, worst excess {goals['slo_worst_excess_minutes']:.1f} min; median "
            f"instance-hours {goals['ih_vs_hpa_median']:.2f}x hpa, "
            f"{goals['ih_vs_oracle_median']:.2f}x oracle; median actions/h "
            f"{goals['actions_per_hour_median']:.2f} "
            f"(hpa {goals['hpa_actions_per_hour_median']:.2f})"
        )
        families = "; ".join(
            f"{name} {f['slo_minutes_median']:.1f}/{f['hpa_slo_minutes_median']:.1f} "
            f"({f['slo_not_above_hpa_share']:.0%})"
            for name, f in result.by_family().items()
        )
        out.print(f"SLO minutes by family, median policy/hpa (share <= hpa): {families}")
    for metric in ("slo_minutes", "under_accuracy"):
        worst = ", ".join(f"{n} ({v:.1f})" for n, v in result.worst(POLICY, metric))
        out.print(f"worst traces for the policy by {metric}: {worst}")
    out.print("replay one: senex-scale simulate --case NAME")
    if json_path is not None:
        out.print(f"suite written to {json_path}")
    if report is not None:
        out.print(f"report written to {report}")


def _print_scores(result: Any) -> None:
    from senex_scale.simulate.score import FIELDS

    trace = result.trace
    hours = (trace.end - trace.start + trace.step) / 3600
    table = Table(
        title=f"{trace.name}: {hours:.1f} h at {trace.step:g} s "
        "(accuracy/timeshare in %, lower is better)",
    )
    headers = {
        "under_accuracy": "under acc",
        "over_accuracy": "over acc",
        "under_timeshare": "under time",
        "over_timeshare": "over time",
        "jitter": "jitter/h",
        "instance_hours": "inst-h",
        "actions": "actions",
        "slo_violation_minutes": "SLO min",
    }
    table.add_column("pool")
    table.add_column("policy")
    for name in FIELDS:
        table.add_column(headers.get(name, name), justify="right")
    pools = list(result.policy.pools)
    for pool in pools:
        for i, (name, scores) in enumerate(result.scores.items()):
            s = scores[pool].as_dict()
            cells = [f"{s[f]:.0f}" if f == "actions" else f"{s[f]:.2f}" for f in FIELDS]
            style = "bold" if name == "policy" else None
            table.add_row(
                pool if i == 0 else "",
                name,
                *cells,
                style=style,
                end_section=i == len(result.scores) - 1,
            )
    _print_table(table)
    if result.unsimulated:
        out.print(
            f"rules without a simulated signal (they saw no data): {', '.join(result.unsimulated)}"
        )


MAX_TRACE_ROWS = 10_000_000
"""Most rows ``trace generate`` writes (a year at 3 s): more is a typo in --step or --days."""


@trace_app.command("generate")
def trace_generate(
    kind: Annotated[
        str, typer.Argument(help="trading-day, news-day, holiday, slow-week or ten-sessions.")
    ],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write ('-': stdout).")],
    start: Annotated[
        str | None, typer.Option(help="First day (YYYY-MM-DD); default per kind.")
    ] = None,
    days: Annotated[int | None, typer.Option(help="Number of days; default per kind.")] = None,
    step: Annotated[
        float | None, typer.Option(help="Seconds between rows; default per kind.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same trace.")] = 42,
    scale: Annotated[float, typer.Option(help="Multiply every demand column.")] = 1.0,
) -> None:
    """Generate a synthetic, seeded load trace (see docs/traces.md)."""
    from datetime import date

    from senex_scale.simulate.generate import generate, generation_comment
    from senex_scale.simulate.trace import write_trace

    try:
        first = date.fromisoformat(start) if start is not None else None
    except ValueError:
        raise InputError(f'--start: "{start}" is not a date (YYYY-MM-DD)') from None
    rows = (days or 1) * 86400 / (step or 15) if step is None or step > 0 else 0
    if rows > MAX_TRACE_ROWS:
        raise InputError(
            f"--days/--step: {rows:.3g} rows, more than {MAX_TRACE_ROWS:,} (a longer step or "
            "fewer days)"
        )
    if first is not None and first.year > 9000:
        raise InputError(f'--start: "{start}" is too far ahead (a date before the year 9000)')
    try:
        made = generate(kind, start=first, days=days, step=step, seed=seed, scale=scale)
    except (ValueError, OverflowError) as exc:
        raise InputError(str(exc)) from None
    comment = generation_comment(
        kind, out=str(out_path), start=first, days=days, step=step, seed=seed, scale=scale
    )
    if str(out_path) == "-":
        write_trace(made, sys.stdout, comment=comment)
    else:
        write_trace(made, out_path, comment=comment)
        err.print(f"wrote {len(made.times)} rows to {out_path}")


# your own traffic as a trace: the commands live in simulate/capture_cli.py
from senex_scale.simulate.capture_cli import (  # noqa: E402
    from_prometheus_command,
    from_store_command,
)

trace_app.command("from-prometheus")(from_prometheus_command)
trace_app.command("from-store")(from_store_command)


# shadow mode's report: the command lives in controller/shadow_report.py
from senex_scale.controller.shadow_report import shadow_report_command  # noqa: E402

shadow_app = typer.Typer(
    help="Compare what `run --shadow` would have done with what the pools did.",
    no_args_is_help=True,
)
app.add_typer(shadow_app, name="shadow")
shadow_app.command("report")(shadow_report_command)


# --------------------------------------------------------------------------- controller


@app.command()
def run(
    policy: PolicyOption = "default",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide and record, but change nothing.")
    ] = False,
    state: StateOption = None,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="HOST:PORT of the status page and /metrics."),
    ] = None,
    no_web: Annotated[bool, typer.Option("--no-web", help="Serve no status page.")] = False,
    once: Annotated[
        bool, typer.Option("--once", help="One tick, then exit (cron-style use).")
    ] = False,
    no_leader: Annotated[
        bool,
        typer.Option("--no-leader", help="Act without taking the leader lock (one host only)."),
    ] = False,
    log_format: Annotated[
        str, typer.Option("--log-format", help="console or json (one JSON object a line).")
    ] = "console",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow",
            help="Read everything, act on nothing, take no lock; record what this policy "
            "would have done next to what the pools did (see `shadow report`).",
        ),
    ] = False,
) -> None:
    """Run the controller: every interval, collect, decide, act and record.

    Reconciles runtimes and balancers at start; only the leader acts; SIGHUP reloads the
    policy (an invalid one is refused and the old one kept); SIGTERM finishes the action in
    flight, then exits. The status page and /metrics listen on controller.listen.
    """
    from senex_scale.controller.daemon import DaemonOptions, default_policy_path
    from senex_scale.controller.daemon import run as run_daemon
    from senex_scale.telemetry.logs import configure

    if log_format not in ("console", "json"):
        raise InputError(f"--log-format: {log_format!r} is not console or json")
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise InputError(f"--log-level: {log_level!r} is not debug, info, warning or error")
    configure("json" if log_format == "json" else "console", log_level)
    options = DaemonOptions(
        policy=default_policy_path(policy),
        dry_run=dry_run,
        state=state,
        listen=listen,
        web=not no_web,
        once=once,
        leader=not no_leader,
        shadow=shadow,
    )
    raise typer.Exit(run_daemon(options))


def _open_state(policy: str, state: str | None) -> Any:
    from senex_scale.policy import load_policy
    from senex_scale.store import open_store

    url = state or load_policy(policy).controller.state
    return open_store(url)


@app.command()
def status(
    policy: PolicyOption = "default",
    state: StateOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Show the controller's last tick: pools, rules against thresholds, recent decisions."""
    from senex_scale.controller.report import status_view

    store = _open_state(policy, state)
    try:
        doc = store.get("status") or {}
        recent = store.history(acted=True, limit=10)
        controllers = store.statuses()
    finally:
        store.close()
    if json_out:
        body = {
            "status": doc,
            "controllers": controllers,
            "decisions": [r.as_dict() for r in recent],
        }
        print(json.dumps(body, indent=2))
        return
    _print_table(status_view(doc, recent, time.time(), controllers))
    if not doc:
        raise typer.Exit(1)


@app.command()
def hosts(
    policy: PolicyOption = "default",
    json_out: JsonFlag = False,
) -> None:
    """Check every host of the policy now: reachable or not (through its own transport), the
    pools' instances on it, the last error. Exit 1 if a host cannot be reached or listed."""
    from senex_scale.ops.hosts import check_hosts
    from senex_scale.policy import load_policy

    loaded = load_policy(policy)
    rows = check_hosts(loaded)
    if json_out:
        print(json.dumps({"hosts": rows}, indent=2))
    elif not rows:
        out.print("no [hosts] in this policy: every pool runs where its runtime says", markup=False)
    else:
        table = Table(title="Hosts", title_justify="left")
        for column in ("host", "address", "transport", "reachable", "ms", "instances", "error"):
            table.add_column(column, justify="right" if column == "ms" else "left")
        for row in rows:
            instances = "; ".join(f"{p} {ns}" for p, ns in row["pools"].items()) or "-"
            table.add_row(
                row["host"],
                row["address"],
                row["transport"],
                "yes" if row["reachable"] else Text("no", style="red"),
                "-" if row["ms"] is None else str(row["ms"]),
                instances,
                row["error"] or "",
            )
        _print_table(table)
    if any(not row["reachable"] or row["error"] for row in rows):
        raise typer.Exit(1)


@app.command()
def history(
    policy: PolicyOption = "default",
    state: StateOption = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Only this pool.")] = None,
    outcome: Annotated[
        str | None,
        typer.Option("--outcome", help="Only this outcome (done, failed, dry-run, ...)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only the last DURATION (e.g. 2h, 30m).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Include holds (ticks that changed nothing).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    json_out: JsonFlag = False,
) -> None:
    """List the controller's decisions, newest first, with reasons and outcomes."""
    from senex_scale.controller.report import history_table
    from senex_scale.policy.durations import parse_duration
    from senex_scale.store.sql import OUTCOMES

    if outcome is not None and outcome not in OUTCOMES:
        raise InputError(f"--outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
    cutoff = None
    if since is not None:
        try:
            cutoff = time.time() - parse_duration(since)
        except ValueError as exc:
            raise InputError(f"--since: {exc}") from None
    store = _open_state(policy, state)
    try:
        rows = store.history(
            pool=pool,
            outcome=outcome,
            since=cutoff,
            acted=not all_ and outcome != "hold",
            limit=limit,
        )
    finally:
        store.close()
    if json_out:
        print(json.dumps({"decisions": [r.as_dict() for r in rows]}, indent=2))
        return
    if not rows:
        err.print("no decisions recorded that match")
        return
    _print_table(history_table(rows))


# --------------------------------------------------------------------------- forecast

# the next session's forecast of a pool's predictive rule; the command lives in forecast_cli
from senex_scale.forecast_cli import forecast_command  # noqa: E402

app.command("forecast")(forecast_command)


# --------------------------------------------------------------------------- render

from senex_scale.render.cli import render_command  # noqa: E402 - the command lives in render/

app.command("render")(render_command)


# --------------------------------------------------------------------------- data tier (ops/)

from senex_scale.ops import db, pgbouncer, replica, rightsize, sentinel  # noqa: E402

app.add_typer(replica.app, name="replica")
app.add_typer(sentinel.app, name="sentinel")
app.add_typer(pgbouncer.app, name="pgbouncer")
app.add_typer(db.app, name="db")
app.command("rightsize")(rightsize.rightsize_command)


# --------------------------------------------------------------------------- demo

from senex_scale.demo.cli import demo_command  # noqa: E402 - the command lives in demo/

app.command("demo")(demo_command)


# --------------------------------------------------------------------------- entry point


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Our own warnings (an ignored trace column) as ``Warning: ...``; no Python source line."""
    if category.__module__.startswith("senex_scale"):
        sys.stderr.write(f"Warning: {message}\n")
        return
    _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main() -> None:
    """Console-script entry: run the app, turn SenexError into ``Error: ...`` and an exit code.

    The message is written as it is (no markup, no wrapping) and always ends with a newline.
    Click's standalone mode handles usage errors (exit 2), ``--help`` and Ctrl-C itself.
    """
    warnings.showwarning = _show_warning
    try:
        app()
    except SenexError as exc:
        text = str(exc).rstrip("\n") or "failed"
        sys.stderr.write(f"Error: {text}\n")
        sys.stderr.flush()
        sys.exit(exc.exit_code)
