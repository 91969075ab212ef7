"""The system checks as Django runs them (registered by the app config)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_setup")]


def _ids() -> list[str]:
    from django.core.checks import run_checks

    return sorted(m.id for m in run_checks() if m.id and m.id.startswith("senex_scale."))


def test_the_reference_app_passes_its_checks() -> None:
    """The demo's settings, built with the helpers, give no finding."""
    assert _ids() == []


def test_the_seeds_cache_settings_are_flagged() -> None:
    """The seed's CACHES (SentinelClient, string LOCATION, no factory) next to a plain broker."""
    from django.test import override_settings

    seed_caches = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://senex-redis/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "SENTINELS": [("sentinel-1", 26379)],
            },
        }
    }
    with override_settings(CACHES=seed_caches):
        assert _ids() == [
            "senex_scale.E010",
            "senex_scale.W011",
            "senex_scale.W012",
            "senex_scale.W012",
        ]
