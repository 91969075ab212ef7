"""Only one controller acts: a leader lock, tried every tick by the standbys.

::

    file        fcntl.flock on STATE.lock (one host, SQLite state). The kernel drops the lock
                the moment the holder dies, so a standby takes over at its next tick.
    postgresql  pg_try_advisory_lock on a connection of its own. The server drops the lock when
                that session ends (process death closes the socket).
    redis       SET key token NX PX ttl, renewed by a background thread with a compare-and-
                PEXPIRE script; a dead leader's key expires after ttl (1.5 intervals by
                default), so a standby takes over within two intervals.

Every acquisition takes a fencing token from the store (``Store.next_fence``); every write
of the leader's (journal, decisions, memory, the status) and every step of a scale sequence
checks that its token is still the newest one handed out, so a leader that was paused (not
dead) and lost its lock cannot act after waking up, not even between two steps.

Why not a library (python-redis-lock, pottery): the Redis part is the documented
single-instance algorithm (SET NX PX + a compare script, as redis-py's own ``Lock`` does; we
use that ``Lock``), the other two are one system call each.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from senex_scale.errors import PermanentError

ADVISORY_KEY = 7305170
"""The PostgreSQL advisory lock id of the controller ("senex" on a phone keypad, roughly)."""


class Leader(Protocol):
    """A lock that at most one controller holds."""

    kind: str

    def acquire(self) -> bool:
        """Try to take or keep the lock, without waiting; True while we hold it."""
        ...

    def release(self) -> None:
        """Give the lock up (standbys can take it at once)."""
        ...


class FileLeader:
    """``flock`` on a file: one controller per host."""

    kind = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PermanentError(f"leader lock {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PostgresLeader:
    """A session-level advisory lock on a connection of its own."""

    kind = "postgresql"

    def __init__(self, url: str, key: int = ADVISORY_KEY) -> None:
        self.url = url
        self.key = key
        self._conn: Any = None

    def acquire(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                held = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
                return bool(held.fetchone()[0])
            # still connected: we hold it if the server still lists it for our backend
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
                " AND pid = pg_backend_pid() AND granted",
                [self.key],
            ).fetchone()
            if row[0]:
                return True
            held = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
            return bool(held.fetchone()[0])
        except psycopg.Error:
            self._drop()
            return False

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def release(self) -> None:
        self._drop()


class RedisLeader:
    """A Redis key with a TTL (redis-py's ``Lock``), renewed in the background.

    The renewer keeps trying through errors (a Redis restart, a network blip) until the
    TTL since its last successful renewal has run out; then the lock is lost, and the next
    ``acquire()`` says so (False) instead of quietly taking the key again: the controller
    steps down, and leads again only with a new fencing token and a reconcile."""

    kind = "redis"

    def __init__(self, url: str, ttl: float, name: str = "senex-scale:leader") -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.ttl = ttl
        self.lock = self.client.lock(name, timeout=ttl, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._held = False
        self._renewed = 0.0
        """monotonic() of the last successful take or renewal."""

    def acquire(self) -> bool:
        import redis

        if self._held:
            lapsed = time.monotonic() - self._renewed >= self.ttl
            try:
                owned = not lapsed and self.lock.owned()
            except redis.RedisError:
                # cannot tell: we hold it for as long as the last renewal lasts
                owned = not lapsed
            if owned:
                return True
            self._step_down()
            return False
        try:
            if not self.lock.acquire(blocking=False):
                return False
        except redis.RedisError:
            return False
        self._held = True
        self._renewed = time.monotonic()
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="leader-renew", daemon=True)
        self._renewer.start()
        return True

    def _renew(self) -> None:
        import redis

        while not self._stop.wait(self.ttl / 3 if self._fresh() else self.ttl / 10):
            try:
                self.lock.reacquire()
                self._renewed = time.monotonic()
            except redis.exceptions.LockNotOwnedError:
                return  # expired and maybe taken: acquire() will step down
            except redis.RedisError:
                if time.monotonic() - self._renewed >= self.ttl:
                    return  # the key has expired by now
                # a blip: try again sooner

    def _fresh(self) -> bool:
        return time.monotonic() - self._renewed < self.ttl / 2

    def _step_down(self) -> None:
        self._held = False
        self._stop.set()
        self.lock.local.token = None

    def release(self) -> None:
        self._stop.set()
        if self._held:
            with contextlib.suppress(Exception):
                self.lock.release()
        self._held = False


class NoLeader:
    """Always the leader (``--no-leader``: tests and single-shot runs)."""

    kind = "none"

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


def build_leader(leader: str | None, state: str, ttl: float) -> Leader:
    """The lock a policy asks for; by default the one that matches its state store."""
    from senex_scale.store.sql import sqlite_path

    target = leader
    if target is None:
        target = "file" if state.startswith("sqlite:") else state
    if target == "file":
        if not state.startswith("sqlite:"):
            raise PermanentError("controller.leader = file needs a sqlite: state")
        path = sqlite_path(state)
        return FileLeader(path.with_name(path.name + ".lock"))
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresLeader(target)
    if target.startswith(("redis://", "rediss://")):
        return RedisLeader(target, ttl)
    raise PermanentError(f"controller.leader: unknown lock {target.split(':', 1)[0]!r}")
