"""``/ready/`` and ``/metrics`` of the reference app: private, cached, and generic outside.

Through Django's real test client against the session's PostgreSQL, PgBouncer and Redis. The
caller's address is the test client's ``REMOTE_ADDR``; a request that came through the
balancer carries ``X-Forwarded-For`` (the rendered nginx site and HAProxy add it), so it is
outside even though nginx connects from 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from senex_scale.testing import free_port

from .conftest import Stack

pytestmark = pytest.mark.integration

TOKEN = "probe-Secret-7f3a91"


@pytest.fixture
def client(django_setup: Stack) -> Any:
    from django.test import Client

    return Client()


@pytest.fixture
def endpoints(django_setup: Stack) -> Iterator[Any]:
    """Set SENEX_SCALE_ENDPOINTS for one test: ``endpoints({...})``."""
    from django.test import override_settings

    active: list[Any] = []

    def configure(value: dict[str, Any]) -> None:
        override = override_settings(SENEX_SCALE_ENDPOINTS=value)
        override.enable()
        active.append(override)

    yield configure
    for override in reversed(active):
        override.disable()


@pytest.fixture
def fresh_readiness(django_setup: Stack) -> Iterator[None]:
    """No readiness result cached from another test."""
    from senex_scale.contrib.django import health

    health.forget_readiness()
    yield
    health.forget_readiness()


def broker_connections(stack: Stack) -> int:
    """Connections Redis has accepted so far (the broker check opens one per probe)."""
    return int(stack.redis.client().info("stats")["total_connections_received"])


@pytest.mark.parametrize("path", ["/ready/", "/metrics"])
def test_a_client_through_the_balancer_is_refused(client: Any, path: str) -> None:
    """X-Forwarded-For: it came through nginx/HAProxy, from anyone: 403, nothing inside."""
    response = client.get(path, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert response.status_code == 403
    assert b"replica" not in response.content
    assert b"process_cpu" not in response.content


@pytest.mark.parametrize("path", ["/ready/", "/metrics"])
def test_a_public_address_is_refused(client: Any, path: str) -> None:
    """A client connecting straight to Daphne from a public address: 403."""
    assert client.get(path, REMOTE_ADDR="203.0.113.7").status_code == 403


@pytest.mark.parametrize("path", ["/ready/", "/metrics"])
def test_loopback_and_private_addresses_are_served(
    client: Any, path: str, fresh_readiness: None
) -> None:
    """Prometheus and the controller on the host or the LAN, straight to the instance."""
    for address in ("127.0.0.1", "10.1.2.3", "::1"):
        assert client.get(path, REMOTE_ADDR=address).status_code == 200, address


def test_a_token_opens_both_from_anywhere(
    client: Any, endpoints: Any, monkeypatch: pytest.MonkeyPatch, fresh_readiness: None
) -> None:
    """TOKEN_ENV: the bearer token is accepted from any address, through the balancer too;
    a wrong one is not."""
    monkeypatch.setenv("SENEX_PROBE_TOKEN", TOKEN)
    endpoints({"TOKEN_ENV": "SENEX_PROBE_TOKEN"})
    outside = {"REMOTE_ADDR": "203.0.113.7", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    for path in ("/ready/", "/metrics"):
        ok = client.get(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **outside)
        assert ok.status_code == 200, path
        bad = client.get(path, HTTP_AUTHORIZATION="Bearer nope", **outside)
        assert bad.status_code == 403, path


def test_an_allow_list_replaces_the_default(client: Any, endpoints: Any) -> None:
    """ALLOW: only these networks (here loopback) are served without a token."""
    endpoints({"ALLOW": ["127.0.0.1/32"]})
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403


def test_a_request_flood_is_not_a_probe_flood(
    stack: Stack, client: Any, fresh_readiness: None
) -> None:
    """30 readiness requests inside READY_TTL probe the broker (and the replicas) once."""
    client.get("/ready/")  # the first result
    before = broker_connections(stack)
    answers = [client.get("/ready/") for _ in range(30)]
    assert {a.status_code for a in answers} == {200}
    assert broker_connections(stack) - before <= 1


def test_reasons_outside_are_generic(
    client: Any, router_config: Any, fresh_readiness: None
) -> None:
    """A dead replica shows as "down", not as the driver's error with its host and port;
    a failed check by its kind only."""
    dead = free_port()
    router_config(
        REPLICAS=[{"alias": "replica_dead", "host": "127.0.0.1", "port": dead}], HEALTH_TTL=0.1
    )
    response = client.get("/ready/")
    body = response.json()
    text = json.dumps(body)
    assert body["replicas"]["replica_dead"]["healthy"] is False
    assert body["replicas"]["replica_dead"]["reason"] == "down"
    assert str(dead) not in text
    assert "127.0.0.1" not in text
    assert "connection" not in text.lower()
    assert set(body["checks"].values()) <= {"OK", "Warning", "Unavailable", "Unexpected Result"}


def test_detail_shows_the_raw_reasons_to_allowed_callers(
    client: Any, router_config: Any, endpoints: Any, fresh_readiness: None
) -> None:
    """DETAIL True: the full reason, for an operator who wants it on a private network."""
    dead = free_port()
    endpoints({"DETAIL": True})
    router_config(REPLICAS=[{"alias": "replica_dead", "host": "127.0.0.1", "port": dead}])
    reason = client.get("/ready/").json()["replicas"]["replica_dead"]["reason"]
    assert reason.startswith("down: ")
    assert str(dead) in reason


def test_settings_problems_name_the_key(django_setup: Stack) -> None:
    """A bad setting is an error naming SENEX_SCALE_ENDPOINTS["KEY"] (500, never served open)."""
    from senex_scale.contrib.django.access import EndpointConfig

    with pytest.raises(Exception, match=r'SENEX_SCALE_ENDPOINTS\["ALLOW"\]\[0\]'):
        EndpointConfig.from_settings({"ALLOW": ["not-a-network"]})
    with pytest.raises(Exception, match=r'SENEX_SCALE_ENDPOINTS\["READY_TTL"\]'):
        EndpointConfig.from_settings({"READY_TTL": -1})
    with pytest.raises(Exception, match=r'SENEX_SCALE_ENDPOINTS\["TOKN_ENV"\]: unknown key'):
        EndpointConfig.from_settings({"TOKN_ENV": "X"})
