"""Failures of both Redis sources: outages, timeouts, passwords, and settings errors."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Metric, SourceSpec
from senex_scale.sources.base import MetricRequest, MetricSource, build_source
from senex_scale.sources.celery_redis import CeleryRedisSource
from senex_scale.sources.redis_memory import RedisMemorySource

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import RedisFactory, RedisProcess

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
PASSWORD = "auth-Secret-9c41e7"  # conftest.PASSWORD, the requirepass of redis_auth
WRONG = "wrong-Secret-5be0d3"
TYPES = {"celery-redis": ("trading", CeleryRedisSource), "redis": ("", RedisMemorySource)}


def request(source_type: str) -> MetricRequest:
    query = TYPES[source_type][0]
    return MetricRequest(rule="r", metric=Metric(source="s", query=query))


def make(source_type: str, options: dict[str, Any]) -> MetricSource:
    return build_source("s", SourceSpec(type=source_type, **options))


@pytest.mark.parametrize("source_type", sorted(TYPES))
def test_killed_server_is_temporary_error(redis_factory: RedisFactory, source_type: str) -> None:
    """A killed server: query raises a temporary SourceError at once, never returns zero."""
    server = redis_factory.start()
    source = make(source_type, {"url": server.url(), "socket_timeout": 1})
    try:
        assert source.query(request(source_type), NOW)  # connected and answering
        server.kill()
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            source.query(request(source_type), NOW)
        assert time.monotonic() - started < 1.0
    finally:
        source.close()
    assert caught.value.temporary is True
    assert server.address in str(caught.value)
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize("source_type", sorted(TYPES))
def test_frozen_server_times_out(redis_factory: RedisFactory, source_type: str) -> None:
    """A server that accepts but never replies (SIGSTOP): temporary SourceError within the
    socket timeout (0.5 s), not redis-py's default retries with backoff."""
    server = redis_factory.start()
    source = make(source_type, {"url": server.url(), "socket_timeout": "500ms"})
    server.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            source.query(request(source_type), NOW)
        elapsed = time.monotonic() - started
    finally:
        source.close()
        server.kill()
    assert caught.value.temporary is True
    assert 0.4 < elapsed < 1.5, elapsed


@pytest.mark.parametrize("source_type", sorted(TYPES))
def test_wrong_password_is_permanent_and_hidden(redis_auth: RedisProcess, source_type: str) -> None:
    """A wrong password: permanent SourceError; the password is in neither message nor repr."""
    url = f"redis://:{WRONG}@{redis_auth.address}/0"
    source = make(source_type, {"url": url})
    try:
        with pytest.raises(SourceError) as caught:
            source.query(request(source_type), NOW)
        text = f"{caught.value} {caught.value!r} {source!r}"
    finally:
        source.close()
    assert caught.value.temporary is False
    assert WRONG not in text
    assert f"redis://:***@{redis_auth.address}/0" in str(caught.value)


@pytest.mark.parametrize("source_type", sorted(TYPES))
def test_no_password_is_permanent(redis_auth: RedisProcess, source_type: str) -> None:
    """No password for a server that requires one (NOAUTH): a permanent SourceError."""
    source = make(source_type, {"url": redis_auth.url_without_password})
    try:
        with pytest.raises(SourceError) as caught:
            source.query(request(source_type), NOW)
    finally:
        source.close()
    assert caught.value.temporary is False


@pytest.mark.parametrize("source_type", sorted(TYPES))
def test_password_from_environment(
    redis_auth: RedisProcess, source_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """password_env reads the password from the environment; it never shows in reprs."""
    monkeypatch.setenv("SENEX_TEST_REDIS_PASSWORD", PASSWORD)
    options = {"url": redis_auth.url_without_password, "password_env": "SENEX_TEST_REDIS_PASSWORD"}
    source = make(source_type, options)
    try:
        assert source.query(request(source_type), NOW)
        assert PASSWORD not in repr(source)
    finally:
        source.close()
    direct = make(source_type, {"url": redis_auth.url_without_password, "password": PASSWORD})
    try:
        assert direct.query(request(source_type), NOW)
        assert PASSWORD not in repr(direct)
        assert PASSWORD not in repr(getattr(direct, "settings", None))
    finally:
        direct.close()


def problems(source_type: str, **options: Any) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        build_source("broker", SourceSpec(type=source_type, **options))
    return caught.value.problems


def test_unknown_setting_names_the_source_and_suggests() -> None:
    """A misspelt setting: PolicyError naming sources.broker and suggesting the right key."""
    [problem] = problems("celery-redis", urll="redis://127.0.0.1:6379/0")
    # base.parse_settings joins the source and the line with "."; the policy loader's own
    # convention is "sources.broker: unknown key ...". Both forms are accepted here.
    assert problem.startswith("sources.broker")
    assert problem.endswith('unknown key "urll" (did you mean "url"?)')


@pytest.mark.parametrize(
    ("source_type", "options", "expected"),
    [
        ("celery-redis", {}, "sources.broker.url: required"),
        (
            "celery-redis",
            {"url": "http://127.0.0.1:6379"},
            'sources.broker.url: "http://127.0.0.1:6379" is not a Redis URL: it must start with '
            "redis://, rediss://, unix:// or sentinel://",
        ),
        (
            "celery-redis",
            {"url": "sentinel://127.0.0.1:26379"},
            "sources.broker.master_name: required with a sentinel:// url",
        ),
        (
            "celery-redis",
            {"url": "redis://127.0.0.1", "priority_steps": [3, 0]},
            "sources.broker.priority_steps: steps must be in ascending order without repeats, "
            "as kombu expects",
        ),
        (
            "celery-redis",
            {"url": "redis://127.0.0.1", "socket_timeout": "2x"},
            'sources.broker.socket_timeout: "2x" is not a duration (e.g. "5m")',
        ),
        (
            "redis",
            {"url": "redis://127.0.0.1", "password_env": "SENEX_TEST_NOT_SET_ANYWHERE"},
            'sources.broker.password_env: environment variable "SENEX_TEST_NOT_SET_ANYWHERE" '
            "is not set",
        ),
        (
            "redis",
            {"url": "redis://127.0.0.1", "memory_limit": "2 lots"},
            'sources.broker.memory_limit: "2 lots" is not a size (e.g. 2147483648, "512MiB" '
            'or "2GiB")',
        ),
        (
            "redis",
            {"url": "redis://127.0.0.1", "urls": ["redis://127.0.0.2"]},
            "sources.broker.urls: give url or urls, not both",
        ),
    ],
)
def test_settings_errors_name_the_field(
    source_type: str, options: dict[str, Any], expected: str
) -> None:
    """Invalid settings: a PolicyError whose problem names sources.broker.FIELD."""
    assert problems(source_type, **options) == [expected]


def test_settings_errors_never_show_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings errors redact the password of the URL they quote, and refuse two passwords."""
    bad_scheme = problems("celery-redis", url=f"http://:{WRONG}@127.0.0.1:6379")
    assert bad_scheme[0].startswith('sources.broker.url: "http://:***@127.0.0.1:6379" is not')
    both = problems("redis", url=f"redis://:{WRONG}@127.0.0.1", password="other-secret")
    assert both == ["sources.broker.password: the URL has a password already; give only one"]
    monkeypatch.setenv("SENEX_TEST_REDIS_PASSWORD", WRONG)
    twice = problems(
        "redis", url="redis://h", password="x", password_env="SENEX_TEST_REDIS_PASSWORD"
    )
    assert twice == ["sources.broker.password_env: give password or password_env, not both"]
    numeric = problems("redis", url="redis://h", password=12345678)
    assert numeric == ["sources.broker.password: must be a string"]
    for text in (*bad_scheme, *both, *numeric):
        assert WRONG not in text
        assert "12345678" not in text
