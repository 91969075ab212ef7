"""Real Redis servers for the ``celery-redis`` and ``redis`` source tests.

Every server is a ``redis-server`` process on a free loopback port with its own directory
under ``tmp_path_factory`` (``--save "" --appendonly no``: nothing written to disk). Once per
session: a plain server, one with ``requirepass``, and a Sentinel group (a master, one replica
and three ``redis-sentinel`` processes). Tests that kill or freeze a server start their own
through ``redis_factory``. Every process is killed at the end of the session; none is left.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from senex_scale.testing import free_port
from senex_scale.testing import wait_until as shared_wait_until

READY_TIMEOUT = 10.0
PASSWORD = "auth-Secret-9c41e7"
"""``requirepass`` of the ``redis_auth`` server."""
MASTER_NAME = "senexmaster"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """``wait_until`` that treats Redis and socket errors as "not yet"."""
    shared_wait_until(check, timeout, what, ignore=(redis.RedisError, OSError))


@dataclass
class RedisProcess:
    """One ``redis-server`` (or ``redis-sentinel``) process on a loopback port."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    password: str | None = None
    clients: list[redis.Redis] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def url_without_password(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """The client for the test's own checks (one per server, closed when it is killed)."""
        if not self.clients:
            client = redis.Redis(
                host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5
            )
            self.clients.append(client)
        return self.clients[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap: the server vanishes like a crashed one."""
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
            self.proc.kill()
        self.proc.wait(timeout=10)


class RedisFactory:
    """Starts servers and sentinels; ``kill_all`` stops every one it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[RedisProcess] = []
        self.server = shutil.which("redis-server")
        self.sentinel = shutil.which("redis-sentinel")
        if self.server is None or self.sentinel is None:
            pytest.fail("redis-server and redis-sentinel are needed (run scripts/services)")

    def _spawn(
        self, argv: list[str], workdir: Path, port: int, password: str | None
    ) -> RedisProcess:
        log = workdir / "server.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        server = RedisProcess(port, workdir, proc, password)
        self.started.append(server)
        ping = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=0.5)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{argv[0]} on port {port} exited:\n{_tail(log)}")
                try:
                    if ping.ping():
                        return server
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{argv[0]} on port {port} does not answer PING:\n{_tail(log)}")
                time.sleep(0.02)
        finally:
            ping.close()

    def start(self, *, password: str | None = None, args: tuple[str, ...] = ()) -> RedisProcess:
        """A new ``redis-server`` answering PING on a free loopback port."""
        port = free_port()
        workdir = self.root / f"redis-{port}"
        workdir.mkdir()
        assert self.server is not None
        argv = [self.server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
        if password is not None:
            argv += ["--requirepass", password]
        return self._spawn([*argv, *args], workdir, port, password)

    def start_sentinel(self, master_port: int) -> RedisProcess:
        """A new ``redis-sentinel`` watching the master on ``master_port`` (quorum 2)."""
        port = free_port()
        workdir = self.root / f"sentinel-{port}"
        workdir.mkdir()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
        )
        assert self.sentinel is not None
        return self._spawn([self.sentinel, str(conf)], workdir, port, None)

    def kill_all(self) -> None:
        for server in self.started:
            server.kill()


@pytest.fixture(scope="session")
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFactory]:
    """Starts servers on demand; every one is killed at the end of the session."""
    factory = RedisFactory(tmp_path_factory.mktemp("redis"))
    try:
        yield factory
    finally:
        factory.kill_all()


@pytest.fixture(scope="session")
def redis_server(redis_factory: RedisFactory) -> RedisProcess:
    """A plain server (no password), also on a unix socket, shared by the session."""
    socket_path = redis_factory.root / f"plain-{free_port()}.sock"
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
    sentinels: list[RedisProcess]

    @property
    def url(self) -> str:
        """Celery's spelling: ``sentinel://h:p;sentinel://h:p;...``."""
        return ";".join(f"sentinel://{s.address}" for s in self.sentinels)

    def servers(self) -> list[RedisProcess]:
        return [self.master, self.replica]

    def current_master(self) -> RedisProcess:
        """The server the sentinels name as master now."""
        reply = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER_NAME)
        port = int(reply[1])
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
    replica = redis_factory.start(args=("--replicaof", "127.0.0.1", str(master.port)))
    sentinels = [redis_factory.start_sentinel(master.port) for _ in range(3)]
    group = SentinelGroup(master, replica, sentinels)
    wait_until(group.settled, 20, "the sentinels to agree on the master and its replica")
    return group


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[[Callable[[], bool], float, str], None]:
    """``wait_until(check, timeout, what)`` for the tests (conftest is not importable)."""
    return wait_until
