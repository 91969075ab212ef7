"""A real nginx and small HTTP backends for the ``nginx`` balancer tests.

Once per session: three ``ThreadingHTTPServer`` backends on loopback ports BASE+1..BASE+3, each
answering its own instance number (``/slow`` answers after a pause), and one nginx master
(``daemon on``, one worker, everything under a tmp dir, ``-p`` that dir) whose main config
includes ``upstream.conf`` and proxies ``127.0.0.1:PORT`` to upstream ``senex_web``. Before each
test the upstream file is reset to the empty placeholder and nginx reloaded. nginx is stopped
(``-s quit``, then killed) and the backends shut down at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.policy.models import Pool
from senex_scale.testing import free_port, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UPSTREAM = "senex_web"
INSTANCES = (1, 2, 3)
SLOW = 1.5
"""Seconds a backend takes to answer ``/slow``."""


def main_config(tmp: Path, *, port: int, upstream_file: Path, pid: Path) -> str:
    """A whole nginx.conf that keeps every path under ``tmp``."""
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon on;
pid {pid};
error_log {tmp}/error.log;
worker_processes 1;
worker_shutdown_timeout 10s;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
    include {upstream_file};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{UPSTREAM};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(SLOW)
        body = str(self.server.instance).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Nginx:
    """The session's nginx master and what a balancer needs to drive it."""

    tmp: Path
    conf: Path
    upstream_file: Path
    pid_file: Path
    port: int
    base: int
    """Backend instance n listens on ``base + n``."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, tmp: Path, upstream_file: Path, pid: Path) -> str:
        """Another main config like this one's, for a balancer with its own files."""
        return main_config(tmp, port=self.port, upstream_file=upstream_file, pid=pid)

    def master(self) -> psutil.Process:
        return psutil.Process(int(self.pid_file.read_text()))

    def workers(self) -> set[int]:
        """Worker pids that still accept connections (not shutting down after a reload)."""
        pids = set()
        for child in self.master().children():
            try:
                if "shutting down" not in " ".join(child.cmdline()):
                    pids.add(child.pid)
            except psutil.Error:
                pass
        return pids

    def pool(self) -> Pool:
        return Pool.model_validate({"min": 0, "max": 10, "port": self.base})

    def options(self, **overrides: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "upstream": UPSTREAM,
            "file": str(self.upstream_file),
            "nginx": NGINX,
            "conf": str(self.conf),
            "prefix": str(self.tmp),
            "reload_timeout": "5s",
        }
        options.update(overrides)
        return options

    def balancer(self, **overrides: Any) -> NginxBalancer:
        return NginxBalancer("web", self.pool(), self.options(**overrides))

    def address(self, n: int) -> str:
        return f"127.0.0.1:{self.base + n}"

    def get(self, path: str = "/", timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def hits(self, count: int = 12) -> list[str]:
        """Bodies of ``count`` requests through nginx (a new connection each)."""
        bodies = []
        for _ in range(count):
            response = self.get()
            assert response.status_code == 200, response.text
            bodies.append(response.text)
        return bodies

    @contextlib.contextmanager
    def reloaded(self, timeout: float = 8.0) -> Iterator[None]:
        """Wait, after the body, until no worker from before it accepts connections."""
        before = self.workers()
        yield
        wait_until(lambda: not (before & self.workers()), timeout, "nginx to finish reloading")


def _start_backends() -> tuple[int, list[ThreadingHTTPServer]]:
    for _ in range(20):
        base = free_port() - 1
        servers: list[ThreadingHTTPServer] = []
        try:
            for n in INSTANCES:
                server = ThreadingHTTPServer(("127.0.0.1", base + n), _Handler)
                server.instance = n  # type: ignore[attr-defined]
                servers.append(server)
        except OSError:
            for server in servers:
                server.server_close()
            continue
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return base, servers
    pytest.fail("no free run of loopback ports for the backends")


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """The session's nginx, proxying to the backends through ``upstream.conf``."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed")
    base, backends = _start_backends()
    tmp = tmp_path_factory.mktemp("nginx")
    conf = tmp / "nginx.conf"
    upstream_file = tmp / "upstream.conf"
    pid_file = tmp / "nginx.pid"
    port = free_port()
    conf.write_text(main_config(tmp, port=port, upstream_file=upstream_file, pid=pid_file))
    server = Nginx(tmp, conf, upstream_file, pid_file, port, base)
    upstream_file.write_text(server.balancer().render([]))
    started = subprocess.run(
        [NGINX, "-c", str(conf), "-p", str(tmp)], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        for backend in backends:
            backend.shutdown()
            backend.server_close()
        pytest.fail(f"nginx did not start: {started.stderr}")
    try:
        wait_until(pid_file.exists, 5, "nginx's pid file")
        wait_until(lambda: _answers(server), 5, "nginx to listen")
        yield server
    finally:
        master: psutil.Process | None = None
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            master = server.master()
        subprocess.run(
            [NGINX, "-s", "quit", "-c", str(conf), "-p", str(tmp)],
            capture_output=True,
            check=False,
        )
        if master is not None:
            try:
                master.wait(timeout=10)
            except psutil.TimeoutExpired:
                with contextlib.suppress(psutil.Error):
                    for process in [master, *master.children()]:
                        process.send_signal(signal.SIGKILL)
        for backend in backends:
            backend.shutdown()
            backend.server_close()


def _answers(server: Nginx) -> bool:
    try:
        server.get(timeout=1)
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture
def nginx(nginx_server: Nginx) -> Nginx:
    """The session's nginx with an empty upstream (the placeholder), reloaded."""
    nginx_server.upstream_file.write_text(nginx_server.balancer().render([]))
    with nginx_server.reloaded():
        subprocess.run(
            [NGINX, "-s", "reload", "-c", str(nginx_server.conf), "-p", str(nginx_server.tmp)],
            check=True,
            capture_output=True,
        )
    return nginx_server
