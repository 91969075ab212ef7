"""HAProxy on loopback in master-worker mode (``haproxy -W``), with an admin socket.

The lab writes ``haproxy.cfg`` once, on the first start: a ``global`` section with the admin
socket (``ROOT/admin.sock``, mode 0600, level admin) and then the caller's sections, with
``{port}`` and ``{root}`` filled in. Later starts keep the file as it is, so what a balancer
persisted there survives a restart. ``reload`` is SIGUSR2 to the master; ``command`` talks to
the admin socket.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from senex_scale.lab.base import LabError, Server, binary, fill

GLOBAL = """\
global
    stats socket {socket} mode 600 level admin expose-fd listeners
    stats timeout 10s

"""


def http_proxy(
    backend: str = "web_backend",
    *,
    frontend: str = "web_frontend",
    health: str = "/health/",
    cookie: str | None = None,
    retries: int | None = None,
    client_timeout: str = "30s",
    server_timeout: str = "30s",
    balance: str = "roundrobin",
) -> str:
    """A ``conf`` for ``HAProxy``: HTTP mode, ``frontend`` on ``127.0.0.1:{port}`` and an
    empty ``backend`` (a balancer adds its servers; ``balance``: round-robin, or ``leastconn``
    for long-lived WebSockets) whose servers are checked with ``GET health``. ``cookie``:
    sticky sessions on that cookie; ``retries``: HAProxy's (0: a failed request is never sent
    again); WebSocket tunnels may stay open an hour."""
    defaults = ["mode http"]
    if retries is not None:
        defaults.append(f"retries {retries}")
    defaults += [
        "timeout connect 2s",
        f"timeout client {client_timeout}",
        f"timeout server {server_timeout}",
        "timeout tunnel 1h",
        "timeout http-keep-alive 10s",
    ]
    back = [f"balance {balance}"]
    if cookie is not None:
        back.append(f"cookie {cookie} insert indirect nocache")
    back += [f"option httpchk GET {health}", "http-check expect status 200"]
    sections = [
        ("defaults", defaults),
        (f"frontend {frontend}", ["bind 127.0.0.1:{port}", f"default_backend {backend}"]),
        (f"backend {backend}", back),
    ]
    return "\n".join(
        "\n".join([title, *(f"    {line}" for line in lines)]) + "\n" for title, lines in sections
    )


def haproxy_binary() -> str:
    return binary("haproxy", Path("/usr/sbin/haproxy"))


class HAProxy(Server):
    """One ``haproxy -W`` master and its worker."""

    name = "haproxy"
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path | str, port: int | None = None, *, conf: str) -> None:
        """``conf``: the sections after ``global`` (``defaults``, ``frontend``, ``backend``),
        binding ``127.0.0.1:{port}``."""
        super().__init__(root, port)
        self.conf = conf

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def socket(self) -> Path:
        return self.root / "admin.sock"

    def command(self, text: str, timeout: float = 5.0) -> str:
        """One command on the admin socket (``show info``, ``show stat``, ...): its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def worker_pid(self) -> int:
        """The pid of the worker answering the admin socket now."""
        for line in self.command("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        raise LabError(f"haproxy {self.socket}: no Pid in show info")

    def reload(self, timeout: float = 15.0) -> None:
        """SIGUSR2 to the master (it reads the config again); wait for the new worker."""
        if self._proc is None or not self.alive:
            raise LabError(f"haproxy on {self.address} is not running")
        before = self.worker_pid()
        self._proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.worker_pid() != before:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LabError(f"haproxy did not reload within {timeout:g}s; {self._log_tail()}")
            time.sleep(0.05)

    def _prepare(self) -> None:
        if not self.config.exists():
            body = fill(self.conf, port=self.port, root=self.root)
            self.config.write_text(GLOBAL.format(socket=self.socket) + body)

    def _argv(self) -> list[str]:
        return [haproxy_binary(), "-W", "-f", str(self.config)]

    def _ready(self) -> bool:
        return "Name: HAProxy" in self.command("show info", timeout=1)
