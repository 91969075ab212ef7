"""``senex-scale pgbouncer status`` against a real PgBouncer in transaction mode: with a pool
of one and a client waiting behind an open transaction, it recommends a bigger pool."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from senex_scale.lab import PgBouncer, Postgres

from .conftest import cli

pytestmark = pytest.mark.integration

APP_PASSWORD = "app-Secret-5e0c77"
ADMIN_PASSWORD = "admin-Secret-1d9a4b"


@pytest.fixture(scope="module")
def bouncer(primary: Postgres, workdir: Path) -> Iterator[PgBouncer]:
    primary.create_role("app", APP_PASSWORD)
    primary.create_database("pooled", owner="app")
    server = PgBouncer(
        workdir / "pgbouncer",
        databases={"pooled": f"host=127.0.0.1 port={primary.port} dbname=pooled pool_size=1"},
        users={"app": APP_PASSWORD, "admin": ADMIN_PASSWORD},
        admin_users=["admin"],
    )
    with server:
        yield server


def test_status_recommends_a_bigger_pool_when_a_client_waits(
    bouncer: PgBouncer, primary: Postgres
) -> None:
    """Idle: no recommendation. A transaction holds the only server connection and a second
    client waits: cl_waiting 1, and the advice is pool_size 1 -> 2, with the server's room."""
    admin = bouncer.admin_dsn("admin", ADMIN_PASSWORD)
    quiet = cli("pgbouncer", "status", "--dsn", admin, "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["recommendations"] == []

    client = bouncer.dsn("app", APP_PASSWORD, "pooled")
    holder = psycopg.connect(client)
    holder.execute("SELECT 1")  # opens a transaction: the pool's one server connection is held
    waited: list[float] = []

    def wait_for_server() -> None:
        start = time.monotonic()
        with psycopg.connect(client, autocommit=True) as conn:
            conn.execute("SELECT 1")
        waited.append(time.monotonic() - start)

    waiter = threading.Thread(target=wait_for_server)
    waiter.start()
    try:
        doc: dict = {}
        for _ in range(50):
            result = cli(
                "pgbouncer", "status", "--dsn", admin, "--server-dsn", primary.dsn(), "--json"
            )
            assert result.returncode == 0, result.stderr
            doc = json.loads(result.stdout)
            if doc["recommendations"]:
                break
            time.sleep(0.1)
        (pool,) = [p for p in doc["pools"] if p["database"] == "pooled"]
        assert pool["cl_waiting"] == 1
        assert pool["pool_size"] == 1
        assert pool["waiting"] is True
        (advice,) = doc["recommendations"]
        assert "pooled/app" in advice
        assert "raise pool_size" in advice
        assert "1 -> 2" in advice
        assert "the server has room" in advice
        assert doc["server"]["max_connections"] == 40
        text = cli("pgbouncer", "status", "--dsn", admin, "--server-dsn", primary.dsn())
        print(text.stdout)
        assert "recommendations:" in text.stdout
        assert "1 -> 2" in text.stdout
    finally:
        holder.rollback()
        holder.close()
        waiter.join(10)
    assert waited, "the waiting client never got its server connection"


def test_status_refuses_a_dsn_that_is_not_the_console(bouncer: PgBouncer) -> None:
    """--dsn must name the admin database: exit 2 naming the field, no password shown."""
    result = cli("pgbouncer", "status", "--dsn", bouncer.dsn("app", APP_PASSWORD, "pooled"))
    assert result.returncode == 2
    assert result.stderr.startswith("Error: --dsn:")
    assert APP_PASSWORD not in result.stderr
