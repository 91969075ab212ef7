"""Django system checks for settings that break behind PgBouncer or around a Sentinel failover.

They run with ``manage.py check`` (and at every ``runserver``/``migrate``) once
``senex_scale.contrib.django`` is in ``INSTALLED_APPS``. Each finding has an id to silence it
with ``SILENCED_SYSTEM_CHECKS`` and a hint saying what to set instead.

A database counts as behind a transaction-mode pooler when its entry carries
``"POOLER": "pgbouncer-transaction"`` (``databases_for_pgbouncer`` sets it) or its port is
6432, PgBouncer's default.

=====================  =====================================================================
id                     finding
=====================  =====================================================================
senex_scale.E001       pooled database without ``DISABLE_SERVER_SIDE_CURSORS = True``
senex_scale.E002       pooled database with ``OPTIONS["server_side_binding"] = True``
senex_scale.W003       pooled database with ``OPTIONS["pool"]`` (a pool in front of a pool)
senex_scale.W004       ASGI with persistent connections (``CONN_MAX_AGE`` not 0)
senex_scale.W005       pooled database with psycopg prepared statements switched on
senex_scale.W006       replica without ``OPTIONS["connect_timeout"]``
senex_scale.W007       ``ATOMIC_REQUESTS`` with the replica router: every read goes to the primary
senex_scale.E008       ``SENEX_SCALE_ROUTER`` invalid or naming a database that does not exist
senex_scale.W009       ``PIN_SECONDS`` not above ``MAX_LAG_SECONDS``
senex_scale.E010       django-redis ``SentinelClient`` without ``SENTINELS`` or the Sentinel
                       connection factory
senex_scale.W011       ``SentinelClient`` with a string ``LOCATION``: reads from Redis replicas
senex_scale.W012       a Redis address that bypasses Sentinel while other settings use it
senex_scale.E013       ``sentinel://`` Celery broker without ``master_name``
senex_scale.W014       a middleware that may use the database listed before
                       ``ReadYourWritesMiddleware``: its writes are not carried to the next
                       request, its reads do not get the request's pin
=====================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register

from senex_scale.contrib.django.settings import POOLER_MARK, TRANSACTION_POOLER
from senex_scale.errors import InputError

ROUTER_PATH = "senex_scale.contrib.django.router.ReplicaRouter"
SENTINEL_CLIENT = "django_redis.client.SentinelClient"
SENTINEL_FACTORY = "django_redis.pool.SentinelConnectionFactory"


def is_pooled(conf: Mapping[str, Any]) -> bool:
    """Behind a transaction-mode pooler (marked, or on PgBouncer's default port)."""
    if conf.get(POOLER_MARK) == TRANSACTION_POOLER:
        return True
    return str(conf.get("PORT", "")) == "6432"


def _postgres(conf: Mapping[str, Any]) -> bool:
    return "postgresql" in str(conf.get("ENGINE", "")) or "postgis" in str(conf.get("ENGINE", ""))


def check_databases(
    databases: Mapping[str, Mapping[str, Any]],
    *,
    asgi: bool,
    routers: list[Any],
    router_setting: Mapping[str, Any] | None,
) -> list[CheckMessage]:
    """Every pooler and router finding for these settings (pure: settings in, messages out)."""
    out: list[CheckMessage] = []
    for alias, conf in databases.items():
        if not _postgres(conf):
            continue
        options = conf.get("OPTIONS") or {}
        where = f"DATABASES[{alias!r}]"
        if is_pooled(conf):
            if conf.get("DISABLE_SERVER_SIDE_CURSORS") is not True:
                out.append(
                    Error(
                        f"{where} goes through a transaction-mode pooler but uses server-side"
                        " cursors: .iterator() fails with 'cursor does not exist'.",
                        hint="Set DISABLE_SERVER_SIDE_CURSORS = True "
                        "(databases_for_pgbouncer does).",
                        id="senex_scale.E001",
                    )
                )
            if options.get("server_side_binding") is True:
                out.append(
                    Error(
                        f"{where} goes through a transaction-mode pooler with server-side"
                        " binding: prepared statements do not survive the transaction.",
                        hint='Remove OPTIONS["server_side_binding"] (or set it to False).',
                        id="senex_scale.E002",
                    )
                )
            if options.get("pool"):
                out.append(
                    Warning(
                        f"{where} uses psycopg's connection pool in front of PgBouncer: two"
                        " pools hold server slots each other cannot see.",
                        hint='Remove OPTIONS["pool"]; let PgBouncer pool.',
                        id="senex_scale.W003",
                    )
                )
            threshold = options.get("prepare_threshold")
            if threshold is not None:
                out.append(
                    Warning(
                        f"{where} goes through a transaction-mode pooler with psycopg prepared"
                        f" statements after {threshold} runs: 'prepared statement does not"
                        " exist' errors.",
                        hint='Set OPTIONS["prepare_threshold"] = None, unless PgBouncer >= 1.21'
                        " has max_prepared_statements.",
                        id="senex_scale.W005",
                    )
                )
        max_age = conf.get("CONN_MAX_AGE", 0)
        if asgi and (max_age is None or max_age > 0):
            out.append(
                Warning(
                    f"{where} keeps connections open ({max_age!r}) under ASGI: each request"
                    " thread keeps its own, and they are not reused.",
                    hint="Set CONN_MAX_AGE = 0 and pool in PgBouncer.",
                    id="senex_scale.W004",
                )
            )
    if ROUTER_PATH in [r if isinstance(r, str) else _path(r) for r in routers]:
        out += _check_router(databases, router_setting)
    return out


def _path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_router(
    databases: Mapping[str, Mapping[str, Any]], raw: Mapping[str, Any] | None
) -> list[CheckMessage]:
    from senex_scale.contrib.django.router import RouterConfig

    try:
        config = RouterConfig.from_settings(raw)
    except InputError as exc:
        return [Error(str(exc), hint="See docs/django.md, the router.", id="senex_scale.E008")]
    out: list[CheckMessage] = []
    if config.primary not in databases:
        out.append(
            Error(
                f'SENEX_SCALE_ROUTER["PRIMARY"] is {config.primary!r}, not in DATABASES.',
                hint="Name the alias of the primary database.",
                id="senex_scale.E008",
            )
        )
    for replica in config.replicas:
        if isinstance(replica, str) and replica not in databases:
            out.append(
                Error(
                    f'SENEX_SCALE_ROUTER["REPLICAS"] names {replica!r}, not in DATABASES.',
                    hint="Add it to DATABASES, or give an object with host and port.",
                    id="senex_scale.E008",
                )
            )
        elif isinstance(replica, str):
            options = databases[replica].get("OPTIONS") or {}
            if "connect_timeout" not in options:
                out.append(
                    Warning(
                        f"DATABASES[{replica!r}] has no connect_timeout: a probe of a dead"
                        " replica waits for the operating system's TCP timeout.",
                        hint='Set OPTIONS["connect_timeout"] = 3.',
                        id="senex_scale.W006",
                    )
                )
    if databases.get(config.primary, {}).get("ATOMIC_REQUESTS"):
        out.append(
            Warning(
                "ATOMIC_REQUESTS is on: every request runs in a transaction, so the router"
                " sends all its reads to the primary.",
                hint="Turn it off and use atomic() around the writes that need it.",
                id="senex_scale.W007",
            )
        )
    if config.pin_seconds <= config.max_lag_seconds:
        out.append(
            Warning(
                f"PIN_SECONDS ({config.pin_seconds:g}) is not above MAX_LAG_SECONDS"
                f" ({config.max_lag_seconds:g}): when a write's position cannot be read, a"
                " replica within the lag bound may not show it yet.",
                hint="Raise PIN_SECONDS above MAX_LAG_SECONDS.",
                id="senex_scale.W009",
            )
        )
    return out


RYW_MIDDLEWARE = "senex_scale.contrib.django.router.ReadYourWritesMiddleware"
DATABASE_FREE_MIDDLEWARE = frozenset(
    {
        "senex_scale.contrib.django.metrics.MetricsMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.gzip.GZipMiddleware",
        "django.middleware.http.ConditionalGetMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django.middleware.locale.LocaleMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "corsheaders.middleware.CorsMiddleware",
    }
)
"""Middleware known not to touch the database: they may come before the pin middleware."""


def check_middleware(middleware: list[str] | tuple[str, ...]) -> list[CheckMessage]:
    """W014 for each middleware before ``ReadYourWritesMiddleware`` that may use the database.

    The pin middleware gives the request its pin and, when the response passes back through
    it, puts the request's writes in the pin cookie. A middleware outside it (listed before)
    runs its ``process_response`` after that: a session saved, a last-seen time updated, an
    audit row written there reaches the next request with no pin."""
    items = list(middleware)
    if RYW_MIDDLEWARE not in items:
        return []
    out: list[CheckMessage] = []
    for name in items[: items.index(RYW_MIDDLEWARE)]:
        if name not in DATABASE_FREE_MIDDLEWARE:
            out.append(
                Warning(
                    f"{name} comes before ReadYourWritesMiddleware: writes it makes are not"
                    " carried to the next request, and its reads get no pin.",
                    hint="List ReadYourWritesMiddleware before it (right after"
                    " MetricsMiddleware and SecurityMiddleware).",
                    id="senex_scale.W014",
                )
            )
    return out


def check_redis(
    caches: Mapping[str, Mapping[str, Any]],
    *,
    broker_url: str | None,
    broker_options: Mapping[str, Any] | None,
    channel_layers: Mapping[str, Mapping[str, Any]],
) -> list[CheckMessage]:
    """Sentinel findings for these settings (pure)."""
    out: list[CheckMessage] = []
    uses_sentinel = bool(broker_url and broker_url.startswith("sentinel://"))
    for conf in caches.values():
        options = conf.get("OPTIONS") or {}
        if options.get("CLIENT_CLASS") == SENTINEL_CLIENT:
            uses_sentinel = True
    for conf in channel_layers.values():
        for host in (conf.get("CONFIG") or {}).get("hosts") or []:
            if isinstance(host, Mapping) and "sentinels" in host:
                uses_sentinel = True
    for alias, conf in caches.items():
        options = conf.get("OPTIONS") or {}
        where = f"CACHES[{alias!r}]"
        if options.get("CLIENT_CLASS") == SENTINEL_CLIENT:
            if not options.get("SENTINELS"):
                out.append(
                    Error(
                        f"{where} uses SentinelClient without SENTINELS.",
                        hint='Set OPTIONS["SENTINELS"] = [(host, port), ...] '
                        "(sentinel_settings does).",
                        id="senex_scale.E010",
                    )
                )
            if options.get("CONNECTION_FACTORY") != SENTINEL_FACTORY:
                out.append(
                    Error(
                        f"{where} uses SentinelClient without the Sentinel connection"
                        " factory: it fails at the first cache call.",
                        hint=f'Set OPTIONS["CONNECTION_FACTORY"] = "{SENTINEL_FACTORY}".',
                        id="senex_scale.E010",
                    )
                )
            if isinstance(conf.get("LOCATION"), str):
                out.append(
                    Warning(
                        f"{where}: a string LOCATION makes SentinelClient read from Redis"
                        " replicas, which can return a cache version from before an"
                        " invalidation.",
                        hint='Use LOCATION = ["redis://MASTER/0?is_master=1"].',
                        id="senex_scale.W011",
                    )
                )
        elif uses_sentinel and "django_redis" in str(conf.get("BACKEND", "")):
            out.append(
                Warning(
                    f"{where} connects to one Redis address while other settings use"
                    " Sentinel: after a failover the cache talks to the old master.",
                    hint="Build CACHES with sentinel_settings().",
                    id="senex_scale.W012",
                )
            )
    if uses_sentinel:
        for alias, conf in channel_layers.items():
            hosts = (conf.get("CONFIG") or {}).get("hosts") or []
            if "channels_redis" in str(conf.get("BACKEND", "")) and not all(
                isinstance(h, Mapping) and "sentinels" in h for h in hosts
            ):
                out.append(
                    Warning(
                        f"CHANNEL_LAYERS[{alias!r}] connects to one Redis address while other"
                        " settings use Sentinel: after a failover consumers stop getting"
                        " group messages.",
                        hint="Build CHANNEL_LAYERS with sentinel_settings().",
                        id="senex_scale.W012",
                    )
                )
        if broker_url and not broker_url.startswith("sentinel://"):
            out.append(
                Warning(
                    "CELERY_BROKER_URL connects to one Redis address while other settings use"
                    " Sentinel: after a failover tasks go to the old master.",
                    hint="Build the broker settings with sentinel_settings().",
                    id="senex_scale.W012",
                )
            )
    if (
        broker_url
        and broker_url.startswith("sentinel://")
        and not (broker_options or {}).get("master_name")
    ):
        out.append(
            Error(
                "CELERY_BROKER_URL is sentinel:// but CELERY_BROKER_TRANSPORT_OPTIONS has"
                " no master_name: workers cannot find the master.",
                hint='Set CELERY_BROKER_TRANSPORT_OPTIONS["master_name"].',
                id="senex_scale.E013",
            )
        )
    return out


# Not Tags.database: Django runs those only with --database; these read settings only.
@register("senex_scale")
def pooler_checks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The registered check: DATABASES and the router (nothing here connects)."""
    from django.conf import settings

    return check_databases(
        settings.DATABASES,
        asgi=bool(getattr(settings, "ASGI_APPLICATION", None)),
        routers=list(getattr(settings, "DATABASE_ROUTERS", [])),
        router_setting=getattr(settings, "SENEX_SCALE_ROUTER", None),
    )


@register("senex_scale")
def middleware_checks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The registered check: the place of ``ReadYourWritesMiddleware`` in ``MIDDLEWARE``."""
    from django.conf import settings

    return check_middleware(list(getattr(settings, "MIDDLEWARE", None) or []))


@register("senex_scale", Tags.caches)
def sentinel_checks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The registered check: CACHES, the Celery broker and CHANNEL_LAYERS."""
    from django.conf import settings

    return check_redis(
        getattr(settings, "CACHES", {}),
        broker_url=getattr(settings, "CELERY_BROKER_URL", None),
        broker_options=getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None),
        channel_layers=getattr(settings, "CHANNEL_LAYERS", {}),
    )
