"""PostgreSQL primary and replica run on their rendered settings and replicate; PgBouncer runs
on its rendered ini and userlist and lets the SCRAM user in (and no one else)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from senex_scale.lab import LabError

pytestmark = pytest.mark.integration

USER = "senex_user"
DB = "senextrader"


@pytest.fixture(scope="module")
def cluster(deployment: Any, launchers: Any) -> Iterator[tuple[Any, Any]]:
    """The primary (db01) with roles.sql applied, and the replica (db02) streaming from it."""
    primary = launchers.postgres(
        deployment.root / "pg-db01",
        deployment.ports["db01"]["postgres"],
        conf=deployment.file("db01", "postgresql/postgresql.conf"),
        hba=deployment.file("db01", "postgresql/pg_hba.conf"),
    )
    replica = launchers.postgres(
        deployment.root / "pg-db02",
        deployment.ports["db02"]["postgres"],
        conf=deployment.file("db02", "postgresql/postgresql.conf"),
        hba=deployment.file("db02", "postgresql/pg_hba.conf"),
        primary=primary,
        replication=("replicator", deployment.secrets["SENEX_REPLICATION_PASSWORD"]),
    )
    try:
        primary.start()
        primary.psql_file(deployment.file("db01", "postgresql/roles.sql"))
        replica.start()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def connect(port: int, password: str, dbname: str = DB) -> psycopg.Connection[Any]:
    """A connection as the application user over TCP (SCRAM, as the rendered pg_hba says)."""
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=USER,
        password=password,
        dbname=dbname,
        connect_timeout=5,
        autocommit=True,
    )


def test_replica_streams_from_the_primary(deployment: Any, cluster: tuple[Any, Any]) -> None:
    """A row written on the primary shows up on the replica, which is in recovery on its slot."""
    primary, replica = cluster
    password = deployment.secrets["SENEX_DB_PASSWORD"]
    with connect(primary.port, password) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS trades (id int PRIMARY KEY, symbol text)")
        conn.execute("INSERT INTO trades VALUES (1, 'SPY') ON CONFLICT DO NOTHING")
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('wal_level', 'max_wal_senders', 'wal_keep_size', 'password_encryption')"
            ).fetchall()
        )
    assert settings == {
        "wal_level": "replica",
        "max_wal_senders": "5",
        "wal_keep_size": "1024",
        "password_encryption": "scram-sha-256",
    }
    deadline = time.monotonic() + 30
    with connect(replica.port, password) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        while True:
            row = None
            if conn.execute("SELECT to_regclass('trades')").fetchone() != (None,):
                row = conn.execute("SELECT symbol FROM trades WHERE id = 1").fetchone()
            if row == ("SPY",):
                break
            assert time.monotonic() < deadline, "the row never reached the replica"
            time.sleep(0.2)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO trades VALUES (2, 'QQQ')")


def test_replica_uses_its_slot(deployment: Any, cluster: tuple[Any, Any]) -> None:
    """The slot roles.sql made for db02 is active: the primary keeps the WAL db02 needs."""
    primary, _ = cluster
    with connect(primary.port, deployment.secrets["SENEX_DB_PASSWORD"]) as conn:
        rows = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
    deadline = time.monotonic() + 20
    while rows != [("db02", True)] and time.monotonic() < deadline:
        time.sleep(0.2)
        with connect(primary.port, deployment.secrets["SENEX_DB_PASSWORD"]) as conn:
            rows = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
    assert rows == [("db02", True)]


def test_wrong_password_is_refused(deployment: Any, cluster: tuple[Any, Any]) -> None:
    """SCRAM really checks: a wrong password does not get in."""
    primary, _ = cluster
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(primary.port, "not-the-password").close()


@pytest.fixture(scope="module")
def pgbouncer(deployment: Any, cluster: tuple[Any, Any], launchers: Any) -> Iterator[Any]:
    """PgBouncer on db01's rendered pgbouncer.ini and userlist.txt."""
    bouncer = launchers.pgbouncer(
        deployment.paths["pgbouncer"],
        deployment.ports["db01"]["pgbouncer"],
        ini=deployment.file("db01", "pgbouncer/pgbouncer.ini"),
        userlist=deployment.file("db01", "pgbouncer/userlist.txt"),
    )
    try:
        bouncer.start()
    except LabError as exc:
        pytest.fail(str(exc))
    yield bouncer
    bouncer.stop()


def test_login_through_pgbouncer_as_the_scram_user(deployment: Any, pgbouncer: Any) -> None:
    """The SCRAM user logs in through PgBouncer to the primary (pass-through with the
    rendered secret) and runs queries in transaction pooling."""
    password = deployment.secrets["SENEX_DB_PASSWORD"]
    with connect(pgbouncer.port, password) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (USER, DB)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert conn.execute("SELECT count(*) FROM trades").fetchone() is not None


def test_pgbouncer_reaches_the_replica_alias(deployment: Any, pgbouncer: Any) -> None:
    """The ``senextrader_db02`` database of pgbouncer.ini is the replica (reads)."""
    password = deployment.secrets["SENEX_DB_PASSWORD"]
    with connect(pgbouncer.port, password, dbname=f"{DB}_db02") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_pgbouncer_refuses_a_wrong_password(deployment: Any, pgbouncer: Any) -> None:
    """PgBouncer checks the password against the userlist's SCRAM secret itself."""
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
        connect(pgbouncer.port, "not-the-password").close()


def test_stats_user_reads_pgbouncer_pools(deployment: Any, pgbouncer: Any) -> None:
    """The rendered stats_users entry works: the monitor user runs SHOW POOLS on the console."""
    with connect(pgbouncer.port, deployment.secrets["SENEX_DB_PASSWORD"]) as app:
        app.execute("SELECT 1")  # so the pool exists
    conn = psycopg.connect(
        host="127.0.0.1",
        port=pgbouncer.port,
        user="senex_monitor",
        password=deployment.secrets["SENEX_MONITOR_PASSWORD"],
        dbname="pgbouncer",
        connect_timeout=5,
        autocommit=True,
        prepare_threshold=None,
    )
    with conn:
        cur = conn.cursor()
        cur.execute("SHOW POOLS")
        columns = [c.name for c in cur.description or []]
        pools = {(row[columns.index("database")], row[columns.index("user")]) for row in cur}
    assert (DB, USER) in pools


def test_monitor_role_is_in_pg_monitor(deployment: Any, cluster: tuple[Any, Any]) -> None:
    """roles.sql grants pg_monitor to the user marked monitor = true, and only to it."""
    primary, _ = cluster
    with connect(primary.port, deployment.secrets["SENEX_DB_PASSWORD"]) as conn:
        rows = conn.execute(
            "SELECT rolname, pg_has_role(rolname, 'pg_monitor', 'member') FROM pg_roles "
            "WHERE rolname IN ('senex_user', 'senex_monitor') ORDER BY rolname"
        ).fetchall()
    assert rows == [("senex_monitor", True), ("senex_user", False)]
