"""PgBouncerSource against a real PgBouncer in transaction mode (see conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Metric
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.pgbouncer import PgBouncerSource

pytestmark = pytest.mark.integration

NOW = 1_700_000_000.0

PgBouncer = Any
"""conftest.PgBouncer: test modules cannot import conftest under --import-mode=importlib."""


def request(query: str) -> MetricRequest:
    """A rule's request for ``query`` of the source named "bouncer"."""
    return MetricRequest(rule="r", metric=Metric(source="bouncer", query=query))


@contextlib.contextmanager
def source(bouncer: PgBouncer, **options: Any) -> Iterator[PgBouncerSource]:
    """A source on the admin console as the ``stats`` user, closed afterwards."""
    options.setdefault("dsn", bouncer.admin_dsn())
    src = PgBouncerSource("bouncer", options)
    try:
        yield src
    finally:
        src.close()


def by_instance(samples: list[Sample]) -> dict[str | None, float]:
    """Samples as {instance: value}, checking they all carry NOW."""
    assert all(s.at == NOW for s in samples), samples
    return {s.instance: s.value for s in samples}


def pool_value(samples: list[Sample]) -> float:
    """The single pool-level sample's value."""
    values = by_instance(samples)
    assert list(values) == [None], samples
    return values[None]


def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` every 0.05 s until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def one_client_waiting(bouncer: PgBouncer) -> Iterator[None]:
    """``pooled`` (pool_size 1) saturated: one client holds a transaction, a second one waits."""
    holder = psycopg.connect(bouncer.client_dsn())
    holder.execute("SELECT 1")  # BEGIN + SELECT: the pool's only server connection is held
    errors: list[BaseException] = []

    def wait_then_run() -> None:
        try:
            with psycopg.connect(bouncer.client_dsn()) as conn:
                conn.execute("SELECT 1")
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_then_run, daemon=True)
    waiter.start()
    try:
        yield
    finally:
        holder.commit()
        holder.close()
        waiter.join(timeout=10)
    assert not errors, errors


def test_pool_metrics_while_a_client_waits(pgbouncer: PgBouncer) -> None:
    """pool_size 1, two clients in transactions: one waits, its wait grows, the pool is full."""
    assert pgbouncer.pooled_size == 1
    with (
        source(pgbouncer, database="pooled") as pooled,
        source(pgbouncer, database="other") as other,
        source(pgbouncer, per_pool=True) as per_pool,
    ):
        with one_client_waiting(pgbouncer):
            until(
                lambda: pool_value(pooled.query(request("clients_waiting"), NOW)) == 1,
                what="a waiting client",
            )
            time.sleep(1.2)
            waiting = pool_value(pooled.query(request("clients_waiting"), NOW))
            max_wait = pool_value(pooled.query(request("max_wait_seconds"), NOW))
            use = pool_value(pooled.query(request("pool_use"), NOW))
            other_waiting = pool_value(other.query(request("clients_waiting"), NOW))
            other_use = pool_value(other.query(request("pool_use"), NOW))
            each_waiting = by_instance(per_pool.query(request("clients_waiting"), NOW))
            each_use = by_instance(per_pool.query(request("pool_use"), NOW))
        assert waiting == 1
        assert 1.2 <= max_wait < 5
        assert max_wait != int(max_wait)  # maxwait_us is added: sub-second resolution
        assert use == 100.0  # sv_active 1 of pool_size 1
        assert other_waiting == 0
        assert other_use == 0.0
        assert each_waiting == {"pooled/app": 1}
        assert each_use == {"pooled/app": 100.0}

        def idle() -> bool:
            values = [
                pool_value(pooled.query(request(q), NOW))
                for q in ("clients_waiting", "max_wait_seconds", "pool_use")
            ]
            return values == [0, 0, 0]

        until(idle, what="the pool to drain")


def test_the_console_answers_many_queries_on_one_connection(pgbouncer: PgBouncer) -> None:
    """Twenty queries in a row work (psycopg would prepare on the 6th: the console refuses)."""
    with source(pgbouncer) as src:
        for _ in range(20):
            assert pool_value(src.query(request("clients_waiting"), NOW)) >= 0


def test_unknown_database_is_permanent(pgbouncer: PgBouncer) -> None:
    """A database filter naming no database of SHOW DATABASES: permanent, naming the setting."""
    with (
        source(pgbouncer, database="nope") as src,
        pytest.raises(SourceError, match=r"sources\.bouncer\.database") as err,
    ):
        src.query(request("pool_use"), NOW)
    assert not err.value.temporary


def test_unknown_query_is_permanent_and_lists_the_known_ones(pgbouncer: PgBouncer) -> None:
    """An unknown metric.query: permanent SourceError with the known names."""
    with source(pgbouncer) as src, pytest.raises(SourceError) as err:
        src.query(request("clients_wating"), NOW)
    assert not err.value.temporary
    assert 'did you mean "clients_waiting"' in str(err.value)
    assert "max_wait_seconds" in str(err.value)


def test_outage_is_a_temporary_error_never_zero(spare_pgbouncer: PgBouncer) -> None:
    """PgBouncer stopped: every query raises a temporary SourceError within the timeout."""
    with source(spare_pgbouncer, connect_timeout="2s") as src:
        assert pool_value(src.query(request("clients_waiting"), NOW)) == 0
        spare_pgbouncer.stop()
        for query in ("clients_waiting", "max_wait_seconds", "pool_use"):
            started = time.monotonic()
            with pytest.raises(SourceError) as err:
                src.query(request(query), NOW)
            assert err.value.temporary, query
            assert time.monotonic() - started < 3, query


def test_a_frozen_pgbouncer_times_out(spare_pgbouncer: PgBouncer) -> None:
    """PgBouncer frozen (SIGSTOP): the open connection and a new one both time out, temporary."""
    with source(spare_pgbouncer, connect_timeout="2s", query_timeout="1s") as src:
        src.query(request("pool_use"), NOW)
        os.kill(spare_pgbouncer.proc.pid, signal.SIGSTOP)
        try:
            for expected in ("query_timeout", "timeout"):  # the kept connection, then connecting
                started = time.monotonic()
                with pytest.raises(SourceError, match=expected) as err:
                    src.query(request("pool_use"), NOW)
                assert err.value.temporary
                assert time.monotonic() - started < 3.5
        finally:
            os.kill(spare_pgbouncer.proc.pid, signal.SIGCONT)
        assert pool_value(src.query(request("pool_use"), NOW)) == 0


def test_wrong_password_is_permanent_and_never_shown(pgbouncer: PgBouncer) -> None:
    """A wrong password: permanent SourceError; the password is in no message, cause or repr."""
    secret = "Wrong-Pw-a3b9f2"
    with source(pgbouncer, dsn=pgbouncer.admin_dsn("stats", secret)) as src:
        with pytest.raises(SourceError, match="authentication failed") as err:
            src.query(request("pool_use"), NOW)
        assert not err.value.temporary
        assert secret not in "".join(traceback.format_exception(err.value))
        assert secret not in repr(src)
        assert secret not in repr(src.settings)


def test_password_from_the_environment(
    pgbouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """password_env supplies the console password."""
    monkeypatch.setenv("SENEX_TEST_PGB_PASSWORD", pgbouncer.stats_password)
    dsn = pgbouncer.admin_dsn("stats", None)
    with source(pgbouncer, dsn=dsn, password_env="SENEX_TEST_PGB_PASSWORD") as src:
        assert pool_value(src.query(request("clients_waiting"), NOW)) >= 0


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"dsn": "host=h dbname=app"}, 'sources.bouncer.dsn: dbname must be "pgbouncer"'),
        ({"dsn": "host=h dbname=pgbouncer", "per_pool": "maybe"}, "sources.bouncer.per_pool:"),
        ({"dsn": "host=h dbname=pgbouncer", "query_timeout": "-1s"}, "query_timeout"),
        ({"dsn": "host=h dbname=pgbouncer", "databse": "x"}, 'did you mean "database"'),
    ],
)
def test_settings_errors_name_the_field(options: dict[str, Any], problem: str) -> None:
    """Bad settings: a PolicyError whose problem names sources.bouncer and the field."""
    with pytest.raises(PolicyError) as err:
        PgBouncerSource("bouncer", options)
    assert problem in "\n".join(err.value.problems)
