"""Bad policy files: ``validate`` exits 2 naming the file and the dotted path, never a traceback.

Each known-bad change of ``senex_scale.testing_inputs`` (the catalogue the fuzz run draws from
too) breaks one value of a valid policy with driver tables in a way no field accepts; the
problem must be reported with the path a user finds in the file.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from senex_scale.policy.loading import dotted
from senex_scale.testing_inputs import (
    ACTION_ONLY_POLICY,
    POLICY,
    POLICY_BAD,
    Bad,
    deep,
    leaves,
    policy_seed,
    quoted,
    set_path,
    to_toml,
)

SEED = policy_seed()


def _validate(run: Any, body: bytes) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_bytes(body)
        return run(["validate", str(path)])


@pytest.mark.parametrize("bad", POLICY_BAD, ids=lambda b: b.label)
def test_a_broken_value_is_named_by_its_path(run: Any, bad: Bad) -> None:
    """Any one value broken (wrong type, NaN, out of range, bad text): exit 2 naming its path."""
    _validate(run, to_toml(bad.apply(SEED))).assert_refused("policy.toml", bad.where)


NUMBERS = [(path, quoted(value)) for path, value in leaves(SEED) if quoted(value) is not None]


@settings(max_examples=30, deadline=None)
@given(change=st.sampled_from(NUMBERS))
def test_a_number_in_quotes_is_refused(run: Any, change: tuple[tuple[Any, ...], str]) -> None:
    """Any number or boolean of the policy written in quotes ("2"): refused by its path."""
    path, text = change
    doc = copy.deepcopy(SEED)
    set_path(doc, path, text)
    result = _validate(run, to_toml(doc))
    result.assert_refused("policy.toml", dotted(path), f'the string "{text}"')


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_garbage_never_crashes(run: Any, body: bytes) -> None:
    """Random bytes or text: exit 2 with an Error naming the file (never a traceback).

    (Text that happens to be a valid policy, such as a lone action rule, may pass.)
    """
    result = _validate(run, body)
    if result.code != 0:
        result.assert_refused("policy.toml")


@settings(max_examples=15, deadline=None)
@given(depth=st.integers(min_value=33, max_value=20000))
def test_deep_nesting_is_refused(run: Any, depth: int) -> None:
    """Arrays nested deeper than any policy needs: refused, no RecursionError."""
    _validate(run, deep("toml", depth)).assert_refused("policy.toml", "nested")


def test_the_seed_is_valid(run: Any) -> None:
    """The policy the properties break is valid, driver tables included."""
    result = _validate(run, POLICY.encode())
    assert result.code == 0, result.stderr


def test_a_byte_order_mark_is_accepted(run: Any) -> None:
    """A UTF-8 byte-order mark (Windows editors write one) is not a TOML error."""
    result = _validate(run, b"\xef\xbb\xbf" + POLICY.encode())
    assert result.code == 0, result.stderr


def test_an_empty_file_is_refused(run: Any) -> None:
    """An empty policy is a mistake (a wrong file), not a policy that does nothing."""
    _validate(run, b"\n").assert_refused("policy.toml", "empty")


@pytest.mark.parametrize(
    "body",
    [
        '[controller]\ninterval = "15s"\n',
        '[sources.prom]\ntype = "prometheus"\nurl = "http://127.0.0.1:9090"\n',
        "pools = {}\nrules = []\n",
        '[hosts.web01]\naddress = "10.0.0.11"\n',
    ],
    ids=["controller-only", "sources-only", "empty-tables", "hosts-only"],
)
def test_a_policy_with_nothing_to_do_is_refused(run: Any, body: str) -> None:
    """No pools and no rules: the policy would never act, so it is refused, not "valid"."""
    _validate(run, body.encode()).assert_refused("policy.toml", "nothing to do", "[pools.NAME]")


def test_a_policy_of_action_rules_only_is_valid(run: Any) -> None:
    """Pool-less action rules (tell a person when the disk fills up) are a policy's work."""
    result = _validate(run, ACTION_ONLY_POLICY.encode())
    assert result.code == 0, result.stderr
    assert "0 pools, 1 rules" in result.stdout


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
    _validate(run, to_toml(doc)).assert_refused(
        "3 problems",
        "sources.prom.url: required",
        'pools.web.runtime: unknown key "grop" (did you mean "group"?)',
        "pools.web.balancer.max_fails: -1: must be at least 0",
    )


def test_a_schedule_naming_a_pool_given_as_text(run: Any) -> None:
    """A pool that is a string while a schedule names it: reported, not an AttributeError."""
    doc = copy.deepcopy(SEED)
    doc["pools"]["web"] = "web"
    _validate(run, to_toml(doc)).assert_refused('pools.web: "web": expected a table')


@settings(max_examples=40, deadline=None)
@given(
    path=st.sampled_from([p for p, _ in leaves(SEED)]),
    value=st.sampled_from([{"x": 1}, [[1], ["a"]]]),
)
def test_a_table_or_array_anywhere_is_refused(run: Any, path: tuple[Any, ...], value: Any) -> None:
    """Any value replaced by a table or a nested array: refused by its path (the cross-reference
    and driver checks read the same tables and must not trip over it)."""
    doc = copy.deepcopy(SEED)
    set_path(doc, path, value)
    _validate(run, to_toml(doc)).assert_refused("policy.toml", dotted(path[:-1]))
