"""Real servers and a configured Django for the Django integration tests, once per session.

PostgreSQL primary and a streaming replica (``pg_basebackup -R``), PgBouncer in transaction
mode in front of both (databases ``senextrader`` and ``senextrader_replica``), and Redis, all
from ``senex_scale.lab`` on loopback. Django is configured in this process from the reference
app's own settings module (``demo/senextrader``), read with the environment pointing at these
servers, and migrated. The rest of the suite does not use Django: nothing here runs unless a
test of this folder asks for it, and ``DJANGO_SETTINGS_MODULE`` is never set in os.environ.

Lag is made on purpose with ``pg_wal_replay_pause()`` (``paused_replay``); the router is
reconfigured per test with ``router_config`` (a fresh monitor, no cached health).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from senex_scale.lab import PgBouncer, Postgres, Redis, lab_dir
from senex_scale.testing import wait_until

DEMO = Path(__file__).resolve().parents[3] / "demo" / "senextrader"
APP_PASSWORD = "app-Secret-5d2c71"
"""Password of ``app``, the role Django logs in with (through PgBouncer)."""
SECRET_KEY = "test-only-secret-key-for-the-django-integration-tests"


@dataclass
class Stack:
    """The servers of the session and how to reach them."""

    root: Path
    primary: Postgres
    replica: Postgres
    bouncer: PgBouncer
    redis: Redis

    def env(self, **extra: str) -> dict[str, str]:
        """The reference app's environment for these servers (for Daphne and Celery)."""
        return {
            "SENEX_DATABASE_URL": f"postgresql://app@127.0.0.1:{self.bouncer.port}/senextrader",
            "SENEX_DATABASE_PASSWORD": APP_PASSWORD,
            "SENEX_REPLICA_URLS": (
                f"replica=postgresql://app@127.0.0.1:{self.bouncer.port}/senextrader_replica"
            ),
            "SENEX_REDIS_URL": self.redis.url(),
            "SENEX_SECRET_KEY": SECRET_KEY,
            "SENEX_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            **extra,
        }

    def primary_sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL on the primary directly (no Django, no router, no pin)."""
        with self.primary.connect(dbname="senextrader") as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def replica_sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.replica.connect(dbname="senextrader") as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def wait_replayed(self, timeout: float = 20.0) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        (target,) = self.primary_sql("SELECT pg_current_wal_lsn()")[0]
        wait_until(
            lambda: bool(
                self.replica_sql("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", str(target))[0][0]
            ),
            timeout,
            "the replica to replay the primary's WAL",
            ignore=(psycopg.OperationalError,),
        )


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    root = lab_dir("senex-django-")
    servers: list[Any] = []
    try:
        primary = Postgres(root / "primary", settings={"max_connections": "60"}).start()
        servers.append(primary)
        primary.create_role("app", APP_PASSWORD)
        primary.create_database("senextrader", owner="app")
        replica = primary.replica(root / "replica")
        servers.append(replica)
        bouncer = PgBouncer(
            root / "pgbouncer",
            databases={
                "senextrader": f"host=127.0.0.1 port={primary.port} dbname=senextrader",
                "senextrader_replica": f"host=127.0.0.1 port={replica.port} dbname=senextrader",
            },
            users={"app": APP_PASSWORD},
            stats_users=["app"],  # SHOW CLIENTS/SERVERS for the PgBouncer source's test
            settings={
                "default_pool_size": "10",
                "max_client_conn": "300",
                # A dead server is reported to waiting clients within seconds, not 120 s.
                "server_login_retry": "1",
                "query_wait_timeout": "5",
            },
        ).start()
        servers.append(bouncer)
        redis = Redis(root / "redis").start()
        servers.append(redis)
        yield Stack(root, primary, replica, bouncer, redis)
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture(scope="session")
def django_setup(stack: Stack) -> Stack:
    """Django configured from the reference app's settings module, migrated."""
    from django.conf import settings

    if not settings.configured:
        values = _demo_settings(stack.env())
        settings.configure(**values)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return stack


def _demo_settings(env: dict[str, str]) -> dict[str, Any]:
    """The upper-case names of ``senextrader.settings`` read under ``env`` (then restored)."""
    if str(DEMO) not in sys.path:
        sys.path.insert(0, str(DEMO))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        module = importlib.import_module("senextrader.settings")
        module = importlib.reload(module)
        return {key: value for key, value in vars(module).items() if key.isupper()}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def router_config(django_setup: Stack) -> Iterator[Callable[..., Any]]:
    """Reconfigure the installed router for one test (restored afterwards)."""
    from senex_scale.contrib.django.router import RouterConfig, get_router

    router = get_router()
    assert router is not None
    saved = (router._config, router._monitor)

    def configure(**raw: Any) -> Any:
        raw.setdefault("REPLICAS", ["replica"])
        raw.setdefault("HEALTH_TTL", 0.2)
        router._config = RouterConfig.from_settings(raw)
        router._monitor = None
        return router

    yield configure
    router._config, router._monitor = saved


@pytest.fixture
def paused_replay(stack: Stack) -> Iterator[Stack]:
    """Replay stopped on the replica for the test: it keeps receiving WAL, applies none."""
    stack.wait_replayed()
    stack.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        yield stack
    finally:
        stack.replica_sql("SELECT pg_wal_replay_resume()")
        stack.wait_replayed()


@pytest.fixture(autouse=True)
def _fresh_db_connections() -> Iterator[None]:
    """Each test starts with no pin and closes its Django connections (PgBouncer slots)."""
    from senex_scale.contrib.django.router import pin_scope

    with pin_scope():
        yield
    if "django.conf" in sys.modules:
        from django.conf import settings

        if settings.configured:
            from django.db import connections

            connections.close_all()


def settle(seconds: float) -> None:
    """Let a cached health state expire (the tests use a HEALTH_TTL of 0.2 s)."""
    time.sleep(seconds)


def _wait_receiver(server: Postgres, streaming: bool, timeout: float = 30.0) -> None:
    query = "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"

    def done() -> bool:
        with server.connect() as conn:
            row = conn.execute(query).fetchone()
        return bool(row and row[0]) == streaming

    what = "stream" if streaming else "stop streaming"
    wait_until(done, timeout, f"the WAL receiver of {server.address} to {what}")


def cut_receiver(server: Postgres, *, wait: bool = True) -> str:
    """Point the replica's WAL receiver at a port nobody listens on (it keeps serving reads,
    receives nothing); returns the previous ``primary_conninfo`` for ``restore_receiver``.
    While replay is paused the change waits for the resume (``wait=False`` then): the startup
    process, paused too, is what restarts the receiver."""
    from psycopg import sql

    from senex_scale.lab import free_port

    with server.connect() as conn:
        row = conn.execute("SHOW primary_conninfo").fetchone()
        assert row is not None
        original = str(row[0])
        dead = f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=1"
        conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(dead)))
        conn.execute("SELECT pg_reload_conf()")
    if wait:
        _wait_receiver(server, streaming=False)
    return original


def restore_receiver(server: Postgres, conninfo: str, *, wait: bool = True) -> None:
    """Undo ``cut_receiver``: the receiver streams from the primary again."""
    from psycopg import sql

    with server.connect() as conn:
        conn.execute(
            sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(conninfo))
        )
        conn.execute("SELECT pg_reload_conf()")
    if wait:
        _wait_receiver(server, streaming=True)


@contextlib.contextmanager
def receiver_cut(server: Postgres) -> Iterator[None]:
    """``cut_receiver`` for the block, restored afterwards."""
    original = cut_receiver(server)
    try:
        yield
    finally:
        if not server.alive:
            server.start()
        restore_receiver(server, original)


@pytest.fixture(scope="session")
def replica_b(stack: Stack) -> Iterator[Postgres]:
    """A second streaming replica of the primary, reached directly (no PgBouncer)."""
    server = stack.primary.replica(stack.root / "replica_b")
    try:
        yield server
    finally:
        server.stop()


def replica_b_entry(server: Postgres) -> dict[str, Any]:
    """``replica_b`` as a registry-style entry of ``SENEX_SCALE_ROUTER["REPLICAS"]``."""
    return {"alias": "replica_b", "host": "127.0.0.1", "port": server.port, "dbname": "senextrader"}


def wait_replayed_on(stack: Stack, server: Postgres, timeout: float = 20.0) -> None:
    """Until ``server`` has replayed everything the primary has written so far."""
    (target,) = stack.primary_sql("SELECT pg_current_wal_lsn()")[0]

    def done() -> bool:
        with server.connect(dbname="senextrader") as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]).fetchone()
        return bool(row and row[0])

    wait_until(done, timeout, f"{server.address} to replay", ignore=(psycopg.OperationalError,))


@dataclass
class Running:
    """A Daphne of the reference app and a Celery worker, started by ``reference_app``."""

    url: str
    port: int
    worker_metrics: int
    celery: Any
    """A Celery client on the app's broker and result backend (to fetch task results)."""


@contextlib.contextmanager
def reference_app(stack: Stack, name: str, **env_extra: str) -> Iterator[Running]:
    """Daphne (HTTP + WebSockets) and a solo Celery worker on all three queues, configured only
    by environment (``stack.env(**env_extra)``), both serving ``/metrics``; logs in the lab."""
    from celery import Celery
    from django.conf import settings as django_settings

    from senex_scale.lab import free_port

    port, metrics_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(DEMO),
        **stack.env(SENEX_CELERY_METRICS_PORT=str(metrics_port), **env_extra),
    }
    bin_dir = Path(sys.executable).parent
    asgi = "senextrader.asgi:application"
    argvs = [
        [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(port), asgi],
        [str(bin_dir / "celery"), "-A", "senextrader", "worker", "-Q",
         "trading,accounts,general", "--pool", "solo", "-n", f"senex-{name}@%h",
         "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
    ]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    for argv, log in zip(argvs, (f"{name}-daphne.log", f"{name}-worker.log"), strict=True):
        with (stack.root / log).open("wb") as out:
            procs.append(
                subprocess.Popen(argv, cwd=DEMO, env=env, stdout=out, stderr=subprocess.STDOUT)
            )
    client = Celery(
        f"{name}-client",
        broker=django_settings.CELERY_BROKER_URL,
        backend=django_settings.CELERY_RESULT_BACKEND,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        wait_until(
            lambda: httpx.get(f"{url}/health/", timeout=2).status_code == 200,
            30,
            f"daphne on {port} (log: {stack.root / name}-daphne.log)",
            ignore=(httpx.HTTPError,),
        )
        wait_until(lambda: bool(client.control.ping(timeout=0.5)), 30, "the celery worker")
        yield Running(url, port, metrics_port, client)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        client.close()


@contextlib.contextmanager
def daphne_server(
    app: str, cwd: Path, log: Path, env: dict[str, str] | None = None, ready: str = "/health/"
) -> Iterator[str]:
    """A Daphne serving ``app`` ("module:attribute", importable from ``cwd``) on a free
    loopback port while the block runs; yields its URL once ``ready`` answers 200."""
    import httpx

    from senex_scale.lab import free_port

    port = free_port()
    argv = [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), app]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(url + ready, timeout=2).status_code == 200,
            30,
            f"daphne on {port} (log: {log})",
            ignore=(httpx.HTTPError,),
        )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
