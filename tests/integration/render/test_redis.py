"""Redis primary, replicas and three Sentinels run on their rendered files, and a failover
(primary killed) makes a replica the primary, which the sentinels then report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MASTER = "senex-redis"
FAILOVER_TIMEOUT = 60.0


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; Redis errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def group(deployment: Any, launchers: Any) -> Iterator[dict[str, Any]]:
    """cache01 (primary), cache02 and cache03 (replicas), a sentinel on each."""
    password = deployment.secrets["SENEX_REDIS_PASSWORD"]
    sentinel_password = deployment.secrets["SENEX_SENTINEL_PASSWORD"]
    servers: dict[str, Any] = {}
    try:
        for host in ("cache01", "cache02", "cache03"):
            servers[host] = launchers.redis(
                deployment.root / f"redis-{host}",
                deployment.ports[host]["redis"],
                conf=deployment.file(host, "redis/redis.conf"),
                password=password,
            ).start()
        for host in ("cache01", "cache02", "cache03"):
            servers[f"sentinel-{host}"] = launchers.redis(
                deployment.root / f"sentinel-{host}",
                deployment.ports[host]["sentinel"],
                conf=deployment.file(host, "redis/sentinel.conf"),
                password=sentinel_password,
            ).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def sentinel_view(server: Any) -> tuple[int, int, tuple[str, int]]:
    """(other sentinels, replicas, master address) as one sentinel sees them."""
    client = server.client()
    try:
        sentinels = client.execute_command("SENTINEL", "SENTINELS", MASTER)
        replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER)
        host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
    finally:
        client.close()
    return len(sentinels), len(replicas), (host.decode(), int(port))


def test_replicas_follow_the_primary(deployment: Any, group: dict[str, Any]) -> None:
    """A write on the primary reaches both replicas, which refuse writes (replica-read-only)."""
    primary = group["cache01"].client()
    primary.set("senex:probe", "1")
    for host in ("cache02", "cache03"):
        client = group[host].client()
        assert wait_for(lambda c=client: c.get("senex:probe") == b"1", f"{host} to replicate")
        with pytest.raises(redis.ReadOnlyError):
            client.set("senex:probe", "2")
        client.close()
    primary.close()


def test_sentinels_need_their_password(deployment: Any, group: dict[str, Any]) -> None:
    """The rendered sentinels require auth (requirepass), so SENTINEL_KWARGS must carry it."""
    port = deployment.ports["cache01"]["sentinel"]
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
    client.close()


def test_failover_promotes_a_replica(deployment: Any, group: dict[str, Any]) -> None:
    """Kill the primary: within the rendered timeouts the sentinels agree (quorum 2) on a
    replica as the new primary, which then accepts writes with the same password."""
    sentinels = [group[f"sentinel-{h}"] for h in ("cache01", "cache02", "cache03")]
    old = ("127.0.0.1", deployment.ports["cache01"]["redis"])
    for sentinel in sentinels:
        wait_for(
            lambda s=sentinel: sentinel_view(s)[:2] == (2, 2) and sentinel_view(s)[2] == old,
            "every sentinel to know the others and both replicas",
        )
    group["cache01"].kill()
    replicas = {deployment.ports[h]["redis"]: h for h in ("cache02", "cache03")}

    def promoted() -> tuple[str, int] | None:
        views = {sentinel_view(s)[2] for s in sentinels}
        if len(views) == 1:
            (address,) = views
            if address[1] in replicas:
                return address
        return None

    address = wait_for(promoted, "a replica to be promoted", FAILOVER_TIMEOUT)
    assert address[0] == "127.0.0.1"
    port = address[1]
    client = group[replicas[port]].client()
    assert wait_for(lambda: client.execute_command("ROLE")[0] == b"master", "ROLE master")
    assert client.set("senex:after-failover", "1")
    client.close()
