"""The replica registry cannot redirect the primary, another database, or its password.

Against the session's real PostgreSQL/PgBouncer and the reference app's settings: a registry
file is written the way an attacker who can write it would, and the router is asked where
reads go and with which login.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import Stack

pytestmark = pytest.mark.integration


def write(path: Path, *replicas: dict[str, Any]) -> None:
    path.write_text(json.dumps({"version": 1, "replicas": list(replicas)}))


def test_an_entry_cannot_take_over_an_alias_databases_has(
    stack: Stack, router_config: Any, tmp_path: Path
) -> None:
    """An entry named like the settings' replica ("replica") is ignored: that alias keeps
    its host, port and password, and gets no reads through the entry."""
    from django.db import connections

    before = dict(connections.settings["replica"])
    registry = tmp_path / "replicas.json"
    router = router_config(REPLICAS=[], REGISTRY=str(registry), INHERIT_PASSWORD=True)
    write(registry, {"alias": "replica", "host": "192.0.2.1", "port": 6543})
    assert [s.alias for s in router.monitor.states()] == []
    after = connections.settings["replica"]
    assert (after["HOST"], after["PORT"]) == (before["HOST"], before["PORT"])
    assert after["PASSWORD"] == before["PASSWORD"]


def test_an_entry_named_like_the_primary_is_refused(
    stack: Stack, router_config: Any, tmp_path: Path
) -> None:
    """An entry "default" (the primary) makes the file invalid: no reads move, the primary's
    connection settings are untouched."""
    from django.db import connections
    from trading.models import Position

    before = dict(connections.settings["default"])
    registry = tmp_path / "replicas.json"
    router = router_config(REPLICAS=[], REGISTRY=str(registry))
    write(registry, {"alias": "default", "host": "192.0.2.1", "port": 6543})
    assert Position.objects.all().db == "default"
    assert router.monitor.states() == []
    after = connections.settings["default"]
    assert (after["HOST"], after["PORT"], after["PASSWORD"]) == (
        before["HOST"], before["PORT"], before["PASSWORD"],
    )  # fmt: skip


def test_a_registered_replica_gets_no_password_unless_told(
    stack: Stack, router_config: Any, tmp_path: Path
) -> None:
    """Without INHERIT_PASSWORD an entry without password_env logs in with no password (so it
    fails against this SCRAM server and reads stay on the primary); with it, it works."""
    from django.db import connections
    from trading.models import Position

    registry = tmp_path / "replicas.json"
    entry = {
        "alias": "replica_nopw",
        "host": "127.0.0.1",
        "port": stack.bouncer.port,
        "dbname": "senextrader_replica",
    }
    write(registry, entry)
    router = router_config(REPLICAS=[], REGISTRY=str(registry))
    (state,) = router.monitor.states()
    assert connections.settings["replica_nopw"]["PASSWORD"] == ""
    assert not state.healthy
    assert Position.objects.all().db == "default"
    router = router_config(REPLICAS=[], REGISTRY=str(registry), INHERIT_PASSWORD=True)
    (state,) = router.monitor.states()
    assert connections.settings["replica_nopw"]["PASSWORD"]
    assert state.healthy, state.reason
