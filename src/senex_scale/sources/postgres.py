"""PostgreSQL as a metric source: server CPU, connection use, replication lag, cache hit ratio.

Settings (``[sources.NAME] type = "postgres"``)::

    dsn                 the primary, libpq key=value or postgresql:// URL (a password in it is
                        never shown: messages name host:port/dbname, reprs say password=***)
    replicas            standby DSNs (or one string): replication lag read on each replica
    password_env        name of an environment variable holding the password (overrides the DSN's)
    connect_timeout     "3s"; libpq's minimum is 2 s
    query_timeout       "5s": the session's statement_timeout, and a client-side deadline one
                        second later that drops the connection if the server does not answer
    cpu                 "process" (default) or "cgroup"
    cgroup              with cpu = "cgroup": the server's cgroup directory (relative paths are
                        under /sys/fs/cgroup) or its cpu.stat file

``metric.query`` is one of ``cpu``, ``connections``, ``replication_lag_bytes``,
``replication_lag_seconds``, ``cache_hit_ratio``; ``docs/sources-postgres.md`` gives the unit and
the exact SQL of each.

How ``cpu = "process"`` finds the server's processes: the source asks for ``pg_backend_pid()``
(the backend serving its own connection) and ``pg_postmaster_start_time()``; the backend's parent
is the postmaster, accepted only if its start time matches the server's (so a server in another
PID namespace, or behind a port forward, is refused instead of measuring some unrelated process).
No privilege and no access to the data directory are needed, unlike reading ``postmaster.pid``.
CPU time is the postmaster's plus every live descendant's, each with the CPU of the children it
has already reaped: a backend that exits between two readings is then still counted, in its
parent's total. CPU % is the growth of that total over the wall time since the previous reading,
kept in the source between calls (the first call reads twice, 0.2 s apart).

Every failure is a ``SourceError``: temporary for connection problems and timeouts, permanent for
bad credentials, missing privileges and wrong configuration. Connections are kept open between
calls; one found broken (the server restarted) is replaced once before giving up.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, TypeVar

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from senex_scale.core.state import Sample
from senex_scale.errors import SourceError
from senex_scale.plugins import did_you_mean
from senex_scale.sources.base import (
    EnvName,
    MetricRequest,
    Settings,
    Timeout,
    instance_from_address,
    parse_settings,
)

T = TypeVar("T")

APPLICATION_NAME = "senex-scale"
"""What the source's sessions show in ``pg_stat_activity`` and PgBouncer's ``SHOW CLIENTS``."""

QUERIES = (
    "cpu",
    "connections",
    "replication_lag_bytes",
    "replication_lag_seconds",
    "cache_hit_ratio",
)

FIRST_INTERVAL = 0.2
"""Seconds between the two CPU readings of a first call (and the least interval ever used)."""

DEADLINE_GRACE = 1.0
"""Seconds the client waits past ``query_timeout`` before dropping an unanswered connection."""

START_TIME_TOLERANCE = 10.0
"""Largest gap between ``pg_postmaster_start_time()`` and the process's start accepted."""

CGROUP_ROOT = Path("/sys/fs/cgroup")

# Substrings of connection errors that retrying will not fix (libpq and PgBouncer wording; a
# failed connection carries no SQLSTATE, only the server's message).
_PERMANENT_CONNECT = (
    "authentication failed",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "does not exist",
    "no such database",
    "no such user",
    "not allowed",
    "permission denied",
    "no password supplied",
    "password is required",
)
# SQLSTATE classes of statement errors that retrying will not fix: bad credentials, unknown
# database, syntax or privilege errors, unsupported features, object in the wrong state.
_PERMANENT_SQLSTATE_CLASSES = ("28", "3D", "42", "0A", "55")


# --------------------------------------------------------------------------- DSNs


def dsn_params(dsn: str) -> dict[str, Any]:
    """The DSN's parameters; a problem is reported without the DSN (it may hold a password)."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ValueError(f"not a valid connection string ({_without_dsn_text(exc)})") from None


def _without_dsn_text(exc: psycopg.Error) -> str:
    """libpq's parse error, with quoted pieces of the DSN hidden unless they are option names.

    libpq quotes what it could not parse, e.g. ``invalid percent-encoded token: "pa%zzss"``
    for a URL whose password is ``pa%zzss``.
    """
    keywords = {opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults()}
    return re.sub(
        r'"([^"]*)"',
        lambda m: m.group(0) if m.group(1) in keywords or len(m.group(1)) < 2 else '"…"',
        _one_line(str(exc)),
    )


def _redact(dsn: str) -> str:
    """The DSN as key=value text with any password replaced by ``***``."""
    params = dsn_params(dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)


def _address(params: dict[str, Any]) -> str:
    """``host:port`` of a DSN (libpq defaults: the local socket, port 5432)."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _dsn_list(value: object) -> object:
    """One DSN may be given as a string instead of a list of one."""
    return [value] if isinstance(value, str) else value


# --------------------------------------------------------------------------- connections


class _Deadline:
    """Drops a connection's socket if a query has not returned after ``seconds``.

    psycopg has no client-side query timeout: a server that stops answering (frozen, or a
    network that drops packets) would block the controller's tick forever. Shutting the socket
    down makes libpq's wait return with "server closed the connection", which ``Endpoint`` turns
    into a temporary ``SourceError``.
    """

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            try:
                fd = self._conn.pgconn.socket
                with socket.socket(fileno=os.dup(fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, psycopg.Error):
                pass  # already closed: the query is returning anyway


class Endpoint:
    """One server a source reads: its DSN, a kept-open connection, errors as ``SourceError``."""

    def __init__(
        self,
        source: str,
        dsn: str,
        *,
        password_env: str | None,
        connect_timeout: float,
        query_timeout: float,
        setup: Sequence[str] = (),
        client_cursor: bool = False,
    ) -> None:
        params = dsn_params(dsn)
        self.source = source
        self.address = _address(params)
        """``host:port``, as instances are named."""
        self.label = f"{self.address}/{params.get('dbname') or params.get('user') or '?'}"
        """Where, for messages: no user, no password."""
        self.redacted = _redact(dsn)
        self._dsn = dsn
        self._has_application_name = "application_name" in params
        self._password_env = password_env
        self._connect_timeout = max(2, math.ceil(connect_timeout))
        self._query_timeout = query_timeout
        self._setup = tuple(setup)
        self._client_cursor = client_cursor
        self._conn: psycopg.Connection[Any] | None = None
        self._secrets = [str(params["password"])] if params.get("password") else []

    def __repr__(self) -> str:
        return f"Endpoint({self.redacted!r})"

    def run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one statement."""
        return self._with_retry(lambda cur: [tuple(row) for row in cur], sql, params)

    def run_dicts(self, sql: str) -> list[dict[str, Any]]:
        """Rows of one statement as dicts by column name (PgBouncer's SHOW output varies)."""

        def read(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
            names = [col.name for col in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur]

        return self._with_retry(read, sql, None)

    def close(self) -> None:
        """Close the connection, if open; the next statement opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # a broken one: nothing left to release
                conn.close()

    def fail(self, message: str, *, temporary: bool) -> SourceError:
        """A ``SourceError`` about this server."""
        return SourceError(f"sources.{self.source}: {self.label}: {message}", temporary=temporary)

    def _usable(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    def _with_retry(
        self, read: Callable[[psycopg.Cursor[Any]], T], sql: str, params: Sequence[Any] | None
    ) -> T:
        """``read`` of the statement's cursor; a kept-open connection found broken (the server
        restarted since the last call) is replaced once, a fresh one or a timeout is final."""
        reused = self._usable()
        try:
            return self._attempt(read, sql, params)
        except _BrokenConnectionError as broken:
            if not reused or broken.timed_out:
                raise self._error(broken.cause, broken.timed_out) from broken.cause
        try:
            return self._attempt(read, sql, params)
        except _BrokenConnectionError as broken:
            raise self._error(broken.cause, broken.timed_out) from broken.cause

    def _attempt(
        self, read: Callable[[psycopg.Cursor[Any]], T], sql: str, params: Sequence[Any] | None
    ) -> T:
        try:
            conn = self._connect()
            with _Deadline(conn, self._query_timeout + DEADLINE_GRACE) as deadline:
                try:
                    return read(conn.execute(sql, params, prepare=False))
                except psycopg.Error as exc:
                    if deadline.fired:
                        raise _BrokenConnectionError(exc, timed_out=True) from exc
                    raise
        except _BrokenConnectionError:
            self.close()
            raise
        except psycopg.Error as exc:
            if not self._usable():
                self.close()
                raise _BrokenConnectionError(exc) from exc
            raise self._error(exc, timed_out=False) from exc

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and self._usable():
            return self._conn
        self.close()
        kwargs: dict[str, Any] = {
            # PgBouncer's console refuses BEGIN; statistics views want a fresh snapshot each time.
            "autocommit": True,
            "connect_timeout": self._connect_timeout,
            "prepare_threshold": None,  # never prepare: the console has no extended protocol
        }
        if not self._has_application_name:
            kwargs["application_name"] = APPLICATION_NAME
        if self._password_env is not None:
            password = os.environ.get(self._password_env)
            if password is None:
                raise self.fail(
                    f"environment variable {self._password_env} (password_env) is not set",
                    temporary=False,
                )
            kwargs["password"] = password
            if password not in self._secrets:
                self._secrets.append(password)
        if self._client_cursor:
            kwargs["cursor_factory"] = psycopg.ClientCursor
        conn = psycopg.connect(self._dsn, **kwargs)
        try:
            for statement in self._setup:
                with _Deadline(conn, self._query_timeout + DEADLINE_GRACE):
                    conn.execute(statement, prepare=False)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _error(self, exc: psycopg.Error, timed_out: bool) -> SourceError:
        if timed_out:
            waited = self._query_timeout + DEADLINE_GRACE
            return self.fail(f"no answer within {waited:g}s (query_timeout)", temporary=True)
        text = _one_line(str(exc))
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return self.fail(text, temporary=_temporary(exc))


class _BrokenConnectionError(Exception):
    """A failure that left the connection unusable: worth one try on a new connection."""

    def __init__(self, cause: psycopg.Error, timed_out: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.timed_out = timed_out


def _temporary(exc: psycopg.Error) -> bool:
    """False when retrying will not help: bad credentials, privileges, configuration."""
    state = exc.sqlstate
    if state is not None:
        return not state.startswith(_PERMANENT_SQLSTATE_CLASSES)
    text = str(exc).lower()
    if isinstance(exc, psycopg.OperationalError) and any(s in text for s in _PERMANENT_CONNECT):
        return False
    return isinstance(exc, psycopg.OperationalError)


# --------------------------------------------------------------------------- CPU


@dataclass(frozen=True, slots=True)
class _Reading:
    """Cumulative CPU seconds of one measured thing at one monotonic time."""

    key: object
    at: float
    cpu_seconds: float


class _CpuMeter:
    """CPU % of one core from cumulative CPU seconds, the previous reading kept between calls."""

    def __init__(self) -> None:
        self._previous: _Reading | None = None

    def percent(self, key: object, read: Callable[[], float]) -> float:
        prev = self._previous
        if prev is None or prev.key != key:
            prev = _Reading(key, time.monotonic(), read())
            time.sleep(FIRST_INTERVAL)
        elif (wait := FIRST_INTERVAL - (time.monotonic() - prev.at)) > 0:
            time.sleep(wait)
        current = _Reading(key, time.monotonic(), read())
        if current.cpu_seconds < prev.cpu_seconds:
            # The counter went back (a cgroup made anew): start over from this reading.
            self._previous = None
            return self.percent(key, read)
        self._previous = current
        return 100.0 * (current.cpu_seconds - prev.cpu_seconds) / (current.at - prev.at)

    def reset(self) -> None:
        self._previous = None


def _process_cpu_seconds(postmaster: psutil.Process) -> float:
    """User + system CPU of the postmaster and its live descendants, with reaped children's."""
    total = 0.0
    processes = [postmaster, *postmaster.children(recursive=True)]
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            if proc is postmaster:
                raise
            continue  # exited since the listing: its CPU shows up in its parent's next reading
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _cgroup_file(setting: str) -> Path:
    path = Path(setting)
    if not path.is_absolute():
        path = CGROUP_ROOT / path
    if path.is_dir():
        v2 = path / "cpu.stat"
        v1 = path / "cpuacct.usage"
        return v2 if v2.exists() or not v1.exists() else v1
    return path


def _cgroup_cpu_seconds(path: Path) -> float:
    """CPU seconds a cgroup used: ``usage_usec`` of cpu.stat (v2) or cpuacct.usage (v1, ns)."""
    text = path.read_text()
    if path.name == "cpuacct.usage":
        return int(text.strip()) / 1e9
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise ValueError(f"{path} has no usage_usec line")


# --------------------------------------------------------------------------- settings


class PostgresSettings(Settings):
    """``[sources.NAME]`` of a ``type = "postgres"`` source."""

    dsn: str = Field(repr=False)
    replicas: Annotated[list[str], BeforeValidator(_dsn_list)] = Field(
        default_factory=list, repr=False
    )
    password_env: EnvName | None = None
    connect_timeout: Timeout = 3.0
    query_timeout: Timeout = 5.0
    cpu: Literal["process", "cgroup"] = "process"
    cgroup: str | None = Field(default=None, validate_default=True)

    @field_validator("dsn")
    @classmethod
    def _valid_dsn(cls, value: str) -> str:
        dsn_params(value)
        return value

    @field_validator("replicas")
    @classmethod
    def _valid_replicas(cls, value: list[str]) -> list[str]:
        for n, dsn in enumerate(value):
            try:
                dsn_params(dsn)
            except ValueError as exc:
                raise ValueError(f"[{n}]: {exc}") from None
        return value

    @field_validator("cgroup")
    @classmethod
    def _cgroup_with_cpu(cls, value: str | None, info: ValidationInfo) -> str | None:
        cpu = info.data.get("cpu")
        if cpu == "cgroup" and not value:
            raise ValueError('required when cpu = "cgroup"')
        if cpu == "process" and value:
            raise ValueError('only used with cpu = "cgroup"')
        return value


# --------------------------------------------------------------------------- the source

_SQL_SERVER = "SELECT pg_backend_pid(), extract(epoch FROM pg_postmaster_start_time())"
_SQL_CONNECTIONS = (
    "SELECT count(*) FILTER (WHERE backend_type = 'client backend'),"
    " current_setting('max_connections')::int,"
    " count(*) FILTER (WHERE backend_type IS NULL) FROM pg_stat_activity"
)
_SQL_STAT_REPLICATION = (
    "SELECT application_name, host(client_addr), state,"
    " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)"
    " FROM pg_stat_replication WHERE state IS DISTINCT FROM 'backup'"
)
_SQL_CURRENT_LSN = "SELECT pg_current_wal_lsn()::text"
_SQL_REPLAY_BYTES = (
    "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())"
)
_SQL_REPLAY_SECONDS = (
    "SELECT pg_is_in_recovery(),"
    " pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
)
_SQL_CACHE = "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"

_DEFAULT_WALRECEIVER_NAME = "walreceiver"

Values = list[tuple[str | None, float]]
"""What a metric handler returns: (instance or None for the pool, value) pairs."""


class PostgresSource:
    """Reads one PostgreSQL primary (and optionally its replicas); see the module docstring."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = parse_settings(PostgresSettings, name, options)
        s = self.settings
        self.primary = self._endpoint(s.dsn)
        self.replicas = [self._endpoint(dsn) for dsn in s.replicas]
        self._meter = _CpuMeter()
        self._postmaster: tuple[float, psutil.Process] | None = None
        self._handlers: dict[str, Callable[[MetricRequest], Values]] = {
            "cpu": self._cpu,
            "connections": self._connections,
            "replication_lag_bytes": self._lag_bytes,
            "replication_lag_seconds": self._lag_seconds,
            "cache_hit_ratio": self._cache_hit_ratio,
        }

    def _endpoint(self, dsn: str) -> Endpoint:
        s = self.settings
        timeout_ms = max(1, round(s.query_timeout * 1000))
        return Endpoint(
            self.name,
            dsn,
            password_env=s.password_env,
            connect_timeout=s.connect_timeout,
            query_timeout=s.query_timeout,
            setup=[f"SET statement_timeout = {timeout_ms}"],
        )

    def __repr__(self) -> str:
        return f"PostgresSource(name={self.name!r}, dsn={self.primary.redacted!r})"

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """Samples of ``request.metric.query`` as of ``now``."""
        handler = self._handlers.get(request.metric.query.strip())
        if handler is None:
            raise unknown_query(self.name, request.metric.query, QUERIES)
        return [Sample(now, value, instance) for instance, value in handler(request)]

    def close(self) -> None:
        """Close every connection (they reopen on the next query)."""
        for endpoint in (self.primary, *self.replicas):
            endpoint.close()

    # -- metrics

    def _cpu(self, request: MetricRequest) -> Values:
        rows = self.primary.run(_SQL_SERVER)  # also proves the server is up: no 0 % when down
        backend_pid, started = int(rows[0][0]), float(rows[0][1])
        if self.settings.cpu == "cgroup":
            assert self.settings.cgroup is not None
            path = _cgroup_file(self.settings.cgroup)
            try:
                value = self._meter.percent(path, lambda: _cgroup_cpu_seconds(path))
            except (OSError, ValueError) as exc:
                raise self.primary.fail(
                    f"cannot read the cgroup's CPU usage ({exc})", temporary=False
                ) from exc
            return [(None, value)]
        postmaster = self._find_postmaster(backend_pid, started)
        try:
            value = self._meter.percent(
                (postmaster.pid, started), lambda: _process_cpu_seconds(postmaster)
            )
        except psutil.NoSuchProcess as exc:
            self._postmaster = None
            self._meter.reset()
            raise self.primary.fail("the server's postmaster went away", temporary=True) from exc
        except psutil.AccessDenied as exc:
            raise self.primary.fail(
                f'no access to the server\'s processes ({exc}); use cpu = "cgroup"',
                temporary=False,
            ) from exc
        return [(None, value)]

    def _find_postmaster(self, backend_pid: int, started: float) -> psutil.Process:
        """The postmaster of our own backend, checked against the server's start time."""
        if self._postmaster is not None and self._postmaster[0] == started:
            return self._postmaster[1]
        self._meter.reset()
        hint = 'is the server on this host (same PID namespace)? else use cpu = "cgroup"'
        try:
            parent = psutil.Process(backend_pid).parent()
            if parent is None or abs(parent.create_time() - started) > START_TIME_TOLERANCE:
                raise psutil.NoSuchProcess(backend_pid)
        except psutil.NoSuchProcess as exc:
            raise self.primary.fail(
                f"cannot find the server's processes: {hint}", temporary=False
            ) from exc
        except psutil.AccessDenied as exc:
            raise self.primary.fail(
                f'no access to the server\'s processes ({exc}); use cpu = "cgroup"',
                temporary=False,
            ) from exc
        self._postmaster = (started, parent)
        return parent

    def _connections(self, request: MetricRequest) -> Values:
        (used, limit, hidden), *_ = self.primary.run(_SQL_CONNECTIONS)
        if hidden:
            raise self.primary.fail(
                "cannot see other sessions in pg_stat_activity: grant the user pg_monitor",
                temporary=False,
            )
        if not limit:
            raise self.primary.fail("max_connections is 0", temporary=False)
        return [(None, 100.0 * int(used) / int(limit))]

    def _lag_bytes(self, request: MetricRequest) -> Values:
        if not self.replicas:
            return self._lag_bytes_from_primary()
        (current,), *_ = self.primary.run(_SQL_CURRENT_LSN)
        out: Values = []
        for replica in self.replicas:
            (in_recovery, lag), *_ = replica.run(_SQL_REPLAY_BYTES, [current])
            if not in_recovery or lag is None:
                raise replica.fail("is not a standby (not in recovery)", temporary=False)
            out.append((self._instance(replica, request), max(0.0, float(lag))))
        return out

    def _lag_bytes_from_primary(self) -> Values:
        lags: dict[str | None, float] = {}
        for app, addr, state, lag in self.primary.run(_SQL_STAT_REPLICATION):
            if state is None:
                raise self.primary.fail(
                    "cannot read pg_stat_replication: grant the user pg_monitor", temporary=False
                )
            if lag is None:
                continue  # connected, no replay position reported yet
            named = app if app and app != _DEFAULT_WALRECEIVER_NAME else None
            instance = named or addr or "local"
            lags[instance] = max(lags.get(instance, 0.0), max(0.0, float(lag)))
        return list(lags.items())

    def _lag_seconds(self, request: MetricRequest) -> Values:
        if not self.replicas:
            raise self.primary.fail(
                "replication_lag_seconds is read on each replica: set "
                f"sources.{self.name}.replicas",
                temporary=False,
            )
        out: Values = []
        for replica in self.replicas:
            (in_recovery, caught_up, seconds), *_ = replica.run(_SQL_REPLAY_SECONDS)
            if not in_recovery:
                raise replica.fail("is not a standby (not in recovery)", temporary=False)
            if caught_up:
                lag = 0.0
            elif seconds is None:
                raise replica.fail("has replayed no transaction yet: lag unknown", temporary=True)
            else:
                lag = max(0.0, float(seconds))
            out.append((self._instance(replica, request), lag))
        return out

    def _cache_hit_ratio(self, request: MetricRequest) -> Values:
        rows = self.primary.run(_SQL_CACHE)
        if not rows:
            raise self.primary.fail("no pg_stat_database row for the database", temporary=True)
        hit, read = int(rows[0][0] or 0), int(rows[0][1] or 0)
        return [(None, 100.0 * hit / (hit + read) if hit + read else 100.0)]

    @staticmethod
    def _instance(endpoint: Endpoint, request: MetricRequest) -> str:
        return instance_from_address(endpoint.address, request.pool, request.hosts)


def unknown_query(source: str, query: str, known: Iterable[str]) -> SourceError:
    names = list(known)
    return SourceError(
        f'sources.{source}: unknown query "{query}"{did_you_mean(query, names)}; '
        f"known: {', '.join(names)}",
        temporary=False,
    )
