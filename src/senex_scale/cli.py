"""The ``senex-scale`` command.

Exit codes: 0 success; 1 a failure while doing the work; 2 bad input (a policy, observation
or trace that does not validate, or a usage error). Errors print ``Error: message`` on stderr
without a traceback; ``--json`` output goes to stdout so scripts can parse it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

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
    """Check a policy file; list every problem with its dotted path (exit 2 if any)."""
    from senex_scale.errors import PolicyError
    from senex_scale.policy import load_policy

    try:
        loaded = load_policy(policy)
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

    loaded = load_policy(policy)
    observation, file_now = load_observation(observe)
    if now is not None:
        try:
            at = parse_time(float(now) if now.replace(".", "", 1).isdigit() else now)
        except ValueError as exc:
            raise InputError(f"--now: {exc}") from None
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


# --------------------------------------------------------------------------- entry point


def main() -> None:
    """Console-script entry: run the app, turn SenexError into ``Error: ...`` and an exit code.

    Click's standalone mode handles usage errors (exit 2), ``--help`` and Ctrl-C itself.
    """
    try:
        app()
    except SenexError as exc:
        err.print(f"Error: {exc}", markup=False)
        sys.exit(exc.exit_code)
