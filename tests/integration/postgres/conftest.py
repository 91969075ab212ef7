"""Real servers for the PostgreSQL and PgBouncer source tests, started once per session.

Through ``senex_scale.lab`` (docs/lab.md): a primary with ``monitor`` (pg_monitor) and ``app``
SCRAM roles, a streaming replica named ``replica1`` and PgBouncers in transaction mode, all on
free loopback ports in one ``lab_dir()`` (as root the servers run as ``postgres``, which cannot
enter pytest's own temporary directories). Everything is stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from senex_scale import lab
from senex_scale.lab import free_port, temporary_lab_dir

MONITOR_PASSWORD = "mon-Secret-4f1c9a"
"""Password of ``monitor`` (pg_monitor): the sources log in with it."""
APP_PASSWORD = "app-Secret-77d2e0"
"""Password of ``app``, the role clients of the pooled database use."""
STATS_PASSWORD = "stats-Secret-0b83f5"
"""Password of PgBouncer's ``stats`` user (``stats_users``)."""
ADMIN_PASSWORD = "admin-Secret-c61a2d"
"""Password of PgBouncer's ``admin`` user (``admin_users``)."""

POOLED_SIZE = 1
"""``pool_size`` of PgBouncer's ``pooled`` database: a second client in a transaction waits."""
OTHER_SIZE = 4
"""``pool_size`` of PgBouncer's ``other`` database, to show the ``database`` filter."""
MAX_CONNECTIONS = 40


class PgServer(lab.Postgres):
    """The lab's Postgres and the DSNs the tests log in with."""

    # Test modules cannot import this file (--import-mode=importlib): they read these instead.
    monitor_password: ClassVar[str] = MONITOR_PASSWORD
    max_connections: ClassVar[int] = MAX_CONNECTIONS

    def monitor_dsn(self, password: str | None = MONITOR_PASSWORD) -> str:
        """How the sources log in: ``monitor`` (pg_monitor) with SCRAM."""
        return self.dsn("monitor", password)

    def app_dsn(self) -> str:
        """``app``: SCRAM too, but no pg_monitor (sees no details of other users' sessions)."""
        return self.dsn("app", APP_PASSWORD)

    def backend_pids(self, application_name: str) -> list[int]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                [application_name],
            ).fetchall()
        return [row[0] for row in rows]


class PgBouncer(lab.PgBouncer):
    """The lab's PgBouncer with the tests' users."""

    pooled_size: ClassVar[int] = POOLED_SIZE
    stats_password: ClassVar[str] = STATS_PASSWORD
    other_size: ClassVar[int] = OTHER_SIZE

    def admin_dsn(self, user: str = "stats", password: str | None = STATS_PASSWORD) -> str:
        return super().admin_dsn(user, password)

    def client_dsn(self, dbname: str = "pooled") -> str:
        return self.dsn("app", APP_PASSWORD, dbname)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with temporary_lab_dir("senex-pg-") as path:
        yield path


@pytest.fixture(scope="session")
def primary(workdir: Path) -> Iterator[PgServer]:
    """The primary, with ``monitor`` (pg_monitor) and ``app`` password roles."""
    with PgServer(workdir / "primary", settings={"max_connections": str(MAX_CONNECTIONS)}) as pg:
        pg.create_role("monitor", MONITOR_PASSWORD, member_of=["pg_monitor"])
        pg.create_role("app", APP_PASSWORD)
        with pg.connect() as conn:
            conn.execute("CREATE TABLE lag_probe (id bigserial PRIMARY KEY, filler text)")
            conn.execute("GRANT ALL ON lag_probe TO app")
        yield pg


@pytest.fixture(scope="session")
def replica(primary: PgServer, workdir: Path) -> Iterator[PgServer]:
    """A streaming hot standby named ``replica1``, reporting its replay position every second."""
    settings = {"wal_receiver_status_interval": "1"}
    server = primary.replica(workdir / "replica", name="replica1", settings=settings)
    with server:
        yield server


def _bouncer(primary: PgServer, root: Path) -> Iterator[PgBouncer]:
    server = f"host=127.0.0.1 port={primary.port} dbname=postgres"
    with PgBouncer(
        root,
        databases={
            "pooled": f"{server} pool_size={POOLED_SIZE}",
            "other": f"{server} pool_size={OTHER_SIZE}",
        },
        users={"app": APP_PASSWORD, "stats": STATS_PASSWORD, "admin": ADMIN_PASSWORD},
        admin_users=["admin"],
        stats_users=["stats"],
        settings={"default_pool_size": "2", "max_client_conn": "50"},
    ) as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def pgbouncer(primary: PgServer, workdir: Path) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode: ``pooled`` (pool_size 1) and ``other`` (pool_size 4)."""
    yield from _bouncer(primary, workdir / "pgbouncer")


@pytest.fixture
def spare_pgbouncer(primary: PgServer, workdir: Path) -> Iterator[PgBouncer]:
    """A PgBouncer of the test's own, for tests that stop or freeze it."""
    yield from _bouncer(primary, workdir / f"pgbouncer-{free_port()}")
