"""Both Redis sources through three real sentinels, before and after a failover."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery

from senex_scale.errors import SourceError
from senex_scale.policy.models import Metric
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.celery_redis import CeleryRedisSource
from senex_scale.sources.redis_memory import RedisMemorySource

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import SentinelGroup

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
MASTER_NAME = "senexmaster"
MIB = 1024 * 1024
Wait = Callable[[Callable[[], bool], float, str], None]


def send(group: SentinelGroup, per_priority: dict[int, int]) -> None:
    """Send tasks to "trading" through Celery's own Sentinel transport."""
    app = Celery("senex-test", broker=group.url, set_as_current=False)
    app.conf.broker_transport_options = {"master_name": MASTER_NAME}
    try:
        for priority, n in per_priority.items():
            for _ in range(n):
                app.send_task("x.y", queue="trading", priority=priority)
    finally:
        app.close()


def options(group: SentinelGroup, **extra: Any) -> dict[str, Any]:
    return {"url": group.url, "master_name": MASTER_NAME, "socket_timeout": 1, **extra}


def check_sources(group: SentinelGroup, expected_count: int) -> None:
    """The count and the per-node memory ratio, through the sentinels, as the servers say."""
    master = group.current_master()
    for server in group.servers():
        server.client().config_set("maxmemory", 64 * MIB)
    celery = CeleryRedisSource("broker", options(group))
    memory = RedisMemorySource("cache", options(group))
    try:
        queue = Metric(source="broker", query="trading")
        [sample] = celery.query(MetricRequest(rule="q", metric=queue), NOW)
        assert sample.value == expected_count
        ratio = Metric(source="cache", query="used_memory_ratio")
        samples = memory.query(MetricRequest(rule="m", metric=ratio), NOW)
    finally:
        celery.close()
        memory.close()
    values = {s.instance: s.value for s in samples}
    assert set(values) == {s.address for s in group.servers()}
    assert next(iter(values)) == master.address  # the master first, then its replicas
    for server in group.servers():
        used = server.client().info("memory")["used_memory"]
        assert values[server.address] == pytest.approx(used / (64 * MIB) * 100, rel=0.1)


def test_sentinel_count_and_memory(sentinel_group: SentinelGroup) -> None:
    """Through three sentinels: the count reads the master, memory covers master and replica."""
    master = sentinel_group.current_master()
    master.client().flushall()
    send(sentinel_group, {0: 2, 3: 1, 9: 3})
    check_sources(sentinel_group, 6)


def test_sentinel_failover(sentinel_group: SentinelGroup, wait_until: Wait) -> None:
    """After SENTINEL FAILOVER the sources follow the new master (one source kept open too)."""
    old = sentinel_group.current_master()
    old.client().flushall()
    send(sentinel_group, {0: 4, 6: 3})
    assert old.client().wait(1, 5000) == 1  # replicated before the switch
    kept = CeleryRedisSource("broker", options(sentinel_group))
    queue = MetricRequest(rule="q", metric=Metric(source="broker", query="trading"))
    try:
        assert kept.query(queue, NOW)[0].value == 7
        sentinel_group.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_until(
            lambda: sentinel_group.switched_from(old), 20, "the sentinels to name a new master"
        )
        new = sentinel_group.current_master()
        assert new is not old
        # Sentinel demotes the old master only at its next INFO round (up to 10 s later):
        # until then it is listed as a replica that still says "master", and is measured.
        check_sources(sentinel_group, 7)
        # A source opened before the failover: its next queries reach the new master (one
        # may fail while its old connection is dropped; it is temporary and never zero).
        send(sentinel_group, {3: 1})
        values: list[float] = []
        errors: list[SourceError] = []
        for _ in range(3):
            try:
                values.append(kept.query(queue, NOW)[0].value)
            except SourceError as exc:
                errors.append(exc)
        assert all(e.temporary for e in errors), errors
        assert len(errors) <= 1, errors
        assert values[-1] == 8
    finally:
        kept.close()
