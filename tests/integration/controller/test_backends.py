"""The state store on a real PostgreSQL (and SQLite, the same tests), and the leader locks on
real PostgreSQL and Redis: one holder at a time, and a standby takes over when the holder
dies (a killed backend, an expired Redis key) within two intervals."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from senex_scale.controller.leader import PostgresLeader, RedisLeader, build_leader
from senex_scale.core.state import Memory, Sample
from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.lab import Postgres, Redis, lab_dir
from senex_scale.store import Store, open_store
from senex_scale.testing import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "state-Secret-2b7e"


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    root = lab_dir("senex-state-pg-")  # PostgreSQL runs as postgres: not under tmp_path
    try:
        with Postgres(root) as server:
            server.create_role("senex", PASSWORD)
            server.create_database("senex", owner="senex")
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    with Redis(tmp_path_factory.mktemp("leader-redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:{tmp_path / 'state.db'}"
    else:
        pg: Postgres = request.getfixturevalue("pg")
        url = pg.url("senex", PASSWORD, "senex")
        with pg.connect("senex") as conn:
            for table in ("kv", "samples", "pool_ticks", "rule_ticks", "decisions", "actions"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
    s = open_store(url)
    yield s
    s.close()


def test_store_round_trips_everything_a_restart_needs(store: Store) -> None:
    memory = Memory().with_scale("web", 1000.5, 1, 2, keep=3600).with_action("pg-cpu", 1001.25)
    store.save_memory(memory)
    store.add_samples("cpu", [Sample(1.0, 50.0), Sample(2.0, 60.0, "3")])
    store.add_samples("cpu", [Sample(2.0, 99.0, "3")])  # the same time again: kept once
    decision = {
        "kind": "scale",
        "pool": "web",
        "priority": "high",
        "current": 1,
        "desired": 2,
        "direction": "out",
        "reasons": ["cpu 90 > 70 for 5m"],
    }
    assert [store.next_fence() for _ in range(3)] == [1, 2, 3]
    did = store.record_decision(10.0, decision, "running", fence=3)
    aid = store.begin_action(did, "web", "out", 1, 2, fence=3, at=10.0)

    again = open_store(store.url)
    try:
        assert again.load_memory() == memory
        assert again.samples("cpu", 0) == [Sample(1.0, 50.0), Sample(2.0, 60.0, "3")]
        assert [a.id for a in again.open_actions()] == [aid]
        row = again.history(limit=1)[0]
        assert (row.id, row.outcome, row.reasons) == (did, "running", ("cpu 90 > 70 for 5m",))
        with pytest.raises(PermanentError, match="another controller leads"):
            again.begin_action(None, "web", "out", 1, 2, fence=2, at=11.0)
        again.finish_action(aid, "done", [{"what": "start"}], 12.0)
        again.set_outcome(did, "done", {"after": 2})
        assert again.open_actions() == []
        assert again.history(outcome="done")[0].detail == {"after": 2}
        assert again.next_fence() == 4
        assert again.next_fence() == 5
        with pytest.raises(PermanentError, match="another controller leads"):
            again.finish_action(aid, "done", [], 13.0, fence=3)
        assert again.prune(5.0) == 2  # the two samples; the decision at 10.0 stays
        assert again.history(limit=5) != []
    finally:
        again.close()


def test_postgres_store_errors_name_the_url_without_the_password(pg: Postgres) -> None:
    url = pg.url("senex", "wrong-" + PASSWORD, "senex")
    with pytest.raises(TemporaryError, match="password authentication failed") as info:
        open_store(url)
    assert "wrong-" not in str(info.value)
    assert ":***@" in str(info.value)


def test_postgres_advisory_lock_one_holder_and_takeover_when_it_dies(pg: Postgres) -> None:
    url = pg.url("senex", PASSWORD, "senex")
    a, b = PostgresLeader(url), PostgresLeader(url)
    try:
        assert a.acquire()
        assert not b.acquire()
        assert a.acquire(), "the holder keeps it"
        # the holder's process dies: its session ends on the server
        with pg.connect() as conn:
            pid = a._conn.info.backend_pid
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(lambda: b.acquire(), 5, "the standby to take the lock")
        assert not a.acquire(), "the old holder learns it lost the lock"
    finally:
        a.release()
        b.release()


def test_default_leader_of_a_postgres_state_is_the_advisory_lock(pg: Postgres) -> None:
    leader = build_leader(None, pg.url("senex", PASSWORD, "senex"), 1.5)
    assert isinstance(leader, PostgresLeader)


def test_redis_lock_expires_when_its_holder_stops_renewing(redis_server: Redis) -> None:
    interval = 1.0
    url = redis_server.url()
    a = RedisLeader(url, ttl=1.5 * interval, name="test:leader")
    b = RedisLeader(url, ttl=1.5 * interval, name="test:leader")
    try:
        assert a.acquire()
        assert not b.acquire()
        time.sleep(3 * interval)  # a renews in the background: still the holder
        assert not b.acquire()
        assert a.acquire()
        a._stop.set()  # a's process freezes: no renewals, no release
        died = time.monotonic()
        wait_until(lambda: b.acquire(), 5, "the standby to take the expired lock", interval=0.1)
        took = time.monotonic() - died
        print(f"\nRedis lock takeover after {took:.2f}s (interval {interval:g}s)")
        assert took <= 2 * interval
        assert not a.acquire(), "a's token no longer matches"
    finally:
        b.release()


def test_postgres_store_survives_a_database_restart(pg: Postgres) -> None:
    """The store down: a TemporaryError naming it (password masked), which the loop logs and
    retries next tick; back up: the same store object works again (it reconnects)."""
    store = open_store(pg.url("senex", PASSWORD, "senex"))
    try:
        store.put("probe", 1)
        pg.stop()
        try:
            with pytest.raises(TemporaryError, match=r"state postgresql://senex:\*\*\*@") as info:
                store.put("probe", 2)
            assert PASSWORD not in str(info.value)
            with pytest.raises(TemporaryError):
                store.get("probe")
        finally:
            pg.start()
        store.put("probe", 3)
        assert store.get("probe") == 3
    finally:
        store.close()


def test_fences_taken_at_once_are_all_different(store: Store) -> None:
    """Two controllers taking over at the same moment never get the same token."""
    import threading

    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        other = open_store(store.url)
        try:
            for _ in range(25):
                fence = other.next_fence()
                with lock:
                    got.append(fence)
        finally:
            other.close()

    threads = [threading.Thread(target=take) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 76))
