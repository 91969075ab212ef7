"""PostgresSource against a real primary and streaming replica (see conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Metric, Pool
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.postgres import PostgresSource
from senex_scale.testing import free_port

pytestmark = pytest.mark.integration

NOW = 1_700_000_000.0

PgServer = Any
"""conftest.PgServer: test modules cannot import conftest under --import-mode=importlib."""


def request(query: str, pool: Pool | None = None) -> MetricRequest:
    """A rule's request for ``query`` of the source named "db"."""
    return MetricRequest(rule="r", metric=Metric(source="db", query=query), pool=pool)


@contextlib.contextmanager
def source(server: PgServer, **options: Any) -> Iterator[PostgresSource]:
    """A source logged in as ``monitor`` (pg_monitor, SCRAM), closed afterwards."""
    options.setdefault("dsn", server.monitor_dsn())
    src = PostgresSource("db", options)
    try:
        yield src
    finally:
        src.close()


def by_instance(samples: list[Sample], now: float = NOW) -> dict[str | None, float]:
    """Samples as {instance: value}, checking they all carry ``now``."""
    assert all(s.at == now for s in samples), samples
    return {s.instance: s.value for s in samples}


def pool_value(samples: list[Sample], now: float = NOW) -> float:
    """The single pool-level sample's value."""
    values = by_instance(samples, now)
    assert list(values) == [None], samples
    return values[None]


def until(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``check`` every 0.1 s until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def streaming(primary: PgServer) -> bool:
    with primary.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ).fetchone()
    return row == (1,)


@contextlib.contextmanager
def burning(server: PgServer) -> Iterator[None]:
    """A query that keeps one core busy until the block ends (then it is cancelled)."""
    conn = server.connect()
    pid = conn.info.backend_pid
    errors: list[BaseException] = []

    def burn() -> None:
        try:
            conn.execute("SELECT count(*) FROM generate_series(1, 10000000000::bigint)")
        except psycopg.errors.QueryCanceled:
            pass
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=burn, daemon=True)
    thread.start()
    try:
        with server.connect() as watcher:
            until(
                lambda: (
                    watcher.execute(
                        "SELECT state = 'active' FROM pg_stat_activity WHERE pid = %s", [pid]
                    ).fetchone()
                    == (True,)
                ),
                what="the burning query",
            )
        yield
    finally:
        with server.connect() as killer:
            killer.execute("SELECT pg_cancel_backend(%s)", [pid])
        thread.join(timeout=10)
        conn.close()
    assert not errors, errors


def write(server: PgServer, rows: int = 100) -> None:
    with server.connect() as conn:
        conn.execute(
            "INSERT INTO lag_probe (filler) SELECT repeat('x', 200) FROM generate_series(1, %s)",
            [rows],
        )


# --------------------------------------------------------------------------- CPU


def test_cpu_rises_under_a_cpu_burning_query(primary: PgServer) -> None:
    """CPU % of the server's processes is far higher while a query burns a core than idle."""
    with source(primary) as src:
        src.query(request("cpu"), NOW)  # first call: two readings 0.2 s apart
        time.sleep(1.0)
        idle = pool_value(src.query(request("cpu"), NOW))
        with burning(primary):
            src.query(request("cpu"), NOW)  # restart the interval inside the burn
            time.sleep(1.0)
            busy = pool_value(src.query(request("cpu"), NOW))
    assert 0 <= idle < 25
    assert busy > idle + 40


def test_cgroup_cpu_is_the_growth_of_usage_usec(primary: PgServer, tmp_path: Path) -> None:
    """cpu = "cgroup" reads cpu.stat: 0.5 s more usage_usec over about 1 s is about 50 %."""
    stat = tmp_path / "cpu.stat"
    stat.write_text("usage_usec 7000000\nuser_usec 5000000\nsystem_usec 2000000\n")
    with source(primary, cpu="cgroup", cgroup=str(tmp_path)) as src:
        assert pool_value(src.query(request("cpu"), NOW)) == 0.0
        before = time.monotonic()
        stat.write_text("usage_usec 7500000\nuser_usec 5400000\nsystem_usec 2100000\n")
        time.sleep(1.0)
        value = pool_value(src.query(request("cpu"), NOW))
        most = time.monotonic() - before + 0.05
    assert 50 / most <= value <= 50


# --------------------------------------------------------------------------- connections


def test_connections_is_the_share_of_max_connections_in_use(primary: PgServer) -> None:
    """connections = client backends in pg_stat_activity / max_connections, in %."""
    sql = (
        "SELECT 100.0 * count(*) / current_setting('max_connections')::int"
        " FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    extra = [primary.connect() for _ in range(5)]
    try:
        with source(primary) as src:
            before = float(extra[0].execute(sql).fetchone()[0])  # type: ignore[index]  # one row
            value = pool_value(src.query(request("connections"), NOW))
            after = float(extra[0].execute(sql).fetchone()[0])  # type: ignore[index]  # one row
    finally:
        for conn in extra:
            conn.close()
    assert min(before, after) <= value <= max(before, after)
    assert value >= 100 * 6 / primary.max_connections  # five extra sessions and the source's own


# --------------------------------------------------------------------------- replication


def test_replication_lag_while_replay_is_paused(primary: PgServer, replica: PgServer) -> None:
    """Lag in bytes and seconds is > 0 while the replica's replay is paused, 0 after resume."""
    until(lambda: streaming(primary), what="the replica to stream")
    replica_dsn = replica.monitor_dsn()
    replica_pool = Pool(min=0, max=3, port=f"{replica.port - 1} + n")
    with (
        source(primary) as from_primary,
        source(primary, replicas=[replica_dsn]) as from_replica,
        replica.connect() as standby,
    ):

        def lags() -> tuple[dict[str | None, float], dict[str | None, float], float]:
            on_primary = by_instance(from_primary.query(request("replication_lag_bytes"), NOW))
            on_replica = by_instance(
                from_replica.query(request("replication_lag_bytes", replica_pool), NOW)
            )
            seconds = by_instance(from_replica.query(request("replication_lag_seconds"), NOW))
            return on_primary, on_replica, seconds[replica.address]

        write(primary)  # a replayed transaction, so that the replica has a replay timestamp
        until(lambda: lags() == ({"replica1": 0.0}, {"1": 0.0}, 0.0), what="catch-up")

        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            until(
                lambda: (
                    standby.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
                    == ("paused",)
                ),
                what="replay to pause",
            )
            time.sleep(0.3)
            write(primary, rows=2000)
            until(lambda: all(v > 0 for v in lags()[0].values()), what="lag on the primary")
            on_primary, on_replica, seconds = lags()
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
        assert list(on_primary) == ["replica1"]  # application_name = the replica's cluster_name
        assert on_primary["replica1"] > 100 * 200  # at least the rows' size
        assert list(on_replica) == ["1"]  # host:port mapped through the pool's port scheme
        assert on_replica["1"] > 100 * 200
        assert seconds > 0.2

        until(lambda: lags() == ({"replica1": 0.0}, {"1": 0.0}, 0.0), what="catch-up after resume")


@pytest.mark.parametrize("query", ["connections", "replication_lag_bytes"])
def test_without_pg_monitor_is_permanent(primary: PgServer, replica: PgServer, query: str) -> None:
    """A user that cannot see other sessions' details: permanent error asking for pg_monitor."""
    until(lambda: streaming(primary), what="the replica to stream")
    with (
        source(primary, dsn=primary.app_dsn()) as src,
        pytest.raises(SourceError, match="grant the user pg_monitor") as err,
    ):
        src.query(request(query), NOW)
    assert not err.value.temporary


def test_replication_lag_seconds_needs_replicas(primary: PgServer) -> None:
    """replication_lag_seconds without replicas is a permanent error naming the setting."""
    with source(primary) as src, pytest.raises(SourceError, match=r"sources\.db\.replicas") as err:
        src.query(request("replication_lag_seconds"), NOW)
    assert not err.value.temporary


def test_an_unreachable_replica_is_a_temporary_error(primary: PgServer) -> None:
    """A configured replica nobody listens on: temporary SourceError naming its address."""
    port = free_port()
    with (
        source(primary, replicas=f"host=127.0.0.1 port={port} user=monitor") as src,
        pytest.raises(SourceError, match=f"127.0.0.1:{port}") as err,
    ):
        src.query(request("replication_lag_seconds"), NOW)
    assert err.value.temporary


# --------------------------------------------------------------------------- cache


def test_cache_hit_ratio_matches_pg_stat_database(primary: PgServer) -> None:
    """cache_hit_ratio = blks_hit / (blks_hit + blks_read) of the database, in %, in [0, 100]."""
    write(primary, rows=500)
    sql = (
        "SELECT 100.0 * blks_hit / (blks_hit + blks_read) FROM pg_stat_database"
        " WHERE datname = 'postgres'"
    )
    with source(primary) as src, primary.connect() as conn:
        conn.execute("SELECT count(*) FROM lag_probe")
        time.sleep(1.1)  # backends flush their statistics at most once a second
        value = pool_value(src.query(request("cache_hit_ratio"), NOW))
        own = float(conn.execute(sql).fetchone()[0])  # type: ignore[index]  # one row
    assert 0 <= value <= 100
    assert value == pytest.approx(own, abs=0.2)


# --------------------------------------------------------------------------- failures


def test_unknown_query_is_permanent_and_lists_the_known_ones(primary: PgServer) -> None:
    """An unknown metric.query: permanent SourceError with "did you mean" and the known names."""
    with source(primary) as src, pytest.raises(SourceError) as err:
        src.query(request("conections"), NOW)
    assert not err.value.temporary
    message = str(err.value)
    assert 'did you mean "connections"' in message
    assert "replication_lag_seconds" in message


def test_outage_is_a_temporary_error_never_zero(primary: PgServer) -> None:
    """With the primary stopped every query raises a temporary SourceError within the timeout."""
    with source(primary, connect_timeout="2s") as src:
        for query in ("cpu", "connections", "replication_lag_bytes", "cache_hit_ratio"):
            src.query(request(query), NOW)
        primary.stop()
        try:
            for query in ("cpu", "connections", "replication_lag_bytes", "cache_hit_ratio"):
                started = time.monotonic()
                with pytest.raises(SourceError) as err:
                    src.query(request(query), NOW)
                assert err.value.temporary, query
                assert time.monotonic() - started < 3, query
        finally:
            primary.start()
        assert pool_value(src.query(request("connections"), NOW)) > 0  # reconnected


def test_a_server_that_stops_answering_times_out(primary: PgServer) -> None:
    """A frozen backend: temporary SourceError after query_timeout + 1 s, then a new connection."""
    dsn = primary.monitor_dsn() + " application_name=frozen-test"
    with source(primary, dsn=dsn, query_timeout="1s") as src:
        src.query(request("connections"), NOW)
        (pid,) = primary.backend_pids("frozen-test")
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(SourceError, match="query_timeout") as err:
                src.query(request("connections"), NOW)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert err.value.temporary
        assert 1.5 < elapsed < 3.5
        assert pool_value(src.query(request("connections"), NOW)) > 0


def test_wrong_password_is_permanent_and_never_shown(primary: PgServer) -> None:
    """A wrong password: permanent SourceError; the password is in no message, cause or repr."""
    secret = "Wrong-Pw-5e1d0c"
    dsn = f"postgresql://monitor:{secret}@127.0.0.1:{primary.port}/postgres"
    with source(primary, dsn=dsn) as src:
        with pytest.raises(SourceError, match="authentication failed") as err:
            src.query(request("connections"), NOW)
        assert not err.value.temporary
        assert secret not in "".join(traceback.format_exception(err.value))
        assert secret not in repr(src)
        assert secret not in repr(src.settings)
        assert "***" in repr(src)


def test_password_from_the_environment(primary: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """password_env supplies the password; unset, it is a permanent error naming the variable."""
    dsn = primary.monitor_dsn(password=None)
    monkeypatch.setenv("SENEX_TEST_PG_PASSWORD", primary.monitor_password)
    with source(primary, dsn=dsn, password_env="SENEX_TEST_PG_PASSWORD") as src:
        assert pool_value(src.query(request("connections"), NOW)) > 0
    monkeypatch.delenv("SENEX_TEST_PG_PASSWORD")
    with (
        source(primary, dsn=dsn, password_env="SENEX_TEST_PG_PASSWORD") as src,
        pytest.raises(SourceError, match="SENEX_TEST_PG_PASSWORD") as err,
    ):
        src.query(request("connections"), NOW)
    assert not err.value.temporary


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"dsn": "host=h", "bogus": 1}, 'sources.db: unknown key "bogus"'),
        ({"dsn": "host=h", "conect_timeout": 1}, 'did you mean "connect_timeout"'),
        ({"dsn": "host=h", "cgroup": "/x"}, 'sources.db.cgroup: only used with cpu = "cgroup"'),
        ({}, "sources.db.dsn: required"),
        ({"dsn": "host=h", "cpu": "cgroup"}, 'sources.db.cgroup: required when cpu = "cgroup"'),
        ({"dsn": "host=h", "cpu": "load"}, "sources.db.cpu:"),
        ({"dsn": "host=h", "connect_timeout": "soon"}, "sources.db.connect_timeout:"),
        ({"dsn": "host=h", "query_timeout": 0}, "sources.db.query_timeout: must be longer"),
        ({"dsn": "host=h", "password_env": "A-B"}, "sources.db.password_env:"),
        ({"dsn": "host=h", "replicas": ["host=r bogus=1"]}, "sources.db.replicas: [0]"),
    ],
)
def test_settings_errors_name_the_field(options: dict[str, Any], problem: str) -> None:
    """Bad settings: a PolicyError whose problem names sources.db and the field."""
    with pytest.raises(PolicyError) as err:
        PostgresSource("db", options)
    assert problem in "\n".join(err.value.problems)


@pytest.mark.parametrize(
    "dsn", ["host=h password=Sekrit-19 bogus=1", "postgresql://u:Sekrit-19%zz@h/db"]
)
def test_a_bad_dsn_is_reported_without_its_password(dsn: str) -> None:
    """A DSN that does not parse is named, but its text (and password) is not echoed."""
    with pytest.raises(PolicyError) as err:
        PostgresSource("db", {"dsn": dsn})
    assert "sources.db.dsn: not a valid connection string" in str(err.value)
    assert "Sekrit-19" not in str(err.value)
