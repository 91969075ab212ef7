"""Bad input never crashes and never slips through: a seeded fuzz run over every input kind.

For each input kind (policy, observation, trace, inventory) this makes thousands of inputs
from a valid seed file: known-bad mutations (a value of the wrong type, NaN and infinities,
out-of-range numbers and times, unknown keys and enum values, broken references, text with
newlines or punctuation where a config file will hold it, deep nesting, bytes that are not
UTF-8, a directory instead of a file, truncation) and a few known-good variants (a byte-order
mark, comments). Each input goes through the real command line in this process
(``senex_scale.cli.main``) and is classified:

- ``rejected``: exit 2, one ``Error:`` line naming the file (and a path or line), ending with
  a newline, no Python class names in it, nothing written;
- ``accepted``: exit 0 for an input that is valid (or may be);
- ``traceback``: an exception escaped;
- ``wrong-code``: any other exit code (1 for bad input is wrong: it says "the work failed");
- ``accepted-invalid``: exit 0 for an input that is known to be bad;
- ``bad-message``: exit 2, but the message leaks internals or names no path or line;
- ``wrote``: render changed its output directory although it failed.

Goal: 0 tracebacks, 0 wrong codes, 0 accepted-invalid, 0 bad messages.

Run: .venv/bin/python bench/fuzz_inputs.py [--count 2000] [--seed 1] [--kind policy] [-v]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import random
import re
import sys
import tempfile
import time
import tomllib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "SENEX_DB_PASSWORD": "db-Secret-5e1f7a",
    "SENEX_MONITOR_PASSWORD": "monitor-Secret-4b7e21",
    "SENEX_REPLICATION_PASSWORD": "repl-Secret-8c2d44",
    "SENEX_REDIS_PASSWORD": "redis-Secret-31b9c0",
    "SENEX_SENTINEL_PASSWORD": "sentinel-Secret-77aa02",
}
NOW = 1795532400.0  # 2026-11-24T15:00:00Z

LEAKS = re.compile(
    r"Traceback|File \"|_SecretRef|ObservationFile|valid dictionary or instance|"
    r"a valid tuple|instance of [A-Z_]|\bNone: |pydantic|\bdict\b|\blist\[|\btuple\b|"
    r"\bstr\b|\bfloat\b|warnings\.warn|Error\(|ValueError|KeyError|TypeError"
)

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


def observation_seed() -> dict[str, Any]:
    """A small valid observation for POLICY."""
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


def trace_seed(rows: int = 40) -> str:
    """A small valid trace CSV (one row every 15 s)."""
    lines = ["# timezone: America/New_York", "timestamp,http_rps,ws_connections,tasks_general"]
    for i in range(rows):
        t = NOW + 15 * i
        lines.append(f"{t:.0f},{10 + i % 7},{100 + i},{i % 5}")
    return "\n".join(lines) + "\n"


def inventory_seed() -> dict[str, Any]:
    with (ROOT / "examples" / "inventory.toml").open("rb") as handle:
        return tomllib.load(handle)


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One input: its files, the command line and what must happen."""

    kind: str
    label: str
    files: dict[str, bytes | None]  # None: make a directory of that name
    argv: list[str]
    expect: str  # "invalid": exit 2; "valid": exit 0; "any": 0 or 2
    out_dir: bool = False


BAD_NUMBERS: list[Any] = [math.nan, math.inf, -math.inf, -5, 1e300, -1e300]
WRONG_TYPES: list[Any] = [{"x": 1}, [1, [2]], True, "", "bogus", 1.5]


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            yield from _leaves(value, (*path, i))
    else:
        yield path, data


def _tables(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(data, dict):
        yield path
        for key, value in data.items():
            yield from _tables(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if isinstance(value, dict):
                yield from _tables(value, (*path, i))


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _delete(data: Any, path: tuple[Any, ...]) -> None:
    del _get(data, path[:-1])[path[-1]]


def _toml(data: dict[str, Any]) -> bytes:
    return tomli_w.dumps(data).encode()


def _wrong_type(rng: random.Random, value: Any) -> Any:
    """A value whose TOML/JSON type differs from ``value``'s in a way no field accepts."""
    if isinstance(value, dict):
        return rng.choice(["text", 5, [1, 2]])
    if isinstance(value, list):
        return rng.choice([{"x": 1}, 5])
    return rng.choice([{"x": 1}, [[1], ["a"]]])


def _deep(kind: str, depth: int) -> bytes:
    if kind == "json":
        return ("[" * depth + "]" * depth).encode()
    return ("a = " + "[" * depth + "]" * depth + "\n").encode()


def _generic(
    rng: random.Random, data: dict[str, Any], dump: Callable[[dict[str, Any]], bytes]
) -> tuple[str, bytes, str]:
    """A structural mutation of ``data``: (label, bytes, expectation)."""
    choice = rng.randrange(9)
    data = copy.deepcopy(data)
    leaves = [(p, v) for p, v in _leaves(data) if p]
    if choice == 0:
        path, value = rng.choice(leaves)
        _set(data, path, _wrong_type(rng, value))
        return f"wrong type at {path}", dump(data), "invalid"
    if choice == 1:
        numeric = [
            (p, v) for p, v in leaves if isinstance(v, float | int) and not isinstance(v, bool)
        ]
        if numeric:
            path, _ = rng.choice(numeric)
            bad = rng.choice([math.nan, math.inf, -math.inf])
            _set(data, path, bad)
            return f"{bad} at {path}", dump(data), "invalid"
    if choice == 2:
        table = rng.choice(list(_tables(data)))
        _get(data, table)["zzunknown" + str(rng.randrange(100))] = 1
        return f"unknown key in {table}", dump(data), "invalid"
    if choice == 3:
        depth = rng.choice([50, 500, 5000, 100000])
        return f"nested {depth}", _deep("json" if dump is _json else "toml", depth), "invalid"
    if choice == 4:
        text = dump(data)
        cut = rng.randrange(len(text))
        return f"truncated at {cut}", text[:cut], "any"
    if choice == 5:
        text = bytearray(dump(data))
        pos = rng.randrange(len(text))
        text[pos : pos + 1] = rng.choice([b"\xff", b"\xc3\x28", b"\x00", b"\x80\x80"])
        return f"bad bytes at {pos}", bytes(text), "any"
    if choice == 6:
        return "bom", b"\xef\xbb\xbf" + dump(data), "valid"
    if choice == 7:
        return "empty", rng.choice([b"", b"\n", b"   "]), "invalid"
    text = dump(data)
    return "garbage", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))), "any"


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


# Targeted mutations: (path, bad value, why), one list per kind. A path component "*" picks
# any key of that table.
POLICY_BAD: list[tuple[tuple[Any, ...], Any]] = [
    (("controller", "interval"), math.nan),
    (("controller", "interval"), math.inf),
    (("controller", "interval"), "0s"),
    (("controller", "interval"), 0),
    (("controller", "interval"), "1e400s"),
    (("controller", "retention"), math.inf),
    (("controller", "listen"), "127.0.0.1:99999"),
    (("controller", "listen"), "127.0.0.1:-1"),
    (("controller", "listen"), "no port"),
    (("controller", "listen"), ""),
    (("controller", "token_env"), "A B"),
    (("controller", "token_env"), ""),
    (("controller", "state"), ""),
    (("controller", "leader_ttl"), "0s"),
    (("controller", "backoff"), "0s"),
    (("controller", "max_gap"), "0s"),
    (("controller",), "text"),
    (("pools",), "web"),
    (("pools", "web"), "web"),
    (("pools", "web", "port"), -5),
    (("pools", "web", "port"), 0),
    (("pools", "web", "port"), "-5 + n"),
    (("pools", "web", "port"), "99999 + n"),
    (("pools", "web", "port"), "8000 + m"),
    (("pools", "web", "min"), -1),
    (("pools", "web", "max"), 0),
    (("pools", "web", "min"), 1.5),
    (("pools", "web", "health"), "/a b"),
    (("pools", "web", "health"), "/health/\nX"),
    (("pools", "web", "warmup"), math.nan),
    (("pools", "web", "drain_timeout"), math.inf),
    (("pools", "web", "start_timeout"), "0s"),
    (("pools", "web", "runtime"), "supervisor"),
    (("pools", "web", "runtime", "bogus"), 1),
    (("pools", "web", "runtime", "type"), "supervisr"),
    (("pools", "web", "runtime", "group"), 5),
    (("pools", "web", "runtime", "group"), "a b\n"),
    (("pools", "web", "runtime", "url"), "http://"),
    (("pools", "web", "runtime"), {"type": "supervisor"}),
    (("pools", "web", "balancer", "type"), "ngnix"),
    (("pools", "web", "balancer", "upstream"), "a b;"),
    (("pools", "web", "balancer", "file"), 5),
    (("pools", "web", "balancer", "bogus"), True),
    (("pools", "worker", "runtime", "unit"), 5),
    (("pools", "worker", "runtime", "scope"), "bogus"),
    (("pools", "worker", "runtime", "uni"), "x@{n}.service"),
    (("pools", "worker", "queues"), "general"),
    (("pools", "worker", "queues"), [""]),
    (("pools", "web", "scale_out_limits"), [{"percent": math.nan}]),
    (("pools", "web", "scale_out_limits"), [{"instances": 1, "period": "0s"}]),
    (("pools", "web", "fallback"), {"count": -1}),
    (("sources", "prom", "url"), 5),
    (("sources", "prom", "url"), "not a url"),
    (("sources", "prom", "url"), ""),
    (("sources", "prom", "bogus"), 1),
    (("sources", "prom", "type"), "prometeus"),
    (("sources", "prom"), "prometheus"),
    (("sources", "broker", "url"), "http://x"),
    (("sources", "broker", "url"), 5),
    (("sources", "broker", "queues"), "general"),
    (("rules", 0, "scale_out", "above"), math.nan),
    (("rules", 0, "scale_out", "above"), math.inf),
    (("rules", 0, "scale_in", "below"), -math.inf),
    (("rules", 0, "scale_out", "for"), "5x"),
    (("rules", 0, "scale_out", "for"), math.nan),
    (("rules", 0, "scale_out", "step"), 0),
    (("rules", 0, "scale_out", "step"), "nan%"),
    (("rules", 0, "scale_in", "step"), "inf%"),
    (("rules", 0, "pool"), "wbe"),
    (("rules", 0, "pool"), 5),
    (("rules", 0, "metric"), "prom"),
    (("rules", 0, "metric", "source"), "pram"),
    (("rules", 0, "metric", "signal"), "cpux"),
    (("rules", 0, "metric", "aggregate"), "mean"),
    (("rules", 0, "priority"), "urgent"),
    (("rules", 0, "name"), ""),
    (("rules", 0, "name"), "ws"),
    (("rules", 0, "name"), "cpu\nfake reason"),
    (("schedules", 0, "name"), " day"),
    (("rules", 0, "type"), "thresold"),
    (("rules", 1, "target"), math.nan),
    (("rules", 1, "target"), math.inf),
    (("rules", 1, "target"), -1),
    (("rules", 1, "tolerance"), math.nan),
    (("rules", 1, "tolerance"), 1.5),
    (("rules", 3, "action", "timeout"), "0s"),
    (("rules", 3, "action", "argv"), []),
    (("rules", 3, "action", "argv"), "true"),
    (("rules", 3, "action", "argv"), [""]),
    (("rules", 3, "cooldown"), math.nan),
    (("rules", 3, "when", "above"), math.nan),
    (("rules", 4, "action", "url"), "not a url"),
    (("rules", 4, "action", "url"), "ftp://x"),
    (("rules", 4, "action", "url"), ""),
    (("rules", 4, "action", "type"), "notfy"),
    (("rules", 4, "action", "message"), ""),
    (("rules",), "cpu"),
    (("rules",), [1, 2]),
    (("schedules", 0, "pools"), "web"),
    (("schedules", 0, "pools"), ["wbe"]),
    (("schedules", 0, "pools"), []),
    (("schedules", 0, "timezone"), "Mars/Base"),
    (("schedules", 0, "timezone"), ""),
    (("schedules", 0, "start"), "0 25 * * *"),
    (("schedules", 0, "start"), ""),
    (("schedules", 0, "min"), -1),
    (("schedules", 0, "min"), 99),
    (("schedules", 0, "calendar"), "xnys2"),
    (("schedules", 0, "start"), "open-90m"),
    (("schedules",), "day"),
    (("rules",), {"name": "x"}),
    (("pools", "Web App"), {"min": 1, "max": 2}),
    (("pools", "web", "kind"), "wbe"),
    (("pools", "web", "fallback"), {"count": 1, "after": "1e3s"}),
    (("sources", "prom", "timeout"), "0s"),
    (("sources", "prom", "timeout"), math.nan),
    (("sources", "prom", "token_env"), "A B"),
    (("sources", "prom", "push_down_function"), "max"),
    (("controller", "leader"), "redis:/x"),
    (("controller", "dry_run"), "yes"),
    (("zzz",), {"a": 1}),
]


def policy_cases(rng: random.Random, count: int) -> Iterator[Case]:
    seed = tomllib.loads(POLICY)
    for _ in range(count):
        roll = rng.random()
        if roll < 0.55:
            path, bad = rng.choice(POLICY_BAD)
            data = copy.deepcopy(seed)
            try:
                _set(data, path, bad)
            except (KeyError, IndexError, TypeError):
                continue
            label, body, expect = f"{path} = {bad!r}", _toml(data), "invalid"
        elif roll < 0.58:
            label, body, expect = "valid", _toml(seed), "valid"
        elif roll < 0.6:
            label, body, expect = "directory", b"", "invalid"
            yield Case("policy", label, {"p.toml": None}, ["validate", "{p.toml}"], expect)
            continue
        else:
            label, body, expect = _generic(rng, seed, _toml)
        yield Case("policy", label, {"p.toml": body}, ["validate", "{p.toml}"], expect)


OBS_BAD: list[tuple[tuple[Any, ...], Any]] = [
    (("now",), 1e20),
    (("now",), -1e20),
    (("now",), math.nan),
    (("now",), math.inf),
    (("now",), 1e12 * 1000),
    (("now",), "garbage"),
    (("now",), "2026-11-24T15:00:00"),
    (("now",), "9999-12-31T23:59:59-05:00"),
    (("now",), True),
    (("now",), [1]),
    (("pools",), None),
    (("pools",), "web"),
    (("pools", "web"), "x"),
    (("pools", "wbe"), {"instances": [{"id": "1"}]}),
    (("pools", "web", "instances"), [{"id": "1"}, {"id": "1"}]),
    (("pools", "web", "instances", 0, "id"), ""),
    (("pools", "web", "instances", 0, "id"), 5),
    (("pools", "web", "instances", 0, "state"), "bogus"),
    (("pools", "web", "instances", 0, "started_at"), 1e20),
    (("pools", "web", "instances", 0, "started_at"), math.nan),
    (("pools", "web", "events", 0, "before"), -1),
    (("pools", "web", "events", 0, "at"), math.inf),
    (("pools", "web", "events", 0, "after"), 1.5),
    (("pools", "web", "recommendations"), {"ws": [[NOW]]}),
    (("pools", "web", "recommendations"), {"ws": [[NOW, -1]]}),
    (("pools", "web", "recommendations"), {"wss": [[NOW, 1]]}),
    (("pools", "web", "recommendations"), {"ws": [[math.nan, 1]]}),
    (("samples", "cpu", 0, "value"), math.nan),
    (("samples", "cpu", 0, "value"), math.inf),
    (("samples", "cpu", 0, "value"), -math.inf),
    (("samples", "cpu", 0, "value"), True),
    (("samples", "cpu", 0, "value"), -50),
    (("samples", "cpu", 0, "value"), "75"),
    (("samples", "cpu", 0, "value"), None),
    (("samples", "ws", 0, "value"), -50),
    (("samples", "ws", 0, "value"), 1e308 * 10),
    (("samples", "cpu", 0, "at"), 1e20),
    (("samples", "cpu", 0, "at"), -1),
    (("samples", "cpu", 0, "instance"), ""),
    (("samples", "cpu", 0, "instance"), 5),
    (("samples", "cpux"), [{"at": NOW, "value": 1}]),
    (("samples", "cpu"), {"at": NOW}),
    (("errors", "db"), 5),
    (("errors", "dbx"), "x"),
    (("actions", "db"), 1e20),
    (("actions", "dbx"), NOW),
    (("samples", "cpu", 0, "value"), 10**400),
    (("samples", "cpu", 0, "at"), 10**400),
    (("now",), 10**400),
    (("pools", "web", "events", 0, "before"), 10**400),
    (("samples", "cpu", 0), {"value": 1}),
    (("samples", "cpu", 0), 5),
    (("zzz",), 1),
]


def observation_cases(rng: random.Random, count: int) -> Iterator[Case]:
    seed = observation_seed()
    policy = POLICY.encode()
    argv = ["plan", "--observe", "{obs.json}", "--policy", "{p.toml}", "--json"]
    for _ in range(count):
        roll = rng.random()
        if roll < 0.55:
            path, bad = rng.choice(OBS_BAD)
            data = copy.deepcopy(seed)
            try:
                _set(data, path, bad)
            except (KeyError, IndexError, TypeError):
                continue
            label, body, expect = f"{path} = {bad!r}", _json(data), "invalid"
        elif roll < 0.58:
            label, body, expect = "valid", _json(seed), "valid"
        elif roll < 0.6:
            files: dict[str, bytes | None] = {"obs.json": None, "p.toml": policy}
            yield Case("observation", "directory", files, argv, "invalid")
            continue
        elif roll < 0.63:
            body = rng.choice([b"null", b"[]", b"5", b'"x"', b"true", b"{}"])
            expect = "valid" if body == b"{}" else "invalid"
            label = f"top level {body!r}"
        else:
            label, body, expect = _generic(rng, seed, _json)
            if label == "bom":
                expect = "any"
        yield Case("observation", label, {"obs.json": body, "p.toml": policy}, argv, expect)


def trace_cases(rng: random.Random, count: int) -> Iterator[Case]:
    argv = ["simulate", "--trace", "{t.csv}", "--policy", "{p.toml}", "--compare", "none", "-q"]
    policy = POLICY.encode()
    for _ in range(count):
        rows = trace_seed(rng.choice([3, 10, 40])).splitlines()
        header = 1
        roll = rng.random()
        expect = "invalid"
        if roll < 0.5:
            line = rng.randrange(header + 1, len(rows))
            cells = rows[line].split(",")
            col = rng.randrange(len(cells))
            bad = rng.choice(
                ["nan", "inf", "-inf", "-1", "", "abc", "1e400", "true", "0x10", "1_0"]
                + (
                    ["1e12", "1e20", "-1e20", "253402300800", "2026-11-24T15:00:00", "1e11", "4e9"]
                    if col == 0
                    else []
                )
            )
            cells[col] = bad
            rows[line] = ",".join(cells)
            label = f"line {line + 1} col {col}: {bad!r}"
        elif roll < 0.55:
            rows = rows[: header + 2]
            rows[-1] = (
                rows[-1].split(",", 1)[0].replace(rows[-1].split(",", 1)[0], f"{NOW + 1:.0f}")
                + ","
                + rows[-1].split(",", 1)[1]
            )
            label = "two rows 1 s apart"
            expect = "any"
        elif roll < 0.6:
            rows = rows[: header + 2]
            label = "one row"
            expect = "any"
        elif roll < 0.65:
            rows[header] = rng.choice(
                [
                    "time,http_rps",
                    "timestamp,timestamp,http_rps",
                    "timestamp",
                    "timestamp,,http_rps",
                    "timestamp,http_rps,ws_connections",
                    "timestamp,bogus",
                ]
            )
            label = f"header {rows[header]!r}"
        elif roll < 0.7:
            rows[0] = rng.choice(["# timezone: Mars/Base", "# timezone: "])
            label = f"zone {rows[0]!r}"
            expect = "invalid" if "Mars" in rows[0] else "any"
        elif roll < 0.75:
            line = rng.randrange(header + 2, len(rows))
            rows[line], rows[line - 1] = rows[line - 1], rows[line]
            label = "rows swapped"
        elif roll < 0.8:
            line = rng.randrange(header + 1, len(rows))
            rows[line] = rows[line].rsplit(",", 1)[0] if rng.random() < 0.5 else rows[line] + ",1"
            label = "field count"
        elif roll < 0.83:
            label, expect = "valid", "valid"
        elif roll < 0.85:
            files: dict[str, bytes | None] = {"t.csv": None, "p.toml": policy}
            yield Case("trace", "directory", files, argv, "invalid")
            continue
        elif roll < 0.88:
            rows[header] += ",extra"
            for j in range(header + 1, len(rows)):
                rows[j] += ",1"
            label, expect = "unknown column", "valid"
        else:
            text = ("\n".join(rows) + "\n").encode()
            choice = rng.randrange(4)
            if choice == 0:
                body, label, expect = b"\xef\xbb\xbf" + text, "bom", "valid"
            elif choice == 1:
                cut = rng.randrange(len(text))
                body, label, expect = text[:cut], f"truncated {cut}", "any"
            elif choice == 2:
                pos = rng.randrange(len(text))
                body = text[:pos] + b"\xff" + text[pos + 1 :]
                label, expect = "bad bytes", "invalid"
            else:
                body, label, expect = b"", "empty", "invalid"
            yield Case("trace", label, {"t.csv": body, "p.toml": policy}, argv, expect)
            continue
        body = ("\n".join(rows) + "\n").encode()
        yield Case("trace", label, {"t.csv": body, "p.toml": policy}, argv, expect)


INV_BAD: list[tuple[tuple[Any, ...], Any]] = [
    (("deployment", "image"), "registry.example.com/x:latest\nExec=/bin/sh"),
    (("deployment", "image"), ""),
    (("deployment", "image"), "a b"),
    (("deployment", "timezone"), "Mars/Base"),
    (("deployment", "timezone"), ""),
    (("deployment", "volumes"), ["a:b\nX=1"]),
    (("deployment", "volumes"), [""]),
    (("deployment", "env_file"), "/a\nb"),
    (("deployment", "project"), ""),
    (("deployment",), "x"),
    (("pools", "django", "command"), ["daphne", "a\nb"]),
    (("pools", "django", "command"), [""]),
    (("pools", "django", "port"), -5),
    (("pools", "django", "port"), "-5 + n"),
    (("pools", "django", "container_port"), -1),
    (("pools", "django", "container_port"), 70000),
    (("pools", "django", "health"), "/health/\nX"),
    (("pools", "django", "health"), "/a b"),
    (("pools", "django", "health_interval"), "0s"),
    (("pools", "django", "stop_timeout"), "0s"),
    (("pools", "django", "limits", "memory"), "0"),
    (("pools", "django", "limits", "cpu"), "0%"),
    (("pools", "django"), "web"),
    (("pools", "celery-worker", "queues"), ["a b"]),
    (("pools", "celery-worker", "concurrency"), 0),
    (("hosts", "web01", "address"), "10.0.0.300"),
    (("hosts", "web01", "address"), "10.0.0.12"),
    (("hosts", "web01", "address"), "-bad-.example"),
    (("hosts", "web01", "address"), "a..b"),
    (("hosts", "web01", "address"), ""),
    (("hosts", "web01", "address"), "256.1.1.1"),
    (("hosts", "web01", "roles"), ["web", "web"]),
    (("hosts", "web01", "roles"), []),
    (("hosts", "web01", "roles"), "web"),
    (("hosts", "web01", "ports"), {"redis": -1}),
    (("hosts", "web01"), "x"),
    (("postgres", "port"), -1),
    (("postgres", "port"), 0),
    (("postgres", "image"), "a\nb"),
    (("postgres", "listen_addresses"), "*; x"),
    (("postgres", "listen_addresses"), "a\nb"),
    (("postgres", "client_cidrs"), ["10.0.0.0/33"]),
    (("postgres", "users", "senex_user", "password"), "inline"),
    (("postgres", "users", "senex_user", "password"), {"env": "A B"}),
    (("postgres", "users", "senex_user", "password"), {"env": ""}),
    (("postgres", "users", "senex_user", "password"), {"file": "relative"}),
    (("postgres", "users", "senex_user", "password"), {}),
    (("postgres", "replication", "wal_keep_size"), "1 GB"),
    (("pgbouncer", "listen_addr"), "a\nb"),
    (("pgbouncer", "listen_addr"), "*; x"),
    (("pgbouncer", "unix_socket_dir"), "relative"),
    (("pgbouncer", "unix_socket_dir"), "/a\nb"),
    (("pgbouncer", "pool_mode"), "sesion"),
    (("redis", "maxmemory_policy"), "bogus"),
    (("redis", "maxmemory_policy"), ""),
    (("redis", "bind"), "a\nb"),
    (("redis", "bind"), "x; y"),
    (("redis", "image"), "a b"),
    (("redis", "port"), -6379),
    (("sentinel", "bind"), "a\nb"),
    (("sentinel", "quorum"), 0),
    (("nginx", "server_name"), "a; return 500; #"),
    (("nginx", "server_name"), "a\nb"),
    (("nginx", "server_name"), ""),
    (("nginx", "websocket_path"), "/ws/ { }"),
    (("nginx", "websocket_path"), "ws"),
    (("nginx", "listen"), 0),
    (("nginx", "fail_timeout"), "0s"),
    (("nginx", "pool"), "celery-worker"),
    (("nginx", "pool"), "djang"),
    (("haproxy", "bind"), "bogus bind\nx"),
    (("haproxy", "bind"), "*:99999"),
    (("haproxy", "bind"), ""),
    (("haproxy", "check_host"), "a b"),
    (("haproxy", "check_interval"), "0s"),
    (("haproxy", "timeout_tunnel"), "0s"),
    (("balancer", "type"), "hproxy"),
    (("prometheus", "controller"), "10.0.0.11:99999"),
    (("prometheus", "controller"), "nohost"),
    (("prometheus", "controller"), "a b:80"),
    (("prometheus", "exporters", "celery"), "x:-1"),
    (("prometheus", "exporters", "node"), -1),
    (("prometheus", "scrape_interval"), "0s"),
    (("schedules", 0, "on_calendar"), "bogus"),
    (("schedules", 0, "on_calendar"), "Mon..Fri 25:00"),
    (("schedules", 0, "on_calendar"), "a\nb"),
    (("schedules", 0, "count"), 99),
    (("schedules", 0, "pool"), "djang"),
    (("schedules", 1, "name"), "market-open"),
    (("network", "subnet"), "10.0.0.0/99"),
    (("network", "name"), "A B"),
    (("hosts", "Web 01"), {"address": "10.0.0.99", "roles": ["web"]}),
    (("postgres", "users", "Bad User"), {"password": {"env": "X"}}),
    (("postgres", "users", "senex_user", "password"), ["x"]),
    (("pools", "django", "kind"), "wbe"),
    (("pools", "django", "port"), "65535 + n"),
    (("zzz",), {"a": 1}),
]


def inventory_cases(rng: random.Random, count: int) -> Iterator[Case]:
    seed = inventory_seed()
    argv = ["render", "--inventory", "{inv.toml}", "--out", "{out}"]
    for _ in range(count):
        roll = rng.random()
        if roll < 0.6:
            path, bad = rng.choice(INV_BAD)
            data = copy.deepcopy(seed)
            try:
                _set(data, path, bad)
            except (KeyError, IndexError, TypeError):
                continue
            label, body, expect = f"{path} = {bad!r}", _toml(data), "invalid"
        elif roll < 0.61:
            label, body, expect = "valid", _toml(seed), "valid"
        elif roll < 0.62:
            yield Case("inventory", "directory", {"inv.toml": None}, argv, "invalid", True)
            continue
        else:
            label, body, expect = _generic(rng, seed, _toml)
        yield Case("inventory", label, {"inv.toml": body}, argv, expect, True)


KINDS: dict[str, Callable[[random.Random, int], Iterator[Case]]] = {
    "policy": policy_cases,
    "observation": observation_cases,
    "trace": trace_cases,
    "inventory": inventory_cases,
}


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    name: str
    code: int | None
    stderr: str
    detail: str = ""
    case: Case | None = field(default=None, repr=False)


def _tree(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(path.rglob("*"))
    }


def invoke(argv: list[str]) -> tuple[int | None, str, str, BaseException | None]:
    """Run the CLI in this process: (exit code, stdout, stderr, escaped exception)."""
    from senex_scale import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | None = 0
    escaped: BaseException | None = None
    old_argv = sys.argv
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
    except RecursionError as exc:
        escaped = exc
    except Exception as exc:  # classifying what escapes is the point
        escaped = exc
    finally:
        sys.argv = old_argv
    return code, stdout.getvalue(), stderr.getvalue(), escaped


def run_case(case: Case, work: Path) -> Outcome:
    paths: dict[str, str] = {}
    for name, body in case.files.items():
        path = work / name
        if body is None:
            path.mkdir()
        else:
            path.write_bytes(body)
        paths[name] = str(path)
    out = work / "out"
    if case.out_dir:  # a new directory: render must not make it when it fails
        paths["out"] = str(out)
    before = _tree(out)
    argv = [paths.get(a[1:-1], a) if a.startswith("{") else a for a in case.argv]
    code, _stdout, stderr, escaped = invoke(argv)
    if escaped is not None:
        return Outcome(
            "traceback", None, stderr, f"{type(escaped).__name__}: {escaped}"[:300], case
        )
    if case.out_dir and code != 0 and _tree(out) != before:
        return Outcome("wrote", code, stderr, "", case)
    if code == 0:
        if case.expect == "invalid":
            return Outcome("accepted-invalid", code, stderr, "", case)
        return Outcome("accepted", code, stderr, "", case)
    if code != 2:
        return Outcome("wrong-code", code, stderr, "", case)
    if case.expect == "valid":
        return Outcome("rejected-valid", code, stderr, "", case)
    problem = _message_problem(stderr, case)
    if problem:
        return Outcome("bad-message", code, stderr, problem, case)
    return Outcome("rejected", code, stderr, "", case)


def _message_problem(stderr: str, case: Case) -> str:
    lines = stderr.splitlines(keepends=True)
    stderr = "".join(line for line in lines if not line.startswith("Warning: "))
    if not stderr.startswith("Error: "):
        return "does not start with 'Error: '"
    if not stderr.endswith("\n"):
        return "no final newline"
    if "Warning" in stderr:
        return "a Python warning"
    leak = LEAKS.search(stderr)
    if leak:
        return f"leaks {leak.group(0)!r}"
    names = [n for n, b in case.files.items() if n != "p.toml" or case.kind == "policy"]
    if not any(n in stderr for n in names) and "secrets" not in stderr:
        return "names no input file"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=2000, help="inputs per kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kind", choices=sorted(KINDS), action="append")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args()
    os.environ.update(SECRETS)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    total_bad = 0
    for kind in args.kind or list(KINDS):
        rng = random.Random(f"{args.seed}-{kind}")
        counts: Counter[str] = Counter()
        examples: dict[str, list[Outcome]] = {}
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for n, case in enumerate(KINDS[kind](rng, args.count)):
                work = Path(tmp) / str(n)
                work.mkdir()
                outcome = run_case(case, work)
                counts[outcome.name] += 1
                examples.setdefault(outcome.name, []).append(outcome)
        elapsed = time.perf_counter() - start
        shown = ", ".join(f"{name} {counts[name]}" for name in sorted(counts))
        print(f"{kind:12} {sum(counts.values()):5} inputs in {elapsed:5.1f} s: {shown}")
        for name in (
            "traceback",
            "wrong-code",
            "accepted-invalid",
            "bad-message",
            "wrote",
            "rejected-valid",
        ):
            total_bad += counts[name]
            if not args.verbose:
                continue
            seen: set[str] = set()
            for outcome in examples.get(name, []):
                assert outcome.case is not None
                key = outcome.case.label.split(" = ")[0] + outcome.detail[:40]
                if key in seen and args.verbose < 2:
                    continue
                seen.add(key)
                message = outcome.stderr.strip().replace("\n", " | ")[:300]
                print(f"   {name}: {outcome.case.label[:120]} -> {outcome.detail} {message}")
    sys.exit(1 if total_bad else 0)


if __name__ == "__main__":
    main()
