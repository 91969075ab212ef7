"""``pgbouncer status``'s recommendation for a pool whose clients wait."""

from __future__ import annotations

from senex_scale.ops.pgbouncer import Pool, ServerRoom, recommend


def pool(waiting: int = 0, maxwait: float = 0.0, size: int = 10) -> Pool:
    return Pool("app", "u", "transaction", 10, waiting, size, 0, 0, maxwait, size)


def test_nobody_waits_no_advice() -> None:
    assert recommend(pool(), ServerRoom(100, 3, 20)) is None


def test_room_on_the_server_raise_the_pool() -> None:
    """Grow by the waiting clients or half the pool, whichever is more, while there is room."""
    advice = recommend(pool(waiting=3), ServerRoom(100, 3, 20))
    assert advice is not None
    assert "raise pool_size (or default_pool_size) 10 -> 15" in advice
    assert "77 of 100" in advice


def test_maxwait_alone_counts_as_waiting() -> None:
    advice = recommend(pool(maxwait=2.5), None)
    assert advice is not None
    assert "longest 2.5s" in advice
    assert "--server-dsn" in advice


def test_some_room_raise_what_fits_and_add_a_replica() -> None:
    advice = recommend(pool(waiting=8), ServerRoom(40, 3, 34))
    assert advice is not None
    assert "10 -> 13" in advice
    assert "add a read replica" in advice


def test_server_full_add_a_replica() -> None:
    advice = recommend(pool(waiting=1), ServerRoom(40, 3, 37))
    assert advice is not None
    assert "the server is full" in advice
    assert "replica add" in advice
