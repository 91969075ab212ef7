"""Forecast a pool's demand over the trading session, learned from the sessions before it.

A trading platform's load follows the exchange's day: the open, the lunch lull, the close.
This module learns that shape per pool from the demand the controller recorded (instances
needed, one value per tick) and forecasts the coming minutes. It is pure: no I/O, no clock;
the caller feeds ``(time, demand)`` in time order and asks about times ahead.

The model (written here rather than taken from statsmodels or Prophet: those pull in a stack
of dependencies and fit generic seasonalities, while the one seasonality that matters here
is the exchange's session, which they do not know; a recency-weighted profile per minute of
the session is a few dozen lines of numpy and its every number can be explained)::

    calendar  sessions from exchange-calendars (``core.schedule``'s cache): holidays are
              no session, half days a short one, DST moves the open's UTC time
    minutes   each session's window [open - 90m, close + 60m) in 1-minute bins; a minute
              in the first half of the session is indexed by minutes since the open, one
              in the second half by minutes before the close, so a half day's close spike
              lines up with a normal day's close, and its open with the open
    profile   per index: the mean over past sessions (the last ``keep``), weighted
              0.5 ** (age / half_life) by how many sessions ago each was
    trend     each session's level (its mean in-session demand); a weighted least-squares
              line through the last 10 levels, extrapolated one session, divided by the
              weighted mean level: the profile is scaled by that ratio (clipped to 0.8-1.25)
    level     within a session, the forecast is scaled by the ratio of what came to what
              was forecast over the last 30 finished minutes (from 10 of them on, clipped
              to 0.85-1.3): a busy day is busy from the pre-market on, and a quiet one lets
              the floor sink
    error     each finished minute is compared with the forecast made before its session
              began (the day-ahead profile, before the level); the MAPE over the last two
              sessions

Limits: it knows one seasonality (the session); news bursts and macro events are not in any
profile (reactive rules handle them, and they raise the error for two sessions); overnight
batches outside the window are not forecast; a profile learned from a censored metric (CPU
stuck at 100 % while the pool was short) is too low, hence the rule's preference for request
and task rates (``docs/predictive.md``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from senex_scale.core.schedule import _sessions as exchange_sessions

Array = npt.NDArray[np.float64]

PRE = 90
"""Minutes before the open that are learned and forecast (the longest ``lead``)."""
POST = 60
"""Minutes after the close that are learned and forecast (after-hours decay)."""
HALF = 12 * 60
"""Longest half session, in minutes (a 24-hour session has halves of 12 hours)."""
TREND_SESSIONS = 10
TREND_CLIP = (0.8, 1.25)
ERROR_SESSIONS = 2
ERROR_FLOOR = 0.5
LEVEL_MINUTES = 30
LEVEL_MIN = 10
LEVEL_CLIP = (0.85, 1.3)
"""Minutes whose actual demand is below this many instances are not scored (a relative
error of a near-zero demand says nothing)."""


class Session(NamedTuple):
    """One trading session: its position in the calendar, open and close (epoch seconds)."""

    number: int
    """Position in the calendar's sessions."""
    open: float
    close: float

    @property
    def minutes(self) -> int:
        """Length in whole minutes (390 for a normal NYSE day, 210 for a half day)."""
        return round((self.close - self.open) / 60.0)


class SessionClock:
    """An exchange's sessions, looked up by time (the calendar is built once per process)."""

    def __init__(self, name: str) -> None:
        sessions = exchange_sessions(name)
        self.name = name
        self.opens = sessions.opens
        self.closes = sessions.closes
        self._span: tuple[float, float, Session | None] = (0.0, 0.0, None)

    @classmethod
    def from_lists(cls, name: str, opens: list[float], closes: list[float]) -> SessionClock:
        """A clock over given sessions (tests, traces of another market)."""
        clock = cls.__new__(cls)
        clock.name, clock.opens, clock.closes = name, tuple(opens), tuple(closes)
        clock._span = (0.0, 0.0, None)
        return clock

    def session(self, index: int) -> Session:
        """Session number ``index`` of the calendar."""
        return Session(index, self.opens[index], self.closes[index])

    def around(self, at: float) -> Session | None:
        """The session whose window [open - PRE, close + POST) holds ``at``, if any."""
        low, high, found = self._span
        if low <= at < high:  # asked every tick, and for the minutes just ahead
            return found
        i = bisect_right(self.opens, at + PRE * 60.0) - 1
        # the answer holds from this window's start (or the last one's end) to the next
        # window's start (or this one's end)
        following = self.opens[i + 1] - PRE * 60.0 if i + 1 < len(self.opens) else math.inf
        if i >= 0 and at < self.closes[i] + POST * 60.0:
            found = self.session(i)
            self._span = (
                self.opens[i] - PRE * 60.0,
                min(following, found.close + POST * 60.0),
                found,
            )
            return found
        start = self.closes[i] + POST * 60.0 if i >= 0 else -math.inf
        self._span = (start, following, None)
        return None

    def next_open(self, at: float) -> Session | None:
        """The session in progress at ``at`` (its window), else the next one."""
        here = self.around(at)
        if here is not None:
            return here
        i = bisect_right(self.opens, at)
        return self.session(i) if i < len(self.opens) else None


def _slot(session: Session, minute: int) -> tuple[bool, int]:
    """(open side?, index into that side's profile) of ``minute`` since the open."""
    length = session.minutes
    if minute < length // 2:
        return True, minute + PRE
    return False, length - minute + POST


@dataclass(slots=True)
class _Day:
    """What was observed in one session's window: per minute, a sum and a count."""

    session: Session
    sums: Array
    counts: Array

    @classmethod
    def empty(cls, session: Session) -> _Day:
        width = PRE + session.minutes + POST
        return cls(session, np.zeros(width), np.zeros(width))

    def means(self) -> Array:
        with np.errstate(invalid="ignore", divide="ignore"):
            out: Array = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)
        return out

    def complete(self) -> bool:
        """Observed for at least half of its in-session minutes (enough to learn from)."""
        inside = self.counts[PRE : PRE + self.session.minutes]
        return bool(np.count_nonzero(inside) * 2 >= inside.size)


@dataclass(frozen=True, slots=True)
class Profile:
    """The forecast for one session: demand per minute index, and what it was learned from."""

    session: Session
    open_side: Array
    close_side: Array
    trend: float
    """Ratio applied for the trend (1: none)."""
    sessions: int
    """Past sessions it was learned from."""

    def at_minute(self, minute: int) -> float | None:
        """Forecast demand in minute ``minute`` since the open (None: never observed)."""
        if minute < -PRE or minute >= self.session.minutes + POST:
            return None
        is_open, i = _slot(self.session, minute)
        side = self.open_side if is_open else self.close_side
        if not 0 <= i < side.size:
            return None
        value = float(side[i])
        return None if math.isnan(value) else value * self.trend


class Peak(NamedTuple):
    """The highest forecast in a span of time, and when it comes."""

    value: float
    at: float


@dataclass(slots=True)
class Forecaster:
    """Learns one pool's demand per minute of the session; forecasts and scores itself.

    Feed ``observe(at, demand)`` in time order (older or repeated times are ignored). A
    session's forecast is made from the sessions before it only, so a simulation that feeds
    each tick as it happens never lets the forecaster see the future.
    """

    clock: SessionClock
    half_life: float = 5.0
    keep: int = 20
    days: dict[int, _Day] = field(default_factory=dict)
    last_at: float | None = None
    _profiles: dict[int, Profile | None] = field(default_factory=dict)
    _minute: tuple[int, int] | None = None
    _errors: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=4000))
    _recent: deque[tuple[int, float, float]] = field(
        default_factory=lambda: deque(maxlen=LEVEL_MINUTES)
    )
    """(session, actual, forecast) of the last finished minutes, for the level."""
    _scored: int = 0
    """Minutes scored so far: ``level`` and the forecasts change only when it does (once a
    minute), and are read every tick, so they are kept until it moves."""
    _window: tuple[int, float, int] = (-1, 0.0, 0)
    """(newest scored session, sum and count of the errors of it and the one before): the
    ``mape`` window, summed as each error comes instead of over the whole deque."""
    _level: tuple[int, int, float] = (-1, -1, 1.0)
    _ahead: dict[tuple[int, int], float | None] = field(default_factory=dict)
    """Forecasts by (session, minute) while ``_scored`` is ``_ahead_scored`` and no profile
    was built since: ``peak`` asks for the same few minutes every tick."""
    _ahead_scored: int = -1

    # ------------------------------------------------------------------ learning

    def observe(self, at: float, demand: float) -> None:
        """One observation of demand (instances needed) at ``at``."""
        if self.last_at is not None and at <= self.last_at:
            return
        if not math.isfinite(demand) or demand < 0:
            return
        self.last_at = at
        session = self.clock.around(at)
        if session is None:
            self._close_minute()
            return
        minute = math.floor((at - session.open) / 60.0)
        key = (session.number, minute)
        if key != self._minute:
            self._close_minute()
            self._minute = key
        day = self.days.get(session.number)
        if day is None:
            day = self.days[session.number] = _Day.empty(session)
            for old in sorted(self.days)[: max(0, len(self.days) - self.keep - 1)]:
                del self.days[old]
            # profiles of later sessions were built without this one
            for later in [k for k in self._profiles if k > session.number]:
                del self._profiles[later]
            self._ahead.clear()  # forecasts are kept only while their profiles are
        day.sums[minute + PRE] += demand
        day.counts[minute + PRE] += 1

    def _close_minute(self) -> None:
        """Score the minute just finished against the forecast its session began with."""
        if self._minute is None:
            return
        index, minute = self._minute
        self._minute = None
        day = self.days.get(index)
        if day is None:
            return
        count = day.counts[minute + PRE]
        if count <= 0:
            return
        actual = float(day.sums[minute + PRE] / count)
        profile = self.profile(index)
        if profile is None:
            return
        forecast = profile.at_minute(minute)
        if forecast is None:
            return
        self._recent.append((index, actual, forecast))
        self._scored += 1
        if actual >= ERROR_FLOOR:
            error = abs(forecast - actual) / actual
            self._errors.append((index, error))
            newest, total, count = self._window
            if index == newest:  # summed in the order mape's sum() would take them
                self._window = (index, total + error, count + 1)
            else:
                recent = [e for i, e in self._errors if i > index - ERROR_SESSIONS]
                self._window = (index, sum(recent), len(recent))

    # ------------------------------------------------------------------ forecasting

    def profile(self, index: int) -> Profile | None:
        """The forecast of session ``index``, from the complete sessions before it."""
        if index in self._profiles:
            return self._profiles[index]
        built = self._build(index)
        self._ahead.clear()
        self._profiles[index] = built
        if len(self._profiles) > 8:
            del self._profiles[min(self._profiles)]
        return built

    def _build(self, index: int) -> Profile | None:
        past = [d for k, d in sorted(self.days.items()) if k < index and d.complete()]
        past = past[-self.keep :]
        if not past:
            return None
        session = self.clock.session(index)
        open_num = np.zeros(PRE + HALF + 1)
        open_den = np.zeros(PRE + HALF + 1)
        close_num = np.zeros(POST + HALF + 2)
        close_den = np.zeros(POST + HALF + 2)
        levels: list[tuple[float, float, float]] = []  # (session index, level, weight)
        for day in past:
            weight = 0.5 ** ((index - 1 - day.session.number) / self.half_life)
            means = day.means()
            length = day.session.minutes
            half = length // 2
            front = means[: PRE + half]  # minutes -PRE .. half-1 -> open indices 0 ..
            back = means[PRE + half :][::-1]  # minutes L+POST-1 .. half -> close indices 1 ..
            for num, den, values, first in (
                (open_num, open_den, front, 0),
                (close_num, close_den, back, 1),
            ):
                seen = ~np.isnan(values)
                span = slice(first, first + values.size)
                num[span] += np.where(seen, values, 0.0) * weight
                den[span] += seen * weight
            inside = means[PRE : PRE + length]
            if np.any(~np.isnan(inside)):
                levels.append((float(day.session.number), float(np.nanmean(inside)), weight))
        with np.errstate(invalid="ignore", divide="ignore"):
            open_side: Array = np.where(
                open_den > 0, open_num / np.maximum(open_den, 1e-12), np.nan
            )
            close_side: Array = np.where(
                close_den > 0, close_num / np.maximum(close_den, 1e-12), np.nan
            )
        return Profile(session, open_side, close_side, _trend(levels, index), len(past))

    def forecast(self, at: float) -> float | None:
        """Forecast demand at ``at`` (None outside a session's window or without history),
        scaled by the session's level so far."""
        session = self.clock.around(at)
        if session is None:
            return None
        if self._ahead_scored != self._scored:
            self._ahead.clear()
            self._ahead_scored = self._scored
        key = (session.number, math.floor((at - session.open) / 60.0))
        if key in self._ahead:
            return self._ahead[key]
        profile = self.profile(session.number)
        value = None if profile is None else profile.at_minute(key[1])
        out = None if value is None else value * self.level(session.number)
        self._ahead[key] = out
        return out

    def level(self, number: int) -> float:
        """How session ``number`` runs against its forecast so far (1: as forecast, or too
        few minutes to say)."""
        seen, of, kept = self._level
        if seen == self._scored and of == number:
            return kept
        value = self._level_now(number)
        self._level = (self._scored, number, value)
        return value

    def _level_now(self, number: int) -> float:
        recent = [(a, f) for n, a, f in self._recent if n == number]
        forecast = sum(f for _, f in recent)
        if len(recent) < LEVEL_MIN or forecast <= 0:
            return 1.0
        low, high = LEVEL_CLIP
        return min(high, max(low, sum(a for a, _ in recent) / forecast))

    def peak(self, start: float, end: float) -> Peak | None:
        """The highest forecast over [start, end] (minute by minute), None if there is none."""
        best: Peak | None = None
        at = start
        while True:
            value = self.forecast(at)
            if value is not None and (best is None or value > best.value):
                best = Peak(value, at)
            if at >= end:
                return best
            at = min(end, (math.floor(at / 60.0) + 1) * 60.0)

    def learned(self, at: float) -> int:
        """Sessions the forecast around ``at`` is learned from (0 outside a window)."""
        session = self.clock.around(at)
        if session is None:
            session = self.clock.next_open(at)
        if session is None:
            return 0
        profile = self.profile(session.number)
        return 0 if profile is None else profile.sessions

    def mape(self) -> float | None:
        """Mean absolute percentage error (0.1 = 10 %) over the last two scored sessions."""
        _, total, count = self._window
        return total / count if count else None


def _trend(levels: list[tuple[float, float, float]], index: int) -> float:
    """Ratio of the extrapolated level to the weighted mean level (1 with fewer than 3)."""
    recent = levels[-TREND_SESSIONS:]
    if len(recent) < 3:
        return 1.0
    x = np.array([s for s, _, _ in recent])
    y = np.array([v for _, v, _ in recent])
    w = np.array([w for _, _, w in recent])
    mean_x = float(np.average(x, weights=w))
    mean_y = float(np.average(y, weights=w))
    spread = float(np.average((x - mean_x) ** 2, weights=w))
    if mean_y <= 0 or spread <= 0:
        return 1.0
    slope = float(np.average((x - mean_x) * (y - mean_y), weights=w)) / spread
    level = mean_y + slope * (index - mean_x)
    low, high = TREND_CLIP
    return min(high, max(low, level / mean_y))
