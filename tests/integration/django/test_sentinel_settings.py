"""``sentinel_settings`` against a real Redis (with a password) and a real Sentinel.

One list of Sentinels in, and each of the three consumers works through it: the django-redis
cache, the Celery broker (kombu's sentinel transport) and the Channels layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from senex_scale.contrib.django.settings import sentinel_settings
from senex_scale.lab import Redis, Sentinel

from .conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_setup")]

PASSWORD = "redis-Secret-1e9b44"


@pytest.fixture(scope="module")
def sentinel_config(stack: Stack) -> Iterator[dict[str, Any]]:
    master = Redis(stack.root / "sentinel-master", password=PASSWORD).start()
    sentinel = Sentinel(stack.root / "sentinel", master=master, name="senexmaster", quorum=1)
    sentinel.start()
    try:
        yield sentinel_settings(
            f"127.0.0.1:{sentinel.port}", master="senexmaster", password=PASSWORD
        )
    finally:
        sentinel.stop()
        master.stop()


def test_the_cache_works_through_sentinel(sentinel_config: dict[str, Any]) -> None:
    """django-redis resolves the master through Sentinel and talks only to it."""
    from django_redis.cache import RedisCache
    from redis.sentinel import SentinelConnectionPool

    conf = sentinel_config["CACHES"]["default"]
    cache = RedisCache(conf["LOCATION"], conf)
    cache.set("k", {"v": 1}, 30)
    assert cache.get("k") == {"v": 1}
    assert cache.incr("n", 1) if cache.add("n", 1) else True
    client = cache.client
    assert len(client._server) == 1  # no replica server for reads
    assert isinstance(client.get_client(write=False).connection_pool, SentinelConnectionPool)


def test_the_celery_broker_works_through_sentinel(sentinel_config: dict[str, Any]) -> None:
    """kombu's sentinel transport finds the master and moves a message."""
    from kombu import Connection

    url = sentinel_config["CELERY_BROKER_URL"]
    assert PASSWORD in url  # the master's password travels in the URL (Celery masks it)
    options = sentinel_config["CELERY_BROKER_TRANSPORT_OPTIONS"]
    with Connection(url, transport_options=options) as conn:
        queue = conn.SimpleQueue("senex-test")
        queue.put({"hello": "sentinel"})
        message = queue.get(timeout=5)
        assert message.payload == {"hello": "sentinel"}
        message.ack()
        queue.close()


def test_the_channel_layer_works_through_sentinel(sentinel_config: dict[str, Any]) -> None:
    """channels_redis sends and receives through the master Sentinel names."""
    from channels_redis.core import RedisChannelLayer

    pools: list[Any] = []

    class Layer(RedisChannelLayer):  # type: ignore[misc]
        def create_pool(self, index: int) -> Any:
            pools.append(super().create_pool(index))
            return pools[-1]

    layer = Layer(**sentinel_config["CHANNEL_LAYERS"]["default"]["CONFIG"])

    async def roundtrip() -> Any:
        name = await layer.new_channel()
        await layer.send(name, {"type": "hello"})
        received = await asyncio.wait_for(layer.receive(name), 5)
        await layer.flush()
        await layer.close_pools()
        # channels_redis does not close its Sentinel clients; the test does.
        for pool in pools:
            for client in pool.sentinel_manager.sentinels:
                await client.aclose()
        return received

    assert asyncio.run(roundtrip()) == {"type": "hello"}


def test_the_checks_accept_what_the_helper_builds(sentinel_config: dict[str, Any]) -> None:
    """No system-check finding for the helper's own output."""
    from senex_scale.contrib.django.checks import check_redis

    assert (
        check_redis(
            sentinel_config["CACHES"],
            broker_url=sentinel_config["CELERY_BROKER_URL"],
            broker_options=sentinel_config["CELERY_BROKER_TRANSPORT_OPTIONS"],
            channel_layers=sentinel_config["CHANNEL_LAYERS"],
        )
        == []
    )


def test_the_cache_and_broker_follow_a_failover(stack: Stack) -> None:
    """Kill the master: Sentinel promotes the replica, and the same settings keep working,
    with the data replicated before the kill."""
    from django_redis.cache import RedisCache
    from django_redis.exceptions import ConnectionInterrupted
    from kombu import Connection
    from redis import RedisError

    from senex_scale.testing import wait_until

    root = stack.root / "failover"
    master = Redis(root / "master", password=PASSWORD).start()
    replica = Redis(root / "replica", password=PASSWORD, replica_of=master).start()
    sentinel = Sentinel(
        root / "sentinel", master=master, name="failmaster", quorum=1, down_after_ms=500
    ).start()
    try:
        built = sentinel_settings(
            f"127.0.0.1:{sentinel.port}", master="failmaster", password=PASSWORD
        )
        conf = built["CACHES"]["default"]
        cache = RedisCache(conf["LOCATION"], conf)
        cache.set("before", "kept", 300)
        wait_until(lambda: replica.client().dbsize() > 0, 10, "replication of the key")
        wait_until(
            lambda: bool(sentinel.client().sentinel_slaves("failmaster")),
            20,
            "the sentinel to discover the replica",
        )
        master.kill()
        wait_until(
            lambda: sentinel.master_address()[1] == replica.port,
            30,
            "the sentinel to promote the replica",
            ignore=(RedisError,),
        )
        errors = (ConnectionInterrupted, RedisError, OSError)
        wait_until(lambda: cache.get("before") == "kept", 15, "the cache", ignore=errors)
        cache.set("after", "written", 300)
        assert replica.client().exists(":1:after")
        options = built["CELERY_BROKER_TRANSPORT_OPTIONS"]
        with Connection(built["CELERY_BROKER_URL"], transport_options=options) as conn:
            queue = conn.SimpleQueue("after-failover")
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            message.ack()
            queue.close()
        assert message.payload == {"n": 1}
        cache.client.close()
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()
