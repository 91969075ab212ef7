"""Real servers for the PostgreSQL and PgBouncer source tests, started once per session.

A primary (``initdb``, trust for local and for ``postgres`` over TCP, SCRAM for the password
users), a streaming replica made with ``pg_basebackup -R`` and a PgBouncer in transaction mode,
all on free loopback ports with sockets and data in one temporary directory. When the tests run
as root the servers run as the ``postgres`` user (both refuse root). Everything is stopped at the
end with a fast shutdown; nothing is left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from senex_scale.testing import free_port

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

READY_TIMEOUT = 30.0


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: p.parts[-3])
    if not found:
        pytest.fail("PostgreSQL server binaries not found (run scripts/services)")
    return found[-1].parent


def _as_server_user(cwd: Path) -> dict[str, Any]:
    """Popen arguments that run a server as ``postgres`` when we are root, else as ourselves."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": str(cwd)}
    kwargs: dict[str, Any] = {"cwd": cwd, "env": env}
    if os.geteuid() == 0:
        kwargs.update(user="postgres", group="postgres", extra_groups=[])
    return kwargs


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=60, check=False, **_as_server_user(cwd)
    )
    if result.returncode != 0:
        pytest.fail(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """Signal a server and wait for it; escalate to SIGKILL if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def dsn(port: int, user: str, password: str | None = None, dbname: str = "postgres") -> str:
    """A key=value DSN for a loopback server."""
    text = f"host=127.0.0.1 port={port} user={user} dbname={dbname} connect_timeout=3"
    return f"{text} password={password}" if password else text


@dataclass
class PgServer:
    """One ``postgres`` process on a loopback port, stopped and started at will."""

    datadir: Path
    port: int
    sockdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    # Test modules cannot import this file (--import-mode=importlib): they read these instead.
    monitor_password: ClassVar[str] = MONITOR_PASSWORD
    max_connections: ClassVar[int] = MAX_CONNECTIONS

    @property
    def log(self) -> Path:
        return self.sockdir / f"postgres-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def dsn(self, user: str = "postgres", password: str | None = None) -> str:
        return dsn(self.port, user, password)

    def monitor_dsn(self, password: str | None = MONITOR_PASSWORD) -> str:
        """How the sources log in: ``monitor`` (pg_monitor) with SCRAM."""
        return dsn(self.port, "monitor", password)

    def app_dsn(self) -> str:
        """``app``: SCRAM too, but no pg_monitor (sees no details of other users' sessions)."""
        return dsn(self.port, "app", APP_PASSWORD)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection (trust over loopback), autocommit."""
        return psycopg.connect(self.dsn(), autocommit=True, **kwargs)

    def start(self) -> None:
        args = [str(_pg_bin() / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(self.sockdir)}
        for key, value in (settings | self.settings).items():
            args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, **_as_server_user(self.sockdir)
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"postgres on {self.port} exited:\n{_tail(self.log)}")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"postgres on {self.port} not ready:\n{_tail(self.log)}")
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): active transactions are rolled back, clients disconnected."""
        _stop(self.proc, signal.SIGINT)
        self.proc = None

    def backend_pids(self, application_name: str) -> list[int]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                [application_name],
            ).fetchall()
        return [row[0] for row in rows]


@dataclass
class PgBouncer:
    """One ``pgbouncer`` process in front of the primary, with its generated ini."""

    workdir: Path
    port: int
    primary_port: int
    proc: subprocess.Popen[bytes] | None = None

    pooled_size: ClassVar[int] = POOLED_SIZE
    stats_password: ClassVar[str] = STATS_PASSWORD
    other_size: ClassVar[int] = OTHER_SIZE

    @property
    def log(self) -> Path:
        return self.workdir / "pgbouncer.log"

    def admin_dsn(self, user: str = "stats", password: str | None = STATS_PASSWORD) -> str:
        return dsn(self.port, user, password, dbname="pgbouncer")

    def client_dsn(self, dbname: str = "pooled") -> str:
        return dsn(self.port, "app", APP_PASSWORD, dbname=dbname)

    def write_config(self) -> Path:
        self.workdir.mkdir(exist_ok=True)
        _chown(self.workdir)
        users = {
            "app": APP_PASSWORD,
            "stats": STATS_PASSWORD,
            "admin": ADMIN_PASSWORD,
        }
        userlist = self.workdir / "userlist.txt"
        userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in users.items()))
        server = f"host=127.0.0.1 port={self.primary_port} dbname=postgres"
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"pooled = {server} pool_size={POOLED_SIZE}\n"
            f"other = {server} pool_size={OTHER_SIZE}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.workdir}\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            "admin_users = admin\n"
            "stats_users = stats\n"
            "pool_mode = transaction\n"
            "default_pool_size = 2\n"
            "max_client_conn = 50\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.workdir / 'pgbouncer.pid'}\n"
        )
        for path in (userlist, ini):
            path.chmod(0o600)
            _chown(path)
        return ini

    def start(self) -> None:
        ini = self.write_config()
        self.proc = subprocess.Popen(
            ["pgbouncer", str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_as_server_user(self.workdir),
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"pgbouncer exited:\n{_tail(self.log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"pgbouncer not listening:\n{_tail(self.log)}")
                time.sleep(0.05)

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM in 1.18; SIGINT would wait for clients)."""
        _stop(self.proc, signal.SIGTERM)
        self.proc = None


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A temporary directory the server user can enter (pytest's own is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="senex-pg-"))
    path.chmod(0o755)
    _chown(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


COMMON_SETTINGS = {
    "max_connections": str(MAX_CONNECTIONS),
    "shared_buffers": "32MB",
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "wal_keep_size": "64MB",
    "log_min_messages": "warning",
}


@pytest.fixture(scope="session")
def primary(workdir: Path) -> Iterator[PgServer]:
    """The primary, with ``monitor`` (pg_monitor) and ``app`` password roles."""
    datadir = workdir / "primary"
    initdb = [str(_pg_bin() / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust"]
    _run([*initdb, "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], workdir)
    hba = datadir / "pg_hba.conf"
    hba.write_text(
        "local all all trust\n"
        "local replication all trust\n"
        "host all monitor,app 127.0.0.1/32 scram-sha-256\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host replication postgres 127.0.0.1/32 trust\n"
    )
    _chown(hba)
    server = PgServer(datadir, free_port(), workdir, dict(COMMON_SETTINGS))
    try:
        server.start()
        with server.connect() as conn:
            conn.execute(
                f"CREATE ROLE monitor LOGIN PASSWORD '{MONITOR_PASSWORD}' IN ROLE pg_monitor"
            )
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
            conn.execute("CREATE TABLE lag_probe (id bigserial PRIMARY KEY, filler text)")
            conn.execute("GRANT ALL ON lag_probe TO app")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def replica(primary: PgServer, workdir: Path) -> Iterator[PgServer]:
    """A streaming hot standby named ``replica1``, reporting its replay position every second."""
    datadir = workdir / "replica"
    source = ["-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]
    options = ["-R", "-X", "stream", "-c", "fast", "--no-sync"]
    _run([str(_pg_bin() / "pg_basebackup"), "-D", str(datadir), *source, *options], workdir)
    settings = dict(COMMON_SETTINGS)
    settings.update(cluster_name="replica1", wal_receiver_status_interval="1")
    server = PgServer(datadir, free_port(), workdir, settings)
    try:
        server.start()
        deadline = time.monotonic() + READY_TIMEOUT
        with primary.connect() as conn:
            sql = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            while conn.execute(sql).fetchone() != (1,):
                if time.monotonic() > deadline:
                    pytest.fail(f"replica not streaming:\n{_tail(server.log)}")
                time.sleep(0.1)
        yield server
    finally:
        server.stop()


def _bouncer(primary: PgServer, workdir: Path, name: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(workdir / name, free_port(), primary.port)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def pgbouncer(primary: PgServer, workdir: Path) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode: ``pooled`` (pool_size 1) and ``other`` (pool_size 4)."""
    yield from _bouncer(primary, workdir, "pgbouncer")


@pytest.fixture
def spare_pgbouncer(primary: PgServer, workdir: Path) -> Iterator[PgBouncer]:
    """A PgBouncer of the test's own, for tests that stop or freeze it."""
    yield from _bouncer(primary, workdir, f"pgbouncer-{free_port()}")
