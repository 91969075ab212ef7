"""The example inventory as data, and the environment that holds its secrets."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "inventory.toml"
SECRETS = {
    "SENEX_DB_PASSWORD": "db-Secret-5e1f7a",
    "SENEX_MONITOR_PASSWORD": "monitor-Secret-4b7e21",
    "SENEX_REPLICATION_PASSWORD": "repl-Secret-8c2d44",
    "SENEX_REDIS_PASSWORD": "redis-Secret-31b9c0",
    "SENEX_SENTINEL_PASSWORD": "sentinel-Secret-77aa02",
}


@pytest.fixture(scope="session")
def example_path() -> Path:
    """examples/inventory.toml."""
    return EXAMPLE


@pytest.fixture
def example() -> dict[str, Any]:
    """The example inventory, parsed: a fresh copy each test may change."""
    with EXAMPLE.open("rb") as handle:
        return copy.deepcopy(tomllib.load(handle))


@pytest.fixture
def environ() -> dict[str, str]:
    """An environment holding every secret the example references."""
    return dict(SECRETS)
