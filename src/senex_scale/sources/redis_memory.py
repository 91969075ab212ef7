"""Redis memory use per node, and the Redis connection layer the ``celery-redis`` source shares.

``metric.query`` of a rule using a ``type = "redis"`` source::

    used_memory_ratio   % of the memory limit in use: used_memory / limit * 100 (also the
                        default when the query is empty)
    used_memory_bytes   used_memory, in bytes

One sample per node, ``instance = "host:port"`` (the socket path for ``unix://``). The nodes are
``url``, every one of ``urls``, or with Sentinel (``url = "sentinel://h1:26379;h2:26379"`` and
``master_name``) the master and every replica Sentinel reports alive (``SENTINEL MASTERS`` and
``SENTINEL REPLICAS``, through redis-py's ``Sentinel``), found again on every query so a
failover is followed. One node that cannot answer fails the whole query (``SourceError``): the
metric is then missing, never a partial maximum.

The limit is, in order: the server's ``maxmemory`` (``INFO memory``) when it is set; else the
``memory_limit`` setting; else, for a server on this machine, the memory limit of the cgroup
its process runs in (``process_id`` of ``INFO server``; cgroup v2 ``memory.max`` or v1
``memory.limit_in_bytes``, the smallest along the path up to the root), capped at the host's
RAM; else the RAM of the server's host (``total_system_memory`` of ``INFO memory``, or this
host's RAM from psutil when the server does not report it).

Passwords are never shown: they are given in the URL, in ``password`` or, better, through
``password_env = "NAME"`` (read from the environment when the source is built); every URL in
a message or repr reads ``redis://:***@host:port/0``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, cast
from urllib.parse import SplitResult, unquote, urlsplit

import psutil
import redis
from pydantic import BeforeValidator, Field, SecretStr, field_validator
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    BusyLoadingError,
    InvalidResponse,
    MasterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SlaveNotFoundError

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.plugins import did_you_mean
from senex_scale.policy.models import Duration, show_value
from senex_scale.sources.base import EnvName, MetricRequest, Settings, parse_settings

__all__ = [
    "RedisConnection",
    "RedisConnectionSettings",
    "RedisMemorySettings",
    "RedisMemorySource",
    "parse_bytes",
    "redact_url",
]

REDIS_PORT = 6379
SENTINEL_PORT = 26379
QUERIES = ("used_memory_ratio", "used_memory_bytes")
CLIENT_NAME = "senex-scale"
_MAX_REASON = 300

# --------------------------------------------------------------------------- settings


def _secret(value: object) -> object:
    """Secrets must be strings; the error never repeats the value (it would print the secret)."""
    if value is None or isinstance(value, str | SecretStr):
        return value
    raise ValueError("must be a string")


Secret = Annotated[SecretStr | None, BeforeValidator(_secret)]

_SCHEMES = ("redis", "rediss", "unix", "sentinel")


class RedisConnectionSettings(Settings):
    """How to reach Redis: a URL (or Sentinel), passwords, and the socket timeout."""

    url: str | None = None
    """redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path, or
    sentinel://host:port;host:port[/db] (Celery's ``sentinel://h1:26379;sentinel://h2:26379``
    too) with ``master_name``."""
    master_name: str | None = None
    password: Secret = None
    password_env: EnvName | None = None
    """Name of an environment variable holding the password (read when the source is built)."""
    sentinel_password: Secret = None
    """Password of the Sentinel processes themselves (``requirepass`` in sentinel.conf)."""
    sentinel_password_env: EnvName | None = None
    socket_timeout: Duration = Field(default=2.0, gt=0)
    """Bound on connecting and on every reply, in seconds (or "500ms", "2s")."""

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_url(value)
        return value


def _check_url(value: str) -> None:
    scheme = value.partition("://")[0].lower() if "://" in value else ""
    if scheme not in _SCHEMES:
        raise ValueError(
            f'"{redact_url(value)}" is not a Redis URL: it must start with redis://, '
            "rediss://, unix:// or sentinel://"
        )


def _resolve_secret(
    source: str, value: SecretStr | None, env: str | None, field: str
) -> tuple[str | None, list[str]]:
    """The secret given directly or through ``FIELD_env``, and the problems found."""
    if value is not None and env is not None:
        return None, [f"sources.{source}.{field}_env: give {field} or {field}_env, not both"]
    if env is not None:
        secret = os.environ.get(env)
        if secret is None:
            return None, [f'sources.{source}.{field}_env: environment variable "{env}" is not set']
        return secret, []
    return (value.get_secret_value() if value is not None else None), []


# --------------------------------------------------------------------------- URLs


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (every part of a sentinel list)."""
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(part: str) -> str:
    scheme, sep, rest = part.partition("://")
    if not sep:
        scheme, rest = "", part
    if "@" not in rest:
        return part
    # Up to the last "@": a password with an unescaped "/", "?" or "#" is still hidden.
    userinfo, _, after = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:***" if colon and "/" not in user else "***"
    prefix = f"{scheme}://" if sep else ""
    return f"{prefix}{masked}@{after}"


@dataclass(frozen=True, slots=True)
class _Address:
    host: str
    port: int

    @property
    def text(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class _Target:
    """One parsed URL: where, as whom, and which database."""

    url: str
    """Redacted, for messages."""
    address: _Address | None
    socket_path: str | None
    username: str | None
    password: str | None
    db: int

    @property
    def instance(self) -> str:
        return self.socket_path or (self.address.text if self.address else self.url)


def _split(url: str) -> SplitResult:
    parts = urlsplit(url)
    _ = parts.port  # raises ValueError for a port that is not a number
    return parts


def _db_of(path: str) -> int:
    text = path.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f'"/{text}" is not a database number')
    return int(text)


def _parse_target(url: str) -> _Target:
    parts = _split(url)
    password = unquote(parts.password) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    if parts.scheme == "unix":
        return _Target(redact_url(url), None, parts.path, username, password, 0)
    if not parts.hostname:
        raise ValueError("has no host")
    address = _Address(parts.hostname, parts.port or REDIS_PORT)
    return _Target(redact_url(url), address, None, username, password, _db_of(parts.path))


def _parse_sentinels(url: str) -> tuple[list[_Address], _Target]:
    """``sentinel://[[user]:pw@]h1:p1;[sentinel://]h2:p2[/db]``: the sentinels, and the
    master's credentials and database (kombu reads them from the URL the same way)."""
    sentinels: list[_Address] = []
    username = password = None
    db = 0
    for raw in url.split(";"):
        part = raw.strip()
        if not part:
            continue
        if "://" not in part:
            part = "sentinel://" + part
        parts = _split(part)
        if parts.scheme != "sentinel":
            raise ValueError(f'"{redact_url(part)}" is not a sentinel:// address')
        if not parts.hostname:
            raise ValueError(f'"{redact_url(part)}" has no host')
        sentinels.append(_Address(parts.hostname, parts.port or SENTINEL_PORT))
        if parts.password is not None and password is None:
            password = unquote(parts.password)
            username = unquote(parts.username) if parts.username else None
        if parts.path.strip("/"):
            db = _db_of(parts.path)
    if not sentinels:
        raise ValueError("names no sentinel")
    redacted = redact_url(url)
    return sentinels, _Target(redacted, None, None, username, password, db)


# --------------------------------------------------------------------------- errors


def _permanent(exc: BaseException) -> bool:
    """True for failures that retrying will not fix (bad credentials, wrong key type, ...)."""
    if isinstance(
        exc,
        AuthenticationError
        | AuthenticationWrongNumberOfArgsError
        | AuthorizationError
        | NoPermissionError
        | InvalidResponse,
    ):
        return True
    if isinstance(exc, ResponseError):
        transient = MasterDownError | ReadOnlyError | TryAgainError | BusyLoadingError
        return not isinstance(exc, transient) and "LOADING" not in str(exc)
    return False


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --------------------------------------------------------------------------- connection


class _SentinelLike(Protocol):
    """The part of redis-py's ``Sentinel`` used here, with the types it returns."""

    def master_for(self, service_name: str) -> redis.Redis: ...
    def discover_master(self, service_name: str) -> tuple[str, int]: ...
    def discover_slaves(self, service_name: str) -> list[tuple[str, int]]: ...
    def close(self) -> None: ...


# redis.sentinel carries no annotations (mypy: untyped call); this cast gives it the types of
# the four methods used, as documented by redis-py.
_new_sentinel = cast("Callable[..., _SentinelLike]", Sentinel)


def _no_retry() -> Retry:
    # redis-py 8 retries 10 times with exponential backoff by default (each attempt bounded by
    # the timeout again); a metric source must fail within its timeout: the next tick retries.
    return Retry(NoBackoff(), 0)


class RedisConnection:
    """The Redis clients of one source: one URL, several URLs, or a Sentinel-managed group.

    Commands go through ``master()`` (the node that takes writes) or ``nodes()`` (every node);
    failures raised inside ``errors()`` become ``SourceError`` with passwords removed.
    """

    def __init__(
        self,
        source: str,
        settings: RedisConnectionSettings,
        urls: Sequence[str] = (),
    ) -> None:
        self.source = source
        problems: list[str] = []
        password, found = _resolve_secret(
            source, settings.password, settings.password_env, "password"
        )
        problems += found
        sentinel_password, found = _resolve_secret(
            source,
            settings.sentinel_password,
            settings.sentinel_password_env,
            "sentinel_password",
        )
        problems += found
        url_list = [settings.url] if settings.url is not None else list(urls)
        if not url_list:
            problems.append(f"sources.{source}.url: required")
        self._targets: list[_Target] = []
        self._sentinels: list[_Address] = []
        self._master_name = settings.master_name
        sentinel_url = next((u for u in url_list if u.lower().startswith("sentinel://")), None)
        if sentinel_url is not None:
            field = "url" if settings.url is not None else "urls"
            try:
                self._sentinels, target = _parse_sentinels(sentinel_url)
            except ValueError as exc:
                problems.append(f'sources.{source}.{field}: "{redact_url(sentinel_url)}" {exc}')
            else:
                self._targets.append(target)
            if len(url_list) > 1:
                problems.append(f"sources.{source}.urls: a sentinel:// URL must be the only one")
            if settings.master_name is None:
                problems.append(f"sources.{source}.master_name: required with a sentinel:// url")
        else:
            if settings.master_name is not None:
                problems.append(f"sources.{source}.master_name: only used with a sentinel:// url")
            if settings.sentinel_password is not None or settings.sentinel_password_env:
                problems.append(
                    f"sources.{source}.sentinel_password: only used with a sentinel:// url"
                )
            for i, url in enumerate(url_list):
                field = "url" if settings.url is not None else f"urls[{i}]"
                try:
                    self._targets.append(_parse_target(url))
                except ValueError as exc:
                    problems.append(f'sources.{source}.{field}: "{redact_url(url)}" {exc}')
        if password is not None and any(t.password is not None for t in self._targets):
            problems.append(
                f"sources.{source}.password: the URL has a password already; give only one"
            )
        if problems:
            raise PolicyError(f"sources.{source}", problems)

        self.timeout = settings.socket_timeout
        self._password = password
        self._sentinel_password = sentinel_password
        self._secrets = tuple(
            s for s in (password, sentinel_password, *(t.password for t in self._targets)) if s
        )
        self._urls = tuple(url_list)
        self._sentinel: _SentinelLike | None = None
        self._master: redis.Redis | None = None
        self._clients: dict[str, redis.Redis] = {}

    # ------------------------------------------------------------------ description

    @property
    def sentinel(self) -> bool:
        """True when the nodes are found through Sentinel."""
        return bool(self._sentinels)

    def describe(self) -> str:
        """Where this connection points, passwords redacted."""
        if self.sentinel:
            return f'{self._targets[0].url} (master "{self._master_name}")'
        return ", ".join(t.url for t in self._targets)

    def __repr__(self) -> str:
        return f"RedisConnection({self.source!r}, {self.describe()!r})"

    # ------------------------------------------------------------------ clients

    def _kwargs(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": _no_retry(),
            "client_name": CLIENT_NAME,
        }

    def _client_for(self, target: _Target, address: _Address | None = None) -> redis.Redis:
        """A client for ``address`` (a node Sentinel named) or else for the target's URL."""
        kwargs = self._kwargs()
        password = target.password if target.password is not None else self._password
        if address is not None:
            kwargs.update(db=target.db, password=password, username=target.username)
            return redis.Redis(host=address.host, port=address.port, **kwargs)
        # from_url: scheme (TLS for rediss://, unix sockets), host, port, db and the URL's
        # credentials come from the URL; the password setting only when the URL has none.
        if target.password is None and password is not None:
            kwargs["password"] = password
        url = self._urls[self._targets.index(target)]
        return redis.Redis.from_url(url, **kwargs)

    def _sentinel_manager(self) -> _SentinelLike:
        if self._sentinel is None:
            sentinel_kwargs = self._kwargs()
            sentinel_kwargs.pop("client_name")
            if self._sentinel_password is not None:
                sentinel_kwargs["password"] = self._sentinel_password
            target = self._targets[0]
            master_kwargs = self._kwargs()
            master_kwargs.update(
                db=target.db,
                password=target.password if target.password is not None else self._password,
                username=target.username,
            )
            self._sentinel = _new_sentinel(
                [(a.host, a.port) for a in self._sentinels],
                sentinel_kwargs=sentinel_kwargs,
                **master_kwargs,
            )
        return self._sentinel

    def master(self) -> redis.Redis:
        """The client for the node that takes writes (the only node, or Sentinel's master)."""
        if self._master is None:
            if self.sentinel:
                assert self._master_name is not None
                self._master = self._sentinel_manager().master_for(self._master_name)
            else:
                self._master = self._client_for(self._targets[0])
        return self._master

    def nodes(self) -> list[tuple[str, redis.Redis]]:
        """Every node as (instance, client): the URLs, or Sentinel's master and live replicas.

        Must be called inside ``errors()``: asking Sentinel can fail.
        """
        if not self.sentinel:
            if not self._clients:
                for target in self._targets:
                    self._clients[target.instance] = self._client_for(target)
            return list(self._clients.items())
        manager = self._sentinel_manager()
        assert self._master_name is not None
        host, port = manager.discover_master(self._master_name)
        found = [_Address(str(host), int(port))]
        for host, port in manager.discover_slaves(self._master_name):
            address = _Address(str(host), int(port))
            if address not in found:
                found.append(address)
        wanted = {a.text: a for a in found}
        for gone in set(self._clients) - set(wanted):
            self._clients.pop(gone).close()
        for text, address in wanted.items():
            if text not in self._clients:
                self._clients[text] = self._client_for(self._targets[0], address)
        return [(text, self._clients[text]) for text in wanted]

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn any Redis or socket failure inside the block into a ``SourceError``."""
        try:
            yield
        except SourceError:
            raise
        except (RedisError, OSError) as exc:
            if isinstance(exc, MasterNotFoundError | SlaveNotFoundError):
                # redis-py's text lists every sentinel client's repr: name the cause instead.
                sentinels = ", ".join(a.text for a in self._sentinels)
                master = self._master_name
                reason = f'no reachable sentinel ({sentinels}) names a healthy master "{master}"'
            else:
                reason = " ".join((str(exc) or type(exc).__name__).split())
                if len(reason) > _MAX_REASON:
                    reason = reason[: _MAX_REASON - 1] + "…"
            message = f"{self.describe()}: {what}: {_scrub(reason, self._secrets)}"
            raise SourceError(message, temporary=not _permanent(exc)) from exc

    def bad_reply(self, what: str, detail: str) -> SourceError:
        """A ``SourceError`` for a reply that does not have the expected shape."""
        return SourceError(f"{self.describe()}: {what}: unexpected reply ({detail})")

    def close(self) -> None:
        """Close every client and Sentinel connection (idempotent)."""
        clients = list(self._clients.values())
        if self._master is not None:
            clients.append(self._master)
        self._clients.clear()
        self._master = None
        for client in clients:
            with suppress(RedisError, OSError):  # closing a broken socket is not worth an error
                client.close()
        if self._sentinel is not None:
            with suppress(RedisError, OSError):
                self._sentinel.close()
            self._sentinel = None


# --------------------------------------------------------------------------- memory limits

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_bytes(value: object) -> int:
    """Bytes in ``value``: an int, or "512MiB", "2GiB" (powers of 1024), "2GB" (of 1000)."""
    if isinstance(value, bool):
        raise ValueError(
            f'{"true" if value else "false"} is not a size (e.g. 2147483648, "512MiB" or "2GiB")'
        )
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value} is not a size: it must be more than 0 bytes")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = (match.group(2) or "").lower()
            factor = 1024 ** ("kmgt".index(unit[0]) + 1) if unit[1:2] == "i" else _FACTORS[unit[:1]]
            size = int(float(match.group(1)) * factor)
            if size > 0:
                return size
    raise ValueError(f'{show_value(value)} is not a size (e.g. 2147483648, "512MiB" or "2GiB")')


ByteSize = Annotated[int, BeforeValidator(parse_bytes)]


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2): no limit at this level


def cgroup_memory_limit(
    pid: int | None, *, sys_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")
) -> int | None:
    """The memory limit (bytes) of the cgroup of process ``pid`` (or of the cgroup root).

    cgroup v2: ``memory.max``; v1: ``memory/…/memory.limit_in_bytes``. The effective limit
    is the smallest one from the process's cgroup up to the root; None when there is none.
    """
    paths: list[Path] = []
    lines: list[str] = []
    if pid is not None:
        try:
            lines = (proc / str(pid) / "cgroup").read_text().splitlines()
        except OSError:
            lines = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel_path = Path(rel.lstrip("/"))
        if controllers == "":
            chain = [sys_root / rel_path, *[sys_root / p for p in rel_path.parents]]
            paths += [p / "memory.max" for p in chain]
        elif "memory" in controllers.split(","):
            base = sys_root / "memory"
            chain = [base / rel_path, *[base / p for p in rel_path.parents]]
            paths += [p / "memory.limit_in_bytes" for p in chain]
    paths += [sys_root / "memory.max", sys_root / "memory" / "memory.limit_in_bytes"]
    limits = [limit for limit in map(_read_limit, dict.fromkeys(paths)) if limit]
    return min(limits) if limits else None


def _local_addresses() -> set[str]:
    found = {"localhost", socket.gethostname()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.add(address.address.split("%")[0])
    return found


def is_local(instance: str) -> bool:
    """True when ``instance`` (host:port, [v6]:port or a socket path) is on this machine."""
    if instance.startswith("/"):
        return True
    host = instance.rsplit(":", 1)[0].strip("[]")
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    return host in _local_addresses()


def _process_is_redis(pid: int, proc: Path = Path("/proc")) -> bool:
    try:
        return "redis" in (proc / str(pid) / "comm").read_text()
    except OSError:
        return False


# --------------------------------------------------------------------------- the source


class RedisMemorySettings(RedisConnectionSettings):
    """``[sources.NAME] type = "redis"``."""

    urls: tuple[str, ...] = ()
    """Several nodes, each a redis://, rediss:// or unix:// URL (instead of ``url``)."""
    memory_limit: ByteSize | None = None
    """The limit when a node's maxmemory is 0: bytes, or "512MiB", "2GiB"."""

    @field_validator("urls")
    @classmethod
    def _url_schemes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            _check_url(url)
        return value


def _number(info: dict[str, Any], key: str) -> float | None:
    value = info.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str | bytes):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class RedisMemorySource:
    """Memory use of every Redis node, in % of its limit or in bytes (``type = "redis"``)."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = parse_settings(RedisMemorySettings, name, options)
        if self.settings.url is not None and self.settings.urls:
            raise PolicyError(
                f"sources.{name}", [f"sources.{name}.urls: give url or urls, not both"]
            )
        self.connection = RedisConnection(name, self.settings, self.settings.urls)

    def __repr__(self) -> str:
        return f"RedisMemorySource({self.name!r}, {self.connection.describe()!r})"

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """One sample per node: used_memory as % of the limit, or in bytes."""
        what = request.metric.query.strip() or "used_memory_ratio"
        if what not in QUERIES:
            hint = did_you_mean(what, QUERIES)
            raise SourceError(
                f'source "{self.name}": unknown query "{what}"{hint}; known: {", ".join(QUERIES)}',
                temporary=False,
            )
        conn = self.connection
        samples: list[Sample] = []
        with conn.errors("listing nodes"):
            nodes = conn.nodes()
        for instance, client in nodes:
            with conn.errors(f"INFO memory on {instance}"):
                info = client.info("memory")
            used = _number(info, "used_memory")
            if used is None:
                raise conn.bad_reply(f"INFO memory on {instance}", "no used_memory")
            if what == "used_memory_bytes":
                samples.append(Sample(now, used, instance))
                continue
            limit = self._limit(instance, client, info)
            samples.append(Sample(now, used / limit * 100.0, instance))
        return samples

    def _limit(self, instance: str, client: redis.Redis, info: dict[str, Any]) -> float:
        """The memory limit of one node in bytes (see the module docstring for the order)."""
        maxmemory = _number(info, "maxmemory") or 0.0
        if maxmemory > 0:
            return maxmemory
        if self.settings.memory_limit is not None:
            return float(self.settings.memory_limit)
        host_ram = _number(info, "total_system_memory") or 0.0
        if is_local(instance):
            host_ram = float(psutil.virtual_memory().total)
            with self.connection.errors(f"INFO server on {instance}"):
                server = client.info("server")
            pid = _number(server, "process_id")
            own = int(pid) if pid is not None and _process_is_redis(int(pid)) else None
            cgroup = cgroup_memory_limit(own)
            if cgroup is not None and cgroup < host_ram:
                return float(cgroup)
        return host_ram if host_ram > 0 else float(psutil.virtual_memory().total)

    def close(self) -> None:
        """Close the connections."""
        self.connection.close()
