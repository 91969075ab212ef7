"""The host lab for one session: booted (or found running) under its lock file, shut down
afterwards if this session booted it. Used by the tests' ``hostlab_up`` fixture and by
``senex-scale demo --runtime podman``; the lab itself is ``scripts/hostlab`` (docs/hostlab.md),
which needs a checkout of this repository."""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from senex_scale.lab.base import LabError
from senex_scale.lab.deployment import LAB, REPO

SCRIPT = REPO / "scripts" / "hostlab"
CANNOT = 75
"""scripts/hostlab's exit status for "this machine cannot run the lab"."""


class HostLabUnavailableError(LabError):
    """This machine cannot run the host lab (the reason is the message)."""


class HostLabBusyError(LabError):
    """Another session held the lab's lock for longer than we would wait."""


@contextlib.contextmanager
def exclusive(path: Path, timeout: float) -> Iterator[None]:
    """One session at a time uses the lab: another session's ``down`` would pull it away
    mid-run. A lock file beside the cache, waited for at most ``timeout`` seconds
    (``HostLabBusyError`` then)."""
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
                    raise HostLabBusyError(
                        f"another session has held {path} for {timeout:g}s"
                    ) from None
                time.sleep(1)
        yield


@contextlib.contextmanager
def running(
    lab: Path = LAB,
    *,
    lock_timeout: float = 1800.0,
    say: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """The host lab running for the block: yields the path of its systemd's pid file.

    ``HostLabUnavailableError`` where it cannot run (no checkout, not root, the kernel or a
    tool missing: ``scripts/hostlab``'s own reason), ``LabError`` when booting failed."""
    if not SCRIPT.is_file():
        raise HostLabUnavailableError(
            f"the host lab needs a checkout of senex-scale ({SCRIPT} is not there)"
        )
    with exclusive(lab.with_name(lab.name + ".lock"), lock_timeout):
        was_up = subprocess.run(
            [str(SCRIPT), "status"], capture_output=True, text=True, check=False, timeout=60
        )
        if was_up.returncode != 0 and say is not None:
            say("booting the host lab (scripts/hostlab up; the first time it is built: minutes)")
        up = subprocess.run(
            [str(SCRIPT), "up"], capture_output=True, text=True, check=False, timeout=1800
        )
        if up.returncode == CANNOT:
            lines = up.stderr.strip().splitlines() or ["(no reason given)"]
            raise HostLabUnavailableError(f"no host lab here: {lines[-1]}")
        if up.returncode != 0:
            raise LabError(f"scripts/hostlab up failed ({up.returncode}):\n{up.stderr[-3000:]}")
        try:
            yield lab / "run" / "systemd.pid"
        finally:
            if was_up.returncode != 0:
                subprocess.run([str(SCRIPT), "down"], capture_output=True, check=False, timeout=120)
