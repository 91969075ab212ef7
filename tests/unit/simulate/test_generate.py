"""The seeded trace generator: determinism, defaults, and the shape of each kind."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from senex_scale.simulate.generate import (
    COLUMNS,
    KIND_DEFAULTS,
    KINDS,
    generate,
    generation_comment,
)
from senex_scale.simulate.trace import Trace, read_trace, write_trace

NY = ZoneInfo("America/New_York")
TRACES = Path(__file__).resolve().parents[3] / "traces"


def _local(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's New York date ordinal and wall-clock hour."""
    stamps = [datetime.fromtimestamp(t, NY) for t in trace.times.tolist()]
    days = np.array([s.date().toordinal() for s in stamps])
    hours = np.array([s.hour + s.minute / 60 + s.second / 3600 for s in stamps])
    return days, hours


def _window(trace: Trace, column: str, start: float, end: float) -> np.ndarray:
    """The column's values with New York wall-clock hour in [start, end)."""
    _, hours = _local(trace)
    return trace.columns[column][(hours >= start) & (hours < end)]


@pytest.fixture(scope="module")
def trading_day() -> Trace:
    """The default trading day."""
    return generate("trading-day")


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_trace_different_seed_differs(kind: str) -> None:
    """A seed fixes every array; another seed changes the values but not the instants."""
    a, b, c = generate(kind), generate(kind), generate(kind, seed=7)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.times, c.times)
    for name in COLUMNS:
        np.testing.assert_array_equal(a.columns[name], b.columns[name])
        assert not np.array_equal(a.columns[name], c.columns[name])


@pytest.mark.parametrize(
    ("kind", "first", "rows", "step"),
    [
        ("trading-day", "2026-11-24T00:00:00-05:00", 5760, 15.0),
        ("news-day", "2026-11-24T00:00:00-05:00", 5760, 15.0),
        ("holiday", "2026-11-26T00:00:00-05:00", 5760, 15.0),
        ("slow-week", "2026-11-16T00:00:00-05:00", 10080, 60.0),
    ],
)
def test_kind_defaults(kind: str, first: str, rows: int, step: float) -> None:
    """Each kind's default start, length and step; every trace has all five columns."""
    trace = generate(kind)
    assert trace.start == datetime.fromisoformat(first).timestamp()
    assert (len(trace), trace.step) == (rows, step)
    assert trace.name == kind
    assert trace.timezone == "America/New_York"
    assert tuple(trace.columns) == COLUMNS
    assert trace.queues == ("trading", "accounts", "general")
    assert (
        trace.start
        == datetime.combine(KIND_DEFAULTS[kind].start, datetime.min.time(), NY).timestamp()
    )


@pytest.mark.parametrize("kind", KINDS)
def test_days_and_step_work_for_every_kind(kind: str) -> None:
    """days and step override the defaults for every kind."""
    trace = generate(kind, start=date(2026, 11, 30), days=2, step=300)
    assert len(trace) == 2 * 288
    assert trace.step == 300.0


@pytest.mark.parametrize(
    ("day", "rows"), [(date(2026, 3, 8), 23 * 240), (date(2026, 11, 1), 25 * 240)]
)
def test_dst_days_have_23_or_25_hours(day: date, rows: int) -> None:
    """A day runs midnight to midnight in New York, so DST days are 23 and 25 hours long."""
    assert len(generate("holiday", start=day)) == rows


def test_scale_multiplies_every_column() -> None:
    """scale=2 doubles the demand (up to the rounding of each column)."""
    one, two = generate("holiday"), generate("holiday", scale=2.0)
    for name in COLUMNS:
        np.testing.assert_allclose(two.columns[name], 2 * one.columns[name], rtol=0.01, atol=1)


def test_ws_connections_are_whole() -> None:
    """Connections are counted in whole numbers."""
    values = generate("trading-day").columns["ws_connections"]
    np.testing.assert_array_equal(values, np.round(values))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "trading_day"}, 'did you mean "trading-day"'),
        ({"kind": "trading-day", "days": 0}, "days must be at least 1"),
        ({"kind": "trading-day", "step": 0}, "step must be"),
        ({"kind": "trading-day", "scale": -1}, "scale must be"),
        ({"kind": "trading-day", "seed": -1}, "seed must be"),
        ({"kind": "trading-day", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], match: str) -> None:
    """Unknown kinds and out-of-range arguments are ValueErrors with a clear message."""
    with pytest.raises(ValueError, match=match):
        generate(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the trading day


def test_open_spike_peaks_right_after_the_open(trading_day: Trace) -> None:
    """Peak http_rps comes within 09:30–09:45 New York time, at roughly 3× mid-morning."""
    _, hours = _local(trading_day)
    http = trading_day.columns["http_rps"]
    assert 9.5 <= hours[np.argmax(http)] < 9.75
    mid_morning = _window(trading_day, "http_rps", 10.5, 11.5).mean()
    assert 2.5 < http.max() / mid_morning < 4.5


@pytest.mark.parametrize(
    ("column", "low", "high", "factor"),
    [
        ("http_rps", (12.25, 13.25), (10.25, 11.75), 1.3),  # lunch lull below the morning
        ("ws_connections", (12.25, 13.25), (10.25, 11.75), 1.15),
        ("tasks_trading", (12.25, 13.25), (10.25, 11.75), 1.3),
        ("http_rps", (0.0, 4.0), (10.0, 15.5), 3.0),  # night below market hours
        ("ws_connections", (0.0, 4.0), (10.0, 15.5), 3.0),
        ("tasks_trading", (0.0, 4.0), (10.0, 15.5), 3.0),
        ("http_rps", (15.0, 15.5), (15 + 50 / 60, 16.0), 1.3),  # the close spike is visible
        ("tasks_trading", (15.0, 15.5), (15 + 50 / 60, 16.0), 1.3),
        ("http_rps", (21.0, 24.0), (16.0, 20.0), 1.3),  # after hours above the night
        ("tasks_general", (3.0, 4.0), (2.0, 2.5), 2.0),  # the 02:00 batch
        ("tasks_accounts", (6.0, 6.9), (7.0, 7.3), 2.0),  # the 07:00 batch
    ],
)
def test_trading_day_shape(
    trading_day: Trace,
    column: str,
    low: tuple[float, float],
    high: tuple[float, float],
    factor: float,
) -> None:
    """Window means: lunch < morning, night < market, 15:00–15:30 < 15:50–16:00, batches."""
    quiet = _window(trading_day, column, *low).mean()
    busy = _window(trading_day, column, *high).mean()
    assert quiet * factor < busy


@pytest.mark.parametrize(
    ("column", "level", "tolerance"),
    [
        ("http_rps", (0.0, 3.0, 15), 0.2),
        ("http_rps", (10.5, 11.5, 85), 0.2),
        ("http_rps", (12.25, 13.25, 55), 0.2),
        ("ws_connections", (0.0, 3.0, 300), 0.2),
        ("ws_connections", (10.5, 11.5, 3200), 0.2),
        ("tasks_trading", (0.0, 3.0, 20), 0.2),
        ("tasks_trading", (10.5, 11.5, 300), 0.2),
    ],
)
def test_trading_day_magnitudes(
    trading_day: Trace, column: str, level: tuple[float, float, float], tolerance: float
) -> None:
    """The documented levels at scale 1 hold to within the noise."""
    start, end, expected = level
    assert _window(trading_day, column, start, end).mean() == pytest.approx(expected, rel=tolerance)


def test_dst_trading_day_still_peaks_at_the_local_open() -> None:
    """On 2026-03-09, after the March change, the open spike is still at 09:30 local."""
    trace = generate("trading-day", start=date(2026, 3, 9))
    _, hours = _local(trace)
    assert 9.5 <= hours[np.argmax(trace.columns["http_rps"])] < 9.75


def test_early_close_moves_the_close_spike() -> None:
    """The day after Thanksgiving closes at 13:00: the close spike is 12:50–13:00."""
    trace = generate("trading-day", start=date(2026, 11, 27))
    early = _window(trace, "http_rps", 12 + 50 / 60, 13.0).mean()
    assert early > 1.2 * _window(trace, "http_rps", 12.0, 12.5).mean()
    assert _window(trace, "http_rps", 15.0, 16.0).mean() < 40


# --------------------------------------------------------------------------- the other kinds


def _open_ratio(trace: Trace) -> float:
    """Mean http_rps 09:30–09:45 over the mean 09:00–09:25."""
    return float(
        _window(trace, "http_rps", 9.5, 9.75).mean()
        / _window(trace, "http_rps", 9.0, 9 + 25 / 60).mean()
    )


def test_holiday_has_no_open_spike(trading_day: Trace) -> None:
    """A holiday has no spike at 09:30 and stays well below a trading day."""
    holiday = generate("holiday")
    assert _open_ratio(trading_day) > 2.0
    assert _open_ratio(holiday) < 1.3
    assert holiday.columns["http_rps"].max() < 60
    assert holiday.columns["http_rps"].mean() < 0.6 * trading_day.columns["http_rps"].mean()


def test_news_day_burst(trading_day: Trace) -> None:
    """The news day is ≥4× the trading day at the same instants: sudden, held, 10:30–14:30."""
    news = generate("news-day")
    _, hours = _local(news)
    for name in COLUMNS:
        ratio = news.columns[name] / trading_day.columns[name]
        rising = int(np.argmax(ratio > 1.5))
        assert 10.5 <= hours[rising] <= 14.5
        held = ratio[rising : rising + 20 * 4]  # 20 minutes at 15-second steps
        assert held.min() >= 4.0  # full height within one step, held at least 20 minutes
        np.testing.assert_allclose(ratio[:rising], 1.0, atol=0.02)
        assert news.columns[name].max() > 2 * trading_day.columns[name][rising]


def test_news_day_burst_time_depends_on_the_seed() -> None:
    """Different seeds put the burst at different times."""
    starts = set()
    for seed in range(4):
        news, base = generate("news-day", seed=seed), generate("trading-day", seed=seed)
        starts.add(int(np.argmax(news.columns["http_rps"] / base.columns["http_rps"] > 1.5)))
    assert len(starts) > 1


def test_slow_week_weekend_is_quieter_than_weekdays() -> None:
    """slow-week: Monday–Friday above Saturday and Sunday; weekdays below a normal day."""
    week = generate("slow-week")
    days, _ = _local(week)
    means = [week.columns["http_rps"][days == d].mean() for d in np.unique(days)]
    assert len(means) == 7
    assert max(means[5:]) * 1.2 < min(means[:5])
    normal = generate("trading-day", start=date(2026, 11, 16), step=60)
    assert means[0] < 0.85 * normal.columns["http_rps"].mean()


def test_multi_day_trading_uses_the_calendar() -> None:
    """trading-day over many days: sessions get the open spike, Thanksgiving and weekends not."""
    month = generate("trading-day", start=date(2026, 11, 23), days=7, step=60)
    days, hours = _local(month)
    for offset, is_session in enumerate([True, True, True, False, True, False, False]):
        day = date(2026, 11, 23).toordinal() + offset
        http = month.columns["http_rps"][days == day]
        day_hours = hours[days == day]
        ratio = (
            http[(day_hours >= 9.5) & (day_hours < 9.75)].mean()
            / http[(day_hours >= 9.0) & (day_hours < 9.4)].mean()
        )
        assert (ratio > 2.0) == is_session, offset


def test_a_day_looks_the_same_in_any_range() -> None:
    """Noise is seeded per date, so a day is identical alone and inside a longer trace."""
    alone = generate("trading-day", start=date(2026, 11, 24))
    inside = generate("trading-day", start=date(2026, 11, 23), days=3)
    lo = int(np.searchsorted(inside.times, alone.times[0]))
    for name in COLUMNS:
        np.testing.assert_array_equal(
            inside.columns[name][lo : lo + len(alone)], alone.columns[name]
        )


def test_other_timezone_keeps_the_new_york_shape() -> None:
    """timezone moves the day boundaries and the written offsets, not the market open."""
    trace = generate("trading-day", timezone="UTC")
    assert trace.timezone == "UTC"
    assert datetime.fromtimestamp(trace.start, ZoneInfo("UTC")).hour == 0
    _, hours = _local(trace)
    assert 9.5 <= hours[np.argmax(trace.columns["http_rps"])] < 9.75


# --------------------------------------------------------------------------- files


def test_generated_trace_round_trips(tmp_path: Path) -> None:
    """A generated trace written with its comment reads back identically."""
    trace = generate("news-day")
    path = tmp_path / "news.csv"
    write_trace(trace, path, comment=generation_comment("news-day", out=str(path)))
    back = read_trace(path)
    np.testing.assert_array_equal(back.times, trace.times)
    for name in COLUMNS:
        np.testing.assert_array_equal(back.columns[name], trace.columns[name])
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# Generated by: senex-scale trace generate news-day --out ")
    assert "--seed 42" in first


@pytest.mark.parametrize("kind", KINDS)
def test_bundled_traces_match_the_generator(kind: str) -> None:
    """traces/<kind>.csv is exactly what the generator makes with the defaults."""
    path = TRACES / f"{kind}.csv"
    bundled = read_trace(path)
    fresh = generate(kind)
    assert bundled.timezone == fresh.timezone
    np.testing.assert_array_equal(bundled.times, fresh.times)
    for name in COLUMNS:
        np.testing.assert_array_equal(bundled.columns[name], fresh.columns[name])
    head = path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert f"generate {kind} --out traces/{kind}.csv" in head
