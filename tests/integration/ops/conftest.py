"""Real servers for the data-tier command tests (``senex-scale replica|db|pgbouncer|...``).

A PostgreSQL primary with pg_stat_statements in ``shared_preload_libraries``, started once per
module in a ``lab_dir()`` (as root the server runs as ``postgres``, which cannot enter
pytest's own temporary directories). The commands under test are run as the real CLI in a
subprocess, as an operator or a runbook action would run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from senex_scale.lab import Postgres, lab_dir


def cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``senex-scale ARGS`` in a subprocess (text output, never raises on exit status)."""
    return subprocess.run(
        [sys.executable, "-m", "senex_scale", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = lab_dir("senex-ops-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def primary(workdir: Path) -> Iterator[Postgres]:
    """A primary with pg_stat_statements loaded (and created in ``postgres``)."""
    server = Postgres(
        workdir / "primary",
        settings={
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
            "max_connections": "40",
        },
        # shadows the lab's "host replication all" line for the role replica add creates, so
        # the test sees it add its own pg_hba line at the top
        hba=["host replication replicator 127.0.0.1/32 reject"],
    )
    with server:
        with server.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield server
