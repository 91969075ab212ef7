"""Where a runtime's commands run: this host, another host over ssh, or inside a container.

A transport turns an argv (``["systemctl", "start", "web@3.service"]``) into the argv that runs
it there, and tells a failure of the transport itself (ssh could not connect, the container is
gone) from a failure of the command, which the runtime interprets. Nothing is ever a shell
string built by concatenation: over ssh the remote command is the argv quoted with
``shlex.join`` as ONE argument (ssh hands it to the remote user's POSIX shell, which unquotes
it back into the same argv), and every other argument is a separate argv element.

::

    LocalTransport()                      systemctl start web@3.service
    SshTransport("app1", user="deploy")   ssh -o BatchMode=yes -o ConnectTimeout=10 -l deploy
                                              -- app1 'systemctl start web@3.service'
    NsenterTransport(4242)                nsenter -t 4242 -a -- systemctl start web@3.service

``run`` bounds every command by a timeout and kills its whole process group when it passes
(nsenter and ssh fork children that a plain kill would leave behind).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from senex_scale.errors import PermanentError, TemporaryError

if TYPE_CHECKING:
    from senex_scale.policy.models import Host

__all__ = [
    "Completed",
    "Failure",
    "LocalTransport",
    "NsenterTransport",
    "PidFileTransport",
    "SshTransport",
    "Transport",
    "run",
    "transport_for",
]

SSH_UNREACHABLE = 255
"""ssh's exit status for its own errors (connection refused, host key, authentication)."""
_SSH_PERMANENT = re.compile(
    r"Permission denied|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
    r"Bad configuration option|Too many authentication failures"
)
"""ssh errors that a retry cannot fix: the key, the host key, the configuration."""


@dataclass(frozen=True, slots=True)
class Completed:
    """A command that ran to its end (any exit status)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The transport itself failed: the command did not run."""

    reason: str
    permanent: bool = False
    """True when retrying cannot help (ssh refused the key or the host key)."""


class Transport(Protocol):
    """Turns a command into the argv that runs it somewhere."""

    @property
    def where(self) -> str:
        """For messages: "this host", "ssh app1", "nsenter -t 4242"."""
        ...

    def argv(self, command: Sequence[str]) -> list[str]:
        """The argv that runs ``command`` there."""
        ...

    def failed(self, done: Completed) -> Failure | None:
        """Why the transport itself failed (the command did not run), or None."""
        ...


@dataclass(frozen=True, slots=True)
class LocalTransport:
    """Commands run on this host, as they are."""

    @property
    def where(self) -> str:
        return "this host"

    def argv(self, command: Sequence[str]) -> list[str]:
        return list(command)

    def failed(self, done: Completed) -> Failure | None:
        return None


@dataclass(frozen=True, slots=True)
class SshTransport:
    """Commands run on ``host`` through OpenSSH, non-interactively (``BatchMode=yes``)."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    options: tuple[str, ...] = ()
    """``-o`` options, each "Key=Value" (e.g. "StrictHostKeyChecking=yes")."""
    connect_timeout: float = 10.0
    ssh: str = "ssh"

    @property
    def where(self) -> str:
        return f"ssh {self.user + '@' if self.user else ''}{self.host}"

    def argv(self, command: Sequence[str]) -> list[str]:
        argv = [self.ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout:g}"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.identity is not None:
            argv += ["-i", self.identity]
        if self.user is not None:
            argv += ["-l", self.user]
        for option in self.options:
            argv += ["-o", option]
        return [*argv, "--", self.host, shlex.join(command)]

    def failed(self, done: Completed) -> Failure | None:
        if done.returncode != SSH_UNREACHABLE:
            return None
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"ssh exited with {SSH_UNREACHABLE}"
        return Failure(reason, permanent=bool(_SSH_PERMANENT.search(done.stderr)))


@dataclass(frozen=True, slots=True)
class NsenterTransport:
    """Commands run inside every namespace of process ``pid`` (a container's init), with a
    clean environment: the host's variables do not leak into the container's commands."""

    pid: int
    nsenter: str = "nsenter"
    path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    @property
    def where(self) -> str:
        return f"nsenter -t {self.pid}"

    def argv(self, command: Sequence[str]) -> list[str]:
        env = ["env", "-i", f"PATH={self.path}", "LANG=C.UTF-8"]
        return [self.nsenter, "-t", str(self.pid), "-a", "--", *env, *command]

    def failed(self, done: Completed) -> Failure | None:
        lines = done.stderr.strip().splitlines()
        if done.returncode != 0 and lines and lines[0].startswith("nsenter:"):
            return Failure(lines[0])
        return None


@dataclass(frozen=True, slots=True)
class PidFileTransport:
    """``NsenterTransport`` of the PID a file holds, read at every command (a restarted
    container has a new init PID)."""

    pid_file: str
    nsenter: str = "nsenter"

    def resolve(self) -> NsenterTransport:
        """The transport of the PID the file holds now (``TemporaryError`` when it holds
        none: the container is not up)."""
        try:
            text = Path(self.pid_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TemporaryError(
                f"nsenter: cannot read {self.pid_file} ({exc.strerror or exc}): is it up?"
            ) from exc
        if not text.isdigit() or int(text) <= 0:
            raise TemporaryError(f"nsenter: {self.pid_file} holds no PID ({text[:40]!r})")
        return NsenterTransport(int(text), nsenter=self.nsenter)

    @property
    def where(self) -> str:
        return f"nsenter (PID in {self.pid_file})"

    def argv(self, command: Sequence[str]) -> list[str]:
        return self.resolve().argv(command)

    def failed(self, done: Completed) -> Failure | None:
        return NsenterTransport(0).failed(done)


def transport_for(host: Host) -> Transport:
    """The transport of a ``[hosts.NAME]`` entry."""
    if host.transport == "local":
        return LocalTransport()
    if host.transport == "nsenter":
        assert host.nsenter is not None
        if isinstance(host.nsenter, int):
            return NsenterTransport(host.nsenter)
        return PidFileTransport(host.nsenter)
    options = list(host.ssh_options)
    if host.known_hosts is not None:
        options += [f"UserKnownHostsFile={host.known_hosts}", "StrictHostKeyChecking=yes"]
    return SshTransport(
        host.ssh_host or host.address,
        user=host.ssh_user,
        port=host.ssh_port,
        identity=host.ssh_identity,
        options=tuple(options),
        connect_timeout=host.connect_timeout,
    )


def run(
    transport: Transport, command: Sequence[str], timeout: float, *, stdin: str | None = None
) -> Completed:
    """Run ``command`` through ``transport``; at most ``timeout`` seconds (``stdin``: text
    fed to the command, e.g. a file's new content).

    A timeout or a failure of the transport is a ``TemporaryError``; a transport program that
    is not installed (no ssh, no nsenter) or a refusal (ssh: key or host key rejected) is a
    ``PermanentError``. The command's own exit status is the caller's to interpret.
    """
    argv = transport.argv(command)
    shown = shlex.join(command)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise PermanentError(f"{transport.where}: cannot run {argv[0]}: not installed") from exc
    except OSError as exc:
        raise TemporaryError(
            f"{transport.where}: cannot run {argv[0]}: {exc.strerror or exc}"
        ) from exc
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TemporaryError(
            f"{transport.where}: {shown} did not finish within {timeout:g}s"
        ) from exc
    done = Completed(tuple(argv), proc.returncode, stdout, stderr)
    failure = transport.failed(done)
    if failure is not None and failure.permanent:
        raise PermanentError(f"{transport.where}: refused ({failure.reason})")
    if failure is not None:
        raise TemporaryError(f"{transport.where}: unreachable ({failure.reason})")
    return done
