"""The replica router against a real primary, a real streaming replica and PgBouncer.

Replay is paused on the replica (``paused_replay``) so that a row written on the primary is
missing on the replica for as long as the test needs: a read that returns the row came from
the primary (or a caught-up replica), a read that does not came from the stale replica.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from senex_scale.testing import wait_until

from .conftest import Stack, settle

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_setup")]

USER = 7001


def _insert_on_primary(stack: Stack, user_id: int, symbol: str) -> None:
    """A row written behind Django's back: nothing pins the test's context to the primary."""
    stack.primary_sql(
        "INSERT INTO trading_position (user_id, symbol, quantity, avg_price, status, updated_at)"
        " VALUES (%s, %s, 1, 1, 'open', now())",
        user_id,
        symbol,
    )


def _exists(user_id: int, symbol: str) -> bool:
    from trading.models import Position

    return Position.objects.filter(user_id=user_id, symbol=symbol).exists()


def _fresh_context(func: Any) -> Any:
    """Run ``func`` in a new thread: a new context (no pin) and its own DB connections."""
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


def test_reads_go_to_a_healthy_replica(paused_replay: Stack, router_config: Any) -> None:
    """Without a write in the context, a read is served by the (stale) replica."""
    from trading.models import Position

    router_config(MAX_LAG_SECONDS=3600)
    _insert_on_primary(paused_replay, USER, "RPL1")
    assert Position.objects.all().db == "replica"
    assert not _exists(USER, "RPL1")


def test_read_your_writes_while_replay_is_paused(paused_replay: Stack, router_config: Any) -> None:
    """A write, then a read in the same context, returns the new row; another context's
    read (replica, replay paused) does not see it yet."""
    from trading.models import Position

    from senex_scale.contrib.django.router import current_pin

    router = router_config(MAX_LAG_SECONDS=3600)
    Position.objects.create(user_id=USER, symbol="RYW1", quantity=Decimal(3))
    assert current_pin() is not None
    assert _exists(USER, "RYW1")
    assert Position.objects.all().db == "default"
    assert not _fresh_context(lambda: _exists(USER, "RYW1"))
    pin = current_pin()
    assert pin is not None
    assert pin.lsn is not None

    paused_replay.replica_sql("SELECT pg_wal_replay_resume()")
    paused_replay.wait_replayed()
    router.monitor.invalidate()
    assert _exists(USER, "RYW1")
    assert current_pin() == pin  # held until its time, whoever has caught up meanwhile
    assert Position.objects.all().db == "replica"  # it has replayed the write


def test_reads_inside_atomic_go_to_the_primary(paused_replay: Stack, router_config: Any) -> None:
    """Inside ``atomic()`` a read sees the primary's rows, outside it the replica's."""
    from django.db import transaction
    from trading.models import Position

    router_config(MAX_LAG_SECONDS=3600)
    _insert_on_primary(paused_replay, USER, "ATM1")
    assert not _exists(USER, "ATM1")
    with transaction.atomic():
        assert Position.objects.all().db == "default"
        assert _exists(USER, "ATM1")


def test_reads_fall_back_to_the_primary_when_the_replica_is_down(
    stack: Stack, router_config: Any
) -> None:
    """A stopped replica is skipped within one health TTL; reads keep working."""
    from trading.models import Position

    router = router_config()
    _insert_on_primary(stack, USER, "DWN1")
    stack.wait_replayed()
    assert Position.objects.all().db == "replica"
    stack.replica.stop()
    try:
        settle(0.3)
        assert _exists(USER, "DWN1")
        assert Position.objects.all().db == "default"
        (state,) = router.monitor.states()
        assert not state.healthy
        assert state.reason.startswith("down")
    finally:
        stack.replica.start()
    router.monitor.invalidate()
    wait_until(
        lambda: Position.objects.all().db == "replica", 30, "the restarted replica to be used"
    )


def test_a_replica_lagging_beyond_the_bound_is_skipped(
    paused_replay: Stack, router_config: Any
) -> None:
    """Replay paused for longer than MAX_LAG_SECONDS: reads go to the primary, with a reason."""
    from trading.models import Position

    router = router_config(MAX_LAG_SECONDS=1, PIN_SECONDS=2)
    _insert_on_primary(paused_replay, USER, "LAG1")
    settle(1.5)
    assert _exists(USER, "LAG1")
    (state,) = router.monitor.states()
    assert not state.healthy
    assert state.reason.startswith("lag")
    assert state.lag_bytes is not None
    assert state.lag_bytes > 0
    assert Position.objects.all().db == "default"


def test_replicas_added_to_the_registry_are_used_without_a_restart(
    stack: Stack, router_config: Any, tmp_path: Path
) -> None:
    """The router re-reads the registry file: a replica listed there gets reads."""
    from django.db import connections
    from trading.models import Position

    registry = tmp_path / "replicas.json"
    router = router_config(REPLICAS=[], REGISTRY=str(registry), INHERIT_PASSWORD=True)
    assert Position.objects.all().db == "default"  # no file yet: no replicas
    registry.write_text(
        json.dumps(
            {
                "version": 1,
                "replicas": [
                    {
                        "alias": "replica_added",
                        "host": "127.0.0.1",
                        "port": stack.bouncer.port,
                        "dbname": "senextrader_replica",
                    }
                ],
            }
        )
    )
    settle(0.3)
    assert Position.objects.all().db == "replica_added"
    # the primary's login: INHERIT_PASSWORD says so
    assert connections["replica_added"].settings_dict["PASSWORD"]
    assert Position.objects.count() >= 0
    registry.write_text(json.dumps({"version": 1, "replicas": []}))
    settle(0.3)
    assert Position.objects.all().db == "default"
    assert [s.alias for s in router.monitor.states()] == []


def test_the_pin_cookie_carries_read_your_writes_across_a_redirect(
    paused_replay: Stack, router_config: Any
) -> None:
    """POST a trade, follow the 303: the next page shows the trade; a client without the
    cookie reads the stale replica and does not."""
    from django.test import Client

    router_config(MAX_LAG_SECONDS=3600)
    client = Client()
    trade = {"user_id": USER + 1, "symbol": "CKE", "side": "buy", "quantity": "2", "price": "10"}
    response = client.post(
        "/api/trades/?redirect=1", json.dumps(trade), content_type="application/json"
    )
    assert response.status_code == 303
    assert "senex_pin" in response.cookies
    latest = f"/api/trades/latest/{USER + 1}/"
    assert [t["symbol"] for t in client.get(latest).json()["trades"]] == ["CKE"]
    assert Client().get(latest).json()["trades"] == []
