"""Schedule windows: when a ``[[schedules]]`` entry is in force, as a pure function of time.

A schedule raises or lowers pools' min/max between a *start* and an *end*. This module turns a
:class:`~senex_scale.policy.models.Schedule` into half-open windows ``[start, end)`` of epoch
seconds and answers "which window contains ``now``?". There is no I/O and no wall clock: time is
always an argument (float epoch seconds, UTC).

It is hand-written on top of two libraries that each answer a narrower question. croniter gives
the occurrences of a cron line; exchange-calendars gives an exchange's sessions with their open
and close instants (half days included). Pairing each start with its end, skipping days that are
not sessions, turning wall-clock times into instants across DST, and caching so that the
simulator's 172,800 calls per schedule and month stay cheap: that part is ours.

Semantics::

    time     ──────────────────────────────────────────────────────────────────▶
    starts   S1              S2 (holiday)               S3        S4
    ends          E1    E1'                  E2                         E3
    active() [S1, E1)        None all day    None       [S3, E3)  [S4, E3)
                                                        until S4  from S4 on

* A window opens at each start occurrence and runs until the first end occurrence strictly
  after that start (E1' closes nothing: its window is already closed).
* With a calendar, a start opens a window only on a trading session of that exchange: a cron
  start's local date in ``timezone`` must be a session; an anchor start belongs to its session.
  Ends are never filtered.
* Anchors: ``open-90m`` is the session's open minus 90 minutes, ``close+15m`` its close plus 15
  minutes, so half days move the window. An end anchor is taken from the session whose start
  opened the window (if that one is not after the start, from the first later session whose is).
  A cron end after an anchor start is the first cron occurrence after the start.
* When windows overlap, the latest start at or before ``now`` governs: ``now`` is in a window iff
  it is before that start's end.
* A window lasts at most :data:`MAX_WINDOW` (32 days), which keeps the search for the governing
  start bounded; longer windows are cut there.

Wall-clock time and DST: cron lines are evaluated by croniter in *naive* local time of
``timezone`` and each occurrence is then made an instant here (croniter's own tz-aware iteration
yields an ambiguous time twice):

* An ambiguous local time (the repeated hour when clocks go back: 01:30 on 2026-11-01 in
  New York) is its first instant (``fold=0``, 05:30Z): the window opens once, not twice, and an
  hourly line has no occurrence in the repeated hour.
* A non-existent local time (the skipped hour when clocks go forward: 02:30 on 2026-03-08 in
  New York) is moved to the transition instant (03:00 EDT, 07:00Z): the window still opens that
  day, as soon as it can (croniter's tz-aware iteration does the same).

Both rules keep instants in the same order as the wall-clock times they come from, which the
searches below rely on.

Caching: :meth:`ScheduleWindows.active` remembers its last answer and the span of time over which
that answer cannot change (from the window's start, or the previous window's end, up to the next
start or the window's end). While ``now`` stays inside the span, the answer is returned without
calling croniter; outside it (forward or backward) it is recomputed. The cache never changes an
answer.
"""

from __future__ import annotations

import functools
import math
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from senex_scale.errors import PermanentError
from senex_scale.policy.models import Schedule, parse_anchor

MAX_WINDOW = 32 * 86400.0
"""Longest window, in seconds: longer than any month, so monthly windows work."""

HORIZON = 32 * 86400.0
"""How far ahead the next start is looked for; with none, the cache holds at most this long."""

CALENDAR_START = date(2000, 1, 1)
CALENDAR_END = date(2040, 12, 31)
"""Range every calendar is built for (narrowed to what the calendar supports)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A span of time in which a schedule is in force."""

    start: float
    """Epoch seconds, inclusive."""
    end: float
    """Epoch seconds, exclusive."""


# --------------------------------------------------------------------------- calendars


@dataclass(frozen=True, slots=True)
class _Sessions:
    """An exchange's sessions over the range it was built for, as plain Python values."""

    name: str
    dates: tuple[date, ...]
    """Session labels (the trading day), ascending."""
    opens: tuple[float, ...]
    closes: tuple[float, ...]
    first: date
    """First day the calendar knows about (sessions or not)."""
    last: date

    def index(self, day: date) -> int | None:
        """Position of ``day`` in :attr:`dates`, or None when it is not a session."""
        i = bisect_left(self.dates, day)
        return i if i < len(self.dates) and self.dates[i] == day else None


@functools.cache
def _sessions(name: str) -> _Sessions:
    """Sessions of calendar ``name``, built once per process (it takes ~0.1 s plus pandas)."""
    import exchange_calendars as xc  # lazy: it pulls in pandas

    start, end = CALENDAR_START, CALENDAR_END
    # Some calendars only exist for some years (XBOM's holidays end in 2026); exchange-calendars
    # has no public way to ask before building one, so read its factory's bounds if it has one.
    factories = getattr(xc.calendar_utils.global_calendar_dispatcher, "_calendar_factories", {})
    factory = factories.get(xc.resolve_alias(name))
    if factory is not None:
        if (low := factory.bound_min()) is not None:
            start = max(start, low.date())
        if (high := factory.bound_max()) is not None:
            end = min(end, high.date())
    with warnings.catch_warnings():
        # exchange-calendars 4.x trips pandas 3 deprecation warnings while it builds.
        warnings.simplefilter("ignore")
        try:
            calendar = xc.get_calendar(name, start=start.isoformat(), end=end.isoformat())
        except Exception as exc:  # a third-party failure: say which calendar and range
            raise PermanentError(
                f'exchange calendar "{name}" cannot be built for {start} to {end}: {exc}'
            ) from exc
        dates = tuple(label.date() for label in calendar.sessions)
        opens = tuple(stamp.timestamp() for stamp in calendar.opens)
        closes = tuple(stamp.timestamp() for stamp in calendar.closes)
    return _Sessions(name, dates, opens, closes, start, end)


# --------------------------------------------------------------------------- wall clock


def _to_epoch(wall: datetime, zone: ZoneInfo) -> float:
    """Instant of naive local time ``wall`` in ``zone`` (ambiguous: first; skipped: transition)."""
    epoch = wall.replace(tzinfo=zone, fold=0).timestamp()  # first instant of an ambiguous time
    if _to_wall(epoch, zone) == wall:
        return epoch
    # ``wall`` falls in a gap. fold=0 maps it with the offset before the transition (too late),
    # fold=1 with the offset after it (too early); the transition lies in between.
    low = math.floor(min(epoch, wall.replace(tzinfo=zone, fold=1).timestamp()))
    high = math.ceil(max(epoch, wall.replace(tzinfo=zone, fold=1).timestamp()))
    while low < high:  # first whole second whose wall time is past ``wall``
        mid = (low + high) // 2
        if _to_wall(mid, zone) > wall:
            high = mid
        else:
            low = mid + 1
    return float(low)


def _to_wall(epoch: float, zone: ZoneInfo) -> datetime:
    """Naive local time of ``epoch`` in ``zone`` (fold cleared)."""
    return datetime.fromtimestamp(epoch, zone).replace(tzinfo=None, fold=0)


def _day_start(day: date, zone: ZoneInfo) -> float:
    """Instant at which local date ``day`` begins in ``zone``."""
    return _to_epoch(datetime(day.year, day.month, day.day), zone)


# --------------------------------------------------------------------------- occurrences


class _Start(NamedTuple):
    """A start occurrence: what its end is searched from."""

    epoch: float
    session: int
    """Index of its session in the calendar (-1 without one)."""
    wall: datetime | None
    """Its naive local time, for a cron start."""


class _Cron:
    """Occurrences of one cron line in one zone, optionally only on a calendar's sessions."""

    __slots__ = ("_iter", "_sessions", "_zone")

    def __init__(self, expr: str, zone: ZoneInfo, sessions: _Sessions | None) -> None:
        self._iter = croniter(expr, datetime(2000, 1, 1))
        self._zone = zone
        self._sessions = sessions

    def _session(self, wall: datetime) -> int | None:
        """Session index of ``wall``'s date (-1 without calendar); None when not a session."""
        if self._sessions is None:
            return -1
        return self._sessions.index(wall.date())

    def latest(self, now: float, floor: float) -> _Start | float:
        """Latest occurrence in ``(floor, now]``; without one, a bound on all earlier ones."""
        here = datetime.fromtimestamp(now, self._zone)
        wall = here.replace(tzinfo=None, fold=0)
        if here.fold:
            # In the repeated hour, later wall times map to their first instant, which may be
            # before ``now``: look from where that stops being so.
            first = wall.replace(tzinfo=self._zone, fold=0).utcoffset()
            second = here.utcoffset()
            assert first is not None and second is not None
            wall += first - second
        self._iter.set_current(wall + timedelta(seconds=1), force=True)
        sessions = self._sessions
        while True:
            try:
                candidate = self._iter.get_prev(datetime)
            except CroniterBadDateError:  # croniter gave up: no occurrence within its search range
                return floor
            epoch = _to_epoch(candidate, self._zone)
            if epoch <= floor:
                return epoch
            if epoch > now:
                continue
            index = self._session(candidate)
            if index is not None:
                return _Start(epoch, index, candidate)
            assert sessions is not None
            before = bisect_left(sessions.dates, candidate.date()) - 1
            if before < 0:
                return floor
            day = sessions.dates[before] + timedelta(days=1)
            self._iter.set_current(datetime(day.year, day.month, day.day), force=True)

    def earliest(self, after: float, limit: float, wall: datetime | None = None) -> float | None:
        """Earliest occurrence in ``(after, limit]``, or None.

        With ``wall`` (the naive local time of a cron start at ``after``), the earliest
        occurrence at a later *wall* time: it may be at ``after`` itself when both fell in a
        skipped hour and moved to its end, which makes an empty window rather than one that
        lasts until the next day's end.
        """
        strict = wall is None
        self._iter.set_current(_to_wall(after, self._zone) if wall is None else wall, force=True)
        sessions = self._sessions
        while True:
            try:
                candidate = self._iter.get_next(datetime)
            except CroniterBadDateError:  # croniter gave up: no occurrence within its search range
                return None
            epoch = _to_epoch(candidate, self._zone)
            if epoch > limit:
                return None
            if epoch < after or (strict and epoch == after):
                continue  # a later wall time whose first instant is not after ``after``
            if self._session(candidate) is not None:
                return epoch
            assert sessions is not None
            following = bisect_right(sessions.dates, candidate.date())
            if following >= len(sessions.dates):
                return None
            day = sessions.dates[following]
            self._iter.set_current(
                datetime(day.year, day.month, day.day) - timedelta(seconds=1), force=True
            )


class _Anchor:
    """Occurrences of a market anchor: each session's open or close plus an offset."""

    __slots__ = ("_times",)

    def __init__(self, which: str, offset: float, sessions: _Sessions) -> None:
        base = sessions.opens if which == "open" else sessions.closes
        self._times = tuple(t + offset for t in base)

    def latest(self, now: float, floor: float) -> _Start | float:
        """Latest occurrence in ``(floor, now]``; without one, a bound on all earlier ones."""
        i = bisect_right(self._times, now) - 1
        if i < 0:
            return -math.inf
        if self._times[i] <= floor:
            return self._times[i]
        return _Start(self._times[i], i, None)

    def earliest(self, after: float, limit: float, session: int = 0) -> float | None:
        """Earliest occurrence in ``(after, limit]`` of session ``session`` or later, or None."""
        i = max(session, bisect_right(self._times, after))
        if i >= len(self._times) or self._times[i] > limit:
            return None
        return self._times[i]


# --------------------------------------------------------------------------- windows


class ScheduleWindows:
    """The windows of one schedule; :meth:`active` answers which one contains a time.

    One instance per schedule, reused across ticks (that is what makes the cache pay); not
    thread-safe. Building it builds the schedule's calendar the first time that name is used.
    """

    __slots__ = ("_end", "_high", "_known", "_low", "_result", "_start", "_valid", "schedule")

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        zone = ZoneInfo(schedule.timezone)
        sessions = _sessions(schedule.calendar) if schedule.calendar is not None else None
        self._start = self._occurrences(schedule.start, zone, sessions, filtered=True)
        end = self._occurrences(schedule.end, zone, sessions, filtered=False)
        self._end: Callable[[_Start, float], float | None]
        if isinstance(end, _Anchor):
            anchor = end
            self._end = lambda start, limit: anchor.earliest(start.epoch, limit, start.session)
        else:
            cron = end
            self._end = lambda start, limit: cron.earliest(start.epoch, limit, start.wall)
        self._valid = (-math.inf, math.inf)
        if sessions is not None:
            # Before ``low`` the governing start could precede the calendar; after ``high``
            # sessions are unknown.
            low = _day_start(sessions.first, zone) + MAX_WINDOW
            high = _day_start(sessions.last + timedelta(days=1), zone)
            self._valid = (low, high)
        self._known = False
        self._low = 0.0
        self._high = 0.0
        self._result: Window | None = None

    @staticmethod
    def _occurrences(
        text: str, zone: ZoneInfo, sessions: _Sessions | None, *, filtered: bool
    ) -> _Cron | _Anchor:
        anchor = parse_anchor(text)
        if anchor is None:
            return _Cron(text, zone, sessions if filtered else None)
        if sessions is None:  # the policy model rejects this; keep the core honest anyway
            raise ValueError(f'"{text}" is a market anchor, which needs a calendar')
        return _Anchor(anchor[0], anchor[1], sessions)

    def active(self, now: float) -> Window | None:
        """The window of this schedule that contains ``now``, or None."""
        if self._known and self._low <= now < self._high:
            return self._result
        result, low, high = self._compute(now)
        self._known, self._low, self._high, self._result = True, low, high, result
        return result

    def until(self, now: float) -> float:
        """When the answer of :meth:`active` first may differ from its answer at ``now``."""
        self.active(now)
        return self._high

    def _compute(self, now: float) -> tuple[Window | None, float, float]:
        """The window containing ``now`` and the span ``[low, high)`` over which it holds."""
        valid_low, valid_high = self._valid
        if not valid_low <= now < valid_high:
            assert self.schedule.calendar is not None
            sessions = _sessions(self.schedule.calendar)
            raise PermanentError(
                f'schedule "{self.schedule.name}": exchange calendar "{sessions.name}" is only '
                f"known from {sessions.first} to {sessions.last}, and "
                f"{datetime.fromtimestamp(now, UTC).isoformat()} is outside it"
            )
        following = self._start.earliest(now, now + HORIZON)
        high = min(following if following is not None else now + HORIZON, valid_high)
        latest = self._start.latest(now, now - MAX_WINDOW)
        if not isinstance(latest, _Start):
            # No start within MAX_WINDOW; older ones are at or before ``latest``, so their
            # windows closed by ``latest + MAX_WINDOW`` (at the latest: ``now``).
            return None, max(latest + MAX_WINDOW, valid_low), high
        limit = latest.epoch + MAX_WINDOW
        end = self._end(latest, limit)
        window = Window(latest.epoch, end if end is not None else limit)
        if now < window.end:
            return window, window.start, min(window.end, high)
        return None, window.end, high
