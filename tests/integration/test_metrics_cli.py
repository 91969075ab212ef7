"""``senex-scale metrics``: every metric a policy references, read from real servers, and every
failure reported with its reason (the first command an operator runs)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from senex_scale.testing import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server on loopback, stopped at the end."""
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(folder), "--maxmemory", "100mb"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


def policy_text(redis_port: int, dead: int) -> str:
    """Every source type: Redis live, the network ones on a port nothing listens on."""
    return f"""
[sources.prom]
type = "prometheus"
url = "http://127.0.0.1:{dead}"
timeout = "1s"

[sources.broker]
type = "celery-redis"
url = "redis://127.0.0.1:{redis_port}/0"

[sources.deadbroker]
type = "celery-redis"
url = "redis://127.0.0.1:{dead}/0"

[sources.redis]
type = "redis"
url = "redis://127.0.0.1:{redis_port}/0"

[sources.pg]
type = "postgres"
dsn = "postgresql://senex@127.0.0.1:{dead}/senex"

[sources.bouncer]
type = "pgbouncer"
dsn = "postgresql://senex@127.0.0.1:{dead}/pgbouncer"

[sources.deadredis]
type = "redis"
url = "redis://127.0.0.1:{dead}/0"

[sources.instances]
type = "scrape"
timeout = "1s"

[sources.procs]
type = "process"
mode = "psutil"
match = "senex-no-such-process-{{n}}"
instances = [1]

[sources.disk]
type = "disk"

[pools.web]
min = 1
max = 3
port = "{dead - 10} + n"

[[rules]]
name = "cpu"
pool = "web"
metric = {{ source = "prom", query = "up" }}
scale_out = {{ above = 70, for = "1m" }}

[[rules]]
name = "queue"
pool = "web"
metric = {{ source = "broker", query = "trading" }}
scale_out = {{ above = 100, for = "1m" }}

[[rules]]
name = "dead-queue"
pool = "web"
metric = {{ source = "deadbroker", query = "trading" }}
scale_out = {{ above = 100, for = "1m" }}

[[rules]]
name = "redis-memory"
type = "action"
metric = {{ source = "redis", query = "used_memory_ratio" }}
when = {{ above = 90 }}
action = {{ type = "notify", message = "redis" }}

[[rules]]
name = "postgres-cpu"
type = "action"
metric = {{ source = "pg", query = "connections" }}
when = {{ above = 80 }}
action = {{ type = "notify", message = "pg" }}

[[rules]]
name = "pool-waiting"
type = "action"
metric = {{ source = "bouncer", query = "clients_waiting" }}
when = {{ above = 5 }}
action = {{ type = "notify", message = "bouncer" }}

[[rules]]
name = "dead-redis-memory"
type = "action"
metric = {{ source = "deadredis", query = "used_memory_ratio" }}
when = {{ above = 90 }}
action = {{ type = "notify", message = "redis" }}

[[rules]]
name = "websockets"
pool = "web"
metric = {{ source = "instances", query = "senex_websocket_connections" }}
scale_out = {{ above = 1500, for = "1m" }}

[[rules]]
name = "web-cpu"
pool = "web"
metric = {{ source = "procs", query = "cpu" }}
scale_out = {{ above = 70, for = "1m" }}

[[rules]]
name = "disk"
type = "action"
metric = {{ source = "disk", query = "/tmp" }}
when = {{ above = 99 }}
action = {{ type = "notify", message = "disk" }}
"""


@pytest.fixture(scope="module")
def result(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``metrics --json`` on that policy: exit code and the parsed metrics by rule."""
    folder = tmp_path_factory.mktemp("metrics")
    path = Path(folder) / "policy.toml"
    path.write_text(policy_text(redis_port, free_port()), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "senex_scale", "metrics", "--policy", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc = json.loads(run.stdout)
    return {
        "code": run.returncode,
        "stderr": run.stderr,
        "by_rule": {m["rule"]: m for m in doc["metrics"]},
    }


def test_any_failure_exits_one(result: dict[str, Any]) -> None:
    """Some metrics failed: exit 1, still a full JSON document, no traceback."""
    assert result["code"] == 1
    assert "Traceback" not in result["stderr"]
    assert set(result["by_rule"]) == {
        "cpu",
        "queue",
        "dead-queue",
        "redis-memory",
        "dead-redis-memory",
        "postgres-cpu",
        "pool-waiting",
        "websockets",
        "web-cpu",
        "disk",
    }


@pytest.mark.parametrize(
    "rule",
    ["cpu", "dead-queue", "dead-redis-memory", "postgres-cpu", "pool-waiting"],
)
def test_stopped_servers_are_reported_not_zero(result: dict[str, Any], rule: str) -> None:
    """A server that does not answer is a temporary failure with a reason, and no sample."""
    metric = result["by_rule"][rule]
    assert (metric["ok"], metric["temporary"], metric["samples"]) == (False, True, [])
    assert metric["error"]


def test_scrape_without_a_runtime_reads_nothing(result: dict[str, Any]) -> None:
    """A pool without a runtime: the scrape source cannot know which instances run, so it
    asks none (no port scan) and says why (permanent: the policy must change)."""
    metric = result["by_rule"]["websockets"]
    assert (metric["ok"], metric["temporary"], metric["samples"]) == (False, False, [])
    assert "reads only running instances" in metric["error"]


def test_missing_process_is_reported_not_zero(result: dict[str, Any]) -> None:
    """An instance whose process is not running is a failure with a reason, never 0 % CPU."""
    metric = result["by_rule"]["web-cpu"]
    assert (metric["ok"], metric["samples"]) == (False, [])
    assert "no instance of pool web is running" in metric["error"]


def test_live_redis_answers(result: dict[str, Any]) -> None:
    """The live Redis gives an empty queue (0 tasks) and a memory ratio of its 100 MB limit."""
    queue = result["by_rule"]["queue"]
    assert (queue["ok"], queue["samples"]) == (True, [{"instance": None, "value": 0.0}])
    memory = result["by_rule"]["redis-memory"]
    assert memory["ok"] is True
    [sample] = memory["samples"]
    assert 0.0 < sample["value"] < 10.0  # an empty server uses about 1 MB of 100 MB


def test_disk_matches_the_filesystem(result: dict[str, Any]) -> None:
    """Disk use of /tmp is what the filesystem says (used / (used + free), as df)."""
    usage = shutil.disk_usage("/tmp")
    expected = 100.0 * usage.used / (usage.used + usage.free)
    [sample] = result["by_rule"]["disk"]["samples"]
    assert sample["instance"] == "/tmp"
    assert abs(sample["value"] - expected) < 1.0
