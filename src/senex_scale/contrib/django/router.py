"""A database router that scales reads without giving up read-your-writes.

The seed's router sent every read to one replica: reads inside a transaction saw a snapshot
older than the transaction's own writes, a lagging or dead replica served stale rows or errors,
and a user who saved a form was redirected to a page that did not show the change. This one:

- writes, migrations and every read inside ``atomic()`` go to the primary;
- other reads go to a replica that is up, within the lag bounds (``MAX_LAG_SECONDS``,
  ``MAX_LAG_BYTES``) and, when the current context wrote recently, that has replayed the
  write (``pg_last_wal_replay_lsn() >= `` the primary's ``pg_current_wal_lsn()`` read after
  the write); otherwise the primary;
- replica health is probed at most every ``HEALTH_TTL`` seconds by whichever request comes
  first (the others use the cached states meanwhile, they never wait for a probe);
- the replica list is re-read at run time from the settings (a list, or a callable) and from
  a JSON registry file (``registry.py``) when the file changes.

Read-your-writes state (the *pin*) lives in a context variable, so it follows a request, a
Channels consumer or a Celery task and never leaks into another. The pin is made *pending* by
a write and gets its LSN at the first read that could go to a replica, outside a transaction
(inside one, the COMMIT is still to come); when the LSN cannot be read (another database, an
error) reads go to the primary. A pin ends only by time (``ReplicaRouter.pin_seconds``):
never because the replicas seen now have caught up, since one that is down or lagging now
may come back behind the write. The pin travels across a redirect in a signed cookie
(``ReadYourWritesMiddleware``), into WebSocket connections from that cookie
(``PinScopeMiddleware``), into Celery tasks in a message header (``install_celery``) and into
consumers through ``pin_token()``.

::

    write ──> Pin(lsn=None, until=now+pin_seconds)               (pending)
    read  ──> in a transaction: the primary (pin stays pending)
          ──> pending: lsn := primary pg_current_wal_insert_lsn()  (failed: the primary)
          ──> replicas with replay_lsn >= lsn ──> one of them | none: the primary
    now >= until ──> pin dropped: every replica within its lag bound holds the write

Settings (all optional)::

    SENEX_SCALE_ROUTER = {
        "PRIMARY": "default",          # alias of the primary
        "REPLICAS": ["replica"],       # aliases in DATABASES, registry-style objects, or the
                                       # dotted path of a callable returning such a list
        "REGISTRY": "/etc/senex-scale/replicas.json",
        "MAX_LAG_SECONDS": 5.0,        # replay delay beyond which a replica is skipped
        "MAX_LAG_BYTES": 16777216,     # WAL not yet replayed beyond which it is skipped
        "HEALTH_TTL": 2.0,             # seconds between probes (and registry stats)
        "PIN_SECONDS": 10.0,           # how long a write pins (raised to the lag bound + 2 TTL)
        "COOKIE": "senex_pin",         # the cookie that carries a pin across a redirect
        "INHERIT_PASSWORD": False,     # registry entries without password_env log in with
                                       # the primary's password (off: with none)
    }

A registry entry is data someone wrote, not settings: its alias may not be the primary's or
any alias ``DATABASES`` already has (it would rewrite that connection in place), and it gets
the primary's password only with ``INHERIT_PASSWORD`` (whoever could write the file would
otherwise point an entry at their own server and collect the password). Entries given in
``REPLICAS`` itself are settings and keep the primary's password.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from senex_scale.contrib.django.registry import (
    ALIAS_PATTERN,
    ReplicaEntry,
    database_settings,
    parse_registry,
    read_registry,
)
from senex_scale.errors import InputError, SenexError

log = logging.getLogger(__name__)

SETTING = "SENEX_SCALE_ROUTER"
COOKIE_SALT = "senex_scale.pin"

F = TypeVar("F", bound=Callable[..., Any])


class RouterConfigError(InputError):
    """``SENEX_SCALE_ROUTER`` is invalid; the message names the key."""


# --------------------------------------------------------------------------- LSNs and pins


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` -> the 64-bit WAL position PostgreSQL prints as two hex halves."""
    match = re.fullmatch(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a PostgreSQL LSN (e.g. 16/B374D848)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    """The inverse of ``parse_lsn``."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class Pin:
    """Reads of this context need the primary, or a replica that replayed ``lsn``.

    ``lsn`` None: the write's position is not known yet (pending). ``until`` (epoch seconds)
    bounds a pin whose LSN could not be read: the time fallback.
    """

    lsn: int | None
    until: float

    def alive(self, now: float) -> bool:
        """Still in force: its time has not run out (with or without an LSN)."""
        return now < self.until

    def token(self) -> str:
        """A compact text form for a cookie, a task header or a channel-layer message."""
        lsn = format_lsn(self.lsn) if self.lsn is not None else "-"
        return f"{lsn}@{self.until:.3f}"

    @classmethod
    def from_token(cls, token: str | None) -> Pin | None:
        """The pin a token stands for; None for a missing or malformed token (never raises)."""
        if not token or "@" not in token:
            return None
        lsn_text, _, until_text = token.partition("@")
        try:
            lsn = None if lsn_text == "-" else parse_lsn(lsn_text)
            until = float(until_text)
        except ValueError:
            return None
        if until != until:  # NaN
            return None
        return cls(lsn=lsn, until=until)


_pin: ContextVar[Pin | None] = ContextVar("senex_scale_pin", default=None)


def current_pin() -> Pin | None:
    """The pin of the running context (request, consumer, task), if any."""
    return _pin.get()


def pin_token() -> str | None:
    """The current pin as a token to hand to another context (a task, a consumer), or None."""
    pin = _pin.get()
    return pin.token() if pin is not None else None


def adopt_pin(token: str | None, *, clock: Callable[[], float] = time.time) -> Pin | None:
    """Take over a pin handed over as a token (keeps the stricter of the two pins)."""
    incoming = Pin.from_token(token)
    if incoming is None or not incoming.alive(clock()):
        return _pin.get()
    merged = _stricter(_pin.get(), incoming)
    _pin.set(merged)
    return merged


def pin_to_primary(seconds: float, *, clock: Callable[[], float] = time.time) -> None:
    """Send this context's reads to the primary (or a caught-up replica) from now on."""
    _pin.set(_stricter(_pin.get(), Pin(lsn=None, until=clock() + seconds)))


def _stricter(a: Pin | None, b: Pin | None) -> Pin | None:
    if a is None or b is None:
        return a or b
    if a.lsn is None or b.lsn is None:
        return Pin(lsn=None, until=max(a.until, b.until))
    return Pin(lsn=max(a.lsn, b.lsn), until=max(a.until, b.until))


@contextlib.contextmanager
def pin_scope(token: str | None = None) -> Iterator[None]:
    """Run a block with its own pin (none, or the handed-over ``token``), restored afterwards.

    For work that reuses a thread or a context for unrelated units: a Celery task, a
    management command's loop, a consumer's message handler.
    """
    reset = _pin.set(Pin.from_token(token))
    try:
        yield
    finally:
        _pin.reset(reset)


@contextlib.asynccontextmanager
async def apin_scope(token: str | None = None) -> AsyncIterator[None]:
    """``pin_scope`` for ``async with``."""
    reset = _pin.set(Pin.from_token(token))
    try:
        yield
    finally:
        _pin.reset(reset)


def with_pin_scope(func: F) -> F:
    """Decorator: each call of ``func`` (sync or async) gets a fresh pin scope."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with apin_scope():
                return await func(*args, **kwargs)

        return cast(F, async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with pin_scope():
            return func(*args, **kwargs)

    return cast(F, wrapper)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RouterConfig:
    """``SENEX_SCALE_ROUTER``, validated once."""

    primary: str = "default"
    replicas: tuple[str | ReplicaEntry, ...] = ()
    replicas_callable: str | None = None
    registry: Path | None = None
    max_lag_seconds: float = 5.0
    max_lag_bytes: int = 16 * 1024 * 1024
    health_ttl: float = 2.0
    pin_seconds: float = 10.0
    cookie: str = "senex_pin"
    inherit_password: bool = False
    """Registry entries without ``password_env`` use the primary's password (off: none)."""

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any] | None) -> RouterConfig:
        """Validate the setting; every problem names ``SENEX_SCALE_ROUTER["KEY"]``."""
        raw = dict(raw or {})
        problems: list[str] = []
        known = {
            "PRIMARY", "REPLICAS", "REGISTRY", "MAX_LAG_SECONDS", "MAX_LAG_BYTES",
            "HEALTH_TTL", "PIN_SECONDS", "COOKIE", "INHERIT_PASSWORD",
        }  # fmt: skip
        for key in sorted(set(raw) - known):
            problems.append(f'{SETTING}["{key}"]: unknown key')

        def number(key: str, default: float) -> float:
            value = raw.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                problems.append(f'{SETTING}["{key}"]: {value!r} must be a number above 0')
                return default
            return float(value)

        primary = raw.get("PRIMARY", "default")
        if not isinstance(primary, str) or not primary:
            problems.append(f'{SETTING}["PRIMARY"]: {primary!r} is not a database alias')
            primary = "default"
        replicas: list[str | ReplicaEntry] = []
        replicas_callable: str | None = None
        value = raw.get("REPLICAS", ())
        if isinstance(value, str):
            replicas_callable = value
        elif isinstance(value, list | tuple):
            try:
                replicas = _replica_list(value, f'{SETTING}["REPLICAS"]')
            except InputError as exc:
                problems.append(str(exc))
        else:
            problems.append(
                f'{SETTING}["REPLICAS"]: must be a list of aliases or objects, or a dotted path'
            )
        registry = raw.get("REGISTRY")
        if registry is not None and not isinstance(registry, str | os.PathLike):
            problems.append(f'{SETTING}["REGISTRY"]: {registry!r} is not a path')
            registry = None
        cookie = raw.get("COOKIE", "senex_pin")
        if not isinstance(cookie, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", cookie):
            problems.append(f'{SETTING}["COOKIE"]: {cookie!r} is not a cookie name')
            cookie = "senex_pin"
        inherit = raw.get("INHERIT_PASSWORD", False)
        if not isinstance(inherit, bool):
            problems.append(f'{SETTING}["INHERIT_PASSWORD"]: {inherit!r} is not True or False')
            inherit = False
        config = cls(
            primary=primary,
            replicas=tuple(replicas),
            replicas_callable=replicas_callable,
            registry=Path(registry) if registry is not None else None,
            max_lag_seconds=number("MAX_LAG_SECONDS", 5.0),
            max_lag_bytes=int(number("MAX_LAG_BYTES", 16 * 1024 * 1024)),
            health_ttl=number("HEALTH_TTL", 2.0),
            pin_seconds=number("PIN_SECONDS", 10.0),
            cookie=cookie,
            inherit_password=inherit,
        )
        if problems:
            body = "\n".join(f"  {p}" for p in problems)
            raise RouterConfigError(f"{SETTING}: {len(problems)} problem(s)\n{body}")
        return config


def _replica_list(items: Iterable[Any], source: str) -> list[str | ReplicaEntry]:
    """Aliases stay aliases; objects are registry entries (validated like the file)."""
    out: list[str | ReplicaEntry] = []
    objects: list[Any] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            if not ALIAS_PATTERN.fullmatch(item):
                raise InputError(f"{source}[{index}]: {item!r} is not a database alias")
            out.append(item)
        else:
            objects.append(item)
    out.extend(parse_registry({"replicas": objects}, source))
    return out


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class ReplicaHealth:
    """What the last probe of one replica found."""

    alias: str
    healthy: bool
    reason: str
    checked_at: float
    replay_lsn: int | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None


@dataclass(frozen=True)
class Probe:
    """Raw answers of a replica probe (``probe_replica``).

    ``replay_age``: seconds since the commit of the last transaction the replica replayed
    (``now() - pg_last_xact_replay_timestamp()``), None when it has replayed none since it
    started. It is *not* the lag by itself: an idle primary commits nothing either.
    """

    in_recovery: bool
    replay_lsn: int | None
    replay_age: float | None


def judge(
    alias: str,
    probe: Probe | Exception,
    primary_lsn: int | None,
    now: float,
    max_lag_seconds: float,
    max_lag_bytes: int,
    seen_current_at: float | None = None,
) -> ReplicaHealth:
    """Healthy or not, and why: the pure part of a health check.

    ``lag_seconds`` is an upper bound of how old the replica's state is, never a guess:

    - 0 when it has replayed ``primary_lsn`` (the primary's position read just before the
      probe): it was current then;
    - otherwise the smallest of the bounds known: the age of the last transaction it
      replayed (everything the primary committed before that is there), and the time since
      the monitor last saw it at or past the primary's position (``seen_current_at``);
    - neither known (behind, nothing replayed since its start, never seen current): not
      healthy.

    The replica's own view (received == replayed) is not used: a replica whose WAL receiver
    has stopped has replayed all it received and is still arbitrarily far behind. Because the
    bound is honest, a replica within ``max_lag_seconds`` has every write committed more than
    ``max_lag_seconds`` before the probe: what lets a pin expire (``ReplicaRouter``).
    """
    if isinstance(probe, Exception):
        text = str(probe).strip().splitlines()[0] if str(probe).strip() else type(probe).__name__
        return ReplicaHealth(alias, False, f"down: {text}", now)
    if not probe.in_recovery:
        return ReplicaHealth(alias, False, "not in recovery (promoted?): not a replica", now)
    if probe.replay_lsn is None:
        return ReplicaHealth(alias, False, "has not replayed any WAL yet", now)
    lag_bytes = None
    lag: float | None
    if primary_lsn is not None:
        lag_bytes = max(0, primary_lsn - probe.replay_lsn)
    if lag_bytes == 0:
        lag = 0.0
    else:
        bounds = [probe.replay_age] if probe.replay_age is not None else []
        if seen_current_at is not None:
            bounds.append(now - seen_current_at)
        lag = max(0.0, min(bounds)) if bounds else None
    base = ReplicaHealth(alias, True, "ok", now, probe.replay_lsn, lag, lag_bytes)
    if lag is None:
        behind = f"{lag_bytes} bytes" if lag_bytes is not None else "an unknown amount"
        return replace(
            base,
            healthy=False,
            reason=f"lag unknown: behind by {behind}, no replayed transaction to date it",
        )
    if lag > max_lag_seconds:
        return replace(base, healthy=False, reason=f"lag {lag:.1f}s > {max_lag_seconds:g}s")
    if lag_bytes is not None and lag_bytes > max_lag_bytes:
        return replace(base, healthy=False, reason=f"lag {lag_bytes} bytes > {max_lag_bytes}")
    return base


PROBE_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())"
)
"""One round trip: in recovery, replay position, age of the last replayed commit (``judge``)."""


def probe_replica(alias: str) -> Probe:
    """Ask the replica how far it has replayed (through Django's connection for ``alias``)."""
    from django.db import Error, connections

    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute(PROBE_SQL)
            row = cursor.fetchone()
    except Error:
        # Django closes a broken connection only between requests; the next probe (maybe
        # in this same request or task) must connect again.
        connection.close()
        raise
    in_recovery, lsn, age = row
    return Probe(
        in_recovery=bool(in_recovery),
        replay_lsn=parse_lsn(lsn) if lsn else None,
        replay_age=float(age) if age is not None else None,
    )


def primary_lsn(alias: str) -> int | None:
    """The primary's current WAL position (written out), or None when it cannot be read (not
    PostgreSQL, in a failed transaction, down). What the monitor compares replicas with."""
    return _read_lsn(alias, "pg_current_wal_lsn()")


def pin_lsn(alias: str) -> int | None:
    """The position a replica must replay to show everything committed so far: the WAL
    *insert* position, at or past the end of every commit record already made, even one not
    yet written out (``synchronous_commit = off``). None as for ``primary_lsn``, and inside a
    transaction on ``alias``: a position read there precedes the transaction's own COMMIT."""
    if in_transaction(alias):
        return None
    return _read_lsn(alias, "pg_current_wal_insert_lsn()")


def in_transaction(alias: str) -> bool:
    """A transaction is open on ``alias``'s connection: ``atomic()`` or autocommit off."""
    from django.db import connections

    connection = connections[alias]
    if connection.in_atomic_block:
        return True
    # the attribute, not get_autocommit(): no connecting, no checks (every read asks this)
    return connection.connection is not None and not connection.autocommit


def _read_lsn(alias: str, function: str) -> int | None:
    from django.db import DatabaseError, connections

    connection = connections[alias]
    if connection.vendor != "postgresql" or connection.needs_rollback:
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {function}::text")
            row = cursor.fetchone()
    except DatabaseError as exc:
        log.warning("router: cannot read the primary's WAL position: %s", exc)
        return None
    return parse_lsn(row[0]) if row and row[0] else None


@dataclass
class ReplicaMonitor:
    """The replica list and each replica's health, refreshed at most every ``health_ttl``."""

    config: RouterConfig
    clock: Callable[[], float] = time.time
    probe: Callable[[str], Probe] = probe_replica
    read_primary_lsn: Callable[[str], int | None] = primary_lsn
    read_pin_lsn: Callable[[str], int | None] = pin_lsn
    _seen: list[tuple[float, int]] = field(default_factory=list)
    _states: dict[str, ReplicaHealth] = field(default_factory=dict)
    _aliases: tuple[str, ...] = ()
    _next: float = 0.0
    _registry_stamp: tuple[int, int] | None = None
    _registry_entries: tuple[ReplicaEntry, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def states(self) -> list[ReplicaHealth]:
        """The current states; refreshes them first when due (unless another thread is)."""
        if self.clock() >= self._next and self._lock.acquire(blocking=False):
            try:
                self.refresh()
            finally:
                self._lock.release()
        states = self._states
        return [states[a] for a in self._aliases if a in states]

    def refresh(self) -> None:
        """Re-read the replica list and probe every replica now."""
        aliases = self._load_aliases()
        read_at = self.clock()
        lsn = self.read_primary_lsn(self.config.primary) if aliases else None
        if lsn is not None:
            self._remember(read_at, lsn)
        states: dict[str, ReplicaHealth] = {}
        for alias in aliases:
            try:
                found: Probe | Exception = self.probe(alias)
            except Exception as exc:  # any failure to probe means: do not read there
                found = exc
            max_lag = self.config.max_lag_seconds
            entries = [*self._registry_entries, *self.config.replicas]
            entry = next(
                (e for e in entries if isinstance(e, ReplicaEntry) and e.alias == alias), None
            )
            if entry is not None and entry.max_lag_seconds is not None:
                max_lag = entry.max_lag_seconds
            seen = None
            if isinstance(found, Probe) and found.replay_lsn is not None:
                seen = self._seen_current_at(found.replay_lsn)
            states[alias] = judge(
                alias, found, lsn, self.clock(), max_lag, self.config.max_lag_bytes, seen
            )
            if not states[alias].healthy:
                log.info("router: skipping replica %s: %s", alias, states[alias].reason)
        self._states = states
        self._aliases = aliases
        self._next = self.clock() + self.config.health_ttl

    def invalidate(self) -> None:
        """Probe again on the next read (after a known failover or replica change)."""
        self._next = 0.0

    def max_lag_seconds(self) -> float:
        """The largest lag bound of any replica (the setting or a registry override)."""
        overrides = [e.max_lag_seconds for e in self._registry_entries if e.max_lag_seconds]
        static = [
            r.max_lag_seconds
            for r in self.config.replicas
            if isinstance(r, ReplicaEntry) and r.max_lag_seconds
        ]
        return max([self.config.max_lag_seconds, *overrides, *static])

    def _remember(self, at: float, lsn: int) -> None:
        """Keep (time, primary position) samples for ``_seen_current_at`` (bounded)."""
        seen = self._seen
        if seen and lsn < seen[-1][1]:  # the primary went back: a new primary, forget
            seen.clear()
        seen.append((at, lsn))
        horizon = at - 2 * self.max_lag_seconds() - self.config.health_ttl
        while len(seen) > 1 and (seen[0][0] < horizon or len(seen) > 512):
            seen.pop(0)

    def _seen_current_at(self, replay_lsn: int) -> float | None:
        """The latest time the primary's position was at or below ``replay_lsn``: the
        replica's state is at least as new as the primary's at that time."""
        for at, lsn in reversed(self._seen):
            if lsn <= replay_lsn:
                return at
        return None

    def _load_aliases(self) -> tuple[str, ...]:
        items: list[str | ReplicaEntry] = list(self.config.replicas)
        if self.config.replicas_callable is not None:
            from django.utils.module_loading import import_string

            try:
                produced = import_string(self.config.replicas_callable)()
                items += _replica_list(produced, self.config.replicas_callable)
            except Exception as exc:  # a broken callable must not break every read
                log.error(
                    "router: %s failed, keeping its last list: %s",
                    self.config.replicas_callable,
                    exc,
                )
                items += [a for a in self._aliases if a not in items]
        registered = self._registry()
        items += registered
        aliases: list[str] = []
        for item in items:
            if isinstance(item, ReplicaEntry):
                from_file = any(item is entry for entry in registered)
                try:
                    install_alias(
                        item,
                        self.config.primary,
                        inherit_password=self.config.inherit_password or not from_file,
                    )
                except (SenexError, KeyError) as exc:
                    log.error("router: cannot use replica %s: %s", item.alias, exc)
                    continue
                item = item.alias
            if item != self.config.primary and item not in aliases:
                aliases.append(item)
        return tuple(aliases)

    def _registry(self) -> tuple[ReplicaEntry, ...]:
        path = self.config.registry
        if path is None:
            return ()
        try:
            info = path.stat()
            stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._registry_stamp:
            try:
                self._registry_entries = tuple(read_registry(path))
                self._registry_stamp = stamp
            except SenexError as exc:  # keep the last good list; say why
                log.error("router: keeping the previous replica list: %s", exc)
        return self._registry_entries


_install_lock = threading.Lock()
_installed: set[str] = set()
"""Aliases ``install_alias`` added: the only ones it may update in place."""


def install_alias(entry: ReplicaEntry, primary: str, *, inherit_password: bool = True) -> None:
    """Make ``entry.alias`` a usable database alias (added, or updated in place when this
    function added it). The primary's alias and any other alias of ``DATABASES`` are refused
    (``RouterConfigError``): an entry must not redirect a connection it did not create."""
    from django.db import DEFAULT_DB_ALIAS, connections

    with _install_lock:
        databases = connections.settings
        if entry.alias in (primary, DEFAULT_DB_ALIAS):
            raise RouterConfigError(f'replica alias "{entry.alias}" is the primary\'s: ignored')
        if entry.alias in databases and entry.alias not in _installed:
            raise RouterConfigError(
                f'replica alias "{entry.alias}" is already in DATABASES: ignored (an entry may '
                "not redirect a database the settings define; pick another alias)"
            )
        conf = database_settings(
            entry, databases[primary], primary, inherit_password=inherit_password
        )
        conf = connections.configure_settings({DEFAULT_DB_ALIAS: {}, entry.alias: conf})[
            entry.alias
        ]
        existing = databases.get(entry.alias)
        if existing is None:
            databases[entry.alias] = conf
            _installed.add(entry.alias)
        elif existing != conf:
            existing.clear()  # open connection wrappers hold this very dict
            existing.update(conf)


# --------------------------------------------------------------------------- the router


class ReplicaRouter:
    """``DATABASE_ROUTERS = ["senex_scale.contrib.django.router.ReplicaRouter"]``."""

    def __init__(
        self,
        config: RouterConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        choose: Callable[[list[str]], str] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        # Its own generator, not the process's global one (requests draw from it in
        # many threads; the global state belongs to whoever seeded it).
        self._choose = choose or random.Random().choice
        self._monitor: ReplicaMonitor | None = None

    @property
    def config(self) -> RouterConfig:
        if self._config is None:
            from django.conf import settings

            self._config = RouterConfig.from_settings(getattr(settings, SETTING, None))
        return self._config

    @property
    def monitor(self) -> ReplicaMonitor:
        if self._monitor is None:
            self._monitor = ReplicaMonitor(self.config, clock=self._clock)
        return self._monitor

    # Django's router API ----------------------------------------------------------------

    def db_for_read(self, model: Any, **hints: Any) -> str:
        """A caught-up healthy replica, or the primary (see the module docstring)."""
        primary = self.config.primary
        if in_transaction(primary):
            return primary
        healthy = [s for s in self.monitor.states() if s.healthy]
        if not healthy:
            return primary
        pin = _pin.get()
        if pin is not None and not pin.alive(self._clock()):
            _pin.set(None)  # expired: every healthy replica has the write (``pin_seconds``)
            pin = None
        if pin is not None:
            if pin.lsn is None:
                lsn = self.monitor.read_pin_lsn(primary)
                if lsn is None:
                    return primary  # time fallback
                pin = Pin(lsn=lsn, until=pin.until)
                _pin.set(pin)
            lsn = cast(int, pin.lsn)
            # Only the replicas that replayed the write, whatever the others do: one that is
            # down or lagging now may come back within bounds and still behind it.
            healthy = [s for s in healthy if s.replay_lsn is not None and s.replay_lsn >= lsn]
            if not healthy:
                return primary
        return self._choose([s.alias for s in healthy])

    def db_for_write(self, model: Any, **hints: Any) -> str:
        """The primary; the context's later reads are pinned (``pin_seconds``)."""
        _pin.set(_stricter(_pin.get(), Pin(lsn=None, until=self._clock() + self.pin_seconds())))
        return self.config.primary

    def pin_seconds(self) -> float:
        """How long a write pins its context: ``PIN_SECONDS``, raised when needed to the
        largest lag bound plus two health TTLs. After that long, every replica the router may
        pick (lag at its last probe within the bound, probed at most a TTL or so ago) holds
        the write, so the pin can go without an LSN check."""
        monitor = self.monitor
        return max(self.config.pin_seconds, monitor.max_lag_seconds() + 2 * self.config.health_ttl)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        """Rows from the primary and its replicas are the same rows."""
        ours = {self.config.primary, *self.monitor._aliases}
        if obj1._state.db in ours and obj2._state.db in ours:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        """Never on a replica (read-only; it gets the primary's schema by replication)."""
        if db == self.config.primary:
            return True
        if db in self.monitor._aliases or db in self._static_aliases():
            return False
        return None

    def _static_aliases(self) -> set[str]:
        return {r if isinstance(r, str) else r.alias for r in self.config.replicas}

    # helpers -----------------------------------------------------------------------------

    def resolve_pin(self) -> Pin | None:
        """Give a pending pin its LSN now (before handing it to another context).

        Inside a transaction on the primary the pin stays pending: the COMMIT is still to
        come, and the context that gets the pin resolves it at its first read."""
        pin = _pin.get()
        if pin is not None and pin.lsn is None:
            lsn = self.monitor.read_pin_lsn(self.config.primary)
            if lsn is not None:
                pin = Pin(lsn=lsn, until=pin.until)
                _pin.set(pin)
        return pin


def get_router() -> ReplicaRouter | None:
    """The ``ReplicaRouter`` in ``DATABASE_ROUTERS``, if one is installed."""
    from django.db import router

    for candidate in router.routers:
        if isinstance(candidate, ReplicaRouter):
            return candidate
    return None


# --------------------------------------------------------------------------- carrying the pin


class ReadYourWritesMiddleware:
    """Gives each request its own pin, carried across a redirect in a signed cookie.

    Without it a WSGI thread would keep the previous request's pin; with it, a POST that
    writes and redirects makes the next GET read from the primary (or a caught-up replica).
    The cookie is signed (a client cannot make up an LSN) and lives ``PIN_SECONDS``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = inspect.iscoroutinefunction(get_response)
        if self.is_async:
            from asgiref.sync import markcoroutinefunction

            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        incoming = self._incoming(request)
        reset = _pin.set(incoming)
        try:
            response = self.get_response(request)
            outgoing = _pin.get()
        finally:
            _pin.reset(reset)
        return self._finish(request, response, incoming, outgoing)

    async def __acall__(self, request: Any) -> Any:
        incoming = self._incoming(request)
        reset = _pin.set(incoming)
        try:
            response = await cast(Awaitable[Any], self.get_response(request))
            outgoing = _pin.get()
        finally:
            _pin.reset(reset)
        return self._finish(request, response, incoming, outgoing)

    def _incoming(self, request: Any) -> Pin | None:
        router = get_router()
        if router is None:
            return None
        return pin_from_cookies(router, request.COOKIES)

    def _finish(self, request: Any, response: Any, incoming: Pin | None, out: Pin | None) -> Any:
        router = get_router()
        if router is None:
            return response
        config = router.config
        if out is not None and out != incoming:
            response.set_signed_cookie(
                config.cookie,
                out.token(),
                salt=COOKIE_SALT,
                max_age=max(1, math.ceil(out.until - time.time())),
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        elif out is None and incoming is not None:
            response.delete_cookie(config.cookie, samesite="Lax")
        return response


def pin_from_cookies(router: ReplicaRouter, cookies: Mapping[str, str]) -> Pin | None:
    """The live pin in the signed pin cookie among ``cookies``, or None (missing, forged,
    expired)."""
    from django.http import HttpRequest

    name = router.config.cookie
    if not cookies.get(name):
        return None
    request = HttpRequest()  # Django's own unsigning, whatever its salt scheme
    request.COOKIES = dict(cookies)
    token = request.get_signed_cookie(
        name, default=None, salt=COOKIE_SALT, max_age=router.pin_seconds() + 1
    )
    pin = Pin.from_token(token)
    return pin if pin is not None and pin.alive(time.time()) else None


class PinScopeMiddleware:
    """ASGI middleware for Channels: every connection gets a pin scope of its own, starting
    with the pin of the HTTP client that opens it (its signed pin cookie), so a WebSocket
    opened after a write reads that write.

    Wrap the websocket application: ``PinScopeMiddleware(URLRouter(...))``. Within the
    connection, writes made through ``database_sync_to_async`` pin the consumer's later reads;
    a consumer that receives a pin from a task or a view takes it with ``adopt_pin(token)``.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async with apin_scope():
            router = get_router()
            if router is not None:
                pin = pin_from_cookies(router, _scope_cookies(scope))
                if pin is not None:
                    _pin.set(pin)
            await self.app(scope, receive, send)


def _scope_cookies(scope: Mapping[str, Any]) -> Mapping[str, str]:
    """The cookies of an ASGI connection (Channels' ``CookieMiddleware`` or the header)."""
    cookies = scope.get("cookies")
    if isinstance(cookies, Mapping):
        return cookies
    from django.http.cookie import parse_cookie

    for name, value in scope.get("headers") or ():
        if name == b"cookie":
            parsed: dict[str, str] = parse_cookie(value.decode("latin-1"))
            return parsed
    return {}


HEADER = "senex_pin"
"""The Celery message header that carries a pin into a task."""


def install_celery() -> None:
    """Carry read-your-writes into Celery tasks and keep tasks from sharing a pin.

    A task published by a context that wrote gets the pin (resolved to an LSN when possible)
    in the ``senex_pin`` header; each task runs in its own pin scope with that pin.
    """
    from celery import signals

    tokens: dict[str, Any] = {}

    def on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
        router = get_router()
        if headers is None or router is None or _pin.get() is None:
            return
        pin = router.resolve_pin()
        if pin is not None:
            headers[HEADER] = pin.token()

    def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        token = getattr(task.request, HEADER, None) if task is not None else None
        if token is None and task is not None:
            token = (getattr(task.request, "headers", None) or {}).get(HEADER)
        tokens[task_id or ""] = _pin.set(Pin.from_token(token))

    def on_postrun(task_id: str | None = None, **_: Any) -> None:
        reset = tokens.pop(task_id or "", None)
        if reset is not None:
            with contextlib.suppress(ValueError):
                _pin.reset(reset)

    # dispatch_uid: installing twice (settings imported twice) connects once.
    signals.before_task_publish.connect(on_publish, weak=False, dispatch_uid="senex_pin_pub")
    signals.task_prerun.connect(on_prerun, weak=False, dispatch_uid="senex_pin_pre")
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid="senex_pin_post")
