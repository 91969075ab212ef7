"""systemctl's failures (messages recorded in the host lab) become the right error class."""

from __future__ import annotations

import pytest

from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.policy.models import Pool
from senex_scale.runtimes.systemd import SystemdRuntime
from senex_scale.runtimes.transport import Completed

POOL = Pool.model_validate({"min": 1, "max": 4, "port": "8100 + n"})
RUNTIME = SystemdRuntime("web", POOL, {"unit": "web@{n}.service", "host": "app1"})


def failure(code: int, stderr: str) -> PermanentError | TemporaryError:
    return RUNTIME._failure(Completed((), code, "", stderr), "start", "web@2.service")


def test_missing_unit_is_permanent_and_says_what_to_check() -> None:
    """Exit 5, "not found": the template and the Quadlet file to look at, the host named."""
    error = failure(5, "Failed to start web@2.service: Unit web@2.service not found.\n")
    assert isinstance(error, PermanentError)
    text = str(error)
    assert "pool web: ssh app1: systemctl start web@2.service failed (exit 5)" in text
    assert "Unit web@2.service not found." in text
    assert "/etc/containers/systemd/web@.container" in text
    assert "quadlet -dryrun" in text


def test_masked_unit_is_permanent_without_the_install_hint() -> None:
    """A masked unit exists: no advice to install it."""
    error = failure(1, "Failed to start web@2.service: Unit web@2.service is masked.\n")
    assert isinstance(error, PermanentError)
    assert "is masked" in str(error)
    assert "installed" not in str(error)


def test_failed_start_job_is_temporary_and_points_at_the_journal() -> None:
    """The unit's process exited: maybe a port in use; the journal says why."""
    stderr = (
        "Job for web@2.service failed because the control process exited with error code.\n"
        'See "systemctl status web@2.service" and "journalctl -xeu web@2.service" for details.\n'
    )
    error = failure(1, stderr)
    assert isinstance(error, TemporaryError)
    assert "see journalctl -u web@2.service" in str(error)
    assert "\n" not in str(error)


def test_no_bus_is_temporary() -> None:
    """systemd not answering (restarting, or no user manager) may come back."""
    error = failure(1, "Failed to connect to bus: No such file or directory\n")
    assert isinstance(error, TemporaryError)
    assert "is systemd running there?" in str(error)


@pytest.mark.parametrize(
    "stderr",
    [
        "bash: line 1: systemctl: command not found\n",
        "Failed to start web@2.service: Access denied\n",
        "Failed to start web@2.service: Interactive authentication required.\n",
        'Failed to start web@2.service: Unit name "web@2.service" is not a valid unit name.\n',
    ],
)
def test_refusals_are_permanent(stderr: str) -> None:
    """No systemctl there, no permission: retrying will not help."""
    assert isinstance(failure(1, stderr), PermanentError)
