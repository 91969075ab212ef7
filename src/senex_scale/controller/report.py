"""``senex-scale status`` and ``history``: the status page's picture as terminal tables.

Both read the store directly (the state URL of the policy, or ``--state``), so they work
whether or not a controller is running, on the same host or against a shared PostgreSQL.

Every cell is a ``Text``, never a markup string: reasons and errors come from servers,
runbooks and files, and "[/x]" or "[link=...]" in them must print as written whatever
console prints these tables.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from senex_scale.store.sql import DecisionRow


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cells(*values: str | Text) -> list[Text]:
    """Table cells that Rich shows as written (``Text`` is never parsed as markup)."""
    return [value if isinstance(value, Text) else Text(value) for value in values]


def _num(value: float | None) -> str:
    if value is None:
        return "missing"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def hosts_table(hosts: list[dict[str, Any]], now: float) -> Table:
    """The controller's view of its hosts: reachable, lost, instances per pool."""
    table = Table(title="Hosts", title_justify="left")
    for column in ("host", "address", "state", "instances", "last error"):
        table.add_column(column)
    for h in hosts:
        if h.get("lost"):
            state = Text("lost", style="red")
        elif h.get("reachable") is False:
            state = Text(f"not answering since {_ago(now - (h.get('since') or now))}", "yellow")
        else:
            state = Text("reachable" if h.get("reachable") else "not asked yet")
        pools = "; ".join(f"{p} {ns}" for p, ns in (h.get("pools") or {}).items())
        table.add_row(
            *_cells(str(h["host"]), str(h.get("address", "")), state, pools, h.get("error") or "")
        )
    return table


def status_view(
    status: dict[str, Any],
    decisions: list[DecisionRow],
    now: float,
    controllers: dict[str, dict[str, Any]] | None = None,
) -> RenderableType:
    """Header, pools, rules, problems, controllers with their actions in flight, and recent
    decisions."""
    if not status:
        return Text("no tick recorded yet in this state store (is the controller running?)")
    parts: list[RenderableType] = []
    flags = [status.get("role", "?")]
    if status.get("dry_run"):
        flags.append("dry-run")
    if status.get("paused"):
        flags.append("paused")
    head = (
        f"{' · '.join(flags)} · lock {status.get('lock')} · last tick "
        f"{_ago(now - status['at'])} · policy {status.get('policy')} · state {status.get('state')}"
    )
    parts.append(Text(head, style="bold"))
    problems = [f"source {s} is down: {e}" for s, e in status.get("source_errors", {}).items()]
    if status.get("reload_error"):
        problems.append(f"policy reload refused: {status['reload_error']}")
    problems += [f"{p['pool']}: {p['error']}" for p in status.get("pools", []) if p.get("error")]
    for problem in problems:
        parts.append(Text(problem, style="red"))

    pools = Table(title="Pools", title_justify="left")
    for column in ("pool", "current", "desired", "min", "max"):
        pools.add_column(column, justify="left" if column == "pool" else "right")
    pools.add_column("why")
    for p in status.get("pools", []):
        style = "yellow" if p["desired"] != p["current"] else ""
        why = "\n".join(p.get("reasons", []))
        if p.get("backoff"):
            why += f"\nbacking off after {p['backoff']['failures']} failure(s)"
        unknown = "?" if p["current"] is None else None
        pools.add_row(
            *_cells(
                str(p["pool"]),
                unknown or str(p["current"]),
                Text(unknown or str(p["desired"]), style=style),
                str(p["min"]),
                str(p["max"]),
                why or str(p.get("error") or ""),
            )
        )
    parts.append(pools)
    if status.get("hosts"):
        parts.append(hosts_table(status["hosts"], now))

    rules = Table(title="Rules", title_justify="left")
    for column in ("rule", "pool", "value", "against", "vote", "breaching"):
        rules.add_column(column, justify="right" if column in ("value", "breaching") else "left")
    for r in status.get("rules", []):
        against = []
        for key in ("out", "in"):
            if r.get(key):
                against.append(f"{r[key]['op']} {r[key]['value']:g}")
        if r.get("target") is not None:
            against.append(f"target {r['target']:g}")
        held = f"{r['held']:.0f}s" if r.get("held") else ""
        vote_style = {"out": "red", "in": "blue", "missing": "magenta"}.get(r["vote"], "")
        rules.add_row(
            *_cells(
                str(r["rule"]),
                str(r.get("pool") or "-"),
                _num(r.get("value")),
                ", ".join(against),
                Text(str(r["vote"]), style=vote_style),
                held,
            )
        )
    parts.append(rules)
    if controllers:
        parts.append(controllers_table(controllers, now))
    if decisions:
        parts.append(history_table(decisions, now, title="Recent decisions"))
    return Group(*parts)


def history_table(rows: list[DecisionRow], now: float | None = None, title: str = "") -> Table:
    """Decisions as a table, newest first."""
    now = time.time() if now is None else now
    table = Table(title=title or None, title_justify="left")
    for column in ("id", "when", "pool/rule", "change", "outcome", "reasons"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for row in rows:
        change = f"{row.current} -> {row.desired}" if row.kind == "scale" else row.kind
        style = {"done": "green", "failed": "red", "partial": "red", "interrupted": "red"}.get(
            row.outcome, ""
        )
        reasons = list(row.reasons)
        if row.detail.get("failed"):
            reasons += [f"{n}: {why}" for n, why in row.detail["failed"].items()]
        if row.detail.get("error"):
            reasons.append(str(row.detail["error"]))
        table.add_row(
            *_cells(
                str(row.id),
                f"{_when(row.at)} ({_ago(now - row.at)})",
                row.pool or row.rule or "controller",
                change,
                Text(row.outcome, style=style),
                "\n".join(str(reason) for reason in reasons),
            )
        )
    return table


def controllers_table(controllers: dict[str, dict[str, Any]], now: float) -> Table:
    """Every controller on this state: role, fence, last tick, actions in flight."""
    table = Table(title="Controllers", title_justify="left")
    for column in ("controller", "role", "fence", "last tick", "in flight"):
        table.add_column(column, justify="right" if column == "fence" else "left")
    for cid, doc in sorted(controllers.items()):
        age = now - float(doc.get("at", 0.0))
        stale = age > 3 * float(doc.get("interval", 15.0)) + 5
        jobs = [
            f"{j['key']}: {j['what']} for {now - float(j['since']):.0f}s"
            for j in doc.get("in_flight", [])
        ]
        role = str(doc.get("role", "?")) + (" (gone?)" if stale else "")
        table.add_row(
            *_cells(
                Text(cid),
                Text(role, style="bold" if doc.get("role") == "leader" else ""),
                str(doc.get("fence", "")),
                _ago(age),
                Text("\n".join(jobs) or "none"),
            )
        )
    return table
