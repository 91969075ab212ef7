"""The failover drill's application side, run in subprocesses: a Celery app (``-A drill_app``
for the worker) and a load generator (``python drill_app.py load SECONDS``).

Everything is configured from one Sentinel list through
``senex_scale.contrib.django.settings.sentinel_settings``, as a Django project would be: the
Django cache (django-redis ``SentinelClient``), the Channels layer (channels_redis with
``sentinels``) and the Celery broker (kombu's ``sentinel://`` transport). Tasks are
``acks_late`` and ``reject_on_worker_lost``: a message is removed from Redis only after its
task ran, and kombu's ``visibility_timeout`` (5 s here) gives back a message whose ack was lost
with the old primary. Each task appends its number to ``SENEX_DRILL_OUT``; the test compares
that file with the numbers the load generator published successfully.

Environment: ``SENEX_DRILL_SENTINELS`` ("127.0.0.1:p1,..."), ``SENEX_DRILL_MASTER``,
``SENEX_DRILL_OUT``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

from celery import Celery

from senex_scale.contrib.django.settings import sentinel_settings

SETTINGS = sentinel_settings(
    os.environ["SENEX_DRILL_SENTINELS"],
    master=os.environ.get("SENEX_DRILL_MASTER", "mymaster"),
    socket_timeout=1.0,
)
QUEUE = "drill"

app = Celery("drill", set_as_current=False)
app.conf.update(
    broker_url=SETTINGS["CELERY_BROKER_URL"],
    broker_transport_options={
        **SETTINGS["CELERY_BROKER_TRANSPORT_OPTIONS"],
        "visibility_timeout": 5,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    # a publish during the failover retries for up to ~10 s instead of failing at once
    task_publish_retry_policy={
        "max_retries": 40,
        "interval_start": 0.1,
        "interval_step": 0.1,
        "interval_max": 0.25,
    },
)


TASK_SECONDS = 0.3
"""How long a task works before it records itself: at the kill, some tasks are running
(delivered, not yet acknowledged), which is what ``acks_late`` is for."""


@app.task(name="drill.record", acks_late=True, reject_on_worker_lost=True)
def record(n: int) -> None:
    """Work a little, then append ``n`` to the output file (one write per line: atomic with
    O_APPEND)."""
    time.sleep(TASK_SECONDS)
    fd = os.open(os.environ["SENEX_DRILL_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- load generator


class Log:
    """(kind, start, end, ok) of every request, from several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, float, float, bool]] = []

    def add(self, kind: str, start: float, ok: bool) -> None:
        with self.lock:
            self.events.append((kind, start, time.time(), ok))


def cache_loop(log: Log, until: float) -> None:
    from django.core.cache import cache

    n = 0
    while time.time() < until:
        start = time.time()
        try:
            cache.set(f"drill:{n}", n, timeout=60)
            ok = cache.get(f"drill:{n}") == n
        except Exception:
            ok = False
        log.add("cache", start, ok)
        n += 1
        time.sleep(0.02)


def channels_loop(log: Log, until: float) -> None:
    from channels.layers import get_channel_layer

    async def run() -> None:
        layer = get_channel_layer()
        n = 0
        while time.time() < until:
            start = time.time()
            try:
                await asyncio.wait_for(layer.send("drill", {"type": "drill.n", "n": n}), 3)
                await asyncio.wait_for(layer.receive("drill"), 3)
                ok = True
            except Exception:
                ok = False
            log.add("channels", start, ok)
            n += 1
            await asyncio.sleep(0.02)

    asyncio.run(run())


def celery_loop(log: Log, until: float, published: list[int], failed: list[str]) -> None:
    n = 0
    while time.time() < until:
        start = time.time()
        try:
            record.apply_async(args=[n], queue=QUEUE)
            published.append(n)
            ok = True
        except Exception as exc:
            failed.append(f"{n}: {type(exc).__name__}: {exc}")
            ok = False
        log.add("celery", start, ok)
        n += 1
        time.sleep(0.1)


def load(seconds: float) -> dict[str, Any]:
    """Drive the cache, the channel layer and Celery for ``seconds``; what happened."""
    import django
    from django.conf import settings

    settings.configure(
        CACHES=SETTINGS["CACHES"],
        CHANNEL_LAYERS=SETTINGS["CHANNEL_LAYERS"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    # import everything the threads use here, first: two threads importing redis at once can
    # deadlock in importlib (channels_redis and django-redis both import it on first use)
    from channels.layers import get_channel_layer
    from django.core.cache import cache

    cache.client  # noqa: B018 - builds django-redis' client (imports it and redis)
    get_channel_layer()
    log = Log()
    published: list[int] = []
    failed: list[str] = []
    until = time.time() + seconds
    threads = [
        threading.Thread(target=cache_loop, args=(log, until)),
        threading.Thread(target=channels_loop, args=(log, until)),
        threading.Thread(target=celery_loop, args=(log, until, published, failed)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    app.close()
    return {"events": log.events, "published": published, "publish_failed": failed}


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        json.dump(load(float(sys.argv[2])), sys.stdout)
