"""The host lab for the systemd runtime's tests: a real systemd, Podman and Quadlet.

Once per session ``scripts/hostlab up`` (which builds the lab first when it is not cached, and
installs debootstrap and systemd-container then): a Debian 13 systemd in systemd-nspawn on the
host's network. Exit 75 from the script means this machine cannot run the lab (not root, no
network): the tests skip with its message; any other failure fails them. A lab that was
already running is left running; one the session started is shut down at its end.

Then a Quadlet template ``senex-web@.container`` in the lab: Podman runs the lab's own root
filesystem as an image (``localhost/senex-hostlab``) with ``Network=host``, so instance n's
tiny Python HTTP server (``/health/``, and ``/`` answering n) listens on the host's loopback
at BASE + n. systemd learns the template through ``SystemdRuntime.daemon_reload()``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from senex_scale.lab import HAProxy, Nginx, free_port, free_port_range
from senex_scale.lab.haproxy import haproxy_binary
from senex_scale.lab.nginx import nginx_binary
from senex_scale.policy.models import Pool
from senex_scale.runtimes.systemd import SystemdRuntime
from senex_scale.runtimes.transport import Completed, NsenterTransport, run

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "hostlab"
LAB = Path(os.environ.get("SENEX_HOSTLAB_DIR", "/var/cache/senex-scale/hostlab"))
IMAGE = "localhost/senex-hostlab:latest"
MAX = 4
"""Longest wait for another test session's use of the lab to end."""
"""The pool's max: instances 1..MAX."""

APP = '''\
"""One instance of the hostlab pool: GET /health/ -> ok, GET / -> its number."""
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

base, n = int(sys.argv[1]), int(sys.argv[2])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/health/" else str(n).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", base + n), Handler)
# PID 1 of its container: SIGTERM has no default action there, so handle it (exit 0, and
# systemd records a clean stop rather than a failure after podman's SIGKILL).
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
'''

QUADLET = """\
[Unit]
Description=senex-scale hostlab web instance %i

[Container]
Image={image}
Network=host
Volume={app_dir}:{app_dir}:ro
Exec={command}
# cgroup v1 host: Podman cannot create the container's cgroups inside the lab's systemd
PodmanArgs=--cgroups=disabled

[Service]
TimeoutStartSec=60
TimeoutStopSec=30
"""


@dataclass(frozen=True)
class HostLab:
    """The running lab: its root filesystem (seen from the host) and its systemd."""

    root: Path
    pid_file: Path

    def exec(self, *argv: str, timeout: float = 60) -> Completed:
        """Run ``argv`` inside the lab."""
        pid = int(self.pid_file.read_text())
        return run(NsenterTransport(pid), argv, timeout)


@pytest.fixture(scope="session")
def hostlab(hostlab_up: Path) -> HostLab:
    """The running host lab (``hostlab_up`` of tests/conftest.py boots it for the session)."""
    return HostLab(LAB / "rootfs", hostlab_up)


@dataclass(frozen=True)
class WebTemplate:
    """A Quadlet template installed in the lab and the pool that uses it."""

    lab: HostLab
    name: str
    """The template's name without "@" ("senex-web")."""
    base: int
    quadlet: Path

    @property
    def unit(self) -> str:
        return f"{self.name}@{{n}}.service"

    def pool(self) -> Pool:
        return Pool.model_validate(
            {"min": 1, "max": MAX, "port": f"{self.base} + n", "start_timeout": "30s"}
        )

    def runtime(self) -> SystemdRuntime:
        """The runtime through nsenter, the PID read from the lab's PID file."""
        options = {"unit": self.unit, "nsenter": str(self.lab.pid_file), "stop_timeout": "40s"}
        return SystemdRuntime("web", self.pool(), options)

    def journal(self) -> str:
        """The lab's journal of the template's units (for failure messages)."""
        done = self.lab.exec("journalctl", "--no-pager", "-n", "60", "-u", f"{self.name}@*")
        return done.stdout + done.stderr


def install_template(lab: HostLab, name: str, base: int, command: str = "") -> WebTemplate:
    """Write the app and ``NAME@.container`` into the lab (not yet reloaded); the container
    runs the app unless ``command`` says otherwise."""
    app_dir = f"/srv/{name}"
    (lab.root / app_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (lab.root / app_dir.lstrip("/") / "web.py").write_text(APP)
    quadlet = lab.root / "etc/containers/systemd" / f"{name}@.container"
    quadlet.parent.mkdir(parents=True, exist_ok=True)
    command = command or f"/usr/bin/python3 {app_dir}/web.py {base} %i"
    quadlet.write_text(QUADLET.format(image=IMAGE, app_dir=app_dir, command=command))
    return WebTemplate(lab, name, base, quadlet)


def remove_template(template: WebTemplate) -> None:
    """Stop every instance, delete the files, reload systemd, forget failed instances."""
    lab = template.lab
    with contextlib.suppress(Exception):
        lab.exec("systemctl", "stop", f"{template.name}@*.service", timeout=120)
    template.quadlet.unlink(missing_ok=True)
    with contextlib.suppress(Exception):
        lab.exec("systemctl", "daemon-reload")
        lab.exec("systemctl", "reset-failed", f"{template.name}@*.service")


class Templates:
    """Installs Quadlet templates in the lab for one test and removes them afterwards."""

    def __init__(self, lab: HostLab) -> None:
        self.lab = lab
        self.made: list[WebTemplate] = []

    def __call__(
        self, name: str, *, load: bool = True, ports: int = 12, command: str = ""
    ) -> WebTemplate:
        """``NAME@.container`` with a free port range of ``ports``; daemon-reload if ``load``."""
        template = install_template(self.lab, name, free_port_range(ports), command)
        self.made.append(template)
        if load:
            template.runtime().daemon_reload()
        return template

    def remove(self, template: WebTemplate) -> None:
        remove_template(template)
        if template in self.made:
            self.made.remove(template)


@pytest.fixture
def templates(hostlab: HostLab) -> Iterator[Templates]:
    """Make Quadlet templates in the lab; all of them removed after the test."""
    made = Templates(hostlab)
    try:
        yield made
    finally:
        for template in list(made.made):
            made.remove(template)


@pytest.fixture
def web_template(templates: Templates) -> WebTemplate:
    """``senex-web@.container`` installed and loaded (daemon-reload); removed afterwards."""
    return templates("senex-web")


# --------------------------------------------------------------------------- balancers

HAPROXY_SECTIONS = """\
defaults
    mode http
    retries 0
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s

frontend web_frontend
    bind 127.0.0.1:{port}
    default_backend web_backend

backend web_backend
    balance roundrobin
    option httpchk GET /health/
    http-check expect status 200
"""

NGINX_HTTP = """\
include {root}/upstream.conf;
server {
    listen 127.0.0.1:{port};
    location / {
        proxy_pass http://senex_web;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_next_upstream off;
    }
}
"""

EMPTY_UPSTREAM = """\
upstream senex_web {
    # senex-scale placeholder: nginx needs a server in an upstream
    server 127.0.0.1:9 down;
}
"""


@dataclass(frozen=True)
class Front:
    """A balancer on the host in front of the lab's pool, and the policy driving both."""

    kind: str
    address: str
    policy: Path
    reloaded: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    """Around a first change: afterwards no nginx worker from before it still accepts (an
    old worker knows only the placeholder upstream and would answer 502)."""

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def _toml(value: object) -> str:
    """JSON's spelling of strings, numbers and booleans is valid TOML."""
    return json.dumps(value)


def _policy(
    path: Path, template: WebTemplate, drain_timeout: str, balancer: dict[str, object]
) -> Path:
    lines = [
        "[pools.web]",
        "min = 1",
        f"max = {MAX}",
        f'port = "{template.base} + n"',
        'start_timeout = "30s"',
        f"drain_timeout = {_toml(drain_timeout)}",
        "",
        "[pools.web.runtime]",
        'type = "systemd"',
        f"unit = {_toml(template.unit)}",
        f"nsenter = {_toml(str(template.lab.pid_file))}",
        'stop_timeout = "40s"',
        "",
        "[pools.web.balancer]",
        *(f"{key} = {_toml(value)}" for key, value in balancer.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(params=["haproxy", "nginx"])
def front(
    request: pytest.FixtureRequest, web_template: WebTemplate, tmp_path: Path
) -> Iterator[Front]:
    """``senex_scale.lab.HAProxy`` or ``Nginx`` on the host with no member yet (nothing
    retries a failed request: ``retries 0``, ``proxy_next_upstream off``), and the policy of
    pool ``web``: the lab's systemd through nsenter, that balancer."""
    policy = tmp_path / "policy.toml"
    if request.param == "haproxy":
        with HAProxy(tmp_path / "haproxy", free_port(), conf=HAPROXY_SECTIONS) as haproxy:
            balancer: dict[str, object] = {
                "type": "haproxy",
                "socket": str(haproxy.socket),
                "backend": "web_backend",
                "config": str(haproxy.config),
                "haproxy": haproxy_binary(),
                "cookie": False,
                "server_options": "inter 200ms rise 1 fall 2",
            }
            yield Front("haproxy", haproxy.address, _policy(policy, web_template, "15s", balancer))
        return
    root = tmp_path / "nginx"
    root.mkdir()
    (root / "upstream.conf").write_text(EMPTY_UPSTREAM)
    with Nginx(root, free_port(), http=NGINX_HTTP) as nginx:
        balancer = {
            "type": "nginx",
            "upstream": "senex_web",
            "file": str(root / "upstream.conf"),
            "nginx": nginx_binary(),
            "conf": str(nginx.conf),
            "prefix": str(root),
            "ip_hash": False,
            "reload_timeout": "10s",
        }
        # nginx reports no per-server connections: drain waits drain_timeout, which must
        # cover the reload's switch-over (docs/balancer-nginx.md).
        policy = _policy(policy, web_template, "3s", balancer)
        yield Front("nginx", nginx.address, policy, nginx.reloaded)


# --------------------------------------------------------------------------- several machines

MACHINES = {"lb": 10, "web01": 11, "web02": 12}
"""The multi-host lab's machines and their addresses' last octet on 10.77.0.0/24."""


def say(config: pytest.Config, line: str) -> None:
    """A line on the terminal, whatever pytest captures."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture
def terminal(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``terminal(line)``: a line on the terminal, whatever pytest captures."""
    return lambda line: say(request.config, line)


@pytest.fixture(scope="module")
def machines(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """lb, web01 and web02 (``senex_scale.lab.machines``) booted in parallel for the module
    from the cached lab root filesystem (built first when missing: ``scripts/hostlab build``);
    all of it gone afterwards; boot and teardown times printed. Exit 75 of the build or
    ``MachinesUnavailableError``: this machine cannot run them (skip); any other failure
    fails."""
    import subprocess
    import time

    from senex_scale.lab.machines import MachinesUnavailableError, lab_machines

    built = subprocess.run(
        [str(SCRIPT), "build"], capture_output=True, text=True, check=False, timeout=1200
    )
    if built.returncode == 75:
        pytest.skip(f"no host lab here: {built.stderr.strip().splitlines()[-1]}")
    if built.returncode != 0:
        pytest.fail(f"scripts/hostlab build failed ({built.returncode}):\n{built.stderr[-3000:]}")
    started = time.monotonic()
    try:
        with lab_machines(MACHINES, wait=1800) as booted:
            each = ", ".join(f"{n} {m.boot_seconds:.1f} s" for n, m in booted.items())
            say(
                request.config,
                f"\nlab machines: {len(booted)} booted in parallel in "
                f"{time.monotonic() - started:.1f} s (bridge, copies, boot, ssh; each: {each})",
            )
            yield booted
            stopping = time.monotonic()
    except MachinesUnavailableError as exc:
        pytest.skip(str(exc))
    say(request.config, f"\nlab machines: teardown in {time.monotonic() - stopping:.1f} s")
