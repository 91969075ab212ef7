"""The system checks on settings dictionaries: each finding, and silence for good settings."""

from __future__ import annotations

from typing import Any

from senex_scale.contrib.django.checks import ROUTER_PATH, check_databases, check_redis
from senex_scale.contrib.django.settings import (
    databases_for_pgbouncer,
    redis_settings,
    sentinel_settings,
)


def _ids(messages: list[Any]) -> list[str]:
    return sorted(m.id for m in messages)


def _db(**extra: Any) -> dict[str, Any]:
    return {"ENGINE": "django.db.backends.postgresql", "PORT": 6432, **extra}


def test_the_helpers_output_passes_every_check() -> None:
    """databases_for_pgbouncer + the router: no finding under ASGI."""
    databases = databases_for_pgbouncer(
        "postgresql://u:p@h:6432/db", replicas={"replica": "postgresql://u@r:6432/db"}
    )
    messages = check_databases(
        databases, asgi=True, routers=[ROUTER_PATH], router_setting={"REPLICAS": ["replica"]}
    )
    assert messages == []


def test_pooler_unsafe_settings_are_flagged() -> None:
    """The seed's DATABASES (CONN_MAX_AGE None, no binding option) under ASGI and more."""
    databases = {
        "default": _db(CONN_MAX_AGE=None),
        "other": _db(
            DISABLE_SERVER_SIDE_CURSORS=True,
            OPTIONS={"server_side_binding": True, "pool": True, "prepare_threshold": 5},
        ),
        "direct": {"ENGINE": "django.db.backends.postgresql", "PORT": 5432},
    }
    messages = check_databases(databases, asgi=True, routers=[], router_setting=None)
    assert _ids(messages) == [
        "senex_scale.E001",
        "senex_scale.E002",
        "senex_scale.W003",
        "senex_scale.W004",
        "senex_scale.W005",
    ]
    assert all(m.hint for m in messages)
    assert "DATABASES['default']" in messages[0].msg


def test_persistent_connections_are_fine_under_wsgi() -> None:
    """W004 is about ASGI only."""
    databases = {"default": _db(DISABLE_SERVER_SIDE_CURSORS=True, CONN_MAX_AGE=60)}
    assert check_databases(databases, asgi=False, routers=[], router_setting=None) == []


def test_router_findings() -> None:
    """Unknown aliases, no connect_timeout, ATOMIC_REQUESTS, a pin shorter than the lag."""
    databases = {
        "default": _db(DISABLE_SERVER_SIDE_CURSORS=True, CONN_MAX_AGE=0, ATOMIC_REQUESTS=True),
        "replica": _db(DISABLE_SERVER_SIDE_CURSORS=True, CONN_MAX_AGE=0),
    }
    setting = {"REPLICAS": ["replica", "missing"], "PIN_SECONDS": 3, "MAX_LAG_SECONDS": 5}
    messages = check_databases(databases, asgi=True, routers=[ROUTER_PATH], router_setting=setting)
    assert _ids(messages) == [
        "senex_scale.E008",
        "senex_scale.W006",
        "senex_scale.W007",
        "senex_scale.W009",
    ]


def test_an_invalid_router_setting_is_an_error() -> None:
    """The configuration error's text becomes the check's message."""
    messages = check_databases(
        {"default": _db(DISABLE_SERVER_SIDE_CURSORS=True, CONN_MAX_AGE=0)},
        asgi=True,
        routers=[ROUTER_PATH],
        router_setting={"HEALTH_TTL": -1},
    )
    assert _ids(messages) == ["senex_scale.E008"]
    assert 'SENEX_SCALE_ROUTER["HEALTH_TTL"]' in messages[0].msg


def test_sentinel_settings_pass_and_plain_redis_passes() -> None:
    """The helpers' outputs are clean."""
    for built in (sentinel_settings("a:1,b:2", master="m"), redis_settings("redis://h:6379")):
        assert (
            check_redis(
                built["CACHES"],
                broker_url=built["CELERY_BROKER_URL"],
                broker_options=built["CELERY_BROKER_TRANSPORT_OPTIONS"],
                channel_layers=built["CHANNEL_LAYERS"],
            )
            == []
        )


def test_sentinel_unsafe_settings_are_flagged() -> None:
    """The seed's CACHES (no factory, string LOCATION), a direct layer, no master_name."""
    caches = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://senex-redis/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.SentinelClient"},
        },
        "sessions": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://h:6379/1"},
    }
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [("h", 6379)]},
        }
    }
    messages = check_redis(
        caches, broker_url="sentinel://s1:26379", broker_options={}, channel_layers=layers
    )
    assert _ids(messages) == [
        "senex_scale.E010",
        "senex_scale.E010",
        "senex_scale.E013",
        "senex_scale.W011",
        "senex_scale.W012",
        "senex_scale.W012",
    ]
