"""Three booted lab machines on their own bridge (senex_scale.lab.machines): lb .10, web01
.11, web02 .12 on 10.77.0.0/24, each with systemd, sshd and Podman; the groundwork of the
multi-host scaling test (issue 15).

Only the lab's root filesystem is needed (``scripts/hostlab build``, a no-op when cached), not
the single lab booted. Boot and teardown times are printed on the terminal.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from senex_scale.lab.base import LabError
from senex_scale.lab.machines import LabNet, Machine
from senex_scale.policy.models import Pool
from senex_scale.runtimes.systemd import SystemdRuntime
from senex_scale.testing import wait_until

pytestmark = [pytest.mark.hostlab, pytest.mark.integration, pytest.mark.slow]

IMAGE = "localhost/senex-hostlab:latest"
HTTP_PORT = 8001


def connects(address: str, port: int, timeout: float) -> bool:
    with socket.socket() as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except OSError:
            return False
        return True


def get(url: str) -> str:
    """GET from the host, never through a proxy of the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def test_each_machine_answers_ssh_with_its_pinned_host_key(machines: dict[str, Machine]) -> None:
    """ssh as root with the lab's key, the host key checked: hostname and a running systemd."""
    keys = set()
    for name, machine in machines.items():
        done = machine.ssh("sh", "-c", "hostname; systemctl is-system-running")
        assert done.returncode == 0, f"{name}: {done.stderr}"
        assert done.stdout.split() == [name, "running"], f"{name}: {machine.degraded}"
        pinned = machine.host_key.read_text().split()[:2]
        assert f"{machine.address} {' '.join(pinned)}" in machine.net.known_hosts.read_text()
        keys.add(pinned[1])
    assert len(keys) == len(machines), "machines share a host key"


def test_a_host_key_pinned_for_another_machine_is_refused(
    machines: dict[str, Machine], tmp_path: Path
) -> None:
    """web01's address with web02's key pinned: ssh refuses, no command runs."""
    web01, web02 = machines["web01"], machines["web02"]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{web01.address} {web02.host_key.read_text()}")
    argv = web01.ssh_argv("true", connect_timeout=5)
    argv[argv.index(f"UserKnownHostsFile={web01.net.known_hosts}")] = f"UserKnownHostsFile={wrong}"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_ssh_settings_drive_the_systemd_runtime(machines: dict[str, Machine]) -> None:
    """ssh_settings() as the systemd runtime's options: daemon-reload on web01 over ssh."""
    web01 = machines["web01"]
    settings = web01.ssh_settings()
    assert settings["host"] == "10.77.0.11"
    assert settings["ssh_user"] == "root"
    assert Path(settings["ssh_identity"]) == web01.net.client_key
    assert f"UserKnownHostsFile={web01.net.known_hosts}" in settings["ssh_options"]
    assert "StrictHostKeyChecking=yes" in settings["ssh_options"]
    pool = Pool.model_validate({"min": 1, "max": 2, "port": "8000 + n"})
    runtime = SystemdRuntime("web", pool, {"unit": "senex-web@{n}.service", **settings})
    assert "ssh root@10.77.0.11" in repr(runtime)
    runtime.daemon_reload()


def test_machines_have_only_the_lab_route(machines: dict[str, Machine]) -> None:
    """One /24 link route and no default route: any other address is unreachable at once."""
    for name, machine in machines.items():
        routes = [r.split() for r in machine.exec("ip", "-4", "route").stdout.splitlines()]
        link = f"10.77.0.0/24 dev host0 proto kernel scope link src {machine.address}"
        assert routes == [link.split()], name
    probe = (
        "import socket; s = socket.socket(); s.settimeout(2)\n"
        "print(s.connect_ex(('198.51.100.1', 80)))"
    )
    done = machines["web01"].exec("python3", "-c", probe)
    assert done.stdout.strip() == str(errno.ENETUNREACH), done.stderr


def test_podman_runs_the_lab_image_on_a_web_machine(machines: dict[str, Machine]) -> None:
    """podman run of localhost/senex-hostlab on web01 (its own storage, host network)."""
    done = machines["web01"].exec(
        "env", "PODMAN_IGNORE_CGROUPSV1_WARNING=1",
        "podman", "run", "--rm", "--network=host", "--cgroups=disabled",
        IMAGE, "python3", "-c", "print(1)",
        timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr
    storage = machines["web01"].exec("stat", "-f", "-c", "%T", "/var/lib/containers")
    assert storage.stdout.strip() not in ("overlayfs", ""), "Podman's storage is on the overlay"


@pytest.fixture
def http_server(machines: dict[str, Machine]) -> Iterator[str]:
    """python3 -m http.server on web01's address (a transient unit); stopped afterwards."""
    web01 = machines["web01"]
    unit = "senex-test-http.service"
    argv = ["python3", "-m", "http.server", "--bind", web01.address, str(HTTP_PORT)]
    started = web01.exec("systemd-run", f"--unit={unit}", "--property=WorkingDirectory=/srv", *argv)
    assert started.returncode == 0, started.stderr
    web01.write_file("/srv/hello.txt", "hello from web01\n")
    try:
        wait_until(lambda: connects(web01.address, HTTP_PORT, 1), 20, "web01's HTTP server")
        yield f"{web01.address}:{HTTP_PORT}"
    finally:
        web01.exec("systemctl", "stop", unit)


def test_http_server_on_web01_answers_from_the_host_and_from_lb(
    machines: dict[str, Machine], http_server: str
) -> None:
    """The host reaches web01 over the bridge; lb reaches it by name (its /etc/hosts)."""
    assert get(f"http://{http_server}/hello.txt") == "hello from web01\n"
    fetch = (
        "import urllib.request\n"
        f"print(urllib.request.urlopen('http://web01:{HTTP_PORT}/hello.txt', timeout=5).read()"
        ".decode(), end='')"
    )
    done = machines["lb"].exec("python3", "-c", fetch)
    assert (done.returncode, done.stdout) == (0, "hello from web01\n"), done.stderr


def test_haproxy_runs_on_lb(machines: dict[str, Machine]) -> None:
    """haproxy -v on the balancer machine (HAProxy 3 of Debian 13)."""
    done = machines["lb"].exec("haproxy", "-v")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HAProxy version 3."), done.stdout


def test_power_off_makes_web02_unreachable(
    machines: dict[str, Machine], terminal: Callable[[str], None]
) -> None:
    """After power_off(), ssh to web02 fails within ConnectTimeout and :22 does not answer."""
    web02 = machines["web02"]
    try:
        cut = time.monotonic()
        web02.power_off()
        off = time.monotonic() - cut
        started = time.monotonic()
        done = web02.ssh("true", connect_timeout=3, timeout=30)
        failed_after = time.monotonic() - started
        assert done.returncode == 255, done.stdout
        assert failed_after < 15, f"ssh took {failed_after:.1f}s to fail"
        assert not connects(web02.address, 22, 3)
        from_lb = machines["lb"].exec(
            "python3", "-c",
            f"import socket; s = socket.socket(); s.settimeout(3); "
            f"print(s.connect_ex(('{web02.address}', 22)))",
        )  # fmt: skip
        assert from_lb.stdout.strip() not in ("", "0"), from_lb.stderr
        terminal(
            f"\nlab machines: power_off {off:.2f} s; then ssh (ConnectTimeout=3) failed after "
            f"{failed_after:.1f} s: {done.stderr.strip()}",
        )
    finally:
        web02.boot_again()


def test_boot_again_brings_web02_back_with_its_host_key_and_disk(
    machines: dict[str, Machine], terminal: Callable[[str], None]
) -> None:
    """A file written before a power cut is there after boot_again(); ssh pins the same key."""
    web02 = machines["web02"]
    key = web02.host_key.read_text()
    assert web02.ssh("sh", "-c", "echo kept > /root/mark && sync").returncode == 0
    web02.power_off()
    web02.boot_again()
    terminal(f"\nlab machines: web02 booted again in {web02.boot_seconds:.1f} s")
    assert web02.host_key.read_text() == key
    done = web02.ssh("cat", "/root/mark")
    assert (done.returncode, done.stdout) == (0, "kept\n"), done.stderr
    assert web02.address == "10.77.0.12"


def test_shutdown_is_a_clean_poweroff(machines: dict[str, Machine]) -> None:
    """shutdown(): systemd powers web01 off (exit 0); boot_again() brings it back."""
    web01 = machines["web01"]
    web01.shutdown()
    assert web01.exit_status == 0
    assert not web01.running
    web01.boot_again()
    assert web01.ssh("systemctl", "is-system-running").stdout == "running\n"


def test_a_boot_that_does_not_finish_fails_with_its_console_log(
    machines: dict[str, Machine],
) -> None:
    """A boot over boot_timeout: LabError with its console log; powered off; close() cleans up."""
    net = machines["lb"].net
    slow = Machine(net, "slow", 20, boot_timeout=0.3)
    try:
        with pytest.raises(LabError, match=r"machine slow \(10\.77\.0\.20\): not up within 0\.3s"):
            slow.up()
        assert not slow.running
        assert slow.exit_status == -9
        assert not Path(f"/sys/class/net/{slow.veth}").exists()
    finally:
        slow.close()
    assert not slow.dir.exists()
    assert "slow" not in net.machines


def test_a_second_lab_on_the_same_bridge_in_this_process_fails_at_once(
    machines: dict[str, Machine],
) -> None:
    """A second LabNet of senexlab0 here fails now (it would wait on its own lock)."""
    started = time.monotonic()
    with pytest.raises(LabError, match="bridge senexlab0 is already held by another LabNet"):
        LabNet(wait=60).create()
    assert time.monotonic() - started < 5
    assert machines["lb"].ssh("true").returncode == 0, "the first lab was disturbed"


def test_a_bridge_the_lab_did_not_make_is_left_alone(machines: dict[str, Machine]) -> None:
    """LabNet refuses an existing bridge without its mark and does not delete it."""
    name = "senexforeign0"
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True)
    try:
        with pytest.raises(LabError, match=f"interface {name} exists and was not made by the lab"):
            LabNet(name, "10.77.0").create()
        assert Path(f"/sys/class/net/{name}").exists()
    finally:
        subprocess.run(["ip", "link", "delete", name], check=False)
