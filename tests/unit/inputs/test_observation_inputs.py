"""Bad observation files: ``plan`` exits 2 naming the file and the JSON path, never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from senex_scale.testing_inputs import OBSERVATION_BAD, POLICY, Bad, observation_seed, to_json

SEED = observation_seed()


def _plan(run: Any, body: bytes) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "policy.toml").write_text(POLICY)
        (Path(tmp) / "obs.json").write_bytes(body)
        return run(["plan", "-o", f"{tmp}/obs.json", "-p", f"{tmp}/policy.toml", "--json"])


@pytest.mark.parametrize("bad", OBSERVATION_BAD, ids=lambda b: b.label)
def test_a_broken_value_is_named_by_its_path(run: Any, bad: Bad) -> None:
    """One value broken (NaN, Infinity, out-of-range time, negative sample, a count in quotes,
    an unknown name): exit 2 naming its path."""
    _plan(run, to_json(bad.apply(SEED))).assert_refused("obs.json", bad.where)


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
    result = _plan(run, to_json(SEED))
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
