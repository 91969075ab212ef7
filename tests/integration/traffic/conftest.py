"""A real pool behind a real balancer for the scale-under-traffic tests.

Once per session: ``supervisord -n`` (the venv's) in a tmp dir with ``[program:web]`` declaring
instances 1..4 as docs/runtime-supervisor.md tells operators to (``numprocs = 4``,
``autostart=false``, ``/bin/sh -c 'exec ... $((BASE + %(process_num)d))'``). Each instance is
a small Starlette app under uvicorn: ``GET /health/`` 200, ``GET /`` its instance number,
``WS /ws`` echoes. Per test: one balancer in front (``haproxy -db`` as a child, or an nginx
master under a tmp prefix), its policy file (pool ``web``, runtime supervisor, that balancer),
and every instance stopped again afterwards.

Nothing in the path retries a failed request on the client's behalf, so a request the
sequence drops shows up: HAProxy has ``retries 0`` and nginx ``proxy_next_upstream off``.
uvicorn keeps idle connections (``--timeout-keep-alive 120``) longer than either balancer
keeps its idle upstream connections, so a proxy never reuses a connection the instance is just
closing (the classic keep-alive race, which is not what these tests are about).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from supervisor.xmlrpc import SupervisorTransport  # type: ignore[import-untyped]

from senex_scale.testing import wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
INSTANCES = 4
"""``numprocs`` = the pool's max."""
READY_TIMEOUT = 15.0

APP = '''\
"""One instance of the traffic tests' pool: /health/, / (its number) and WS /ws (echo)."""
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

INSTANCE = os.environ["SENEX_INSTANCE"]


async def health(request):
    return PlainTextResponse("ok")


async def index(request):
    return PlainTextResponse(INSTANCE)


async def echo(websocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[Route("/health/", health), Route("/", index), WebSocketRoute("/ws", echo)]
)
'''

UVICORN_OPTIONS = (
    "--host 127.0.0.1 --timeout-graceful-shutdown 30 --timeout-keep-alive 120 "
    "--ws websockets-sansio --lifespan off --no-access-log --log-level warning"
)

SUPERVISORD_CONF = """\
[unix_http_server]
file={root}/s.sock
chmod=0700

[supervisord]
nodaemon=true
pidfile={root}/supervisord.pid
logfile={root}/supervisord.log
childlogdir={root}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:web]
directory={root}
command=/bin/sh -c 'exec {python} -m uvicorn app:app --port $(({base} + %(process_num)d)) {options}'
process_name=%(program_name)s-%(process_num)d
numprocs={instances}
numprocs_start=1
environment=SENEX_INSTANCE="%(process_num)d"
autostart=false
autorestart=unexpected
startsecs=1
stopsignal=TERM
stopwaitsecs=10
redirect_stderr=true
stdout_logfile={root}/web-%(process_num)d.log
"""

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
    stats timeout 10s

defaults
    mode http
    retries 0
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    timeout http-keep-alive 10s

frontend web_frontend
    bind 127.0.0.1:{port}
    default_backend web_backend

backend web_backend
    balance roundrobin
    option httpchk GET /health/
    http-check expect status 200
"""

NGINX_CONF = """\
daemon on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
worker_processes 1;
worker_shutdown_timeout 30s;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    include {upstream_file};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://senex_web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
        }}
        location /ws {{
            proxy_pass http://senex_web;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_next_upstream off;
        }}
    }}
}}
"""

EMPTY_UPSTREAM = """\
upstream senex_web {
    # senex-scale placeholder: nginx needs a server in an upstream
    server 127.0.0.1:9 down;
}
"""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base(count: int) -> int:
    """A BASE with BASE+1..BASE+count free on loopback (below the ephemeral port range)."""
    for _ in range(200):
        base = random.randrange(20000, 32000, 10)
        if all(_port_free(base + n) for n in range(1, count + 1)):
            return base
    raise RuntimeError("no free port range")


def free_port() -> int:
    """A free loopback port below the ephemeral range (clients' ports cannot take it)."""
    return free_base(1) + 1


def _toml(value: Any) -> str:
    """A TOML value: JSON's spelling of strings, booleans and numbers is valid TOML."""
    return json.dumps(value)


# --------------------------------------------------------------------------- supervisord


@dataclass
class Supervisord:
    """The session's supervisord and the pool's port base."""

    root: Path
    proc: subprocess.Popen[bytes]
    base: int

    @property
    def url(self) -> str:
        return f"unix://{self.root}/s.sock"

    def call(self, method: str, *args: Any) -> Any:
        """``supervisor.METHOD(*args)`` over the XML-RPC API, for the fixtures' own calls."""
        transport = SupervisorTransport(None, None, self.url)
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1/RPC2", transport=transport)
        try:
            return getattr(proxy.supervisor, method)(*args)
        finally:
            transport.close()

    def logs(self) -> str:
        """The tails of supervisord's and the instances' logs, for failure messages."""
        parts = []
        for path in sorted(self.root.glob("*.log")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def policy(
        self, path: Path, *, drain_timeout: str, balancer: dict[str, str | int | bool]
    ) -> Path:
        """Write the policy of pool ``web`` (supervisor runtime, ``balancer``) to ``path``."""
        lines = [
            "[pools.web]",
            "min = 1",
            f"max = {INSTANCES}",
            f'port = "{self.base} + n"',
            'start_timeout = "20s"',
            f"drain_timeout = {_toml(drain_timeout)}",
            "",
            "[pools.web.runtime]",
            'type = "supervisor"',
            f"url = {_toml(self.url)}",
            'group = "web"',
            "",
            "[pools.web.balancer]",
            *(f"{key} = {_toml(value)}" for key, value in balancer.items()),
        ]
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture(scope="session")
def supervisord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisord]:
    """``supervisord -n`` answering on its socket; shut down (instances too) at the end."""
    root = tmp_path_factory.mktemp("traffic-sv")
    base = free_base(INSTANCES)
    (root / "app.py").write_text(APP)
    conf = root / "supervisord.conf"
    conf.write_text(
        SUPERVISORD_CONF.format(
            root=root,
            python=sys.executable,
            base=base,
            instances=INSTANCES,
            options=UVICORN_OPTIONS,
        )
    )
    binary = Path(sys.executable).with_name("supervisord")
    proc = subprocess.Popen(
        [str(binary), "-n", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sv = Supervisord(root, proc, base)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"supervisord exited ({proc.returncode}):\n{sv.logs()}")
            with contextlib.suppress(OSError):
                if sv.call("getState")["statename"] == "RUNNING":
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"supervisord does not answer on {sv.url}:\n{sv.logs()}")
            time.sleep(0.05)
        yield sv
    finally:
        if proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                sv.call("shutdown")
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for pid in children:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


@pytest.fixture
def pool(supervisord: Supervisord) -> Iterator[Supervisord]:
    """The session's supervisord with every instance stopped, and stopped again afterwards."""
    supervisord.call("stopAllProcesses", True)
    yield supervisord
    if supervisord.proc.poll() is None:
        supervisord.call("stopAllProcesses", True)


# --------------------------------------------------------------------------- balancers


@dataclass
class Front:
    """A balancer in front of the pool: where clients connect and the policy that drives it."""

    kind: str
    port: int
    policy: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def haproxy_front(pool: Supervisord, tmp_path: Path) -> Iterator[Front]:
    """``haproxy -db`` with an empty ``backend web_backend``; the policy's balancer drives it."""
    port = free_port()
    sock = tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CFG.format(sock=sock, port=port))
    log = tmp_path / "haproxy.log"
    policy = pool.policy(
        tmp_path / "policy.toml",
        drain_timeout="15s",
        balancer={
            "type": "haproxy",
            "socket": str(sock),
            "backend": "web_backend",
            "config": str(config),
            "haproxy": HAPROXY,
            "cookie": False,
            "server_options": "inter 200ms rise 1 fall 2",
        },
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    front = Front("haproxy", port, policy, log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"haproxy exited ({proc.returncode}):\n{front.log_tail()}")
            return sock.exists() and _listening(port)

        wait_until(ready, 10, "haproxy to listen")
        yield front
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def nginx_front(pool: Supervisord, tmp_path: Path) -> Iterator[Front]:
    """An nginx master (one worker) proxying to ``upstream senex_web`` in its own include file."""
    port = free_port()
    tmp = tmp_path / "nginx"
    tmp.mkdir()
    conf = tmp / "nginx.conf"
    upstream_file = tmp / "upstream.conf"
    upstream_file.write_text(EMPTY_UPSTREAM)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(NGINX_CONF.format(tmp=tmp, temp=temp, upstream_file=upstream_file, port=port))
    policy = pool.policy(
        tmp_path / "policy.toml",
        drain_timeout="4s",
        balancer={
            "type": "nginx",
            "upstream": "senex_web",
            "file": str(upstream_file),
            "nginx": NGINX,
            "conf": str(conf),
            "prefix": str(tmp),
            "ip_hash": False,
            "reload_timeout": "10s",
        },
    )
    front = Front("nginx", port, policy, tmp / "error.log")
    pid_file = tmp / "nginx.pid"
    started = subprocess.run(
        [NGINX, "-c", str(conf), "-p", str(tmp)], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"nginx did not start: {started.stderr}")
    try:
        wait_until(pid_file.exists, 10, "nginx's pid file")
        wait_until(lambda: _listening(port), 10, "nginx to listen")
        yield front
    finally:
        master: psutil.Process | None = None
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            master = psutil.Process(int(pid_file.read_text()))
        subprocess.run(
            [NGINX, "-s", "quit", "-c", str(conf), "-p", str(tmp)],
            capture_output=True,
            check=False,
            timeout=10,
        )
        if master is not None:
            try:
                master.wait(timeout=10)
            except psutil.TimeoutExpired:
                with contextlib.suppress(psutil.Error):
                    for process in [master, *master.children()]:
                        process.send_signal(signal.SIGKILL)
