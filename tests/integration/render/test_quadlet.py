"""The rendered Quadlet units through Podman 5's own generator, in the host lab's Debian 13
root filesystem (``/usr/libexec/podman/quadlet -dryrun`` under chroot); the systemd timers'
calendars through ``systemd-analyze calendar``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from senex_scale.runtimes.transport import NsenterTransport, run

QUADLET = "usr/libexec/podman/quadlet"
REPO = Path(__file__).resolve().parents[3]
LAB = Path(os.environ.get("SENEX_HOSTLAB_DIR", "/var/cache/senex-scale/hostlab"))


def hostlab_rootfs() -> Path | None:
    """The lab's root filesystem when it is built (scripts/hostlab build), else None."""
    rootfs = LAB / "rootfs"
    return rootfs if (rootfs / QUADLET).exists() else None


@pytest.fixture
def rootfs() -> Path:
    """The host lab's rootfs, or a skip saying how to get it."""
    found = hostlab_rootfs()
    if found is None:
        pytest.skip(
            "the host lab's Debian 13 root filesystem is not built "
            "(scripts/hostlab build; SENEX_HOSTLAB_DIR or /var/cache/senex-scale/hostlab)"
        )
    if os.geteuid() != 0:
        pytest.skip("chroot into the host lab's root filesystem needs root")
    return found


@pytest.fixture
def unit_dir(rootfs: Path) -> Iterator[tuple[Path, str]]:
    """A fresh directory inside the rootfs: (host path, path seen from the chroot)."""
    path = Path(tempfile.mkdtemp(prefix="senex-render-quadlet-", dir=rootfs / "tmp"))
    yield path, "/" + str(path.relative_to(rootfs))
    shutil.rmtree(path, ignore_errors=True)


def dryrun(rootfs: Path, inside: str) -> subprocess.CompletedProcess[str]:
    """Podman's Quadlet generator on the units in ``inside`` (a rootless user's units)."""
    return subprocess.run(
        ["chroot", str(rootfs), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
         "HOME=/root", f"QUADLET_UNIT_DIRS={inside}", f"/{QUADLET}", "-dryrun", "-user"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def copy_units(deployment: Any, target: Path) -> list[str]:
    """Every distinct rendered .container/.network file (web, db and cache hosts) into target."""
    names = []
    for path in sorted(deployment.out.glob("*/quadlet/*")):
        if not (target / path.name).exists():
            shutil.copy2(path, target / path.name)
            names.append(path.name)
    return names


@pytest.mark.hostlab
def test_quadlet_generator_accepts_every_unit(
    deployment: Any, rootfs: Path, unit_dir: tuple[Path, str]
) -> None:
    """Podman 5's generator turns every rendered unit into a service without a warning, with
    the per-instance port, the memory limit and the health check where podman takes them."""
    host_path, inside = unit_dir
    names = copy_units(deployment, host_path)
    assert "django@.container" in names
    result = dryrun(rootfs, inside)
    assert result.returncode == 0, result.stderr
    assert "unsupported key" not in result.stderr.lower(), result.stderr
    out = result.stdout
    for name in names:
        stem, kind = name.rsplit(".", 1)
        service = f"{stem}-network.service" if kind == "network" else f"{stem}.service"
        assert f"---{service}---" in out, f"{name}: no {service} generated\n{result.stderr}"
    django = out.split("---django@.service---")[1].split("---")[0]
    assert "127.0.0.1:${SENEX_PORT}:8000" in django
    assert "--memory=1536M" in django
    assert "--health-cmd" in django
    assert "CPUQuota=100%" in django
    assert "EnvironmentFile=-%t/senex-scale/django@%i.env" in django


@pytest.mark.hostlab
def test_quadlet_generator_refuses_the_seeds_memory_key(
    deployment: Any, rootfs: Path, unit_dir: tuple[Path, str]
) -> None:
    """The check can fail: the seed's ``Memory=`` in [Container] is refused by Podman 5."""
    host_path, inside = unit_dir
    unit = deployment.file("web01", "quadlet/django@.container").read_text()
    (host_path / "django@.container").write_text(
        unit.replace("[Container]\n", "[Container]\nMemory=1536M\n", 1)
    )
    shutil.copy2(deployment.file("web01", "quadlet/senex_net.network"), host_path)
    result = dryrun(rootfs, inside)
    assert "---django@.service---" not in result.stdout
    assert "Memory" in result.stderr


@pytest.fixture
def booted(rootfs: Path, hostlab_up: Path) -> NsenterTransport:
    """The host lab booted (its systemd as PID 1): ``hostlab_up`` of tests/conftest.py, the
    same session-wide holder of the lab's lock as tests/hostlab."""
    return NsenterTransport(int(hostlab_up.read_text()))


PROBE = "senex-render-probe"


@pytest.mark.hostlab
def test_systemd_gives_instance_12_base_plus_12(
    deployment: Any, rootfs: Path, unit_dir: tuple[Path, str], booted: NsenterTransport
) -> None:
    """Under the lab's real systemd, the generated django@.service's own ExecStartPre,
    EnvironmentFile and ExecStart (with /bin/echo in place of podman) publish BASE + 12 for
    django@12; django@x fails before its ExecStart."""
    host_path, inside = unit_dir
    copy_units(deployment, host_path)
    generated = dryrun(rootfs, inside).stdout.split("---django@.service---")[1].split("---")[0]
    service = [
        line
        for line in generated.split("[Service]")[1].split("[Install]")[0].splitlines()
        if line.startswith(("ExecStartPre=", "EnvironmentFile=", "ExecStart="))
    ]
    service = [line.replace("/usr/bin/podman run", "/bin/echo", 1) for line in service]
    unit = rootfs / "etc/systemd/system" / f"{PROBE}@.service"
    unit.write_text(
        "[Service]\nType=oneshot\n"
        + "\n".join(service)
        + f"\nStandardOutput=file:/run/{PROBE}-%i.out\n"
    )
    try:
        for argv in (
            ["systemctl", "daemon-reload"],
            ["systemctl", "start", f"{PROBE}@12.service"],
        ):
            done = run(booted, argv, 60)
            assert done.returncode == 0, done.stderr
        echoed = run(booted, ["cat", f"/run/{PROBE}-12.out"], 30).stdout
        port = deployment.inv.pools["django"].port_of(12)
        assert f"--publish 127.0.0.1:{port}:8000" in echoed, echoed
        assert "--name senex-django-12" in echoed
        bad = run(booted, ["systemctl", "start", f"{PROBE}@x.service"], 60)
        assert bad.returncode != 0
    finally:
        unit.unlink(missing_ok=True)
        for argv in (
            ["systemctl", "reset-failed", f"{PROBE}@*"],
            ["rm", "-f", f"/run/{PROBE}-12.out", "/run/senex-scale/django@12.env"],
            ["systemctl", "daemon-reload"],
        ):
            run(booted, argv, 60)


@pytest.mark.integration
def test_timer_calendars_parse(deployment: Any) -> None:
    """``systemd-analyze calendar`` accepts every rendered OnCalendar= (with the time zone)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    timers = sorted(deployment.out.glob("*/systemd/*.timer"))
    assert len(timers) == 2
    for timer in timers:
        line = next(x for x in timer.read_text().splitlines() if x.startswith("OnCalendar="))
        spec = line.removeprefix("OnCalendar=")
        assert spec.endswith(" America/New_York")
        result = subprocess.run(
            ["systemd-analyze", "calendar", spec],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{timer.name}: {result.stderr}"
        assert "Next elapse:" in result.stdout
