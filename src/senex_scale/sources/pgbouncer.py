"""PgBouncer as a metric source: clients waiting for a server connection, their wait, pool use.

Settings (``[sources.NAME] type = "pgbouncer"``)::

    dsn                 the admin console: dbname pgbouncer, a user in admin_users or stats_users
    password_env        name of an environment variable holding the password (overrides the DSN's)
    database            only the pools of this database (default: all but the console's own)
    per_pool            one sample per pool, instance "database/user" (default: one pool-level
                        sample over all selected pools)
    connect_timeout     "3s"; libpq's minimum is 2 s
    query_timeout       "5s": the client-side deadline (+1 s) for an answer to a SHOW command

``metric.query`` is one of ``clients_waiting``, ``max_wait_seconds``, ``pool_use`` (from
``SHOW POOLS``) or, from ``SHOW CLIENTS`` and ``SHOW SERVERS`` (the strategy's "waiting
clients, wait time" per connection):

==========================  ============================================================
``clients``                 client connections (any state)
``client_wait_avg_seconds`` mean time the waiting clients have waited so far (0: none wait)
``servers_active``          server connections linked to a client now
``servers_idle``            server connections open and unused
==========================  ============================================================

``docs/sources-postgres.md`` gives the unit and the admin command behind the first three.

The admin console speaks only the simple query protocol, outside transactions, and closes the
connection on an unknown command. The source therefore connects with autocommit, never prepares
(psycopg would prepare a statement on its sixth run, which the console rejects), and sends each
command as plain text through a ``ClientCursor``. Columns are read by name, so releases that add
columns to ``SHOW POOLS`` or ``SHOW DATABASES`` keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, StrictBool, field_validator

from senex_scale.core.state import Sample
from senex_scale.sources.base import EnvName, MetricRequest, Settings, Timeout, parse_settings
from senex_scale.sources.postgres import (
    Endpoint,
    dsn_params,
    unknown_query,
)

QUERIES = (
    "clients_waiting",
    "max_wait_seconds",
    "pool_use",
    "clients",
    "client_wait_avg_seconds",
    "servers_active",
    "servers_idle",
)

ADMIN_DATABASE = "pgbouncer"
"""The console's own database name; its pseudo-pool is never reported."""


class PgBouncerSettings(Settings):
    """``[sources.NAME]`` of a ``type = "pgbouncer"`` source."""

    dsn: str = Field(repr=False)
    password_env: EnvName | None = None
    database: str | None = None
    per_pool: StrictBool = False
    connect_timeout: Timeout = 3.0
    query_timeout: Timeout = 5.0

    @field_validator("dsn")
    @classmethod
    def _admin_dsn(cls, value: str) -> str:
        params = dsn_params(value)
        dbname = params.get("dbname") or params.get("user")
        if dbname != ADMIN_DATABASE:
            raise ValueError(
                f'dbname must be "{ADMIN_DATABASE}" (the admin console), not "{dbname}"'
            )
        return value


Pool = dict[str, Any]
"""One row of ``SHOW POOLS``, by column name."""

Values = list[tuple[str | None, float]]
"""What a metric handler returns: (instance or None for the pool, value) pairs."""


class PgBouncerSource:
    """Reads one PgBouncer's admin console; see the module docstring."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = s = parse_settings(PgBouncerSettings, name, options)
        self.console = Endpoint(
            name,
            s.dsn,
            password_env=s.password_env,
            connect_timeout=s.connect_timeout,
            query_timeout=s.query_timeout,
            client_cursor=True,
        )
        self._handlers: dict[str, Callable[[list[Pool]], Values]] = {
            "clients_waiting": self._clients_waiting,
            "max_wait_seconds": self._max_wait,
            "pool_use": self._pool_use,
        }
        self._connection_handlers: dict[str, tuple[str, Callable[[list[Pool]], float]]] = {
            "clients": ("SHOW CLIENTS", lambda rows: float(len(rows))),
            "client_wait_avg_seconds": ("SHOW CLIENTS", _mean_wait),
            "servers_active": ("SHOW SERVERS", _count_state("active")),
            "servers_idle": ("SHOW SERVERS", _count_state("idle")),
        }

    def __repr__(self) -> str:
        return f"PgBouncerSource(name={self.name!r}, dsn={self.console.redacted!r})"

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """Samples of ``request.metric.query`` as of ``now``."""
        query = request.metric.query.strip()
        if query in self._connection_handlers:
            command, value = self._connection_handlers[query]
            try:
                values = self._values(self._connections(command), value)
            except KeyError as exc:
                raise self.console.fail(
                    f"{command} has no column {exc} (an unsupported PgBouncer version?)",
                    temporary=False,
                ) from exc
            return [Sample(now, v, instance) for instance, v in values]
        handler = self._handlers.get(query)
        if handler is None:
            raise unknown_query(self.name, request.metric.query, QUERIES)
        pools = self._pools()
        try:
            values = handler(pools)
        except KeyError as exc:
            raise self.console.fail(
                f"SHOW POOLS has no column {exc} (an unsupported PgBouncer version?)",
                temporary=False,
            ) from exc
        return [Sample(now, value, instance) for instance, value in values]

    def close(self) -> None:
        """Close the console connection (it reopens on the next query)."""
        self.console.close()

    # -- reading the console

    def _pools(self) -> list[Pool]:
        """``SHOW POOLS`` rows of the selected databases, each with its database's pool_size."""
        sizes = {
            str(row.get("name")): int(row.get("pool_size") or 0)
            for row in self.console.run_dicts("SHOW DATABASES")
        }
        wanted = self.settings.database
        if wanted is not None and wanted not in sizes:
            raise self.console.fail(
                f'database "{wanted}" (sources.{self.name}.database) is not in SHOW DATABASES',
                temporary=False,
            )
        pools = []
        for row in self.console.run_dicts("SHOW POOLS"):
            database = str(row.get("database"))
            if database == ADMIN_DATABASE or (wanted is not None and database != wanted):
                continue
            row["pool_size"] = sizes.get(database, 0)
            pools.append(row)
        return pools

    def _connections(self, command: str) -> list[Pool]:
        """``SHOW CLIENTS`` or ``SHOW SERVERS`` rows of the selected databases."""
        wanted = self.settings.database
        return [
            row
            for row in self.console.run_dicts(command)
            if str(row.get("database")) != ADMIN_DATABASE
            and (wanted is None or str(row.get("database")) == wanted)
        ]

    def _values(self, rows: list[Pool], value: Callable[[list[Pool]], float]) -> Values:
        """One pool-level value over all rows, or one per pool ("database/user") with
        ``per_pool`` (pools from SHOW POOLS, or connections grouped by their pool)."""
        if not self.settings.per_pool:
            return [(None, value(rows))]
        groups: dict[str, list[Pool]] = {}
        for row in rows:
            groups.setdefault(f"{row['database']}/{row['user']}", []).append(row)
        return [(instance, value(group)) for instance, group in groups.items()]

    # -- metrics

    def _clients_waiting(self, pools: list[Pool]) -> Values:
        return self._values(pools, lambda ps: float(sum(int(p["cl_waiting"]) for p in ps)))

    def _max_wait(self, pools: list[Pool]) -> Values:
        def wait(ps: list[Pool]) -> float:
            return max(
                (int(p["maxwait"]) + int(p.get("maxwait_us") or 0) / 1e6 for p in ps),
                default=0.0,
            )

        return self._values(pools, wait)

    def _pool_use(self, pools: list[Pool]) -> Values:
        def use(ps: list[Pool]) -> float:
            size = sum(int(p["pool_size"]) for p in ps)
            active = sum(int(p["sv_active"]) for p in ps)
            if size == 0:
                if active:
                    raise self.console.fail(
                        "pool_size is 0 but servers are active", temporary=False
                    )
                return 0.0
            return 100.0 * active / size

        return self._values(pools, use)


def _wait_seconds(row: Pool) -> float:
    return int(row["wait"]) + int(row.get("wait_us") or 0) / 1e6


def _mean_wait(rows: list[Pool]) -> float:
    """Mean wait so far of the clients in state ``waiting`` (0 when none waits)."""
    waits = [_wait_seconds(r) for r in rows if r["state"] == "waiting"]
    return sum(waits) / len(waits) if waits else 0.0


def _count_state(state: str) -> Callable[[list[Pool]], float]:
    def count(rows: list[Pool]) -> float:
        return float(sum(1 for r in rows if r["state"] == state))

    return count
