"""The ``senex-scale render`` command (registered in ``senex_scale.cli``).

Exit 0: rendered (or, with ``--check``/``--diff``, would render) cleanly; 2: the inventory is
invalid or a secret is missing (every problem with its dotted path); 1: the rendered files
failed a check (nothing was written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def render_command(
    inventory: Annotated[
        Path, typer.Option("--inventory", "-i", help="Inventory TOML (see docs/render.md).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory (one subdirectory per host).")
    ],
    check: Annotated[
        bool, typer.Option("--check", help="Render and check the files; write nothing.")
    ] = False,
    show_diff: Annotated[
        bool,
        typer.Option("--diff", help="Show a unified diff against --out; write nothing."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Render every config file of a deployment from its inventory, checked, written atomically.

    Quadlet units, nginx, HAProxy, PgBouncer, PostgreSQL, Redis and Sentinel, Prometheus rules,
    a Grafana dashboard and systemd timers; secrets come from the environment or credential
    files named in the inventory and land only in files of mode 0600.
    """
    from senex_scale.render.inventory import load_inventory
    from senex_scale.render.render import diff, render

    loaded = load_inventory(inventory)
    write = not (check or show_diff)
    result = render(loaded, out, source=inventory.name, write=write)
    text = diff(result.files, out) if show_diff else ""
    if json_out:
        doc = result.as_dict()
        if show_diff:
            doc["diff"] = text
        print(json.dumps(doc, indent=2))
        return
    if show_diff:
        sys.stdout.write(text)
    hosts = sorted({f.host for f in result.files})
    if result.written:
        verb = "wrote"
    elif check:
        verb = "checked"
    else:
        verb = "compared"
    sys.stderr.write(
        f"{verb} {len(result.files)} files for {len(hosts)} hosts ({', '.join(hosts)}) "
        f"in {out}: {len(result.changed)} changed, {len(result.removed)} removed\n"
    )
