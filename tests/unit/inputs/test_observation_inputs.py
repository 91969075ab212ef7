"""Bad observation files: ``plan`` exits 2 naming the file and the JSON path, never a traceback."""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

POLICY = """
[sources.s]
type = "prometheus"
url = "http://127.0.0.1:9090"
[pools.web]
min = 1
max = 4
[[rules]]
name = "cpu"
pool = "web"
metric = { source = "s" }
scale_out = { above = 70, for = "1m" }
scale_in = { below = 30, for = "1m" }
[[rules]]
name = "ws"
type = "target"
pool = "web"
metric = { source = "s" }
target = 100
"""
NOW = 1795532400.0  # 2026-11-24T15:00:00Z
SEED: dict[str, Any] = {
    "now": "2026-11-24T15:00:00Z",
    "pools": {
        "web": {
            "instances": [{"id": "1", "started_at": NOW - 3600}, {"id": "2"}],
            "events": [{"at": NOW - 600, "before": 1, "after": 2}],
            "recommendations": {"ws": [[NOW - 15, 2]]},
        }
    },
    "samples": {"cpu": [{"at": NOW - 15 * i, "value": 80.0} for i in range(5)]},
    "errors": {},
}
BAD_TIMES = st.sampled_from([math.nan, math.inf, -math.inf, 1e20, -1.0, 1e15, "x", True, None])
BAD_VALUES = st.sampled_from([math.nan, math.inf, -math.inf, True, "75", None]) | st.floats(
    max_value=-1e-9, allow_nan=False, allow_infinity=False
)
BAD: list[tuple[str, tuple[Any, ...], st.SearchStrategy[Any]]] = [
    ("now", ("now",), BAD_TIMES.filter(lambda v: v is not None)),
    ("samples.cpu[0].at", ("samples", "cpu", 0, "at"), BAD_TIMES),
    ("samples.cpu[0].value", ("samples", "cpu", 0, "value"), BAD_VALUES),
    ("samples.cpu[0].instance", ("samples", "cpu", 0, "instance"), st.sampled_from(["", 5])),
    (
        "pools.web.instances[0].started_at",
        ("pools", "web", "instances", 0, "started_at"),
        BAD_TIMES.filter(lambda v: v is not None),
    ),
    ("pools.web.instances[0].state", ("pools", "web", "instances", 0, "state"), st.just("up")),
    ("pools.web.instances", ("pools", "web", "instances", 1, "id"), st.just("1")),
    (
        "pools.web.events[0].before",
        ("pools", "web", "events", 0, "before"),
        st.integers(max_value=-1) | st.just(1.5) | st.just(10**30),
    ),
    (
        "pools.web.recommendations.ws[0]",
        ("pools", "web", "recommendations", "ws", 0),
        st.sampled_from([[NOW], [NOW, -1], [math.nan, 1]]),
    ),
    ("pools.wbe", ("pools", "wbe"), st.just({"instances": []})),
    ("samples.cpux", ("samples", "cpux"), st.just([])),
    ("errors.cpux", ("errors", "cpux"), st.just("down")),
    ("pools", ("pools",), st.sampled_from([None, "web", 5, []])),
]


def _plan(run: Any, body: bytes) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "policy.toml").write_text(POLICY)
        (Path(tmp) / "obs.json").write_bytes(body)
        return run(["plan", "-o", f"{tmp}/obs.json", "-p", f"{tmp}/policy.toml", "--json"])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_broken_value_is_named_by_its_path(run: Any, data: st.DataObject) -> None:
    """One value broken (NaN, Infinity, out-of-range time, negative sample, unknown name)."""
    where, path, values = data.draw(st.sampled_from(BAD))
    doc = copy.deepcopy(SEED)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(values)
    result = _plan(run, json.dumps(doc).encode())
    result.assert_refused("obs.json", where)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=40, deadline=None)
@given(doc=JSON)
def test_any_json_never_crashes(run: Any, doc: Any) -> None:
    """Any JSON document at all: a plan (when it happens to be valid) or exit 2, named."""
    result = _plan(run, json.dumps(doc).encode())
    if result.code != 0:
        result.assert_refused("obs.json")


@settings(max_examples=20, deadline=None)
@given(body=st.binary(max_size=100) | st.integers(1, 100000).map(lambda n: b"[" * n + b"]" * n))
def test_bytes_and_deep_nesting_never_crash(run: Any, body: bytes) -> None:
    """Bytes that are not UTF-8 or JSON, or arrays nested thousands deep: exit 2, named."""
    result = _plan(run, body)
    if result.code != 0:
        result.assert_refused("obs.json")


def test_the_seed_plans(run: Any) -> None:
    """The observation the properties break is valid for the policy."""
    result = _plan(run, json.dumps(SEED).encode())
    assert result.code == 0, result.stderr


def test_a_directory_is_refused(run: Any) -> None:
    """A directory given as the observation: exit 2, "is a directory"."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "policy.toml").write_text(POLICY)
        result = run(["plan", "-o", tmp, "-p", f"{tmp}/policy.toml"])
    result.assert_refused(tmp, "is a directory")


def test_null_is_named_in_json_terms(run: Any) -> None:
    """A null where an object belongs says null and object, never None or dictionary."""
    result = _plan(run, b'{"pools": null}')
    result.assert_refused("pools: null: expected an object")
