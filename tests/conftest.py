"""Fixtures shared across test folders.

``hostlab_up``: the host lab (``scripts/hostlab``) booted once for the whole session, under
the lab's lock file so that another test session cannot pull it away; a lab that was already
running is left running, one booted here is shut down at the end
(``senex_scale.lab.hostlab.running``). Both ``tests/hostlab`` and the Quadlet checks of
``tests/integration/render`` use it: one holder per process, since a second ``flock`` on the
same file from the same process would wait for itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from senex_scale.lab.base import LabError
from senex_scale.lab.hostlab import HostLabUnavailableError, running


@pytest.fixture(scope="session")
def hostlab_up() -> Iterator[Path]:
    """The running host lab: the path of its systemd's pid file (a skip where it cannot run)."""
    with contextlib.ExitStack() as held:
        try:
            pid_file = held.enter_context(running())
        except HostLabUnavailableError as exc:
            pytest.skip(str(exc))
        except LabError as exc:
            pytest.fail(str(exc))
        yield pid_file
