"""senex_scale.lab: PostgreSQL (with a replica) and PgBouncer start, answer and stop."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from senex_scale.lab import LabError, PgBouncer, Postgres

pytestmark = pytest.mark.integration

PASSWORD = "lab-Secret-3e9a 'q\""
"""With a space and quotes: DSNs and URLs must quote it."""


def test_postgres_roles_replica_and_pgbouncer(
    root: Path, tree: Callable[..., Any], gone: Callable[..., bool]
) -> None:
    with Postgres(root / "primary", settings={"max_connections": "30"}) as pg:
        assert pg.alive
        assert not pg.is_replica
        pg.create_role("app", PASSWORD, member_of=["pg_monitor"])
        pg.create_database("appdb", owner="app")
        with psycopg.connect(pg.dsn("app", PASSWORD, "appdb")) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("30",)
        with psycopg.connect(pg.url("app", PASSWORD, "appdb")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(pg.dsn("app", "wrong", "appdb")).close()
        assert PASSWORD not in pg.log.read_text(errors="replace")

        replica = pg.replica(root / "replica", name="standby1")
        try:
            assert replica.is_replica
            with psycopg.connect(pg.dsn("app", PASSWORD, "appdb"), autocommit=True) as conn:
                conn.execute("CREATE TABLE t (x int)")
                conn.execute("INSERT INTO t VALUES (42)")
            with replica.connect() as conn:
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        finally:
            replica.stop()
        assert not replica.alive

        bouncer = PgBouncer(
            root / "pgbouncer",
            databases={"pooled": f"host=127.0.0.1 port={pg.port} dbname=appdb pool_size=1"},
            users={"app": PASSWORD, "stats": "stats-Secret-1"},
            stats_users=["stats"],
        )
        with bouncer:
            userlist = (bouncer.root / "userlist.txt").read_text()
            assert PASSWORD not in userlist
            assert "SCRAM-SHA-256$" in userlist
            assert stat.S_IMODE((bouncer.root / "userlist.txt").stat().st_mode) == 0o600
            with psycopg.connect(bouncer.dsn("app", PASSWORD)) as conn:
                assert conn.execute("SELECT x FROM t").fetchone() == (42,)
            with psycopg.connect(
                bouncer.admin_dsn("stats", "stats-Secret-1"), autocommit=True
            ) as c:
                pools = c.execute("SHOW POOLS").fetchall()
            assert any(row[0] == "pooled" for row in pools)
            processes = tree(bouncer)
        assert not bouncer.alive
        assert gone(processes)

        processes = tree(pg)
        pg.stop()
        assert gone(processes)
        pg.start()  # the cluster is kept: no second initdb
        with psycopg.connect(pg.dsn("app", PASSWORD, "appdb")) as conn:
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)
        processes = tree(pg)
        pg.kill()
        assert gone(processes)
        assert not pg.alive
    assert not pg.alive


def test_postgres_start_failure_has_the_log_tail(root: Path) -> None:
    pg = Postgres(root / "bad", settings={"shared_buffers": "lots"})
    with pytest.raises(LabError, match="exited") as raised:
        pg.start()
    assert "shared_buffers" in str(raised.value)
    assert not pg.alive


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres user is used only under root")
def test_postgres_refuses_a_root_its_user_cannot_reach(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(LabError, match="closed to the postgres user"):
        Postgres(private / "pg").start()
