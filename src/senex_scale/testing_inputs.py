"""Valid seed files and known-bad changes to them, for every input kind a user writes.

One catalogue, two users: the property tests (``tests/unit/inputs``) check that each known-bad
change is refused with exit 2 and a message naming the file and the dotted path (``where``);
the fuzz run (``bench/fuzz_inputs.py``) mixes the same changes with random structural ones
(wrong types, NaN, unknown keys, deep nesting, truncation, bytes that are not UTF-8) by the
thousand and counts the outcomes. Both run the command line in this process (``invoke``) and
judge its message the same way (``message_problem``).

The inventory seed is ``examples/inventory.toml`` of a source checkout (``inventory_seed``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random
import re
import sys
import tomllib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import tomli_w

from senex_scale.policy.loading import dotted

NOW = 1795532400.0
"""2026-11-24T15:00:00Z: the observation's and the trace's time."""

SECRETS = {
    "SENEX_DB_PASSWORD": "db-Secret-5e1f7a",
    "SENEX_MONITOR_PASSWORD": "monitor-Secret-4b7e21",
    "SENEX_REPLICATION_PASSWORD": "repl-Secret-8c2d44",
    "SENEX_REDIS_PASSWORD": "redis-Secret-31b9c0",
    "SENEX_SENTINEL_PASSWORD": "sentinel-Secret-77aa02",
}
"""The environment ``examples/inventory.toml`` reads its secrets from."""

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

LEAKS = re.compile(
    r"Traceback|File \"|_SecretRef|ObservationFile|valid dictionary|instance of [A-Z_]|"
    r"a valid tuple|\bNone\b|\bTrue\b|\bFalse\b|pydantic|\bdict\b|\blist\[|\btuple\b|"
    r"\bstr\b|\bfloat\b|\bint\b|\bbool\b|warnings\.warn|Error\(|ValueError|KeyError|TypeError"
)
"""What a message in the user's terms never contains: a Python class, type, repr or traceback."""


# --------------------------------------------------------------------------- seeds

POLICY = """
[controller]
interval = "15s"
listen = "127.0.0.1:9308"

[sources.prom]
type = "prometheus"
url = "http://127.0.0.1:9090"

[sources.broker]
type = "celery-redis"
url = "redis://127.0.0.1:6379/2"

[pools.web]
runtime = { type = "supervisor", url = "unix:///tmp/supervisor.sock", group = "web" }
balancer = { type = "nginx", upstream = "web_backend", file = "/tmp/web_backend.conf" }
port = "8000 + n"
min = 1
max = 4

[pools.worker]
kind = "worker"
runtime = { type = "systemd", unit = "worker@{n}.service" }
queues = ["general"]
min = 1
max = 3

[[rules]]
name = "cpu"
pool = "web"
metric = { source = "prom", signal = "cpu", query = "avg(rate(cpu[1m])) * 100" }
scale_out = { above = 70, for = "1m" }
scale_in = { below = 30, for = "2m", step = "50%" }

[[rules]]
name = "ws"
type = "target"
pool = "web"
metric = { source = "prom", signal = "connections", query = "sum(ws)" }
target = 100
tolerance = 0.1

[[rules]]
name = "queue"
pool = "worker"
metric = { source = "broker", signal = "queue", query = "general" }
scale_out = { above = 50, for = "30s" }

[[rules]]
name = "db"
type = "action"
metric = { source = "prom", signal = "db_cpu", query = "db_cpu" }
when = { above = 80, for = "10m" }
action = { type = "runbook", argv = ["true"], timeout = "60s" }

[[rules]]
name = "tell"
type = "action"
metric = { source = "prom", query = "mem" }
when = { above = 90 }
action = { type = "notify", message = "memory is high", url = "http://127.0.0.1:9/hook" }

[[schedules]]
name = "day"
pools = ["web"]
start = "0 8 * * MON-FRI"
end = "0 23 * * MON-FRI"
timezone = "America/New_York"
min = 2
"""
"""A valid policy with driver tables, every rule type and a schedule."""

ACTION_ONLY_POLICY = """
[sources.prom]
type = "prometheus"
url = "http://127.0.0.1:9090"

[[rules]]
name = "disk"
type = "action"
metric = { source = "prom", signal = "disk", query = "disk_used_percent" }
when = { above = 80 }
action = { type = "notify", message = "disk is filling up" }
"""
"""A valid policy without pools: it only tells a person (pool-less action rules)."""

MODEL = """
seed = 7

[pools.web]
rps_per_instance = 60
ws_per_instance = 2500
base_cpu = 3
startup = "40s"
cpu_noise = 3
target_utilisation = 0.8

[pools.worker]
tasks_per_minute = 120
queue_wait_slo = "60s"
"""
"""A valid capacity model (``simulate --model``) for ``POLICY``'s pools."""


def policy_seed() -> dict[str, Any]:
    """``POLICY`` parsed: a fresh copy to break."""
    return tomllib.loads(POLICY)


def model_seed() -> dict[str, Any]:
    """``MODEL`` parsed: a fresh copy to break."""
    return tomllib.loads(MODEL)


def observation_seed() -> dict[str, Any]:
    """A small valid observation for ``POLICY``."""
    return {
        "now": "2026-11-24T15:00:00Z",
        "pools": {
            "web": {
                "instances": [
                    {"id": "1", "state": "ready", "started_at": "2026-11-24T13:00:00Z"},
                    {"id": "2"},
                ],
                "events": [{"at": "2026-11-24T14:00:00Z", "before": 1, "after": 2}],
                "recommendations": {"ws": [["2026-11-24T14:59:45Z", 2]]},
            },
            "worker": {"instances": [{"id": "1"}]},
        },
        "samples": {
            "cpu": [
                {"at": NOW - 15 * i, "value": 75.0, "instance": str(n)}
                for i in range(8, -1, -1)
                for n in (1, 2)
            ],
            "ws": [{"at": NOW, "value": 150.0}],
            "queue": [{"at": NOW - 15, "value": 3}, {"at": NOW, "value": 4}],
        },
        "errors": {"db": "prometheus: connection refused"},
        "actions": {"db": "2026-11-24T12:00:00Z"},
    }


TRACE_HEADER = "timestamp,http_rps,ws_connections,tasks_general"


def trace_seed(rows: int = 40) -> str:
    """A small valid trace CSV for ``POLICY``: a time zone line, the header, one row per 15 s."""
    lines = ["# timezone: America/New_York", TRACE_HEADER]
    for i in range(rows):
        lines.append(f"{NOW + 15 * i:.0f},{10 + i % 7},{100 + i},{i % 5}")
    return "\n".join(lines) + "\n"


def inventory_seed() -> dict[str, Any]:
    """``examples/inventory.toml`` parsed (the seed's deployment; secrets from ``SECRETS``)."""
    with (EXAMPLES / "inventory.toml").open("rb") as handle:
        return tomllib.load(handle)


# --------------------------------------------------------------------------- paths


def leaves(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, value) of every value that is not a table (arrays of tables are walked into)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*path, key))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            yield from leaves(value, (*path, i))
    else:
        yield path, data


def tables(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every table (the top level is ``()``)."""
    if isinstance(data, dict):
        yield path
        for key, value in data.items():
            yield from tables(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if isinstance(value, dict):
                yield from tables(value, (*path, i))


def get_path(data: Any, path: Sequence[Any]) -> Any:
    """The value at ``path``."""
    for part in path:
        data = data[part]
    return data


def set_path(data: Any, path: Sequence[Any], value: Any) -> None:
    """Put ``value`` at ``path`` (the parent must exist)."""
    get_path(data, path[:-1])[path[-1]] = value


def to_toml(data: dict[str, Any]) -> bytes:
    """``data`` as a TOML file."""
    return tomli_w.dumps(data).encode()


def to_json(data: Any) -> bytes:
    """``data`` as a JSON file (NaN and Infinity as Python's json writes them)."""
    return json.dumps(data).encode()


def wrong_type(rng: random.Random, value: Any) -> Any:
    """A value whose TOML/JSON type differs from ``value``'s in a way no field accepts."""
    if isinstance(value, dict):
        return rng.choice(["text", 5, [1, 2]])
    if isinstance(value, list):
        return rng.choice([{"x": 1}, 5])
    return rng.choice([{"x": 1}, [[1], ["a"]]])


def quoted(value: Any) -> Any:
    """``value`` as a string when it is a number or a boolean ("2", "70.5", "true"), else None.

    Numbers written in quotes are the commonest type slip (a template that quotes everything,
    a value pasted from an environment variable); no integer, number or boolean field takes one.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    return None


def deep(kind: str, depth: int) -> bytes:
    """Arrays nested ``depth`` levels deep, as JSON or as a TOML file."""
    if kind == "json":
        return ("[" * depth + "]" * depth).encode()
    return ("a = " + "[" * depth + "]" * depth + "\n").encode()


# --------------------------------------------------------------------------- known-bad changes


class Bad(NamedTuple):
    """``value`` put at ``path`` of a seed: refused, with a message that names ``where``."""

    path: tuple[Any, ...]
    value: Any
    where: str

    @property
    def label(self) -> str:
        """``pools.web.min = '2'``: for test ids and fuzz reports."""
        return f"{dotted(self.path)} = {self.value!r}"[:80]

    def apply(self, seed: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``seed`` with the change made."""
        data = copy.deepcopy(seed)
        set_path(data, self.path, self.value)
        return data


def _bad(*rows: tuple[Any, ...]) -> tuple[Bad, ...]:
    """Rows of (path, value) or (path, value, where); ``where`` defaults to the path."""
    return tuple(Bad(row[0], row[1], row[2] if len(row) > 2 else dotted(row[0])) for row in rows)


NAN, INF = math.nan, math.inf

POLICY_BAD = _bad(
    (("controller", "interval"), NAN),
    (("controller", "interval"), INF),
    (("controller", "interval"), -INF),
    (("controller", "interval"), "0s"),
    (("controller", "interval"), 0),
    (("controller", "interval"), "1e400s"),
    (("controller", "retention"), INF),
    (("controller", "listen"), "127.0.0.1:99999"),
    (("controller", "listen"), "127.0.0.1:-1"),
    (("controller", "listen"), "no port"),
    (("controller", "listen"), "x"),
    (("controller", "listen"), ""),
    (("controller", "token_env"), "A B"),
    (("controller", "token_env"), "1X"),
    (("controller", "token_env"), ""),
    (("controller", "state"), ""),
    (("controller", "leader_ttl"), "0s"),
    (("controller", "backoff"), "0s"),
    (("controller", "max_gap"), "0s"),
    (("controller", "leader"), "redis:/x"),
    (("controller",), "text"),
    (("pools",), "web"),
    (("pools", "web"), "web"),
    (("pools", "web"), 5),
    (("pools", "web"), [1, 2]),
    (("pools", "web"), True),
    (("pools", "web", "port"), -5),
    (("pools", "web", "port"), 0),
    (("pools", "web", "port"), -(2**63)),
    (("pools", "web", "port"), "-5 + n"),
    (("pools", "web", "port"), "99999 + n"),
    (("pools", "web", "port"), "8000 + m"),
    (("pools", "web", "min"), -1),
    (("pools", "web", "min"), NAN),
    (("pools", "web", "min"), INF),
    (("pools", "web", "min"), 1.5),
    (("pools", "web", "max"), 0),
    (("pools", "web", "health"), "/a b"),
    (("pools", "web", "health"), "/health/\nX"),
    (("pools", "web", "health"), "x"),
    (("pools", "web", "warmup"), NAN),
    (("pools", "web", "drain_timeout"), INF),
    (("pools", "web", "drain_timeout"), NAN),
    (("pools", "web", "drain_timeout"), "0s"),
    (("pools", "web", "start_timeout"), "0s"),
    (("pools", "web", "kind"), "wbe"),
    (("pools", "web", "runtime"), "supervisor"),
    (("pools", "web", "runtime", "bogus"), 1, "pools.web.runtime"),
    (("pools", "web", "runtime", "type"), "supervisr"),
    (("pools", "web", "runtime", "group"), 5),
    (("pools", "web", "runtime", "group"), "a b\n"),
    (("pools", "web", "runtime", "url"), "http://"),
    (("pools", "web", "runtime", "url"), 5),
    (("pools", "web", "runtime", "url"), "x"),
    (("pools", "web", "runtime", "url"), ""),
    (("pools", "web", "runtime"), {"type": "supervisor"}),
    (("pools", "web", "balancer", "type"), "ngnix"),
    (("pools", "web", "balancer", "upstream"), "a b;"),
    (("pools", "web", "balancer", "file"), 5),
    (("pools", "web", "balancer", "bogus"), True, "pools.web.balancer"),
    (("pools", "worker", "runtime", "unit"), 5),
    (("pools", "worker", "runtime", "scope"), "bogus"),
    (("pools", "worker", "runtime", "uni"), "x@{n}.service", "pools.worker.runtime"),
    (("pools", "worker", "queues"), "general"),
    (("pools", "worker", "queues"), [""]),
    (("pools", "web", "scale_out_limits"), [{"percent": NAN}]),
    (("pools", "web", "scale_out_limits"), [{"instances": 1, "period": "0s"}]),
    (("pools", "web", "fallback"), {"count": -1}),
    (("pools", "web", "fallback"), {"count": 1, "after": "1e3s"}),
    (("pools", "Web App"), {"min": 1, "max": 2}, "pools"),
    (("sources", "prom", "url"), 5),
    (("sources", "prom", "url"), "not a url"),
    (("sources", "prom", "url"), ""),
    (("sources", "prom", "bogus"), 1, "sources.prom"),
    (("sources", "prom", "type"), "prometeus"),
    (("sources", "prom"), "prometheus"),
    (("sources", "prom", "timeout"), "0s"),
    (("sources", "prom", "timeout"), NAN),
    (("sources", "prom", "timeout"), INF),
    (("sources", "prom", "token_env"), "A B"),
    (("sources", "prom", "push_down_function"), "max"),
    (("sources", "broker", "url"), "http://x"),
    (("sources", "broker", "url"), 5),
    (("sources", "broker", "queues"), "general", "sources.broker"),
    (("rules", 0, "scale_out", "above"), NAN),
    (("rules", 0, "scale_out", "above"), INF),
    (("rules", 0, "scale_out", "above"), -INF),
    (("rules", 0, "scale_in", "below"), NAN),
    (("rules", 0, "scale_in", "below"), -INF),
    (("rules", 0, "scale_out", "for"), "5x"),
    (("rules", 0, "scale_out", "for"), NAN),
    (("rules", 0, "scale_out", "for"), INF),
    (("rules", 0, "scale_out", "step"), 0),
    (("rules", 0, "scale_out", "step"), "nan%"),
    (("rules", 0, "scale_in", "step"), "inf%"),
    (("rules", 0, "pool"), "wbe"),
    (("rules", 0, "pool"), 5),
    (("rules", 0, "metric"), "prom"),
    (("rules", 0, "metric"), 5),
    (("rules", 0, "metric", "source"), "pram"),
    (("rules", 0, "metric", "signal"), "cpux"),
    (("rules", 0, "metric", "aggregate"), "mean"),
    (("rules", 0, "priority"), "urgent"),
    (("rules", 0, "name"), ""),
    (("rules", 0, "name"), "ws", "rules[1].name"),
    (("rules", 0, "name"), "cpu\nfake reason"),
    (("rules", 0, "type"), "thresold"),
    (("rules", 1, "target"), NAN),
    (("rules", 1, "target"), INF),
    (("rules", 1, "target"), -1),
    (("rules", 1, "target"), 0),
    (("rules", 1, "target"), -1e300),
    (("rules", 1, "tolerance"), NAN),
    (("rules", 1, "tolerance"), INF),
    (("rules", 1, "tolerance"), 1.5),
    (("rules", 3, "action", "timeout"), "0s"),
    (("rules", 3, "action", "argv"), []),
    (("rules", 3, "action", "argv"), "true"),
    (("rules", 3, "action", "argv"), [""], "rules[3].action.argv[0]"),
    (("rules", 3, "cooldown"), NAN),
    (("rules", 3, "when", "above"), NAN),
    (("rules", 4, "action", "url"), "not a url"),
    (("rules", 4, "action", "url"), "ftp://x"),
    (("rules", 4, "action", "url"), ""),
    (("rules", 4, "action", "type"), "notfy"),
    (("rules", 4, "action", "message"), ""),
    (("rules",), "cpu"),
    (("rules",), [1, 2]),
    (("rules",), {"name": "x"}),
    (("schedules", 0, "name"), " day"),
    (("schedules", 0, "pools"), "web"),
    (("schedules", 0, "pools"), ["wbe"]),
    (("schedules", 0, "pools"), []),
    (("schedules", 0, "timezone"), "Mars/Base"),
    (("schedules", 0, "timezone"), ""),
    (("schedules", 0, "start"), "0 25 * * *"),
    (("schedules", 0, "start"), ""),
    (("schedules", 0, "start"), "open-90m", "schedules[0]"),
    (("schedules", 0, "min"), -1),
    (("schedules", 0, "min"), 99),
    (("schedules", 0, "calendar"), "xnys2"),
    (("schedules",), "day"),
    (("zzz",), {"a": 1}),
    # numbers and booleans of the wrong type: a quoted number, a float for an integer,
    # a boolean for a number and a number for a boolean
    (("controller", "dry_run"), "yes"),
    (("controller", "dry_run"), "true"),
    (("controller", "dry_run"), 1),
    (("controller", "interval"), True),
    (("pools", "web", "min"), "2"),
    (("pools", "web", "min"), True),
    (("pools", "web", "max"), "4"),
    (("pools", "web", "max"), 4.0),
    (("pools", "web", "port"), True),
    (("pools", "web", "port"), "8000"),
    (("pools", "web", "fallback"), {"count": "2"}, "pools.web.fallback.count"),
    (("pools", "web", "fallback"), {"count": 2.0}, "pools.web.fallback.count"),
    (("pools", "web", "scale_out_limits"), [{"instances": "2"}], "pools.web.scale_out_limits[0]"),
    (("pools", "web", "scale_out_limits"), [{"percent": "50"}], "pools.web.scale_out_limits[0]"),
    (("pools", "web", "scale_out_limits"), [{"instances": True}], "pools.web.scale_out_limits[0]"),
    (("pools", "web", "max_per_host"), "2"),
    (("pools", "web", "balancer", "max_fails"), "3"),
    (("pools", "web", "balancer", "max_fails"), True),
    (("pools", "web", "balancer", "ip_hash"), "yes"),
    (("pools", "web", "balancer", "keepalive"), 32.0),
    (("pools", "worker", "runtime", "ssh_port"), "22"),
    (("sources", "prom", "timeout"), True),
    (("sources", "prom", "verify"), 1),
    (("sources", "prom", "verify"), "yes"),
    (("sources", "prom", "push_down_window"), "true"),
    (("sources", "broker", "count_unacked"), 0),
    (("rules", 0, "scale_out", "above"), "70"),
    (("rules", 0, "scale_out", "above"), True),
    (("rules", 0, "scale_out", "step"), True),
    (("rules", 0, "scale_out", "step"), "2"),
    (("rules", 0, "enabled"), "yes"),
    (("rules", 0, "enabled"), 1),
    (("rules", 1, "target"), "100"),
    (("rules", 1, "target"), True),
    (("rules", 1, "tolerance"), "0.1"),
    (("rules", 1, "tolerance"), True),
    (("rules", 1, "warmup"), "false"),
    (("rules", 3, "when", "above"), "80"),
    (("schedules", 0, "min"), "2"),
    (("schedules", 0, "min"), 2.5),
    (("hosts",), {"h": {"address": "h", "ssh_port": "22"}}, "hosts.h.ssh_port"),
    (("hosts",), {"h": {"address": "h", "ssh_port": True}}, "hosts.h.ssh_port"),
    (
        ("hosts",),
        {"h": {"address": "h", "transport": "nsenter", "nsenter": True}},
        "hosts.h.nsenter",
    ),
    (("hosts",), {"h": {"address": "h", "connect_timeout": True}}, "hosts.h.connect_timeout"),
)
"""Known-bad changes to ``POLICY`` (``senex-scale validate``)."""

_TIMES: tuple[Any, ...] = (NAN, INF, -INF, 1e20, -1.0, 1e15, 1e12 * 1000, "x", True, 10**400)
_VALUES: tuple[Any, ...] = (NAN, INF, -INF, True, "75", None, -50, -1e-9, 1e308 * 10, 10**400)

OBSERVATION_BAD = _bad(
    *((("now",), v) for v in (*_TIMES, -1e20, "garbage", "2026-11-24T15:00:00", [1])),
    (("now",), "9999-12-31T23:59:59-05:00"),
    *((("samples", "cpu", 0, "at"), v) for v in (*_TIMES, None)),
    *((("samples", "cpu", 0, "value"), v) for v in _VALUES),
    (("samples", "ws", 0, "value"), -50),
    (("samples", "cpu", 0, "instance"), ""),
    (("samples", "cpu", 0, "instance"), 5),
    *((("pools", "web", "instances", 0, "started_at"), v) for v in _TIMES),
    (("pools", "web", "instances", 0, "state"), "up"),
    (("pools", "web", "instances", 0, "id"), ""),
    (("pools", "web", "instances", 0, "id"), 5),
    (("pools", "web", "instances", 1, "id"), "1", "pools.web.instances"),
    (("pools", "web", "instances"), [{"id": "1"}, {"id": "1"}]),
    (("pools", "web", "events", 0, "before"), -1),
    (("pools", "web", "events", 0, "before"), 1.5),
    (("pools", "web", "events", 0, "before"), 10**30),
    (("pools", "web", "events", 0, "before"), 10**400),
    (("pools", "web", "events", 0, "before"), "1"),
    (("pools", "web", "events", 0, "before"), True),
    (("pools", "web", "events", 0, "after"), 1.5),
    (("pools", "web", "events", 0, "at"), INF),
    (("pools", "web", "recommendations", "ws", 0), [NOW]),
    (("pools", "web", "recommendations", "ws", 0), [NOW, -1]),
    (("pools", "web", "recommendations", "ws", 0), [NAN, 1]),
    (("pools", "web", "recommendations", "ws", 0), [NOW, "2"]),
    (("pools", "web", "recommendations", "ws", 0), [NOW, True]),
    (("pools", "web", "recommendations", "wss"), [[NOW, 1]]),
    (("pools", "wbe"), {"instances": [{"id": "1"}]}),
    (("pools", "web"), "x"),
    (("pools",), None),
    (("pools",), "web"),
    (("pools",), 5),
    (("pools",), []),
    (("samples", "cpux"), [{"at": NOW, "value": 1}]),
    (("samples", "cpu"), {"at": NOW}),
    (("samples", "cpu", 0), {"value": 1}),
    (("samples", "cpu", 0), 5),
    (("errors", "db"), 5),
    (("errors", "dbx"), "x"),
    (("actions", "db"), 1e20),
    (("actions", "dbx"), NOW),
    (("zzz",), 1),
)
"""Known-bad changes to ``observation_seed()`` (``senex-scale plan --observe``)."""

TRACE_BAD_CELLS = ("nan", "inf", "-inf", "-1", "", "abc", "1e400", "true", "0x10", "1_0", "١٢")
"""Cells no trace column takes (NaN, negative, empty, words, non-ASCII digits, ...)."""

TRACE_BAD_TIMES = ("1e12", "1e20", "-1e20", "253402300800", "2026-11-24T15:00:00")
"""Timestamps out of range (milliseconds, year 10000) or without a UTC offset."""

_NEWLINES = ("\n", "\r", "\x00", "\nExec=/bin/sh")
_TEXT = ("a; return 500; #", "a b", "", "x{y}", "$(id)", 'a"b')

INVENTORY_BAD = _bad(
    *((("deployment", "image"), "img:1" + s) for s in _NEWLINES),
    *((("deployment", "image"), s) for s in _TEXT),
    (("deployment", "image"), "registry.example.com/x:latest\nExec=/bin/sh"),
    (("deployment", "timezone"), "Mars/Base"),
    (("deployment", "timezone"), ""),
    *((("deployment", "volumes"), ["a:b" + s], "deployment.volumes[0]") for s in _NEWLINES),
    (("deployment", "volumes"), [""], "deployment.volumes[0]"),
    *((("deployment", "env_file"), "/a" + s) for s in _NEWLINES),
    (("deployment", "project"), ""),
    (("deployment",), "x"),
    *(
        (("pools", "django", "command"), ["daphne" + s], "pools.django.command[0]")
        for s in _NEWLINES
    ),
    *((("pools", "django", "command"), [s], "pools.django.command[0]") for s in _TEXT),
    (("pools", "django", "port"), -5),
    (("pools", "django", "port"), 0),
    (("pools", "django", "port"), "-5 + n"),
    (("pools", "django", "port"), "65535 + n"),
    (("pools", "django", "container_port"), -1),
    (("pools", "django", "container_port"), 70000),
    *((("pools", "django", "health"), "/h" + s) for s in _NEWLINES),
    (("pools", "django", "health"), "/a b"),
    (("pools", "django", "health_interval"), "0s"),
    (("pools", "django", "stop_timeout"), "0s"),
    (("pools", "django", "limits", "memory"), "0"),
    (("pools", "django", "limits", "cpu"), "0%"),
    (("pools", "django", "kind"), "wbe"),
    (("pools", "django"), "web"),
    (("pools", "celery-worker", "queues"), ["a b"], "pools.celery-worker.queues[0]"),
    (("pools", "celery-worker", "concurrency"), 0),
    *(
        (("hosts", "web01", "address"), v)
        for v in ("10.0.0.300", "256.1.1.1", "-bad-.example", "a..b", "-x", "", "a b")
    ),
    (("hosts", "web01", "address"), "10.0.0.12", "hosts.web02.address"),
    (("hosts", "web02", "address"), "10.0.0.11"),
    (("hosts", "web01", "roles"), ["web", "web"], "hosts.web01"),
    (("hosts", "web01", "roles"), [], "hosts.web01"),
    (("hosts", "web01", "roles"), "web"),
    (("hosts", "web01", "ports"), {"redis": -1}, "hosts.web01.ports.redis"),
    (("hosts", "web01", "ports"), {"redis": 0}, "hosts.web01.ports.redis"),
    (("hosts", "web01"), "x"),
    (("hosts", "Web 01"), {"address": "10.0.0.99", "roles": ["web"]}, "hosts"),
    (("postgres", "port"), -1),
    (("postgres", "port"), 0),
    (("postgres", "image"), "a\nb"),
    (("postgres", "listen_addresses"), "*; x"),
    (("postgres", "listen_addresses"), "*; host all"),
    (("postgres", "listen_addresses"), "a\nb"),
    (("postgres", "client_cidrs"), ["10.0.0.0/33"], "postgres.client_cidrs[0]"),
    *(
        (("postgres", "users", "senex_user", "password"), v)
        for v in ("inline", {"env": "A B"}, {"env": ""}, {"file": "relative"}, {}, ["x"])
    ),
    (("postgres", "users", "Bad User"), {"password": {"env": "X"}}, "postgres.users"),
    (("postgres", "replication", "wal_keep_size"), "1 GB"),
    *((("pgbouncer", "listen_addr"), "*" + s) for s in _NEWLINES),
    (("pgbouncer", "listen_addr"), "*; x"),
    (("pgbouncer", "unix_socket_dir"), "relative"),
    (("pgbouncer", "unix_socket_dir"), "/a\nb"),
    (("pgbouncer", "pool_mode"), "sesion"),
    (("redis", "maxmemory_policy"), "bogus"),
    (("redis", "maxmemory_policy"), "lru"),
    (("redis", "maxmemory_policy"), ""),
    *((("redis", "bind"), "*" + s) for s in _NEWLINES),
    (("redis", "bind"), "x; y"),
    (("redis", "image"), "a b"),
    (("redis", "port"), -6379),
    (("sentinel", "bind"), "a\nb"),
    (("sentinel", "quorum"), 0),
    (("sentinel", "quorum"), NAN),
    (("sentinel", "quorum"), "two"),
    *((("nginx", "server_name"), v) for v in (*_NEWLINES, *(t for t in _TEXT if t != "a b"))),
    (("nginx", "websocket_path"), "/ws/ { }"),
    (("nginx", "websocket_path"), "/ws/ {"),
    (("nginx", "websocket_path"), "ws"),
    (("nginx", "listen"), 0),
    (("nginx", "fail_timeout"), "0s"),
    (("nginx", "pool"), "celery-worker"),
    (("nginx", "pool"), "djang"),
    (("haproxy", "bind"), "bogus bind\nx"),
    (("haproxy", "bind"), "*:99999"),
    (("haproxy", "bind"), ""),
    (("haproxy", "bind"), "x\ny:1"),
    (("haproxy", "check_host"), "a b"),
    (("haproxy", "check_interval"), "0s"),
    (("haproxy", "timeout_tunnel"), "0s"),
    (("balancer", "type"), "hproxy"),
    (("prometheus", "controller"), "10.0.0.11:99999"),
    (("prometheus", "controller"), "nohost"),
    (("prometheus", "controller"), "x"),
    (("prometheus", "controller"), "h:0"),
    (("prometheus", "controller"), "a b:80"),
    (("prometheus", "exporters", "celery"), "x:-1"),
    (("prometheus", "exporters", "node"), -1),
    (("prometheus", "scrape_interval"), "0s"),
    *(
        (("schedules", 0, "on_calendar"), v)
        for v in ("bogus", "Mon..Fri 25:00", "*-13-* 08:00", "a\nb", "")
    ),
    (("schedules", 0, "count"), 99),
    (("schedules", 0, "pool"), "djang"),
    (("schedules", 1, "name"), "market-open"),
    (("network", "subnet"), "10.0.0.0/99"),
    (("network", "name"), "A B"),
    (("zzz",), {"a": 1}),
    # numbers and booleans of the wrong type
    (("sentinel", "quorum"), "2"),
    (("sentinel", "quorum"), 2.0),
    (("sentinel", "quorum"), True),
    (("sentinel", "down_after_milliseconds"), "5000"),
    (("pgbouncer", "default_pool_size"), "25"),
    (("pgbouncer", "default_pool_size"), 25.0),
    (("pgbouncer", "port"), "6432"),
    (("postgres", "port"), "5432"),
    (("postgres", "max_connections"), True),
    (("postgres", "users", "senex_user", "superuser"), "false"),
    (("postgres", "replication", "slots"), 1),
    (("pools", "django", "max"), "5"),
    (("pools", "django", "min"), 2.0),
    (("pools", "django", "container_port"), "8000"),
    (("pools", "celery-worker", "concurrency"), "4"),
    (("hosts", "web01", "ports"), {"redis": "6380"}, "hosts.web01.ports.redis"),
    (("nginx", "ip_hash"), "yes"),
    (("nginx", "ip_hash"), 1),
    (("nginx", "listen"), "8000"),
    (("nginx", "keepalive"), True),
    (("beat", "enabled"), 1),
    (("beat", "enabled"), "true"),
    (("schedules", 0, "count"), "3"),
    (("schedules", 0, "count"), 3.0),
    (("prometheus", "exporters", "node"), "9100"),
)
"""Known-bad changes to ``inventory_seed()`` (``senex-scale render``)."""

MODEL_BAD = _bad(
    (("seed",), "7"),
    (("seed",), 7.0),
    (("seed",), True),
    (("seed",), NAN),
    (("pools",), "web"),
    (("pools", "web"), 5),
    (("pools", "web", "rps_per_instance"), "60"),
    (("pools", "web", "rps_per_instance"), True),
    (("pools", "web", "rps_per_instance"), 0),
    (("pools", "web", "rps_per_instance"), -1),
    (("pools", "web", "rps_per_instance"), NAN),
    (("pools", "web", "rps_per_instance"), INF),
    (("pools", "web", "ws_per_instance"), INF),
    (("pools", "web", "base_cpu"), 100),
    (("pools", "web", "base_cpu"), "3"),
    (("pools", "web", "cpu_noise"), INF),
    (("pools", "web", "cpu_noise"), -1),
    (("pools", "web", "cpu_noise"), False),
    (("pools", "web", "target_utilisation"), 1.5),
    (("pools", "web", "target_utilisation"), "0.8"),
    (("pools", "web", "startup"), "soon"),
    (("pools", "web", "startup"), NAN),
    (("pools", "web", "startup"), True),
    (("pools", "web", "bogus"), 1, "pools.web"),
    (("pools", "worker", "tasks_per_minute"), "120"),
    (("pools", "worker", "tasks_per_minute"), 0),
    (("pools", "worker", "queue_wait_slo"), "1e400s"),
    (("pools", "worker", "queue_wait_slo"), -5),
    (("sed",), 3),
)
"""Known-bad changes to ``model_seed()`` (``senex-scale simulate --model``)."""


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Run:
    """One command run in this process: exit code, output, and an exception that escaped."""

    code: int | None
    stdout: str
    stderr: str
    escaped: BaseException | None = None


def invoke(argv: Sequence[str]) -> Run:
    """``senex-scale ARGV`` in this process, exactly as the console script calls it.

    A fresh interpreter per run costs about a second; thousands of runs are affordable only
    in-process. Warnings are recorded (and end up on stderr), never raised.
    """
    from senex_scale import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | None = 0
    escaped: BaseException | None = None
    old = sys.argv
    sys.argv = ["senex-scale", *argv]
    try:
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("always")
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # what escapes is the finding: the caller reports it
        escaped = exc
    finally:
        sys.argv = old
    return Run(code, stdout.getvalue(), stderr.getvalue(), escaped)


def message_problem(stderr: str, names: Sequence[str] = ()) -> str:
    """What is wrong with a refusal's stderr ("" when nothing): it is one ``Error:`` message
    ending with a newline, in the user's terms, naming each of ``names`` (the file, the path).

    ``Warning:`` lines before it (an ignored trace column) are allowed.
    """
    text = "".join(
        line for line in stderr.splitlines(keepends=True) if not line.startswith("Warning: ")
    )
    if not text.startswith("Error: "):
        return "does not start with 'Error: '"
    if not text.endswith("\n"):
        return "no final newline"
    if text.count("Error: ") != 1:
        return "more than one 'Error: '"
    if "Warning" in text:
        return "a Python warning"
    leak = LEAKS.search(text)
    if leak:
        return f"leaks {leak.group(0)!r}"
    for name in names:
        if name not in text:
            return f"does not name {name!r}"
    return ""


Dump = Callable[[dict[str, Any]], bytes]
