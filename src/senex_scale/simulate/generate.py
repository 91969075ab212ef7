"""Seeded synthetic load traces for the Senex Trader stack (``senex-scale trace generate``).

Four kinds, each a sequence of days drawn on New York wall-clock time (the XNYS exchange's
zone, DST-correct through zoneinfo):

``trading-day`` (default 2026-11-24, one day)
    Each XNYS session gets the trading shape; any other date the holiday shape.
``news-day`` (default 2026-11-24, one day)
    ``trading-day`` with, on every day, a sudden 5× burst in every column: full height within
    one step at a seed-chosen minute between 10:30 and 14:30, held 20–40 minutes (seed-chosen),
    then decaying with a 10-minute time constant. The underlying day is identical to the
    ``trading-day`` of the same seed.
``holiday`` (default 2026-11-26, Thanksgiving, one day)
    The holiday shape on every day, session or not.
``slow-week`` (default Monday 2026-11-16, seven days, 60-second step)
    Sessions at 0.6× trading-day activity (the demand above the overnight floor), other days
    (the weekend) the holiday shape.
``ten-sessions`` (default Monday 2026-11-16, fifteen days, 60-second step)
    Ten XNYS sessions for the predictive rule to learn from and be scored on: each session the
    trading shape at a seeded 0.85-1.15× activity (drawn per date), the Thanksgiving holiday
    (a gap in the sessions), the half day after it (13:00 close) and two weekends.

The trading shape, at ``scale=1`` (http_rps / ws_connections / tasks_trading per minute):
night 15 / 300 / 20; pre-market rising from 04:00; at the open (09:30) a spike that peaks
within a minute or two at 280 / 5000 / 900, about 3.3× the mid-morning 85 / 3200 / 300, and
decays over 20–30 minutes; a lunch lull 12:00–13:30 (55 / 2400 / 190); an afternoon build to
100 / 3400 / 340; a close spike 15:50–16:00 peaking at 200 / 3700 / 700; after hours decaying
to 20:00, then night. ``tasks_accounts`` stays near 40–75 with a 20-minute batch at 07:00
(about 120); ``tasks_general`` near 60–115 with a 30-minute batch at 02:00 (about 200). The
batches are cron jobs and run every day. Open and close come from the exchange calendar, so
early closes (13:00 the day after Thanksgiving) move the close spike and after-hours decay.

The holiday shape is a quiet weekend day: the night levels with a mild daytime hump centred on
13:00 (http_rps about 32), no open or close.

Noise is multiplicative: a few percent of independent per-sample noise plus a slow wander
(autocorrelated over 30–45 minutes, shared across columns and per column), so curves are not
perfectly smooth. It is seeded per New York date from ``(seed, date)``, so a given day looks
the same in a one-day trace and in a month-long one, and a trading day and a news day of the
same seed differ only by the burst. ``ws_connections`` is rounded to whole connections, other
columns to two decimals.

``timezone`` sets the zone the trace's days start at midnight in and the zone it is written
in; the shapes always follow New York time.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from senex_scale.plugins import did_you_mean
from senex_scale.simulate.model import FaultKind, MetricFaults
from senex_scale.simulate.trace import Array, Trace

KINDS = ("trading-day", "news-day", "holiday", "slow-week", "ten-sessions")

EXCHANGE = "XNYS"
EXCHANGE_TZ = "America/New_York"
SLOW_WEEK_ACTIVITY = 0.6
SESSION_ACTIVITY = (0.85, 1.15)
NEWS_FACTOR = 5.0
NEWS_WINDOW = (10.5, 14.5)  # burst start, New York wall-clock hours
NEWS_DURATION_MINUTES = (20, 40)
NEWS_DECAY_MINUTES = 10.0


@dataclass(frozen=True)
class KindDefaults:
    """What a kind generates when ``start``, ``days`` or ``step`` is not given."""

    start: date
    days: int
    step: float
    summary: str


KIND_DEFAULTS: dict[str, KindDefaults] = {
    "trading-day": KindDefaults(
        date(2026, 11, 24), 1, 15.0, "a normal NYSE session: open and close spikes, lunch lull"
    ),
    "news-day": KindDefaults(
        date(2026, 11, 24), 1, 15.0, "a trading day plus a sudden 5x burst in market hours"
    ),
    "holiday": KindDefaults(
        date(2026, 11, 26), 1, 15.0, "an exchange holiday (Thanksgiving): a quiet weekend day"
    ),
    "slow-week": KindDefaults(
        date(2026, 11, 16), 7, 60.0, "Monday to Sunday, sessions at 0.6x, a quiet weekend"
    ),
    "ten-sessions": KindDefaults(
        date(2026, 11, 16),
        15,
        60.0,
        "ten sessions at 0.85-1.15x, a holiday and a half day: the predictive rule's trace",
    ),
}


# --------------------------------------------------------------------------- column profiles


@dataclass(frozen=True)
class _Profile:
    """One demand column's shape; hours are New York wall-clock hours, levels at scale 1."""

    night: float
    premarket: tuple[tuple[float, float], ...]  # (hour, level) knots before the open
    open_level: float  # just before the open spike
    session: tuple[tuple[float, float], ...]  # (hour, level) knots between open and close
    pre_close: float  # the level over the last 15 minutes before the close
    after_hours: tuple[tuple[float, float], ...]  # (hours after the close, level)
    open_peak: float
    open_rise: float  # minutes from the open to the peak
    open_decay: float  # minutes, exponential time constant
    close_peak: float
    close_decay: float  # minutes
    holiday_peak: float  # top of the daytime hump on a non-session day
    batches: tuple[tuple[float, float, float], ...] = ()  # (hour, minutes, extra level)
    white_noise: float = 0.03  # per-sample multiplicative noise, standard deviation
    decimals: int = 2


_PROFILES: dict[str, _Profile] = {
    "http_rps": _Profile(
        night=15.0,
        premarket=((4.0, 15.0), (6.0, 22.0), (8.0, 32.0), (9.0, 42.0), (9.25, 55.0)),
        open_level=70.0,
        session=(
            (10.5, 85.0),
            (11.75, 85.0),
            (12.25, 55.0),
            (13.25, 55.0),
            (14.0, 75.0),
            (15.0, 90.0),
        ),
        pre_close=100.0,
        after_hours=((0.25, 55.0), (1.0, 40.0), (2.0, 30.0), (4.0, 17.0)),
        open_peak=280.0,
        open_rise=1.0,
        open_decay=7.0,
        close_peak=200.0,
        close_decay=3.0,
        holiday_peak=32.0,
    ),
    "ws_connections": _Profile(
        night=300.0,
        premarket=((4.0, 300.0), (6.0, 600.0), (8.0, 1200.0), (9.0, 1800.0), (9.25, 2200.0)),
        open_level=2500.0,
        session=(
            (10.5, 3200.0),
            (11.75, 3100.0),
            (12.25, 2400.0),
            (13.25, 2400.0),
            (14.0, 2900.0),
            (15.0, 3200.0),
        ),
        pre_close=3400.0,
        after_hours=((0.25, 2200.0), (1.0, 1500.0), (2.0, 1000.0), (4.0, 450.0)),
        open_peak=5000.0,
        open_rise=2.0,
        open_decay=12.0,
        close_peak=3700.0,
        close_decay=8.0,
        holiday_peak=800.0,
        white_noise=0.01,  # a level, not a rate: it moves smoothly
        decimals=0,
    ),
    "tasks_trading": _Profile(
        night=20.0,
        premarket=((4.0, 20.0), (6.0, 40.0), (8.0, 80.0), (9.0, 130.0), (9.25, 170.0)),
        open_level=200.0,
        session=(
            (10.5, 300.0),
            (11.75, 290.0),
            (12.25, 190.0),
            (13.25, 190.0),
            (14.0, 260.0),
            (15.0, 310.0),
        ),
        pre_close=340.0,
        after_hours=((0.25, 120.0), (1.0, 70.0), (2.0, 45.0), (4.0, 25.0)),
        open_peak=900.0,
        open_rise=1.0,
        open_decay=6.0,
        close_peak=700.0,
        close_decay=3.0,
        holiday_peak=30.0,
    ),
    "tasks_accounts": _Profile(
        night=40.0,
        premarket=((4.0, 40.0), (6.0, 45.0), (8.0, 60.0), (9.0, 65.0), (9.25, 70.0)),
        open_level=72.0,
        session=(
            (10.5, 75.0),
            (11.75, 75.0),
            (12.25, 65.0),
            (13.25, 65.0),
            (14.0, 70.0),
            (15.0, 72.0),
        ),
        pre_close=75.0,
        after_hours=((0.25, 65.0), (1.0, 55.0), (2.0, 50.0), (4.0, 42.0)),
        open_peak=100.0,
        open_rise=1.0,
        open_decay=10.0,
        close_peak=85.0,
        close_decay=5.0,
        holiday_peak=50.0,
        batches=((7.0, 20.0, 70.0),),
    ),
    "tasks_general": _Profile(
        night=60.0,
        premarket=((4.0, 60.0), (6.0, 65.0), (8.0, 75.0), (9.0, 85.0), (9.25, 90.0)),
        open_level=95.0,
        session=(
            (10.5, 110.0),
            (11.75, 110.0),
            (12.25, 90.0),
            (13.25, 90.0),
            (14.0, 100.0),
            (15.0, 110.0),
        ),
        pre_close=115.0,
        after_hours=((0.25, 100.0), (1.0, 85.0), (2.0, 75.0), (4.0, 65.0)),
        open_peak=150.0,
        open_rise=1.0,
        open_decay=10.0,
        close_peak=130.0,
        close_decay=5.0,
        holiday_peak=75.0,
        batches=((2.0, 30.0, 140.0),),
    ),
}

COLUMNS = tuple(_PROFILES)

CLOSE_RAMP_MINUTES = 10.0
HOLIDAY_HUMP = (13.0, 3.0)  # centre and width (hours) of the non-session daytime hump
WANDER_COMMON = (0.04, 45.0)  # (standard deviation, time constant in minutes)
WANDER_COLUMN = (0.03, 30.0)
WANDER_KNOT_MINUTES = 10.0


def _trading_curve(p: _Profile, hours: Array, open_h: float, close_h: float) -> Array:
    """The trading shape of one column at New York wall-clock ``hours``."""
    knots: list[tuple[float, float]] = [(0.0, p.night)]
    knots += [(h, v) for h, v in p.premarket if 0.0 < h < open_h]
    knots.append((open_h, p.open_level))
    knots += [(h, v) for h, v in p.session if open_h < h < close_h - 0.25]
    knots += [(close_h - 0.25, p.pre_close), (close_h, p.pre_close)]
    knots += [(close_h + dh, v) for dh, v in p.after_hours if close_h + dh < 24.0]
    knots.append((24.0, p.night))
    xs = np.array([h for h, _ in knots])
    ys = np.array([v for _, v in knots])
    base = np.interp(hours, xs, ys)

    def at(hour: float) -> float:
        return float(np.interp(hour, xs, ys))

    minutes = (hours - open_h) * 60.0
    rise = np.clip(minutes / p.open_rise, 0.0, 1.0)
    decay = np.exp(-np.clip(minutes - p.open_rise, 0.0, None) / p.open_decay)
    open_spike = np.where(minutes >= 0.0, rise * decay, 0.0)
    open_amplitude = p.open_peak - at(open_h + p.open_rise / 60.0)

    minutes = (hours - close_h) * 60.0
    ramp = np.clip((minutes + CLOSE_RAMP_MINUTES) / CLOSE_RAMP_MINUTES, 0.0, 1.0) ** 1.5
    tail = np.exp(-np.clip(minutes, 0.0, None) / p.close_decay)
    close_spike = np.where(minutes < 0.0, ramp, tail)
    close_amplitude = p.close_peak - at(close_h)

    curve: Array = base + open_amplitude * open_spike + close_amplitude * close_spike
    return curve


def _holiday_curve(p: _Profile, hours: Array) -> Array:
    centre, width = HOLIDAY_HUMP
    hump: Array = (p.holiday_peak - p.night) * np.exp(-0.5 * ((hours - centre) / width) ** 2)
    return p.night + hump


def _batches(p: _Profile, hours: Array) -> Array:
    extra = np.zeros_like(hours)
    for start, minutes, level in p.batches:
        end = start + minutes / 60.0
        ramp = 1.0 / 60.0
        extra += level * np.interp(hours, [start, start + ramp, end - ramp, end], [0, 1, 1, 0])
    return extra


# --------------------------------------------------------------------------- noise and bursts


def _wander(rng: np.random.Generator, elapsed: Array, sigma: float, tau_minutes: float) -> Array:
    """A stationary AR(1) process on 10-minute knots, linearly interpolated to ``elapsed``."""
    count = int(26 * 60 / WANDER_KNOT_MINUTES) + 1  # 26 hours covers a 25-hour DST day
    phi = math.exp(-WANDER_KNOT_MINUTES / tau_minutes)
    shocks = rng.normal(0.0, sigma * math.sqrt(1.0 - phi * phi), count)
    knots = np.empty(count)
    knots[0] = rng.normal(0.0, sigma)
    for i in range(1, count):
        knots[i] = phi * knots[i - 1] + shocks[i]
    grid = np.arange(count) * (WANDER_KNOT_MINUTES / 60.0)
    out: Array = np.interp(elapsed, grid, knots)
    return out


def _burst(rng: np.random.Generator, hours: Array) -> Array:
    """The news-day multiplier: 1, then NEWS_FACTOR for 20–40 min, then decaying back to 1."""
    low, high = NEWS_WINDOW
    start = (low * 60 + int(rng.integers(0, int((high - low) * 60) + 1))) / 60.0
    minutes_long = int(rng.integers(NEWS_DURATION_MINUTES[0], NEWS_DURATION_MINUTES[1] + 1))
    since = (hours - start) * 60.0
    after = np.exp(-np.clip(since - minutes_long, 0.0, None) / NEWS_DECAY_MINUTES)
    shape = np.where(since < 0.0, 0.0, np.where(since < minutes_long, 1.0, after))
    factor: Array = 1.0 + (NEWS_FACTOR - 1.0) * shape
    return factor


# --------------------------------------------------------------------------- calendar


@functools.lru_cache(maxsize=16)
def _sessions(first: date, last: date) -> dict[date, tuple[float, float]]:
    """XNYS sessions from ``first`` to ``last``: date → (open, close) in epoch seconds."""
    import exchange_calendars as xc  # lazy: pulls in pandas

    # exchange_calendars trips pandas deprecation warnings of its own; they are not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            calendar = xc.get_calendar(
                EXCHANGE,
                start=(first - timedelta(days=7)).isoformat(),
                end=(last + timedelta(days=7)).isoformat(),
            )
        except Exception as exc:  # exchange_calendars raises several of its own types
            raise ValueError(f"no {EXCHANGE} calendar for {first}..{last}: {exc}") from None
        schedule = calendar.schedule.loc[first.isoformat() : last.isoformat()]
    return {
        label.date(): (float(opened.timestamp()), float(closed.timestamp()))
        for label, opened, closed in zip(
            schedule.index, schedule["open"], schedule["close"], strict=True
        )
    }


def _wall_hours(times: Array, midnight: float, zone: ZoneInfo) -> Array:
    """Wall-clock hours since ``midnight`` in ``zone`` (exact across a DST change)."""
    elapsed: Array = (times - midnight) / 3600.0
    if times.size == 0:
        return elapsed
    first = datetime.fromtimestamp(float(times[0]), zone).utcoffset()
    last = datetime.fromtimestamp(float(times[-1]), zone).utcoffset()
    start = datetime.fromtimestamp(midnight, zone).utcoffset()
    if first == last == start:
        return elapsed
    assert start is not None
    shifts = [
        (offset - start).total_seconds() / 3600.0
        for offset in (datetime.fromtimestamp(t, zone).utcoffset() for t in times.tolist())
        if offset is not None
    ]
    hours: Array = elapsed + np.array(shifts, dtype=np.float64)
    return hours


def _hour_of(instant: float, midnight: float, zone: ZoneInfo) -> float:
    return float(_wall_hours(np.array([instant]), midnight, zone)[0])


# --------------------------------------------------------------------------- the generator


def generate(
    kind: str,
    *,
    start: date | None = None,
    days: int | None = None,
    step: float | None = None,
    seed: int = 42,
    scale: float = 1.0,
    timezone: str = EXCHANGE_TZ,
) -> Trace:
    """A synthetic trace of ``kind`` (see the module docstring); deterministic per seed.

    ``start``, ``days`` and ``step`` default per kind (``KIND_DEFAULTS``): 15-second steps,
    60 for ``slow-week``. The trace runs from midnight of ``start`` in ``timezone`` up to (not
    including) midnight ``days`` later. ``scale`` multiplies every column. Raises ValueError
    for an unknown kind or an out-of-range argument.
    """
    if kind not in KIND_DEFAULTS:
        hint = did_you_mean(kind, KINDS)
        raise ValueError(f'unknown trace kind "{kind}"{hint}; known: {", ".join(KINDS)}')
    defaults = KIND_DEFAULTS[kind]
    start = defaults.start if start is None else start
    days = defaults.days if days is None else days
    step = defaults.step if step is None else float(step)
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if not (math.isfinite(step) and 0 < step <= 3600):
        raise ValueError(f"step must be between 0 and 3600 seconds, not {step}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, not {scale}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}") from None

    first = datetime.combine(start, clock(0), zone).timestamp()
    stop = datetime.combine(start + timedelta(days=days), clock(0), zone).timestamp()
    times: Array = first + step * np.arange(math.ceil((stop - first) / step), dtype=np.float64)
    times = times[times < stop]

    exchange = ZoneInfo(EXCHANGE_TZ)
    ny_first = datetime.fromtimestamp(first, exchange).date()
    ny_last = datetime.fromtimestamp(float(times[-1]), exchange).date()
    sessions = {} if kind == "holiday" else _sessions(ny_first, ny_last)

    columns = {name: np.empty_like(times) for name in COLUMNS}
    day = ny_first
    while day <= ny_last:
        midnight = datetime.combine(day, clock(0), exchange).timestamp()
        next_midnight = datetime.combine(day + timedelta(days=1), clock(0), exchange).timestamp()
        lo, hi = np.searchsorted(times, [midnight, next_midnight], side="left")
        if hi > lo:
            window = times[lo:hi]
            values = _day(kind, day, window, midnight, exchange, sessions.get(day), seed)
            for name in COLUMNS:
                columns[name][lo:hi] = values[name]
        day += timedelta(days=1)

    for name, profile in _PROFILES.items():
        columns[name] = np.round(columns[name] * scale, profile.decimals)
    return Trace(kind, times, columns, timezone)


def _day(
    kind: str,
    day: date,
    times: Array,
    midnight: float,
    exchange: ZoneInfo,
    session: tuple[float, float] | None,
    seed: int,
) -> dict[str, Array]:
    """One New York date's samples for every column, noise and burst included."""
    hours = _wall_hours(times, midnight, exchange)  # for the shape
    elapsed = (times - midnight) / 3600.0  # for the noise
    noise = np.random.default_rng([seed, day.toordinal(), 0])
    common = _wander(noise, elapsed, *WANDER_COMMON)
    burst = (
        _burst(np.random.default_rng([seed, day.toordinal(), 1]), hours)
        if kind == "news-day"
        else None
    )
    activity = SLOW_WEEK_ACTIVITY if kind == "slow-week" else 1.0
    if kind == "ten-sessions":
        activity = float(
            np.random.default_rng([seed, day.toordinal(), 2]).uniform(*SESSION_ACTIVITY)
        )
    market = None
    if session is not None and kind != "holiday":
        market = (
            _hour_of(session[0], midnight, exchange),
            _hour_of(session[1], midnight, exchange),
        )

    out: dict[str, Array] = {}
    for name, profile in _PROFILES.items():
        if market is not None:
            curve = _trading_curve(profile, hours, *market)
            curve = profile.night + activity * (curve - profile.night)
        else:
            curve = _holiday_curve(profile, hours)
        curve = curve + _batches(profile, hours)
        own = _wander(noise, elapsed, *WANDER_COLUMN)
        white = noise.normal(0.0, profile.white_noise, times.size)
        values = curve * np.exp(common + own + white)
        if burst is not None:
            values = values * burst
        out[name] = values
    return out


def generation_comment(
    kind: str,
    *,
    out: str | None = None,
    start: date | None = None,
    days: int | None = None,
    step: float | None = None,
    seed: int = 42,
    scale: float = 1.0,
    timezone: str = EXCHANGE_TZ,
) -> str:
    """The header comment for a generated trace: the command that reproduces it, in full."""
    defaults = KIND_DEFAULTS[kind]
    start = defaults.start if start is None else start
    days = defaults.days if days is None else days
    step = defaults.step if step is None else step
    words: Sequence[str] = [
        "senex-scale trace generate",
        kind,
        *(["--out", out] if out else []),
        f"--start {start.isoformat()} --days {days} --step {step:g} --seed {seed}",
        f"--scale {scale:g}",
    ]
    lines = [
        f"Generated by: {' '.join(words)}",
        f"kind={kind} seed={seed} start={start.isoformat()} days={days} step={step:g}s "
        f"scale={scale:g} timezone={timezone}",
        f"{kind}: {defaults.summary}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- suite families

FAMILIES = (
    "normal",
    "news",
    "macro",
    "flash-crash",
    "plateau",
    "half-day",
    "holiday",
    "dst",
    "slow-week",
    "growth",
    "outliers",
    "dropouts",
    "stuck",
)
"""Trace families of ``senex-scale simulate --suite`` (``family_trace``), each seeded:

normal (a session at 0.7-1.4x), news (a 5x burst), macro (a 2-3.5x step at 08:30 or 14:00
held 30-120 min: a data release, a rate decision), flash-crash (10x within two minutes, held
3-10 min), plateau (08:00-24:00 flat near a scale-out line, noise 3/8/15 %), half-day (an
early close), holiday, dst (the Sunday of a DST switch and the Monday after), slow-week
(Monday to Friday at 0.6x), growth (three sessions growing 1 -> 1.6x), and three with
misbehaving metrics on a normal session: outliers (single samples 3-10x), dropouts (metrics
missing for 1-20 min) and stuck (a value frozen for 10-60 min).
"""

SUITE_YEARS = (date(2026, 1, 5), date(2027, 12, 24))
DST_SUNDAYS = (date(2026, 3, 8), date(2026, 11, 1), date(2027, 3, 14), date(2027, 11, 7))


def _session_days(early: bool) -> list[date]:
    sessions = _sessions(*SUITE_YEARS)
    ny = ZoneInfo(EXCHANGE_TZ)
    days = []
    for day, (_, closed) in sorted(sessions.items()):
        short = datetime.fromtimestamp(closed, ny).hour < 16
        if short == early:
            days.append(day)
    return days


def _holidays() -> list[date]:
    sessions = _sessions(*SUITE_YEARS)
    day, out = SUITE_YEARS[0], []
    while day <= SUITE_YEARS[1]:
        if day.weekday() < 5 and day not in sessions:
            out.append(day)
        day += timedelta(days=1)
    return out


def _ny_hours(trace: Trace) -> Array:
    first = float(trace.times[0])
    zone = ZoneInfo(EXCHANGE_TZ)
    midnight = datetime.combine(datetime.fromtimestamp(first, zone).date(), clock(0), zone)
    return _wall_hours(trace.times, midnight.timestamp(), zone)


def _shaped(trace: Trace, factor: Array, columns: Sequence[str] = COLUMNS) -> Trace:
    out = dict(trace.columns)
    for name in columns:
        out[name] = np.round(trace.columns[name] * factor, _PROFILES[name].decimals)
    return Trace(trace.name, trace.times, out, trace.timezone)


def _event(
    hours: Array, start: float, rise: float, hold: float, decay: float, peak: float
) -> Array:
    """1, rising linearly to ``peak`` over ``rise`` minutes, held, then decaying (minutes)."""
    since = (hours - start) * 60.0
    rising = np.clip(since / max(rise, 1e-9), 0.0, 1.0)
    after = np.exp(-np.clip(since - rise - hold, 0.0, None) / decay)
    shape = np.where(since < 0.0, 0.0, np.where(since < rise + hold, rising, after))
    factor: Array = 1.0 + (peak - 1.0) * shape
    return factor


def family_trace(family: str, seed: int) -> tuple[Trace, MetricFaults | None]:
    """The suite trace ``family-seed`` (``FAMILIES``) and its metric faults, if any."""
    if family not in FAMILIES:
        raise ValueError(f'unknown family "{family}"{did_you_mean(family, FAMILIES)}')
    rng = np.random.default_rng([seed, FAMILIES.index(family), 16])
    full = _session_days(early=False)
    day = full[int(rng.integers(len(full)))]
    scale = float(rng.uniform(0.8, 1.25))
    name = f"{family}-{seed}"
    faults: MetricFaults | None = None
    if family == "normal":
        trace = generate("trading-day", start=day, seed=seed, scale=float(rng.uniform(0.7, 1.4)))
    elif family == "news":
        trace = generate("news-day", start=day, seed=seed, scale=scale)
    elif family == "half-day":
        early = _session_days(early=True)
        trace = generate("trading-day", start=early[int(rng.integers(len(early)))], seed=seed)
    elif family == "holiday":
        holidays = _holidays()
        trace = generate("holiday", start=holidays[int(rng.integers(len(holidays)))], seed=seed)
    elif family == "dst":
        sunday = DST_SUNDAYS[int(rng.integers(len(DST_SUNDAYS)))]
        trace = generate("trading-day", start=sunday, days=2, seed=seed, scale=scale)
    elif family == "slow-week":
        monday = day - timedelta(days=day.weekday())
        trace = generate("slow-week", start=monday, days=5, step=15, seed=seed)
    elif family == "growth":
        start = full[int(rng.integers(len(full) - 3))]
        trace = generate("trading-day", start=start, days=3, seed=seed)
        ramp = 1.0 + 0.6 * (trace.times - trace.times[0]) / (trace.times[-1] - trace.times[0])
        trace = _shaped(trace, ramp)
    elif family in ("macro", "flash-crash"):
        trace = generate("trading-day", start=day, seed=seed, scale=scale)
        hours = _ny_hours(trace)
        if family == "macro":
            at = 8.5 if rng.random() < 0.5 else 14.0
            hold = float(rng.uniform(30, 120))
            factor = _event(hours, at, 0.0, hold, 30.0, float(rng.uniform(2.0, 3.5)))
        else:
            at = float(rng.uniform(10.0, 15.5))
            factor = _event(hours, at, 2.0, float(rng.uniform(3, 10)), 5.0, 10.0)
        trace = _shaped(trace, factor)
    elif family == "plateau":
        trace = _plateau(day, seed, rng)
    else:
        trace = generate("trading-day", start=day, seed=seed, scale=scale)
        faults = _faults(family, trace, rng)
    return Trace(name, trace.times, trace.columns, trace.timezone), faults


PLATEAU_NOISE = (0.03, 0.08, 0.15)
PLATEAU_LEVELS = (0.65, 0.70, 0.75)
"""Utilisation of the plateau: around the default policy's lines (70 % out, 75 % target)."""


def _plateau(day: date, seed: int, rng: np.random.Generator) -> Trace:
    """08:00-24:00 flat at a level near a scale-out line on 2-4 instances, with noise."""
    trace = generate("trading-day", start=day, seed=seed)
    hours = _ny_hours(trace)
    inside = (hours >= 8.0) & (hours < 24.0)
    level = PLATEAU_LEVELS[int(rng.integers(len(PLATEAU_LEVELS)))]
    count = int(rng.integers(2, 5))
    amplitude = PLATEAU_NOISE[int(rng.integers(len(PLATEAU_NOISE)))]
    n = int(inside.sum())
    wobble = np.cumsum(rng.normal(0.0, 1.0, n))  # a slow wander plus white noise
    wobble = (wobble - np.linspace(0.0, wobble[-1], n)) / max(1.0, float(np.abs(wobble).max()))
    noise = 1.0 + amplitude * (0.5 * wobble + rng.normal(0.0, 0.5, n))
    ws = 200.0 * count
    # web: utilisation = rps / 60 / n + ws * 8e-5 / n + 0.03 (the default capacity model)
    rps = (level - 0.03 - ws * 8e-5 / count) * 60.0 * count
    tasks = level * 120.0 * count
    columns = dict(trace.columns)
    targets = {
        "http_rps": rps,
        "ws_connections": ws,
        "tasks_trading": tasks,
        "tasks_general": tasks * 0.6,
        "tasks_accounts": tasks * 0.4,
    }
    for name, value in targets.items():
        column = columns[name].copy()
        wobbly = noise if name != "ws_connections" else 1.0
        column[inside] = np.round(value * wobbly, _PROFILES[name].decimals)
        columns[name] = np.maximum(column, 0.0)
    return Trace(trace.name, trace.times, columns, trace.timezone)


def _faults(family: str, trace: Trace, rng: np.random.Generator) -> MetricFaults:
    """Outliers, dropouts or stuck values at seed-chosen times of the day."""
    start, end = float(trace.times[0]), float(trace.times[-1])
    step = trace.step
    intervals: list[tuple[float, float, FaultKind, float]] = []
    count = {"outliers": 40, "dropouts": 12, "stuck": 4}[family]
    for _ in range(count):
        at = start + step * int(rng.integers(int((end - start) / step)))
        if family == "outliers":
            intervals.append((at, at + step, "outlier", float(rng.uniform(3.0, 10.0))))
        elif family == "dropouts":
            intervals.append((at, at + 60.0 * float(rng.uniform(1, 20)), "dropout", 1.0))
        else:
            intervals.append((at, at + 60.0 * float(rng.uniform(10, 60)), "stuck", 1.0))
    return MetricFaults(tuple(sorted(intervals)))


__all__ = [
    "COLUMNS",
    "FAMILIES",
    "KINDS",
    "KIND_DEFAULTS",
    "KindDefaults",
    "family_trace",
    "generate",
    "generation_comment",
]
