"""Your own traffic as a trace: ``trace from-prometheus`` and ``trace from-store``.

Both write the simulator's trace format (``simulate/trace.py``, ``docs/traces.md``), so
``senex-scale simulate --policy mine.toml --trace mine.csv`` answers "what would this
policy have done on my last week".

``from-prometheus`` asks Prometheus for one demand series per column with range queries
(``/api/v1/query_range``), cut into chunks of at most ``MAX_POINTS`` points (Prometheus
refuses a query of more than 11,000 points per series). The queries are derived from the
policy (``default_queries``) and each can be replaced with ``--query COLUMN=PROMQL``.

``from-store`` reads the controller's own samples (the ``samples`` table) and turns the
rules' readings into demand (``store_columns``): WebSocket connections are counted as they
are; CPU and busy worker slots are turned back into requests and tasks through the
capacity model the simulator replays them with, so the simulator sees the load the pool
carried.

Gaps: the trace format has no missing value (an empty field is an error), and demand is
held between rows (step-hold). A gap in every column is therefore left out (the row before
holds through it); a gap in some columns holds their last value; rows before every column
has its first value are dropped. Every gap is listed in the file's comments and counted on
stderr, so a held stretch is never mistaken for measured load.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from senex_scale.errors import InputError, SourceError
from senex_scale.policy.durations import format_duration
from senex_scale.policy.models import Policy, TargetRule, ThresholdRule
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.trace import (
    HTTP_RPS,
    TASKS_PREFIX,
    WS_CONNECTIONS,
    Trace,
    is_demand_column,
    write_trace,
)

MAX_POINTS = 11_000
"""Prometheus' limit on points per series in one range query (``query_range``)."""
MAX_ROWS = 10_000_000
"""Most rows a capture writes (a year at 3 s): more is a typo in --since or --step."""
SHOWN_GAPS = 20
"""Gaps listed one by one in the file's comments (per column); the rest are counted."""

REQUESTS_METRIC = "django_http_requests_total"
WEBSOCKETS_METRIC = "senex_websocket_connections"
TASKS_METRIC = "celery_tasks_total"
"""The names ``senex_scale.contrib.django.metrics`` exports (django-prometheus' for HTTP)."""

_SELECTOR = re.compile(r"\{([^{}]*\bjob\s*=~?\s*\"[^\"]*\"[^{}]*)\}")


@dataclass(frozen=True)
class DemandQuery:
    """The PromQL of one trace column and where it came from."""

    column: str
    promql: str
    origin: str


@dataclass
class Gap:
    """A stretch of one column without a value, held at the value before it."""

    column: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Capture:
    """A captured trace, what it was made of, and its gaps."""

    trace: Trace
    comment: list[str]
    gaps: list[Gap] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Columns left out because they had no data at all."""
    trimmed: float = 0.0
    """Seconds cut at the start, before every column had its first value."""


# --------------------------------------------------------------------------- queries


def _selector(rule_query: str) -> str | None:
    """The label matchers of the first selector with a ``job`` label: ``job="django"``."""
    match = _SELECTOR.search(rule_query)
    return match.group(1).strip() if match else None


def default_queries(policy: Policy, step: float) -> tuple[list[DemandQuery], list[str]]:
    """The demand queries a policy implies, and notes on what could not be derived.

    Per web pool: ``http_rps`` is the rate of ``django_http_requests_total`` under the job
    selector of the pool's Prometheus rules; ``ws_connections`` is ``sum(...)`` of the pool's
    rule with ``signal = "connections"`` (else ``senex_websocket_connections`` under the
    selector). Per worker pool with queues: the tasks its workers finish per minute
    (``celery_tasks_total``), in the column of its first queue (the simulator sums a pool's
    queue columns, and ``celery_tasks_total`` has no queue label). The rate window is
    ``max(1m, step)``, so consecutive points never skip a sample.
    """
    prometheus = {name for name, spec in policy.sources.items() if spec.type == "prometheus"}
    window = promql_range(max(60.0, step))
    queries: dict[str, DemandQuery] = {}
    notes: list[str] = []
    for name, pool in policy.pools.items():
        rules = [
            r
            for r in policy.rules
            if getattr(r, "pool", None) == name
            and isinstance(r, ThresholdRule | TargetRule)
            and r.enabled
            and r.metric.source in prometheus
        ]
        found = [(r.name, s) for r in rules if (s := _selector(r.metric.query)) is not None]
        selector = found[0][1] if found else None
        origin = f"pool {name}: {{{selector}}} from rule {found[0][0]}" if found else ""
        if pool.kind == "web":
            connections = next((r for r in rules if r.metric.signal == "connections"), None)
            if selector is not None and HTTP_RPS not in queries:
                queries[HTTP_RPS] = DemandQuery(
                    HTTP_RPS,
                    f"sum(rate({REQUESTS_METRIC}{{{selector}}}[{window}]))",
                    origin,
                )
            if connections is not None and WS_CONNECTIONS not in queries:
                queries[WS_CONNECTIONS] = DemandQuery(
                    WS_CONNECTIONS,
                    f"sum({connections.metric.query.strip()})",
                    f"pool {name}: rule {connections.name}",
                )
            elif selector is not None and WS_CONNECTIONS not in queries:
                queries[WS_CONNECTIONS] = DemandQuery(
                    WS_CONNECTIONS, f"sum({WEBSOCKETS_METRIC}{{{selector}}})", origin
                )
            if selector is None:
                notes.append(
                    f"pool {name}: no Prometheus rule with a job selector; give "
                    "--query http_rps=... (and ws_connections=...)"
                )
        elif pool.queues:
            column = f"{TASKS_PREFIX}{pool.queues[0]}"
            if selector is None:
                notes.append(
                    f"pool {name}: no Prometheus rule with a job selector; "
                    f"give --query {column}=..."
                )
                continue
            queries[column] = DemandQuery(
                column,
                f"sum(rate({TASKS_METRIC}{{{selector}}}[{window}])) * 60",
                origin
                + (f" (queues {', '.join(pool.queues)} together)" if len(pool.queues) > 1 else ""),
            )
    return list(queries.values()), notes


def parse_overrides(
    items: Sequence[str], flag: str = "--query", what: str = "PROMQL"
) -> dict[str, str]:
    """``--query COLUMN=PROMQL`` items; ``COLUMN=`` (empty) leaves the column out."""
    from senex_scale.plugins import did_you_mean

    out: dict[str, str] = {}
    for item in items:
        column, sep, promql = item.partition("=")
        column = column.strip()
        if not sep:
            raise InputError(f'{flag}: "{item}" is not COLUMN={what}')
        if not is_demand_column(column):
            hint = did_you_mean(column, [HTTP_RPS, WS_CONNECTIONS, "tasks_trading"])
            raise InputError(
                f'{flag}: "{column}" is not a demand column (http_rps, ws_connections or '
                f"tasks_<queue>){hint}"
            )
        if column in out:
            raise InputError(f'{flag}: column "{column}" is given twice')
        out[column] = promql.strip()
    return out


def promql_range(seconds: float) -> str:
    """A PromQL range literal in whole seconds (``60s``)."""
    return f"{max(1, math.ceil(seconds))}s"


# --------------------------------------------------------------------------- range queries


def chunks(
    start: float, end: float, step: float, max_points: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """``[start, end]`` on the grid ``start + k*step`` cut into ranges of at most
    ``max_points`` points each; consecutive ranges do not share a point."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    points = math.floor((end - start) / step + 1e-9) + 1
    out: list[tuple[float, float]] = []
    first = 0
    while first < points:
        last = min(points, first + max_points) - 1
        out.append((start + first * step, start + last * step))
        first = last + 1
    return out


class RangeReader:
    """``/api/v1/query_range`` through the sources' bounded HTTP reads."""

    def __init__(
        self, url: str, options: Mapping[str, Any] | None = None, *, timeout: float = 30.0
    ):
        from senex_scale.sources.prometheus import PrometheusSettings, http_client

        base, username, password = _split_credentials(url)
        opts: dict[str, Any] = {"timeout": timeout} | dict(options or {}) | {"url": base}
        opts["timeout"] = max(float(opts.get("timeout", timeout)), timeout)
        opts.pop("deadline", None)
        if username is not None:
            for key in ("bearer_token", "token_env", "password_env"):
                opts.pop(key, None)
            opts["username"] = username
            opts["password"] = password or ""
        for key in ("push_down_window", "push_down_function", "push_down_resolution"):
            opts.pop(key, None)
        try:
            self.settings = PrometheusSettings.model_validate(opts)
        except Exception as exc:  # pydantic's ValidationError: name the flag, never the value
            raise InputError(f"--url: {_first_error(exc)}") from None
        self.shown = redact(url)
        self.endpoint = f"{self.settings.url}/api/v1/query_range"
        self._client = http_client("prometheus", self.settings, accept="application/json")

    def close(self) -> None:
        self._client.close()

    def query(
        self, column: str, promql: str, start: float, end: float, step: float
    ) -> list[tuple[float, float]]:
        """(time, value) pairs of ``promql`` on the grid; NaN and infinite values left out."""
        import httpx

        from senex_scale.sources.prometheus import (
            promql_duration,
            read_bounded,
            status_error,
            transport_error,
        )

        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": promql_duration(step),
            "timeout": promql_duration(self.settings.timeout),
        }
        try:
            answer = read_bounded(
                self._client,
                "prometheus",
                self.endpoint,
                self.settings,
                params=params,
                shown=self.shown,
            )
        except httpx.HTTPError as exc:
            raise transport_error("prometheus", self.shown, self.settings.timeout, exc) from exc
        try:
            body = json.loads(answer.body)
        except (ValueError, RecursionError):
            if answer.status != 200:
                raise status_error("prometheus", self.shown, answer.status) from None
            raise SourceError(
                f"{self.shown} did not answer with Prometheus API JSON", temporary=False
            ) from None
        if isinstance(body, dict) and body.get("status") == "error":
            kind = str(body.get("errorType", "")) or f"HTTP {answer.status}"
            message = str(body.get("error", "")) or "no message"
            if kind in ("bad_data", "execution"):
                raise InputError(
                    f"--query {column}: Prometheus {kind}: {message} (query: {promql})"
                )
            raise SourceError(f"{self.shown}: Prometheus {kind}: {message}")
        if answer.status != 200:
            raise status_error("prometheus", self.shown, answer.status)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            kind = str(data.get("resultType")) if isinstance(data, dict) else ""
            raise InputError(
                f"--query {column}: the query returned a {kind or 'malformed answer'}, not a "
                f"series over time (query: {promql})"
            )
        result = data.get("result")
        if not isinstance(result, list):
            raise SourceError(f"{self.shown}: malformed query_range answer", temporary=False)
        if len(result) > 1:
            raise InputError(
                f"--query {column}: the query returned {len(result)} series; a demand column is "
                f"one: wrap it in sum(...) (query: {promql})"
            )
        pairs: list[tuple[float, float]] = []
        for series in result:
            for pair in series.get("values", []) if isinstance(series, dict) else []:
                try:
                    at, value = float(pair[0]), float(pair[1])
                except (TypeError, ValueError, IndexError):
                    raise SourceError(
                        f"{self.shown}: malformed sample {pair!r}", temporary=False
                    ) from None
                if math.isfinite(value):
                    if value < 0:
                        raise InputError(
                            f"--query {column}: value {value:g} at {iso(at)} is negative; a demand "
                            f"column is a rate or a count (query: {promql})"
                        )
                    pairs.append((at, value))
        return pairs


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        for error in errors():
            where = ".".join(str(p) for p in error.get("loc", ()))
            return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))
    return "invalid"


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without ``user:password@`` and the two parts (URL-decoded)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user), unquote(password)


def redact(url: str) -> str:
    """``url`` with a password shown as ``***`` (``user:***@host``)."""
    from senex_scale.store.sql import redact_url

    return redact_url(url)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def from_prometheus(
    reader: RangeReader,
    queries: Sequence[DemandQuery],
    *,
    start: float,
    end: float,
    step: float,
    timezone: str | None = None,
    name: str = "prometheus",
    progress: Callable[[str], None] | None = None,
    max_points: int = MAX_POINTS,
) -> Capture:
    """Every query over ``[start, end]`` at ``step``, chunked, assembled into a trace."""
    parts = chunks(start, end, step, max_points)
    total = len(parts) * len(queries)
    done = 0
    columns: dict[str, dict[int, float]] = {}
    for query in queries:
        values: dict[int, float] = {}
        for first, last in parts:
            pairs = reader.query(query.column, query.promql, first, last, step)
            values.update((_key(at), value) for at, value in pairs)
            done += 1
            if progress is not None:
                progress(
                    f"[{done}/{total}] {query.column} {iso(first)} .. {iso(last)}: "
                    f"{len(pairs)} of {math.floor((last - first) / step + 1e-9) + 1} points"
                )
        columns[query.column] = values
    header = [
        f"source: Prometheus {reader.shown}, {iso(start)} .. {iso(end)} "
        f"every {format_duration(step)}"
    ]
    header += [
        f"{q.column} = {q.promql}" + (f"  ({q.origin})" if q.origin else "") for q in queries
    ]
    return assemble(columns, step=step, name=name, timezone=timezone, header=header, end=end)


def _key(at: float) -> int:
    """A grid instant as integer milliseconds (float times from JSON compare exactly so)."""
    return round(at * 1000)


# --------------------------------------------------------------------------- assembling


def assemble(
    columns: Mapping[str, Mapping[int, float]],
    *,
    step: float,
    name: str,
    timezone: str | None,
    header: Sequence[str],
    end: float | None = None,
) -> Capture:
    """Columns of (millisecond instant -> value) as a trace: empty columns dropped, the start
    trimmed to where every column has a value, gaps held and listed (module docstring)."""
    dropped = [c for c, values in columns.items() if not values]
    kept = {c: values for c, values in columns.items() if values}
    if not kept:
        raise SourceError(
            "no data: every query returned nothing in the range "
            f"({', '.join(columns) or 'no columns'})",
            temporary=False,
        )
    first_all = max(min(values) for values in kept.values())
    keys = sorted({k for values in kept.values() for k in values if k >= first_all})
    if len(keys) > MAX_ROWS:
        raise InputError(f"--since/--step: {len(keys):,} rows, more than {MAX_ROWS:,}")
    times = np.array(keys, dtype=np.float64) / 1000.0
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    gaps: list[Gap] = []
    last_time = float(times[-1]) if end is None else max(float(times[-1]), end)
    for column, values in kept.items():
        raw = np.array([values.get(k, np.nan) for k in keys], dtype=np.float64)
        present = ~np.isnan(raw)
        index = np.where(present, np.arange(len(raw)), 0)
        np.maximum.accumulate(index, out=index)
        arrays[column] = raw[index]
        gaps.extend(
            _gaps(column, sorted(k / 1000.0 for k in values if k >= first_all), step, last_time)
        )
    trimmed = max(0.0, first_all / 1000.0 - min(min(v) for v in kept.values()) / 1000.0)
    trace = Trace(name, times, arrays, timezone)
    comment = list(header)
    if dropped:
        comment.append(f"no data at all, left out: {', '.join(dropped)}")
    if trimmed:
        comment.append(
            f"first {format_duration(trimmed)} left out: not every column had a value yet"
        )
    comment.append(
        "gaps are held at the value before them (the trace format has no missing value): "
        + (summarise_gaps(gaps) if gaps else "none")
    )
    for column in kept:
        mine = [g for g in gaps if g.column == column]
        for gap in mine[:SHOWN_GAPS]:
            comment.append(
                f"gap {column}: {iso(gap.start)} .. {iso(gap.end)} "
                f"({format_duration(round(gap.seconds))})"
            )
        if len(mine) > SHOWN_GAPS:
            comment.append(f"gap {column}: {len(mine) - SHOWN_GAPS} more")
    return Capture(trace, comment, gaps, dropped, trimmed)


def _gaps(column: str, times: list[float], step: float, end: float) -> list[Gap]:
    """Stretches longer than 1.5 steps between a column's values (and after its last one)."""
    out: list[Gap] = []
    for before, after in itertools.pairwise(times):
        if after - before > 1.5 * step:
            out.append(Gap(column, before + step, after))
    if times and end - times[-1] > 1.5 * step:
        out.append(Gap(column, times[-1] + step, end))
    return out


def summarise_gaps(gaps: Iterable[Gap]) -> str:
    """``http_rps 3 gaps (4m15s), ws_connections 1 gap (15s)``."""
    per: dict[str, list[Gap]] = {}
    for gap in gaps:
        per.setdefault(gap.column, []).append(gap)
    return ", ".join(
        f"{column} {len(items)} gap{'s' if len(items) != 1 else ''} "
        f"({format_duration(round(sum(g.seconds for g in items)))})"
        for column, items in per.items()
    )


def check_out(out: str) -> tuple[Path, Path]:
    """The file and its directory for ``--out``; an ``InputError`` before any work when the
    file cannot be written there."""
    target = Path(out)
    if target.is_dir():
        raise InputError(f"--out: {out} is a directory")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"--out: directory {directory} does not exist")
    return target, directory


def write_atomic(capture: Capture, out: str, *, command: str) -> None:
    """Write the trace to ``out`` through a temporary file in the same directory (renamed
    into place when complete, so a failure leaves no partial file); ``-``: stdout."""
    import sys

    comment = "\n".join([f"Captured by: {command}", *capture.comment])
    if out == "-":
        write_trace(capture.trace, sys.stdout, comment=comment)
        return
    target, directory = check_out(out)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            write_trace(capture.trace, file, comment=comment)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- from the store

PER_INSTANCE = ("cpu", "busy", "connections")


@dataclass(frozen=True)
class StoreColumn:
    """How one trace column is made from a rule's stored samples."""

    column: str
    rule: str
    how: str
    """"sum": the samples at one time added up; "cpu": web CPU % per instance -> requests/s;
    "busy": busy worker slots % per instance -> tasks/min (through the capacity model)."""


def store_columns(policy: Policy, overrides: Mapping[str, str] | None = None) -> list[StoreColumn]:
    """The columns a policy's recorded rules give: per web pool its ``cpu`` rule as
    ``http_rps`` and its ``connections`` rule as ``ws_connections``; per worker pool its
    ``busy`` rule as ``tasks_<first queue>``. ``overrides``: COLUMN -> RULE taken as demand
    itself (the values at one time summed), or "" to leave the column out."""
    overrides = dict(overrides or {})
    known = {r.name for r in policy.rules}
    out: dict[str, StoreColumn] = {}
    for name, pool in policy.pools.items():
        rules = [
            r
            for r in policy.rules
            if getattr(r, "pool", None) == name
            and isinstance(r, ThresholdRule | TargetRule)
            and r.enabled
        ]
        by_signal = {r.metric.signal: r for r in reversed(rules)}
        if pool.kind == "web":
            if (rule := by_signal.get("cpu")) is not None:
                out.setdefault(HTTP_RPS, StoreColumn(HTTP_RPS, rule.name, "cpu"))
            if (rule := by_signal.get("connections")) is not None:
                out.setdefault(WS_CONNECTIONS, StoreColumn(WS_CONNECTIONS, rule.name, "sum"))
        elif pool.queues and (rule := by_signal.get("busy")) is not None:
            column = f"{TASKS_PREFIX}{pool.queues[0]}"
            out.setdefault(column, StoreColumn(column, rule.name, "busy"))
    for column, given in overrides.items():
        if not given:
            out.pop(column, None)
            continue
        if given not in known:
            from senex_scale.plugins import did_you_mean

            hint = did_you_mean(given, sorted(known))
            raise InputError(f'--column {column}: no rule "{given}" in the policy{hint}')
        out[column] = StoreColumn(column, given, "sum")
    return list(out.values())


def from_store(
    samples: Callable[[str, float], Sequence[Any]],
    policy: Policy,
    columns: Sequence[StoreColumn],
    *,
    since: float,
    until: float,
    model: SimModel | None = None,
    timezone: str | None = None,
    name: str = "store",
    shown: str = "",
) -> Capture:
    """The store's samples (``samples(rule, since)``: the ``Store.samples`` method) between
    ``since`` and ``until`` as a trace of ``columns``."""
    model = model or SimModel()
    pool_of = {r.name: getattr(r, "pool", None) for r in policy.rules}
    data: dict[str, dict[int, float]] = {}
    # connections first: their CPU share is taken out of the CPU before it becomes requests
    ordered = sorted(columns, key=lambda c: c.how == "cpu")
    for col in ordered:
        per_time: dict[int, list[float]] = {}
        for sample in samples(col.rule, since):
            if sample.at > until:
                break
            per_time.setdefault(_key(sample.at), []).append(float(sample.value))
        pool = pool_of.get(col.rule) or ""
        params = model.pool(pool)
        values: dict[int, float] = {}
        for key, items in per_time.items():
            if col.how == "cpu":
                # the CPU above idle is the pool's work (model.py): requests / rps_per_instance
                # + connections * ws_cpu_per_1000 / 1e5; what connections do not explain is requests
                work = sum(max(0.0, v - params.base_cpu) for v in items) / 100
                ws = data.get(WS_CONNECTIONS, {}).get(key, 0.0)
                value = (work - ws * params.ws_cpu_per_1000 / 1e5) * params.rps_per_instance
            elif col.how == "busy":
                value = sum(max(0.0, v) for v in items) / 100 * params.tasks_per_minute
            else:
                value = sum(items)
            values[key] = max(0.0, value)
        data[col.column] = values
    data = {col.column: data[col.column] for col in columns}
    step = policy.controller.interval
    header = [
        f"source: the controller's samples in {shown or 'the store'}, {iso(since)} .. {iso(until)}"
    ]
    for col in columns:
        if col.how == "cpu":
            how = (
                "(sum over instances of (CPU % - base_cpu) / 100"
                " - ws_connections * ws_cpu_per_1000 / 1e5) * rps_per_instance"
            )
        elif col.how == "busy":
            how = "sum over instances of busy % / 100 * tasks_per_minute"
        else:
            how = "sum of the samples at each time"
        header.append(f"{col.column} = rule {col.rule}: {how}")
    return assemble(data, step=step, name=name, timezone=timezone, header=header, end=None)
