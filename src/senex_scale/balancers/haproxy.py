"""HAProxy as a pool's balancer: dynamic servers through the runtime API, persisted to the config.

Settings (``[pools.NAME] balancer = {type = "haproxy", ...}``)::

    socket          the admin socket, always reached from the controller's machine: a path
                    (``stats socket ... level admin``; or an ssh-forwarded socket), or
                    ``host:port`` for a TCP stats socket (HAProxy on another host: bind it to a
                    private address, it has no authentication)
    backend         the backend that holds the pool's servers (required)
    config          the config file holding that backend; when set, every change is written to
                    its ``server`` lines so a reload or restart keeps the servers (optional)
    host            a name of ``[hosts]``: HAProxy's host. ``config`` is a file there (an
                    absolute path), read, written and checked (``haproxy -c``) through the
                    host's transport (optional: this machine)
    per_host        true: one HAProxy on each of the pool's ``hosts``, each holding that host's
                    instances (``balancers.perhost``); ``{host}`` and ``{address}`` in the
                    settings are each host's name and address, e.g.
                    ``socket = "{address}:9999"`` (default false)
    haproxy         the binary used for ``haproxy -c`` (where the config is; default "haproxy")
    timeout         socket timeout, and how long ``remove`` retries ``del server`` (default 2s)
    server_prefix   servers are named ``{prefix}-{n}`` (default: the pool name)
    check           add servers with ``check`` and enable their health checks (default true)
    cookie          give servers ``cookie {name}`` for ``cookie ... insert`` (default true)
    server_options  extra keywords for every server, e.g. "inter 1s rise 2 fall 3" (default "")

There is no well-kept Python client for the HAProxy runtime API, so this module speaks it over
a raw socket: one command per connection (HAProxy answers and closes). Commands used (HAProxy
management guide, "Unix Socket commands"; dynamic servers need HAProxy >= 2.5)::

    show servers state BACKEND          members: srv_name, srv_addr, srv_port, admin/op state
    show stat BACKEND 4 -1              current sessions per server (``scur``)
    add server BACKEND/NAME ADDR [check] [cookie NAME] [OPTIONS]
    enable health BACKEND/NAME          a dynamic server's checks start disabled
    set server BACKEND/NAME health up   it passed the controller's health check already
    set server BACKEND/NAME state ready|drain|maint
    set server BACKEND/NAME weight W    undo a persisted ``weight 0`` (drain) on re-add
    del server BACKEND/NAME             only in maintenance and without connections

Requirements and quirks (HAProxy 2.6): the backend must use a dynamic algorithm (``roundrobin``,
``leastconn``, ``first``, ``random``), not ``static-rr`` or a consistent hash. Dynamic servers are
created in maintenance with checks disabled, hence ``enable health`` then ``state ready``. 2.6
refuses ``cookie`` on ``add server`` ("'cookie' option is not accepted for dynamic server"):
the server is then added without it at runtime and the cookie takes effect from the persisted
config on the next reload. A server with checks would start DOWN until ``rise`` checks
pass; the controller adds an instance only once it passed its own health check, so its
health is set up at once (HAProxy's checks go on and take it out if they fail).

States: admin ``drain`` (or a weight of 0) is DRAINING, any maintenance flag is DOWN, a server
failing its checks (op state stopped) is DOWN, else READY. In the config a drained server is
written with ``weight 0`` (the config has no drain state; weight 0 likewise only keeps cookie-
persistent clients) and a server in maintenance with ``disabled``.

Persistence never half-applies a change: the new config is written next to the old one and
checked with ``haproxy -c`` first (a failed check is a ``PermanentError`` and changes nothing),
then the runtime change is made, and only then is the checked file renamed over the config.
Only the ``server`` lines named ``{prefix}-{n}`` of the backend are touched. With ``host`` the
same steps run on that host (``cat``, ``mktemp``, ``haproxy -c -f TMP``, ``mv -f TMP
FILE``: ``balancers.files``); errors then name the host. A failed check quotes HAProxy's
alerts (``haproxy -c`` without ``-q``, which would silence them).

Errors: socket missing, refused or timing out is a ``TemporaryError``; HAProxy answering an
error ("No such backend.") is a ``PermanentError`` carrying its message. Adding a server that
already exists at the same address is not an error (it is put back into service).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictBool, ValidationInfo, field_validator

from senex_scale.balancers.base import Member, MemberState, refuse_per_host
from senex_scale.balancers.files import NotRunnableError, files_on, write_checked
from senex_scale.errors import PermanentError, SenexError, TemporaryError
from senex_scale.policy.models import Host, Pool
from senex_scale.settings import Settings, Timeout, parse_settings

# Admin state bits of ``show servers state`` (HAProxy's enum srv_admin).
ADMIN_FMAINT = 0x01
ADMIN_IMAINT = 0x02
ADMIN_CMAINT = 0x04
ADMIN_FDRAIN = 0x08
ADMIN_IDRAIN = 0x10
ADMIN_RMAINT = 0x20
ADMIN_MAINT = ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT | ADMIN_RMAINT
ADMIN_DRAIN = ADMIN_FDRAIN | ADMIN_IDRAIN
OP_STOPPED = 0

CHECK_TIMEOUT = 30.0
"""Bound on ``haproxy -c`` (a config with many certificates takes a while to load)."""

_CHECK_PREFIX = re.compile(r"^(\[[A-Z]+\])\s+\(\d+\)\s*:\s*")
"""``[ALERT]    (18300) : `` before each line of ``haproxy -c``: kept as ``[ALERT] ``."""

COOKIE_REFUSED = "'cookie' option is not accepted for dynamic server"
"""HAProxy 2.6's answer to ``add server ... cookie NAME``."""

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_SECTIONS = (
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "program",
    "mailers",
    "cache",
    "ring",
    "http-errors",
    "fcgi-app",
    "log-forward",
    "crt-store",
    "traces",
)
_SECTION = re.compile(r"^\s*(?:" + "|".join(re.escape(s) for s in _SECTIONS) + r")(?:\s|$)")


def _haproxy_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f'"{value}" is not a HAProxy name (letters, digits, "-", "_", ".", ":")')
    return value


def _not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _options(value: str) -> str:
    words = value.split()
    for bad in ("disabled", "enabled", "cookie", "check"):
        if bad in words:
            raise ValueError(f'"{bad}" is managed by the balancer; leave it out')
    return " ".join(words)


HAProxyName = Annotated[str, AfterValidator(_haproxy_name)]


class HAProxySettings(Settings):
    """``[pools.NAME] balancer`` of ``type = "haproxy"``."""

    socket: Annotated[str, AfterValidator(_not_empty)]
    backend: HAProxyName
    host: Annotated[str, AfterValidator(_not_empty)] | None = None
    """A name of ``[hosts]``: ``config`` is on that host (checked against [hosts] at build)."""
    config: Path | None = None
    per_host: StrictBool = False
    """One HAProxy per host of the pool (``build_balancer`` makes a ``PerHostBalancer``)."""
    haproxy: Annotated[str, AfterValidator(_not_empty)] = "haproxy"
    timeout: Timeout = 2.0
    server_prefix: HAProxyName | None = None
    check: StrictBool = True
    cookie: StrictBool = True
    server_options: Annotated[str, AfterValidator(_options)] = Field(default="")

    @field_validator("config")
    @classmethod
    def _absolute_on_a_host(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        host = info.data.get("host")
        if value is not None and host is not None and not value.is_absolute():
            raise ValueError(f'"{value}" must be an absolute path (it is on host {host})')
        return value


@dataclass(frozen=True, slots=True)
class ServerState:
    """One row of ``show servers state``, the columns this driver reads."""

    name: str
    addr: str
    fqdn: str
    port: int
    op_state: int
    admin_state: int
    weight: int

    @property
    def address(self) -> str:
        host = self.addr if self.addr != "-" else self.fqdn
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def state(self) -> MemberState:
        if self.admin_state & ADMIN_MAINT:
            return MemberState.DOWN
        if self.admin_state & ADMIN_DRAIN or self.weight == 0:
            return MemberState.DRAINING
        if self.op_state == OP_STOPPED:
            return MemberState.DOWN
        return MemberState.READY

    def matches(self, host: str, port: int) -> bool:
        """True when this server is at ``host:port`` (by address or by the name it was given)."""
        return port == self.port and host.strip("[]") in (self.addr, self.fqdn)


class _InMaintenance(Exception):  # noqa: N818 - internal, re-raised as a SenexError
    """``del server`` failed after ``state maint``; re-raised as Temporary or Permanent."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


def split_address(address: str) -> tuple[str, int]:
    """``("127.0.0.1", 8001)`` for ``127.0.0.1:8001`` (``[::1]:8001`` for IPv6)."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PermanentError(f'"{address}" is not an address of the form host:port')
    return host, int(port)


class HAProxyBalancer:
    """One backend of one HAProxy; see the module docstring."""

    def __init__(
        self,
        pool_name: str,
        pool: Pool,
        options: dict[str, Any],
        *,
        hosts: Mapping[str, Host] | None = None,
    ) -> None:
        self.pool = pool_name
        self.settings = s = parse_haproxy_settings(pool_name, options)
        refuse_per_host(pool_name, s.per_host)
        self.files = files_on(pool_name, s.host, hosts)
        """Where ``config`` is read, written and checked (this machine or ``host``)."""
        self.backend = s.backend
        self.prefix = s.server_prefix or pool_name
        self._cookie_at_runtime = s.cookie
        self._name_re = re.compile(rf"^{re.escape(self.prefix)}-(\d+)$")

    # ------------------------------------------------------------------ protocol

    def members(self) -> list[Member]:
        """The backend's ``{prefix}-{n}`` servers with their state and current sessions."""
        rows = self._servers()
        sessions = self._sessions()
        members = []
        for n, row in sorted(rows.items()):
            members.append(Member(n, row.address, row.state, sessions.get(row.name)))
        return members

    def add(self, n: int, address: str) -> None:
        """Add ``{prefix}-{n}`` at ``address`` and make it ready (idempotent)."""
        host, port = split_address(address)
        name = self.server_name(n)
        existing = self._servers().get(n)
        if existing is not None and not existing.matches(host, port):
            raise PermanentError(
                f"haproxy backend {self.backend}: server {name} already exists at "
                f"{existing.address}, not {address}"
            )
        line = self._config_line(name, address, MemberState.READY)
        with self._persisting(name, line):
            if existing is None:
                self._add_server(name, address)
                try:
                    if self.settings.check:
                        self._expect_empty(f"enable health {self.backend}/{name}")
                        # it passed the controller's own check just now: in service at
                        # once, not after `rise` checks (HAProxy's checks go on from here)
                        self._expect_empty(f"set server {self.backend}/{name} health up")
                    self._expect_empty(f"set server {self.backend}/{name} state ready")
                except Exception:
                    self._rollback_add(name)
                    raise
            else:
                if existing.weight == 0:
                    self._expect_empty(f"set server {self.backend}/{name} weight {self._weight}")
                self._expect_empty(f"set server {self.backend}/{name} state ready")

    def drain(self, n: int) -> None:
        """Set ``{prefix}-{n}`` to drain: no new clients, open connections continue."""
        name = self.server_name(n)
        existing = self._require(n)
        line = self._config_line(name, existing.address, MemberState.DRAINING)
        with self._persisting(name, line):
            self._expect_empty(f"set server {self.backend}/{name} state drain")

    def disable(self, n: int) -> None:
        """Put ``{prefix}-{n}`` into maintenance (persisted ``disabled``): unlike a drain, not
        even a client whose cookie sticks to it gets there; open sessions go on until the
        instance stops (nothing is shut down here)."""
        name = self.server_name(n)
        existing = self._servers().get(n)
        if existing is None:
            return
        line = self._config_line(name, existing.address, MemberState.DOWN)
        with self._persisting(name, line):
            self._expect_empty(f"set server {self.backend}/{name} state maint")

    def remove(self, n: int) -> None:
        """Put ``{prefix}-{n}`` into maintenance and delete it (idempotent).

        ``del server`` fails while the server has connections; it is retried for ``timeout``
        seconds, then the server is left in maintenance (persisted ``disabled``) and a
        ``TemporaryError`` is raised.
        """
        name = self.server_name(n)
        existing = self._servers().get(n)
        if existing is None:
            with self._persisting(name, None):
                pass
            return
        try:
            with self._persisting(name, None):  # checked before anything changes
                self._expect_empty(f"set server {self.backend}/{name} state maint")
                self._delete(name)
        except _InMaintenance as exc:
            # The server stays in maintenance: persist what HAProxy now has.
            down = self._config_line(name, existing.address, MemberState.DOWN)
            with self._persisting(name, down):
                pass
            raise (TemporaryError if exc.temporary else PermanentError)(str(exc)) from None

    def _delete(self, name: str) -> None:
        deadline = time.monotonic() + self.settings.timeout
        while True:
            answer = self._command(f"del server {self.backend}/{name}")
            if answer in ("Server deleted.", "No such server."):
                return
            message = f"haproxy: del server {self.backend}/{name}: {answer}"
            if "connection" not in answer.lower():
                raise _InMaintenance(message + " (left in maintenance)", temporary=False)
            if time.monotonic() >= deadline:
                raise _InMaintenance(message + " (left in maintenance)", temporary=True)
            time.sleep(0.1)

    def connections(self, n: int) -> int | None:
        """Current sessions (``scur``) of ``{prefix}-{n}``; None when it is not in the backend."""
        return self._sessions().get(self.server_name(n))

    # ------------------------------------------------------------------ helpers

    def server_name(self, n: int) -> str:
        """The HAProxy server name of instance ``n``."""
        return f"{self.prefix}-{n}"

    @property
    def _weight(self) -> int:
        words = self.settings.server_options.split()
        if "weight" in words:
            i = words.index("weight")
            if i + 1 < len(words) and words[i + 1].isdigit():
                return int(words[i + 1])
        return 1

    def _require(self, n: int) -> ServerState:
        existing = self._servers().get(n)
        if existing is None:
            raise PermanentError(f"haproxy backend {self.backend}: no server {self.server_name(n)}")
        return existing

    def _add_server(self, name: str, address: str) -> None:
        base = f"add server {self.backend}/{name} {address}"
        if self.settings.check:
            base += " check"
        options = f" {self.settings.server_options}" if self.settings.server_options else ""
        if self._cookie_at_runtime:
            answer = self._command(f"{base} cookie {name}{options}")
            if answer != COOKIE_REFUSED:
                self._expect(answer, "New server registered.", base)
                return
            self._cookie_at_runtime = False  # HAProxy 2.6: cookie only from the config
        self._expect(self._command(base + options), "New server registered.", base)

    def _rollback_add(self, name: str) -> None:
        with contextlib.suppress(TemporaryError):
            self._command(f"set server {self.backend}/{name} state maint")
            self._command(f"del server {self.backend}/{name}")

    def _servers(self) -> dict[int, ServerState]:
        answer = self._command(f"show servers state {self.backend}")
        lines = answer.splitlines()
        if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("#"):
            raise PermanentError(f"haproxy: show servers state {self.backend}: {answer}")
        header = lines[1].lstrip("# ").split()
        rows: dict[int, ServerState] = {}
        for line in lines[2:]:
            if not line.strip():
                continue
            row = dict(zip(header, line.split(), strict=False))
            match = self._name_re.match(row.get("srv_name", ""))
            if match is None:
                continue
            rows[int(match.group(1))] = ServerState(
                name=row["srv_name"],
                addr=row.get("srv_addr", "-"),
                fqdn=row.get("srv_fqdn", "-"),
                port=int(row.get("srv_port", "0")),
                op_state=int(row.get("srv_op_state", "0")),
                admin_state=int(row.get("srv_admin_state", "0")),
                weight=int(row.get("srv_uweight", "1")),
            )
        return rows

    def _sessions(self) -> dict[str, int]:
        answer = self._command(f"show stat {self.backend} 4 -1")
        lines = answer.splitlines()
        if not lines or not lines[0].startswith("# "):
            raise PermanentError(f"haproxy: show stat {self.backend}: {answer}")
        header = lines[0][2:].split(",")
        sessions: dict[str, int] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == self.backend and row.get("scur", "").isdigit():
                sessions[row["svname"]] = int(row["scur"])
        return sessions

    # ------------------------------------------------------------------ the socket

    def _connect(self) -> socket.socket:
        target = self.settings.socket.removeprefix("unix@")
        match = re.fullmatch(r"(?:ipv[46]@)?\[?([^\]/]+?)\]?:(\d+)", target)
        if match and "/" not in target:
            sock = socket.create_connection(
                (match.group(1), int(match.group(2))), timeout=self.settings.timeout
            )
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.settings.timeout)
            try:
                sock.connect(target)
            except BaseException:
                sock.close()
                raise
        return sock

    def _command(self, command: str) -> str:
        """HAProxy's answer to one command, stripped (an empty string for silent success)."""
        where = f"haproxy socket {self.settings.socket}"
        try:
            with self._connect() as sock:
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except PermissionError as exc:
            raise PermanentError(f"{where}: {exc.strerror or exc}") from None
        except TimeoutError:
            raise TemporaryError(
                f"{where}: no answer to {command!r} within {self.settings.timeout:g}s"
            ) from None
        except OSError as exc:
            raise TemporaryError(f"{where}: {exc.strerror or exc}") from None
        return b"".join(chunks).decode("utf-8", "replace").strip()

    def _expect(self, answer: str, wanted: str, command: str) -> None:
        if answer != wanted:
            raise PermanentError(f"haproxy: {command}: {answer or 'no answer'}")

    def _expect_empty(self, command: str) -> None:
        answer = self._command(command)
        if answer:
            raise PermanentError(f"haproxy: {command}: {answer}")

    # ------------------------------------------------------------------ persistence

    def _config_line(self, name: str, address: str, state: MemberState) -> str:
        words = ["server", name, address]
        if self.settings.check:
            words.append("check")
        if self.settings.cookie:
            words += ["cookie", name]
        if self.settings.server_options:
            words.append(self.settings.server_options)
        if state is MemberState.DRAINING:
            words += ["weight", "0"]
        elif state is MemberState.DOWN:
            words.append("disabled")
        return " ".join(words)

    @contextlib.contextmanager
    def _persisting(self, name: str, line: str | None) -> Iterator[None]:
        """Write and check the config with ``server NAME`` as ``line`` (None: without it), run
        the body (the runtime change), then move the checked file over the config."""
        path = self.settings.config
        if path is None:
            yield
            return
        # one change of a config file at a time (instances of a pool start in parallel when a
        # lost host's are replaced): each change reads, rewrites and replaces the whole file
        with _config_lock(self.files.show(path)):
            yield from self._persist(path, name, line)

    def _persist(self, path: Path, name: str, line: str | None) -> Iterator[None]:
        files = self.files
        old = files.read(path)
        if old is None:
            raise PermanentError(f"{files.show(path)}: cannot read: no such file")
        new = replace_server_line(old, self.backend, name, line, files.show(path))
        if new == old:
            yield
            return
        tmp = write_checked(files, path, new, lambda tmp: self._check(tmp, path))
        try:
            yield
        except BaseException:
            with contextlib.suppress(SenexError):
                files.remove(tmp)
            raise
        try:
            files.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(SenexError):
                files.remove(tmp)
            raise

    def _check(self, tmp: Path, path: Path) -> None:
        """``haproxy -c -f TMP`` where the config is; a failure names the file (and host)."""
        # not -q: it silences the alerts that say what is wrong too
        argv = [self.settings.haproxy, "-c", "-f", str(tmp)]
        shown = self.files.show(path)
        try:
            done = self.files.run(argv, CHECK_TIMEOUT)
        except NotRunnableError as exc:
            raise PermanentError(f"{exc} (balancer.haproxy)") from None
        except TemporaryError as exc:
            raise TemporaryError(f"{shown}: haproxy -c: {exc}") from None
        if done.returncode != 0:
            output = (done.stderr + done.stdout).replace(str(tmp), str(path))
            lines = [
                _CHECK_PREFIX.sub(r"\1 ", line).strip()
                for line in output.splitlines()
                if line.strip() and "[NOTICE]" not in line
            ]
            tail = "\n".join(lines[-10:]) or f"exit status {done.returncode}"
            raise PermanentError(f"{shown}: the new config fails haproxy -c; unchanged:\n{tail}")


_CONFIG_LOCKS: dict[str, threading.Lock] = {}
_CONFIG_LOCKS_LOCK = threading.Lock()


def _config_lock(key: str) -> threading.Lock:
    """The lock of one config file (``host:path``) in this process."""
    with _CONFIG_LOCKS_LOCK:
        return _CONFIG_LOCKS.setdefault(key, threading.Lock())


def replace_server_line(text: str, backend: str, name: str, line: str | None, path: Any) -> str:
    """``text`` with ``server NAME`` of ``backend`` replaced by ``line`` (None: removed, added
    after the section's last directive when missing)."""
    lines = text.splitlines(keepends=True)
    start = None
    for i, raw in enumerate(lines):
        words = raw.split()
        if len(words) >= 2 and words[0] == "backend" and words[1] == backend:
            start = i
            break
    if start is None:
        raise PermanentError(f"{path}: no backend {backend}")
    end = len(lines)
    for i in range(start + 1, len(lines)):
        if _SECTION.match(lines[i]):
            end = i
            break
    indent = "    "
    last = start
    found = None
    for i in range(start + 1, end):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if last == start:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        last = i
        words = stripped.split()
        if len(words) >= 2 and words[0] == "server" and words[1] == name:
            found = i
    if found is not None:
        if line is None:
            del lines[found]
        else:
            lines[found] = indent + line + "\n"
    elif line is not None:
        if not lines[last].endswith("\n"):
            lines[last] += "\n"
        lines.insert(last + 1, indent + line + "\n")
    return "".join(lines)


def parse_haproxy_settings(pool_name: str, options: dict[str, Any]) -> HAProxySettings:
    """Validated settings; problems are named ``pools.NAME.balancer.FIELD``."""
    return parse_settings(HAProxySettings, ("pools", pool_name, "balancer"), options)
