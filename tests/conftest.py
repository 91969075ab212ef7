"""Fixtures shared across test folders.

``hostlab_up``: the host lab (``scripts/hostlab``) booted once for the whole session, under
the lab's lock file so that another test session cannot pull it away; a lab that was already
running is left running, one booted here is shut down at the end. Both ``tests/hostlab`` and
the Quadlet checks of ``tests/integration/render`` use it: one holder per process, since a
second ``flock`` on the same file from the same process would wait for itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "hostlab"
LAB = Path(os.environ.get("SENEX_HOSTLAB_DIR", "/var/cache/senex-scale/hostlab"))
CANNOT = 75
"""scripts/hostlab's exit status for "this machine cannot run the lab"."""
LOCK_TIMEOUT = 1800.0


@contextlib.contextmanager
def exclusive(path: Path, timeout: float) -> Iterator[None]:
    """One test session at a time uses the lab: another session's ``down`` would pull it
    away mid-test. A lock file beside the cache, waited for at most ``timeout`` seconds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError:
        yield  # no cache directory here: scripts/hostlab says why
        return
    with handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session has held {path} for {timeout:g}s")
                time.sleep(1)
        yield


@pytest.fixture(scope="session")
def hostlab_up() -> Iterator[Path]:
    """The running host lab: the path of its systemd's pid file (a skip where it cannot run)."""
    with exclusive(LAB.with_name(LAB.name + ".lock"), LOCK_TIMEOUT):
        was_up = subprocess.run(
            [str(SCRIPT), "status"], capture_output=True, text=True, check=False, timeout=60
        )
        up = subprocess.run(
            [str(SCRIPT), "up"], capture_output=True, text=True, check=False, timeout=1200
        )
        if up.returncode == CANNOT:
            pytest.skip(f"no host lab here: {up.stderr.strip().splitlines()[-1]}")
        if up.returncode != 0:
            pytest.fail(f"scripts/hostlab up failed ({up.returncode}):\n{up.stderr[-3000:]}")
        try:
            yield LAB / "run" / "systemd.pid"
        finally:
            if was_up.returncode != 0:
                subprocess.run([str(SCRIPT), "down"], capture_output=True, check=False, timeout=120)
