"""Bad policy files: ``validate`` exits 2 naming the file and the dotted path, never a traceback.

Each property starts from a valid policy (with driver tables) and breaks one value in a way
no field accepts; the problem must be reported with the path a user finds in the file.
"""

from __future__ import annotations

import copy
import math
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from senex_scale.policy.loading import dotted

POLICY = """
[controller]
interval = "15s"

[sources.prom]
type = "prometheus"
url = "http://127.0.0.1:9090"

[pools.web]
runtime = { type = "supervisor", url = "unix:///run/supervisor.sock", group = "web" }
balancer = { type = "nginx", upstream = "web_backend", file = "/etc/nginx/conf.d/web.conf" }
port = "8000 + n"
min = 1
max = 4

[[rules]]
name = "cpu"
pool = "web"
metric = { source = "prom", signal = "cpu", query = "cpu" }
scale_out = { above = 70, for = "1m" }
scale_in = { below = 30, for = "2m" }

[[rules]]
name = "ws"
type = "target"
pool = "web"
metric = { source = "prom", query = "ws" }
target = 100

[[rules]]
name = "db"
type = "action"
metric = { source = "prom", query = "db" }
when = { above = 80 }
action = { type = "runbook", argv = ["true"] }

[[schedules]]
name = "day"
pools = ["web"]
start = "0 8 * * MON-FRI"
end = "0 23 * * MON-FRI"
min = 2
"""
SEED = tomllib.loads(POLICY)
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
NOT_A_TABLE = st.sampled_from(["text", 5, [1, 2], True])

# (dotted path in messages, path in the data, bad values)
BAD: list[tuple[str, tuple[Any, ...], st.SearchStrategy[Any]]] = [
    ("controller.interval", ("controller", "interval"), NOT_FINITE | st.just("0s") | st.just(0)),
    ("controller.listen", ("controller", "listen"), st.sampled_from(["x:99999", "x:-1", "", "x"])),
    ("controller.token_env", ("controller", "token_env"), st.sampled_from(["A B", "", "1X"])),
    ("controller.dry_run", ("controller", "dry_run"), st.sampled_from(["yes", 1, "true"])),
    ("pools.web.port", ("pools", "web", "port"), st.integers(max_value=0) | st.just("-5 + n")),
    ("pools.web.min", ("pools", "web", "min"), st.integers(max_value=-1) | NOT_FINITE),
    ("pools.web.health", ("pools", "web", "health"), st.sampled_from(["/a b", "/x\ny", "x"])),
    ("pools.web.drain_timeout", ("pools", "web", "drain_timeout"), NOT_FINITE | st.just("0s")),
    ("pools.web", ("pools", "web"), NOT_A_TABLE),
    ("pools.web.runtime.url", ("pools", "web", "runtime", "url"), st.sampled_from([5, "x", ""])),
    ("pools.web.runtime", ("pools", "web", "runtime", "bogus"), st.just(1)),
    ("pools.web.balancer.upstream", ("pools", "web", "balancer", "upstream"), st.just("a b;")),
    ("pools.web.balancer.file", ("pools", "web", "balancer", "file"), st.just(5)),
    ("sources.prom.url", ("sources", "prom", "url"), st.sampled_from([5, "not a url", ""])),
    ("sources.prom", ("sources", "prom", "bogus"), st.just(1)),
    ("sources.prom.timeout", ("sources", "prom", "timeout"), NOT_FINITE | st.just("0s")),
    ("rules[0].scale_out.above", ("rules", 0, "scale_out", "above"), NOT_FINITE),
    ("rules[0].scale_in.below", ("rules", 0, "scale_in", "below"), NOT_FINITE),
    ("rules[0].scale_out.for", ("rules", 0, "scale_out", "for"), NOT_FINITE | st.just("5x")),
    ("rules[0].metric", ("rules", 0, "metric"), st.sampled_from(["prom", 5])),
    ("rules[1].target", ("rules", 1, "target"), NOT_FINITE | st.floats(max_value=0)),
    ("rules[1].tolerance", ("rules", 1, "tolerance"), NOT_FINITE),
    ("rules[2].action.timeout", ("rules", 2, "action", "timeout"), st.just("0s")),
    ("rules[2].action.argv", ("rules", 2, "action", "argv"), st.sampled_from(["true", []])),
    ("schedules[0].pools", ("schedules", 0, "pools"), st.sampled_from(["web", [], ["wbe"]])),
    ("schedules[0].timezone", ("schedules", 0, "timezone"), st.sampled_from(["Mars/Base", ""])),
]


def _write(tmp: str, body: bytes) -> str:
    path = Path(tmp) / "policy.toml"
    path.write_bytes(body)
    return str(path)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_broken_value_is_named_by_its_path(run: Any, data: st.DataObject) -> None:
    """Any one value broken (wrong type, NaN, out of range, bad text): exit 2 naming its path."""
    where, path, values = data.draw(st.sampled_from(BAD))
    doc = copy.deepcopy(SEED)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(values)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, tomli_w.dumps(doc).encode())])
    result.assert_refused("policy.toml", where)


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_garbage_never_crashes(run: Any, body: bytes) -> None:
    """Random bytes or text: exit 2 with an Error naming the file (never a traceback).

    (Text that happens to be a valid policy, such as a lone ``[controller]``, may pass.)
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, body)])
    if result.code != 0:
        result.assert_refused("policy.toml")


@settings(max_examples=15, deadline=None)
@given(depth=st.integers(min_value=33, max_value=20000))
def test_deep_nesting_is_refused(run: Any, depth: int) -> None:
    """Arrays nested deeper than any policy needs: refused, no RecursionError."""
    body = ("a = " + "[" * depth + "]" * depth + "\n").encode()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, body)])
    result.assert_refused("policy.toml", "nested")


def test_the_seed_is_valid(run: Any) -> None:
    """The policy the properties break is valid, driver tables included."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, POLICY.encode())])
    assert result.code == 0, result.stderr


def test_a_byte_order_mark_is_accepted(run: Any) -> None:
    """A UTF-8 byte-order mark (Windows editors write one) is not a TOML error."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, b"\xef\xbb\xbf" + POLICY.encode())])
    assert result.code == 0, result.stderr


def test_an_empty_file_is_refused(run: Any) -> None:
    """An empty policy is a mistake (a wrong file), not a policy that does nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, b"\n")])
    result.assert_refused("policy.toml", "empty")


def test_a_directory_is_refused(run: Any) -> None:
    """A directory given as the policy: exit 2, "is a directory"."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", tmp])
    result.assert_refused(tmp, "is a directory")


def test_driver_tables_are_checked_without_connecting(run: Any) -> None:
    """validate checks sources, runtime and balancer tables with the drivers' own models."""
    doc = copy.deepcopy(SEED)
    del doc["sources"]["prom"]["url"]
    doc["pools"]["web"]["runtime"]["grop"] = "x"
    doc["pools"]["web"]["balancer"]["max_fails"] = -1
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, tomli_w.dumps(doc).encode())])
    result.assert_refused(
        "3 problems",
        "sources.prom.url: required",
        'pools.web.runtime: unknown key "grop" (did you mean "group"?)',
        "pools.web.balancer.max_fails: -1: must be at least 0",
    )


def test_a_schedule_naming_a_pool_given_as_text(run: Any) -> None:
    """A pool that is a string while a schedule names it: reported, not an AttributeError."""
    doc = copy.deepcopy(SEED)
    doc["pools"]["web"] = "web"
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, tomli_w.dumps(doc).encode())])
    result.assert_refused('pools.web: "web": expected a table')


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [p for key, value in doc.items() for p in _leaves(value, (*path, key))]
    if isinstance(doc, list) and doc and all(isinstance(v, dict) for v in doc):
        return [p for i, value in enumerate(doc) for p in _leaves(value, (*path, i))]
    return [path]


@settings(max_examples=40, deadline=None)
@given(path=st.sampled_from(_leaves(SEED)), value=st.sampled_from([{"x": 1}, [[1], ["a"]]]))
def test_a_table_or_array_anywhere_is_refused(run: Any, path: tuple[Any, ...], value: Any) -> None:
    """Any value replaced by a table or a nested array: refused by its path (the cross-reference
    and driver checks read the same tables and must not trip over it)."""
    doc = copy.deepcopy(SEED)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        result = run(["validate", _write(tmp, tomli_w.dumps(doc).encode())])
    result.assert_refused("policy.toml", dotted(path[:-1]))
