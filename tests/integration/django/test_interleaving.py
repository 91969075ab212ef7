"""Randomized interleavings of writes, reads and replica trouble, checked by an oracle.

The reference app runs as it does in production: a real Daphne (HTTP and WebSockets) and a
real Celery worker, both reading through the router from a streaming replica behind
PgBouncer (``replica``) and a second one from the registry (``replica_b``). Hypothesis draws
a sequence of steps:

- a user's client writes a trade (``POST /api/trades/``, version 1, 2, 3, ... as quantity);
- the same client reads it back across each boundary the pin crosses: the next HTTP request
  (the pin cookie), a Celery task it queues (the ``senex_pin`` header), a new WebSocket
  connection it opens (the cookie, read by ``PinScopeMiddleware``);
- a replica's replay is paused or resumed, its WAL receiver cut or restored, or it restarts;
- time passes (pins and lag bounds expire).

The oracle: no read ever returns a state older than the reader's own last acknowledged write
(the newest trade seen >= the last version written; the task's book value >= the sum of the
versions). The router's bounds are short (lag 1 s, TTL 0.3 s, pin 2 s) so that expiry, lag
and recovery all happen within a few seconds.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from senex_scale.lab import Postgres

from .conftest import (
    Stack,
    cut_receiver,
    reference_app,
    replica_b_entry,
    restore_receiver,
    wait_replayed_on,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("django_setup")]

USERS = 2
_ids = itertools.count(30000, 10)


@dataclass
class App:
    """Daphne and a Celery worker of the reference app, and a client for task results."""

    url: str
    port: int
    celery: Any
    replicas: dict[str, Postgres]
    conninfo: dict[str, str]

    def world(self) -> World:
        """Fresh users and clients; the replicas as the last example left them (healthy)."""
        base = next(_ids)
        return World(
            self,
            {n: Replica(r, self.conninfo[n]) for n, r in self.replicas.items()},
            [httpx.Client(base_url=self.url, timeout=30) for _ in range(USERS)],
            [base + u for u in range(USERS)],
        )


@dataclass
class Replica:
    """What the test did to one replica (undone after each example)."""

    server: Postgres
    conninfo: str  # its primary_conninfo when the receiver is not cut
    paused: bool = False
    is_cut: bool = False


@dataclass
class World:
    app: App
    replicas: dict[str, Replica]
    clients: list[httpx.Client]
    user_ids: list[int]
    written: list[int] = field(default_factory=lambda: [0] * USERS)
    log: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def app(stack: Stack, replica_b: Postgres) -> Iterator[App]:
    conninfo: dict[str, str] = {}
    for name, server in (("replica", stack.replica), ("replica_b", replica_b)):
        with server.connect() as conn:  # a restored receiver reconnects at once
            conn.execute("ALTER SYSTEM SET wal_retrieve_retry_interval = '100ms'")
            conn.execute("SELECT pg_reload_conf()")
            row = conn.execute("SHOW primary_conninfo").fetchone()
            assert row is not None
            conninfo[name] = str(row[0])
    registry = stack.root / "interleaving-replicas.json"
    registry.write_text(json.dumps({"version": 1, "replicas": [replica_b_entry(replica_b)]}))
    with reference_app(
        stack,
        "interleaving",
        SENEX_MAX_LAG_SECONDS="1",
        SENEX_HEALTH_TTL="0.3",
        SENEX_PIN_SECONDS="2",
        SENEX_REPLICA_REGISTRY=str(registry),
    ) as running:
        replicas = {"replica": stack.replica, "replica_b": replica_b}
        yield App(running.url, running.port, running.celery, replicas, conninfo)


# --------------------------------------------------------------------------- the steps


def _newest(trades: list[dict[str, Any]]) -> int:
    return max((int(Decimal(t["quantity"])) for t in trades), default=0)


def write(world: World, user: int) -> None:
    version = world.written[user] + 1
    trade = {
        "user_id": world.user_ids[user],
        "symbol": "ORC",
        "side": "buy",
        "quantity": str(version),
        "price": "1",
    }
    response = world.clients[user].post("/api/trades/", json=trade)
    assert response.status_code == 201, response.text
    world.written[user] = version


def read_http(world: World, user: int) -> None:
    body = world.clients[user].get(f"/api/trades/latest/{world.user_ids[user]}/").json()
    seen = _newest(body["trades"])
    assert seen >= world.written[user], f"HTTP read saw version {seen}: {world.log}"


def read_websocket(world: World, user: int) -> None:
    client = world.clients[user]
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    headers = {"Origin": world.app.url, **({"Cookie": cookie} if cookie else {})}
    ws_url = f"ws://127.0.0.1:{world.app.port}/ws/positions/{world.user_ids[user]}/"
    with connect(ws_url, additional_headers=headers, proxy=None, open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
    seen = _newest(first["trades"])
    assert seen >= world.written[user], f"WebSocket read saw version {seen}: {world.log}"


def read_task(world: World, user: int) -> None:
    response = world.clients[user].post(f"/api/accounts/{world.user_ids[user]}/recalculate/")
    assert response.status_code == 202, response.text
    from celery.result import AsyncResult

    value = Decimal(AsyncResult(response.json()["task"], app=world.app.celery).get(timeout=30))
    version = world.written[user]
    assert value >= version * (version + 1) // 2, f"task saw {value} at v{version}: {world.log}"


def pause(world: World, name: str) -> None:
    replica = world.replicas[name]
    with replica.server.connect() as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    replica.paused = True


def resume(world: World, name: str) -> None:
    replica = world.replicas[name]
    with replica.server.connect() as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    replica.paused = False


def cut(world: World, name: str) -> None:
    replica = world.replicas[name]
    replica.is_cut = True
    cut_receiver(replica.server, wait=not replica.paused)


def restore(world: World, name: str) -> None:
    replica = world.replicas[name]
    if replica.is_cut:
        restore_receiver(replica.server, replica.conninfo, wait=not replica.paused)
        replica.is_cut = False


def restart(world: World, name: str) -> None:
    replica = world.replicas[name]
    replica.server.stop()
    replica.server.start()
    replica.paused = False  # a pause does not survive a restart


def sleep(world: World, seconds: float) -> None:
    time.sleep(seconds)


REPLICA_STEPS = {"pause": pause, "resume": resume, "cut": cut, "restore": restore}
READS = {"read_http": read_http, "read_websocket": read_websocket, "read_task": read_task}
users = st.integers(0, USERS - 1)
replicas = st.sampled_from(["replica", "replica_b"])
step = st.one_of(
    st.tuples(st.just("write"), users),
    st.tuples(st.sampled_from(sorted(READS)), users),
    st.tuples(st.sampled_from(sorted(REPLICA_STEPS)), replicas),
    st.tuples(st.just("restart"), replicas),
    st.tuples(st.just("sleep"), st.sampled_from([0.1, 0.5, 1.5, 2.5])),
)


def _undo(world: World) -> None:
    """Every replica up, replaying and streaming from the primary again (each replica tried,
    the first error raised at the end)."""
    errors: list[Exception] = []
    for replica in world.replicas.values():
        try:
            if not replica.server.alive:
                replica.server.start()
            with replica.server.connect() as conn:
                conn.execute("SELECT pg_wal_replay_resume()")
            restore_receiver(replica.server, replica.conninfo)
        except Exception as exc:  # try the others, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@settings(
    max_examples=int(os.environ.get("SENEX_INTERLEAVING_EXAMPLES", "10")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=6, max_size=16))
def test_no_read_is_older_than_the_readers_own_last_write(
    app: App, steps: list[tuple[str, Any]]
) -> None:
    """Any interleaving of writes, reads (HTTP, task, WebSocket) and replica lag, receiver
    cuts and restarts: every read shows at least the reader's own last write."""
    world = app.world()
    actions: dict[str, Any] = {"write": write, "restart": restart, "sleep": sleep}
    actions.update(READS)
    actions.update(REPLICA_STEPS)
    try:
        for name, arg in steps:
            world.log.append(f"{name}({arg})")
            actions[name](world, arg)
            if name == "write":  # and read it back at once, across a random boundary
                reader = sorted(READS)[world.written[arg] % len(READS)]
                world.log.append(f"{reader}({arg})")
                READS[reader](world, arg)
    finally:
        for client in world.clients:
            client.close()
        _undo(world)


def test_the_oracle_catches_a_stale_read(app: App, paused_replay: Stack) -> None:
    """The oracle is not vacuous: a client without the pin cookie reads the paused replica
    (judged within its 1 s bound: seen current just before) and is caught."""
    world = app.world()
    caught = 0
    try:
        # A slow moment may let the lag bound expire before the read: try again. Each try
        # starts from replicas that replayed everything (the last try's write included) and
        # are paused again, and from an expired probe, so that the probe before the write
        # finds them current; a paused replica behind an earlier write never is.
        for _ in range(5):
            for name in world.replicas:
                resume(world, name)
                wait_replayed_on(paused_replay, world.replicas[name].server)
                pause(world, name)
            time.sleep(0.5)  # past the router's health TTL (0.3 s)
            read_http(world, 1)  # a probe now finds both replicas current
            write(world, 0)
            world.clients[0].cookies.clear()
            try:
                read_http(world, 0)
            except AssertionError as exc:
                caught += "HTTP read saw version" in str(exc)
                break
        assert caught, "no stale read in five tries: the oracle may be vacuous"
    finally:
        for client in world.clients:
            client.close()
        _undo(world)
