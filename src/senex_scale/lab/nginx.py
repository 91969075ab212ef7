"""nginx on loopback: a master in the foreground (``daemon off``) under a prefix of its own.

The lab writes the main config (pid, error log, one worker, temp paths under ``root``) and
the caller gives what goes in its ``http {}`` block, with ``{port}`` and ``{root}`` filled
in. ``reload`` checks the config (``nginx -t``) and sends SIGHUP; ``reloaded()`` waits until
no worker from before a change still accepts connections. ``stop`` is SIGQUIT (requests in
flight finish, up to ``worker_shutdown_timeout``).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from senex_scale.lab.base import HOST, LabError, Server, binary, fill, running

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str:
    return binary("nginx", Path("/usr/sbin/nginx"))


def proxy_http(
    upstream: str = "senex_web",
    *,
    include: str = "{root}/upstream.conf",
    next_upstream: str | None = None,
    websocket: str | None = None,
) -> str:
    """An ``http`` for ``Nginx``: ``include`` (the file holding ``upstream NAME``, which a
    balancer owns) and a server on ``127.0.0.1:{port}`` proxying everything to ``upstream``
    over HTTP/1.1 with upstream keep-alive. ``next_upstream``: ``proxy_next_upstream``
    (``"off"`` lets no failed request be retried on another member). ``websocket``: a path
    (``"/ws"``) proxied with the Upgrade headers and a long read timeout."""
    retry = f"\n        proxy_next_upstream {next_upstream};" if next_upstream else ""
    text = f"""\
include {include};
server {{
    listen 127.0.0.1:{{port}};
    location / {{
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
        proxy_set_header Connection "";{retry}
    }}
"""
    if websocket:
        text += f"""\
    location {websocket} {{
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_read_timeout 1h;{retry}
    }}
"""
    return text + "}\n"


def main_config(
    root: Path,
    *,
    port: int,
    http: str,
    pid: Path | None = None,
    error_log: Path | None = None,
    worker_shutdown_timeout: str = "10s",
    worker_connections: int = 256,
) -> str:
    """A whole nginx.conf (``daemon off``) that keeps every path under ``root``."""
    temp = "\n".join(f"    {kind}_temp_path {root}/{kind}_temp;" for kind in TEMP_PATHS)
    body = "\n".join(
        f"    {line}" if line else "" for line in fill(http, port=port, root=root).splitlines()
    )
    return f"""daemon off;
pid {pid or root / "nginx.pid"};
error_log {error_log or root / "nginx.log"};
worker_processes 1;
worker_shutdown_timeout {worker_shutdown_timeout};
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
{temp}
{body}
}}
"""


class Nginx(Server):
    """One nginx master (and its worker) serving ``http`` on ``127.0.0.1:port``."""

    name = "nginx"
    stop_signal = signal.SIGQUIT
    stop_timeout = 30.0

    def __init__(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        http: str,
        worker_shutdown_timeout: str = "10s",
        worker_connections: int = 256,
    ) -> None:
        """``http``: the ``http {}`` block's content (``server``, ``upstream``, ``include``),
        listening on ``127.0.0.1:{port}``."""
        super().__init__(root, port)
        self.http = http
        self.worker_shutdown_timeout = worker_shutdown_timeout
        self.worker_connections = worker_connections

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def config(
        self,
        root: Path,
        *,
        port: int | None = None,
        http: str | None = None,
        pid: Path | None = None,
    ) -> str:
        """A main config like this one's for another ``root`` (and port, http, pid file)."""
        return main_config(
            root,
            port=self.port if port is None else port,
            http=self.http if http is None else http,
            pid=pid,
            worker_shutdown_timeout=self.worker_shutdown_timeout,
            worker_connections=self.worker_connections,
        )

    def test(self) -> None:
        """``nginx -t`` of the config as it is now; ``LabError`` with nginx's message if bad."""
        self._nginx("-t")

    def reload(self, timeout: float = 15.0) -> None:
        """Check the config, SIGHUP the master, wait until only new workers accept."""
        self.test()
        with self.reloaded(timeout):
            assert self._proc is not None
            self._proc.send_signal(signal.SIGHUP)

    def workers(self) -> set[int]:
        """Pids of the workers that accept connections (not those shutting down)."""
        if self._proc is None:
            return set()
        pids = set()
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self._proc.pid).children():
                with contextlib.suppress(psutil.Error):
                    if running(child) and "shutting down" not in " ".join(child.cmdline()):
                        pids.add(child.pid)
        return pids

    @contextlib.contextmanager
    def reloaded(self, timeout: float = 15.0) -> Iterator[None]:
        """Around something that reloads nginx (a balancer): afterwards wait until a new worker
        accepts and none from before does."""
        before = self.workers()
        yield
        deadline = time.monotonic() + timeout
        while True:
            now = self.workers()
            if now and not now & before:
                return
            if not self.alive:
                raise LabError(f"nginx on {self.address} exited in a reload; {self._log_tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"nginx on {self.address}: no new workers after {timeout:g}s")
            time.sleep(0.05)

    def _nginx(self, *args: str) -> None:
        argv = [nginx_binary(), *args, "-c", str(self.conf), "-p", str(self.root)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise LabError(f"nginx {' '.join(args)} failed:\n{done.stderr.strip()}")

    def _prepare(self) -> None:
        self.conf.write_text(self.config(self.root))

    def _argv(self) -> list[str]:
        return [nginx_binary(), "-c", str(self.conf), "-p", str(self.root)]

    def _ready(self) -> bool:
        if not self.workers():
            return False
        httpx.get(self.url, timeout=1)
        return True
