"""What every lab server shares: a process on a loopback port, started and stopped for sure.

``Server`` owns one child process (its own session, so a terminal's Ctrl-C reaches the caller
and not the servers directly), its log and the directory ``root`` that the caller owns.
``start`` blocks until the server answers, bounded by ``ready_timeout``; ``stop`` sends the
class's graceful signal and escalates to SIGKILL; ``kill`` is SIGKILL at once. Both take the
whole process tree with them (nginx and HAProxy workers, supervisord's programs): nothing a
lab server started is left running afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import psutil

from senex_scale.errors import PermanentError

HOST = "127.0.0.1"
TAIL_LINES = 30


class LabError(PermanentError):
    """A lab server did not start (the message has the tail of its log), or a lab call failed."""


# --------------------------------------------------------------------------- ports and files


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


# The lab's own generator: drawing from the global one would change the state of a process
# that seeded it (a test's, Hypothesis's).
_PORTS = random.Random()


def free_port_range(count: int) -> int:
    """A BASE with BASE+1 .. BASE+count all free on loopback right now (for ``port = BASE + n``).

    Ports come from 20000-32000, below Linux's ephemeral range, so a client's outgoing
    connection cannot take one while its server is stopped and started again."""
    for _ in range(500):
        base = _PORTS.randrange(20000, 32000 - count)
        if all(_port_free(base + n) for n in range(1, count + 1)):
            return base
    raise LabError(f"no {count} consecutive free loopback ports found")


def free_port() -> int:
    """A free loopback port below the ephemeral range (see ``free_port_range``)."""
    return free_port_range(1) + 1


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log ("" if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def lab_dir(prefix: str = "senex-lab-") -> Path:
    """A new temporary directory that any server user can enter (mode 0755).

    PostgreSQL and PgBouncer run as ``postgres`` when the lab runs as root, and must reach
    their ``root``: pytest's own temporary directories are private to root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def temporary_lab_dir(prefix: str = "senex-lab-") -> Iterator[Path]:
    """``lab_dir(prefix)``, removed with everything in it at the end of the block (stop the
    servers in it first)."""
    path = lab_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600 (created so, never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)
    return path


def fill(text: str, **values: object) -> str:
    """``text`` with each ``{NAME}`` of ``values`` replaced, and no other brace touched (config
    languages such as nginx's are full of braces)."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def binary(name: str, *candidates: Path) -> str:
    """The path of a server binary: on PATH, else the first candidate that exists."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    raise LabError(f"{name} is not installed (scripts/services installs the lab's servers)")


# --------------------------------------------------------------------------- processes


def _descendants(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return list(psutil.Process(proc.pid).children(recursive=True))
    return []


def running(process: psutil.Process) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGCONT)  # a frozen process cannot be reaped otherwise
            process.kill()
    psutil.wait_procs(processes, timeout=10)


class Server:
    """One server process on ``127.0.0.1:port`` with its files under ``root``.

    Subclasses set ``name`` and the class settings below and implement ``_argv`` and
    ``_ready``; ``_prepare`` writes their config before each start."""

    name: ClassVar[str] = "server"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 20.0
    ready_timeout: ClassVar[float] = 15.0
    not_yet: ClassVar[tuple[type[BaseException], ...]] = (OSError,)
    """Exceptions of ``_ready`` that mean "not yet" rather than a failure."""
    run_as: ClassVar[str | None] = None
    """When the lab runs as root, the server runs as this user (PostgreSQL refuses root)."""

    def __init__(self, root: Path | str, port: int | None = None) -> None:
        self.root = Path(root).absolute()
        self.port = free_port() if port is None else port
        self._proc: subprocess.Popen[bytes] | None = None
        self.forced: list[int] = []
        """Pids the last ``stop()`` had to SIGKILL: the graceful stop left them running."""

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"<{type(self).__name__} {self.address} {state} root={self.root}>"

    # ------------------------------------------------------------------ what callers read

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        """Where the server's own output goes (appended across restarts)."""
        return self.root / f"{self.name}.log"

    @property
    def output(self) -> Path:
        """Where the process's stdout and stderr go: the log, unless it keeps its own."""
        return self.log

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The running process (for fault tests that signal it), else None."""
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> Self:
        """Start the server and wait until it answers; ``LabError`` with its log tail if not."""
        if self.alive:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        self._prepare()
        with self.output.open("ab") as out:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._popen_kwargs(),
            )
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop gracefully (``stop_signal``), SIGKILL after ``stop_timeout``; no-op if stopped."""
        proc = self._proc
        self.forced = []
        if proc is not None and proc.poll() is None:
            children = _descendants(proc)
            self._graceful(proc)
            proc.send_signal(signal.SIGCONT)  # a frozen server handles the stop when thawed
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                children = _descendants(proc) + children
                self.forced.append(proc.pid)
                with contextlib.suppress(psutil.Error):
                    _kill_all([psutil.Process(proc.pid)])
            left = [c for c in children if running(c)]
            self.forced += [c.pid for c in left]
            _kill_all(left)
        self._reap()

    def kill(self) -> None:
        """SIGKILL now, the whole process tree (a crash, for fault tests); no-op if stopped."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                _kill_all([psutil.Process(proc.pid), *_descendants(proc)])
        self._reap()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ for subclasses

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the server answers; exceptions in ``not_yet`` count as not yet."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write configs and the like before each start."""

    def _graceful(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(self.stop_signal)

    def _closed(self) -> None:
        """Close clients after the process is gone."""

    def _env(self) -> dict[str, str] | None:
        return None

    def _log_tail(self) -> str:
        return f"{self.log}:\n{tail(self.log)}"

    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"cwd": self.root, "env": self._env()}
        user = self._user()
        if user is not None:
            kwargs.update(user=user, group=user, extra_groups=[])
        return kwargs

    def _user(self) -> str | None:
        return self.run_as if self.run_as is not None and os.geteuid() == 0 else None

    def _own(self, *paths: Path) -> None:
        """Hand ``paths`` to the server user (when the lab runs as root and there is one)."""
        user = self._user()
        if user is None:
            return
        for path in paths:
            shutil.chown(path, user, user)
        self._check_reachable(user)

    def _check_reachable(self, user: str) -> None:
        entry = pwd.getpwnam(user)
        for parent in [self.root, *self.root.parents]:
            st = parent.stat()
            if st.st_uid == entry.pw_uid:
                ok = st.st_mode & 0o100
            elif st.st_gid == entry.pw_gid:
                ok = st.st_mode & 0o010
            else:
                ok = st.st_mode & 0o001
            if not ok:
                raise LabError(
                    f"{self.name}: {parent} is closed to the {user} user, who runs it when the "
                    f"lab runs as root; give a root it can reach (senex_scale.lab.lab_dir())"
                )

    def _run(self, argv: Sequence[str], timeout: float = 120) -> None:
        """Run a one-off command (``initdb``, ...) as the server user; ``LabError`` if it fails."""
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                **self._popen_kwargs(),
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{argv[0]}: no result within {timeout:g}s") from None
        if done.returncode != 0:
            raise LabError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                self._reap()
                raise LabError(
                    f"{self.name} on {self.address} exited ({code}) while starting; "
                    f"{self._log_tail()}"
                )
            try:
                if self._ready():
                    return
            except self.not_yet:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise LabError(
                    f"{self.name} on {self.address} did not answer within "
                    f"{self.ready_timeout:g}s; {self._log_tail()}"
                )
            time.sleep(0.05)

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        self._proc = None
        self._closed()
