"""Real Redis servers for the ``celery-redis`` and ``redis`` source tests.

Every server is a ``senex_scale.lab`` ``Redis`` (docs/lab.md: nothing written to disk) on a
free loopback port with its own directory under ``tmp_path_factory``. Once per session: a
plain server, one with ``requirepass``, and a Sentinel group (a master, one replica and three
sentinels). Tests that kill or freeze a server start their own through ``redis_factory``.
Every server is stopped at the end of the session; none is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from senex_scale import lab
from senex_scale.testing import wait_until as shared_wait_until

PASSWORD = "auth-Secret-9c41e7"
"""``requirepass`` of the ``redis_auth`` server."""
MASTER_NAME = "senexmaster"

S = TypeVar("S", bound=lab.Server)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """``wait_until`` that treats Redis and socket errors as "not yet"."""
    shared_wait_until(check, timeout, what, ignore=(redis.RedisError, OSError))


class RedisProcess(lab.Redis):
    """The lab's Redis, and its URL without the password."""

    @property
    def url_without_password(self) -> str:
        return f"redis://{self.address}/0"


class RedisFactory:
    """Starts servers and sentinels; ``stop_all`` stops every one it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[lab.Server] = []

    def start(self, *, password: str | None = None, args: tuple[str, ...] = ()) -> RedisProcess:
        """A new ``redis-server`` answering PING on a free loopback port."""
        port = lab.free_port()
        server = RedisProcess(self.root / f"redis-{port}", port, password=password, args=args)
        return self._started(server)

    def start_replica(self, master: RedisProcess) -> RedisProcess:
        port = lab.free_port()
        return self._started(RedisProcess(self.root / f"redis-{port}", port, replica_of=master))

    def start_sentinel(self, master: RedisProcess) -> lab.Sentinel:
        """A new sentinel watching ``master`` (quorum 2)."""
        port = lab.free_port()
        sentinel = lab.Sentinel(
            self.root / f"sentinel-{port}",
            port,
            master=master,
            name=MASTER_NAME,
            down_after_ms=2000,
            failover_timeout_ms=5000,
        )
        return self._started(sentinel)

    def _started(self, server: S) -> S:
        self.started.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture(scope="session")
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFactory]:
    """Starts servers on demand; every one is stopped at the end of the session."""
    factory = RedisFactory(tmp_path_factory.mktemp("redis"))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def redis_server(redis_factory: RedisFactory) -> RedisProcess:
    """A plain server (no password), also on a unix socket, shared by the session."""
    socket_path = redis_factory.root / f"plain-{lab.free_port()}.sock"
    return redis_factory.start(args=("--unixsocket", str(socket_path), "--unixsocketperm", "700"))


@pytest.fixture
def redis_plain(redis_server: RedisProcess) -> RedisProcess:
    """The shared plain server, emptied and with ``maxmemory 0``, for one test."""
    client = redis_server.client()
    client.flushall()
    client.config_set("maxmemory", 0)
    return redis_server


@pytest.fixture(scope="session")
def redis_auth(redis_factory: RedisFactory) -> RedisProcess:
    """A server with ``requirepass PASSWORD``, shared by the session."""
    return redis_factory.start(password=PASSWORD)


@dataclass
class SentinelGroup:
    """A master, its replica and three sentinels watching them."""

    master: RedisProcess
    replica: RedisProcess
    sentinels: list[lab.Sentinel]

    @property
    def url(self) -> str:
        """Celery's spelling: ``sentinel://h:p;sentinel://h:p;...``."""
        return ";".join(f"sentinel://{s.address}" for s in self.sentinels)

    def servers(self) -> list[RedisProcess]:
        return [self.master, self.replica]

    def current_master(self) -> RedisProcess:
        """The server the sentinels name as master now."""
        port = self.sentinels[0].master_address()[1]
        return next(s for s in self.servers() if s.port == port)

    def switched_from(self, old: RedisProcess) -> bool:
        """Every sentinel names the same new master (not ``old``) and the failover is over."""
        ports = set()
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(MASTER_NAME)
            if "failover" in state["flags"]:
                return False
            ports.add(int(state["port"]))
        if len(ports) != 1 or old.port in ports:
            return False
        new = next(s for s in self.servers() if s.port in ports)
        return bool(new.client().info("replication")["role"] == "master")

    def settled(self) -> bool:
        """Every sentinel agrees on one master that sees its replica, and knows the others."""
        masters = set()
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(MASTER_NAME)
            if state["num-other-sentinels"] != 2 or state["num-slaves"] < 1:
                return False
            if any(flag in state["flags"] for flag in ("s_down", "o_down", "failover")):
                return False
            masters.add(int(state["port"]))
        if len(masters) != 1:
            return False
        master = next(s for s in self.servers() if s.port in masters)
        other = next(s for s in self.servers() if s is not master)
        info = other.client().info("replication")
        return bool(
            info["role"] == "slave"
            and int(info["master_port"]) == master.port
            and info["master_link_status"] == "up"
        )


@pytest.fixture(scope="session")
def sentinel_group(redis_factory: RedisFactory) -> SentinelGroup:
    """A Sentinel-managed master and replica, watched by three sentinels, all settled."""
    master = redis_factory.start()
    replica = redis_factory.start_replica(master)
    sentinels = [redis_factory.start_sentinel(master) for _ in range(3)]
    group = SentinelGroup(master, replica, sentinels)
    wait_until(group.settled, 20, "the sentinels to agree on the master and its replica")
    return group


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[[Callable[[], bool], float, str], None]:
    """``wait_until(check, timeout, what)`` for the tests (conftest is not importable)."""
    return wait_until
