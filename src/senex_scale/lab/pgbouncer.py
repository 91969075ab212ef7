"""PgBouncer on loopback in front of lab (or any) PostgreSQL servers.

``users`` go to ``userlist.txt`` (mode 0600) as SCRAM-SHA-256 verifiers made like the lab's
PostgreSQL makes them (``scram_verifier``), so a client's SCRAM login passes through to a
server whose role has the same password. Runs as ``postgres`` when the lab runs as root.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from senex_scale.lab.base import HOST, Server, binary, write_secret
from senex_scale.lab.postgres import dsn, scram_verifier


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgBouncer(Server):
    """One ``pgbouncer`` process with its generated ini; no ``[databases]`` wildcard."""

    name = "pgbouncer"
    stop_signal = signal.SIGTERM
    """Immediate shutdown in 1.18 (SIGINT would wait for clients)."""
    run_as = "postgres"

    def __init__(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        databases: Mapping[str, str],
        users: Mapping[str, str],
        pool_mode: str = "transaction",
        admin_users: Iterable[str] = (),
        stats_users: Iterable[str] = (),
        settings: Mapping[str, str] = {},
    ) -> None:
        """``databases``: name -> libpq fragment (``"host=127.0.0.1 port=5433 dbname=app"``,
        ``pool_size=`` and the like allowed); ``users``: name -> password; ``settings``: more
        ``[pgbouncer]`` lines (``default_pool_size``, ``max_client_conn``, ...)."""
        super().__init__(root, port)
        self.databases = dict(databases)
        self.users = dict(users)
        self.pool_mode = pool_mode
        self.admin_users = list(admin_users)
        self.stats_users = list(stats_users)
        self.settings = dict(settings)

    @property
    def ini(self) -> Path:
        return self.root / "pgbouncer.ini"

    def dsn(self, user: str, password: str | None = None, dbname: str | None = None) -> str:
        """A DSN through the pooler (``dbname`` defaults to the first database)."""
        return dsn(self.port, user, password, dbname or next(iter(self.databases)))

    def admin_dsn(self, user: str, password: str | None = None) -> str:
        """A DSN for the admin console (database ``pgbouncer``): ``SHOW POOLS`` and the like."""
        return dsn(self.port, user, password, "pgbouncer")

    def _prepare(self) -> None:
        userlist = write_secret(
            self.root / "userlist.txt",
            "".join(
                f"{_quoted(user)} {_quoted(scram_verifier(user, password))}\n"
                for user, password in self.users.items()
            ),
        )
        settings = {
            "listen_addr": HOST,
            "listen_port": str(self.port),
            "unix_socket_dir": str(self.root),
            "auth_type": "scram-sha-256",
            "auth_file": str(userlist),
            "pool_mode": self.pool_mode,
            "admin_users": ",".join(self.admin_users),
            "stats_users": ",".join(self.stats_users),
            **self.settings,
        }
        lines = ["[databases]"]
        lines += [f"{name} = {fragment}" for name, fragment in self.databases.items()]
        lines += ["", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        write_secret(self.ini, "\n".join(lines) + "\n")
        self._own(userlist, self.ini)

    def _argv(self) -> list[str]:
        return [binary("pgbouncer", Path("/usr/sbin/pgbouncer")), str(self.ini)]

    def _ready(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=1):
            return True
