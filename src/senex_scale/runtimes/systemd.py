"""Instances as systemd template units (``django@3.service``), driven through ``systemctl``.

The production runtime: each instance of a pool is one instance of a template unit, usually a
Podman container from a Quadlet file (``/etc/containers/systemd/django@.container``, which
systemd's Quadlet generator turns into ``django@.service`` on ``daemon-reload``). Instance
``n`` listens on ``BASE + n``, the pool's ``port = "BASE + n"``; the unit gets n as ``%i``
and computes its port from it (``Exec=... --port $((8000 + %i))`` through ``/bin/sh -c``, or
the app reads ``%i``), which keeps working at n >= 10 where ``PublishPort=800%i`` breaks.

systemctl runs on this host, on another host over ssh, or inside a container through nsenter
(``runtimes.transport``): always an argv, never a shell string. Settings
(``[pools.NAME] runtime = { type = "systemd", ... }``)::

    unit           the instance's unit name, {n} exactly once: "django@{n}.service" (required)
    scope          "system" (default) or "user" (systemctl --user: the user's own manager;
                   over ssh that needs `loginctl enable-linger USER` on the host)
    host           run systemctl on this host over ssh (argv; the remote command is one
                   shlex-quoted argument); with ssh_user, ssh_port, ssh_identity (a key file),
                   ssh_options (["StrictHostKeyChecking=yes", ...], each passed with -o)
    nsenter        run systemctl inside a container: its init's PID, or the absolute path of
                   a file holding it (read at every command, so a restarted container is found)
    instance_host  the address the balancer and the health check use for the instances
                   (default: host when over ssh, else 127.0.0.1)
    systemctl      the systemctl program there (default "systemctl")
    timeout        seconds for list, status and daemon-reload, and ssh's connect (default 15s)
    start_timeout  seconds `systemctl start` may take: it waits for the unit to be started
                   (Type=notify: READY=1), not --no-block (default 120s)
    stop_timeout   seconds `systemctl stop` may take: it waits for the unit to stop, which
                   TimeoutStopSec= bounds on the host (default 120s; keep it above that)

States (``ActiveState`` → ``UnitState``): active, reloading, refreshing → running;
activating → starting; deactivating → stopping; inactive, maintenance → stopped; failed →
failed. A unit that is masked or whose file is broken (``LoadState`` masked, bad-setting,
error) is failed. ``started_at`` (``ExecMainStartTimestamp``) and ``pid`` (``MainPID``) are
given while the unit is not inactive or failed.

Failures: ssh unable to connect, the container gone, a command over its timeout, the manager
not answering on its bus, a start job that failed (the unit's process exited: see
``journalctl -u UNIT``) are ``TemporaryError``; a unit or template that does not exist, is
masked or has a broken file, a permission refusal, ssh refusing the key or the host key, and
a missing ssh/nsenter/systemctl program are ``PermanentError``, with the unit name and
systemctl's (or ssh's) own message.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictInt, model_validator

from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.policy.models import Host, HostName, PidOrFile, Pool, SshOption, UserName
from senex_scale.runtimes.base import RuntimeInstance, UnitState, instance_address
from senex_scale.runtimes.transport import (
    Completed,
    LocalTransport,
    NsenterTransport,
    PidFileTransport,
    SshTransport,
    Transport,
    run,
    transport_for,
)
from senex_scale.settings import Settings, Timeout, parse_settings

__all__ = [
    "PROPERTIES",
    "SystemdRuntime",
    "SystemdSettings",
    "map_state",
    "parse_list_units",
    "parse_show",
    "record_instance",
]

PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "ExecMainStartTimestamp",
    "LoadError",
)
"""What ``systemctl show`` is asked for (``--property=``), in this order."""

_ACTIVE: dict[str, UnitState] = {
    "active": UnitState.RUNNING,
    "reloading": UnitState.RUNNING,
    "refreshing": UnitState.RUNNING,
    "activating": UnitState.STARTING,
    "deactivating": UnitState.STOPPING,
    "inactive": UnitState.STOPPED,
    "maintenance": UnitState.STOPPED,
    "failed": UnitState.FAILED,
}
_BROKEN_LOAD = ("masked", "bad-setting", "error")
_PERMANENT = re.compile(
    r"is masked|bad unit file|bad-setting|invalid unit name|"
    r"not a valid unit name|neither a valid|access denied|authentication required|"
    r"permission denied|no such file|command not found",
    re.IGNORECASE,
)
_UNIT_CHARS = r"[A-Za-z0-9:_.\\-]"


# --------------------------------------------------------------------------- parsing (pure)


def parse_show(text: str) -> list[dict[str, str]]:
    """The records of ``systemctl show`` output: one per unit, separated by blank lines;
    ``Key=Value`` lines (a value may itself contain "=")."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        records.append(current)
    return records


def parse_list_units(text: str) -> list[str]:
    """Unit names from ``systemctl list-units --plain --no-legend`` (the first column; a
    leading status mark such as "●", printed by some versions, is skipped)."""
    names: list[str] = []
    for line in text.splitlines():
        for word in line.split():
            if re.fullmatch(rf"{_UNIT_CHARS}+@?{_UNIT_CHARS}*\.[a-z]+", word):
                names.append(word)
                break
            if word.isalnum():
                break
    return names


def map_state(active: str, load: str = "loaded") -> UnitState:
    """The ``UnitState`` of a unit's ``ActiveState`` (and ``LoadState``: masked or broken
    unit files cannot run, so they are failed)."""
    if load in _BROKEN_LOAD:
        return UnitState.FAILED
    return _ACTIVE.get(active, UnitState.FAILED)


def _timestamp(value: str) -> float | None:
    """``@1795758925`` (``--timestamp=unix``) as epoch seconds; empty or "n/a" is None."""
    if value.startswith("@"):
        try:
            return float(value[1:])
        except ValueError:
            return None
    return None


def record_instance(n: int, record: Mapping[str, str], host: str | None = None) -> RuntimeInstance:
    """One ``systemctl show`` record as instance ``n`` (on ``host``, a ``[hosts]`` name)."""
    state = map_state(record.get("ActiveState", ""), record.get("LoadState", ""))
    alive = state not in (UnitState.STOPPED, UnitState.FAILED)
    try:
        pid = int(record.get("MainPID", "0") or 0)
    except ValueError:
        pid = 0
    return RuntimeInstance(
        n=n,
        state=state,
        started_at=_timestamp(record.get("ExecMainStartTimestamp", "")) if alive else None,
        pid=pid if alive and pid > 0 else None,
        host=host,
    )


# --------------------------------------------------------------------------- settings


def _unit(value: str) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError(f'"{value}" is not a unit name template: {exc}') from None
    unknown = sorted({f for f in fields if f != "n"})
    if unknown:
        raise ValueError(f'"{value}": unknown placeholder {{{unknown[0]}}}; use {{n}}')
    if fields.count("n") != 1:
        raise ValueError(f'"{value}" must contain {{n}} exactly once (e.g. "django@{{n}}.service")')
    name = value.format(n=1)
    if not re.fullmatch(rf"{_UNIT_CHARS}+@{_UNIT_CHARS}*\.service", name):
        raise ValueError(
            f'"{value}" is not a template instance name like "django@{{n}}.service" '
            "(PREFIX@...{n}....service; letters, digits and :_.\\- only)"
        )
    if "@" not in value.split("{n}")[0]:
        raise ValueError(f'"{value}": {{n}} must come after the "@" (e.g. "django@{{n}}.service")')
    return value


class SystemdSettings(Settings):
    """``[pools.NAME] runtime = { type = "systemd", ... }`` without ``type``."""

    unit: Annotated[str, AfterValidator(_unit)]
    scope: Literal["system", "user"] = "system"
    host: HostName | None = None
    ssh_user: UserName | None = None
    ssh_port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    ssh_identity: str | None = None
    ssh_options: tuple[SshOption, ...] = ()
    nsenter: PidOrFile | None = None
    instance_host: HostName | None = None
    systemctl: str = Field(default="systemctl", min_length=1)
    timeout: Timeout = 15.0
    start_timeout: Timeout = 120.0
    stop_timeout: Timeout = 120.0

    @model_validator(mode="after")
    def _one_transport(self) -> SystemdSettings:
        if self.host is not None and self.nsenter is not None:
            raise ValueError("give host (ssh) or nsenter (a container), not both")
        ssh = (self.ssh_user, self.ssh_port, self.ssh_identity)
        if self.host is None and (any(v is not None for v in ssh) or self.ssh_options):
            raise ValueError("ssh_user, ssh_port, ssh_identity and ssh_options need host")
        return self


# --------------------------------------------------------------------------- runtime


class SystemdRuntime:
    """The instances ``UNIT(n)`` of one systemd template unit as a pool's instances."""

    def __init__(
        self,
        pool_name: str,
        pool: Pool,
        options: dict[str, Any],
        *,
        host: Host | None = None,
        host_name: str | None = None,
    ) -> None:
        self.pool = pool_name
        self._pool = pool
        self.host = host
        """The ``[hosts]`` entry it runs on (a pool on several hosts: ``SpreadRuntime``)."""
        self.host_name = host_name
        self.settings = parse_settings(SystemdSettings, ("pools", pool_name, "runtime"), options)
        s = self.settings
        pattern = ""
        glob = ""
        for literal, field, _, _ in string.Formatter().parse(s.unit):
            pattern += re.escape(literal)
            glob += literal
            if field == "n":
                pattern += r"(?P<n>[1-9][0-9]*)"
                glob += "*"
        self._name_re = re.compile(pattern)
        self.glob = glob
        """The ``list-units`` pattern of the pool's instances ("django@*.service")."""
        self.template = re.sub(r"@.*\.service$", "@.service", s.unit.format(n=1))
        """The template unit ("django@.service")."""

    def __repr__(self) -> str:
        s = self.settings
        if self.host is not None:
            where = transport_for(self.host).where
        elif s.host is not None:
            where = SshTransport(s.host, user=s.ssh_user).where
        elif s.nsenter is not None:
            where = f"nsenter -t {s.nsenter}"
        else:
            where = LocalTransport().where
        return f"SystemdRuntime(pool={self.pool!r}, unit={s.unit!r}, where={where!r})"

    # ------------------------------------------------------------------ names and places

    def unit_name(self, n: int) -> str:
        """The unit of instance ``n`` ("django@3.service")."""
        return self.settings.unit.format(n=n)

    def instance_of(self, unit: str) -> int | None:
        """The instance number of a unit name, or None when it is not one of this pool's."""
        match = self._name_re.fullmatch(unit)
        return int(match.group("n")) if match else None

    def address(self, n: int) -> str:
        """``host:port`` where instance ``n`` answers (the balancer's and health check's)."""
        s = self.settings
        if self.host is not None:
            return instance_address(self.pool, self._pool, n, self.host.address)
        host = s.instance_host or s.host or "127.0.0.1"
        return instance_address(self.pool, self._pool, n, host)

    def transport(self) -> Transport:
        """Where systemctl runs (built per command: a PID file is read each time)."""
        s = self.settings
        if self.host is not None:
            return transport_for(self.host)
        if s.host is not None:
            return SshTransport(
                s.host,
                user=s.ssh_user,
                port=s.ssh_port,
                identity=s.ssh_identity,
                options=s.ssh_options,
                connect_timeout=s.timeout,
            )
        if s.nsenter is None:
            return LocalTransport()
        if isinstance(s.nsenter, int):
            return NsenterTransport(s.nsenter)
        try:
            return PidFileTransport(s.nsenter).resolve()
        except TemporaryError as exc:
            raise TemporaryError(f"pools.{self.pool}.runtime.nsenter: {exc}") from exc

    # ------------------------------------------------------------------ systemctl

    def _systemctl(self, *args: str, timeout: float | None = None) -> Completed:
        """``systemctl --no-pager --system|--user ARGS`` there; raises on transport failures
        and timeouts (TemporaryError); the exit status is the caller's to judge."""
        s = self.settings
        command = [s.systemctl, "--no-pager", f"--{s.scope}", *args]
        return run(self.transport(), command, timeout or s.timeout)

    def _failure(self, done: Completed, what: str, unit: str) -> PermanentError | TemporaryError:
        """The error for a systemctl command that exited non-zero."""
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        text = (
            f"pool {self.pool}: {self.transport().where}: systemctl {what} {unit} failed "
            f"(exit {done.returncode}): {message}"
        )
        if "failed to connect to bus" in message.lower():
            hint = (
                " (is systemd running there? --user needs the user's manager: "
                "loginctl enable-linger)"
                if self.settings.scope == "user"
                else " (is systemd running there?)"
            )
            return TemporaryError(text + hint)
        if done.returncode == 5 or re.search(r"not found|not loaded", message):
            return PermanentError(f"{text}; {self.missing_hint()}")
        if _PERMANENT.search(message):
            return PermanentError(text)
        return TemporaryError(f"{text}; see journalctl -u {unit}")

    def missing_hint(self) -> str:
        """What to check when the template unit does not exist."""
        quadlet = self.template.replace(".service", ".container")
        where = (
            "~/.config/containers/systemd"
            if self.settings.scope == "user"
            else "/etc/containers/systemd"
        )
        return (
            f"is {self.template} installed and systemd reloaded (daemon-reload)? For Quadlet: "
            f"{where}/{quadlet}; `/usr/libexec/podman/quadlet -dryrun` shows why a file "
            "made no unit (e.g. an unsupported key)"
        )

    def _show(self, units: Sequence[str]) -> list[dict[str, str]]:
        properties = ",".join(PROPERTIES)
        done = self._systemctl("show", "--timestamp=unix", f"--property={properties}", *units)
        if done.returncode != 0:
            raise self._failure(done, "show", " ".join(units))
        return parse_show(done.stdout)

    # ------------------------------------------------------------------ Runtime

    def list(self) -> list[RuntimeInstance]:
        """Every loaded instance of the template (running, starting, stopping, failed, or
        inactive but still known to systemd), and instance 1 (which checks the template)."""
        done = self._systemctl("list-units", "--all", "--plain", "--no-legend", "--full", self.glob)
        if done.returncode != 0:
            raise self._failure(done, "list-units", self.glob)
        numbers = {n for n in map(self.instance_of, parse_list_units(done.stdout)) if n}
        probe = self.unit_name(1)
        names = sorted({self.unit_name(n) for n in numbers} | {probe})
        found: dict[int, RuntimeInstance] = {}
        for record in self._show(names):
            n = self.instance_of(record.get("Id", ""))
            if n is None:
                continue
            if record.get("LoadState") == "not-found":
                if n == 1 and 1 not in numbers:
                    raise PermanentError(
                        f"pool {self.pool}: {self.transport().where}: no unit {probe} "
                        f"({record.get('LoadError') or 'not found'}); {self.missing_hint()}"
                    )
                continue
            found[n] = record_instance(n, record, self.host_name)
        return [found[n] for n in sorted(found)]

    def status(self, n: int) -> RuntimeInstance:
        """Instance ``n`` as systemd sees it now."""
        unit = self.unit_name(n)
        records = self._show([unit])
        if not records or records[0].get("LoadState") == "not-found":
            load_error = records[0].get("LoadError", "") if records else ""
            raise PermanentError(
                f"pool {self.pool}: {self.transport().where}: no unit {unit} "
                f"({load_error or 'not found'}); {self.missing_hint()}"
            )
        return record_instance(n, records[0], self.host_name)

    def start(self, n: int) -> None:
        """``systemctl start UNIT``: returns once started (bounded by start_timeout)."""
        unit = self.unit_name(n)
        done = self._systemctl("start", unit, timeout=self.settings.start_timeout)
        if done.returncode != 0:
            raise self._failure(done, "start", unit)

    def stop(self, n: int, grace: float | None = None) -> None:
        """``systemctl stop UNIT``: returns once stopped (bounded by stop_timeout); a stopped
        instance is fine. ``grace`` is the unit's own business here: systemd sends SIGTERM
        and waits ``TimeoutStopSec`` (the rendered Quadlet units set ``StopTimeout`` from the
        pool's stop timeout), so a worker's warm shutdown gets that long."""
        unit = self.unit_name(n)
        done = self._systemctl("stop", unit, timeout=self.settings.stop_timeout)
        if done.returncode != 0:
            raise self._failure(done, "stop", unit)

    def daemon_reload(self) -> None:
        """``systemctl daemon-reload``: after unit or Quadlet files changed (reruns the
        generators, so ``NAME@.container`` becomes ``NAME@.service``)."""
        done = self._systemctl("daemon-reload")
        if done.returncode != 0:
            raise self._failure(done, "daemon-reload", "")
