"""``senex-scale simulate --suite``: many seeded traces, the distribution of every score.

A handful of traces say little about traffic a policy has never seen. The suite draws
``count`` traces round-robin from the families of ``generate.FAMILIES`` (case ``i`` is
family ``i mod 13`` with seed ``first_seed + i``; its name, e.g. ``flash-crash-17``, replays
it: ``senex-scale simulate --case flash-crash-17``), runs the policy and every baseline over
each (in parallel processes, one case per task) and summarises, per controller and pool (and
``all``, the pools summed):

    under_accuracy      % of demand missing (SPEC RG), lower is better
    ih_vs_oracle        instance-hours / the oracle's
    ih_vs_hpa           instance-hours / the HPA's
    slo_minutes         minutes in SLO violation
    actions_per_hour    scaling actions per hour of trace

as median, p90 and worst, and names the worst traces so they can be replayed.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from senex_scale.errors import InputError
from senex_scale.policy.models import Policy
from senex_scale.simulate.baselines import BASELINES
from senex_scale.simulate.generate import FAMILIES, family_trace
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.runner import POLICY, simulate

METRICS = ("under_accuracy", "ih_vs_oracle", "ih_vs_hpa", "slo_minutes", "actions_per_hour")
ALL = "all"
_CASE = re.compile(r"^(?P<family>[a-z-]+)-(?P<seed>\d+)$")


@dataclass(frozen=True)
class Case:
    """One suite trace: a family and a seed."""

    family: str
    seed: int

    @property
    def name(self) -> str:
        """``family-seed``: what ``--case`` takes to replay it."""
        return f"{self.family}-{self.seed}"


def cases(count: int = 200, first_seed: int = 0) -> list[Case]:
    """``count`` cases, families round-robin, seeds ``first_seed``, ``first_seed + 1``, ..."""
    return [Case(FAMILIES[i % len(FAMILIES)], first_seed + i) for i in range(count)]


def parse_case(name: str) -> Case:
    """``"flash-crash-17"`` -> Case; an unknown family is an ``InputError``."""
    match = _CASE.match(name.strip())
    if not match or match["family"] not in FAMILIES:
        from senex_scale.plugins import did_you_mean

        family = match["family"] if match else name
        raise InputError(
            f'--case: "{name}" is not FAMILY-SEED{did_you_mean(family, FAMILIES)}; '
            f"families: {', '.join(FAMILIES)}"
        )
    return Case(match["family"], int(match["seed"]))


Row = dict[str, dict[str, dict[str, float]]]
"""controller -> pool (and ``all``) -> metric -> value."""


def run_case(
    case: Case, policy: Policy, model: SimModel, compare: Sequence[str] = BASELINES
) -> Row:
    """One case through the policy and the baselines, as the suite's metrics."""
    trace, faults = family_trace(case.family, case.seed)
    names = list(dict.fromkeys([*compare, "hpa", "oracle"]))
    sim = simulate(trace, policy, model, names, workers=1, faults=faults)
    hours = (sim.trace.end - sim.trace.start + sim.trace.step) / 3600.0
    pools = [*policy.pools, ALL]

    def total(name: str, pool: str, key: str) -> float:
        scores = sim.scores[name]
        chosen = scores.values() if pool == ALL else [scores[pool]]
        return float(sum(getattr(s, key) for s in chosen))

    out: Row = {}
    for name in [POLICY, *compare]:
        out[name] = {}
        for pool in pools:
            hours_used = total(name, pool, "instance_hours")
            out[name][pool] = {
                "under_accuracy": total(name, pool, "under_accuracy"),
                "ih_vs_oracle": hours_used / max(total("oracle", pool, "instance_hours"), 1e-9),
                "ih_vs_hpa": hours_used / max(total("hpa", pool, "instance_hours"), 1e-9),
                "slo_minutes": total(name, pool, "slo_violation_minutes"),
                "actions_per_hour": total(name, pool, "actions") / hours,
            }
    return out


@dataclass
class SuiteResult:
    """Every case's metrics, and their distributions."""

    cases: list[Case]
    rows: dict[str, Row] = field(default_factory=dict)
    """case name -> its row."""

    @property
    def controllers(self) -> list[str]:
        """Controllers in run order."""
        first = next(iter(self.rows.values()), {})
        return list(first)

    @property
    def pools(self) -> list[str]:
        """Pools, then ``all``."""
        first = next(iter(self.rows.values()), {})
        return list(next(iter(first.values()), {}))

    def values(self, controller: str, pool: str, metric: str) -> list[float]:
        """One metric over all cases, in case order."""
        return [self.rows[c.name][controller][pool][metric] for c in self.cases]

    def stats(self, controller: str, pool: str, metric: str) -> tuple[float, float, float]:
        """(median, p90, worst) of a metric; worst is the largest (every metric: lower is
        better)."""
        values = np.asarray(self.values(controller, pool, metric))
        return (
            float(np.median(values)),
            float(np.percentile(values, 90)),
            float(values.max()),
        )

    def worst(
        self, controller: str, metric: str, pool: str = ALL, n: int = 5
    ) -> list[tuple[str, float]]:
        """The ``n`` cases with the largest value of ``metric`` (names to replay)."""
        pairs = [(c.name, self.rows[c.name][controller][pool][metric]) for c in self.cases]
        return sorted(pairs, key=lambda p: (-p[1], p[0]))[:n]

    def against_hpa(self, controller: str = POLICY) -> dict[str, float]:
        """The issue's goals on ``all``: share of cases with SLO minutes <= the HPA's, the
        worst excess over the HPA, and medians of instance-hours and actions vs the HPA's."""
        ours = self.values(controller, ALL, "slo_minutes")
        hpa = self.values("hpa", ALL, "slo_minutes") if "hpa" in self.controllers else ours
        excess = [a - b for a, b in zip(ours, hpa, strict=True)]
        acts = self.values(controller, ALL, "actions_per_hour")
        hpa_acts = (
            self.values("hpa", ALL, "actions_per_hour") if "hpa" in self.controllers else acts
        )
        return {
            "slo_not_above_hpa_share": sum(e <= 1e-9 for e in excess) / max(len(excess), 1),
            "slo_worst_excess_minutes": max(excess, default=0.0),
            "ih_vs_hpa_median": self.stats(controller, ALL, "ih_vs_hpa")[0],
            "ih_vs_oracle_median": self.stats(controller, ALL, "ih_vs_oracle")[0],
            "actions_per_hour_median": float(np.median(acts)) if acts else 0.0,
            "hpa_actions_per_hour_median": float(np.median(hpa_acts)) if hpa_acts else 0.0,
        }

    def by_family(self, controller: str = POLICY) -> dict[str, dict[str, float]]:
        """Per family, on ``all``: cases, median SLO minutes of ``controller`` and of the HPA,
        the share of cases with SLO minutes <= the HPA's, median instance-hours vs the HPA's
        and median actions per hour (where to look when tuning)."""
        out: dict[str, dict[str, float]] = {}
        has_hpa = "hpa" in self.controllers
        for family in dict.fromkeys(c.family for c in self.cases):
            names = [c.name for c in self.cases if c.family == family]
            ours = [self.rows[n][controller][ALL] for n in names]
            hpa = [self.rows[n]["hpa" if has_hpa else controller][ALL] for n in names]
            out[family] = {
                "cases": float(len(names)),
                "slo_minutes_median": float(np.median([r["slo_minutes"] for r in ours])),
                "hpa_slo_minutes_median": float(np.median([r["slo_minutes"] for r in hpa])),
                "slo_not_above_hpa_share": sum(
                    a["slo_minutes"] <= b["slo_minutes"] + 1e-9
                    for a, b in zip(ours, hpa, strict=True)
                )
                / len(names),
                "ih_vs_hpa_median": float(np.median([r["ih_vs_hpa"] for r in ours])),
                "actions_per_hour_median": float(np.median([r["actions_per_hour"] for r in ours])),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document: summary, goals, worst traces and every case's row."""
        summary = {
            name: {
                pool: {
                    metric: dict(
                        zip(("median", "p90", "worst"), self.stats(name, pool, metric), strict=True)
                    )
                    for metric in METRICS
                }
                for pool in self.pools
            }
            for name in self.controllers
        }
        return {
            "cases": [c.name for c in self.cases],
            "summary": summary,
            "goals": self.against_hpa() if POLICY in self.controllers else {},
            "families": self.by_family() if POLICY in self.controllers else {},
            "worst": {
                name: {m: self.worst(name, m) for m in ("slo_minutes", "under_accuracy")}
                for name in self.controllers
            },
            "rows": self.rows,
        }


_suite_args: tuple[Policy, SimModel, tuple[str, ...]] | None = None


def _init(policy: Policy, model: SimModel, compare: tuple[str, ...]) -> None:
    global _suite_args
    _suite_args = (policy, model, compare)


def _one(case: Case) -> tuple[str, Row]:
    assert _suite_args is not None
    return case.name, run_case(case, *_suite_args)


def run_suite(
    policy: Policy,
    model: SimModel,
    *,
    count: int = 200,
    first_seed: int = 0,
    compare: Sequence[str] = BASELINES,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SuiteResult:
    """Run ``count`` seeded cases (see ``cases``) through the policy and ``compare``."""
    chosen = cases(count, first_seed)
    result = SuiteResult(chosen)
    procs = workers if workers is not None else (os.cpu_count() or 1)
    names = tuple(compare)
    if procs <= 1 or len(chosen) <= 1:
        for i, case in enumerate(chosen):
            result.rows[case.name] = run_case(case, policy, model, names)
            if progress is not None:
                progress(i + 1, len(chosen))
        return result
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        procs, context, initializer=_init, initargs=(policy, model, names)
    ) as executor:
        # the long cases (several days) first, so no worker is left with one at the end
        order = sorted(chosen, key=lambda c: c.family not in ("slow-week", "growth", "dst"))
        futures = [executor.submit(_one, case) for case in order]
        for done, future in enumerate(as_completed(futures), start=1):
            name, row = future.result()
            result.rows[name] = row
            if progress is not None:
                progress(done, len(chosen))
    return result


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def render_html(result: SuiteResult, title: str = "senex-scale simulate --suite") -> str:
    """One self-contained HTML page: per metric, a strip plot per controller and pool (every
    case a dot, median and p90 marked), the summary table and the worst traces."""
    from html import escape

    colours = {
        "policy": "#1f6feb",
        "seed-script": "#d1242f",
        "hpa": "#8250df",
        "static": "#6e7781",
        "oracle": "#1a7f37",
    }
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{len(result.cases)} traces: {escape(', '.join(FAMILIES))} "
        f"(seeds {result.cases[0].seed}..{result.cases[-1].seed}).</p>"
        if result.cases
        else "",
    ]
    width, row_h, left = 640, 18, 150
    for metric in METRICS:
        parts.append(f"<h2>{metric}</h2>")
        for pool in result.pools:
            rows = result.controllers
            height = row_h * len(rows) + 24
            every = [v for name in rows for v in result.values(name, pool, metric)]
            finite = [v for v in every if math.isfinite(v)]
            top = max(finite, default=1.0) or 1.0
            svg = [
                f"<svg width='{width + left + 20}' height='{height}' "
                "xmlns='http://www.w3.org/2000/svg' font-size='11'>",
                f"<text x='0' y='12' font-weight='bold'>{escape(pool)}</text>",
            ]
            for r, name in enumerate(rows):
                y = 24 + r * row_h + row_h / 2
                colour = colours.get(name, "#333")
                svg.append(f"<text x='0' y='{y + 4}'>{escape(name)}</text>")
                values = result.values(name, pool, metric)
                for value in values:
                    x = left + width * min(value, top) / top
                    svg.append(
                        f"<circle cx='{x:.1f}' cy='{y}' r='2.5' fill='{colour}' "
                        "fill-opacity='0.35'/>"
                    )
                median, p90, _ = result.stats(name, pool, metric)
                for mark, dash in ((median, ""), (p90, " stroke-dasharray='2,2'")):
                    x = left + width * min(mark, top) / top
                    svg.append(
                        f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{y - 7}' y2='{y + 7}' "
                        f"stroke='black'{dash}/>"
                    )
            svg.append(
                f"<text x='{left + width}' y='{height - 2}' text-anchor='end'>{_fmt(top)}</text>"
            )
            svg.append("</svg>")
            parts.append("".join(svg))
    parts.append("<h2>summary (median / p90 / worst)</h2><table><tr><th>pool</th>")
    parts.append("<th>controller</th>" + "".join(f"<th>{m}</th>" for m in METRICS) + "</tr>")
    for pool in result.pools:
        for name in result.controllers:
            cells = "".join(
                "<td>" + " / ".join(_fmt(v) for v in result.stats(name, pool, m)) + "</td>"
                for m in METRICS
            )
            parts.append(f"<tr><td>{escape(pool)}</td><td>{escape(name)}</td>{cells}</tr>")
    if POLICY in result.controllers:
        parts.append("</table><h2>the policy by family (all pools)</h2><table><tr>")
        columns = ("family", *next(iter(result.by_family().values()), {}).keys())
        parts.append("".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>")
        for family, summary in result.by_family().items():
            cells = "".join(f"<td>{_fmt(v)}</td>" for v in summary.values())
            parts.append(f"<tr><td>{escape(family)}</td>{cells}</tr>")
    parts.append("</table><h2>worst traces (replay with --case NAME)</h2><ul>")
    for name in result.controllers:
        for metric in ("slo_minutes", "under_accuracy"):
            worst = ", ".join(f"{n} ({_fmt(v)})" for n, v in result.worst(name, metric))
            parts.append(f"<li>{escape(name)}, {metric}: {escape(worst)}</li>")
    parts.append("</ul></body></html>")
    return "\n".join(parts)


__all__ = [
    "ALL",
    "METRICS",
    "POLICY",
    "Case",
    "SuiteResult",
    "cases",
    "parse_case",
    "render_html",
    "run_case",
    "run_suite",
]
