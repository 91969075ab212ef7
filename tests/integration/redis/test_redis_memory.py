"""The ``redis`` memory source against real servers: ratio, bytes, limits, several nodes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
import redis

from senex_scale.errors import SourceError
from senex_scale.policy.models import Metric
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.redis_memory import (
    RedisMemorySource,
    cgroup_memory_limit,
    parse_bytes,
)

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import RedisProcess

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
MIB = 1024 * 1024


def request(query: str = "used_memory_ratio") -> MetricRequest:
    return MetricRequest(rule="mem", metric=Metric(source="cache", query=query, signal="memory"))


def query(options: dict[str, Any], what: str = "used_memory_ratio") -> dict[str, float]:
    """The source's samples as {instance: value}; every one stamped NOW."""
    source = RedisMemorySource("cache", options)
    try:
        samples = source.query(request(what), NOW)
    finally:
        source.close()
    assert all(s.at == NOW for s in samples)
    return {s.instance or "": s.value for s in samples}


def bracketed(
    options: dict[str, Any], check: Callable[[], float], what: str = "used_memory_ratio"
) -> tuple[float, float, float]:
    """(check before, the source's single value, check after), the source already connected.

    Every client connection costs the server some memory: the source connects first (one
    query), so that ``check`` before and after see the same connections as its answer.
    """
    source = RedisMemorySource("cache", options)
    try:
        source.query(request(what), NOW)
        before = check()
        samples = source.query(request(what), NOW)
        after = check()
    finally:
        source.close()
    assert len(samples) == 1
    assert samples[0].at == NOW
    return before, samples[0].value, after


def assert_between(value: float, before: float, after: float, slack: float = 0.002) -> None:
    low, high = min(before, after), max(before, after)
    assert low * (1 - slack) <= value <= high * (1 + slack), (before, value, after)


def fill(client: redis.Redis, megabytes: int = 2) -> None:
    """About ``megabytes`` MiB of string values."""
    value = b"x" * 4096
    pipe = client.pipeline(transaction=False)
    for i in range(megabytes * 256):
        pipe.set(f"fill:{i}", value)
    pipe.execute()


def ratio_from_info(client: redis.Redis, limit: float | None = None) -> float:
    info = client.info("memory")
    return info["used_memory"] / (limit or info["maxmemory"]) * 100


def test_ratio_matches_info_memory_with_maxmemory(redis_plain: RedisProcess) -> None:
    """With CONFIG SET maxmemory, the ratio is used_memory / maxmemory * 100 from INFO memory."""
    client = redis_plain.client()
    fill(client)
    used = client.info("memory")["used_memory"]
    client.config_set("maxmemory", used * 4)
    before, value, after = bracketed({"url": redis_plain.url()}, lambda: ratio_from_info(client))
    assert 20 < before < 30  # the fill is about a quarter of maxmemory
    assert_between(value, before, after)
    assert list(query({"url": redis_plain.url()})) == [redis_plain.address]
    # Half the maxmemory: the same used memory, double the ratio.
    client.config_set("maxmemory", used * 2)
    before, value, after = bracketed({"url": redis_plain.url()}, lambda: ratio_from_info(client))
    assert 40 < before < 60
    assert_between(value, before, after)


def test_maxmemory_zero_uses_memory_limit(redis_plain: RedisProcess) -> None:
    """maxmemory 0: the ratio is of the memory_limit setting ("64MiB" = 67108864 bytes)."""
    client = redis_plain.client()
    fill(client)
    assert client.config_get("maxmemory") == {"maxmemory": "0"}
    for limit in ("64MiB", 64 * MIB):
        options = {"url": redis_plain.url(), "memory_limit": limit}
        before, value, after = bracketed(options, lambda: ratio_from_info(client, 64 * MIB))
        assert 2 < before < 10
        assert_between(value, before, after)


def test_maxmemory_zero_without_limit_falls_back_to_this_host(redis_plain: RedisProcess) -> None:
    """maxmemory 0, no memory_limit, local server: the cgroup limit or the host's RAM."""
    client = redis_plain.client()
    used = client.info("memory")["used_memory"]
    pid = int(client.info("server")["process_id"])
    ram = psutil.virtual_memory().total
    cgroup = cgroup_memory_limit(pid)
    limit = min(cgroup, ram) if cgroup else ram
    value = query({"url": redis_plain.url()})[redis_plain.address]
    assert value == pytest.approx(used / limit * 100, rel=0.05)


def test_used_memory_bytes(redis_plain: RedisProcess) -> None:
    """used_memory_bytes is INFO memory's used_memory."""
    client = redis_plain.client()
    fill(client, 1)
    before, value, after = bracketed(
        {"url": redis_plain.url()},
        lambda: client.info("memory")["used_memory"],
        "used_memory_bytes",
    )
    assert_between(value, before, after)


def test_several_nodes_one_sample_each(redis_plain: RedisProcess, redis_auth: RedisProcess) -> None:
    """With urls, one sample per node, instance host:port (each node's own password)."""
    redis_auth.client().config_set("maxmemory", 512 * MIB)
    redis_plain.client().config_set("maxmemory", 256 * MIB)
    try:
        values = query({"urls": [redis_plain.url(), redis_auth.url()]})
    finally:
        redis_auth.client().config_set("maxmemory", 0)
    assert set(values) == {redis_plain.address, redis_auth.address}
    for server, limit in ((redis_plain, 256 * MIB), (redis_auth, 512 * MIB)):
        # Connection buffers (tens of KiB) move these small ratios (0.2-0.4 %) by a few %.
        expected = ratio_from_info(server.client(), limit)
        assert values[server.address] == pytest.approx(expected, rel=0.1)


def test_unix_socket_url(redis_plain: RedisProcess) -> None:
    """A unix:// URL works; the instance is the socket path."""
    socket_path = redis_plain.client().config_get("unixsocket")["unixsocket"]
    values = query({"url": f"unix://{socket_path}?db=0"}, "used_memory_bytes")
    assert list(values) == [socket_path]
    assert values[socket_path] > 0


def test_unknown_query_is_permanent(redis_plain: RedisProcess) -> None:
    """An unknown query name is a permanent SourceError with a suggestion."""
    source = RedisMemorySource("cache", {"url": redis_plain.url()})
    with pytest.raises(SourceError) as caught:
        source.query(request("used_memory_ration"), NOW)
    source.close()
    assert caught.value.temporary is False
    assert 'unknown query "used_memory_ration" (did you mean "used_memory_ratio"?)' in str(
        caught.value
    )


def test_cgroup_limits_v2_and_v1(tmp_path: Path) -> None:
    """The cgroup limit is the smallest memory.max (v2) / limit_in_bytes (v1) up to the root."""
    proc = tmp_path / "proc"
    sys_root = tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text("0::/system.slice/redis.service\n")
    service = sys_root / "system.slice" / "redis.service"
    service.mkdir(parents=True)
    (service / "memory.max").write_text("max\n")
    (sys_root / "system.slice" / "memory.max").write_text(f"{3 * MIB}\n")
    (sys_root / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(42, sys_root=sys_root, proc=proc) == 3 * MIB
    (service / "memory.max").write_text(f"{2 * MIB}\n")
    assert cgroup_memory_limit(42, sys_root=sys_root, proc=proc) == 2 * MIB

    (proc / "43").mkdir()
    (proc / "43" / "cgroup").write_text("4:memory:/docker/abc\n1:cpu:/docker/abc\n")
    v1 = sys_root / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{5 * MIB}\n")
    assert cgroup_memory_limit(43, sys_root=sys_root, proc=proc) == 5 * MIB
    assert cgroup_memory_limit(None, sys_root=tmp_path / "none", proc=proc) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [(1024, 1024), ("2GiB", 2 * 1024**3), ("512MiB", 512 * MIB), ("2GB", 2 * 10**9), ("10", 10)],
)
def test_parse_bytes(text: object, size: int) -> None:
    """memory_limit accepts bytes or a size with an IEC (1024) or SI (1000) unit."""
    assert parse_bytes(text) == size
