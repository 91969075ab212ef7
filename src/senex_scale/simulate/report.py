"""The HTML report of a simulation: demand and supply plots per pool, and the score table.

Plots are drawn with matplotlib (Agg, SVG inlined) and the page with a Jinja2 template, so the
report is one self-contained file that opens offline.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import jinja2

from senex_scale.simulate.score import FIELDS, describe

if TYPE_CHECKING:
    from senex_scale.simulate.runner import Simulation

COLORS = {
    "policy": "#1f6feb",
    "seed-script": "#d1242f",
    "hpa": "#8250df",
    "static": "#6e7781",
    "oracle": "#1a7f37",
}

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Senex Scale simulation: {{ trace }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #d0d7de; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
tr.policy td { font-weight: 600; background: #ddf4ff; }
.best { color: #1a7f37; }
.note { color: #59636e; }
svg { max-width: 100%; height: auto; }
</style></head><body>
<h1>Simulation of {{ trace }}</h1>
<p class="note">{{ span }} at {{ step }} s per tick; policy: {{ policy_name }};
generated {{ made }}.
Accuracy and timeshare are percentages (lower is better); jitter is supply minus demand
adaptations per hour (0 is ideal, negative: too inert, positive: oscillating).</p>
{% if unsimulated %}<p class="note">Rules without a simulated signal (they saw no data):
{{ unsimulated|join(", ") }}</p>{% endif %}
<h2>Scores</h2>
{{ score_plot | safe }}
<table>
<tr><th>pool</th><th>policy</th>
{% for f in fields %}<th title="{{ tips[f] }}">{{ f }}</th>{% endfor %}</tr>
{% for pool in pools %}{% for name, row in rows[pool] %}
<tr class="{{ 'policy' if name == 'policy' else '' }}">
<td>{{ pool if loop.first else '' }}</td><td>{{ name }}</td>
{% for f in fields %}<td>{{ row[f] }}</td>{% endfor %}</tr>
{% endfor %}{% endfor %}
</table>
{% for pool in pools %}
<h2>{{ pool }}: demand and supply</h2>
{{ plots[pool] | safe }}
{% endfor %}
<h2>Demand (the trace)</h2>
{{ demand_plot | safe }}
</body></html>
"""


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def render_report(sim: Simulation, policy_name: str = "the built-in default") -> str:
    """The report page as HTML text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    zone = ZoneInfo(sim.trace.timezone or "UTC")
    times = sim.trace.times / 86400.0  # matplotlib's date numbers: days since 1970-01-01 UTC
    formatter = mdates.DateFormatter("%a %H:%M", tz=zone)  # type: ignore[no-untyped-call]
    plots: dict[str, str] = {}
    first_run = next(iter(sim.runs.values()))
    for pool in sim.policy.pools:
        fig, ax = plt.subplots(figsize=(12, 3.6))
        demand = first_run.pools[pool].demand
        ax.fill_between(times, 0, demand, step="post", color="#d0d7de", label="demand d(t)")
        for name, result in sim.runs.items():
            supply = result.pools[pool].supply
            width = 2.2 if name == "policy" else 1.2
            ax.step(times, supply, where="post", lw=width, color=COLORS.get(name), label=name)
        ax.set_ylabel("instances")
        ax.xaxis.set_major_formatter(formatter)
        ax.legend(loc="upper left", ncols=6, fontsize=8)
        ax.grid(alpha=0.3)
        plots[pool] = _svg(fig)
        plt.close(fig)
    fig, axes = plt.subplots(
        len(sim.trace.columns), 1, figsize=(12, 1.8 * len(sim.trace.columns)), sharex=True
    )
    for ax, (column, series) in zip(np.atleast_1d(axes), sim.trace.columns.items(), strict=True):
        ax.plot(times, series, lw=1, color="#1f6feb")
        ax.set_ylabel(column, fontsize=8)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(formatter)
    demand_plot = _svg(fig)
    plt.close(fig)
    score_plot = _score_bars(sim, plt)

    rows: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for pool in sim.policy.pools:
        rows[pool] = []
        for name, scores in sim.scores.items():
            got = scores[pool].as_dict()
            rows[pool].append(
                (
                    name,
                    {f: f"{got[f]:.0f}" if f == "actions" else f"{got[f]:.2f}" for f in FIELDS},
                )
            )
    hours = (sim.trace.end - sim.trace.start + sim.trace.step) / 3600
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(
        trace=sim.trace.name,
        span=f"{hours:.1f} h",
        step=f"{sim.trace.step:g}",
        policy_name=policy_name,
        made=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        unsimulated=sim.unsimulated,
        fields=FIELDS,
        tips={f: describe(f) for f in FIELDS},
        pools=list(sim.policy.pools),
        rows=rows,
        plots=plots,
        demand_plot=demand_plot,
        score_plot=score_plot,
    )


BARS = (
    ("instance_hours", "instance-hours (cost)"),
    ("slo_violation_minutes", "minutes in SLO violation"),
    ("under_accuracy", "under-provisioning accuracy, %"),
    ("over_accuracy", "over-provisioning accuracy, %"),
)


def _score_bars(sim: Simulation, plt: Any) -> str:
    """Grouped bars: one panel per score, pools on the x axis, one bar per policy."""
    import numpy as np

    pools = list(sim.policy.pools)
    names = list(sim.scores)
    fig, axes = plt.subplots(1, len(BARS), figsize=(14, 3.4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(pools))
    for ax, (field, title) in zip(axes, BARS, strict=True):
        for i, name in enumerate(names):
            values = [sim.scores[name][pool].as_dict()[field] for pool in pools]
            ax.bar(x + i * width, values, width, color=COLORS.get(name), label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x + width * (len(names) - 1) / 2, pools, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    text = _svg(fig)
    plt.close(fig)
    return text


def write_report(
    sim: Simulation, path: str | Path, policy_name: str = "the built-in default"
) -> None:
    """Write the report page to ``path``."""
    Path(path).write_text(render_report(sim, policy_name), encoding="utf-8")
