"""nginx as a pool's balancer: one ``upstream`` block in its own include file, reloaded.

Settings (``[pools.NAME] balancer = { type = "nginx", ... }``)::

    upstream        the upstream's name (required), e.g. "django_backend"
    file            the include file holding just that ``upstream NAME { ... }`` block (required);
                    the main config includes it, this balancer owns it
    host            a name of ``[hosts]``: nginx's host. ``file`` is written there and ``nginx
                    -t``, ``nginx -s reload`` run there, through the host's transport; the
                    paths are that host's (absolute). Optional: this machine
    per_host        true: one nginx on each of the pool's ``hosts``, its upstream holding that
                    host's instances (``balancers.perhost``); ``{host}`` and ``{address}`` in
                    the settings are each host's name and address (default false)
    nginx           the binary (default "nginx")
    conf            main config for ``nginx -t -c`` and ``nginx -s reload -c``
                    (default /etc/nginx/nginx.conf)
    prefix          ``-p PREFIX`` for both commands (optional)
    balance         how nginx picks a server: "ip_hash" (sticky clients by address),
                    "least_conn" (the server with the fewest active connections, counted in a
                    shared ``zone`` so all workers agree) or "round_robin" (optional: from
                    ``ip_hash``)
    ip_hash         the older switch: true is balance = "ip_hash", false "round_robin"
                    (default true); given with ``balance``, the two must agree
    max_fails       per server (default 3)
    fail_timeout    per server, an nginx time such as "30s" (default)
    keepalive       idle upstream connections per worker (default 32; 0 leaves it out)
    reload_timeout  bound on each nginx command, and on waiting for the lock (default "10s")

The file is the source of truth: ``members()`` parses it. Each server line follows a comment
naming its instance (``# senex-scale n=3``); a line without one (a hand-written file such as
the seed's) is adopted by the pool's port scheme (port = BASE + n). The balancing lines this
balancer writes (``ip_hash;``, ``least_conn;``, ``zone NAME SIZE;``, ``keepalive N;``) are read
past, whichever the settings ask for (the next change writes the settings' own); any other
directive makes the file refused rather than silently overwritten.

WebSockets: every change is an ``nginx -s reload``, and a reload leaves every connection
opened before it (not only the drained server's) on the old workers, which cut them without
a close frame when ``worker_shutdown_timeout`` expires. Pools whose clients hold WebSockets
put a local HAProxy between nginx and the instances instead (``docs/balancer-nginx.md``,
"WebSockets and reloads").

Drain: open source nginx has no drain state. A drained member is written ``down``: nginx sends
it no new requests, it keeps its slot so ``ip_hash`` does not remap the other clients, and
requests already running finish on the old worker processes (up to ``worker_shutdown_timeout``)
after the reload. ``down`` is reported as ``MemberState.DRAINING``; ``remove`` deletes the line.
nginx rejects an upstream without servers, so an empty pool is written as a placeholder
``server 127.0.0.1:9 down;`` (never reported as a member): every request then gets a 502.

Every change renders the whole block, replaces the file atomically (same mode and owner; the
old file kept under a second name, a hard link), runs ``nginx -t`` and then ``nginx -s
reload``. If either fails the previous file is put back byte for byte (or removed, if there
was none) and ``PermanentError`` (the test failed: nginx's message included) or
``TemporaryError`` (the reload failed, e.g. nginx is not running) is raised. Changes hold
``fcntl.flock`` on ``FILE.lock`` so two controllers cannot interleave. With ``host`` every
step is a command on that host (``balancers.files``) and the lock is this process's only:
two controllers are kept apart by the controller's leader lock.
``connections(n)`` is always None: nginx open source does not count per upstream server.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from senex_scale.balancers.base import Member, MemberState, refuse_per_host
from senex_scale.balancers.files import NotRunnableError, files_on
from senex_scale.errors import PermanentError, SenexError, TemporaryError
from senex_scale.policy.models import Host, Pool, show_value
from senex_scale.settings import Settings, Timeout, parse_settings

PLACEHOLDER = "127.0.0.1:9"
"""Address of the placeholder server of an empty upstream (the discard port, always ``down``)."""

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TIME = re.compile(r"^\d+(ms|s|m|h|d|w|M|y)?$")
_BAD_ADDRESS = re.compile(r"[\s;{}#'\"\\$]")

_UPSTREAM_LINE = re.compile(r"^upstream\s+(?P<name>\S+)\s*\{$")
_MARK_LINE = re.compile(r"^#\s*senex-scale\s+(?:n=(?P<n>\d+)|(?P<placeholder>placeholder))\b")
_SERVER_LINE = re.compile(r"^server\s+(?P<address>[^\s;]+)(?P<params>(?:\s+[^\s;]+)*)\s*;$")
_OWN_PARAM = re.compile(r"^(max_fails|fail_timeout)=\S+$")
_KNOWN_LINE = re.compile(
    r"^(ip_hash\s*;|least_conn\s*;|zone\s+[A-Za-z0-9_.\-]+(\s+\d+[kKmM]?)?\s*;"
    r"|keepalive\s+\d+\s*;|\})$"
)
ZONE_SIZE = "64k"
"""Shared memory of a ``least_conn`` upstream's ``zone``: the connection counts of every
worker in one place (a few hundred bytes per server; nginx's smallest useful size)."""


def _upstream_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f'"{value}" is not an upstream name (letters, digits, "_", "-", ".")')
    return value


def _nginx_time(value: object) -> str:
    """An nginx time ("30s", "1m") or whole seconds; never a boolean or a fraction."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(
            f'must be an nginx time (e.g. "30s") or whole seconds, not {show_value(value)}'
        )
    text = str(value).strip()
    if not _TIME.match(text):
        raise ValueError(f'"{value}" is not an nginx time (e.g. "30s", "1m")')
    return text


class NginxSettings(Settings):
    """``[pools.NAME] balancer = { type = "nginx", ... }``."""

    upstream: Annotated[str, AfterValidator(_upstream_name)]
    host: str | None = Field(default=None, min_length=1)
    """A name of ``[hosts]``: nginx and ``file`` are on that host (checked at build)."""
    per_host: StrictBool = False
    """One nginx per host of the pool (``build_balancer`` makes a ``PerHostBalancer``)."""
    file: Path
    nginx: str = Field(default="nginx", min_length=1)
    conf: Path = Path("/etc/nginx/nginx.conf")
    prefix: Path | None = None
    balance: Literal["ip_hash", "least_conn", "round_robin"] | None = None
    """How nginx picks a server; None: from ``ip_hash``."""
    ip_hash: StrictBool = True
    """The older switch (true: ``ip_hash``, false: round robin); ``balance`` is clearer."""
    max_fails: StrictInt = Field(default=3, ge=0)
    fail_timeout: Annotated[str, BeforeValidator(_nginx_time)] = "30s"
    keepalive: StrictInt = Field(default=32, ge=0)
    reload_timeout: Timeout = 10.0

    @field_validator("ip_hash")
    @classmethod
    def _agrees_with_balance(cls, value: bool, info: ValidationInfo) -> bool:
        """Run only when ``ip_hash`` is given: with ``balance`` too, the two must agree."""
        balance = info.data.get("balance")
        if balance is not None and value != (balance == "ip_hash"):
            raise ValueError(
                f'ip_hash = {str(value).lower()} contradicts balance = "{balance}"; '
                "give only balance"
            )
        return value

    @property
    def method(self) -> str:
        """The balancing method in force: ``balance``, else ``ip_hash`` or round robin."""
        if self.balance is not None:
            return self.balance
        return "ip_hash" if self.ip_hash else "round_robin"

    @field_validator("file", "conf", "prefix")
    @classmethod
    def _absolute_on_a_host(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        host = info.data.get("host")
        if value is not None and host is not None and not value.is_absolute():
            raise ValueError(f'"{value}" must be an absolute path (it is on host {host})')
        return value


def parse_balancer_settings(pool_name: str, options: dict[str, Any]) -> NginxSettings:
    """Validated settings; problems are named ``pools.NAME.balancer.FIELD``."""
    return parse_settings(NginxSettings, ("pools", pool_name, "balancer"), options)


@dataclass(frozen=True, slots=True)
class _Server:
    n: int
    address: str
    down: bool


class NginxBalancer:
    """One pool's members as the servers of an nginx upstream in an include file."""

    def __init__(
        self,
        pool_name: str,
        pool: Pool,
        options: dict[str, Any],
        *,
        hosts: Mapping[str, Host] | None = None,
    ) -> None:
        self.pool = pool_name
        self._pool = pool
        self.settings = parse_balancer_settings(pool_name, options)
        refuse_per_host(pool_name, self.settings.per_host)
        self.files = files_on(pool_name, self.settings.host, hosts)
        """Where ``file`` is and nginx runs (this machine or ``host``)."""
        self.file = self.settings.file
        self.lock_file = self.file.with_name(self.file.name + ".lock")

    def __repr__(self) -> str:
        return f"NginxBalancer(pool={self.pool!r}, upstream={self.settings.upstream!r})"

    # ------------------------------------------------------------------ the protocol

    def members(self) -> list[Member]:
        """The servers of the upstream file (``down`` ones as DRAINING), by instance number."""
        return [
            Member(s.n, s.address, MemberState.DRAINING if s.down else MemberState.READY)
            for s in self._read()
        ]

    def add(self, n: int, address: str) -> None:
        """Write ``n`` at ``address`` as an active server (un-draining it if it was down)."""
        self._check_address(address)
        with self._locked():
            servers = {s.n: s for s in self._read()}
            for other in servers.values():
                if other.address == address and other.n != n:
                    raise PermanentError(
                        f"nginx upstream {self.settings.upstream}: {address} is already "
                        f"instance {other.n}'s address; cannot add it as instance {n}"
                    )
            servers[n] = _Server(n, address, down=False)
            self._apply(list(servers.values()), f"add instance {n} ({address})")

    def drain(self, n: int) -> None:
        """Mark ``n`` ``down``: no new requests; running ones finish on the old workers.

        A member that is not in the file has nothing to drain (no change, no error).
        """
        with self._locked():
            servers = {s.n: s for s in self._read()}
            if n not in servers:
                return
            servers[n] = _Server(n, servers[n].address, down=True)
            self._apply(list(servers.values()), f"drain instance {n}")

    def disable(self, n: int) -> None:
        """The same as a drain: a ``down`` server gets nothing, and nginx sticks no client to
        it (``ip_hash`` skips it too). No reload when it is down already."""
        if any(s.n == n and not s.down for s in self._read()):
            self.drain(n)

    def remove(self, n: int) -> None:
        """Delete ``n``'s server line (nothing to do when it is not there)."""
        with self._locked():
            servers = {s.n: s for s in self._read()}
            if servers.pop(n, None) is None:
                return
            self._apply(list(servers.values()), f"remove instance {n}")

    def connections(self, n: int) -> int | None:
        """Always None: nginx open source does not count connections per upstream server."""
        return None

    # ------------------------------------------------------------------ rendering

    def render(self, members: list[Member]) -> str:
        """The whole include file for ``members`` (DRAINING and DOWN are written ``down``)."""
        return self._render(
            [_Server(m.n, m.address, m.state is not MemberState.READY) for m in members]
        )

    def _render(self, servers: list[_Server]) -> str:
        s = self.settings
        params = f"max_fails={s.max_fails} fail_timeout={s.fail_timeout}"
        lines = [
            f"# Written by senex-scale for pool {self.pool}: changes by hand are overwritten.",
            f"upstream {s.upstream} {{",
        ]
        if s.method == "least_conn":
            # without a shared zone each worker counts only its own connections
            lines.append(f"    zone {s.upstream} {ZONE_SIZE};")
            lines.append("    least_conn;")
        elif s.method == "ip_hash":
            lines.append("    ip_hash;")
        for server in sorted(servers, key=lambda x: x.n):
            down = " down" if server.down else ""
            lines.append(f"    # senex-scale n={server.n}")
            lines.append(f"    server {server.address}{down} {params};")
        if not servers:
            lines.append("    # senex-scale placeholder: nginx needs a server in an upstream")
            lines.append(f"    server {PLACEHOLDER} down;")
        if s.keepalive:
            lines.append(f"    keepalive {s.keepalive};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ parsing

    def _read(self) -> list[_Server]:
        text = self.files.read(self.file)
        return [] if text is None else self._parse(text)

    def _parse(self, text: str) -> list[_Server]:
        servers: dict[int, _Server] = {}
        mark: int | str | None = None
        seen_upstream = False
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            where = f"{self.file}:{number}{self._on}"
            if not line:
                continue
            if line.startswith("#"):
                match = _MARK_LINE.match(line)
                if match:
                    mark = "placeholder" if match.group("placeholder") else int(match.group("n"))
                continue
            if match := _UPSTREAM_LINE.match(line):
                if seen_upstream or match.group("name") != self.settings.upstream:
                    raise PermanentError(
                        f"{where}: expected only upstream {self.settings.upstream}, found "
                        f'"{line}"; point balancer.file at a file of its own'
                    )
                seen_upstream = True
                continue
            if match := _SERVER_LINE.match(line):
                address = match.group("address")
                flags = match.group("params").split()
                foreign = [f for f in flags if f != "down" and not _OWN_PARAM.match(f)]
                if foreign:
                    raise PermanentError(
                        f'{where}: server parameter "{foreign[0]}" is not something '
                        "senex-scale writes (it would be lost); remove it from the file"
                    )
                if mark == "placeholder":
                    mark = None
                    continue
                n = mark if isinstance(mark, int) else self._adopt(address, where)
                mark = None
                if n in servers:
                    raise PermanentError(f"{where}: instance {n} is listed twice")
                servers[n] = _Server(n, address, "down" in flags)
                continue
            if _KNOWN_LINE.match(line):
                continue
            raise PermanentError(
                f'{where}: "{line}" is not something senex-scale writes; the file holds only '
                f"the upstream block it manages (move other directives elsewhere)"
            )
        if servers and not seen_upstream:
            raise PermanentError(
                f"{self.files.show(self.file)}: no upstream {self.settings.upstream} block"
            )
        return sorted(servers.values(), key=lambda x: x.n)

    def _adopt(self, address: str, where: str) -> int:
        """Instance number of a server line without a ``# senex-scale n=`` comment."""
        port_text = address.rpartition(":")[2]
        base = self._pool.port
        if base is not None and port_text.isdigit() and int(port_text) > base:
            return int(port_text) - base
        raise PermanentError(
            f'{where}: server {address} has no "# senex-scale n=N" comment and its port does '
            f"not fit pools.{self.pool}.port, so its instance is unknown"
        )

    def _check_address(self, address: str) -> None:
        if not address or _BAD_ADDRESS.search(address):
            raise PermanentError(
                f"nginx upstream {self.settings.upstream}: {address!r} is not a server address "
                "(host:port or unix:/path, without spaces, quotes or ;{}#$)"
            )

    # ------------------------------------------------------------------ applying

    @property
    def _on(self) -> str:
        """For messages: `` on host NAME``, or nothing on this machine."""
        return "" if self.files.host is None else f" on host {self.files.host}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``FILE.lock`` exclusively (waiting up to ``reload_timeout``); on a host, this
        process's lock for that host's file."""
        if self.files.host is not None:
            lock = _host_lock(self.files.show(self.file))
            if not lock.acquire(timeout=self.settings.reload_timeout):
                raise TemporaryError(
                    f"{self.files.show(self.file)} is being changed by another thread for "
                    f"longer than {self.settings.reload_timeout:g}s"
                )
            try:
                yield
            finally:
                lock.release()
            return
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PermanentError(f"cannot open lock {self.lock_file}: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + self.settings.reload_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() > deadline:
                        raise TemporaryError(
                            f"{self.lock_file} is held by another process (another controller "
                            f"changing upstream {self.settings.upstream}?)"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _apply(self, servers: list[_Server], what: str) -> None:
        """Write the block for ``servers``, test and reload; roll back on any failure."""
        files = self.files
        previous = files.read(self.file)
        new = self._render(servers)
        if new == previous:
            return
        backup = self._write(new, previous_exists=previous is not None)
        try:
            self._nginx("-t", "-q")
        except _CommandError as exc:
            rolled_back = self._restore(backup)
            error = TemporaryError if exc.temporary else PermanentError
            raise error(
                f"nginx -t failed for upstream {self.settings.upstream}{self._on} after {what}; "
                f"{rolled_back}: {exc.output}"
            ) from None
        except BaseException:
            self._restore(backup)
            raise
        try:
            self._nginx("-s", "reload")
        except _CommandError as exc:
            rolled_back = self._restore(backup)
            raise TemporaryError(
                f"nginx reload failed after {what} in upstream {self.settings.upstream}"
                f"{self._on} (is nginx running?); {rolled_back}: {exc.output}"
            ) from None
        except BaseException:
            self._restore(backup)
            raise
        if backup is not None:
            with contextlib.suppress(SenexError):
                files.remove(backup)

    def _write(self, text: str, *, previous_exists: bool) -> Path | None:
        """Replace the file atomically (a temp file beside it, same mode and owner, renamed
        over it); the old file is kept under a second name, returned (None: there was none)."""
        files = self.files
        tmp = files.write_temp(self.file, text)
        backup = None
        try:
            if previous_exists:
                backup = files.backup(self.file)
            files.replace(tmp, self.file)
        except BaseException:
            for leftover in (tmp, backup):
                if leftover is not None:
                    with contextlib.suppress(SenexError):
                        files.remove(leftover)
            raise
        return backup

    def _restore(self, backup: Path | None) -> str:
        """Put the file kept by ``_write`` back (or remove the new one: there was none); what
        happened, for the error message (a rollback that fails, e.g. the host stopped
        answering, says where the previous file is kept)."""
        try:
            if backup is None:
                self.files.remove(self.file)
                return f"{self.file} removed again"
            self.files.replace(backup, self.file)
        except SenexError as exc:
            kept = f"; the previous file is {backup}" if backup is not None else ""
            return f"NOT rolled back ({exc}){kept}"
        return f"previous {self.file} restored"

    def _nginx(self, *args: str) -> None:
        s = self.settings
        argv = [s.nginx, *args, "-c", str(s.conf)]
        if s.prefix is not None:
            argv += ["-p", str(s.prefix)]
        try:
            done = self.files.run(argv, s.reload_timeout)
        except NotRunnableError as exc:
            raise _CommandError(str(exc)) from None
        except TemporaryError as exc:
            raise _CommandError(str(exc), temporary=True) from None
        except PermanentError as exc:
            raise _CommandError(str(exc)) from None
        if done.returncode != 0:
            output = _clean(done.stderr) or _clean(done.stdout) or f"exit {done.returncode}"
            raise _CommandError(output)


_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: ")


def _clean(output: str) -> str:
    """nginx's messages without timestamps, pids and ``[notice]`` lines, joined by "; "."""
    lines = [_LOG_PREFIX.sub(r"\1 ", line).strip() for line in output.splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith("[notice]"))


_HOST_LOCKS: dict[str, threading.Lock] = {}
_HOST_LOCKS_LOCK = threading.Lock()


def _host_lock(key: str) -> threading.Lock:
    """This process's lock for one file on one host (``FILE on host NAME``)."""
    with _HOST_LOCKS_LOCK:
        return _HOST_LOCKS.setdefault(key, threading.Lock())


class _CommandError(Exception):
    def __init__(self, output: str, *, temporary: bool = False) -> None:
        super().__init__(output)
        self.output = output
        self.temporary = temporary
