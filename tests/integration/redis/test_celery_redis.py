"""The ``celery-redis`` source against a real Redis, filled by a real Celery app and worker.

The key names are checked in Redis itself, so a kombu that names its lists differently from
``priority_keys`` fails here rather than silently counting zero.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kombu
import pytest
import redis
from celery import Celery

from senex_scale.policy.models import Metric
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.celery_redis import CeleryRedisSource, priority_keys

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import RedisProcess

Wait = Callable[[Callable[[], bool], float, str], None]

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
SEP = "\x06\x16"


def request(query: str = "trading") -> MetricRequest:
    return MetricRequest(rule="queue", metric=Metric(source="broker", query=query, signal="queue"))


def count(options: dict[str, Any], query: str = "trading") -> float:
    """The source's value for ``query`` (it must be one pool-level sample at NOW)."""
    source = CeleryRedisSource("broker", options)
    try:
        samples = source.query(request(query), NOW)
    finally:
        source.close()
    assert len(samples) == 1
    assert samples[0].at == NOW
    assert samples[0].instance is None
    return samples[0].value


@contextmanager
def celery_app(url: str, **transport_options: Any) -> Iterator[Celery]:
    app = Celery("senex-test", broker=url, set_as_current=False)
    app.conf.broker_transport_options = transport_options
    try:
        yield app
    finally:
        app.close()


def list_lengths(client: redis.Redis) -> dict[str, int]:
    """LLEN of every list in the database, by key name."""
    out: dict[str, int] = {}
    for key in client.scan_iter():
        if client.type(key) == b"list":
            out[key.decode()] = client.llen(key)
    return out


SENT = {0: 1, 3: 2, 6: 3, 9: 4}
"""Tasks sent per priority: 10 in all, 1 of them in the base list."""


def test_counts_every_priority_default_separator(redis_plain: RedisProcess) -> None:
    """Tasks sent at priorities 0, 3, 6, 9 with Celery's defaults are all counted (10, not 1)."""
    with celery_app(redis_plain.url()) as app:
        for priority, n in SENT.items():
            for _ in range(n):
                app.send_task("x.y", queue="trading", priority=priority)
    lengths = list_lengths(redis_plain.client())
    expected_keys = {"trading": 1, f"trading{SEP}3": 2, f"trading{SEP}6": 3, f"trading{SEP}9": 4}
    assert lengths == expected_keys
    assert sorted(priority_keys("trading")) == sorted(expected_keys)
    assert count({"url": redis_plain.url()}) == 10
    assert count({"url": redis_plain.url(), "count_unacked": False}) == 10


def test_counts_every_priority_custom_separator(redis_plain: RedisProcess) -> None:
    """With ten priority steps and sep ":", the source finds trading, trading:1 … trading:9."""
    options = {"priority_steps": list(range(10)), "sep": ":", "queue_order_strategy": "priority"}
    with celery_app(redis_plain.url(), **options) as app:
        for priority in range(10):
            for _ in range(priority + 1):
                app.send_task("x.y", queue="trading", priority=priority)
    lengths = list_lengths(redis_plain.client())
    assert lengths == {"trading" + (f":{p}" if p else ""): p + 1 for p in range(10)}
    steps = list(range(10))
    assert sorted(priority_keys("trading", tuple(steps), ":")) == sorted(lengths)
    assert count({"url": redis_plain.url(), "priority_steps": steps, "separator": ":"}) == 55
    # Settings that do not mirror the app see only the lists they name.
    assert count({"url": redis_plain.url(), "separator": ":"}) == 1 + 4 + 7 + 10
    assert count({"url": redis_plain.url()}) == 1


def test_priority_between_steps_lands_in_lower_step(redis_plain: RedisProcess) -> None:
    """A task sent with priority 5 lands in trading␆␖3 (kombu bisects) and is counted."""
    with celery_app(redis_plain.url()) as app:
        app.send_task("x.y", queue="trading", priority=5)
        app.send_task("x.y", queue="other", priority=0)
    assert list_lengths(redis_plain.client()) == {f"trading{SEP}3": 1, "other": 1}
    assert count({"url": redis_plain.url()}) == 1
    assert count({"url": redis_plain.url()}, "trading, other") == 2
    assert count({"url": redis_plain.url()}, "nothing-here") == 0


def test_global_keyprefix(redis_plain: RedisProcess) -> None:
    """With global_keyprefix "senex:", lists, the unacked hash and bindings are all prefixed."""
    prefix = "senex:"
    with celery_app(redis_plain.url(), global_keyprefix=prefix) as app:
        for priority, n in SENT.items():
            for _ in range(n):
                app.send_task("x.y", queue="trading", priority=priority)
    client = redis_plain.client()
    assert list_lengths(client) == {
        f"{prefix}trading": 1,
        f"{prefix}trading{SEP}3": 2,
        f"{prefix}trading{SEP}6": 3,
        f"{prefix}trading{SEP}9": 4,
    }
    assert client.exists(f"{prefix}_kombu.binding.trading")
    assert count({"url": redis_plain.url(), "global_keyprefix": prefix}) == 10
    assert count({"url": redis_plain.url()}) == 0  # without the prefix: other keys

    # Reserve two of them (kombu consumer, no ack): they move to the prefixed unacked hash.
    with (
        kombu.Connection(redis_plain.url(), transport_options={"global_keyprefix": prefix}) as conn,
        reserve(conn, kombu.Queue("trading"), 2),
    ):
        assert client.hlen(f"{prefix}unacked") == 2
        assert client.zcard(f"{prefix}unacked_index") == 2
        assert not client.exists("unacked")
        assert count({"url": redis_plain.url(), "global_keyprefix": prefix}) == 10
        no_unacked = {"url": redis_plain.url(), "global_keyprefix": prefix, "count_unacked": False}
        assert count(no_unacked) == 8


@contextmanager
def reserve(conn: kombu.Connection, queue: kombu.Queue, n: int) -> Iterator[list[Any]]:
    """Receive ``n`` messages from ``queue`` without acknowledging them (prefetch ``n``).

    kombu's Redis transport moves each into the ``unacked`` hash; leaving the block closes
    the channel, which puts them back (kombu's restore at shutdown).
    """
    received: list[Any] = []
    channel = conn.channel()
    try:
        consumer = kombu.Consumer(
            channel, [queue], callbacks=[lambda _body, msg: received.append(msg)]
        )
        consumer.qos(prefetch_count=n)
        with consumer:
            deadline = time.monotonic() + 10
            while len(received) < n and time.monotonic() < deadline:
                with suppress(TimeoutError):
                    conn.drain_events(timeout=1)
            assert len(received) == n
            yield received
    finally:
        channel.close()


def test_reserved_messages_routed_by_exchange(redis_plain: RedisProcess) -> None:
    """Messages reserved by a kombu consumer (no ack) count for the queue their exchange binds.

    Method: publish through a named direct exchange ("tasks", routing keys "trade" and
    "report") to queues "trading" and "reports", consume 2 + 1 with a kombu Consumer that never
    acks, and count while the consumer is connected: the unacked entries hold
    [message, "tasks", routing key], resolved through _kombu.binding.tasks.
    """
    exchange = kombu.Exchange("tasks", type="direct")
    trading = kombu.Queue("trading", exchange, routing_key="trade")
    reports = kombu.Queue("reports", exchange, routing_key="report")
    client = redis_plain.client()
    with kombu.Connection(redis_plain.url()) as conn:
        producer = conn.Producer()
        for i in range(5):
            producer.publish({"n": i}, exchange=exchange, routing_key="trade", declare=[trading])
        for i in range(3):
            producer.publish({"n": i}, exchange=exchange, routing_key="report", declare=[reports])
        assert count({"url": redis_plain.url()}) == 5
        with reserve(conn, trading, 2), reserve(conn, reports, 1):
            assert client.hlen("unacked") == 3
            entries = [json.loads(v) for v in client.hvals("unacked")]
            assert sorted((e[1], e[2]) for e in entries) == [
                ("tasks", "report"),
                ("tasks", "trade"),
                ("tasks", "trade"),
            ]
            members = {m.decode() for m in client.smembers("_kombu.binding.tasks")}
            assert members == {f"trade{SEP}{SEP}trading", f"report{SEP}{SEP}reports"}
            assert client.llen("trading") == 3
            assert count({"url": redis_plain.url()}) == 5
            assert count({"url": redis_plain.url(), "count_unacked": False}) == 3
            assert count({"url": redis_plain.url()}, "reports") == 3
            assert count({"url": redis_plain.url()}, "trading,reports") == 8
        # Closing the channels restored them to the lists: still counted once.
        assert client.hlen("unacked") == 0
        assert count({"url": redis_plain.url()}) == 5


def test_unreadable_unacked_entries_are_skipped(redis_plain: RedisProcess) -> None:
    """Entries of the unacked hash that kombu could not restore either are not counted."""
    client = redis_plain.client()
    client.hset(
        "unacked",
        mapping={
            "a": "not json",
            "b": json.dumps({"x": 1, "y": 2, "z": 3}),
            "c": json.dumps([{}, "", "trading"]),
            "d": json.dumps([{}, "", "other"]),
        },
    )
    assert count({"url": redis_plain.url()}) == 1


WORKER_APP = '''
"""A Celery app whose only task sleeps: the worker reserves what it cannot run yet."""
import os
import time

from celery import Celery

app = Celery("senex_worker_app", broker=os.environ["SENEX_TEST_BROKER"])
app.conf.update(
    task_acks_late=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)


@app.task(name="x.sleep")
def sleep(seconds):
    time.sleep(seconds)
'''


def test_reserved_by_a_real_worker(
    redis_plain: RedisProcess, tmp_path: Path, wait_until: Wait
) -> None:
    """A real worker's reserved, unacked tasks are counted (Celery worker in a subprocess).

    Method: ``celery worker -Q trading --concurrency 1 --prefetch-multiplier 4`` with
    ``task_acks_late`` on an app whose task sleeps 60 s; 10 tasks sent at priorities 0-9. The
    worker runs one and reserves more (they leave the lists for the ``unacked`` hash); the
    count stays 10. The worker is killed (SIGKILL to its process group) at the end.
    """
    (tmp_path / "senex_worker_app.py").write_text(textwrap.dedent(WORKER_APP))
    with celery_app(redis_plain.url()) as app:
        for priority in range(10):
            app.send_task("x.sleep", args=[60], queue="trading", priority=priority)
    client = redis_plain.client()
    assert count({"url": redis_plain.url()}) == 10
    argv = [sys.executable, "-m", "celery", "-A", "senex_worker_app", "worker", "-Q", "trading"]
    argv += ["--concurrency", "1", "--prefetch-multiplier", "4", "--pool", "prefork"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)}
    env["SENEX_TEST_BROKER"] = redis_plain.url()
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: client.hlen("unacked") >= 4, 30, f"reservations\n{log.read_text()}")
        time.sleep(0.3)  # let the prefetch settle
        waiting = sum(client.llen(key) for key in priority_keys("trading"))
        reserved = client.hlen("unacked")
        assert reserved >= 4
        assert waiting + reserved == 10
        assert waiting < 10
        assert count({"url": redis_plain.url()}) == 10
        assert count({"url": redis_plain.url(), "count_unacked": False}) == waiting
        assert worker.poll() is None, log.read_text()
    finally:
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
