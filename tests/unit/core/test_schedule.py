"""Schedule windows: cron and market-anchor windows, calendars, DST and the cache."""

from __future__ import annotations

import random
import warnings
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from senex_scale.core.schedule import MAX_WINDOW, ScheduleWindows, Window
from senex_scale.errors import PermanentError
from senex_scale.policy.models import Schedule

NY = ZoneInfo("America/New_York")


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a New York wall-clock time (first instant when ambiguous)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=NY).timestamp()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a UTC time."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def schedule(
    start: str,
    end: str,
    timezone: str = "America/New_York",
    calendar: str | None = "XNYS",
) -> Schedule:
    """A schedule raising the django pool's min to 3."""
    return Schedule(
        name="test",
        pools=("django",),
        start=start,
        end=end,
        timezone=timezone,
        calendar=calendar,
        min=3,
    )


SEED = schedule("0 8 * * MON-FRI", "0 23 * * MON-FRI")
SEED_NO_CALENDAR = schedule("0 8 * * MON-FRI", "0 23 * * MON-FRI", calendar=None)
ANCHORED = schedule("open-90m", "close+30m")
OVERNIGHT = schedule("0 22 * * *", "0 6 * * *", timezone="UTC", calendar=None)


def active(sched: Schedule, now: float) -> Window | None:
    """Uncached answer: a fresh ScheduleWindows for every question."""
    return ScheduleWindows(sched).active(now)


# --------------------------------------------------------------------------- seed schedule


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (ny(2026, 6, 16, 8, 0), True),
        (ny(2026, 6, 16, 22, 59), True),
        (ny(2026, 6, 16, 22, 59, 59), True),
        (ny(2026, 6, 16, 7, 59), False),
        (ny(2026, 6, 16, 7, 59, 59), False),
        (ny(2026, 6, 16, 23, 0), False),
        (ny(2026, 6, 17, 3, 0), False),
    ],
)
def test_seed_normal_tuesday(now: float, expected: bool) -> None:
    """On a normal Tuesday the seed window is [08:00, 23:00) New York time."""
    window = active(SEED, now)
    assert (window is not None) is expected
    if window is not None:
        assert window == Window(ny(2026, 6, 16, 8, 0), ny(2026, 6, 16, 23, 0))


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Friday before the March transition: EST, 08:00 local is 13:00Z, 23:00 is 04:00Z.
        (utc(2026, 3, 6, 12, 59), False),
        (utc(2026, 3, 6, 13, 0), True),
        (utc(2026, 3, 7, 3, 59), True),
        (utc(2026, 3, 7, 4, 0), False),
        # Monday after it: EDT, 08:00 local is 12:00Z, 23:00 is 03:00Z.
        (utc(2026, 3, 9, 11, 59), False),
        (utc(2026, 3, 9, 12, 0), True),
        (utc(2026, 3, 10, 2, 59), True),
        (utc(2026, 3, 10, 3, 0), False),
        # Friday before the November transition: still EDT.
        (utc(2026, 10, 30, 11, 59), False),
        (utc(2026, 10, 30, 12, 0), True),
        (utc(2026, 10, 31, 2, 59), True),
        (utc(2026, 10, 31, 3, 0), False),
        # Monday after it: EST again.
        (utc(2026, 11, 2, 12, 0), False),
        (utc(2026, 11, 2, 12, 59), False),
        (utc(2026, 11, 2, 13, 0), True),
        (utc(2026, 11, 3, 3, 59), True),
        (utc(2026, 11, 3, 4, 0), False),
    ],
)
def test_seed_follows_dst(now: float, expected: bool) -> None:
    """08:00 and 23:00 stay local across both 2026 DST transitions (the UTC instants move)."""
    assert (active(SEED, now) is not None) is expected


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 11, 26),  # Thanksgiving
        date(2026, 12, 25),  # Christmas
        date(2027, 1, 1),  # New Year's Day
        date(2026, 4, 3),  # Good Friday
        date(2026, 11, 28),  # Saturday
        date(2026, 11, 29),  # Sunday
        date(2026, 3, 8),  # Sunday of the March transition
    ],
)
def test_seed_closed_days(day: date) -> None:
    """No window opens on exchange holidays or weekends: inactive every 15 minutes of the day."""
    windows = ScheduleWindows(SEED)
    for quarter in range(96):
        now = ny(day.year, day.month, day.day) + quarter * 900
        assert windows.active(now) is None
        assert active(SEED, now) is None


@pytest.mark.parametrize(
    ("sched", "now", "expected"),
    [
        (SEED, ny(2026, 11, 26, 12, 0), None),
        (SEED_NO_CALENDAR, ny(2026, 11, 26, 12, 0), (ny(2026, 11, 26, 8, 0), ny(2026, 11, 26, 23))),
        (SEED, ny(2026, 11, 27, 12, 0), (ny(2026, 11, 27, 8, 0), ny(2026, 11, 27, 23, 0))),
        (SEED_NO_CALENDAR, ny(2026, 11, 28, 12, 0), None),
    ],
)
def test_calendar_only_gates_sessions(
    sched: Schedule, now: float, expected: tuple[float, float] | None
) -> None:
    """Without a calendar Thanksgiving is a Thursday like any other; weekends stay closed."""
    assert active(sched, now) == (None if expected is None else Window(*expected))


def test_seed_matches_day_by_day_reference() -> None:
    """Every 15 minutes over two months equals windows built from the session list by hand."""
    import exchange_calendars

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exchange-calendars 4.x vs pandas 3 deprecations
        xnys = exchange_calendars.get_calendar("XNYS", start="2026-01-01", end="2027-12-31")
        sessions = {label.date() for label in xnys.sessions}
    expected = []
    day = date(2026, 10, 1)
    while day < date(2026, 12, 1):
        if day.weekday() < 5 and day in sessions:
            y, m, d = day.year, day.month, day.day
            expected.append(Window(ny(y, m, d, 8), ny(y, m, d, 23)))
        day += timedelta(days=1)
    windows = ScheduleWindows(SEED)
    now = ny(2026, 10, 2)
    while now < ny(2026, 12, 1):
        want = next((w for w in expected if w.start <= now < w.end), None)
        assert windows.active(now) == want
        now += 900


# --------------------------------------------------------------------------- anchors


@pytest.mark.parametrize(
    ("sched", "now", "expected"),
    [
        # Half day after Thanksgiving: XNYS closes 13:00 ET, so close+30m is 13:30.
        (ANCHORED, ny(2026, 11, 27, 7, 59), None),
        (ANCHORED, ny(2026, 11, 27, 8, 0), (ny(2026, 11, 27, 8, 0), ny(2026, 11, 27, 13, 30))),
        (ANCHORED, ny(2026, 11, 27, 13, 29), (ny(2026, 11, 27, 8, 0), ny(2026, 11, 27, 13, 30))),
        (ANCHORED, ny(2026, 11, 27, 13, 30), None),
        # A normal day: open 09:30, close 16:00.
        (ANCHORED, ny(2026, 11, 24, 7, 59), None),
        (ANCHORED, ny(2026, 11, 24, 8, 0), (ny(2026, 11, 24, 8, 0), ny(2026, 11, 24, 16, 30))),
        (ANCHORED, ny(2026, 11, 24, 16, 29), (ny(2026, 11, 24, 8, 0), ny(2026, 11, 24, 16, 30))),
        (ANCHORED, ny(2026, 11, 24, 16, 30), None),
        # Holiday: no session, no window.
        (ANCHORED, ny(2026, 11, 26, 12, 0), None),
        # Anchors follow DST too: open-90m is 08:00 EDT = 12:00Z after the March transition.
        (ANCHORED, utc(2026, 3, 9, 11, 59), None),
        (ANCHORED, utc(2026, 3, 9, 12, 0), (ny(2026, 3, 9, 8, 0), ny(2026, 3, 9, 16, 30))),
        # Cron start, anchor end: the half day still ends early.
        (
            schedule("0 8 * * MON-FRI", "close+15m"),
            ny(2026, 11, 27, 12, 0),
            (ny(2026, 11, 27, 8, 0), ny(2026, 11, 27, 13, 15)),
        ),
        # Anchor start, cron end: the first cron occurrence after the start.
        (
            schedule("open-90m", "0 12 * * *"),
            ny(2026, 11, 27, 11, 0),
            (ny(2026, 11, 27, 8, 0), ny(2026, 11, 27, 12, 0)),
        ),
        # An end anchor comes from the start's own session, even when an earlier session's
        # (Monday close + 3 days = Thursday 16:00) would come first.
        (
            schedule("open", "close+3d"),
            ny(2026, 11, 24, 12, 0),
            (ny(2026, 11, 24, 9, 30), ny(2026, 11, 27, 16, 0)),
        ),
        # An end anchor before the start comes from the next session (over the weekend here).
        (
            schedule("close-30m", "open"),
            ny(2026, 11, 28, 12, 0),
            (ny(2026, 11, 27, 12, 30), ny(2026, 11, 30, 9, 30)),
        ),
    ],
)
def test_anchors(sched: Schedule, now: float, expected: tuple[float, float] | None) -> None:
    """Market anchors follow each session's open and close, half days included."""
    assert active(sched, now) == (None if expected is None else Window(*expected))


# --------------------------------------------------------------------------- cron shapes


@pytest.mark.parametrize(
    ("sched", "now", "expected"),
    [
        # Crossing midnight (UTC).
        (OVERNIGHT, utc(2026, 5, 5, 21, 59), None),
        (OVERNIGHT, utc(2026, 5, 5, 22, 0), (utc(2026, 5, 5, 22), utc(2026, 5, 6, 6))),
        (OVERNIGHT, utc(2026, 5, 5, 23, 59, 59), (utc(2026, 5, 5, 22), utc(2026, 5, 6, 6))),
        (OVERNIGHT, utc(2026, 5, 6, 0, 0), (utc(2026, 5, 5, 22), utc(2026, 5, 6, 6))),
        (OVERNIGHT, utc(2026, 5, 6, 5, 59), (utc(2026, 5, 5, 22), utc(2026, 5, 6, 6))),
        (OVERNIGHT, utc(2026, 5, 6, 6, 0), None),
        (OVERNIGHT, utc(2026, 5, 6, 12, 0), None),
        # Overlapping windows: the latest start governs.
        (
            schedule("0 * * * *", "0 23 * * *", calendar=None),
            ny(2026, 6, 16, 9, 30),
            (ny(2026, 6, 16, 9, 0), ny(2026, 6, 16, 23, 0)),
        ),
        # Two starts before one end: the later start governs until the shared end.
        (
            schedule("0 8,20 * * *", "0 21 * * *", calendar=None),
            ny(2026, 6, 16, 20, 30),
            (ny(2026, 6, 16, 20, 0), ny(2026, 6, 16, 21, 0)),
        ),
        (schedule("0 8,20 * * *", "0 21 * * *", calendar=None), ny(2026, 6, 16, 21, 0), None),
        # An end equal to a start closes the next occurrence, not the same instant.
        (
            schedule("0 8 * * *", "0 8 * * *", calendar=None),
            ny(2026, 6, 16, 12, 0),
            (ny(2026, 6, 16, 8, 0), ny(2026, 6, 17, 8, 0)),
        ),
        # A window longer than MAX_WINDOW is cut there.
        (
            schedule("0 0 1 1 *", "0 0 1 6 *", timezone="UTC", calendar=None),
            utc(2026, 1, 15),
            (utc(2026, 1, 1), utc(2026, 1, 1) + MAX_WINDOW),
        ),
        (
            schedule("0 0 1 1 *", "0 0 1 6 *", timezone="UTC", calendar=None),
            utc(2026, 3, 1),
            None,
        ),
    ],
)
def test_cron_windows(sched: Schedule, now: float, expected: tuple[float, float] | None) -> None:
    """Midnight crossing, overlap, equal start and end, and the window length cap."""
    assert active(sched, now) == (None if expected is None else Window(*expected))


@pytest.mark.parametrize(
    ("sched", "now", "expected"),
    [
        # 01:30 happens twice on 2026-11-01 (05:30Z EDT, 06:30Z EST): the window opens once,
        # at the first, and the second 01:30 does not reopen it.
        (
            schedule("30 1 * * *", "45 1 * * *", calendar=None),
            utc(2026, 11, 1, 5, 30),
            (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 5, 45)),
        ),
        (schedule("30 1 * * *", "45 1 * * *", calendar=None), utc(2026, 11, 1, 5, 45), None),
        (schedule("30 1 * * *", "45 1 * * *", calendar=None), utc(2026, 11, 1, 6, 30), None),
        (schedule("30 1 * * *", "45 1 * * *", calendar=None), utc(2026, 11, 1, 6, 40), None),
        # In the repeated hour (06:30Z is the second 01:30), a start at a later wall time
        # (01:45, first instant 05:45Z) has already happened.
        (
            schedule("45 1 * * *", "0 3 * * *", calendar=None),
            utc(2026, 11, 1, 6, 30),
            (utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 8, 0)),
        ),
        # An hourly start has no occurrence in the repeated hour.
        (
            schedule("0 * * * *", "59 * * * *", calendar=None),
            utc(2026, 11, 1, 6, 30),
            None,
        ),
        # 02:30 does not exist on 2026-03-08: the window opens at the transition, 03:00 EDT.
        (schedule("30 2 * * *", "0 4 * * *", calendar=None), utc(2026, 3, 8, 6, 59), None),
        (
            schedule("30 2 * * *", "0 4 * * *", calendar=None),
            utc(2026, 3, 8, 7, 0),
            (utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 8, 0)),
        ),
        # Start and end both skipped: both move to 03:00 EDT and that day's window is empty
        # (not one lasting until the next day's 02:45); the next day is normal.
        (schedule("30 2 * * *", "45 2 * * *", calendar=None), utc(2026, 3, 8, 7, 0), None),
        (schedule("30 2 * * *", "45 2 * * *", calendar=None), utc(2026, 3, 8, 12, 0), None),
        (
            schedule("30 2 * * *", "45 2 * * *", calendar=None),
            utc(2026, 3, 9, 6, 30),
            (utc(2026, 3, 9, 6, 30), utc(2026, 3, 9, 6, 45)),
        ),
        # A skipped end moves to the transition too.
        (
            schedule("0 1 * * *", "30 2 * * *", calendar=None),
            utc(2026, 3, 8, 6, 59),
            (utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 7, 0)),
        ),
    ],
)
def test_ambiguous_and_missing_local_times(
    sched: Schedule, now: float, expected: tuple[float, float] | None
) -> None:
    """Repeated local times open a window once; skipped ones open it at the transition."""
    assert active(sched, now) == (None if expected is None else Window(*expected))


def test_outside_calendar_range_raises() -> None:
    """A time the calendar was not built for is an error, not a silent "no session"."""
    with pytest.raises(PermanentError, match="XNYS"):
        active(SEED, utc(2045, 1, 2, 15))


# --------------------------------------------------------------------------- cache


CACHE_CASES = [
    pytest.param(SEED, ny(2026, 11, 22), id="seed-thanksgiving-week"),
    pytest.param(SEED, ny(2026, 10, 29), id="seed-november-dst"),
    pytest.param(ANCHORED, ny(2026, 11, 22), id="anchored-half-day"),
    pytest.param(OVERNIGHT, utc(2026, 3, 5), id="overnight"),
    pytest.param(
        schedule("*/20 * * * *", "10,50 * * * *", calendar=None), ny(2026, 3, 5), id="dense"
    ),
    pytest.param(
        schedule("0 0 1 1 *", "0 0 1 6 *", timezone="UTC", calendar=None),
        utc(2026, 1, 29),
        id="capped-window",
    ),
]
STEP = 15.0
WEEK = 7 * 86400


def sweep(sched: Schedule, begin: float) -> tuple[list[float], list[Window | None]]:
    """Times every 15 s over a week and one instance's (cached) answers at each."""
    windows = ScheduleWindows(sched)
    times = [begin + i * STEP for i in range(int(WEEK / STEP))]
    return times, [windows.active(t) for t in times]


@pytest.mark.parametrize(("sched", "begin"), CACHE_CASES)
def test_cache_matches_uncached_forward(sched: Schedule, begin: float) -> None:
    """Every 15 s over a week, cached answers equal fresh ones at samples and every change."""
    times, answers = sweep(sched, begin)
    changes = [i for i in range(1, len(times)) if answers[i] != answers[i - 1]]
    samples = set(range(0, len(times), 97)) | set(changes) | {i - 1 for i in changes}
    for i in sorted(samples):
        assert answers[i] == active(sched, times[i]), datetime.fromtimestamp(times[i], UTC)
    assert any(a is not None for a in answers)
    assert any(a is None for a in answers)


@pytest.mark.parametrize(("sched", "begin"), CACHE_CASES)
def test_cache_backwards_and_shuffled(sched: Schedule, begin: float) -> None:
    """Going back in time, or jumping around, gives the same answers as going forward."""
    times, answers = sweep(sched, begin)
    expected = dict(zip(times, answers, strict=True))
    backwards = ScheduleWindows(sched)
    for t in reversed(times):
        assert backwards.active(t) == expected[t]
    jumping = ScheduleWindows(sched)
    shuffled = random.Random(7).sample(times, 2000)
    for t in shuffled:
        assert jumping.active(t) == expected[t]
