"""PostgreSQL on loopback: ``initdb`` on first start, SCRAM roles, streaming replicas.

The superuser ``postgres`` logs in without a password (trust), from loopback and the lab's
socket directory only; every other role uses SCRAM-SHA-256, for databases and for
replication. Role passwords reach the server only as SCRAM verifiers (``scram_verifier``),
never as text in a statement or a log. When the lab runs as root the server runs as the
``postgres`` user (PostgreSQL refuses root); ``root`` is handed to it.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from senex_scale.lab.base import HOST, LabError, Server
from senex_scale.render.scram import scram_secret

SUPERUSER = "postgres"
DEFAULT_SETTINGS: Mapping[str, str] = {
    "shared_buffers": "32MB",
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "wal_keep_size": "64MB",
    "log_min_messages": "warning",
}
"""What the lab changes from PostgreSQL's defaults (``settings=`` overrides any of them): a
small, fast, throwaway cluster that can feed replicas."""

SCRAM_ITERATIONS = 4096


def _pg_bin() -> Path:
    """The newest installed server's bin directory."""

    def version(path: Path) -> tuple[int, str]:
        name = path.parts[-3]
        return (int(name), name) if name.isdigit() else (0, name)

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=version)
    if not found:
        raise LabError("PostgreSQL is not installed (scripts/services installs the lab's servers)")
    return found[-1].parent


def scram_verifier(user: str, password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (``render.scram``).

    The salt is derived from user and password, so the lab's PostgreSQL (``create_role``) and
    PgBouncer (``userlist.txt``) hold the same verifier, which PgBouncer needs to pass a
    client's SCRAM login through to the server. Fine for a loopback lab; never for real."""
    salt = hashlib.sha256(f"senex-lab\0{user}\0{password}".encode()).digest()[:16]
    return scram_secret(password, salt=salt, iterations=iterations)


def dsn(
    port: int, user: str = SUPERUSER, password: str | None = None, dbname: str = "postgres"
) -> str:
    """A key=value DSN for a loopback server (values quoted as libpq wants)."""
    params: dict[str, Any] = {"host": HOST, "port": port, "user": user, "dbname": dbname}
    if password is not None:
        params["password"] = password
    return make_conninfo(**params, connect_timeout=3)


class Postgres(Server):
    """One PostgreSQL cluster (``root/data``) served on ``127.0.0.1:port``."""

    name = "postgres"
    stop_signal = signal.SIGINT
    """Fast shutdown: transactions are rolled back, clients disconnected."""
    ready_timeout = 30.0
    not_yet: ClassVar[tuple[type[BaseException], ...]] = (psycopg.OperationalError,)
    run_as = "postgres"

    def __init__(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        settings: Mapping[str, str] = {},
        hba: Sequence[str] = (),
    ) -> None:
        super().__init__(root, port)
        self.settings = dict(settings)
        self.hba = list(hba)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def is_replica(self) -> bool:
        return (self.datadir / "standby.signal").exists()

    # ------------------------------------------------------------------ connecting

    def dsn(
        self, user: str = SUPERUSER, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        return dsn(self.port, user, password, dbname)

    def url(
        self, user: str = SUPERUSER, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection (trust over loopback), autocommit; the caller closes it."""
        return psycopg.connect(self.dsn(dbname=dbname), autocommit=True, **kwargs)

    # ------------------------------------------------------------------ roles and databases

    def create_role(
        self,
        name: str,
        password: str,
        *,
        superuser: bool = False,
        replication: bool = False,
        member_of: Iterable[str] = (),
    ) -> None:
        """``CREATE ROLE name LOGIN`` with a SCRAM password (sent as its verifier only)."""
        parts: list[sql.Composable] = [sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name))]
        if superuser:
            parts.append(sql.SQL("SUPERUSER"))
        if replication:
            parts.append(sql.SQL("REPLICATION"))
        parts.append(sql.SQL("PASSWORD {}").format(sql.Literal(scram_verifier(name, password))))
        roles = list(member_of)
        if roles:
            parts.append(
                sql.SQL("IN ROLE {}").format(sql.SQL(", ").join(map(sql.Identifier, roles)))
            )
        with self.connect() as conn:
            conn.execute(sql.SQL(" ").join(parts))

    def create_database(self, name: str, owner: str | None = None) -> None:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner is not None:
            statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        with self.connect() as conn:
            conn.execute(statement)

    # ------------------------------------------------------------------ replicas

    def replica(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        name: str | None = None,
        settings: Mapping[str, str] = {},
    ) -> Self:
        """A streaming hot standby of this (started) primary, of the same class, made with
        ``pg_basebackup -R``, returned started once the primary sees it streaming. ``name`` is
        its ``cluster_name`` and so its ``application_name`` in ``pg_stat_replication``
        (default ``replica-PORT``); its settings are this server's, then ``settings``."""
        if not self.alive:
            raise LabError(f"postgres on {self.address}: start the primary before a replica")
        standby = type(self)(root, port, settings=self.settings, hba=self.hba)
        standby_name = name or f"replica-{standby.port}"
        standby.settings.update(cluster_name=standby_name, **settings)
        standby.root.mkdir(parents=True, exist_ok=True)
        standby._own(standby.root)
        source = ["-h", HOST, "-p", str(self.port), "-U", SUPERUSER]
        options = ["-R", "-X", "stream", "-c", "fast", "--no-sync"]
        standby._run(
            [str(_pg_bin() / "pg_basebackup"), "-D", str(standby.datadir), *source, *options]
        )
        standby.start()
        try:
            deadline = time.monotonic() + self.ready_timeout
            query = (
                "SELECT 1 FROM pg_stat_replication"
                " WHERE application_name = %s AND state = 'streaming'"
            )
            with self.connect() as conn:
                while conn.execute(query, [standby_name]).fetchone() is None:
                    if time.monotonic() > deadline:
                        raise LabError(
                            f"replica {standby_name} is not streaming; {standby._log_tail()}"
                        )
                    time.sleep(0.1)
        except BaseException:
            standby.stop()
            raise
        return standby

    # ------------------------------------------------------------------ Server

    def _prepare(self) -> None:
        if not (self.datadir / "PG_VERSION").exists():
            initdb = [str(_pg_bin() / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER]
            self._run([*initdb, "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
            hba = self.datadir / "pg_hba.conf"
            hba.write_text(
                "\n".join(
                    [
                        *self.hba,
                        f"local all {SUPERUSER} trust",
                        f"local replication {SUPERUSER} trust",
                        f"host all {SUPERUSER} {HOST}/32 trust",
                        f"host replication {SUPERUSER} {HOST}/32 trust",
                        f"host all all {HOST}/32 scram-sha-256",
                        f"host replication all {HOST}/32 scram-sha-256",
                        "",
                    ]
                )
            )
            self._own(hba)

    def _argv(self) -> list[str]:
        argv = [str(_pg_bin() / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        fixed = {"listen_addresses": HOST, "unix_socket_directories": str(self.root)}
        for key, value in (dict(DEFAULT_SETTINGS) | self.settings | fixed).items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self.root)}

    def _ready(self) -> bool:
        with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
