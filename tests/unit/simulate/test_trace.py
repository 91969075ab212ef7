"""The trace CSV format: reading, writing, validation and the Trace API."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from senex_scale.errors import InputError
from senex_scale.simulate.trace import Trace, TraceWarning, read_trace, write_trace

T0 = 1795530600.0  # 2026-11-24T09:30:00-05:00


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _trace(timezone: str | None = None) -> Trace:
    times = T0 + np.array([0.0, 15.0, 30.0, 60.0])
    columns = {
        "http_rps": np.array([10.0, 20.5, 30.25, 40.125]),
        "ws_connections": np.array([100.0, 110.0, 120.0, 130.0]),
        "tasks_trading": np.array([5.0, 6.0, 7.0, 8.0]),
        "tasks_accounts": np.array([1.0, 0.0, 2.0, 3.0]),
    }
    return Trace("t", times, columns, timezone)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("timezone", [None, "America/New_York", "Europe/London"])
def test_round_trip_is_exact_with_decimals_none(tmp_path: Path, timezone: str | None) -> None:
    """write_trace(decimals=None) then read_trace gives back the same instants and values."""
    original = _trace(timezone=timezone)
    path = tmp_path / "rt.csv"
    write_trace(original, path, comment="made by a test\nsecond line", decimals=None)
    back = read_trace(path)
    assert back.name == "rt"
    assert back.timezone == timezone
    np.testing.assert_array_equal(back.times, original.times)
    assert list(back.columns) == list(original.columns)
    for name, values in original.columns.items():
        np.testing.assert_array_equal(back.columns[name], values)


def test_written_file_layout(tmp_path: Path) -> None:
    """Comment lines, the timezone directive, the header, local ISO times, rounded values."""
    path = tmp_path / "t.csv"
    write_trace(_trace(timezone="America/New_York"), path, comment="hello")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == [
        "# hello",
        "# timezone: America/New_York",
        "timestamp,http_rps,ws_connections,tasks_trading,tasks_accounts",
    ]
    assert lines[3] == "2026-11-24T09:30:00-05:00,10,100,5,1"
    assert lines[6] == "2026-11-24T09:31:00-05:00,40.12,130,8,3"


def test_default_rounding_keeps_two_decimals(tmp_path: Path) -> None:
    """The default write rounds to two decimals; reading gives the rounded values."""
    path = tmp_path / "t.csv"
    write_trace(_trace(), path)
    back = read_trace(path)
    np.testing.assert_array_equal(back.columns["http_rps"], [10.0, 20.5, 30.25, 40.12])
    assert back.timezone is None
    assert "+00:00" in path.read_text(encoding="utf-8")


def test_write_to_open_file() -> None:
    """write_trace accepts an open text file as well as a path."""
    buffer = io.StringIO()
    write_trace(_trace(), buffer)
    assert buffer.getvalue().startswith("timestamp,http_rps,")
    assert buffer.getvalue().count("\n") == 5


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (["1795530600", "1795530615"], [T0, T0 + 15]),
        (["1795530600.5", "1795530615.25"], [T0 + 0.5, T0 + 15.25]),
        (["2026-11-24T09:30:00-05:00", "2026-11-24T09:30:15-05:00"], [T0, T0 + 15]),
        (["2026-11-24T14:30:00Z", "2026-11-24T14:30:15+00:00"], [T0, T0 + 15]),
        (["2026-11-24T09:30:00.500-05:00", "2026-11-24 09:30:15-05:00"], [T0 + 0.5, T0 + 15]),
        (["1795530600", "2026-11-24T09:30:15-05:00"], [T0, T0 + 15]),
    ],
    ids=["epoch-int", "epoch-float", "iso-offset", "iso-z", "iso-fraction-space", "mixed"],
)
def test_timestamp_forms(tmp_path: Path, stamps: list[str], expected: list[float]) -> None:
    """Epoch seconds (int or float) and ISO 8601 with an offset all read as epoch seconds."""
    rows = "".join(f"{s},{i}\n" for i, s in enumerate(stamps))
    trace = read_trace(_write(tmp_path, "timestamp,http_rps\n" + rows))
    np.testing.assert_allclose(trace.times, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- columns


def test_unknown_column_warns_and_is_ignored(tmp_path: Path) -> None:
    """An unknown column gives a TraceWarning naming it and the file, and is dropped."""
    path = _write(tmp_path, "timestamp,http_rps,cpu_load\n0,1,2\n15,1,2\n", name="odd.csv")
    with pytest.warns(TraceWarning, match=r"odd\.csv.*cpu_load"):
        trace = read_trace(path)
    assert list(trace.columns) == ["http_rps"]


def test_unknown_column_suggests_a_close_name(tmp_path: Path) -> None:
    """A near miss of a known column name gets a "did you mean"."""
    path = _write(tmp_path, "timestamp,http_rps,ws_conections\n0,1,2\n")
    with pytest.warns(TraceWarning, match='did you mean "ws_connections"'):
        read_trace(path)


def test_queues_and_columns_in_file_order(tmp_path: Path) -> None:
    """queues lists the tasks_<queue> columns in file order; the timestamp may be anywhere."""
    text = "tasks_b,timestamp,tasks_a.x,ws_connections\n1,0,2,3\n"
    trace = read_trace(_write(tmp_path, text))
    assert trace.queues == ("b", "a.x")
    assert trace.at(0) == {"tasks_b": 1.0, "tasks_a.x": 2.0, "ws_connections": 3.0}


def test_comments_blank_lines_and_quotes(tmp_path: Path) -> None:
    """Comments and blank lines anywhere are skipped; quoted fields are read as CSV."""
    text = '# top\n\n"timestamp","http_rps"\n# between\n0,"1.5"\n\n   \n15,2\n'
    trace = read_trace(_write(tmp_path, text))
    np.testing.assert_array_equal(trace.times, [0, 15])
    np.testing.assert_array_equal(trace.columns["http_rps"], [1.5, 2])


# --------------------------------------------------------------------------- malformed rows


@pytest.mark.parametrize(
    ("body", "line", "match"),
    [
        ("0,1,2\n15,1\n", 3, "expected 3 fields, found 2"),
        ("0,1,2\n15,1,2,3\n", 3, "expected 3 fields, found 4"),
        ('0,1,2\n15,"1,5",2,9\n', 3, "expected 3 fields, found 4"),
        ("0,1,2\nyesterday,1,2\n", 3, 'column "timestamp": "yesterday" is neither'),
        ("2026-11-24T09:30:00,1,2\n", 2, 'column "timestamp".*has no UTC offset'),
        ("2026-11-24T09:30:00Z,1,2\n2026-11-24T09:31:00,1,2\n", 3, "has no UTC offset"),
        ("0,1,2\nnan,1,2\n", 3, 'column "timestamp": "nan" is not a finite'),
        ("0,1,2\n15,abc,2\n", 3, 'column "http_rps": "abc" is not a number'),
        ("0,1,2\n15,1,\n", 3, 'column "tasks_q": is empty'),
        ("0,1,2\n15,1,-3\n", 3, 'column "tasks_q": "-3" is not a finite, non-negative'),
        ("0,1,2\n15,inf,2\n", 3, 'column "http_rps": "inf" is not a finite'),
        ("0,1,2\n0,1,2\n", 3, "not after the previous row.*strictly increasing"),
        ("0,1,2\n15,1,2\n10,1,2\n", 4, 'column "timestamp": "10" is not after'),
        ("# c\n0,1,2\n\n# c\n15,x,2\n", 6, 'column "http_rps": "x"'),
    ],
    ids=[
        "too-few-fields",
        "too-many-fields",
        "quoted-too-many",
        "bad-timestamp",
        "naive-iso",
        "naive-after-aware",
        "nan-timestamp",
        "non-numeric",
        "empty-value",
        "negative",
        "infinite",
        "repeated-timestamp",
        "decreasing-timestamp",
        "comments-count-as-lines",
    ],
)
def test_malformed_row_names_file_and_line(
    tmp_path: Path, body: str, line: int, match: str
) -> None:
    """Each kind of malformed row raises InputError with the file, the line and the column."""
    path = _write(tmp_path, "timestamp,http_rps,tasks_q\n" + body, name="bad.csv")
    with pytest.raises(InputError, match=rf"bad\.csv:{line}: .*{match}"):
        read_trace(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no header row"),
        ("# only a comment\n", "no header row"),
        ("timestamp,http_rps\n", "no data rows"),
        ("http_rps,ws_connections\n1,2\n", 'no "timestamp" column'),
        ("timestamp\n0\n", "no demand column"),
        ("timestamp,http_rps,http_rps\n0,1,1\n", 'column "http_rps" appears twice'),
        ("timestamp,http_rps,\n0,1,\n", "column 3 of the header has no name"),
        ("# timezone: Mars/Olympus\ntimestamp,http_rps\n0,1\n", ":1: unknown time zone"),
    ],
    ids=[
        "empty",
        "comments-only",
        "header-only",
        "no-timestamp",
        "no-demand",
        "duplicate",
        "unnamed",
        "bad-timezone",
    ],
)
def test_malformed_file(tmp_path: Path, text: str, match: str) -> None:
    """A file without a usable header or data is an InputError."""
    with pytest.raises(InputError, match=match):
        read_trace(_write(tmp_path, text))


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    """A missing file is an InputError naming it, not a traceback."""
    with pytest.raises(InputError, match=r"nope\.csv: file not found"):
        read_trace(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- the Trace API


def test_at_holds_the_last_sample() -> None:
    """at() is step-hold: the last row at or before t, held after the end."""
    trace = _trace()
    assert trace.at(T0)["http_rps"] == 10.0
    assert trace.at(T0 + 14.9)["http_rps"] == 10.0
    assert trace.at(T0 + 15)["http_rps"] == 20.5
    assert trace.at(T0 + 59)["http_rps"] == 30.25
    assert trace.at(T0 + 10_000)["http_rps"] == 40.125
    with pytest.raises(ValueError, match="before the trace starts"):
        trace.at(T0 - 1)


def test_step_len_start_end() -> None:
    """step is the median spacing; len, start and end describe the samples."""
    trace = _trace()
    assert trace.step == 15.0
    assert len(trace) == 4
    assert (trace.start, trace.end) == (T0, T0 + 60)


@pytest.mark.parametrize(
    ("step", "times", "http"),
    [
        (15.0, [0, 15, 30, 45, 60], [10.0, 20.5, 30.25, 30.25, 40.125]),
        (10.0, [0, 10, 20, 30, 40, 50, 60], [10.0, 10.0, 20.5, 30.25, 30.25, 30.25, 40.125]),
        (40.0, [0, 40], [10.0, 30.25]),
    ],
)
def test_resample_step_holds_onto_a_grid(
    step: float, times: list[float], http: list[float]
) -> None:
    """resample puts the trace on a regular grid from the start, holding values."""
    resampled = _trace(timezone="UTC").resample(step)
    np.testing.assert_array_equal(resampled.times, T0 + np.array(times))
    np.testing.assert_array_equal(resampled.columns["http_rps"], http)
    assert resampled.timezone == "UTC"
    assert resampled.step == step


@pytest.mark.parametrize(
    ("times", "columns", "match"),
    [
        ([], {"http_rps": []}, "non-empty"),
        ([0, 0], {"http_rps": [1, 2]}, "strictly increasing"),
        ([0, 1], {}, "at least one demand column"),
        ([0, 1], {"cpu": [1, 2]}, "not a demand column"),
        ([0, 1], {"http_rps": [1]}, "1 values for 2 times"),
        ([0, 1], {"http_rps": [1, -1]}, "negative"),
    ],
)
def test_trace_rejects_invalid_arrays(
    times: list[float], columns: dict[str, list[float]], match: str
) -> None:
    """Constructing a Trace checks its invariants."""
    arrays = {name: np.array(values, dtype=float) for name, values in columns.items()}
    with pytest.raises(ValueError, match=match):
        Trace("t", np.array(times, dtype=float), arrays)


def test_trace_arrays_are_read_only_copies() -> None:
    """A Trace copies its arrays and makes them read-only."""
    source = np.array([1.0, 2.0])
    trace = Trace("t", np.array([0.0, 1.0]), {"http_rps": source})
    source[0] = 99.0
    assert trace.columns["http_rps"][0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        trace.columns["http_rps"][0] = 5.0
