"""``senex-scale shadow report``: what ``run --shadow`` would have run against what ran.

From the ``shadow_ticks`` rows (``controller/shadow.py``), per pool and for all pools:

- **instance-minutes**: each tick's count times the time to the pool's next tick (capped at
  three intervals, so a shadow that was down adds nothing), real (observed) and shadow;
- **short**: how many times the pool went short (a run of short ticks counts once) and for
  how many minutes, real and shadow (short: over a scale-out line of the pool's threshold
  rules; for the shadow, the load rescaled to its count);
- **actions**: the real count's changes (as observed tick to tick) and the shadow's would-be
  scale actions.

The terminal table is Rich; ``--html`` writes one self-contained page with a plot per pool
(matplotlib, SVG inlined, as ``simulate --report``).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

ShadowRow = tuple[float, str, "int | None", int, bool, bool, str, str]
FIELDS = (
    "instance_minutes",
    "short_times",
    "short_minutes",
    "actions",
)


@dataclass
class Side:
    """One side (real or shadow) of one pool."""

    instance_minutes: float = 0.0
    short_times: int = 0
    short_minutes: float = 0.0
    actions: int = 0


@dataclass
class PoolComparison:
    """Real against shadow for one pool (or ``all``), over ``minutes`` of shadow ticks."""

    pool: str
    ticks: int = 0
    minutes: float = 0.0
    real: Side = field(default_factory=Side)
    shadow: Side = field(default_factory=Side)
    unlisted_ticks: int = 0
    """Ticks where the pool could not be listed (no real count): left out of both sides."""


@dataclass
class ShadowReport:
    since: float
    until: float
    pools: list[PoolComparison]
    series: dict[str, list[tuple[float, int | None, int, bool, bool]]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "pools": [asdict(p) for p in self.pools],
        }


def compare(
    rows: Sequence[ShadowRow], *, since: float, until: float, interval: float
) -> ShadowReport:
    """The comparison over ``rows`` (oldest first); ``interval`` is the controller's."""
    per: dict[str, list[ShadowRow]] = {}
    for row in rows:
        per.setdefault(row[1], []).append(row)
    out: list[PoolComparison] = []
    series: dict[str, list[tuple[float, int | None, int, bool, bool]]] = {}
    total = PoolComparison("all")
    for pool, items in per.items():
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(items)]
        typical = statistics.median(gaps) if gaps else interval
        cap = 3 * typical  # three of its own intervals (the median gap between its ticks)
        comparison = PoolComparison(pool)
        was_short = {"real": False, "shadow": False}
        last_real: int | None = None
        for i, (at, _pool, real, shadow, real_short, shadow_short, action, _why) in enumerate(
            items
        ):
            following = items[i + 1][0] if i + 1 < len(items) else min(until, at + typical)
            dt = max(0.0, min(following - at, cap)) / 60.0
            comparison.ticks += 1
            if action:
                comparison.shadow.actions += 1
            if real is None:
                comparison.unlisted_ticks += 1
                was_short = {"real": False, "shadow": False}
                continue
            comparison.minutes += dt
            comparison.real.instance_minutes += real * dt
            comparison.shadow.instance_minutes += shadow * dt
            if last_real is not None and real != last_real:
                comparison.real.actions += 1
            last_real = real
            for name, side, now_short in (
                ("real", comparison.real, real_short),
                ("shadow", comparison.shadow, shadow_short),
            ):
                if now_short:
                    side.short_minutes += dt
                    if not was_short[name]:
                        side.short_times += 1
                was_short[name] = now_short
        series[pool] = [(r[0], r[2], r[3], r[4], r[5]) for r in items]
        out.append(comparison)
        total.ticks += comparison.ticks
        total.minutes = max(total.minutes, comparison.minutes)
        total.unlisted_ticks += comparison.unlisted_ticks
        for mine, sums in ((comparison.real, total.real), (comparison.shadow, total.shadow)):
            for name in FIELDS:
                setattr(sums, name, getattr(sums, name) + getattr(mine, name))
    if len(out) > 1:
        out.append(total)
    return ShadowReport(since, until, out, series)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(report: ShadowReport) -> Any:
    """The terminal table (Rich)."""
    from rich.table import Table

    span = f"{_iso(report.since)} .. {_iso(report.until)}"
    out = Table(title=f"Shadow against real, {span} (short: over a scale-out line)")
    for column in ("pool", "", "minutes", "instance-min", "short (times)", "short min", "actions"):
        out.add_column(column, justify="left" if column in ("pool", "") else "right")
    for p in report.pools:
        for i, (name, side) in enumerate((("real", p.real), ("shadow", p.shadow))):
            out.add_row(
                p.pool if i == 0 else "",
                name,
                f"{p.minutes:.1f}" if i == 0 else "",
                f"{side.instance_minutes:.1f}",
                str(side.short_times),
                f"{side.short_minutes:.1f}",
                str(side.actions),
                style="bold" if name == "shadow" else None,
                end_section=i == 1,
            )
    return out


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Senex Scale shadow report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #d0d7de; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
tr.shadow td { font-weight: 600; background: #ddf4ff; }
.note { color: #59636e; }
svg { max-width: 100%; height: auto; }
</style></head><body>
<h1>Shadow against real</h1>
<p class="note">{{ span }}; generated {{ made }}. Real: the instances observed each tick.
Shadow: what <code>senex-scale run --shadow</code> would have run, following only its own
decisions. Short: a threshold rule of the pool over its scale-out line (for the shadow, the
per-instance load rescaled to its count). Actions: the real count's changes; the shadow's
would-be scale actions.</p>
<table>
<tr><th>pool</th><th></th><th>minutes</th><th>instance-minutes</th><th>short (times)</th>
<th>short minutes</th><th>actions</th></tr>
{% for p in pools %}{% for name, side in [("real", p.real), ("shadow", p.shadow)] %}
<tr class="{{ name }}"><td>{{ p.pool if loop.first else "" }}</td><td>{{ name }}</td>
<td>{{ "%.1f"|format(p.minutes) if loop.first else "" }}</td>
<td>{{ "%.1f"|format(side.instance_minutes) }}</td><td>{{ side.short_times }}</td>
<td>{{ "%.1f"|format(side.short_minutes) }}</td><td>{{ side.actions }}</td></tr>
{% endfor %}{% endfor %}
</table>
{% for pool, plot in plots.items() %}
<h2>{{ pool }}</h2>
{{ plot | safe }}
{% endfor %}
</body></html>
"""


def render_html(report: ShadowReport) -> str:
    """The report page: the table and, per pool, real and shadow counts with short spans."""
    import jinja2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    from senex_scale.simulate.report import COLORS, _svg

    formatter = mdates.DateFormatter("%a %H:%M")  # type: ignore[no-untyped-call]
    plots: dict[str, str] = {}
    for pool, points in report.series.items():
        times = np.array([p[0] for p in points]) / 86400.0
        real = np.array([np.nan if p[1] is None else p[1] for p in points], dtype=float)
        shadow = np.array([p[2] for p in points], dtype=float)
        fig, ax = plt.subplots(figsize=(12, 3.4))
        top = float(np.nanmax(np.concatenate([real, shadow, [1.0]]))) + 1
        for flags, color, label in (
            ([p[3] for p in points], COLORS["seed-script"], "real short"),
            ([p[4] for p in points], COLORS["policy"], "shadow short"),
        ):
            ax.fill_between(
                times, 0, top, where=flags, step="post", color=color, alpha=0.12, label=label
            )
        ax.step(times, real, where="post", lw=1.6, color=COLORS["static"], label="real (observed)")
        ax.step(times, shadow, where="post", lw=2.2, color=COLORS["policy"], label="shadow")
        ax.set_ylim(0, top)
        ax.set_ylabel("instances")
        ax.xaxis.set_major_formatter(formatter)
        ax.legend(loc="upper left", ncols=4, fontsize=8)
        ax.grid(alpha=0.3)
        plots[pool] = _svg(fig)
        plt.close(fig)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(
        span=f"{_iso(report.since)} .. {_iso(report.until)}",
        made=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        pools=report.pools,
        plots=plots,
    )


def shadow_report_command(
    since: Annotated[str, typer.Option(help="The last DURATION (e.g. 1d, 2h).")] = "1d",
    state: Annotated[
        str | None,
        typer.Option(
            help="State store URL (sqlite:PATH or postgresql://...); default: the policy's."
        ),
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", "-p", help='Policy file; "default": the built-in one.')
    ] = "default",
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML page with a plot per pool.")
    ] = None,
) -> None:
    """Compare what `run --shadow` would have run with what ran: instance-minutes, times and
    minutes short, actions; exit 1 when no shadow tick is recorded in the range."""
    import json
    import sys
    import time

    from rich.console import Console

    from senex_scale.errors import InputError
    from senex_scale.policy import load_policy
    from senex_scale.policy.durations import parse_duration
    from senex_scale.store import open_store
    from senex_scale.store.sql import redact_url

    try:
        span = parse_duration(since)
    except ValueError as exc:
        raise InputError(f"--since: {exc}") from None
    if span <= 0:
        raise InputError(f'--since: "{since}" must be longer than 0s')
    if html is not None and html.is_dir():
        raise InputError(f"--html: {html} is a directory")
    if html is not None and not html.parent.is_dir():
        raise InputError(f"--html: directory {html.parent} does not exist")
    loaded = load_policy(policy)
    url = state or loaded.controller.state
    until = time.time()
    store = open_store(url)
    try:
        rows = store.shadow_ticks(until - span)
    finally:
        store.close()
    if not rows:
        sys.stderr.write(f"no shadow ticks in {redact_url(url)} in the last {since}\n")
        raise typer.Exit(1)
    report = compare(rows, since=rows[0][0], until=until, interval=loaded.controller.interval)
    if html is not None:
        html.write_text(render_html(report), encoding="utf-8")
    if json_out:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True, markup=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=140, markup=False)
        console.print(table(report))
    if html is not None:
        sys.stderr.write(f"report written to {html}\n")
