"""``VersionedCache`` on real Redis (django-redis) with the router over a real replica.

Replay is paused on the replica, so any refill computed from the replica is stale: the
tests can tell a correct cache from one that re-cached old rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from .conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_setup")]


def _threads(target: Callable[[], None], count: int) -> list[threading.Thread]:
    def run() -> None:
        from django.db import connections

        try:
            target()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()


def _primary_positions(stack: Stack, user_id: int) -> list[dict[str, str]]:
    rows = stack.primary_sql(
        "SELECT symbol, quantity, avg_price, status FROM trading_position"
        " WHERE user_id = %s AND status = 'open' ORDER BY symbol",
        user_id,
    )
    return [
        {"symbol": s, "quantity": str(q), "avg_price": str(p), "status": st} for s, q, p, st in rows
    ]


def test_concurrent_writers_leave_the_cache_equal_to_the_primary(
    paused_replay: Stack, router_config: Any
) -> None:
    """4 writers x 10 trades and 4 readers refilling all along: afterwards the cached
    positions are the primary's, although every unpinned read hits the stale replica."""
    from trading import services

    router_config(MAX_LAG_SECONDS=3600)
    user = 8101
    errors: list[BaseException] = []
    done = threading.Event()
    reads = [0]

    def writer() -> None:
        try:
            for i in range(10):
                symbol = "AAA" if i % 2 else "BBB"
                services.record_trade(user, symbol, "buy", Decimal(1), Decimal(10 + i))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not done.is_set():
                services.positions_of(user)
                reads[0] += 1
        except BaseException as exc:
            errors.append(exc)

    readers = _threads(reader, 4)
    writers = _threads(writer, 4)
    _join(writers)
    done.set()
    _join(readers)
    assert not errors
    assert reads[0] > 10
    expected = _primary_positions(paused_replay, user)
    assert [p["quantity"] for p in expected] == ["20.0000", "20.0000"]
    cached: list[Any] = []
    _join(_threads(lambda: cached.append(services.positions_of(user)), 1))
    assert cached == [expected]
    # ...while the replica still has none of it: the refills did not come from there.
    assert paused_replay.replica_sql(
        "SELECT count(*) FROM trading_position WHERE user_id = %s", user
    ) == [(0,)]


def test_the_seed_pattern_recaches_stale_replica_rows(
    paused_replay: Stack, router_config: Any
) -> None:
    """Control: delete-then-refill (the seed's pattern) caches the replica's old rows after
    a write, in the very setup the previous test passes in."""
    from django.core.cache import cache
    from trading.models import Position

    router_config(MAX_LAG_SECONDS=3600)
    user = 8102
    key = f"positions:user:{user}"
    Position.objects.create(user_id=user, symbol="OLD", quantity=Decimal(1))
    cache.delete(key)  # the seed's invalidation, right after the save

    def seed_reader() -> None:  # the seed's get_user_positions, in another request
        if cache.get(key) is None:
            cache.set(key, list(Position.objects.filter(user_id=user).values("symbol")), 120)

    _join(_threads(seed_reader, 1))
    assert cache.get(key) == []  # stale: the primary has the row, the cache says none
    assert Position.objects.filter(user_id=user).count() == 1


def test_one_reader_computes_a_missing_entry(django_setup: Stack) -> None:
    """16 readers miss the same entry at once: the query runs once, all get its result."""
    from senex_scale.contrib.django.cache import VersionedCache

    positions = VersionedCache("stampede", lock_timeout=10)
    calls: list[int] = []
    results: list[Any] = []
    lock = threading.Lock()

    def compute() -> list[str]:
        with lock:
            calls.append(1)
        time.sleep(0.5)
        return ["computed"]

    _join(_threads(lambda: results.append(positions.get_or_set(42, compute)), 16))
    assert len(calls) == 1
    assert results == [["computed"]] * 16


def test_invalidation_happens_on_commit_only(django_setup: Stack) -> None:
    """Inside atomic() the version holds until COMMIT; a rollback leaves it alone."""
    from django.db import transaction

    from senex_scale.contrib.django.cache import VersionedCache

    positions = VersionedCache("commit")
    before = positions.version(1)
    with transaction.atomic():
        positions.invalidate(1)
        assert positions.version(1) == before
    assert positions.version(1) == before + 1

    def roll_back() -> None:
        with transaction.atomic():
            positions.invalidate(1)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        roll_back()
    assert positions.version(1) == before + 1
