"""Bad inventories: ``render`` exits 2 naming the file and the dotted path, and writes nothing.

Text that ends up in a config file has a grammar and is refused when it does not fit (a newline
in an image, ``;`` in a server name), so a bad inventory never reaches the rendered files'
own checks (which would be exit 1, naming a rendered file instead of the field).
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
    EXAMPLES,
    INVENTORY_BAD,
    SECRETS,
    Bad,
    inventory_seed,
    leaves,
    quoted,
    set_path,
    to_toml,
)

EXAMPLE = EXAMPLES / "inventory.toml"
SEED = inventory_seed()


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the example inventory reads its secrets from."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def _render(run: Any, doc: dict[str, Any], *extra: str) -> Any:
    """``render`` on ``doc``; the output directory must not exist afterwards (nothing written)."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.toml"
        inventory.write_bytes(to_toml(doc))
        out = Path(tmp) / "out"
        result = run(["render", "-i", str(inventory), "-o", str(out), *extra])
        if result.code != 0:
            assert not out.exists()
    return result


@pytest.mark.usefixtures("secrets")
@pytest.mark.parametrize("bad", INVENTORY_BAD, ids=lambda b: b.label)
def test_a_broken_value_is_refused_and_nothing_is_written(run: Any, bad: Bad) -> None:
    """One value broken: exit 2 naming its path; the output directory is left as it was."""
    _render(run, bad.apply(SEED)).assert_refused("inventory.toml", bad.where)


NUMBERS = [(path, quoted(value)) for path, value in leaves(SEED) if quoted(value) is not None]


@settings(max_examples=30, deadline=None)
@given(change=st.sampled_from(NUMBERS))
def test_a_number_in_quotes_is_refused(run: Any, change: tuple[tuple[Any, ...], str]) -> None:
    """Any number or boolean of the inventory in quotes (``quorum = "2"``): refused by its path."""
    path, text = change
    doc = copy.deepcopy(SEED)
    set_path(doc, path, text)
    _render(run, doc, "--check").assert_refused(
        "inventory.toml", dotted(path), f'the string "{text}"'
    )


@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=200) | st.integers(33, 50000).map(lambda n: b"a = " + b"[" * n))
def test_garbage_and_deep_nesting_never_crash(run: Any, body: bytes) -> None:
    """Random bytes, arrays nested thousands deep: exit 2 naming the file, nothing written."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.toml"
        inventory.write_bytes(body + b"]" * body.count(b"["))
        out = Path(tmp) / "out"
        result = run(["render", "-i", str(inventory), "-o", str(out), "--check"])
        assert not out.exists()
    result.assert_refused("inventory.toml")


def test_a_missing_secret_names_the_inventory(run: Any) -> None:
    """A secret that is not set is a problem of the inventory file, by its path."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        result = run(["render", "-i", str(EXAMPLE), "-o", str(out), "--check"])
    result.assert_refused("inventory.toml", "postgres.users.senex_user.password: environment")


@settings(max_examples=40, deadline=None)
@given(
    path=st.sampled_from([p for p, _ in leaves(SEED)]),
    value=st.sampled_from([{"x": 1}, [[1], ["a"]]]),
)
def test_a_table_or_array_anywhere_is_refused(run: Any, path: tuple[Any, ...], value: Any) -> None:
    """Any value replaced by a table or a nested array: refused by its path, even where the
    cross-references read it (a pool's kind, a host's roles)."""
    doc = copy.deepcopy(SEED)
    set_path(doc, path, value)
    _render(run, doc, "--check").assert_refused("inventory.toml", dotted(path[:-1]))
