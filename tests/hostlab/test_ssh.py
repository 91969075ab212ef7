"""The systemd runtime over a real ssh: the lab's own sshd, key and host key checked."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from senex_scale.errors import PermanentError
from senex_scale.lab import free_port
from senex_scale.runtimes.base import UnitState, probe_health
from senex_scale.runtimes.systemd import SystemdRuntime
from senex_scale.testing import wait_until

if TYPE_CHECKING:
    from conftest import HostLab, WebTemplate

pytestmark = [pytest.mark.hostlab, pytest.mark.integration]


def keygen(path: Path) -> Path:
    """A new ed25519 key pair without passphrase: ``path`` and ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "senex-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sshd(hostlab: HostLab, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An sshd in the lab on a free loopback port (a transient unit), root logging in with a
    key made here; the host key pinned in a known_hosts file. Yields the runtime's ssh
    settings (host, ssh_port, ssh_user, ssh_identity, ssh_options)."""
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("no OpenSSH client here")
    if not (hostlab.root / "usr/sbin/sshd").exists():
        pytest.fail("the lab has no sshd: scripts/hostlab build (openssh-server) is older")
    port = free_port()
    client = keygen(tmp_path / "client_key")
    host_key = keygen(tmp_path / "host_key")
    inside = f"/srv/senex-sshd-{port}"
    where = hostlab.root / inside.lstrip("/")
    where.mkdir(parents=True)
    where.chmod(0o755)  # sshd reads authorized_keys as the user logging in
    shutil.copy2(host_key, where / "host_key")
    (where / "host_key").chmod(0o600)
    (where / "authorized_keys").write_text(Path(f"{client}.pub").read_text())
    (where / "authorized_keys").chmod(0o644)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
    unit = f"senex-sshd-{port}.service"
    sshd_argv = [
        "/usr/sbin/sshd", "-D", "-e", "-p", str(port),
        "-h", f"{inside}/host_key",
        "-o", "ListenAddress=127.0.0.1",
        "-o", f"AuthorizedKeysFile={inside}/authorized_keys",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", "PermitRootLogin=prohibit-password",
    ]  # fmt: skip
    started = hostlab.exec(
        "systemd-run", f"--unit={unit}", "--property=RuntimeDirectory=sshd", *sshd_argv
    )
    assert started.returncode == 0, started.stderr
    try:

        def up() -> bool:
            return listening(port)

        wait_until(up, 15, f"the lab's sshd on 127.0.0.1:{port}")
        yield {
            "host": "127.0.0.1",
            "ssh_port": port,
            "ssh_user": "root",
            "ssh_identity": str(client),
            "ssh_options": [
                f"UserKnownHostsFile={known_hosts}",
                "StrictHostKeyChecking=yes",
                "IdentitiesOnly=yes",
            ],
        }
    finally:
        hostlab.exec("systemctl", "stop", unit)
        shutil.rmtree(where, ignore_errors=True)


def test_runtime_over_ssh_drives_the_quadlet_units(
    web_template: WebTemplate, sshd: dict[str, Any]
) -> None:
    """daemon-reload, start, list, status, stop: every systemctl through ssh; the instance
    answers at instance_host:BASE+n."""
    options = {"unit": web_template.unit, **sshd}
    runtime = SystemdRuntime("web", web_template.pool(), options)
    assert "ssh root@127.0.0.1" in repr(runtime)
    runtime.daemon_reload()
    runtime.start(3)
    (three,) = (i for i in runtime.list() if i.n == 3)
    assert three.state is UnitState.RUNNING, web_template.journal()
    address = runtime.address(3)
    assert address == f"127.0.0.1:{web_template.base + 3}"
    wait_until(lambda: probe_health(address, "/health/"), 20, f"{address} to answer")
    runtime.stop(3)
    assert runtime.status(3).state is UnitState.STOPPED


def test_unknown_key_is_a_permanent_refusal(
    web_template: WebTemplate, sshd: dict[str, Any], tmp_path: Path
) -> None:
    """A key the host does not accept: ssh's "Permission denied", not worth a retry."""
    other = keygen(tmp_path / "other_key")
    options = {"unit": web_template.unit, **sshd, "ssh_identity": str(other)}
    runtime = SystemdRuntime("web", web_template.pool(), options)
    with pytest.raises(
        PermanentError, match=r"ssh root@127\.0\.0\.1: refused \(.*Permission denied"
    ):
        runtime.list()


def test_changed_host_key_is_a_permanent_refusal(
    web_template: WebTemplate, sshd: dict[str, Any], tmp_path: Path
) -> None:
    """known_hosts pins another key for the host: ssh refuses to talk to it (no command runs)."""
    impostor = keygen(tmp_path / "impostor")
    known = tmp_path / "other_known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd['ssh_port']} {Path(f'{impostor}.pub').read_text()}")
    ssh_options = [f"UserKnownHostsFile={known}", "StrictHostKeyChecking=yes"]
    options = {"unit": web_template.unit, **sshd, "ssh_options": ssh_options}
    runtime = SystemdRuntime("web", web_template.pool(), options)
    with pytest.raises(PermanentError, match="Host key verification failed"):
        runtime.start(1)
    assert web_template.runtime().status(1).state is UnitState.STOPPED, "started anyway"


USER_UNIT = """\
[Unit]
Description=senex-scale hostlab user-scope web instance %i

[Service]
ExecStart=/usr/bin/python3 {app} {base} %i
"""


@pytest.fixture
def lab_user(hostlab: HostLab) -> Iterator[str]:
    """A user in the lab with lingering on (its systemd manager runs without a login)."""
    name = "senex-user"
    hostlab.exec("userdel", "-r", name)  # a leftover from an interrupted run
    done = hostlab.exec("useradd", "-m", "-s", "/bin/bash", name)
    assert done.returncode == 0, done.stderr
    uid = hostlab.exec("id", "-u", name).stdout.strip()
    try:
        assert hostlab.exec("loginctl", "enable-linger", name).returncode == 0

        def manager_up() -> bool:
            state = hostlab.exec("systemctl", "is-active", f"user@{uid}.service").stdout
            return state.strip() == "active"

        wait_until(manager_up, 30, f"user@{uid}.service (the user's systemd)")
        yield name
    finally:
        hostlab.exec("loginctl", "disable-linger", name)
        hostlab.exec("systemctl", "stop", f"user@{uid}.service")
        hostlab.exec("userdel", "-r", name)


def test_user_scope_over_ssh(
    web_template: WebTemplate, sshd: dict[str, Any], lab_user: str
) -> None:
    """scope = "user": systemctl --user as that user over ssh drives units of the user's own
    manager (~/.config/systemd/user), no root needed."""
    lab = web_template.lab
    units = lab.root / "home" / lab_user / ".config/systemd/user"
    units.mkdir(parents=True)
    app = f"/srv/{web_template.name}/web.py"
    (units / "senex-userweb@.service").write_text(USER_UNIT.format(app=app, base=web_template.base))
    lab.exec("chown", "-R", f"{lab_user}:{lab_user}", f"/home/{lab_user}/.config")
    options = {"unit": "senex-userweb@{n}.service", "scope": "user", **sshd, "ssh_user": lab_user}
    runtime = SystemdRuntime("web", web_template.pool(), options)
    runtime.daemon_reload()
    runtime.start(4)
    (four,) = (i for i in runtime.list() if i.n == 4)
    assert four.state is UnitState.RUNNING
    address = runtime.address(4)
    wait_until(lambda: probe_health(address, "/health/"), 20, f"{address} to answer")
    owner = lab.exec("stat", "-c", "%U", f"/proc/{four.pid}").stdout.strip()
    assert owner == lab_user
    runtime.stop(4)
    assert runtime.status(4).state is UnitState.STOPPED
    # The system manager has no such unit: the scopes are really apart.
    system = SystemdRuntime("web", web_template.pool(), {**options, "scope": "system"})
    with pytest.raises(PermanentError, match=r"senex-userweb@1\.service"):
        system.list()
