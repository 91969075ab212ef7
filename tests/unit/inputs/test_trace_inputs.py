"""Bad trace files: ``simulate`` exits 2 naming the file, the line and the column."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from senex_scale.testing_inputs import (
    NOW,
    POLICY,
    TRACE_BAD_CELLS,
    TRACE_BAD_TIMES,
    TRACE_HEADER,
    trace_seed,
)

LINES = trace_seed(12).splitlines()
HEADER = LINES.index(TRACE_HEADER)
COLUMNS = TRACE_HEADER.split(",")


def _simulate(run: Any, text: str | bytes) -> Any:
    body = text.encode() if isinstance(text, str) else text
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "policy.toml").write_text(POLICY)
        (Path(tmp) / "t.csv").write_bytes(body)
        return run(
            [
                "simulate",
                "-t",
                f"{tmp}/t.csv",
                "-p",
                f"{tmp}/policy.toml",
                "--compare",
                "none",
                "-q",
            ]
        )


@settings(max_examples=50, deadline=None)
@given(
    line=st.integers(HEADER + 1, len(LINES) - 1),
    column=st.integers(0, len(COLUMNS) - 1),
    data=st.data(),
)
def test_a_bad_cell_is_named_by_line_and_column(
    run: Any, line: int, column: int, data: st.DataObject
) -> None:
    """NaN, negative, empty, 1_0, non-ASCII digits, times out of range: file:LINE: column."""
    cells = LINES[line].split(",")
    bad = TRACE_BAD_TIMES + TRACE_BAD_CELLS if column == 0 else TRACE_BAD_CELLS
    cells[column] = data.draw(st.sampled_from(bad))
    lines = [*LINES]
    lines[line] = ",".join(cells)
    result = _simulate(run, "\n".join(lines) + "\n")
    result.assert_refused(f"t.csv:{line + 1}: ", f'column "{COLUMNS[column]}"')


@settings(max_examples=30, deadline=None)
@given(text=st.text(alphabet="0123456789,.-:TZe\n#x _", max_size=200))
def test_garbage_never_crashes(run: Any, text: str) -> None:
    """CSV-looking garbage: simulated (when it happens to be a trace) or exit 2, named."""
    result = _simulate(run, "timestamp,http_rps\n" + text)
    if result.code != 0:
        result.assert_refused("t.csv")


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 3), gap=st.integers(0, 14))
def test_a_trace_shorter_than_an_interval_is_refused(run: Any, rows: int, gap: int) -> None:
    """Rows spanning less than one controller interval (15 s): refused, not a scoring crash."""
    lines = [f"{NOW + i * gap / max(rows - 1, 1):.3f},10,100" for i in range(rows)]
    if len(set(lines)) != len(lines):
        lines = lines[:1]
    result = _simulate(run, "\n".join(["timestamp,http_rps,ws_connections", *lines]) + "\n")
    result.assert_refused("t.csv", "less than one controller interval")


def test_a_trace_spanning_decades_is_refused(run: Any) -> None:
    """A mistyped last timestamp (1e11: year 5138) is refused before a grid of billions of
    ticks is allocated."""
    lines = [*LINES[:-1], "100000000000,1,1,1"]
    result = _simulate(run, "\n".join(lines) + "\n")
    result.assert_refused("t.csv", "more than 5,000,000 controller intervals")


def test_an_unknown_column_is_a_one_line_warning(run: Any) -> None:
    """An ignored column is a ``Warning:`` line, without a Python source line."""
    lines = [*LINES[:HEADER], TRACE_HEADER + ",bogus", *(f"{r},1" for r in LINES[HEADER + 1 :])]
    result = _simulate(run, "\n".join(lines) + "\n")
    assert result.code == 0, result.stderr
    assert result.stderr == f"Warning: {result.stderr.split(': ', 1)[1]}"
    assert 'ignoring unknown column "bogus"' in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_byte_order_mark_and_a_directory(run: Any) -> None:
    """A BOM is fine; a directory is refused with "is a directory"."""
    result = _simulate(run, b"\xef\xbb\xbf" + trace_seed(12).encode())
    assert result.code == 0, result.stderr
    with tempfile.TemporaryDirectory() as tmp:
        refused = run(["simulate", "-t", tmp, "--compare", "none", "-q"])
    refused.assert_refused(tmp, "is a directory")
