"""Instances as the processes of one supervisord program, driven over supervisord's XML-RPC API.

The program declares one process per possible instance (``numprocs`` = the pool's ``max``),
numbered from 1, none started by supervisord itself; Senex Scale starts and stops them. Instance
``n`` is the process ``GROUP:GROUP-n`` and listens on ``BASE + n`` (the pool's ``port``).
supervisord has no arithmetic in its ``%(process_num)d`` expansion, so the port is computed by
``/bin/sh`` and ``exec`` replaces the shell with the server (supervisord then signals the server
itself and reports its pid)::

    [program:web]
    directory=/srv/app
    command=/bin/sh -c 'exec venv/bin/daphne -p $((8000 + %(process_num)d)) app.asgi:application'
    process_name=%(program_name)s-%(process_num)d
    numprocs=8                  ; = the pool's max
    numprocs_start=1            ; instance numbers start at 1
    autostart=false             ; Senex Scale decides how many run
    autorestart=unexpected
    startsecs=2
    stopsignal=TERM
    stopwaitsecs=30             ; graceful stop bound; then SIGKILL (keep below stop_timeout)

with the pool (``8000 + n``: ``80%(process_num)02d`` would break at n = 100)::

    [pools.web]
    port = "8000 + n"
    max = 8
    runtime = { type = "supervisor", url = "unix:///run/supervisor.sock", group = "web" }

Settings (``[pools.NAME] runtime = { type = "supervisor", ... }``)::

    url           unix:///path/to/supervisor.sock or http://127.0.0.1:9001 (required)
    group         the program name, [program:GROUP] (required)
    process       process name of instance n, default "{group}-{n}" (placeholders {group}, {n})
    username      [unix_http_server]/[inet_http_server] username, with password_env
    password_env  name of the environment variable holding that password (read when built)
    timeout       seconds to connect and for every call but stop (default 10s)
    stop_timeout  seconds a stop may take: stopProcess waits for the process to exit, which
                  supervisord bounds with stopwaitsecs (default 60s)

States (supervisord → ``UnitState``): STOPPED → stopped; STARTING → starting; RUNNING → running;
BACKOFF (exited too quickly, retrying) → failed; STOPPING → stopping; EXITED → stopped when the
exit status is 0, else failed; FATAL (could not be started) → failed; UNKNOWN → failed.
``started_at`` and ``pid`` are given while the process is alive.

Failures: supervisord not answering (socket missing, connection refused, timed out, shutting
down) is a ``TemporaryError``; a process the program does not declare (``BAD_NAME``), rejected
credentials and any other fault are a ``PermanentError``. Starting a started process and
stopping a stopped one are not errors.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import string
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

from pydantic import AfterValidator, model_validator

from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.policy.models import Pool
from senex_scale.runtimes.base import RuntimeInstance, UnitState
from senex_scale.settings import Settings, Timeout, parse_settings

__all__ = ["SupervisorRuntime", "SupervisorSettings", "map_state"]

# supervisor.xmlrpc.Faults, copied so that this module imports without supervisor installed.
SHUTDOWN_STATE = 6
BAD_NAME = 10
ALREADY_STARTED = 60
NOT_RUNNING = 70

_STATES: dict[str, UnitState] = {
    "STOPPED": UnitState.STOPPED,
    "STARTING": UnitState.STARTING,
    "RUNNING": UnitState.RUNNING,
    "BACKOFF": UnitState.FAILED,
    "STOPPING": UnitState.STOPPING,
    "FATAL": UnitState.FAILED,
    "UNKNOWN": UnitState.FAILED,
}
_POLL = 0.1


def map_state(statename: str, exitstatus: int = 0) -> UnitState:
    """The ``UnitState`` of a supervisord process state (EXITED depends on the exit status)."""
    if statename == "EXITED":
        return UnitState.STOPPED if exitstatus == 0 else UnitState.FAILED
    return _STATES.get(statename, UnitState.FAILED)


# --------------------------------------------------------------------------- settings


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f'"{value}" is not an environment variable name')
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "unix":
        path = value[len("unix://") :]
        if not value.startswith("unix://") or not path.startswith("/"):
            raise ValueError(f'"{value}" is not unix:///absolute/path/to/supervisor.sock')
        return value
    if parts.scheme == "http":
        if not parts.hostname or parts.username or parts.password:
            raise ValueError(
                f'"{value}" is not http://HOST:PORT (credentials go in username/password_env)'
            )
        if parts.path not in ("", "/", "/RPC2") or parts.query:
            raise ValueError(f'"{value}": give only http://HOST:PORT (the API is at /RPC2)')
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number or out of range
        except ValueError as exc:
            raise ValueError(f'"{value}": {exc}') from None
        return value
    raise ValueError(
        f'"{value}" is not a supervisord URL: use unix:///path/to/supervisor.sock '
        "or http://127.0.0.1:9001"
    )


def _group(value: str) -> str:
    if not value or ":" in value or value != value.strip():
        raise ValueError(f'"{value}" is not a program name ([program:NAME], without ":")')
    return value


def _process(value: str) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError(f'"{value}" is not a name template: {exc}') from None
    unknown = sorted({f for f in fields if f not in ("group", "n")})
    if unknown:
        raise ValueError(
            f'"{value}": unknown placeholder {{{unknown[0]}}}; use {{group}} and {{n}}'
        )
    if fields.count("n") != 1:
        raise ValueError(f'"{value}" must contain {{n}} exactly once (e.g. "{{group}}-{{n}}")')
    return value


class SupervisorSettings(Settings):
    """``[pools.NAME] runtime = { type = "supervisor", ... }`` without ``type``."""

    url: Annotated[str, AfterValidator(_url)]
    group: Annotated[str, AfterValidator(_group)]
    process: Annotated[str, AfterValidator(_process)] = "{group}-{n}"
    username: str | None = None
    password_env: Annotated[str, AfterValidator(_env_name)] | None = None
    timeout: Timeout = 10.0
    stop_timeout: Timeout = 60.0

    @model_validator(mode="after")
    def _credentials_together(self) -> SupervisorSettings:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("give both username and password_env, or neither")
        return self


# --------------------------------------------------------------------------- transport


def _server_proxy(
    url: str, username: str | None, password: str | None, timeout: float
) -> xmlrpc.client.ServerProxy:
    """A one-shot proxy through supervisor's transport, with ``timeout`` on its socket."""
    # supervisor ships neither type information nor stubs; only this transport is used.
    from supervisor.xmlrpc import SupervisorTransport  # type: ignore[import-untyped]

    transport = SupervisorTransport(username, password, url)
    make: Callable[[], http.client.HTTPConnection] = transport._get_connection

    def connection() -> http.client.HTTPConnection:
        conn = make()
        conn.timeout = timeout  # used by HTTPConnection.connect (http://)
        if url.startswith("unix://"):
            # supervisor's unix connection connects without a timeout: connect here instead;
            # http.client then uses this socket rather than calling connect().
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(url[len("unix://") :])
            except OSError:
                sock.close()
                raise
            conn.sock = sock
        return conn

    transport._get_connection = connection
    return xmlrpc.client.ServerProxy("http://127.0.0.1/RPC2", transport=transport)


# --------------------------------------------------------------------------- runtime


class SupervisorRuntime:
    """The processes ``GROUP:GROUP-n`` of one supervisord program as a pool's instances."""

    def __init__(self, pool_name: str, pool: Pool, options: dict[str, Any]) -> None:
        self.pool = pool_name
        self._pool = pool
        self.settings = parse_settings(SupervisorSettings, ("pools", pool_name, "runtime"), options)
        self._password: str | None = None
        if self.settings.password_env is not None:
            self._password = os.environ.get(self.settings.password_env)
            if self._password is None:
                raise PermanentError(
                    f"pools.{pool_name}.runtime.password_env: environment variable "
                    f"{self.settings.password_env} is not set"
                )
        group = re.escape(self.settings.group)
        pattern = ""
        for literal, field, _, _ in string.Formatter().parse(self.settings.process):
            pattern += re.escape(literal)
            if field == "group":
                pattern += group
            elif field == "n":
                pattern += r"(?P<n>[1-9][0-9]*)"
        self._name_re = re.compile(pattern)

    def __repr__(self) -> str:
        s = self.settings
        return f"SupervisorRuntime(pool={self.pool!r}, url={s.url!r}, group={s.group!r})"

    # ------------------------------------------------------------------ names

    def process_name(self, n: int) -> str:
        """``GROUP:NAME`` of instance ``n``, as supervisorctl spells it."""
        s = self.settings
        return f"{s.group}:{s.process.format(group=s.group, n=n)}"

    def _instance_of(self, name: str) -> int | None:
        match = self._name_re.fullmatch(name)
        return int(match.group("n")) if match else None

    # ------------------------------------------------------------------ calls

    def _call(
        self, method: str, *args: Any, timeout: float | None = None, ok: tuple[int, ...] = ()
    ) -> Any:
        """``supervisor.METHOD(*args)``; a fault in ``ok`` returns None, anything else raises."""
        s = self.settings
        where = f"pool {self.pool}: supervisord at {s.url}"
        proxy = _server_proxy(s.url, s.username, self._password, timeout or s.timeout)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as exc:
            code, text = exc.faultCode, exc.faultString
            if code in ok:
                return None
            if code == BAD_NAME:
                n = args[0] if args else "?"
                raise PermanentError(
                    f"{where}: no process {n} ({text}); [program:{s.group}] must declare "
                    f"numprocs >= the instance number, with numprocs_start=1 and "
                    f"process_name=%(program_name)s-%(process_num)d"
                ) from exc
            if code == SHUTDOWN_STATE:
                raise TemporaryError(f"{where} is shutting down ({text})") from exc
            raise PermanentError(f"{where}: {method} failed: {text}") from exc
        except xmlrpc.client.ProtocolError as exc:
            status = exc.errcode
            if status in (401, 403):
                raise PermanentError(
                    f"{where}: HTTP {status} {exc.errmsg}: check username and password_env"
                ) from exc
            if status == 404:
                raise PermanentError(
                    f"{where}: HTTP 404: no XML-RPC API (add [rpcinterface:supervisor])"
                ) from exc
            raise TemporaryError(f"{where}: HTTP {status} {exc.errmsg}") from exc
        except (xmlrpc.client.ResponseError, ExpatError) as exc:
            raise PermanentError(f"{where}: not an XML-RPC answer ({exc})") from exc
        except TimeoutError as exc:
            raise TemporaryError(
                f"{where}: {method} timed out after {timeout or s.timeout:g}s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise TemporaryError(
                f"{where}: not answering ({reason or type(exc).__name__})"
            ) from exc
        finally:
            proxy("close")()

    def _term_and_wait(self, name: str, grace: float) -> None:
        sent = self._call("signalProcess", name, "TERM", ok=(NOT_RUNNING,))
        if sent is None:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            info: dict[str, Any] = self._call("getProcessInfo", name)
            if info.get("statename") not in ("RUNNING", "STOPPING", "STARTING"):
                return
            time.sleep(_POLL)

    # ------------------------------------------------------------------ Runtime

    def list(self) -> list[RuntimeInstance]:
        """Every process of the program, by instance number."""
        infos: list[dict[str, Any]] = self._call("getAllProcessInfo")
        found: list[RuntimeInstance] = []
        for info in infos:
            if info.get("group") != self.settings.group:
                continue
            n = self._instance_of(str(info.get("name", "")))
            if n is None:
                continue
            found.append(self._instance(n, info))
        if not found:
            s = self.settings
            raise PermanentError(
                f"pool {self.pool}: supervisord at {s.url} has no process of [program:{s.group}] "
                f'named "{s.process}" (declare process_name=%(program_name)s-%(process_num)d, '
                "numprocs_start=1, numprocs=max; supervisorctl reread && update)"
            )
        return sorted(found, key=lambda i: i.n)

    @staticmethod
    def _instance(n: int, info: dict[str, Any]) -> RuntimeInstance:
        pid = int(info.get("pid") or 0)
        start = int(info.get("start") or 0)
        alive = pid > 0
        return RuntimeInstance(
            n=n,
            state=map_state(str(info.get("statename", "UNKNOWN")), int(info.get("exitstatus", 0))),
            started_at=float(start) if alive and start else None,
            pid=pid if alive else None,
        )

    def start(self, n: int) -> None:
        """``startProcess(NAME, False)``: returns once spawned; already started is fine."""
        self._call("startProcess", self.process_name(n), False, ok=(ALREADY_STARTED,))

    def stop(self, n: int, grace: float | None = None) -> None:
        """``stopProcess(NAME, True)``: returns once stopped; already stopped is fine.

        With ``grace``: SIGTERM first (``signalProcess``), then up to ``grace`` seconds for
        the process to exit by itself (a Celery worker's warm shutdown finishing its tasks),
        then ``stopProcess`` (stopsignal, and SIGKILL after ``stopwaitsecs``). A clean exit
        (0) after the SIGTERM is expected, so ``autorestart=unexpected`` does not restart it."""
        name = self.process_name(n)
        if grace is not None and grace > 0:
            self._term_and_wait(name, grace)
        deadline = time.monotonic() + self.settings.stop_timeout
        done = self._call(
            "stopProcess", name, True, timeout=self.settings.stop_timeout, ok=(NOT_RUNNING,)
        )
        if done is not None:
            return
        # NOT_RUNNING also covers STOPPING (another stop in progress): wait for it to end.
        while True:
            info: dict[str, Any] = self._call("getProcessInfo", name)
            if info.get("statename") != "STOPPING":
                return
            if time.monotonic() >= deadline:
                raise TemporaryError(
                    f"pool {self.pool}: {name} still stopping after "
                    f"{self.settings.stop_timeout:g}s (stop_timeout)"
                )
            time.sleep(_POLL)
