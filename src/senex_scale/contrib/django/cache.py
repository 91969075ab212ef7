"""Cache a query's result per object, invalidated on commit, without stampedes or stale refills.

The seed's pattern (``cache.delete(key)`` after ``position.save()``) has three holes:

1. the delete runs before the transaction commits: a reader refills the key from the old row
   in between, and the stale entry lives for the whole timeout;
2. many readers missing the same key all run the query at once (a stampede);
3. right after the delete, a reader routed to a replica that has not replayed the write yet
   refills the key with the old rows.

``VersionedCache`` closes them: each object has a version counter (atomic ``incr``); entries
are stored under the version they were computed for, so bumping the version retires every
older entry at once, and an entry computed from old rows lands under an old version no one
reads. ``invalidate`` bumps the version in ``transaction.on_commit``. One reader per version
computes (a lock taken with ``add``) while the others wait for its result, bounded by
``lock_timeout``. An invalidation leaves a *fresh* marker for ``fresh_seconds``; a refill
while it is there runs pinned (``router.pin_to_primary``), so the router reads from the
primary or from a replica that has replayed everything committed until the refill began.

``fresh_seconds`` must exceed the router's ``MAX_LAG_SECONDS`` plus one ``HEALTH_TTL``: a
replica lagging longer is not read from at all.

::

    positions = VersionedCache("positions", timeout=120)
    rows = positions.get_or_set(user_id, lambda: list(Position.objects.filter(user_id=user_id)))
    ...
    with transaction.atomic():
        position.save()
        positions.invalidate(position.user_id)        # runs after COMMIT
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from senex_scale.contrib.django.router import pin_scope, pin_to_primary
from senex_scale.errors import InputError

T = TypeVar("T")


class VersionedCache:
    """Versioned entries of one kind (a namespace), keyed by an id (a user id, a symbol)."""

    def __init__(
        self,
        namespace: str,
        *,
        alias: str = "default",
        cache: Any = None,
        timeout: float = 120.0,
        lock_timeout: float = 5.0,
        fresh_seconds: float = 10.0,
        poll: float = 0.02,
        using: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not namespace or any(c in namespace for c in " :\n"):
            raise InputError(f"namespace: {namespace!r} must be non-empty, without ':' or spaces")
        for name, value in (("timeout", timeout), ("lock_timeout", lock_timeout)):
            if value <= 0:
                raise InputError(f"{name}: {value!r} must be a number of seconds above 0")
        self.namespace = namespace
        self._alias = alias
        self._cache = cache
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.fresh_seconds = fresh_seconds
        self.poll = poll
        self.using = using
        self._clock = clock
        self._sleep = sleep
        self.computed = 0
        """How many times this instance ran a compute function (for tests and metrics)."""

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from django.core.cache import caches

            self._cache = caches[self._alias]
        return self._cache

    def _key(self, ident: Hashable, part: str) -> str:
        return f"senex:{self.namespace}:{ident}:{part}"

    # versions --------------------------------------------------------------------------

    def version(self, ident: Hashable) -> int:
        """The current version of ``ident`` (created on first use)."""
        key = self._key(ident, "v")
        value = self.cache.get(key)
        if value is None:
            # Start from the clock in ms, not 1: if the counter was evicted, entries of the
            # old numbering must not come back to life.
            self.cache.add(key, int(self._clock() * 1000), timeout=None)
            value = self.cache.get(key)
        return int(value)

    def invalidate_now(self, ident: Hashable) -> int:
        """Retire every entry of ``ident`` now; returns the new version."""
        if self.fresh_seconds > 0:
            # Before the bump: whoever sees the new version also sees the marker.
            self.cache.set(self._key(ident, "fresh"), 1, timeout=self.fresh_seconds)
        key = self._key(ident, "v")
        try:
            return int(self.cache.incr(key))
        except ValueError:  # no counter yet (or evicted)
            self.cache.add(key, int(self._clock() * 1000), timeout=None)
            return int(self.cache.incr(key))

    def invalidate(self, ident: Hashable, *, using: str | None = None) -> None:
        """Retire ``ident``'s entries once the current transaction commits (now outside one)."""
        from django.db import DEFAULT_DB_ALIAS, transaction

        transaction.on_commit(
            lambda: self.invalidate_now(ident), using=using or self.using or DEFAULT_DB_ALIAS
        )

    # reads -----------------------------------------------------------------------------

    def get(self, ident: Hashable) -> tuple[bool, Any]:
        """``(True, value)`` for a current entry, ``(False, None)`` otherwise."""
        entry = self.cache.get(self._key(ident, f"{self.version(ident)}:d"))
        if isinstance(entry, list) and len(entry) == 1:
            return True, entry[0]
        return False, None

    def get_or_set(self, ident: Hashable, compute: Callable[[], T]) -> T:
        """The current entry, or ``compute()`` stored under the version it was computed for.

        One caller per version computes; the others wait for its entry up to
        ``lock_timeout`` and then compute for themselves.
        """
        version = self.version(ident)
        data_key = self._key(ident, f"{version}:d")
        entry = self.cache.get(data_key)
        if isinstance(entry, list) and len(entry) == 1:
            return entry[0]  # type: ignore[no-any-return]
        lock_key = self._key(ident, f"{version}:lock")
        token = uuid.uuid4().hex
        if self.cache.add(lock_key, token, timeout=self.lock_timeout):
            try:
                value = self._compute(ident, compute)
                self.cache.set(data_key, [value], timeout=self.timeout)
                return value
            finally:
                if self.cache.get(lock_key) == token:
                    self.cache.delete(lock_key)
        deadline = self._clock() + self.lock_timeout
        while self._clock() < deadline:
            self._sleep(self.poll)
            entry = self.cache.get(data_key)
            if isinstance(entry, list) and len(entry) == 1:
                return entry[0]  # type: ignore[no-any-return]
            if self.cache.get(lock_key) is None and self.version(ident) != version:
                break  # the holder gave up and the version moved on: compute for ourselves
        return self._compute(ident, compute)

    def _compute(self, ident: Hashable, compute: Callable[[], T]) -> T:
        self.computed += 1
        if self.fresh_seconds > 0 and self.cache.get(self._key(ident, "fresh")) is not None:
            with pin_scope():
                pin_to_primary(self.fresh_seconds)
                return compute()
        return compute()
