"""Celery tasks waiting in a Redis broker, at every priority, plus those reserved by workers.

``metric.query`` names the queues, comma-separated; the value is one pool-level sample
(``instance=None``) with the sum over them of:

* the length of every priority list of the queue (``LLEN``). kombu's Redis transport keeps
  one list per priority step: ``QUEUE`` for step 0 and ``QUEUE + sep + str(step)`` for the
  other steps (``Channel._q_for_pri``; ``PRIORITY_STEPS = [0, 3, 6, 9]``, ``sep =
  "\\x06\\x16"``), every key prefixed with the ``global_keyprefix`` transport option. A task
  sent with priority 5 lands in ``QUEUE\\x06\\x163`` (the highest step not above it).
* messages reserved by a worker but not yet acknowledged (``count_unacked``): kombu keeps
  each in the ``unacked`` hash (delivery tag -> JSON ``[message, exchange, routing_key]``,
  with ``unacked_index``, a sorted set of delivery times, beside it) until the ack. They are
  counted when they route to one of the queues the way kombu restores them: an empty
  exchange routes to the queue named by the routing key (what Celery sends to a direct
  queue); another exchange through its binding table ``_kombu.binding.EXCHANGE`` (members
  ``routing_key + sep + pattern + sep + queue``), matching the routing key exactly (direct
  exchanges). With Celery's default early ack, a task is acknowledged when it starts, so this
  counts prefetched tasks that no worker has started; with ``acks_late``, running ones too.

celery-exporter (``celery_queue_length``) and KEDA's ``redis`` scaler (``LLEN`` of
``listName``) read only the base list ``QUEUE``: they miss every task sent with a priority
(in ``QUEUE\\x06\\x163`` and so on) and every task a worker has reserved, so a worker pool
that prefetches looks idle while work piles up in its prefetch buffers.

Settings must mirror the Celery app's ``broker_transport_options``: ``priority_steps``,
``separator`` (kombu's ``sep``), ``global_keyprefix`` and ``unacked_key``; a task in a list
the settings do not name is not counted. Redis commands per query (one pipeline, then a scan
when something is reserved): ``LLEN`` per queue and step, ``HLEN unacked``, then ``HSCAN
unacked`` and ``SMEMBERS _kombu.binding.EXCHANGE`` for named exchanges. With Sentinel, the
commands go to the current master.
"""

from __future__ import annotations

import json
from bisect import bisect
from typing import Any

from pydantic import Field, StrictBool, StrictInt, field_validator

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.sources.base import MetricRequest, parse_settings
from senex_scale.sources.redis_memory import RedisConnection, RedisConnectionSettings

__all__ = ["CeleryRedisSettings", "CeleryRedisSource", "priority_keys"]

# kombu.transport.redis: PRIORITY_STEPS, Channel.sep, Channel.unacked_key, keyprefix_queue.
PRIORITY_STEPS = (0, 3, 6, 9)
SEPARATOR = "\x06\x16"
UNACKED_KEY = "unacked"
BINDING_KEY = "_kombu.binding.%s"
_SCAN_COUNT = 1000


class CeleryRedisSettings(RedisConnectionSettings):
    """``[sources.NAME] type = "celery-redis"``; mirror the app's broker_transport_options."""

    priority_steps: tuple[StrictInt, ...] = PRIORITY_STEPS
    separator: str = Field(default=SEPARATOR, min_length=1)
    """kombu's ``sep`` transport option."""
    global_keyprefix: str = ""
    count_unacked: StrictBool = True
    """Also count tasks reserved by workers and not acknowledged yet."""
    unacked_key: str = Field(default=UNACKED_KEY, min_length=1)
    """kombu's ``unacked_key`` transport option (rarely changed)."""

    @field_validator("priority_steps")
    @classmethod
    def _steps(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("give at least one step (kombu's default is [0, 3, 6, 9])")
        if any(step < 0 for step in value):
            raise ValueError("steps must be 0 or more")
        if list(value) != sorted(set(value)):
            raise ValueError("steps must be in ascending order without repeats, as kombu expects")
        return value


def priority_keys(
    queue: str,
    steps: tuple[int, ...] = PRIORITY_STEPS,
    separator: str = SEPARATOR,
    prefix: str = "",
) -> list[str]:
    """The Redis lists of ``queue``, as kombu's ``Channel._q_for_pri`` names them.

    For each step: ``priority(step)`` is the highest step not above it (kombu bisects); step 0
    is the queue's own list, any other ``queue + separator + str(step)``.
    """
    keys: list[str] = []
    for step in steps:
        pri = steps[bisect(steps, step) - 1]
        key = prefix + (f"{queue}{separator}{pri}" if pri else queue)
        if key not in keys:
            keys.append(key)
    return keys


def _queues(query: str) -> list[str]:
    return list(dict.fromkeys(q.strip() for q in query.split(",") if q.strip()))


class CeleryRedisSource:
    """Tasks waiting and reserved in Celery queues on a Redis broker (``type = "celery-redis"``)."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = parse_settings(CeleryRedisSettings, name, options)
        if self.settings.url is None:
            raise PolicyError(f"sources.{name}", [f"sources.{name}.url: required"])
        self.connection = RedisConnection(name, self.settings)

    def __repr__(self) -> str:
        return f"CeleryRedisSource({self.name!r}, {self.connection.describe()!r})"

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """One pool-level sample: waiting (every priority) plus reserved tasks of the queues."""
        queues = _queues(request.metric.query)
        if not queues:
            raise SourceError(
                f'source "{self.name}": rule "{request.rule}" names no queue '
                '(metric.query = "queue" or "queue1,queue2")',
                temporary=False,
            )
        s = self.settings
        keys = [
            key
            for queue in queues
            for key in priority_keys(queue, s.priority_steps, s.separator, s.global_keyprefix)
        ]
        conn = self.connection
        unacked_key = s.global_keyprefix + s.unacked_key
        with conn.errors("reading queue lengths"):
            client = conn.master()
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
            if s.count_unacked:
                pipe.hlen(unacked_key)
            replies = pipe.execute()
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in replies):
            raise conn.bad_reply("reading queue lengths", "LLEN/HLEN gave a non-integer")
        total = sum(replies[: len(keys)])
        if s.count_unacked and replies[-1] > 0:
            total += self._reserved(set(queues))
        return [Sample(now, float(total), None)]

    def _reserved(self, queues: set[str]) -> int:
        """Messages in kombu's ``unacked`` hash that route to one of ``queues``."""
        s = self.settings
        conn = self.connection
        client = conn.master()
        entries: dict[bytes | str, Any] = {}
        with conn.errors("reading reserved messages"):
            # HSCAN may return an entry twice while the hash is rehashed: keyed by tag.
            for tag, value in client.hscan_iter(
                s.global_keyprefix + s.unacked_key, count=_SCAN_COUNT
            ):
                entries[tag] = value
        bindings: dict[str, list[tuple[str, str]]] = {}
        count = 0
        for value in entries.values():
            try:
                entry = json.loads(value)
            except (ValueError, TypeError):
                continue  # not a kombu entry; kombu could not restore it either
            if not (isinstance(entry, list) and len(entry) == 3):
                continue
            _message, exchange, routing_key = entry
            if not isinstance(exchange, str) or not isinstance(routing_key, str):
                continue
            if not exchange:
                count += routing_key in queues
                continue
            if exchange not in bindings:
                bindings[exchange] = self._bindings(exchange)
            count += any(q in queues for rk, q in bindings[exchange] if rk == routing_key)
        return count

    def _bindings(self, exchange: str) -> list[tuple[str, str]]:
        """(routing_key, queue) pairs of kombu's binding table of ``exchange``."""
        s = self.settings
        key = s.global_keyprefix + BINDING_KEY % exchange
        with self.connection.errors(f"reading the bindings of exchange {exchange!r}"):
            members = self.connection.master().smembers(key)
        pairs: list[tuple[str, str]] = []
        for member in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            parts = text.split(s.separator)
            if len(parts) >= 3:
                pairs.append((parts[0], parts[-1]))
        return pairs

    def close(self) -> None:
        """Close the connections."""
        self.connection.close()
