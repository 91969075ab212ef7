"""``senex-scale pgbouncer status``: the admin console's pools, and what to do when clients wait.

The seed connects to the console and reads ``SHOW POOLS`` / ``SHOW STATS`` by eye. A client
waits (``cl_waiting > 0``, or ``maxwait > 0``: the oldest waiting client's wait) when every
server connection of its pool is busy. Two ways out:

- the pool is smaller than the server could take: raise ``pool_size`` (or
  ``default_pool_size``) up to what the server has free (``max_connections`` minus
  ``superuser_reserved_connections`` minus what is connected now; ``--server-dsn`` reads it);
- the server has no room: more connections would only queue inside PostgreSQL, so move reads
  to a replica (``senex-scale replica add``) or raise ``max_connections`` (a restart).

The console speaks only the simple query protocol, outside transactions: plain text through
a ``ClientCursor``, never prepared, columns read by name (releases add columns).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import psycopg
import typer
from psycopg.rows import dict_row
from rich.table import Table

from senex_scale.errors import InputError, TemporaryError
from senex_scale.ops.common import (
    connect,
    out,
    parse_dsn,
    print_json,
    redact_dsn,
    redact_text,
    with_params,
)

app = typer.Typer(help="PgBouncer: pools and recommendations.", no_args_is_help=True)

ADMIN_DATABASE = "pgbouncer"


@dataclass(frozen=True, slots=True)
class Pool:
    """One row of ``SHOW POOLS`` with its pool size (``SHOW DATABASES``)."""

    database: str
    user: str
    mode: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    sv_used: int
    maxwait_seconds: float
    pool_size: int

    @property
    def waiting(self) -> bool:
        return self.cl_waiting > 0 or self.maxwait_seconds > 0


@dataclass(frozen=True, slots=True)
class ServerRoom:
    """How many more connections the PostgreSQL server behind the pools can take."""

    max_connections: int
    reserved: int
    connected: int

    @property
    def free(self) -> int:
        return max(self.max_connections - self.reserved - self.connected, 0)


def recommend(pool: Pool, room: ServerRoom | None) -> str | None:
    """What to do for a pool whose clients wait (None when nobody waits)."""
    if not pool.waiting:
        return None
    wanted = pool.pool_size + max(pool.cl_waiting, math.ceil(pool.pool_size / 2), 1)
    where = f"{pool.database}/{pool.user}"
    waits = f"{pool.cl_waiting} client(s) waiting, longest {pool.maxwait_seconds:.1f}s"
    if room is None:
        return (
            f"{where}: {waits}: raise pool_size {pool.pool_size} -> {wanted} if the server's "
            "max_connections has room (give --server-dsn to check), else add a read replica"
        )
    grow = wanted - pool.pool_size
    if room.free >= grow:
        return (
            f"{where}: {waits}: raise pool_size (or default_pool_size) {pool.pool_size} -> "
            f"{wanted}; the server has room ({room.free} of {room.max_connections} connections "
            "free)"
        )
    if room.free > 0:
        return (
            f"{where}: {waits}: raise pool_size {pool.pool_size} -> "
            f"{pool.pool_size + room.free} (all the server has free), and add a read replica "
            "(senex-scale replica add) for the rest"
        )
    return (
        f"{where}: {waits}: the server is full ({room.connected} connected, "
        f"max_connections {room.max_connections}): add a read replica (senex-scale replica "
        "add) and route reads to it, or raise max_connections (restart)"
    )


def _console(dsn: str) -> psycopg.Connection[Any]:
    params = parse_dsn(dsn)
    if (params.get("dbname") or params.get("user")) != ADMIN_DATABASE:
        raise InputError(f"--dsn: {redact_dsn(dsn)} is not the admin console (dbname=pgbouncer)")
    params.setdefault("connect_timeout", 5)
    try:
        return psycopg.connect(
            psycopg.conninfo.make_conninfo("", **params),
            autocommit=True,
            prepare_threshold=None,
            cursor_factory=psycopg.ClientCursor,
        )
    except psycopg.Error as exc:
        raise TemporaryError(
            f"PgBouncer ({redact_dsn(dsn)}): cannot connect: {redact_text(str(exc).strip())}"
        ) from None


def _show(conn: psycopg.Connection[Any], what: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SHOW {what}")
        return list(cur.fetchall())


def _int(row: dict[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if value not in (None, "") else 0


def read_console(dsn: str) -> tuple[list[Pool], list[dict[str, Any]], dict[str, str]]:
    """Pools (with their sizes), per-database stats and the config from the console."""
    with _console(dsn) as conn:
        pools = _show(conn, "POOLS")
        databases = {row["name"]: row for row in _show(conn, "DATABASES")}
        stats = _show(conn, "STATS")
        config = {str(row["key"]): str(row["value"]) for row in _show(conn, "CONFIG")}
    default_size = int(config.get("default_pool_size", "20") or 20)
    out_pools: list[Pool] = []
    for row in pools:
        if row["database"] == ADMIN_DATABASE:
            continue
        size = _int(databases.get(row["database"], {}), "pool_size") or default_size
        maxwait = _int(row, "maxwait") + _int(row, "maxwait_us") / 1_000_000
        out_pools.append(
            Pool(
                database=row["database"],
                user=row["user"],
                mode=str(row.get("pool_mode") or config.get("pool_mode", "")),
                cl_active=_int(row, "cl_active"),
                cl_waiting=_int(row, "cl_waiting"),
                sv_active=_int(row, "sv_active"),
                sv_idle=_int(row, "sv_idle"),
                sv_used=_int(row, "sv_used"),
                maxwait_seconds=maxwait,
                pool_size=size,
            )
        )
    stats = [row for row in stats if row.get("database") != ADMIN_DATABASE]
    return out_pools, stats, config


def server_room(dsn: str) -> ServerRoom:
    """max_connections, the reserved slots and the client connections of the server now."""
    with connect(with_params(dsn, application_name="senex-scale"), what="server") as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    assert row is not None
    return ServerRoom(int(row[0]), int(row[1]), int(row[2]))


@app.command("status")
def status_command(
    dsn: Annotated[
        str, typer.Option("--dsn", help="The admin console: dbname=pgbouncer, an admin/stats user.")
    ],
    server_dsn: Annotated[
        str | None,
        typer.Option("--server-dsn", help="PostgreSQL behind it, to check max_connections room."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pools and stats from SHOW POOLS / SHOW STATS; a recommendation when clients wait."""
    pools, stats, config = read_console(dsn)
    room = server_room(server_dsn) if server_dsn else None
    advice = [r for r in (recommend(p, room) for p in pools) if r]
    if json_out:
        print_json(
            {
                "pools": [asdict(p) | {"waiting": p.waiting} for p in pools],
                "stats": stats,
                "default_pool_size": config.get("default_pool_size"),
                "max_client_conn": config.get("max_client_conn"),
                "server": None if room is None else asdict(room) | {"free": room.free},
                "recommendations": advice,
            }
        )
        return
    table = Table(title="pools", title_justify="left")
    cols = ("database", "user", "mode", "size", "cl_active", "cl_waiting", "sv_active")
    for col in (*cols, "sv_idle", "maxwait s"):
        table.add_column(col)
    for p in pools:
        table.add_row(
            p.database, p.user, p.mode, str(p.pool_size), str(p.cl_active), str(p.cl_waiting),
            str(p.sv_active), str(p.sv_idle), f"{p.maxwait_seconds:.1f}",
        )  # fmt: skip
    out.print(table)
    table = Table(title="stats", title_justify="left")
    for col in (
        "database",
        "transactions",
        "queries",
        "avg xact µs",
        "avg query µs",
        "avg wait µs",
    ):
        table.add_column(col)
    for s in stats:
        table.add_row(
            str(s.get("database")), str(s.get("total_xact_count")),
            str(s.get("total_query_count")), str(s.get("avg_xact_time")),
            str(s.get("avg_query_time")), str(s.get("avg_wait_time")),
        )  # fmt: skip
    out.print(table)
    if room is not None:
        out.print(
            f"server: {room.connected} client connections of max_connections "
            f"{room.max_connections} ({room.reserved} reserved): {room.free} free"
        )
    if advice:
        out.print("recommendations:")
        for line in advice:
            out.print(f"  {line}", markup=False)
    else:
        out.print("no client waits for a server connection")
