"""PgBouncer's SHOW CLIENTS / SHOW SERVERS as metrics (``sources.pgbouncer``), with the
session's real PgBouncer (transaction mode, pool size 10) made to queue clients: ten
transactions hold every server connection, an eleventh client waits."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from senex_scale.policy.models import Metric
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.pgbouncer import PgBouncerSource
from senex_scale.testing import wait_until

from .conftest import APP_PASSWORD, Stack

pytestmark = pytest.mark.integration


def _value(src: PgBouncerSource, query: str) -> dict[str | None, float]:
    samples = src.query(MetricRequest(rule="r", metric=Metric(source="b", query=query)), 0.0)
    return {s.instance: s.value for s in samples}


@contextlib.contextmanager
def _queue(stack: Stack) -> Iterator[threading.Thread]:
    """Ten open transactions (every server of the pool) and an eleventh client waiting."""
    dsn = stack.bouncer.dsn("app", APP_PASSWORD, "senextrader")
    holders = [psycopg.connect(dsn, prepare_threshold=None) for _ in range(10)]
    for conn in holders:
        conn.execute("SELECT 1")  # a transaction is open: the server stays with it
    waiter = threading.Thread(target=lambda: psycopg.connect(dsn, autocommit=True).execute(
        "SELECT 1").connection.close())  # fmt: skip
    try:
        waiter.start()
        yield waiter
    finally:
        for conn in holders:
            conn.rollback()
            conn.close()
        waiter.join(30)


def test_waiting_clients_and_their_wait_are_metrics(stack: Stack) -> None:
    """While the pool is exhausted: servers_active 10, a client waiting for > 0.5 s on
    average, per pool "senextrader/app"; afterwards no one waits."""
    options: dict[str, Any] = {
        "dsn": stack.bouncer.admin_dsn("app", APP_PASSWORD),
        "database": "senextrader",
    }
    src = PgBouncerSource("b", options)
    per_pool = PgBouncerSource("b", {**options, "per_pool": True})
    try:
        with _queue(stack):
            wait_until(
                lambda: _value(src, "client_wait_avg_seconds")[None] > 0.5,
                10,
                "a client to wait half a second",
            )
            assert _value(src, "servers_active") == {None: 10.0}
            assert _value(src, "clients")[None] >= 11
            assert _value(src, "clients_waiting")[None] >= 1
            waits = _value(per_pool, "client_wait_avg_seconds")
            assert waits["senextrader/app"] > 0.5
        time.sleep(0.2)
        wait_until(
            lambda: _value(src, "client_wait_avg_seconds") == {None: 0.0}, 10, "no one to wait"
        )
        assert _value(src, "servers_active") == {None: 0.0}
        assert _value(src, "servers_idle")[None] >= 1
    finally:
        src.close()
        per_pool.close()
