"""The session forecaster (``core.forecast``): learning, alignment, recency, trend, error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from senex_scale.core.forecast import Forecaster, SessionClock

DAY = 86400.0
OPEN = 14 * 3600.0 + 1800.0  # 14:30 UTC
NORMAL = 390 * 60.0
HALF = 210 * 60.0


def clock(lengths: list[float]) -> SessionClock:
    """Sessions on consecutive days from 1970-01-02, each opening at 14:30 UTC."""
    opens = [DAY * (i + 1) + OPEN for i in range(len(lengths))]
    return SessionClock.from_lists(
        "TEST", opens, [o + n for o, n in zip(opens, lengths, strict=True)]
    )


def shape(minute: float, length: float) -> float:
    """Demand: 2 instances, 6 in the first 5 minutes, 5 in the last 10 before the close."""
    if 0 <= minute < 5:
        return 6.0
    if length / 60 - 10 <= minute < length / 60:
        return 5.0
    return 2.0


def feed(f: Forecaster, sessions: range, level: float | list[float] = 1.0) -> None:
    """Every 15 s of each session's window, demand = shape x the session's level."""
    for i in sessions:
        s = f.clock.session(i)
        k = level if isinstance(level, float) else level[i]
        t = s.open - 90 * 60
        while t < s.close + 60 * 60:
            f.observe(t, shape((t - s.open) / 60, s.close - s.open) * k)
            t += 15.0


def test_no_history_no_forecast() -> None:
    """Before any session is learned there is no forecast."""
    f = Forecaster(clock([NORMAL] * 3))
    assert f.forecast(f.clock.opens[0] + 60) is None
    assert f.learned(f.clock.opens[0]) == 0


def test_learns_the_session_shape() -> None:
    """Three identical sessions: the fourth is forecast minute by minute."""
    f = Forecaster(clock([NORMAL] * 4))
    feed(f, range(3))
    s = f.clock.session(3)
    assert f.forecast(s.open + 60) == pytest.approx(6.0)
    assert f.forecast(s.open + 3600) == pytest.approx(2.0)
    assert f.forecast(s.close - 300) == pytest.approx(5.0)
    assert f.learned(s.open) == 3


def test_outside_the_window_no_forecast() -> None:
    """Overnight (after close + 60m, before open - 90m) nothing is forecast."""
    f = Forecaster(clock([NORMAL] * 4))
    feed(f, range(3))
    s = f.clock.session(3)
    assert f.forecast(s.close + 2 * 3600) is None
    assert f.forecast(s.open - 3 * 3600) is None


def test_half_day_lines_up_at_both_ends() -> None:
    """A half day gets the open spike at its open and the close spike before its early close."""
    f = Forecaster(clock([NORMAL, NORMAL, NORMAL, HALF]))
    feed(f, range(3))
    half = f.clock.session(3)
    assert f.forecast(half.open + 60) == pytest.approx(6.0)
    assert f.forecast(half.close - 300) == pytest.approx(5.0)
    assert f.forecast(half.close - 1800) == pytest.approx(2.0)


def test_peak_finds_the_open_ahead() -> None:
    """Two minutes before the open, the peak over the next 3 minutes is the open spike."""
    f = Forecaster(clock([NORMAL] * 4))
    feed(f, range(3))
    s = f.clock.session(3)
    peak = f.peak(s.open - 120, s.open + 60)
    assert peak is not None
    assert peak.value == pytest.approx(6.0)
    assert peak.at == s.open


def test_recent_sessions_weigh_more() -> None:
    """Five sessions at 1x then one at 2x: the forecast leans to the recent one."""
    levels = [1.0] * 5 + [2.0, 1.0]
    f = Forecaster(clock([NORMAL] * 7), half_life=1.0)
    feed(f, range(6), levels)
    value = f.forecast(f.clock.session(6).open + 3600)
    assert value is not None
    plain_mean = 2.0 * (5 * 1.0 + 2.0) / 6
    assert value > plain_mean


def test_trend_extrapolates_growth() -> None:
    """Levels 1, 1.1, 1.2, 1.3, 1.4: the next session is forecast above the last one."""
    levels = [1.0, 1.1, 1.2, 1.3, 1.4, 1.0]
    f = Forecaster(clock([NORMAL] * 6), half_life=100.0)
    feed(f, range(5), levels)
    value = f.forecast(f.clock.session(5).open + 3600)
    assert value is not None
    assert value > 2.0 * 1.4


def test_a_session_never_sees_itself() -> None:
    """Feeding session k does not change the day-ahead forecast of session k (made before it)."""
    f = Forecaster(clock([NORMAL] * 5))
    feed(f, range(3))
    profile = f.profile(3)
    assert profile is not None
    before = profile.at_minute(60)
    feed(f, range(3, 4), [0.0, 0.0, 0.0, 3.0])
    after = f.profile(3)
    assert after is not None
    assert after.at_minute(60) == before
    assert f.forecast(f.clock.session(4).open + 3600) != before


def test_the_level_follows_a_busy_session() -> None:
    """A session running 1.2x its forecast for half an hour is forecast 1.2x for the rest;
    3x is clipped to 1.3x; ten minutes are needed before the level moves."""
    f = Forecaster(clock([NORMAL] * 5))
    feed(f, range(3))
    s = f.clock.session(3)
    t = s.open - 45 * 60
    while t < s.open - 15 * 60:
        f.observe(t, 2.0 * 1.2)
        t += 15.0
    assert f.forecast(s.open + 60) == pytest.approx(6.0 * 1.2)
    g = Forecaster(clock([NORMAL] * 5))
    feed(g, range(3))
    t = s.open - 45 * 60
    while t < s.open - 15 * 60:
        g.observe(t, 6.0)
        t += 15.0
    assert g.forecast(s.open + 60) == pytest.approx(6.0 * 1.3)
    h = Forecaster(clock([NORMAL] * 5))
    feed(h, range(3))
    t = s.open - 45 * 60
    while t < s.open - 37 * 60:
        h.observe(t, 6.0)
        t += 15.0
    assert h.forecast(s.open + 60) == pytest.approx(6.0)


def test_error_zero_on_a_repeated_day_and_high_on_a_changed_one() -> None:
    """MAPE is 0 when sessions repeat, 1.0 when demand doubles."""
    f = Forecaster(clock([NORMAL] * 5))
    feed(f, range(4))
    assert f.mape() == pytest.approx(0.0)
    feed(f, range(4, 5), [1.0, 1.0, 1.0, 1.0, 2.0])
    f.observe(f.clock.session(4).close + 3 * 3600, 0.0)  # closes the last minute
    mape = f.mape()
    assert mape is not None
    assert mape == pytest.approx(0.25, abs=0.01)  # last two sessions: 0 and 50 % ... averaged


def test_out_of_order_samples_are_ignored() -> None:
    """A sample older than the newest one fed is dropped (a restart feeds history once)."""
    f = Forecaster(clock([NORMAL] * 2))
    s = f.clock.session(0)
    f.observe(s.open + 60, 3.0)
    f.observe(s.open + 30, 100.0)
    assert f.days[0].sums.sum() == 3.0


def test_xnys_sessions_follow_dst_and_holidays() -> None:
    """XNYS: the open is 14:30Z in winter, 13:30Z in summer; Thanksgiving has no session."""
    xnys = SessionClock("XNYS")
    winter = datetime(2026, 11, 24, 14, 31, tzinfo=UTC).timestamp()
    summer = datetime(2026, 10, 27, 13, 31, tzinfo=UTC).timestamp()
    thanksgiving = datetime(2026, 11, 26, 16, 0, tzinfo=UTC).timestamp()
    half_day = datetime(2026, 11, 27, 15, 0, tzinfo=UTC).timestamp()
    for at in (winter, summer):
        session = xnys.around(at)
        assert session is not None
        assert at - session.open == 60.0
    assert xnys.around(thanksgiving) is None
    friday = xnys.around(half_day)
    assert friday is not None
    assert friday.minutes == 210
