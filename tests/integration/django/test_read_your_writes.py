"""The router's read-your-writes guarantee where it used to break (issue 18), against a real
primary and real streaming replicas.

Each test makes one of the conditions under which a read could return a state older than
the reader's own last write: a replica whose WAL receiver is cut (it replays nothing new but
answers), a replica that comes back behind a write the context made while it was away, a pin
handed over inside ``atomic()`` before the COMMIT, and writes made around the middleware.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from senex_scale.lab import Postgres
from senex_scale.testing import wait_until

from .conftest import Stack, receiver_cut, replica_b_entry, wait_replayed_on

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_setup")]

USER = 7101


def _in_fresh_context(func: Callable[[], Any]) -> Any:
    """Run ``func`` in a new thread: no pin of this context, its own connections."""
    result: list[Any] = []

    def run() -> None:
        from django.db import connections

        try:
            result.append(func())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert result, "the read in the fresh context failed"
    return result[0]


def _count(user_id: int) -> int:
    from trading.models import Position

    return Position.objects.filter(user_id=user_id).count()


def test_a_replica_whose_receiver_is_cut_is_not_read_once_behind(
    stack: Stack, router_config: Any
) -> None:
    """Receiver cut, 1000 rows written: the replica is judged behind (not 0 s), reads see all."""
    router = router_config(MAX_LAG_SECONDS=1, PIN_SECONDS=3)
    stack.wait_replayed()
    with receiver_cut(stack.replica):
        stack.primary_sql(
            "INSERT INTO trading_position (user_id, symbol, quantity, avg_price, status,"
            " updated_at) SELECT %s, 'C' || i, 1, 1, 'open', now()"
            " FROM generate_series(1, 1000) AS i",
            USER,
        )
        time.sleep(1.5)  # longer than MAX_LAG_SECONDS since the write
        router.monitor.invalidate()
        assert _in_fresh_context(lambda: _count(USER)) == 1000
        (state,) = router.monitor.states()
        assert not state.healthy, state
        assert state.reason.startswith("lag"), state.reason
        assert state.lag_seconds is not None
        assert state.lag_seconds > 1
    stack.wait_replayed()


def test_a_replica_back_behind_the_write_does_not_serve_the_pinned_context(
    stack: Stack, replica_b: Postgres, router_config: Any
) -> None:
    """replica_b down during a write that replica A replays; back within the lag bound but
    behind the write (receiver cut): the writer's reads still see the write."""
    from decimal import Decimal

    from trading.models import Position

    router = router_config(
        REPLICAS=["replica", replica_b_entry(replica_b)], MAX_LAG_SECONDS=3600, PIN_SECONDS=30
    )
    router._choose = lambda aliases: "replica_b" if "replica_b" in aliases else aliases[0]
    stack.wait_replayed()
    wait_replayed_on(stack, replica_b)
    assert [s.healthy for s in router.monitor.states()] == [True, True]
    with receiver_cut(replica_b):
        replica_b.stop()
        Position.objects.create(user_id=USER + 1, symbol="BACK", quantity=Decimal(1))
        stack.wait_replayed()
        router.monitor.invalidate()
        assert Position.objects.filter(user_id=USER + 1, symbol="BACK").exists()
        replica_b.start()
        router.monitor.invalidate()
        wait_until(
            lambda: [s.healthy for s in router.monitor.states()] == [True, True],
            30,
            "replica_b to be healthy again (within the lag bound, behind the write)",
        )
        with replica_b.connect(dbname="senextrader") as conn:
            row = conn.execute(
                "SELECT count(*) FROM trading_position WHERE symbol = 'BACK'"
            ).fetchone()
        assert row == (0,), "replica_b must still be behind the write for this test"
        for _ in range(5):
            assert Position.objects.filter(user_id=USER + 1, symbol="BACK").exists()
            router.monitor.invalidate()
    wait_replayed_on(stack, replica_b)


def test_a_pin_handed_over_inside_atomic_is_not_before_the_commit(
    stack: Stack, router_config: Any
) -> None:
    """A task published inside ``atomic()`` (and ``resolve_pin()`` there) gets no LSN from
    before the COMMIT: a replica at that LSN may have the inserts but not the commit."""
    from celery import signals
    from django.db import transaction
    from trading.models import Position

    from senex_scale.contrib.django.router import HEADER, Pin, install_celery, parse_lsn

    router = router_config(MAX_LAG_SECONDS=3600)
    install_celery()
    headers: dict[str, Any] = {}
    with transaction.atomic():
        Position.objects.bulk_create(
            Position(user_id=USER + 2, symbol=f"A{i}", quantity=1) for i in range(50)
        )
        signals.before_task_publish.send(
            sender="trading.tasks.recalculate_account", headers=headers
        )
        resolved = router.resolve_pin()
    (after,) = stack.primary_sql("SELECT pg_current_wal_lsn()::text")[0]
    commit_end = parse_lsn(after)
    for pin in (Pin.from_token(headers.get(HEADER)), resolved):
        assert pin is not None
        assert pin.lsn is None or pin.lsn >= commit_end, (pin, after)


def test_with_autocommit_off_reads_and_pins_stay_on_the_primary(
    paused_replay: Stack, router_config: Any
) -> None:
    """A transaction opened by ``set_autocommit(False)`` is a transaction too: its reads go
    to the primary and a pin taken in it stays pending."""
    from decimal import Decimal

    from django.db import transaction
    from trading.models import Position

    router = router_config(MAX_LAG_SECONDS=3600)
    transaction.set_autocommit(False)
    try:
        Position.objects.create(user_id=USER + 3, symbol="AUTO", quantity=Decimal(1))
        assert Position.objects.all().db == "default"
        assert Position.objects.filter(user_id=USER + 3, symbol="AUTO").exists()
        pin = router.resolve_pin()
        assert pin is not None
        assert pin.lsn is None
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert Position.objects.filter(user_id=USER + 3, symbol="AUTO").exists()


def test_writes_of_a_middleware_outside_the_pin_middleware_are_flagged() -> None:
    """A middleware listed before ReadYourWritesMiddleware (its writes are not carried to the
    next request) is a system check warning; the known database-free ones are not."""
    from senex_scale.contrib.django.checks import check_middleware

    rywm = "senex_scale.contrib.django.router.ReadYourWritesMiddleware"
    session = "django.contrib.sessions.middleware.SessionMiddleware"
    ok = [
        "senex_scale.contrib.django.metrics.MetricsMiddleware",
        "django.middleware.security.SecurityMiddleware",
        rywm,
        session,
    ]
    assert check_middleware(ok) == []
    (message,) = check_middleware([session, rywm])
    assert message.id == "senex_scale.W014"
    assert session in message.msg


def test_the_reference_app_passes_the_middleware_check() -> None:
    """The demo's MIDDLEWARE puts the pin middleware before anything that can write."""
    from django.conf import settings

    from senex_scale.contrib.django.checks import check_middleware

    assert check_middleware(settings.MIDDLEWARE) == []
