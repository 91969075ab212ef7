"""Settings of the reference app, all from environment variables (12-factor).

The demo and the end-to-end test point it at servers on loopback with these; production
points it at PgBouncer, the replicas and the Sentinels the same way.

===========================  ===========================================================
variable                     meaning (default)
===========================  ===========================================================
SENEX_DATABASE_URL           the primary through PgBouncer
                             (postgresql://senex@127.0.0.1:6432/senextrader)
SENEX_DATABASE_PASSWORD      its password, when not in the URL
SENEX_REPLICA_URLS           ``alias=URL,alias=URL`` replicas known at start (none)
SENEX_REPLICA_REGISTRY       path of the JSON replica registry the router re-reads (none)
SENEX_MAX_LAG_SECONDS        replicas lagging more are skipped (5)
SENEX_HEALTH_TTL             seconds between replica probes (2)
SENEX_PIN_SECONDS            read-your-writes time bound (10, at least the lag bound + 5)
SENEX_SENTINELS              ``host:port,host:port`` Redis Sentinels; then SENEX_REDIS_MASTER
                             (mymaster), SENEX_REDIS_PASSWORD, SENEX_SENTINEL_PASSWORD
SENEX_REDIS_URL              one Redis without Sentinel (redis://127.0.0.1:6379)
SENEX_SECRET_KEY             required unless SENEX_DEBUG=1
SENEX_DEBUG                  1 for development (0)
SENEX_ALLOWED_HOSTS          comma-separated (127.0.0.1,localhost)
SENEX_CELERY_METRICS_PORT    a worker serves /metrics on this port (off)
SENEX_QUOTE_MS               how long the simulated broker API takes to quote (100)
SENEX_QUOTE_CONNECTIONS      its connections per process: quotes queue for them (1)
===========================  ===========================================================
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from senex_scale.contrib.django.settings import (
    databases_for_pgbouncer,
    redis_settings,
    sentinel_settings,
)


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


DEBUG = env("SENEX_DEBUG", "0") == "1"
SENEX_QUOTE_MS = int(env("SENEX_QUOTE_MS", "100") or 100)
SENEX_QUOTE_CONNECTIONS = int(env("SENEX_QUOTE_CONNECTIONS", "1") or 1)
SECRET_KEY = env("SENEX_SECRET_KEY") or ("insecure-dev-only" if DEBUG else None)
if SECRET_KEY is None:
    raise ImproperlyConfigured("SENEX_SECRET_KEY is not set (or set SENEX_DEBUG=1)")
ALLOWED_HOSTS = (env("SENEX_ALLOWED_HOSTS", "127.0.0.1,localhost") or "").split(",")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "channels",
    "senex_scale.contrib.django",
    "trading",
]
MIDDLEWARE = [
    "senex_scale.contrib.django.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # before anything that may use the database (check senex_scale.W014)
    "senex_scale.contrib.django.router.ReadYourWritesMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "senextrader.urls"
ASGI_APPLICATION = "senextrader.asgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
APPEND_SLASH = False
TEMPLATES: list[dict[str, object]] = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
]

# --- PostgreSQL through PgBouncer, read replicas through the router
_replicas = {}
for _item in filter(None, (env("SENEX_REPLICA_URLS", "") or "").split(",")):
    _alias, _, _url = _item.partition("=")
    _replicas[_alias.strip()] = _url.strip()
DATABASES = databases_for_pgbouncer(
    env("SENEX_DATABASE_URL", "postgresql://senex@127.0.0.1:6432/senextrader") or "",
    password=env("SENEX_DATABASE_PASSWORD"),
    replicas=_replicas,
    asgi=True,
)
DATABASE_ROUTERS = ["senex_scale.contrib.django.router.ReplicaRouter"]
_max_lag = float(env("SENEX_MAX_LAG_SECONDS", "5") or 5)
SENEX_SCALE_ROUTER: dict[str, object] = {
    "REPLICAS": list(_replicas),
    "MAX_LAG_SECONDS": _max_lag,
    "HEALTH_TTL": float(env("SENEX_HEALTH_TTL", "2") or 2),
    # above the lag bound (check senex_scale.W009)
    "PIN_SECONDS": float(env("SENEX_PIN_SECONDS", "") or max(10.0, _max_lag + 5)),
}
if env("SENEX_REPLICA_REGISTRY"):
    SENEX_SCALE_ROUTER["REGISTRY"] = env("SENEX_REPLICA_REGISTRY")

# --- Redis: cache, Celery broker and results, channel layer
if env("SENEX_SENTINELS"):
    globals().update(
        sentinel_settings(
            env("SENEX_SENTINELS") or "",
            master=env("SENEX_REDIS_MASTER", "mymaster") or "mymaster",
            password=env("SENEX_REDIS_PASSWORD"),
            sentinel_password=env("SENEX_SENTINEL_PASSWORD"),
            key_prefix="senextrader",
        )
    )
else:
    globals().update(
        redis_settings(
            env("SENEX_REDIS_URL", "redis://127.0.0.1:6379") or "", key_prefix="senextrader"
        )
    )

# --- Celery: one queue per kind of work, so each gets its own workers
CELERY_TASK_DEFAULT_QUEUE = "general"
CELERY_TASK_ROUTES = {
    "trading.tasks.execute_trade": {"queue": "trading"},
    "trading.tasks.recalculate_account": {"queue": "accounts"},
    "trading.tasks.prune_trades": {"queue": "general"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO" if not DEBUG else "DEBUG"},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
