"""Settings builders: DATABASES for PgBouncer transaction pooling, Redis from one Sentinel list.

The seed set ``CONN_MAX_AGE = None`` behind PgBouncer and wrote the Sentinel list three times
(cache, broker, channel layer), each in its own format. Behind a transaction-mode pooler a
server connection belongs to a client only for one transaction, so anything that outlives a
transaction on the server breaks: named server-side cursors (``DISABLE_SERVER_SIDE_CURSORS``),
server-side parameter binding and psycopg's automatic prepared statements (``prepare_threshold
= None``). Under ASGI every request may run in a new thread, so persistent connections pile up
instead of being reused: ``CONN_MAX_AGE = 0`` there (PgBouncer makes connecting cheap).

Usage in a settings module::

    from senex_scale.contrib.django.settings import databases_for_pgbouncer, sentinel_settings

    DATABASES = databases_for_pgbouncer(
        os.environ["DATABASE_URL"], replicas={"replica_1": os.environ["REPLICA_1_URL"]}
    )
    globals().update(sentinel_settings("10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379",
                                       master="senex-redis", password=os.environ["REDIS_PASSWORD"]))
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from senex_scale.errors import InputError

POOLER_MARK = "POOLER"
"""Key our DATABASES entries carry (Django ignores unknown keys) so the system checks know the
database sits behind a transaction-mode pooler."""
TRANSACTION_POOLER = "pgbouncer-transaction"


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def parse_database_url(url: str, *, field: str = "url") -> dict[str, Any]:
    """``postgresql://user:password@host:port/dbname?sslmode=require`` -> DATABASES keys.

    Query parameters become OPTIONS (libpq parameters). Errors name ``field`` and never show
    the password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"{field}: {_redact(url)!r}: {exc}") from None
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise InputError(
            f"{field}: {_redact(url)!r} is not a postgresql:// URL "
            "(postgresql://user:password@host:port/dbname)"
        )
    name = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not name:
        raise InputError(f"{field}: {_redact(url)!r} needs a host and a database name")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        options[key] = value
    return {
        "HOST": parts.hostname,
        "PORT": port or 5432,
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "OPTIONS": options,
    }


def databases_for_pgbouncer(
    url: str,
    *,
    replicas: Mapping[str, str] | None = None,
    asgi: bool = True,
    conn_max_age: int = 60,
    connect_timeout: int = 3,
    password: str | None = None,
    alias: str = "default",
    options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """DATABASES for a primary (and replicas) reached through PgBouncer in transaction mode.

    ``replicas``: alias -> URL (a missing password is the primary's). ``asgi``: True under
    Daphne/uvicorn (``CONN_MAX_AGE = 0``); under WSGI ``conn_max_age`` seconds, with
    ``CONN_HEALTH_CHECKS``. ``connect_timeout`` (seconds) bounds a connect to a dead host, so
    a replica probe cannot hang a request. ``options``: more OPTIONS (e.g. ``sslmode``).
    """
    if connect_timeout <= 0:
        raise InputError("connect_timeout: must be a number of seconds above 0")
    max_age = 0 if asgi else conn_max_age

    def build(raw_url: str, field: str, fallback_password: str | None) -> dict[str, Any]:
        conf = parse_database_url(raw_url, field=field)
        if not conf["PASSWORD"] and fallback_password:
            conf["PASSWORD"] = fallback_password
        conf["OPTIONS"] = {
            **conf["OPTIONS"],
            **(options or {}),
            "connect_timeout": connect_timeout,
            # Parameters bound client-side: a server-side prepared statement would not exist
            # on the next transaction's server connection.
            "server_side_binding": False,
            # psycopg prepares a query after it ran 5 times; off for the same reason.
            "prepare_threshold": None,
        }
        conf.update(
            ENGINE="django.db.backends.postgresql",
            CONN_MAX_AGE=max_age,
            CONN_HEALTH_CHECKS=max_age > 0,
            DISABLE_SERVER_SIDE_CURSORS=True,
            ATOMIC_REQUESTS=False,
        )
        conf[POOLER_MARK] = TRANSACTION_POOLER
        return conf

    primary = build(url, "url", password)
    databases = {alias: primary}
    for replica_alias, replica_url in (replicas or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", replica_alias) or replica_alias == alias:
            raise InputError(f"replicas: {replica_alias!r} is not a usable database alias")
        conf = build(replica_url, f"replicas.{replica_alias}", primary["PASSWORD"] or None)
        conf["TEST"] = {"MIRROR": alias}
        databases[replica_alias] = conf
    return databases


# --------------------------------------------------------------------------- Redis


def parse_sentinels(sentinels: str | Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """``"h1:26379,h2:26379"`` or ``[("h1", 26379)]`` -> ``[("h1", 26379), ...]``."""
    if isinstance(sentinels, str):
        items: list[tuple[str, int]] = []
        for index, part in enumerate(p.strip() for p in sentinels.split(",")):
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InputError(f"sentinels[{index}]: {part!r} is not host:port")
            items.append((host.strip("[]"), int(port)))
        sentinels = items
    out = [(str(host), int(port)) for host, port in sentinels]
    if not out:
        raise InputError("sentinels: at least one host:port is needed (three for a quorum)")
    return out


def sentinel_settings(
    sentinels: str | Sequence[tuple[str, int]],
    *,
    master: str,
    password: str | None = None,
    sentinel_password: str | None = None,
    cache_db: int = 0,
    broker_db: int = 1,
    channels_db: int = 2,
    result_db: int = 3,
    socket_timeout: float = 5.0,
    max_connections: int = 50,
    key_prefix: str = "",
) -> dict[str, Any]:
    """CACHES, the Celery broker and result settings and CHANNEL_LAYERS, all through Sentinel.

    Returns settings names -> values: ``globals().update(sentinel_settings(...))``. The cache
    reads and writes the master only (django-redis would otherwise read from Redis replicas,
    which can return a version key from before an invalidation).
    """
    hosts = parse_sentinels(sentinels)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", master):
        raise InputError(f"master: {master!r} is not a Sentinel master name")
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": socket_timeout}
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    cache_options: dict[str, Any] = {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": hosts,
        "SENTINEL_KWARGS": sentinel_kwargs,
        "SOCKET_CONNECT_TIMEOUT": socket_timeout,
        "SOCKET_TIMEOUT": socket_timeout,
        "CONNECTION_POOL_KWARGS": {"max_connections": max_connections},
    }
    if password:
        cache_options["PASSWORD"] = password
    auth = f":{quote(password, safe='')}@" if password else ""
    transport: dict[str, Any] = {
        "master_name": master,
        "sentinel_kwargs": sentinel_kwargs,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
    }
    layer_host: dict[str, Any] = {
        "sentinels": hosts,
        "master_name": master,
        "sentinel_kwargs": sentinel_kwargs,
        "db": channels_db,
        "socket_timeout": channel_read_timeout(socket_timeout),
    }
    if password:
        layer_host["password"] = password
    return {
        "CACHES": {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                # A list, not a string: SentinelClient would add a replica server for reads.
                "LOCATION": [f"redis://{master}/{cache_db}?is_master=1"],
                "KEY_PREFIX": key_prefix,
                "OPTIONS": cache_options,
            }
        },
        "CELERY_BROKER_URL": ";".join(f"sentinel://{auth}{h}:{p}/{broker_db}" for h, p in hosts),
        "CELERY_BROKER_TRANSPORT_OPTIONS": transport,
        "CELERY_RESULT_BACKEND": ";".join(
            f"sentinel://{auth}{h}:{p}/{result_db}" for h, p in hosts
        ),
        "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS": dict(transport),
        "CHANNEL_LAYERS": {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [layer_host], "prefix": f"{key_prefix}asgi"},
            }
        },
    }


CHANNELS_BLOCKING_READ = 5.0
"""channels_redis waits this long in ``BZPOPMIN`` for a consumer's next message (its
``brpop_timeout``)."""


def channel_read_timeout(socket_timeout: float) -> float:
    """The channel layer's read timeout: longer than its blocking read.

    redis-py 8 reads with a 5 s ``socket_timeout`` by default, as long as channels_redis's
    ``BZPOPMIN``: an idle consumer's read then times out, and Channels closes its WebSocket
    with code 1011 every few seconds (found by the end-to-end test)."""
    return max(socket_timeout, CHANNELS_BLOCKING_READ + 10.0)


def redis_settings(
    url: str,
    *,
    cache_db: int = 0,
    broker_db: int = 1,
    channels_db: int = 2,
    result_db: int = 3,
    socket_timeout: float = 5.0,
    key_prefix: str = "",
) -> dict[str, Any]:
    """The same settings as ``sentinel_settings`` for one Redis without Sentinel
    (development, tests); the database number in ``url`` is replaced per use."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise InputError(f"url: {_redact(url)!r} is not a redis:// URL (redis://host:port)")
    base = f"{parts.scheme}://{parts.netloc}"

    def at(db: int) -> str:
        return f"{base}/{db}"

    return {
        "CACHES": {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": at(cache_db),
                "KEY_PREFIX": key_prefix,
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "SOCKET_CONNECT_TIMEOUT": socket_timeout,
                    "SOCKET_TIMEOUT": socket_timeout,
                },
            }
        },
        "CELERY_BROKER_URL": at(broker_db),
        "CELERY_BROKER_TRANSPORT_OPTIONS": {"socket_timeout": socket_timeout},
        "CELERY_RESULT_BACKEND": at(result_db),
        "CHANNEL_LAYERS": {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [
                        {
                            "address": at(channels_db),
                            "socket_timeout": channel_read_timeout(socket_timeout),
                        }
                    ],
                    "prefix": f"{key_prefix}asgi",
                },
            }
        },
    }
