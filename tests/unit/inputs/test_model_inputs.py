"""Bad capacity models: ``simulate --model`` exits 2 naming the file and the dotted path.

The model file is read the way the policy is (``read_input`` and ``load_toml``): a directory,
bytes that are not UTF-8, nesting too deep or a file too large are refused with the file's name,
never a traceback; its numbers are strict and finite.
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
    MODEL,
    MODEL_BAD,
    POLICY,
    Bad,
    deep,
    leaves,
    model_seed,
    quoted,
    set_path,
    to_toml,
    trace_seed,
)

SEED = model_seed()


def _simulate(run: Any, body: bytes | None) -> Any:
    """``simulate`` with the model file ``body`` (None: a directory of that name)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "policy.toml").write_text(POLICY)
        (Path(tmp) / "t.csv").write_text(trace_seed())
        model = Path(tmp) / "model.toml"
        if body is None:
            model.mkdir()
        else:
            model.write_bytes(body)
        argv = ["simulate", "-t", f"{tmp}/t.csv", "-p", f"{tmp}/policy.toml", "--model"]
        return run([*argv, str(model), "--compare", "none", "-q"])


@pytest.mark.parametrize("bad", MODEL_BAD, ids=lambda b: b.label)
def test_a_broken_value_is_named_by_its_path(run: Any, bad: Bad) -> None:
    """A quoted number, NaN, a value out of range, an unknown key: exit 2 naming its path."""
    _simulate(run, to_toml(bad.apply(SEED))).assert_refused("model.toml", bad.where)


NUMBERS = [(path, quoted(value)) for path, value in leaves(SEED) if quoted(value) is not None]


@settings(max_examples=15, deadline=None)
@given(change=st.sampled_from(NUMBERS))
def test_a_number_in_quotes_is_refused(run: Any, change: tuple[tuple[Any, ...], str]) -> None:
    """Any number of the model in quotes: refused by its path."""
    path, text = change
    doc = copy.deepcopy(SEED)
    set_path(doc, path, text)
    _simulate(run, to_toml(doc)).assert_refused("model.toml", dotted(path), f'"{text}"')


def test_the_seed_simulates(run: Any) -> None:
    """The model the tests break is valid (a byte-order mark too)."""
    for body in (MODEL.encode(), b"\xef\xbb\xbf" + MODEL.encode()):
        result = _simulate(run, body)
        assert result.code == 0, result.stderr


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (None, "is a directory"),
        (b"seed = 7\n\xff\n", "not UTF-8 text (byte 0xff at line 2, column 1)"),
        (deep("toml", 100), "nested more than 32 levels deep"),
        (b"[pools.web\n", "not valid TOML"),
        (b"seed = 7\n" + b"#" * (1 << 20), "larger than 1 MiB"),
    ],
    ids=["directory", "not-utf8", "deep", "syntax", "too-large"],
)
def test_an_unreadable_model_is_named(run: Any, body: bytes | None, problem: str) -> None:
    """The file is read like a policy: each way it cannot be read is one message naming it."""
    _simulate(run, body).assert_refused("model.toml", problem)
