"""The rendered deployment, run for real in the host lab (docs/hostlab.md).

``senex-scale render`` writes the files an operator installs; this module does that install
in the host lab (``scripts/hostlab``: Debian 13, systemd as PID 1, Podman 5 and Quadlet) and
starts it, the way the seed deploys: the application rootless under a service user with
lingering, its pools as the rendered Quadlet templates (``django@N``,
``celery-worker-trading@N``, ``celery-worker@N``) running the reference app's image
(``demo/Containerfile``), behind the rendered nginx and the rendered web HAProxy, on the
rendered PostgreSQL, PgBouncer and Redis. Used by ``tests/hostlab/test_rendered_deployment.py``;
``python -m senex_scale.lab.deployment build`` builds (or finds) the images alone.

::

    host (root)                        the lab (systemd-nspawn, the host's network)
    build_images()  ---podman build--->  STORE: senex-trader:KEY, senex-services:KEY
      archives in CACHE                  (a storage of its own: the build cache)
    Deployment.install()  ---------->  rendered files at their MANIFEST install paths
                                       system scope (/run/containers/systemd): postgres,
                                         redis (rendered .container), senex-pgbouncer,
                                         senex-nginx (the lab's own)
                                       user "senex" (rootless, lingering): django@N,
                                         celery-worker*@N (rendered .container),
                                         haproxy-web.service (rendered)
    Deployment.start()  ------------>  systemctl [--user] start ...; roles.sql; migrate
    Deployment.install_controller()    the rendered senex-scale.service (user), its policy
    Deployment.remove()  ----------->  all of it gone (also an interrupted run's leftovers)

Where the lab differs from a production host, and the host-level settings that bridge it
(each one is written by ``install`` and undone by ``remove``; the rendered files are used as
they are, with Quadlet drop-ins ``NAME.container.d/50-hostlab.conf`` beside them):

- cgroup v1 only on this machine: Podman cannot make a container's cgroups inside the lab,
  so every container gets ``PodmanArgs=--cgroups=disabled`` (and no memory limit takes
  effect).
- No bridge networks: netavark must write sysctls (``/proc/sys`` is read-only under
  systemd-nspawn, and the lab shares the host's network namespace). The application's
  containers use ``Network=pasta`` instead of the rendered ``senex_net.network``: each has
  its own network namespace and ``PublishPort=127.0.0.1:${SENEX_PORT}:8000`` works as
  rendered; pasta maps ``LOOPBACK`` to the lab's loopback, where PgBouncer and Redis listen.
  pasta (Debian's ``passt``) is not in the lab's recipe: it is copied out of the services
  image into ``/opt/senex-deploy/bin`` (the user's ``helper_binaries_dir``), and
  ``/dev/net/tun`` is made usable by users (mode 0666, as on a normal host).
- No ``uidmap`` (``newuidmap``) in the lab: rootless Podman maps the user's uid alone (root in
  the container; ``ignore_chown_errors``). That is enough for Daphne and Celery, not for
  PostgreSQL (refuses to run as root, needs its own uid), nginx or PgBouncer: the data tier
  and the edge run in system scope (rootful, ``Network=host``).
- nginx and PgBouncer are host packages in the render (no unit): the lab has neither, so they
  run from the services image under the lab's own Quadlet units, on the rendered files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.lab.base import LabError
from senex_scale.runtimes.transport import Completed, NsenterTransport, run

REPO = Path(__file__).resolve().parents[3]
LAB = Path(os.environ.get("SENEX_HOSTLAB_DIR", "/var/cache/senex-scale/hostlab"))
CACHE = Path(os.environ.get("SENEX_DEPLOYMENT_CACHE", "/var/cache/senex-scale/deployment"))
"""The image archives and their stamp (beside the lab's cache, kept between runs)."""
BASE_IMAGE = "localhost/senex-hostlab:latest"
APP_IMAGE = "localhost/senex-trader"
SERVICES_IMAGE = "localhost/senex-services"
TAG = "hostlab"
"""The tag the inventory names (examples/hostlab-inventory.toml); the built images also carry
their cache key as a tag."""
USER = "senex"
LOOPBACK = "169.254.1.3"
"""The lab's loopback as the application's containers see it (pasta --map-host-loopback)."""
PASTA = f"pasta:--map-host-loopback,{LOOPBACK},-a,10.0.2.100,-n,24,-g,10.0.2.2"
"""The application's network. The container's own address is a private one: connections
forwarded from the lab's loopback reach the app from that address (pasta's default would be
192.0.2.2, TEST-NET, which the app's ``/ready/``, ``/metrics`` and ``/senex/websockets/``
refuse: they answer loopback and private networks only)."""
HELPERS = "/opt/senex-deploy/bin"
STATE = "/var/lib/senex-scale"
STORE = "/var/cache/senex-deploy/storage"
"""Root's Podman storage in the lab where the images are built and kept (the cache, with the
archives under ``CACHE``): not the lab's own /var/lib/containers, which ``lab.machines``
copies for every machine it boots (280 MB; the two images would add 1.7 GB to each copy).
A deployment loads the services image into the default storage while it runs and removes it
afterwards: Podman's health-check timers (``podman healthcheck run ID``, the ``Notify=healthy``
of postgres.container) know only the default storage."""
PODMAN = ("podman", f"--root={STORE}", "--runroot=/run/senex-deploy/storage")
"""Root's podman on the build storage."""
VENVS = "/var/cache/senex-controller-venv"
"""The app image's venv for the controller, one copy per image key (``_controller_venv``);
readable by the service user (the build storage's directory is root's alone)."""
SYSTEM_UNITS = "/run/containers/systemd"
"""Root's Quadlet files of the deployment: the runtime directory (the lab's tmpfs), not /etc.
postgres.container and redis.container are rendered with ``WantedBy=default.target``, so the
generator enables them: in /etc (the lab's root filesystem, the lower layer of every
``lab.machines`` machine) they would start in a machine booted meanwhile, or in the lab's
next boot after an interrupted run."""
LEFTOVERS = (
    *(f"{SYSTEM_UNITS}/{name}.container" for name in ("postgres", "redis")),
    *(f"{SYSTEM_UNITS}/{name}.container.d" for name in ("postgres", "redis")),
    *(f"{SYSTEM_UNITS}/senex-{name}.container" for name in ("pgbouncer", "nginx")),
    "/etc/senex-scale",
    "/etc/pgbouncer",
    "/etc/nginx",
    "/etc/senex-trader",
    "/opt/senex-deploy",
    "/opt/venv",
    "/usr/local/bin/senex-scale",
    "/usr/local/sbin/senex-systemctl-user",
    STATE,
)
"""Everything ``install`` may write outside the user's home (removed, whoever wrote it)."""
DROPIN = "50-hostlab.conf"
WHEEL_PLATFORMS = (
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "linux_x86_64",
    "any",
)
BUILD_ARGS = (
    # chroot: no OCI runtime for RUN steps (no cgroups in the lab); the host's network for
    # apt; RLIMITs no higher than the lab's own (buildah's defaults are refused there)
    "--isolation=chroot",
    "--network=host",
    "--ulimit=nofile=20000:20000",
    "--ulimit=nproc=65536:65536",
)
APP_DROPIN = f"""\
# senex_scale.lab.deployment: what this lab needs beyond the rendered unit (cgroup v1; no
# bridge networks under systemd-nspawn: pasta, with the lab's loopback at {LOOPBACK})
[Container]
Network=
Network={PASTA}
PodmanArgs=--cgroups=disabled
"""
SYSTEM_DROPIN = """\
# senex_scale.lab.deployment: cgroup v1 in the lab; no bridge networks: the lab's own network
[Container]
Network=
Network=host
PodmanArgs=--cgroups=disabled
"""
PGBOUNCER_UNIT = """\
# senex_scale.lab.deployment: PgBouncer on the rendered /etc/pgbouncer files (a host package in
# production; the lab has none, so it runs from the services image)
[Unit]
Description=PgBouncer (rendered pgbouncer.ini)
After=postgres.service

[Container]
Image={image}
ContainerName=senex-pgbouncer
Network=host
User=postgres
Volume=/etc/pgbouncer:/etc/pgbouncer:ro
Exec=pgbouncer /etc/pgbouncer/pgbouncer.ini
PodmanArgs=--cgroups=disabled

[Service]
Restart=always
"""
NGINX_UNIT = """\
# senex_scale.lab.deployment: nginx on the rendered /etc/nginx files (a host package in
# production; the lab has none, so it runs from the services image)
[Unit]
Description=nginx (rendered nginx.conf)

[Container]
Image={image}
ContainerName=senex-nginx
Network=host
Volume=/etc/nginx/nginx.conf:/etc/nginx/nginx.conf:ro
Volume=/etc/nginx/conf.d:/etc/nginx/conf.d:ro
Exec=nginx -g "daemon off;"
PodmanArgs=--cgroups=disabled

[Service]
Restart=always
"""
USER_CONTAINERS_CONF = f"""\
# senex_scale.lab.deployment: rootless Podman in the lab (docs/hostlab.md)
[containers]
# systemd-nspawn refuses keyctl(2); /proc/sys is read-only (no ping_group_range sysctl)
keyring = false
default_sysctls = []

[engine]
events_logger = "file"
helper_binaries_dir = ["{HELPERS}", "/usr/libexec/podman", "/usr/lib/podman"]
"""
USER_STORAGE_CONF = """\
# senex_scale.lab.deployment: no newuidmap in the lab: the user's uid alone is mapped
[storage]
driver = "overlay"

[storage.options.overlay]
ignore_chown_errors = "true"
"""
CONTROLLER_POLICY = "/etc/senex-scale/policy.toml"
CONTROLLER_DROPIN = """\
# senex_scale.lab.deployment: the controller's secrets (password_env of its sources)
[Service]
EnvironmentFile=/etc/senex-scale/controller.env
"""
SYSTEMCTL_SHIM = """\
#!/bin/sh
# senex_scale.lab.deployment: systemctl as the service user (for the systemd runtime's
# `systemctl = ...` through nsenter, which enters the lab as root)
uid=$(id -u {user})
exec runuser -u {user} -- env XDG_RUNTIME_DIR=/run/user/$uid \\
    DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$uid/bus systemctl "$@"
"""


class DeploymentError(LabError):
    """A step of building, installing or starting the deployment failed (with its output)."""


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class Lab:
    """The running host lab: its root filesystem (seen from here) and its systemd."""

    root: Path = LAB / "rootfs"
    pid_file: Path = LAB / "run" / "systemd.pid"

    def exec(self, *argv: str, timeout: float = 120.0, stdin: str | None = None) -> Completed:
        """Run ``argv`` inside the lab, as root."""
        pid = int(self.pid_file.read_text().strip())
        return run(NsenterTransport(pid), argv, timeout, stdin=stdin)

    def check(self, *argv: str, timeout: float = 120.0, stdin: str | None = None) -> str:
        """``exec`` that must succeed: its stdout, or a ``DeploymentError`` with the output."""
        done = self.exec(*argv, timeout=timeout, stdin=stdin)
        if done.returncode != 0:
            raise DeploymentError(
                f"in the lab: {shlex.join(argv)}: exit {done.returncode}\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        return done.stdout

    def as_user(self, user: str, *argv: str, timeout: float = 120.0) -> Completed:
        """``argv`` as ``user`` with its systemd manager's environment (rootless Podman)."""
        return self.exec(*self._user_command(user, argv), timeout=timeout)

    def user_argv(self, user: str, *argv: str) -> list[str]:
        """The command line that runs ``argv`` from this host as ``as_user`` does (e.g. a
        source's ``podman_command``)."""
        pid = int(self.pid_file.read_text().strip())
        return NsenterTransport(pid).argv(self._user_command(user, argv))

    def _user_command(self, user: str, argv: Sequence[str]) -> list[str]:
        uid = self.uid(user)
        env = [
            f"XDG_RUNTIME_DIR=/run/user/{uid}",
            f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus",
            f"HOME=/home/{user}",
        ]
        return ["runuser", "-u", user, "--", "env", "-C", f"/home/{user}", *env, *argv]

    def check_user(self, user: str, *argv: str, timeout: float = 120.0) -> str:
        done = self.as_user(user, *argv, timeout=timeout)
        if done.returncode != 0:
            raise DeploymentError(
                f"in the lab as {user}: {shlex.join(argv)}: exit {done.returncode}\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        return done.stdout

    def uid(self, user: str) -> int:
        return int(self.check("id", "-u", user).strip())

    def path(self, inside: str) -> Path:
        """A path of the lab's file system as seen from here."""
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644, owner: str = "root") -> None:
        """Write a file into the lab (its directories made), then give it to ``owner``. Under
        /run (the lab's own tmpfs, not its root filesystem) through a command in the lab."""
        if inside.startswith("/run/"):
            script = 'mkdir -p "$(dirname "$1")" && cat >"$1" && chmod "$2" "$1"'
            self.check("sh", "-c", script, "sh", inside, f"{mode:o}", stdin=text)
            if owner != "root":
                self.check("chown", owner, inside)
            return
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
        target.chmod(mode)
        if owner != "root":
            self.check("chown", owner, inside)


# --------------------------------------------------------------------------- the images


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        parts = set(path.relative_to(root).parts)
        skipped = "__pycache__" in parts or any(p.endswith(".egg-info") for p in parts)
        if path.is_file() and not skipped and path.suffix != ".pyc":
            yield path


def image_key(lab: Lab, repo: Path = REPO) -> str:
    """The cache key of the images: the Containerfile, the app, this package's sources and
    dependencies (pyproject.toml) and the lab's base image. 16 hex digits."""
    digest = hashlib.sha256()
    base = lab.check("podman", "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).strip()
    digest.update(base.encode())
    inputs = [repo / "demo" / "Containerfile", repo / "pyproject.toml", repo / "README.md"]
    inputs += list(_files(repo / "src" / "senex_scale"))
    inputs += list(_files(repo / "demo" / "senextrader"))
    for path in inputs:
        digest.update(str(path.relative_to(repo)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def wheelhouse(out: Path, repo: Path = REPO) -> list[str]:
    """Every wheel ``senex-scale[django]`` needs on the lab's CPython 3.13 (x86_64), and pip's
    own (it runs from its wheel in the build): this package built from a copy of its sources
    (the tree is shared: nothing is written into it), the rest downloaded with pip here."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="senex-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(repo / name, src / name)
        shutil.copytree(
            repo / "src",
            src / "src",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        _host([*pip, "wheel", "--no-deps", "-w", str(out), str(src)], "pip wheel senex-scale")
    wheels = sorted(out.glob("senex_scale-*.whl"))
    if not wheels:
        raise DeploymentError(f"pip wheel made no senex_scale wheel in {out}")
    target = [f"--platform={p}" for p in WHEEL_PLATFORMS]
    target += ["--python-version=3.13", "--implementation=cp", "--abi=cp313", "--abi=abi3"]
    target += ["--abi=none", "--only-binary=:all:"]
    requirement = f"senex-scale[django] @ {wheels[-1].as_uri()}"
    _host(
        [*pip, "download", "-d", str(out), *target, requirement, "pip"],
        "pip download (CPython 3.13 wheels)",
    )
    return sorted(p.name for p in out.glob("*.whl"))


def _base_in_store(lab: Lab) -> None:
    """The lab's base image copied into the deployment's storage (when it is not that one)."""
    inspect = ("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE)
    want = lab.check("podman", *inspect).strip()
    have = lab.exec(*PODMAN, *inspect)
    if have.returncode == 0 and have.stdout.strip() == want:
        return
    saved = "/var/tmp/senex-deploy-base.tar"
    try:
        lab.check("podman", "save", "--quiet", "-o", saved, BASE_IMAGE, timeout=600)
        lab.check(*PODMAN, "load", "--quiet", "-i", saved, timeout=600)
    finally:
        lab.path(saved).unlink(missing_ok=True)


def _host(argv: list[str], what: str, timeout: float = 900.0) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise DeploymentError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


@dataclass(frozen=True)
class Images:
    """The two images in the lab's root storage, and what making them took."""

    key: str
    app: str
    services: str
    built: bool
    """False: found in the cache (the lab's storage), nothing rebuilt."""
    seconds: float
    archive: Path
    """The app image as a ``podman save`` archive (loaded into the service user's storage)."""
    services_archive: Path
    """The services image's archive (loaded into root's default storage while deployed)."""


def build_images(lab: Lab, repo: Path = REPO, *, log: Callable[[str], None] = print) -> Images:
    """The app and services images of ``demo/Containerfile``, built inside the lab from its
    base image unless images of this key are there already (and the app's archive under
    ``CACHE``). Older keys' images and archives are removed."""
    started = time.monotonic()
    key = image_key(lab, repo)
    app, services = f"{APP_IMAGE}:{key}", f"{SERVICES_IMAGE}:{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"senex-trader-{key}.tar"
    services_archive = CACHE / f"senex-services-{key}.tar"
    cached = all(
        lab.exec(*PODMAN, "image", "exists", image).returncode == 0 for image in (app, services)
    )
    if cached and archive.is_file() and services_archive.is_file():
        for image, name in ((app, APP_IMAGE), (services, SERVICES_IMAGE)):
            lab.check(*PODMAN, "tag", image, f"{name}:{TAG}")
        log(f"deployment images {key}: cached")
        seconds = time.monotonic() - started
        return Images(key, app, services, False, seconds, archive, services_archive)
    _base_in_store(lab)
    context_inside = f"/var/tmp/senex-deploy-build-{key}"
    context = lab.path(context_inside)
    shutil.rmtree(context, ignore_errors=True)
    try:
        context.mkdir(parents=True)
        shutil.copy2(repo / "demo" / "Containerfile", context / "Containerfile")
        shutil.copytree(
            repo / "demo" / "senextrader",
            context / "senextrader",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        wheels = wheelhouse(context / "wheels", repo)
        log(f"deployment images {key}: building ({len(wheels)} wheels)")
        for target, image, name in (
            ("app", app, APP_IMAGE),
            ("services", services, SERVICES_IMAGE),
        ):
            lab.check(
                *PODMAN, "build", *BUILD_ARGS, f"--target={target}", "-t", image,
                "-t", f"{name}:{TAG}", context_inside, timeout=1800,
            )  # fmt: skip
        for image, path in ((app, archive), (services, services_archive)):
            saved = f"/var/tmp/{path.name}"
            lab.check(*PODMAN, "save", "--quiet", "-o", saved, image, timeout=600)
            tmp = path.with_suffix(".part")
            shutil.move(lab.path(saved), tmp)
            tmp.rename(path)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    for old in [*CACHE.glob("senex-trader-*.tar"), *CACHE.glob("senex-services-*.tar")]:
        if old not in (archive, services_archive):
            old.unlink(missing_ok=True)
    for name in (APP_IMAGE, SERVICES_IMAGE):
        listed = lab.check(*PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}}", name)
        for image in listed.split():
            if image not in (f"{name}:{key}", f"{name}:{TAG}"):
                lab.exec(*PODMAN, "rmi", image)
    lab.exec(*PODMAN, "image", "prune", "-f")
    seconds = time.monotonic() - started
    (CACHE / "built").write_text(json.dumps({"key": key, "seconds": round(seconds, 1)}) + "\n")
    log(f"deployment images {key}: built in {seconds:.0f} s")
    return Images(key, app, services, True, seconds, archive, services_archive)


# --------------------------------------------------------------------------- the deployment


def random_secrets() -> dict[str, str]:
    """The inventory's secrets (examples/hostlab-inventory.toml), fresh for one run."""
    names = ("DB", "MONITOR", "REPLICATION", "REDIS")
    return {f"SENEX_{n}_PASSWORD": secrets.token_hex(12) for n in names}


def render(inventory: Path, out: Path, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """``senex-scale render`` of ``inventory`` into ``out`` (a process: as an operator runs
    it, with the secrets in its environment); the manifest's files."""
    argv = [sys.executable, "-m", "senex_scale", "render", "--inventory", str(inventory)]
    argv += ["--out", str(out)]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=120, env={**os.environ, **env}
    )
    if done.returncode != 0:
        raise DeploymentError(f"senex-scale render failed ({done.returncode}):\n{done.stderr}")
    files: list[dict[str, Any]] = json.loads((out / "MANIFEST.json").read_text())["files"]
    return files


@dataclass
class Deployment:
    """The rendered files of one host installed in the lab, started, and removed again."""

    lab: Lab
    out: Path
    """The render output (``OUT/MANIFEST.json``, ``OUT/HOST/...``)."""
    images: Images
    env: Mapping[str, str]
    """The secrets the render read (the env file and the roles need them too)."""
    host: str = "lab"
    user: str = USER
    web_pools: tuple[str, ...] = ("django",)
    worker_pools: tuple[str, ...] = ("celery-worker-trading", "celery-worker")
    installed: list[str] = field(default_factory=list)
    """Paths written into the lab (removed by ``remove``)."""
    system_units: list[str] = field(default_factory=list)
    _tun_mode: str | None = None

    # ------------------------------------------------------------------ install

    def files(self) -> list[dict[str, Any]]:
        doc = json.loads((self.out / "MANIFEST.json").read_text())
        return [f for f in doc["files"] if f["host"] == self.host]

    def _put(self, inside: str, text: str, mode: int = 0o644, owner: str = "root") -> None:
        self.lab.write(inside, text, mode, owner)
        self.installed.append(inside)

    def install(self) -> None:
        """The service user, the host-level settings (module docstring), every rendered file
        at its manifest install path, the lab's units for PgBouncer and nginx, the app's
        environment file and the PostgreSQL password secret; systemd reloaded. What an
        interrupted run left is removed first."""
        self.remove()
        self._make_user()
        home = f"/home/{self.user}"
        self._put(
            f"{home}/.config/containers/containers.conf", USER_CONTAINERS_CONF, owner=self.user
        )
        self._put(f"{home}/.config/containers/storage.conf", USER_STORAGE_CONF, owner=self.user)
        services = self._archive_inside(self.images.services_archive)
        self.lab.check("podman", "load", "--quiet", "-i", services, timeout=600)
        self.lab.check("podman", "tag", self.images.services, f"{SERVICES_IMAGE}:{TAG}")
        self._tun_mode = self.lab.check("stat", "-c", "%a", "/dev/net/tun").strip()
        self.lab.check("chmod", "0666", "/dev/net/tun")
        self.lab.check("mkdir", "-p", HELPERS)
        self.installed.append("/opt/senex-deploy")
        self.lab.check(
            "podman", "run", "--rm", "--cgroups=disabled", "--network=host",
            "-v", f"{HELPERS}:/out", self.images.services,
            "sh", "-c", "cp -a /usr/bin/pasta /usr/bin/pasta.avx2 /out/",
        )  # fmt: skip
        self._put(
            "/usr/local/sbin/senex-systemctl-user", SYSTEMCTL_SHIM.format(user=self.user), 0o755
        )
        self.lab.check("install", "-d", "-o", self.user, "-m", "0755", STATE)
        self.installed.append(STATE)
        postgres_uid = self.lab.check(
            "podman", "run", "--rm", "--cgroups=disabled", "--network=host",
            "--entrypoint=id", self.images.services, "-u", "postgres",
        ).strip()  # fmt: skip
        for entry in self.files():
            self._install_file(entry, postgres_uid)
        for pool in (*self.web_pools, *self.worker_pools):
            self._put(
                f"{home}/.config/containers/systemd/{pool}@.container.d/{DROPIN}",
                APP_DROPIN,
                owner=self.user,
            )
        for unit in ("postgres", "redis"):
            self._put(f"{SYSTEM_UNITS}/{unit}.container.d/{DROPIN}", SYSTEM_DROPIN)
        self._put(
            f"{SYSTEM_UNITS}/senex-pgbouncer.container",
            PGBOUNCER_UNIT.format(image=self.images.services),
        )
        self._put(
            f"{SYSTEM_UNITS}/senex-nginx.container",
            NGINX_UNIT.format(image=self.images.services),
        )
        self._put("/etc/senex-trader/env", self.app_env(), 0o640)
        self.lab.check("chgrp", self.user, "/etc/senex-trader/env")
        self.installed.append("/etc/senex-trader")
        self.lab.exec("podman", "secret", "rm", "senex-postgres-password")
        self.lab.check(
            "podman",
            "secret",
            "create",
            "senex-postgres-password",
            "-",
            stdin=secrets.token_hex(16),
        )
        self.lab.check("chown", "-R", f"{self.user}:{self.user}", f"{home}/.config")
        self.lab.check("systemctl", "daemon-reload")
        self.lab.check_user(
            self.user,
            "podman",
            "load",
            "--quiet",
            "-i",
            self._archive_inside(self.images.archive),
            timeout=600,
        )
        self.lab.check_user(self.user, "podman", "tag", self.images.app, f"{APP_IMAGE}:{TAG}")
        self.lab.check_user(self.user, "systemctl", "--user", "daemon-reload")

    def _archive_inside(self, archive: Path) -> str:
        """An image archive, hard-linked (or copied) into the lab's /var/tmp (readable)."""
        inside = f"/var/tmp/{archive.name}"
        target = self.lab.path(inside)
        if not target.exists():
            try:
                os.link(archive, target)
            except OSError:
                shutil.copy2(archive, target)
        target.chmod(0o644)
        self.installed.append(inside)
        return inside

    def _make_user(self) -> None:
        """The service user with lingering (its systemd manager runs without a login); a
        leftover of an interrupted run is removed first. No subordinate ids (no newuidmap)."""
        self._remove_user()
        self.lab.check("useradd", "-m", "-s", "/bin/bash", self.user)
        self.lab.check("sed", "-i", f"/^{self.user}:/d", "/etc/subuid", "/etc/subgid")
        self.lab.check("loginctl", "enable-linger", self.user)
        uid = self.lab.uid(self.user)
        deadline = time.monotonic() + 30
        while (
            self.lab.exec("systemctl", "is-active", f"user@{uid}.service").stdout.strip()
            != "active"
        ):
            if time.monotonic() > deadline:
                raise DeploymentError(f"user@{uid}.service (the {self.user} manager) did not start")
            time.sleep(0.2)

    def _install_file(self, entry: Mapping[str, Any], postgres_uid: str) -> None:
        """One rendered file at its install path: ``~`` is the service user's home (user
        scope); PostgreSQL and Redis units go to system scope (see the module docstring)."""
        text = (self.out / entry["path"]).read_text()
        mode = int(entry["mode"], 8)
        install: str = entry["install"]
        name = Path(install).name
        if entry["kind"] == "quadlet":
            if name.endswith(".network"):
                return  # no bridge networks in the lab: the drop-ins replace it with pasta
            if name in ("postgres.container", "redis.container"):
                self._put(f"{SYSTEM_UNITS}/{name}", text, mode)
                return
        if install.startswith("~/"):
            self._put(f"/home/{self.user}/{install[2:]}", text, mode, owner=self.user)
            return
        if entry["kind"] == "nginx" and name == "senex.conf":
            # [nginx] listen is a port (every address): the lab shares the host's network,
            # so the site listens on loopback only (docs/hostlab.md)
            text = re.sub(r"(?m)^(\s*listen )(\d+);", r"\g<1>127.0.0.1:\2;", text)
        owner = "root"
        if entry["kind"] == "pgbouncer":
            owner = postgres_uid
        elif install.startswith(STATE + "/"):
            owner = self.user
        self._put(install, text, mode, owner=owner)

    def app_env(self) -> str:
        """The application's environment file: PgBouncer and Redis on the lab's loopback as
        the containers reach it (``LOOPBACK``)."""
        lines = {
            "SENEX_SECRET_KEY": secrets.token_hex(32),
            "SENEX_DATABASE_URL": f"postgresql://senex_user@{LOOPBACK}:6432/senextrader",
            "SENEX_DATABASE_PASSWORD": self.env["SENEX_DB_PASSWORD"],
            "SENEX_REDIS_URL": f"redis://:{self.env['SENEX_REDIS_PASSWORD']}@{LOOPBACK}:6379/0",
            "SENEX_ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    # ------------------------------------------------------------------ start

    def system(self, *args: str, timeout: float = 300.0) -> str:
        return self.lab.check("systemctl", *args, timeout=timeout)

    def user_systemctl(self, *args: str, timeout: float = 300.0) -> str:
        return self.lab.check_user(self.user, "systemctl", "--user", *args, timeout=timeout)

    def start(
        self, *, web: int = 2, workers: int = 1, log: Callable[[str], None] = print
    ) -> dict[str, float]:
        """The data tier, PgBouncer (roles applied, then the app's migrations), nginx, the web
        HAProxy and ``web`` and ``workers`` instances of each pool; seconds per step."""
        took: dict[str, float] = {}

        def step(name: str, action: Callable[[], object]) -> None:
            started = time.monotonic()
            action()
            took[name] = round(time.monotonic() - started, 1)
            log(f"deployment: {name} in {took[name]} s")

        step("postgres + redis", lambda: self.system("start", "postgres.service", "redis.service"))
        self.system_units += ["postgres.service", "redis.service"]
        step("roles.sql", self._apply_roles)
        step("pgbouncer", lambda: self.system("start", "senex-pgbouncer.service"))
        self.system_units.append("senex-pgbouncer.service")
        step("migrate", self._migrate)
        step("nginx", lambda: self.system("start", "senex-nginx.service"))
        self.system_units.append("senex-nginx.service")
        step("haproxy-web", lambda: self.user_systemctl("start", "haproxy-web.service"))
        for pool in self.web_pools:
            units = [f"{pool}@{n}.service" for n in range(1, web + 1)]
            step(f"{pool} 1..{web}", functools.partial(self.user_systemctl, "start", *units))
        for pool in self.worker_pools:
            units = [f"{pool}@{n}.service" for n in range(1, workers + 1)]
            step(f"{pool} 1..{workers}", functools.partial(self.user_systemctl, "start", *units))
        return took

    def _apply_roles(self) -> None:
        """``psql -f roles.sql`` on the primary (the rendered roles, database and secrets), as the
        rendered pg_hba.conf allows the superuser: ``local ... peer``; the file is root's, mode
        0600, so psql reads it on stdin."""
        self.lab.check(
            "podman", "exec", "-i", "--user=postgres", "senex-postgres", "psql",
            "-v", "ON_ERROR_STOP=1", "-q", "-f", "-",
            stdin=(self.out / self.host / "postgresql" / "roles.sql").read_text(),
        )  # fmt: skip

    def _migrate(self) -> None:
        """The app's migrations, once, as the service user with the app's environment."""
        self.lab.check_user(
            self.user, "podman", "run", "--rm", "--cgroups=disabled",
            f"--network={PASTA}", "--env-file=/etc/senex-trader/env",
            self.images.app.replace(f":{self.images.key}", f":{TAG}"),
            "python", "manage.py", "migrate", "--noinput", timeout=300,
        )  # fmt: skip

    # ------------------------------------------------------------------ the controller

    def install_controller(self, policy: str) -> None:
        """The controller deployed as rendered: ``senex-scale.service`` of the service user
        (installed with the other files) running ``/usr/local/bin/senex-scale`` (the app
        image's venv, copied out: the lab's Python is the image's) on ``policy`` at
        ``/etc/senex-scale/policy.toml``; its secrets in an environment file of a drop-in."""
        venv = self._controller_venv()
        opt = self.lab.path("/opt/venv")
        opt.unlink(missing_ok=True)
        opt.symlink_to(venv)
        self.installed.append("/opt/venv")
        link = self.lab.path("/usr/local/bin/senex-scale")
        link.unlink(missing_ok=True)
        link.symlink_to("/opt/venv/bin/senex-scale")
        self.installed.append("/usr/local/bin/senex-scale")
        self._put(CONTROLLER_POLICY, policy, 0o640)
        self._put("/etc/senex-scale/controller.env", self.controller_env(), 0o640)
        self.lab.check("chgrp", self.user, CONTROLLER_POLICY, "/etc/senex-scale/controller.env")
        home = f"/home/{self.user}"
        self._put(
            f"{home}/.config/systemd/user/senex-scale.service.d/{DROPIN}",
            CONTROLLER_DROPIN,
            owner=self.user,
        )
        self.lab.check("chown", "-R", f"{self.user}:{self.user}", f"{home}/.config")
        self.user_systemctl("daemon-reload")

    def _controller_venv(self) -> str:
        """The app image's venv copied out once per image key into ``VENVS`` (the lab's
        cache, kept like the build storage), where ``/opt/venv`` points. Deleting a venv is
        slow where the disk is mounted with online discard (minutes for its 24,000 files
        here), so it is not done on every ``remove``: the copies of older keys go when a new
        one is made, in the background (a transient unit of the lab's systemd)."""
        key = self.images.key
        inside = f"{VENVS}/{key}"
        if self.lab.path(inside).is_dir():
            return inside
        cache = self.lab.path(VENVS)
        if cache.is_dir():
            old = [f"{VENVS}/{p.name}" for p in cache.iterdir() if p.name != f".new-{key}"]
            if old:
                self.lab.exec("systemd-run", "--no-block", "--quiet", "rm", "-rf", *old)
        new = f"{VENVS}/.new-{key}"  # not the old ones' name: they are deleted meanwhile
        self.lab.check("mkdir", "-p", new)
        self.lab.check(
            *PODMAN, "run", "--rm", "--cgroups=disabled", "--network=host",
            "-v", f"{new}:/out", self.images.app, "cp", "-a", "/opt/venv", "/out/",
        )  # fmt: skip
        self.lab.check("mv", f"{new}/venv", inside)
        self.lab.check("rmdir", new)
        return inside

    def controller_env(self) -> str:
        """The controller's secrets: the broker's password (queue and memory sources) and the
        monitoring role's (the PostgreSQL source)."""
        names = ("SENEX_REDIS_PASSWORD", "SENEX_MONITOR_PASSWORD")
        return "".join(f"{name}={self.env[name]}\n" for name in names)

    def journal(self, *units: str, user: bool = False, lines: int = 60) -> str:
        """The journal of ``units`` (system, or the service user's manager)."""
        argv = ["journalctl", "--no-pager", "-n", str(lines)]
        for unit in units:
            argv += [f"_SYSTEMD_USER_UNIT={unit}"] if user else ["-u", unit]
        done = self.lab.exec(*argv)
        return done.stdout + done.stderr

    # ------------------------------------------------------------------ remove

    def remove(self) -> None:
        """Stop everything, delete the user (its units, containers and storage), the system
        units, volumes, secret and every file installed; the lab as it was. Also what an
        interrupted run left (``install`` calls it first)."""
        self._remove_user()
        known = ["senex-nginx.service", "senex-pgbouncer.service", "redis.service"]
        units = list(dict.fromkeys([*reversed(self.system_units), *known, "postgres.service"]))
        with contextlib.suppress(PermanentError, TemporaryError):
            self.lab.exec("systemctl", "stop", *units, timeout=180)
        for volume in ("senex-postgres-data", "senex-redis-data"):
            with contextlib.suppress(PermanentError, TemporaryError):
                self.lab.exec("podman", "volume", "rm", "-f", volume)
        with contextlib.suppress(PermanentError, TemporaryError):
            self.lab.exec("podman", "secret", "rm", "senex-postgres-password")
            services = (self.images.services, f"{SERVICES_IMAGE}:{TAG}")
            self.lab.exec("podman", "rmi", "--ignore", *services, timeout=300)
        home = f"/home/{self.user}/"
        for inside in [*reversed(self.installed), *LEFTOVERS]:
            if inside.startswith(home):
                continue  # gone with the user
            if inside.startswith("/run/"):
                with contextlib.suppress(PermanentError, TemporaryError):
                    self.lab.exec("rm", "-rf", inside)
                continue
            target = self.lab.path(inside)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        self.installed.clear()
        with contextlib.suppress(PermanentError, TemporaryError):
            self.lab.exec("systemctl", "daemon-reload")
            self.lab.exec("systemctl", "reset-failed", *units)
        if self._tun_mode is not None:
            with contextlib.suppress(PermanentError, TemporaryError):
                self.lab.exec("chmod", self._tun_mode, "/dev/net/tun")

    def _remove_user(self) -> None:
        if self.lab.exec("id", "-u", self.user).returncode != 0:
            return
        uid = self.lab.uid(self.user)
        # rootless Podman's pause process (it holds the user namespace) outlives the manager
        # when a command outside it (podman load, the migration) started it
        pause = self.lab.exec("cat", f"/run/user/{uid}/libpod/tmp/pause.pid").stdout.strip()
        with contextlib.suppress(PermanentError, TemporaryError):
            self.lab.exec("loginctl", "disable-linger", self.user)
            self.lab.exec("systemctl", "stop", f"user@{uid}.service", timeout=180)
        if pause.isdigit():
            owner = self.lab.exec("stat", "-c", "%u", f"/proc/{pause}").stdout.strip()
            if owner == str(uid):
                self.lab.exec("kill", "-KILL", pause)
        self.lab.exec("userdel", "-r", "-f", self.user)


INVENTORY = REPO / "examples" / "hostlab-inventory.toml"
PORTS = (5432, 6379, 6432, 7999, 8000, *range(8001, 8013), 9308)
"""The inventory's ports on the host's loopback (the lab shares its network)."""


def busy_ports(ports: tuple[int, ...] = PORTS) -> list[int]:
    """Those of ``ports`` something on this host's loopback already listens on."""
    import socket

    busy = []
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def pools_running(deployment: Deployment, pool: str) -> list[int]:
    """The instance numbers of ``pool`` the user's manager has active."""
    done = deployment.lab.as_user(
        deployment.user, "systemctl", "--user", "list-units", "--plain", "--no-legend",
        "--state=active", f"{pool}@*.service",
    )  # fmt: skip
    numbers = []
    for line in done.stdout.splitlines():
        unit = line.split()[0] if line.split() else ""
        middle = unit.removeprefix(f"{pool}@").removesuffix(".service")
        if middle.isdigit():
            numbers.append(int(middle))
    return sorted(numbers)


def main(argv: list[str] | None = None) -> int:
    """``python -m senex_scale.lab.deployment build``: the images, built or found in the cache
    (the lab must be up: ``scripts/hostlab up``); prints the key. For CI's cache warm-up."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["build"]:
        print("usage: python -m senex_scale.lab.deployment build", file=sys.stderr)
        return 2
    lab = Lab()
    if not lab.pid_file.is_file():
        print(f"the host lab is not running ({lab.pid_file}): scripts/hostlab up", file=sys.stderr)
        return 1
    images = build_images(lab)
    print(images.key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
