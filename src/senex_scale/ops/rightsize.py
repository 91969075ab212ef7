"""``senex-scale rightsize``: limits, idle workers and queues from what was recorded.

The seed's "Cost Optimization" runs ``podman stats --no-stream`` once and says "adjust limits
based on actual usage", and "if workers are idle <30% of the time, reduce count; if queue
length consistently >50, add workers" (read as meant: a worker *busy* less than 30 % of the
time is idle enough to consolidate). Here the numbers come from a whole window:

- the controller's state store (``--state``, or the policy's ``controller.state``): the
  instance count per tick (``pool_ticks``), and the samples and per-tick values of the rules
  the policy attaches to the pool, by their metric's ``signal``: ``cpu`` (percent of one
  core per instance), ``memory`` (bytes per instance), ``busy`` (percent of a worker's
  concurrency in use), ``queue`` (tasks waiting);
- Prometheus (``--prometheus URL``), when given: CPU and resident memory per instance of the
  pool's job (``process_cpu_seconds_total``, ``process_resident_memory_bytes`` by default,
  ``--cpu-query``/``--memory-query`` to use cAdvisor's container metrics instead).

Recommendations: a CPU limit of p95 plus ``--headroom`` (rounded up to 0.1 core), a memory
limit likewise (rounded up to 64 MiB); for a worker pool busy under ``--idle-below`` % on
average, the count that keeps the p95 of the pool's total busy work under 70 % per worker
(not below the pool's ``min``), with the instance-hours and money that saves at ``--price``
per instance-hour; a queue above ``--queue-above`` in at least 80 % of the window needs a
worker. Read-only: nothing is changed.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import typer
from rich.table import Table

from senex_scale.errors import InputError, PermanentError, SourceError
from senex_scale.ops.common import human_bytes, out, print_json

MIB = 1024 * 1024
BUSY_TARGET = 70.0
"""Per-worker busy percentage the consolidated count is sized for (the HPA's usual target)."""
CONSISTENTLY = 0.8
"""Share of the window a queue must stay above ``--queue-above`` to need a worker."""
DEFAULT_CPU_QUERY = 'rate(process_cpu_seconds_total{{job="{pool}"}}[5m]) * 100'
DEFAULT_MEMORY_QUERY = 'process_resident_memory_bytes{{job="{pool}"}}'


# --------------------------------------------------------------------------- pure parts


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile (linear), None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    # "inclusive" interpolates linearly between order statistics, as numpy.percentile does
    return statistics.quantiles([float(v) for v in values], n=100, method="inclusive")[94]


def instance_hours(ticks: Sequence[tuple[float, int]]) -> tuple[float, float, float]:
    """(instance-hours, hours observed, mean count) from (time, count) ticks, oldest first.

    Each tick's count holds until the next tick, but a gap longer than three median
    intervals (the controller was down) counts only one median interval."""
    if len(ticks) < 2:
        return 0.0, 0.0, float(ticks[0][1]) if ticks else 0.0
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(ticks)]
    median = statistics.median(gaps)
    seconds = inst = 0.0
    for (_, count), gap in zip(ticks, gaps, strict=False):
        used = gap if gap <= 3 * median else median
        seconds += used
        inst += count * used
    return inst / 3600, seconds / 3600, inst / seconds if seconds else 0.0


def cpu_limit(p95_percent: float, headroom: float) -> float:
    """Cores: p95 (percent of one core) plus headroom, rounded up to 0.1, at least 0.1."""
    return max(math.ceil(p95_percent / 100 * (1 + headroom) * 10 - 1e-9) / 10, 0.1)


def memory_limit(p95_bytes: float, headroom: float) -> int:
    """Bytes: p95 plus headroom, rounded up to 64 MiB."""
    step = 64 * MIB
    return max(math.ceil(p95_bytes * (1 + headroom) / step), 1) * step


@dataclass(frozen=True, slots=True)
class Usage:
    """What was recorded for one pool in the window."""

    ticks: list[tuple[float, int]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """Percent of one core, per instance sample."""
    memory: list[float] = field(default_factory=list)
    """Bytes, per instance sample."""
    busy: list[tuple[float, float]] = field(default_factory=list)
    """(time, mean busy percent over the pool's instances)."""
    queues: dict[str, list[float]] = field(default_factory=dict)
    """Rule name -> queue lengths."""


@dataclass(frozen=True, slots=True)
class Advice:
    """The recommendation for one pool."""

    pool: str
    kind: str
    window_hours: float
    mean_instances: float
    instance_hours: float
    cost: float | None
    cpu_p95_percent: float | None = None
    cpu_limit_cores: float | None = None
    memory_p95_bytes: float | None = None
    memory_limit_bytes: int | None = None
    busy_mean_percent: float | None = None
    idle: bool = False
    recommended_instances: int | None = None
    saved_instance_hours: float = 0.0
    saved: float | None = None
    saved_per_30_days: float | None = None
    queues_needing_worker: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def advise(
    pool: str,
    kind: str,
    minimum: int,
    usage: Usage,
    *,
    price: float | None,
    headroom: float = 0.3,
    idle_below: float = 30.0,
    queue_above: float = 50.0,
) -> Advice:
    """Limits, consolidation and queues for one pool (pure: the unit tests feed it usage)."""
    inst_hours, hours, mean = instance_hours(usage.ticks)
    notes: list[str] = []
    cpu = p95(usage.cpu)
    mem = p95(usage.memory)
    if cpu is None:
        notes.append("no CPU samples (no cpu rule for this pool in the store; try --prometheus)")
    if mem is None:
        notes.append("no memory samples (give --prometheus for per-instance memory)")
    busy_mean = statistics.fmean([b for _, b in usage.busy]) if usage.busy else None
    idle = kind == "worker" and busy_mean is not None and busy_mean < idle_below
    recommended: int | None = None
    saved_hours = 0.0
    if idle and usage.ticks:
        counts = dict(usage.ticks)
        totals = [busy * counts.get(at, mean) for at, busy in usage.busy]
        peak = p95(totals) or 0.0
        recommended = max(math.ceil(peak / BUSY_TARGET), minimum, 1)
        saved_hours = max(inst_hours - recommended * hours, 0.0)
        notes.append(
            f"busy {busy_mean:.0f}% on average (< {idle_below:g}%): {recommended} worker(s) "
            f"carry the p95 load ({peak:.0f} worker-% busy) at {BUSY_TARGET:g}% each"
        )
    queues = []
    for name, lengths in sorted(usage.queues.items()):
        if lengths and sum(v > queue_above for v in lengths) >= CONSISTENTLY * len(lengths):
            share = sum(v > queue_above for v in lengths) / len(lengths)
            queues.append(name)
            notes.append(
                f"queue rule {name}: above {queue_above:g} in {share:.0%} of the window "
                f"(median {statistics.median(lengths):.0f}): add a worker"
            )
    if idle and queues:
        recommended, saved_hours = None, 0.0
        notes.append("idle and queued at once: check the workers' queues (-Q) before removing any")
    per_30 = saved_hours / hours * 720 if hours else 0.0
    return Advice(
        pool=pool,
        kind=kind,
        window_hours=hours,
        mean_instances=mean,
        instance_hours=inst_hours,
        cost=None if price is None else inst_hours * price,
        cpu_p95_percent=cpu,
        cpu_limit_cores=None if cpu is None else cpu_limit(cpu, headroom),
        memory_p95_bytes=mem,
        memory_limit_bytes=None if mem is None else memory_limit(mem, headroom),
        busy_mean_percent=busy_mean,
        idle=idle,
        recommended_instances=recommended,
        saved_instance_hours=saved_hours,
        saved=None if price is None else saved_hours * price,
        saved_per_30_days=None if price is None else per_30 * price,
        queues_needing_worker=queues,
        notes=notes,
    )


# --------------------------------------------------------------------------- reading


def usage_from_store(store: Any, rules: Sequence[Any], pool: str, since: float) -> Usage:
    """The pool's ticks and its rules' values from the state store (public methods only)."""
    ticks = [(at, current) for at, current, _ in store.pool_series(since).get(pool, [])]
    series = store.rule_series(since)
    usage = Usage(ticks=ticks)
    for rule in rules:
        if getattr(rule, "pool", None) != pool:
            continue
        signal = rule.metric.signal
        if signal == "cpu":
            usage.cpu.extend(s.value for s in store.samples(rule.name, since))
        elif signal == "memory":
            usage.memory.extend(s.value for s in store.samples(rule.name, since))
        elif signal == "busy":
            usage.busy.extend((at, v) for at, v in series.get(rule.name, []) if v is not None)
        elif signal == "queue":
            values = [v for _, v in series.get(rule.name, []) if v is not None]
            usage.queues[rule.name] = values
    return usage


RANGE_MAX_BYTES = 64 * 1024 * 1024
"""Largest range-query answer read, in bytes (1000 steps of many series fit well inside)."""


def prometheus_values(url: str, query: str, start: float, end: float) -> list[float]:
    """Every value of every series of a range query (about 1000 steps over the window),
    read like the sources read (``sources.prometheus.read_bounded``: a 60 s deadline, at most
    ``RANGE_MAX_BYTES``, no proxies from the environment)."""
    import httpx

    from senex_scale.sources.prometheus import HttpSettings, http_client, read_bounded

    step = max((end - start) / 1000, 1.0)
    settings = HttpSettings(timeout=30.0, max_bytes=RANGE_MAX_BYTES)
    params = {"query": query, "start": str(start), "end": str(end), "step": str(step)}
    with http_client("prometheus", settings, accept="application/json") as client:
        try:
            answer = read_bounded(
                client,
                "prometheus",
                url.rstrip("/") + "/api/v1/query_range",
                settings,
                params=params,
                shown=url,
            )
            doc = json.loads(answer.body)
        except (httpx.HTTPError, ValueError, RecursionError) as exc:
            raise SourceError(f"prometheus {url}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise SourceError(
            f"prometheus {url}: {error or answer.body[:200].decode(errors='replace')}"
        )
    try:
        return [
            float(value)
            for series in doc["data"]["result"]
            for _, value in series["values"]
            if value not in ("NaN", "+Inf", "-Inf")
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"prometheus {url}: not a range query answer ({exc})") from None


# --------------------------------------------------------------------------- the command


def rightsize_command(
    pool: Annotated[str, typer.Option("--pool", help="The pool to rightsize (policy name).")],
    since: Annotated[str, typer.Option("--since", help="Window: 7d, 24h, ...")] = "7d",
    price: Annotated[
        float | None, typer.Option("--price", help="Price per instance-hour (any currency).")
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", "-p", help='Policy file; "default" is the built-in one.')
    ] = "default",
    state: Annotated[
        str | None, typer.Option("--state", help="State store URL (default: the policy's).")
    ] = None,
    prometheus: Annotated[
        str | None, typer.Option("--prometheus", help="Prometheus URL for CPU/memory per instance.")
    ] = None,
    cpu_query: Annotated[
        str, typer.Option("--cpu-query", help="PromQL, percent of a core; {pool} is filled in.")
    ] = DEFAULT_CPU_QUERY,
    memory_query: Annotated[
        str, typer.Option("--memory-query", help="PromQL, bytes; {pool} is filled in.")
    ] = DEFAULT_MEMORY_QUERY,
    headroom: Annotated[float, typer.Option("--headroom", help="Added to p95 (0.3 = 30%).")] = 0.3,
    idle_below: Annotated[
        float, typer.Option("--idle-below", help="Workers busy less than this % are idle.")
    ] = 30.0,
    queue_above: Annotated[
        float, typer.Option("--queue-above", help="A queue consistently above this needs a worker.")
    ] = 50.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend CPU and memory limits (p95 + headroom), flag idle workers and queues that
    need a worker, and show the money saved at a price per instance-hour."""
    from senex_scale.policy import load_policy
    from senex_scale.policy.durations import parse_duration
    from senex_scale.store import open_store

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise InputError(f"--since: {exc}") from None
    if window <= 0:
        raise InputError("--since: must be above 0")
    if price is not None and price < 0:
        raise InputError(f"--price: {price} is negative")
    if not 0 <= headroom <= 5:
        raise InputError(f"--headroom: {headroom} is not between 0 and 5")
    loaded = load_policy(policy)
    if pool not in loaded.pools:
        known = ", ".join(sorted(loaded.pools)) or "none"
        raise InputError(f"--pool: {pool!r} is not a pool of the policy (pools: {known})")
    spec = loaded.pools[pool]
    now = time.time()
    store = open_store(state or loaded.controller.state)
    try:
        usage = usage_from_store(store, loaded.rules, pool, now - window)
    finally:
        store.close()
    if prometheus:
        usage.cpu.extend(
            prometheus_values(prometheus, cpu_query.format(pool=pool), now - window, now)
        )
        usage.memory.extend(
            prometheus_values(prometheus, memory_query.format(pool=pool), now - window, now)
        )
    if not (usage.ticks or usage.cpu or usage.memory or usage.busy or usage.queues):
        raise PermanentError(
            f"nothing recorded for pool {pool} in the last {since} (state store and "
            f"{'Prometheus' if prometheus else 'no --prometheus'})"
        )
    advice = advise(
        pool, spec.kind, spec.min, usage,
        price=price, headroom=headroom, idle_below=idle_below, queue_above=queue_above,
    )  # fmt: skip
    if json_out:
        print_json(asdict(advice) | {"since": since})
        return
    print_advice(advice, since)


def print_advice(a: Advice, since: str) -> None:
    from senex_scale.policy.durations import format_duration

    table = Table(title=f"rightsize {a.pool} ({a.kind}), last {since}", title_justify="left")
    table.add_column("")
    table.add_column("value")
    table.add_row(
        "observed",
        f"{format_duration(a.window_hours * 3600)}, {a.mean_instances:.1f} instances on average, "
        f"{a.instance_hours:.1f} instance-hours",
    )
    if a.cost is not None:
        table.add_row("cost", f"{a.cost:.2f}")
    if a.cpu_p95_percent is not None:
        table.add_row(
            "CPU", f"p95 {a.cpu_p95_percent:.0f}% of a core -> limit {a.cpu_limit_cores:g} cores"
        )
    if a.memory_p95_bytes is not None:
        table.add_row(
            "memory",
            f"p95 {human_bytes(a.memory_p95_bytes)} -> limit {human_bytes(a.memory_limit_bytes)}",
        )
    if a.busy_mean_percent is not None:
        table.add_row(
            "busy", f"{a.busy_mean_percent:.0f}% on average" + (" (idle)" if a.idle else "")
        )
    if a.recommended_instances is not None:
        table.add_row(
            "instances",
            f"{a.mean_instances:.1f} -> {a.recommended_instances} "
            f"({a.saved_instance_hours:.1f} instance-hours less)",
        )
    if a.saved is not None:
        table.add_row(
            "saved", f"{a.saved:.2f} in the window, {a.saved_per_30_days:.2f} per 30 days"
        )
    out.print(table)
    for note in a.notes:
        out.print(f"- {note}", markup=False)
