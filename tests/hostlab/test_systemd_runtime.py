"""The systemd runtime against a real systemd: Quadlet units started, stopped, listed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest

from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.runtimes.base import UnitState, probe_health
from senex_scale.runtimes.systemd import PROPERTIES, SystemdRuntime, parse_show
from senex_scale.testing import wait_until

if TYPE_CHECKING:
    from conftest import Templates, WebTemplate

pytestmark = [pytest.mark.hostlab, pytest.mark.integration]


def states(runtime: SystemdRuntime) -> dict[int, UnitState]:
    return {i.n: i.state for i in runtime.list()}


def test_start_list_stop_a_quadlet_instance(web_template: WebTemplate) -> None:
    """start waits until the unit is up; the instance answers on BASE+n; stop ends it cleanly."""
    runtime = web_template.runtime()
    assert states(runtime) == {1: UnitState.STOPPED}, "only the probe instance before a start"
    before = time.time()
    runtime.start(2)
    (two,) = (i for i in runtime.list() if i.n == 2)
    assert two.state is UnitState.RUNNING, web_template.journal()
    assert two.pid is not None
    assert two.started_at is not None
    assert before - 2 <= two.started_at <= time.time() + 2
    address = runtime.address(2)
    assert address == f"127.0.0.1:{web_template.base + 2}"
    wait_until(lambda: probe_health(address, "/health/"), 20, f"{address} to answer")
    assert httpx.get(f"http://{address}/", trust_env=False).text == "2"

    runtime.start(2)  # starting a started instance is not an error
    runtime.stop(2)
    # A cleanly stopped instance is unloaded by systemd (so list may omit it); status shows it.
    assert runtime.status(2).state is UnitState.STOPPED, web_template.journal()
    assert states(runtime).get(2, UnitState.STOPPED) is UnitState.STOPPED
    assert not probe_health(address, "/health/", timeout=0.5)
    runtime.stop(2)  # nor is stopping a stopped one
    runtime.stop(3)  # nor one never started


def test_instances_past_nine_get_their_own_ports(web_template: WebTemplate) -> None:
    """Instance 10 listens on BASE+10 (the seed's PublishPort=800%i would say 80010)."""
    pool = web_template.pool().model_copy(update={"max": 12})
    options = {"unit": web_template.unit, "nsenter": str(web_template.lab.pid_file)}
    runtime = SystemdRuntime("web", pool, options)
    runtime.start(10)
    try:
        address = runtime.address(10)
        assert address == f"127.0.0.1:{web_template.base + 10}"
        wait_until(lambda: probe_health(address, "/health/"), 20, f"{address} to answer")
        assert states(runtime)[10] is UnitState.RUNNING
    finally:
        runtime.stop(10)


def test_daemon_reload_makes_a_new_quadlet_file_a_unit(templates: Templates) -> None:
    """Before daemon-reload the template does not exist (PermanentError naming it); after it
    the Quadlet generator has made the service; removed and reloaded, it is gone again."""
    template = templates("senex-reload", load=False)
    runtime = template.runtime()
    with pytest.raises(PermanentError, match=r"senex-reload@1\.service.*not found"):
        runtime.list()
    with pytest.raises(PermanentError, match=r"systemctl start senex-reload@1\.service"):
        runtime.start(1)
    runtime.daemon_reload()
    assert states(runtime) == {1: UnitState.STOPPED}
    runtime.start(1)
    assert states(runtime)[1] is UnitState.RUNNING, template.journal()
    templates.remove(template)
    with pytest.raises(
        PermanentError, match=r"senex-reload@\.service installed.*senex-reload@\.container"
    ):
        runtime.start(1)


def test_unit_that_fails_to_start_is_a_temporary_error(templates: Templates) -> None:
    """A container whose program does not exist: the start job fails, a TemporaryError that
    points at the journal, and list reports the instance failed."""
    template = templates("senex-broken", command="/nonexistent/server %i")
    runtime = template.runtime()
    with pytest.raises(TemporaryError, match=r"journalctl -u senex-broken@2\.service"):
        runtime.start(2)
    (two,) = (i for i in runtime.list() if i.n == 2)
    assert (two.state, two.pid, two.started_at) == (UnitState.FAILED, None, None)


def test_masked_instance_cannot_start(web_template: WebTemplate) -> None:
    """A masked instance is failed (status) and a PermanentError on start."""
    lab, runtime = web_template.lab, web_template.runtime()
    unit = "senex-web@4.service"
    assert lab.exec("systemctl", "mask", "--runtime", unit).returncode == 0
    try:
        assert runtime.status(4).state is UnitState.FAILED
        with pytest.raises(PermanentError, match="is masked"):
            runtime.start(4)
    finally:
        lab.exec("systemctl", "unmask", "--runtime", unit)


def test_live_show_output_parses_like_the_recording(web_template: WebTemplate) -> None:
    """The runtime's exact show command in the lab now gives records the golden files match."""
    runtime = web_template.runtime()
    runtime.start(1)
    done = web_template.lab.exec(
        "systemctl",
        "show",
        "--timestamp=unix",
        f"--property={','.join(PROPERTIES)}",
        "senex-web@1.service",
        "senex-web@2.service",
    )
    assert done.returncode == 0, done.stderr
    one, two = parse_show(done.stdout)
    assert set(one) == set(PROPERTIES)
    assert (one["Id"], one["ActiveState"], one["SubState"]) == (
        "senex-web@1.service",
        "active",
        "running",
    )
    assert one["ExecMainStartTimestamp"].startswith("@")
    assert int(one["MainPID"]) > 0
    assert (two["ActiveState"], two["MainPID"]) == ("inactive", "0")


def test_gone_container_is_a_temporary_error(web_template: WebTemplate) -> None:
    """A PID that is no process (the lab went down): TemporaryError, nsenter's reason."""
    options = {"unit": web_template.unit, "nsenter": 2**22 + 7}
    runtime = SystemdRuntime("web", web_template.pool(), options)
    with pytest.raises(TemporaryError, match=r"nsenter -t 4194311: unreachable \(nsenter:"):
        runtime.list()


SLOW_UNIT = """\
[Unit]
Description=senex-scale hostlab: slow to start %i

[Service]
ExecStartPre=/bin/sleep 30
ExecStart=/bin/sleep infinity
"""


def test_start_is_bounded_by_start_timeout(web_template: WebTemplate) -> None:
    """A start job slower than start_timeout: systemctl is killed at the bound (TemporaryError),
    the job goes on in systemd (starting), and stop cancels it."""
    lab = web_template.lab
    unit_file = lab.root / "etc/systemd/system/senex-slow@.service"
    unit_file.write_text(SLOW_UNIT)
    options = {"unit": "senex-slow@{n}.service", "nsenter": str(lab.pid_file)}
    runtime = SystemdRuntime("web", web_template.pool(), {**options, "start_timeout": "1s"})
    try:
        runtime.daemon_reload()
        began = time.monotonic()
        with pytest.raises(TemporaryError, match=r"start senex-slow@1\.service did not finish"):
            runtime.start(1)
        assert time.monotonic() - began < 5
        assert runtime.status(1).state is UnitState.STARTING
        runtime.stop(1)
        # systemd counts a start cut short in ExecStartPre (SIGTERM) as failed
        assert runtime.status(1).state in (UnitState.STOPPED, UnitState.FAILED)
    finally:
        lab.exec("systemctl", "stop", "senex-slow@*.service")
        lab.exec("systemctl", "reset-failed", "senex-slow@*.service")
        unit_file.unlink()
        lab.exec("systemctl", "daemon-reload")
