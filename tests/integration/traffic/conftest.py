"""A real pool behind a real balancer for the scale-under-traffic tests.

The servers are ``senex_scale.lab``'s (docs/lab.md). Once per session: ``Supervisord`` (the
venv's ``supervisord -n``) in a tmp dir with ``[program:web]`` declaring instances 1..4 as
docs/runtime-supervisor.md tells operators to (``numprocs = 4``, ``autostart=false``,
``/bin/sh -c 'exec ... $((BASE + %(process_num)d))'``). Each instance is a small Starlette app
under uvicorn: ``GET /health/`` 200, ``GET /`` its instance number, ``WS /ws`` echoes, inside
``WebSocketControl`` (``/senex/websockets/``: used only by a policy with ``websockets``). Per
test: one balancer in front (``HAProxy`` or ``Nginx``), its policy file (pool ``web``, runtime
supervisor, that balancer), and every instance stopped again afterwards.

Nothing in the path retries a failed request on the client's behalf, so a request the
sequence drops shows up: HAProxy has ``retries 0`` and nginx ``proxy_next_upstream off``.
uvicorn keeps idle connections (``--timeout-keep-alive 120``) longer than either balancer
keeps its idle upstream connections, so a proxy never reuses a connection the instance is just
closing (the classic keep-alive race, which is not what these tests are about).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from senex_scale import lab
from senex_scale.lab.haproxy import haproxy_binary, http_proxy
from senex_scale.lab.nginx import nginx_binary, proxy_http

INSTANCES = 4
"""``numprocs`` = the pool's max."""

APP = '''\
"""One instance of the traffic tests' pool: /health/, / (its number) and WS /ws (echo)."""
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from senex_scale.contrib.django.access import EndpointConfig
from senex_scale.contrib.django.websockets import WebSocketControl

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


app = WebSocketControl(
    Starlette(routes=[Route("/health/", health), Route("/", index), WebSocketRoute("/ws", echo)]),
    config=EndpointConfig.from_settings(None),
)
'''

UVICORN_OPTIONS = (
    "--host 127.0.0.1 --timeout-graceful-shutdown 30 --timeout-keep-alive 120 "
    "--ws websockets-sansio --lifespan off --no-access-log --log-level warning"
)

PROGRAM = """\
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

HAPROXY_CONF = http_proxy(retries=0)

NGINX_HTTP = proxy_http(next_upstream="off", websocket="/ws")

EMPTY_UPSTREAM = """\
upstream senex_web {
    # senex-scale placeholder: nginx needs a server in an upstream
    server 127.0.0.1:9 down;
}
"""


def _toml(value: Any) -> str:
    """A TOML value: JSON's spelling of strings, booleans and numbers is valid TOML."""
    return json.dumps(value)


# --------------------------------------------------------------------------- supervisord


class Supervisord(lab.Supervisord):
    """The lab's supervisord running pool ``web`` (port ``BASE + n``)."""

    def __init__(self, root: Path, base: int) -> None:
        (root / "app.py").write_text(APP)
        program = PROGRAM.format(
            root=root,
            python=sys.executable,
            base=base,
            instances=INSTANCES,
            options=UVICORN_OPTIONS,
        )
        super().__init__(root, programs=program)
        self.base = base

    def policy(
        self,
        path: Path,
        *,
        drain_timeout: str,
        balancer: dict[str, str | int | bool],
        websockets: dict[str, str | int | float | bool] | None = None,
    ) -> Path:
        """Write the policy of pool ``web`` (supervisor runtime, ``balancer``, and
        ``[pools.web.websockets]`` when given) to ``path``."""
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
        if websockets is not None:
            lines += ["", "[pools.web.websockets]"]
            lines += [f"{key} = {_toml(value)}" for key, value in websockets.items()]
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture(scope="session")
def supervisord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisord]:
    """supervisord answering on its socket; shut down (instances too) at the end."""
    with Supervisord(tmp_path_factory.mktemp("traffic-sv"), lab.free_port_range(INSTANCES)) as sv:
        yield sv


@pytest.fixture
def pool(supervisord: Supervisord) -> Iterator[Supervisord]:
    """The session's supervisord with every instance stopped, and stopped again afterwards."""
    supervisord.call("stopAllProcesses", True)
    yield supervisord
    if supervisord.alive:
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


@pytest.fixture
def haproxy_front(pool: Supervisord, tmp_path: Path) -> Iterator[Front]:
    """HAProxy with an empty ``backend web_backend``; the policy's balancer drives it."""
    haproxy = lab.HAProxy(tmp_path / "haproxy", conf=HAPROXY_CONF)
    policy = pool.policy(
        tmp_path / "policy.toml",
        drain_timeout="15s",
        balancer={
            "type": "haproxy",
            "socket": str(haproxy.socket),
            "backend": "web_backend",
            "config": str(haproxy.config),
            "haproxy": haproxy_binary(),
            "cookie": False,
            "server_options": "inter 200ms rise 1 fall 2",
        },
    )
    with haproxy:
        yield Front("haproxy", haproxy.port, policy, haproxy.log)


@pytest.fixture
def nginx_front(pool: Supervisord, tmp_path: Path) -> Iterator[Front]:
    """An nginx master (one worker) proxying to ``upstream senex_web`` in its own include file."""
    nginx = lab.Nginx(
        tmp_path / "nginx", http=NGINX_HTTP, worker_shutdown_timeout="30s", worker_connections=1024
    )
    nginx.root.mkdir()
    upstream_file = nginx.root / "upstream.conf"
    upstream_file.write_text(EMPTY_UPSTREAM)
    policy = pool.policy(
        tmp_path / "policy.toml",
        drain_timeout="4s",
        balancer={
            "type": "nginx",
            "upstream": "senex_web",
            "file": str(upstream_file),
            "nginx": nginx_binary(),
            "conf": str(nginx.conf),
            "prefix": str(nginx.root),
            "ip_hash": False,
            "reload_timeout": "10s",
        },
    )
    with nginx:
        yield Front("nginx", nginx.port, policy, nginx.log)
