"""``senex-scale replica add|status|remove``: the seed's "PostgreSQL Read Replica" runbook.

The seed's steps, each checked instead of trusted::

    replica add
      1. inputs        name, port, registry parse; data directory absent or empty (nothing
                       touched yet if any is wrong: exit 2)
      2. primary       wal_level >= replica, max_wal_senders with room, wal_keep_size:
                       ALTER SYSTEM (+ pg_reload_conf() when that is enough; a setting that
                       needs a restart stops here with what to restart: exit 1)
                       replication role (created with a SCRAM verifier made by libpq from a
                       password read from an environment variable or a 0600 file)
                       pg_hba: a rule that lets the role in for "replication" from the
                       replica's address (added at the top of hba_file and reloaded when the
                       file is on this host, else the line to add)
      3. base backup   pg_basebackup -R -X stream --progress (a progress bar), the password in
                       a 0600 passfile deleted afterwards; port, listen_addresses and
                       cluster_name appended to postgresql.auto.conf
      4. start         pg_ctl start -w (as the postgres user when run as root)
      5. verify        pg_is_in_recovery() on the replica, "streaming" in the primary's
                       pg_stat_replication, lag in bytes and seconds
      6. register      the replica registry the Django router reads (docs/django.md)

It runs where the data directory is: this host, or another over ssh (``--host
postgres@db2``: argv only, through ``runtimes.transport.SshTransport``). Running ``add`` again
for a registered replica that answers in recovery changes nothing and exits 0, so it is safe
as the runbook action of the "PostgreSQL CPU > 80% for 10 min" rule (see docs/ops.md).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import psycopg
import typer
from psycopg import sql
from rich.table import Table

from senex_scale.contrib.django.registry import (
    ALIAS_PATTERN,
    RESERVED_ALIASES,
    ReplicaEntry,
    read_registry,
    write_registry,
)
from senex_scale.errors import InputError, PermanentError, SenexError, TemporaryError
from senex_scale.ops.common import (
    connect,
    err,
    human_bytes,
    out,
    parse_dsn,
    print_json,
    read_secret,
    redact_dsn,
    redact_text,
    with_params,
)
from senex_scale.ops.files import (
    UnsafeFileError,
    directory,
    make_directory,
    read_file,
    replace_file,
)

if TYPE_CHECKING:  # runtimes/ pulls in the policy models: imported when a command runs
    from senex_scale.runtimes.transport import Completed, Transport

DEFAULT_REGISTRY = "/etc/senex-scale/replicas.json"
REGISTRY_ENV = "SENEX_REPLICA_REGISTRY"
PASSWORD_ENV = "SENEX_REPLICATION_PASSWORD"
PASSFILE = "replication.pgpass"
"""The replica's passfile for its connection to the primary (in its data directory, 0600)."""
STREAM_TIMEOUT = 60.0
"""Seconds to wait for the new replica to show as streaming on the primary."""

app = typer.Typer(help="PostgreSQL read replicas: add, status, remove.", no_args_is_help=True)


# --------------------------------------------------------------------------- pure parts

_PROGRESS = re.compile(r"(\d+)/(\d+) kB \((\d+)%\)")


def parse_progress(line: str) -> tuple[int, int] | None:
    """``pg_basebackup --progress``: ``"12345/67890 kB (18%), 0/1 tablespace"`` -> (done, total)
    in kB, or None for any other line."""
    match = _PROGRESS.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete lines of ``buffer`` (ended by CR or LF: pg_basebackup redraws its progress
    with CR on a terminal) and the unfinished rest."""
    parts = re.split(rb"[\r\n]", buffer)
    return [p.decode(errors="replace") for p in parts[:-1] if p], parts[-1]


def pgpass_line(user: str, password: str) -> str:
    """A ``.pgpass`` line for ``user`` on any host, port and database (":" and "\\" escaped)."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user)}:{esc(password)}\n"


def parse_size_mb(text: str) -> int:
    """``"1GB"``, ``"512MB"``, ``"64"`` (MB) -> megabytes; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*(kB|MB|GB|TB)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a size (e.g. 1GB, 512MB)")
    factor = {"kb": 1 / 1024, "mb": 1, "gb": 1024, "tb": 1024 * 1024}[
        (match.group(2) or "MB").lower()
    ]
    return int(int(match.group(1)) * factor)


@dataclass(frozen=True, slots=True)
class SettingChange:
    """A primary setting that must change for one more replica."""

    name: str
    current: str
    wanted: str
    restart: bool
    """``postmaster`` context: takes effect only after a restart."""


def wal_changes(
    settings: Mapping[str, str], senders_in_use: int, wal_keep_mb: int
) -> list[SettingChange]:
    """What the primary lacks for one more streaming replica: ``wal_level`` replica or
    logical, ``max_wal_senders`` with room for the base backup's stream and the replica's
    (two more than in use), ``wal_keep_size`` at least ``wal_keep_mb``."""
    changes: list[SettingChange] = []
    level = settings.get("wal_level", "replica")
    if level not in ("replica", "logical"):
        changes.append(SettingChange("wal_level", level, "replica", restart=True))
    senders = int(settings.get("max_wal_senders", "10"))
    need = senders_in_use + 2
    if senders < need:
        changes.append(
            SettingChange("max_wal_senders", str(senders), str(max(need, 10)), restart=True)
        )
    keep = int(settings.get("wal_keep_size", "0"))
    if keep < wal_keep_mb:
        changes.append(SettingChange("wal_keep_size", f"{keep}MB", f"{wal_keep_mb}MB", False))
    return changes


@dataclass(frozen=True, slots=True)
class HbaRule:
    """One line of ``pg_hba_file_rules``."""

    line: int
    type: str
    databases: tuple[str, ...]
    users: tuple[str, ...]
    address: str | None
    netmask: str | None
    method: str


def hba_allows(rules: Sequence[HbaRule], role: str, address: str | None) -> HbaRule | None:
    """The first rule that matches a replication connection of ``role`` from ``address``
    (None: over the unix socket) if it lets the role in (not ``reject``), else None.

    ``all`` in the database column does not match replication connections (PostgreSQL's
    rule); ``samehost``/``samenet`` are taken as matching (the caller checks locally)."""
    for rule in rules:
        if address is None and rule.type != "local":
            continue
        if address is not None and rule.type not in ("host", "hostssl", "hostnossl"):
            continue
        if "replication" not in rule.databases:
            continue
        if "all" not in rule.users and role not in rule.users:
            continue
        if address is not None and not _address_matches(rule, address):
            continue
        return None if rule.method == "reject" else rule
    return None


def _address_matches(rule: HbaRule, address: str) -> bool:
    if rule.address in (None, "all", "samehost", "samenet"):
        return True
    try:
        ip = ipaddress.ip_address(address)
        if rule.netmask:
            net = ipaddress.ip_network(f"{rule.address}/{rule.netmask}", strict=False)
        else:
            net = ipaddress.ip_network(rule.address, strict=False)
    except ValueError:
        return False  # a host name in pg_hba: cannot tell here
    return ip in net


def hba_line(role: str, address: str | None) -> str:
    """The pg_hba.conf line that lets ``role`` replicate from ``address`` with SCRAM."""
    if address is None:
        return f"local   replication  {role}  scram-sha-256"
    ip = ipaddress.ip_address(address)
    bits = 32 if ip.version == 4 else 128
    return f"host    replication  {role}  {ip}/{bits}  scram-sha-256"


def insert_hba(text: str, line: str, comment: str) -> str:
    """``text`` with ``line`` (and a comment above it) before its first rule: first match wins,
    so a broader rule further down cannot shadow it."""
    lines = text.splitlines()
    at = next(
        (i for i, raw in enumerate(lines) if raw.strip() and not raw.lstrip().startswith("#")),
        len(lines),
    )
    lines[at:at] = [f"# {comment}", line]
    return "\n".join(lines) + "\n"


def auto_conf_lines(settings: Mapping[str, str]) -> str:
    """``postgresql.auto.conf`` lines (values single-quoted, quotes doubled)."""
    return "".join(
        f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in settings.items()
    )


# --------------------------------------------------------------------------- hosts


@dataclass(frozen=True, slots=True)
class Host:
    """Where the replica's data directory is, and the OS user that owns it."""

    transport: Transport
    user: str | None
    """Run commands as this user (``runuser`` locally as root, ``sudo -n`` over ssh)."""
    local: bool

    @classmethod
    def make(cls, host: str | None, os_user: str | None) -> Host:
        from senex_scale.runtimes.transport import LocalTransport, SshTransport

        if host is None:
            user = os_user or ("postgres" if os.geteuid() == 0 else None)
            return cls(LocalTransport(), user, True)
        login, _, name = host.rpartition("@")
        if not name or " " in host:
            raise InputError(f"--host: {host!r} is not [user@]host")
        return cls(SshTransport(name, user=login or None), os_user, False)

    @property
    def where(self) -> str:
        return self.transport.where

    def argv(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        cmd = list(command)
        if env:
            cmd = ["env", *(f"{k}={v}" for k, v in env.items()), *cmd]
        if self.user is not None and self.local and os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        elif self.user is not None and not self.local:
            cmd = ["sudo", "-n", "-u", self.user, "--", *cmd]
        return self.transport.argv(cmd)

    def run(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> Completed:
        """Run ``command`` there; a non-zero exit is a ``PermanentError`` when ``check``."""
        argv = self.argv(command, env)
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise PermanentError(f"{self.where}: cannot run {argv[0]}: not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise TemporaryError(
                f"{self.where}: {shlex.join(command)} did not finish in {timeout:g}s"
            ) from exc
        from senex_scale.runtimes.transport import Completed

        result = Completed(tuple(argv), done.returncode, done.stdout, done.stderr)
        failure = self.transport.failed(result)
        if failure is not None:
            raise (PermanentError if failure.permanent else TemporaryError)(
                f"{self.where}: unreachable ({failure.reason})"
            )
        if check and done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-4:]) or f"exit {done.returncode}"
            raise PermanentError(f"{self.where}: {command[0]}: {redact_text(tail)}")
        return result

    def write_file(self, path: str, text: str, *, append: bool = False) -> None:
        """Write ``text`` to ``path`` there (umask 077: mode 0600 when created), via stdin."""
        op = ">>" if append else ">"
        self.run(["sh", "-c", f'umask 077 && cat {op} "$1"', "sh", path], stdin=text)

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def empty_or_missing(self, path: str) -> bool:
        script = '[ ! -e "$1" ] || { [ -d "$1" ] && [ -z "$(ls -A "$1")" ]; }'
        return self.run(["sh", "-c", script, "sh", path], check=False).returncode == 0


def pg_bin_dir(major: int, given: str | None) -> str:
    """The PostgreSQL binaries of the primary's major version (Debian's layout by default)."""
    return given or f"/usr/lib/postgresql/{major}/bin"


# --------------------------------------------------------------------------- the primary


def _settings(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, str, bool]]:
    rows = conn.execute(
        "SELECT name, setting, source, pending_restart FROM pg_settings"
        " WHERE name IN ('wal_level', 'max_wal_senders', 'wal_keep_size')"
    ).fetchall()
    return {r[0]: (r[1], r[2], bool(r[3])) for r in rows}


def prepare_settings(conn: psycopg.Connection[Any], wal_keep_mb: int) -> list[str]:
    """Check and fix the primary's WAL settings; the lines to print. A change that needs a
    restart raises ``PermanentError`` after ``ALTER SYSTEM`` (so the restart picks it up)."""
    notes: list[str] = []
    current = _settings(conn)
    used = int(conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()[0])  # type: ignore[index]
    changes = wal_changes({k: v[0] for k, v in current.items()}, used, wal_keep_mb)
    restart: list[str] = [f"{k} (pending)" for k, v in current.items() if v[2]]
    for change in changes:
        conn.execute(
            sql.SQL("ALTER SYSTEM SET {} = {}").format(
                sql.Identifier(change.name), sql.Literal(change.wanted)
            )
        )
        if change.restart:
            restart.append(f"{change.name} {change.current} -> {change.wanted}")
        else:
            notes.append(f"primary: {change.name} {change.current} -> {change.wanted} (reloaded)")
    if changes:
        conn.execute("SELECT pg_reload_conf()")
    if restart:
        raise PermanentError(
            "the primary needs a restart for: "
            + "; ".join(restart)
            + " (set with ALTER SYSTEM). Restart PostgreSQL on the primary "
            "(e.g. systemctl restart postgresql@15-main), then run replica add again"
        )
    if any(c.name == "wal_keep_size" for c in changes):
        time.sleep(0.2)
        value, source, _ = _settings(conn)["wal_keep_size"]
        if int(value) < wal_keep_mb:
            notes.append(
                f"warning: wal_keep_size is still {value}MB: set on the {source}, which "
                "overrides ALTER SYSTEM; a replica that falls further behind needs a new "
                "base backup"
            )
    if not notes:
        notes.append("primary: wal_level, max_wal_senders and wal_keep_size are fine")
    return notes


def prepare_role(conn: psycopg.Connection[Any], role: str, password: str) -> str:
    """Create the replication role (SCRAM verifier, never the password, in the statement) or
    give an existing role REPLICATION; its password is left as it is (other replicas use it)."""
    row = conn.execute(
        "SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = %s", [role]
    ).fetchone()
    if row is None:
        verifier = conn.pgconn.encrypt_password(
            password.encode(), role.encode(), b"scram-sha-256"
        ).decode()
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )
        return f"primary: created role {role} (REPLICATION, SCRAM-SHA-256)"
    if row[0] and row[1]:
        return f"primary: role {role} exists with REPLICATION LOGIN (password unchanged)"
    conn.execute(sql.SQL("ALTER ROLE {} WITH REPLICATION LOGIN").format(sql.Identifier(role)))
    return f"primary: role {role} given REPLICATION LOGIN (password unchanged)"


def _hba_rules(conn: psycopg.Connection[Any]) -> list[HbaRule]:
    rows = conn.execute(
        "SELECT line_number, type, database, user_name, address, netmask, auth_method"
        " FROM pg_hba_file_rules WHERE error IS NULL ORDER BY line_number"
    ).fetchall()
    return [
        HbaRule(r[0], r[1], tuple(r[2] or ()), tuple(r[3] or ()), r[4], r[5], r[6]) for r in rows
    ]


def replace_hba_file(hba_file: Path, line: str, name: str) -> None:
    """``line`` added at the top of ``hba_file``, the file replaced atomically with its owner
    and mode kept. The directory is usually the postgres account's and this runs as root:
    ``ops.files`` reads and writes without following a link planted there (a link or a
    hard-linked pg_hba.conf is refused)."""
    try:
        data, info = read_file(hba_file)
        text = insert_hba(data.decode("utf-8"), line, f"senex-scale replica add {name}")
        owner = (info.st_uid, info.st_gid) if os.geteuid() == 0 else None
        replace_file(
            hba_file, text.encode("utf-8"), mode=info.st_mode & 0o777, owner=owner, expect=info
        )
    except (OSError, UnicodeDecodeError, UnsafeFileError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PermanentError(
            f"cannot edit {hba_file}: {why}; add this line near its top and reload:\n  {line}"
        ) from None


def prepare_hba(
    conn: psycopg.Connection[Any], role: str, address: str | None, primary_local: bool, name: str
) -> str:
    """Make sure pg_hba lets ``role`` replicate from ``address``; what was done."""
    rule = hba_allows(_hba_rules(conn), role, address)
    if rule is not None:
        return f"primary: pg_hba line {rule.line} lets {role} replicate ({rule.method})"
    line = hba_line(role, address)
    hba_file = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
    if not primary_local or not os.path.lexists(hba_file):
        raise PermanentError(
            f"the primary's pg_hba.conf ({hba_file}) has no rule for {role} to replicate from "
            f"{address or 'the socket'}; add this line near its top and reload:\n  {line}"
        )
    replace_hba_file(hba_file, line, name)
    conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 5
    while hba_allows(_hba_rules(conn), role, address) is None:
        if time.monotonic() > deadline:
            raise PermanentError(f"{hba_file}: the added line is not accepted: {line}")
        time.sleep(0.1)
    return f"primary: added to {hba_file} and reloaded: {line}"


# --------------------------------------------------------------------------- add


@dataclass(frozen=True, slots=True)
class AddRequest:
    """Everything ``replica add`` needs, validated."""

    primary: str
    datadir: str
    port: int
    name: str
    registry: Path | None
    role: str
    host: Host
    listen: str
    advertise: str
    wal_keep_mb: int
    pg_bin: str | None


def _is_local_address(host: str) -> bool:
    if host.startswith("/") or host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == socket.gethostname()


def _replica_address(request: AddRequest, conn: psycopg.Connection[Any]) -> str | None:
    """The address the primary will see the replica's connections come from."""
    primary_host = str(parse_dsn(request.primary, "--primary").get("host") or "")
    if request.host.local:
        if primary_host.startswith("/"):
            return None
        seen = conn.execute("SELECT host(inet_client_addr())").fetchone()
        return str(seen[0]) if seen and seen[0] else None
    name = request.advertise
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0])
    except OSError as exc:
        raise InputError(f"--host: cannot resolve {name}: {exc}") from None


def _basebackup(request: AddRequest, bin_dir: str, passfile: str) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    params = parse_dsn(request.primary, "--primary")
    argv = [
        f"{bin_dir}/pg_basebackup",
        "-D",
        request.datadir,
        "-d",
        psycopg.conninfo.make_conninfo(
            "",
            host=params.get("host") or "127.0.0.1",
            port=params.get("port") or 5432,
            user=request.role,
            application_name=request.name,
            connect_timeout=10,
        ),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
        "--progress",
        "--verbose",
    ]
    command = request.host.argv(argv, {"PGPASSFILE": passfile})
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    rest = b""
    with Progress(
        TextColumn("base backup"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("base backup", total=None)
        while chunk := os.read(proc.stdout.fileno(), 4096):
            done_lines, rest = split_lines(rest + chunk)
            for line in done_lines:
                parsed = parse_progress(line)
                if parsed is None:
                    lines.append(line)
                    continue
                done, total = parsed
                progress.update(task, completed=done * 1024, total=max(total, done) * 1024)
        if proc.wait() == 0 and progress.tasks[0].total:
            progress.update(task, completed=progress.tasks[0].total)
    if proc.returncode != 0:
        tail = " | ".join(line for line in lines[-5:])
        raise PermanentError(f"pg_basebackup failed (exit {proc.returncode}): {redact_text(tail)}")


def _configure(request: AddRequest, password: str) -> None:
    """The replica's own settings, and its way back to the primary: ``pg_basebackup -R``
    wrote the temporary passfile's path into ``primary_conninfo``; the password goes to a
    0600 passfile in the data directory instead of into ``primary_conninfo`` itself, where
    ``SHOW primary_conninfo`` would print it."""
    datadir = PurePosixPath(request.datadir)
    passfile = str(datadir / PASSFILE)
    request.host.write_file(passfile, pgpass_line(request.role, password))
    params = parse_dsn(request.primary, "--primary")
    conninfo = psycopg.conninfo.make_conninfo(
        "",
        host=params.get("host") or "127.0.0.1",
        port=params.get("port") or 5432,
        user=request.role,
        passfile=passfile,
        application_name=request.name,
        connect_timeout=10,
    )
    settings = {
        "primary_conninfo": conninfo,
        "port": str(request.port),
        "listen_addresses": request.listen,
        "cluster_name": request.name,
        "hot_standby": "on",
        "unix_socket_directories": "",
    }
    request.host.write_file(
        str(datadir / "postgresql.auto.conf"),
        f"# senex-scale replica add {request.name}\n" + auto_conf_lines(settings),
        append=True,
    )
    if not request.host.exists(str(datadir / "postgresql.conf")):
        # Debian keeps the configuration in /etc/postgresql: the backup has none of it.
        request.host.write_file(str(datadir / "postgresql.conf"), "# senex-scale replica\n")
        request.host.write_file(
            str(datadir / "pg_hba.conf"),
            "local all postgres peer\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
            "host all all 0.0.0.0/0 scram-sha-256\n",
        )
        request.host.write_file(str(datadir / "pg_ident.conf"), "")


def _make_datadir(request: AddRequest) -> None:
    """The data directory, empty, 0700, owned by the OS user. As root here, it is made and
    handed over on its descriptor (``ops.files.make_directory``): a link swapped in since the
    emptiness check, or a file put in, is refused instead of followed."""
    if request.host.local and os.geteuid() == 0 and request.host.user:
        try:
            user = pwd.getpwnam(request.host.user)
        except KeyError:
            raise InputError(f"--os-user: no user {request.host.user!r} here") from None
        try:
            make_directory(request.datadir, owner=(user.pw_uid, user.pw_gid), mode=0o700)
        except UnsafeFileError as exc:
            raise PermanentError(f"--datadir: {exc}") from None
        except OSError as exc:
            raise PermanentError(f"--datadir: {request.datadir}: {exc.strerror}") from None
        return
    request.host.run(["mkdir", "-p", "-m", "0700", request.datadir])


def replica_dsn(primary: str, host: str, port: int, entry: ReplicaEntry | None = None) -> str:
    """The primary's DSN pointed at a replica (the entry's user, database and password_env)."""
    changes: dict[str, Any] = {"host": host, "port": port, "application_name": "senex-scale"}
    if entry is not None:
        if entry.dbname:
            changes["dbname"] = entry.dbname
        if entry.user:
            changes["user"] = entry.user
        if entry.password_env:
            changes["password"] = os.environ.get(entry.password_env) or None
    return with_params(primary, **changes)


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica as ``replica status`` reports it."""

    name: str
    address: str | None
    registered: bool
    state: str
    """``streaming``, ``catchup``, ... from pg_stat_replication, or ``not connected``."""
    in_recovery: bool | None
    lag_bytes: int | None
    lag_seconds: float | None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.error is None and self.state == "streaming" and self.in_recovery is not False


def probe_replica(dsn: str) -> tuple[bool, float | None, str]:
    """(in recovery, age of the last replayed transaction, replay LSN) of one replica.

    The age is an upper bound of the lag, not the lag: the caller makes it 0 when the replica
    has replayed the primary's current position. The replica's own "everything received is
    replayed" is never taken as 0: a replica whose WAL receiver has stopped has replayed all
    it received and can be arbitrarily far behind."""
    with connect(dsn, what="replica", timeout=3) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(),"
            " extract(epoch FROM now() - pg_last_xact_replay_timestamp()),"
            " pg_last_wal_replay_lsn()::text"
        ).fetchone()
    assert row is not None
    return bool(row[0]), None if row[1] is None else float(row[1]), str(row[2])


def add_replica(request: AddRequest, password: str) -> ReplicaState:
    """Steps 2-6 of the module docstring (inputs are checked by the command)."""
    with connect(request.primary, what="primary") as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
        for note in prepare_settings(conn, request.wal_keep_mb):
            out.print(note, markup=False)
        out.print(prepare_role(conn, request.role, password), markup=False)
        address = _replica_address(request, conn)
        primary_host = str(parse_dsn(request.primary, "--primary").get("host") or "127.0.0.1")
        local = _is_local_address(primary_host)
        out.print(prepare_hba(conn, request.role, address, local, request.name), markup=False)
    bin_dir = pg_bin_dir(major, request.pg_bin)
    _make_datadir(request)
    passfile = request.host.run(["mktemp", "-t", "senex-pgpass.XXXXXXXX"]).stdout.strip()
    try:
        request.host.write_file(passfile, pgpass_line(request.role, password))
        out.print(f"{request.host.where}: pg_basebackup into {request.datadir}", markup=False)
        try:
            _basebackup(request, bin_dir, passfile)
        except SenexError:
            request.host.run(
                ["sh", "-c", 'rm -rf -- "$1"/* "$1"/.[!.]*', "sh", request.datadir], check=False
            )
            raise
    finally:
        request.host.run(["rm", "-f", "--", passfile], check=False)
    _configure(request, password)
    log = str(PurePosixPath(request.datadir) / "startup.log")
    pg_ctl = [f"{bin_dir}/pg_ctl", "-D", request.datadir, "-l", log, "-w", "-t", "60", "start"]
    started = request.host.run(pg_ctl, check=False, timeout=90)
    if started.returncode != 0:
        tail = request.host.run(["tail", "-n", "5", log], check=False).stdout
        raise PermanentError(
            f"pg_ctl start failed: {redact_text(started.stderr.strip() or tail.strip())}; the "
            f"data directory is kept: inspect {log}, then replica remove --purge"
        )
    out.print(f"{request.host.where}: started on port {request.port}", markup=False)
    try:
        return verify(request)
    except SenexError:
        stop = [f"{bin_dir}/pg_ctl", "-D", request.datadir, "-m", "fast", "-w", "stop"]
        request.host.run(stop, check=False, timeout=90)
        raise


def verify(request: AddRequest) -> ReplicaState:
    """pg_is_in_recovery() on the replica, streaming on the primary, the lag."""
    dsn = replica_dsn(request.primary, request.advertise, request.port)
    deadline = time.monotonic() + STREAM_TIMEOUT
    with connect(request.primary, what="primary") as conn:
        while True:
            row = conn.execute(
                "SELECT state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint"
                " FROM pg_stat_replication WHERE application_name = %s",
                [request.name],
            ).fetchone()
            if row is not None and row[0] == "streaming" and row[1] is not None:
                break
            if time.monotonic() > deadline:
                raise PermanentError(
                    f"replica {request.name} is not streaming after {STREAM_TIMEOUT:g}s "
                    f"(state {row[0] if row else 'not connected'}); see "
                    f"{PurePosixPath(request.datadir) / 'startup.log'}"
                )
            time.sleep(0.2)
    recovery, seconds, _ = probe_replica(dsn)
    if not recovery:
        raise PermanentError(f"replica {request.name}: pg_is_in_recovery() is false")
    return ReplicaState(
        request.name,
        f"{request.advertise}:{request.port}",
        request.registry is not None,
        "streaming",
        recovery,
        None if row[1] is None else int(row[1]),
        seconds,
    )


def registry_path(given: Path | None) -> Path:
    return given or Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def register(path: Path, entry: ReplicaEntry) -> None:
    """Add or replace ``entry`` in the registry (atomic replace, no secrets in it)."""
    entries = [e for e in read_registry(path) if e.alias != entry.alias]
    try:
        write_registry(path, [*entries, entry], create_parents=True)
    except (OSError, UnsafeFileError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PermanentError(
            f"replica {entry.alias} runs but could not be registered in {path}: {why}; "
            f'add {{"alias": "{entry.alias}", "host": "{entry.host}", "port": {entry.port}}} '
            "to its replicas list"
        ) from None


def unregister(path: Path, name: str) -> bool:
    entries = read_registry(path)
    kept = [e for e in entries if e.alias != name]
    if len(kept) == len(entries):
        return False
    try:
        write_registry(path, kept)
    except (OSError, UnsafeFileError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PermanentError(f"cannot unregister {name} from {path}: {why}") from None
    return True


def _already_there(primary: str, entry: ReplicaEntry) -> bool:
    try:
        recovery, _, _ = probe_replica(replica_dsn(primary, entry.host, entry.port or 5432, entry))
    except SenexError:
        return False
    return recovery


Registry = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Replica registry JSON the Django router reads "
        f"(default ${REGISTRY_ENV} or {DEFAULT_REGISTRY}).",
    ),
]
Primary = Annotated[
    str,
    typer.Option(
        "--primary",
        help="The primary: libpq DSN or postgresql:// URL of a superuser (password from "
        "PGPASSWORD or ~/.pgpass rather than in the DSN).",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("add")
def add_command(
    primary: Primary,
    datadir: Annotated[
        str, typer.Option("--datadir", help="New data directory (absent or empty).")
    ],
    port: Annotated[int, typer.Option("--port", help="Port of the new replica.")],
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="[user@]host to create the replica on over ssh (default: here)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Replica name: registry alias and application_name (default replica_PORT).",
        ),
    ] = None,
    registry: Registry = None,
    role: Annotated[
        str, typer.Option("--role", help="Replication role on the primary.")
    ] = "replicator",
    password_env: Annotated[
        str, typer.Option("--password-env", help="Environment variable with the role's password.")
    ] = PASSWORD_ENV,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="File (mode 0600) with the role's password."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen", help="listen_addresses of the replica (default 127.0.0.1 here, * over ssh)."
        ),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="Host the application connects to (default: --host's, or 127.0.0.1).",
        ),
    ] = None,
    os_user: Annotated[
        str | None,
        typer.Option(
            "--os-user", help="OS user that owns the data directory (default postgres when root)."
        ),
    ] = None,
    wal_keep_size: Annotated[
        str, typer.Option("--wal-keep-size", help="Minimum wal_keep_size on the primary.")
    ] = "1GB",
    pg_bin: Annotated[
        str | None,
        typer.Option(
            "--pg-bin",
            help="PostgreSQL bin directory (default Debian's for the primary's version).",
        ),
    ] = None,
) -> None:
    """Add a streaming read replica: prepare the primary, base backup, start, verify, register."""
    replica_name = name or f"replica_{port}"
    if not ALIAS_PATTERN.fullmatch(replica_name):
        raise InputError(f"--name: {replica_name!r} is not a name (letters, digits, _; at most 63)")
    if replica_name in RESERVED_ALIASES:
        raise InputError(
            f"--name: {replica_name!r} is the primary's alias in Django, not a replica's"
        )
    if not 1 <= port <= 65535:
        raise InputError(f"--port: {port} is not in 1..65535")
    if not datadir.startswith("/"):
        raise InputError(f"--datadir: {datadir!r} must be an absolute path")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", role):
        raise InputError(f"--role: {role!r} is not a role name (letters, digits, _)")
    try:
        wal_keep_mb = parse_size_mb(wal_keep_size)
    except ValueError as exc:
        raise InputError(f"--wal-keep-size: {exc}") from None
    parse_dsn(primary, "--primary")
    reg = registry_path(registry)
    entries = read_registry(reg)
    target = Host.make(host, os_user)
    where = advertise or (host.rpartition("@")[2] if host else "127.0.0.1")
    existing = next((e for e in entries if e.alias == replica_name), None)
    if existing is not None:
        if _already_there(primary, existing):
            out.print(f"replica {replica_name} is registered and in recovery: nothing to do")
            return
        raise InputError(
            f"--name: {replica_name} is registered in {reg} but does not answer as a replica; "
            f"run replica remove --name {replica_name} first"
        )
    if target.local:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise InputError(f"--port: {port} is in use on this host") from None
    if not target.empty_or_missing(datadir):
        raise InputError(f"--datadir: {datadir} exists and is not empty ({target.where})")
    password = read_secret(password_env, password_file, "replication password")
    request = AddRequest(
        primary=primary,
        datadir=datadir,
        port=port,
        name=replica_name,
        registry=reg,
        role=role,
        host=target,
        listen=listen or ("127.0.0.1" if target.local else "*"),
        advertise=where,
        wal_keep_mb=wal_keep_mb,
        pg_bin=pg_bin,
    )
    state = add_replica(request, password)
    register(reg, ReplicaEntry(alias=replica_name, host=where, port=port))
    out.print(
        f"replica {replica_name}: in recovery, streaming, lag {human_bytes(state.lag_bytes)} / "
        f"{state.lag_seconds or 0:.1f}s; registered in {reg}",
        markup=False,
    )


# --------------------------------------------------------------------------- status


def replica_states(primary: str, reg: Path) -> list[ReplicaState]:
    """Every replica the primary streams to and every registered one, with lag."""
    entries = {e.alias: e for e in read_registry(reg)}
    with connect(primary, what="primary") as conn:
        current = str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        streams = {
            r[0]: r
            for r in conn.execute(
                "SELECT application_name, host(client_addr), state,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
                " extract(epoch FROM replay_lag)"
                " FROM pg_stat_replication"
            ).fetchall()
        }
        states: list[ReplicaState] = []
        for name in sorted(set(streams) | set(entries)):
            stream = streams.get(name)
            entry = entries.get(name)
            state = str(stream[2]) if stream else "not connected"
            lag_bytes = None if stream is None or stream[3] is None else int(stream[3])
            lag_seconds = None if stream is None or stream[4] is None else float(stream[4])
            recovery: bool | None = None
            error = None
            address = f"{stream[1]}" if stream else None
            if entry is not None:
                address = f"{entry.host}:{entry.port or parse_dsn(primary).get('port') or 5432}"
                try:
                    dsn = replica_dsn(primary, entry.host, int(address.rsplit(":", 1)[1]), entry)
                    recovery, lag_seconds, replay = probe_replica(dsn)
                    diff = conn.execute(
                        "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint", [current, replay]
                    ).fetchone()
                    lag_bytes = int(diff[0]) if diff and diff[0] is not None else lag_bytes
                    if lag_bytes is not None and lag_bytes <= 0:
                        lag_seconds = 0.0  # it has replayed the primary's position: current
                    if not recovery:
                        error = "not in recovery (promoted?)"
                except SenexError as exc:
                    error = str(exc)
                if stream is None and error is None:
                    error = "not streaming from this primary"
            states.append(
                ReplicaState(
                    name, address, entry is not None, state, recovery, lag_bytes, lag_seconds, error
                )
            )
    return states


@app.command("status")
def status_command(primary: Primary, registry: Registry = None, json_out: JsonFlag = False) -> None:
    """Lag in bytes and seconds per replica (exit 1 when a registered replica is unhealthy)."""
    reg = registry_path(registry)
    states = replica_states(primary, reg)
    unhealthy = [s for s in states if s.registered and not s.healthy]
    if json_out:
        print_json(
            {
                "registry": str(reg),
                "replicas": [asdict(s) | {"healthy": s.healthy} for s in states],
                "healthy": not unhealthy,
            }
        )
    else:
        table = Table(title=f"replicas of {redact_dsn(primary)}", title_justify="left")
        for col in (
            "name",
            "address",
            "registered",
            "state",
            "recovery",
            "lag",
            "lag s",
            "problem",
        ):
            table.add_column(col)
        for s in states:
            table.add_row(
                s.name,
                s.address or "-",
                "yes" if s.registered else "no",
                s.state,
                "-" if s.in_recovery is None else str(s.in_recovery).lower(),
                human_bytes(s.lag_bytes),
                "-" if s.lag_seconds is None else f"{s.lag_seconds:.1f}",
                s.error or "",
            )
        out.print(table if states else "no replicas (none streaming, none registered)")
    if unhealthy:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- remove


def purge_local(datadir: str) -> None:
    """Delete ``datadir`` here as root, reached without following a link someone else
    planted on the way (``ops.files.directory``; rmtree itself never follows one)."""
    folder = PurePosixPath(datadir)
    try:
        with directory(str(folder.parent)) as parent:
            shutil.rmtree(folder.name, dir_fd=parent)
    except (OSError, UnsafeFileError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PermanentError(f"--purge: cannot delete {datadir}: {why}") from None


@app.command("remove")
def remove_command(
    primary: Primary,
    name: Annotated[str, typer.Option("--name", help="The replica's registry alias.")],
    registry: Registry = None,
    datadir: Annotated[
        str | None,
        typer.Option("--datadir", help="Its data directory (default: asked from the replica)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="[user@]host it runs on (ssh).")
    ] = None,
    os_user: Annotated[
        str | None, typer.Option("--os-user", help="OS user that owns the data directory.")
    ] = None,
    purge: Annotated[bool, typer.Option("--purge", help="Delete the data directory too.")] = False,
    pg_bin: Annotated[
        str | None, typer.Option("--pg-bin", help="PostgreSQL bin directory.")
    ] = None,
) -> None:
    """Unregister a replica (the router stops reading from it), stop it, optionally purge it."""
    reg = registry_path(registry)
    entry = next((e for e in read_registry(reg) if e.alias == name), None)
    if entry is None and datadir is None:
        raise InputError(f"--name: {name} is not in {reg}; give --datadir to stop it anyway")
    target = Host.make(host, os_user)
    major = 15
    if datadir is None and entry is not None:
        dsn = replica_dsn(primary, entry.host, entry.port or 5432, entry)
        with connect(dsn, what=f"replica {name}") as conn:
            datadir = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
            major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
    else:
        with connect(primary, what="primary") as conn:
            major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
    assert datadir is not None
    if purge and not target.exists(str(PurePosixPath(datadir) / "standby.signal")):
        raise InputError(
            f"--purge: {datadir} is not a standby's data directory (no standby.signal)"
        )
    if entry is not None and unregister(reg, name):
        out.print(f"unregistered {name} from {reg}")
    bin_dir = pg_bin_dir(major, pg_bin)
    if target.exists(str(PurePosixPath(datadir) / "postmaster.pid")):
        target.run(
            [f"{bin_dir}/pg_ctl", "-D", datadir, "-m", "fast", "-w", "-t", "60", "stop"], timeout=90
        )
        out.print(f"{target.where}: stopped the replica in {datadir}", markup=False)
    else:
        out.print(f"{target.where}: {datadir} is not running", markup=False)
    if purge:
        if target.local and os.geteuid() == 0:
            purge_local(datadir)  # its parent may be root's, so not as the owner
        else:
            target.run(["rm", "-rf", "--", datadir])
        out.print(f"{target.where}: deleted {datadir}", markup=False)
