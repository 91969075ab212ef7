"""DATABASES for PgBouncer and the Redis settings from one Sentinel list."""

from __future__ import annotations

import pytest

from senex_scale.contrib.django.settings import (
    databases_for_pgbouncer,
    parse_database_url,
    parse_sentinels,
    redis_settings,
    sentinel_settings,
)
from senex_scale.errors import InputError


def test_pgbouncer_databases_are_transaction_pooling_safe() -> None:
    """No server-side cursors, binding or prepared statements; CONN_MAX_AGE 0 under ASGI."""
    dbs = databases_for_pgbouncer(
        "postgresql://app:s%40cret@pgb:6432/trader?sslmode=require",
        replicas={"replica_1": "postgresql://app@pgb-r:6432/trader"},
    )
    primary, replica = dbs["default"], dbs["replica_1"]
    assert primary["HOST"] == "pgb"
    assert primary["PORT"] == 6432
    assert primary["NAME"] == "trader"
    assert primary["PASSWORD"] == "s@cret"
    assert primary["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert primary["CONN_MAX_AGE"] == 0
    assert primary["CONN_HEALTH_CHECKS"] is False
    assert primary["OPTIONS"] == {
        "sslmode": "require",
        "connect_timeout": 3,
        "server_side_binding": False,
        "prepare_threshold": None,
    }
    assert replica["PASSWORD"] == "s@cret"  # the primary's, when the URL has none
    assert replica["TEST"] == {"MIRROR": "default"}


def test_wsgi_keeps_connections_with_health_checks() -> None:
    """Under WSGI a thread reuses its connection: CONN_MAX_AGE with CONN_HEALTH_CHECKS."""
    conf = databases_for_pgbouncer("postgresql://a@h/d", asgi=False, conn_max_age=30)["default"]
    assert conf["CONN_MAX_AGE"] == 30
    assert conf["CONN_HEALTH_CHECKS"] is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:topsecret@h/d", "not a postgresql:// URL"),
        ("postgresql://u:topsecret@h", "needs a host and a database name"),
        ("postgresql://u:topsecret@h:99999/d", "Port out of range"),
    ],
)
def test_bad_urls_name_the_field_and_hide_the_password(url: str, message: str) -> None:
    """The error says `url:` and what is wrong, never the password."""
    with pytest.raises(InputError) as err:
        parse_database_url(url)
    assert str(err.value).startswith("url: ")
    assert message in str(err.value)
    assert "topsecret" not in str(err.value)


def test_a_bad_replica_alias_is_rejected() -> None:
    """Replica aliases must be identifiers and differ from the primary's."""
    with pytest.raises(InputError, match="replicas: 'default' is not a usable database alias"):
        databases_for_pgbouncer("postgresql://a@h/d", replicas={"default": "postgresql://a@r/d"})


def test_sentinels_parse_from_text() -> None:
    """'h1:26379, h2:26380' -> pairs; bad entries named by index."""
    assert parse_sentinels("h1:26379, h2:26380") == [("h1", 26379), ("h2", 26380)]
    with pytest.raises(InputError, match=r"sentinels\[1\]: 'h2' is not host:port"):
        parse_sentinels("h1:1,h2")


def test_one_sentinel_list_feeds_cache_broker_and_channels() -> None:
    """The three consumers get the same Sentinels and master in their own formats."""
    built = sentinel_settings(
        [("s1", 26379), ("s2", 26379)], master="senex-redis", password="p w", sentinel_password="sp"
    )
    cache = built["CACHES"]["default"]
    assert cache["LOCATION"] == ["redis://senex-redis/0?is_master=1"]
    assert cache["OPTIONS"]["SENTINELS"] == [("s1", 26379), ("s2", 26379)]
    assert cache["OPTIONS"]["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    assert cache["OPTIONS"]["SENTINEL_KWARGS"]["password"] == "sp"
    assert built["CELERY_BROKER_URL"] == (
        "sentinel://:p%20w@s1:26379/1;sentinel://:p%20w@s2:26379/1"
    )
    assert built["CELERY_BROKER_TRANSPORT_OPTIONS"]["master_name"] == "senex-redis"
    (host,) = built["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
    assert host["sentinels"] == [("s1", 26379), ("s2", 26379)]
    assert (host["master_name"], host["db"], host["password"]) == ("senex-redis", 2, "p w")


def test_channel_layer_reads_outlast_its_blocking_read() -> None:
    """channels_redis blocks 5 s in BZPOPMIN; a 5 s read timeout (redis-py 8's default)
    would close idle WebSockets with 1011 every few seconds."""
    for built in (
        redis_settings("redis://127.0.0.1:6390"),
        sentinel_settings("s1:26379", master="m"),
    ):
        (host,) = built["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
        assert host["socket_timeout"] > 5.0


def test_plain_redis_settings_use_one_database_each() -> None:
    """Without Sentinel: cache 0, broker 1, channels 2, results 3 on the same server."""
    built = redis_settings("redis://:pw@127.0.0.1:6390/9")
    assert built["CACHES"]["default"]["LOCATION"] == "redis://:pw@127.0.0.1:6390/0"
    assert built["CELERY_BROKER_URL"] == "redis://:pw@127.0.0.1:6390/1"
    (host,) = built["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
    assert host["address"] == "redis://:pw@127.0.0.1:6390/2"
    with pytest.raises(InputError, match="url: 'http://h' is not a redis:// URL"):
        redis_settings("http://h")
