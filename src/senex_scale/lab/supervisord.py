"""supervisord on loopback: the venv's ``supervisord -n`` with the caller's programs.

It answers XML-RPC on a unix socket (``url``, what the ``supervisor`` runtime is given) and on
``127.0.0.1:port`` over HTTP with a username and password (``http_url``); the password, given
or generated, is only in the config file (mode 0600). ``stop`` is SIGTERM: supervisord stops
every program (each with its ``stopsignal`` and ``stopwaitsecs``) and then exits; anything
still running afterwards is killed and named in ``forced``.
"""

from __future__ import annotations

import http.client
import secrets
import signal
import sys
import xmlrpc.client
from pathlib import Path
from typing import Any, ClassVar

from senex_scale.lab.base import HOST, LabError, Server, fill, tail, write_secret


class Supervisord(Server):
    """One ``supervisord -n`` with ``[program:...]`` sections given as text."""

    name = "supervisord"
    stop_signal = signal.SIGTERM
    stop_timeout = 60.0
    not_yet: ClassVar[tuple[type[BaseException], ...]] = (
        OSError,
        xmlrpc.client.Error,
        http.client.HTTPException,
    )

    def __init__(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        programs: str,
        username: str = "lab",
        password: str | None = None,
    ) -> None:
        """``programs``: the ``[program:NAME]`` sections, with ``{root}`` (this directory) and
        ``{python}`` (this interpreter) filled in; supervisor's own ``%(...)s`` stay as they
        are. ``password``: of the HTTP server (default: a random one)."""
        super().__init__(root, port)
        self.programs = programs
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(16)

    @property
    def socket(self) -> Path:
        return self.root / "supervisord.sock"

    @property
    def url(self) -> str:
        """``unix:///ROOT/supervisord.sock``: no credentials needed (mode 0700)."""
        return f"unix://{self.socket}"

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT``: ``username`` and ``password`` needed."""
        return f"http://{HOST}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def output(self) -> Path:
        """supervisord's stdout and stderr (its messages before the log opens)."""
        return self.root / "supervisord.out"

    def call(self, method: str, *args: Any, timeout: float = 10.0) -> Any:
        """``supervisor.METHOD(*args)`` over the unix socket."""
        # The supervisor runtime's transport: bounded, and supervisor imported only when used.
        from senex_scale.runtimes.supervisor import _server_proxy

        proxy = _server_proxy(self.url, None, None, timeout)
        try:
            return getattr(proxy.supervisor, method)(*args)
        finally:
            proxy("close")()

    def _prepare(self) -> None:
        root = self.root
        programs = fill(self.programs, root=root, python=sys.executable)
        write_secret(
            self.conf,
            f"""\
[unix_http_server]
file={self.socket}
chmod=0700

[inet_http_server]
port={HOST}:{self.port}
username={self.username}
password={self.password}

[supervisord]
nodaemon=true
pidfile={root}/supervisord.pid
logfile={self.log}
childlogdir={root}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl={self.url}

{programs}""",
        )

    def _argv(self) -> list[str]:
        binary = Path(sys.executable).with_name("supervisord")
        if not binary.exists():
            raise LabError(f"{binary}: not found (supervisor is installed with senex-scale[dev])")
        return [str(binary), "-n", "-c", str(self.conf)]

    def _ready(self) -> bool:
        return bool(self.call("getState", timeout=2)["statename"] == "RUNNING")

    def _log_tail(self) -> str:
        return f"{self.log}:\n{tail(self.log)}\n{self.output}:\n{tail(self.output)}"
