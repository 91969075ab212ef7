"""A directory per test that the lab's server users can enter, removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from senex_scale.lab import Server, temporary_lab_dir


@pytest.fixture
def root() -> Iterator[Path]:
    """A ``lab_dir()``: PostgreSQL runs as ``postgres`` under root and cannot enter tmp_path."""
    with temporary_lab_dir("senex-lab-test-") as path:
        yield path


def tree(server: Server) -> list[psutil.Process]:
    """The server's process and all its descendants, while it runs."""
    assert server.pid is not None
    process = psutil.Process(server.pid)
    return [process, *process.children(recursive=True)]


@pytest.fixture(name="tree")
def tree_fixture() -> object:
    """``tree(server)`` for the tests (conftest is not importable)."""
    return tree


def gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


@pytest.fixture(name="gone")
def gone_fixture() -> object:
    """``gone(processes)``: none of them runs any more."""
    return gone
