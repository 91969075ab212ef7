"""A balancer's config files, on this machine or on the balancer's own host.

Both balancers change a file that their server reads (HAProxy's config, nginx's upstream
include) without ever leaving a half-written one: the new text goes to a temp file beside
the old one (same directory, hence the same filesystem; same mode and owner), is checked, and
is renamed over the old file. This module is those file operations, twice::

    LocalFiles()              this machine, plain Python file I/O (no balancer ``host``)
    RemoteFiles(name, t)      the balancer's ``host``: every operation is a command through
                              the host's transport (``runtimes.transport``), argv only:

    read          cat -- FILE                        (exit != 0: ``test -e FILE`` tells "missing")
    write_temp    mktemp -p DIR .NAME.XXXXXXXXXX     then ``dd of=TMP conv=fsync status=none``
                                                     (the text on stdin), then
                                                     ``chmod --reference=FILE TMP`` and
                                                     ``chown --reference=FILE TMP`` (ignored when
                                                     not allowed), or ``chmod 644`` for a new file
    backup        mktemp, then ``ln -f -- FILE BAK`` (a hard link: the old file, byte for byte)
    replace       mv -f -- TMP FILE                  (rename: atomic on one filesystem)
    remove        rm -f -- TMP
    run           the balancer's own commands there (``haproxy -c``, ``nginx -t``, reloads)

Text read over a transport has its line ends normalized (``\r\n`` becomes ``\n``, as
``subprocess`` decodes text); nothing is ever written back from such a read unchanged:
``backup`` keeps the old file itself, so a rollback is byte for byte.

A ``RemoteFiles`` over ``LocalTransport`` (a ``[hosts]`` entry with ``transport = "local"``)
takes the command path on this machine: that is how the tests exercise it without ssh.

Errors name the file, and on a host the host (``/etc/haproxy/haproxy.cfg on host lb01``): a
file that exists but cannot be read or written is a ``PermanentError``; a host that cannot be
reached is the transport's ``TemporaryError``. A program that is not installed there is
``NotRunnableError`` (a ``PermanentError``).

``write_checked`` is the shared sequence: write the temp file, run the caller's check on it
(``haproxy -c -f TMP``), remove the temp file again if the check fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from senex_scale.errors import PermanentError, PolicyError, SenexError, TemporaryError
from senex_scale.plugins import did_you_mean
from senex_scale.runtimes.transport import (
    Completed,
    LocalTransport,
    Transport,
    run,
    transport_for,
)

if TYPE_CHECKING:
    from senex_scale.policy.models import Host

__all__ = [
    "COMMAND_TIMEOUT",
    "Files",
    "LocalFiles",
    "NotRunnableError",
    "RemoteFiles",
    "files_on",
    "write_checked",
]

COMMAND_TIMEOUT = 30.0
"""Bound on each file command on a host (``cat``, ``mktemp``, ``mv``): they are instant when
the host answers; a host that does not is a ``TemporaryError`` after this long."""

NEW_FILE_MODE = 0o644
"""Mode of a file that did not exist before (a config the server's user must read)."""


class NotRunnableError(PermanentError):
    """A program is not installed (or not executable) where it was run."""


class Files(Protocol):
    """The file operations of one place (this machine or a host)."""

    @property
    def host(self) -> str | None:
        """The host's name in ``[hosts]``; None for this machine."""
        ...

    def show(self, path: Path) -> str:
        """``path`` for a message: ``/etc/x.cfg`` here, ``/etc/x.cfg on host lb01`` there."""
        ...

    def read(self, path: Path) -> str | None:
        """The file's text, or None when it does not exist."""
        ...

    def write_temp(self, path: Path, text: str) -> Path:
        """A new temp file beside ``path`` holding ``text`` (synced to disk), with ``path``'s
        mode and owner (``NEW_FILE_MODE`` when ``path`` does not exist)."""
        ...

    def backup(self, path: Path) -> Path:
        """A second name beside ``path`` for the file as it is now (a hard link), so that
        ``replace(backup, path)`` puts it back byte for byte, mode and owner included."""
        ...

    def replace(self, tmp: Path, path: Path) -> None:
        """Rename ``tmp`` over ``path`` (atomic)."""
        ...

    def remove(self, path: Path) -> None:
        """Delete ``path`` (nothing when it is not there)."""
        ...

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        """Run ``argv`` there; its exit status is the caller's to interpret. A program that
        is not installed there is ``NotRunnableError``; a timeout is a ``TemporaryError``."""
        ...


def write_checked(files: Files, path: Path, text: str, check: Callable[[Path], None]) -> Path:
    """The temp file for ``text`` beside ``path``, after ``check(tmp)`` passed; when writing
    or the check fails (it raises) the temp file is removed and nothing else has changed."""
    tmp = files.write_temp(path, text)
    try:
        check(tmp)
    except BaseException:
        with contextlib.suppress(SenexError):
            files.remove(tmp)
        raise
    return tmp


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


# --------------------------------------------------------------------------- this machine


class LocalFiles:
    """This machine, with Python's file I/O (a balancer without ``host``)."""

    @property
    def host(self) -> None:
        return None

    def show(self, path: Path) -> str:
        return str(path)

    def read(self, path: Path) -> str | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(f"{path}: cannot read: not UTF-8 text") from None

    def write_temp(self, path: Path, text: str) -> Path:
        try:
            fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
        except OSError as exc:
            raise PermanentError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                st = path.stat()
            except FileNotFoundError:
                os.chmod(tmp, NEW_FILE_MODE)
            else:
                os.chmod(tmp, st.st_mode & 0o7777)
                with contextlib.suppress(PermissionError):
                    os.chown(tmp, st.st_uid, st.st_gid)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PermanentError(f"cannot write {path}: {exc.strerror or exc}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def backup(self, path: Path) -> Path:
        for _ in range(100):
            name = path.with_name(f"{_temp_prefix(path)}{os.urandom(5).hex()}")
            try:
                os.link(path, name)
            except FileExistsError:
                continue
            except OSError as exc:
                raise PermanentError(f"cannot keep {path}: {exc.strerror or exc}") from None
            return name
        raise PermanentError(f"cannot keep {path}: no free temp name in {path.parent}")

    def replace(self, tmp: Path, path: Path) -> None:
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise PermanentError(f"{path}: cannot replace: {exc.strerror or exc}") from None

    def remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise PermanentError(f"cannot remove {path}: {exc.strerror or exc}") from None

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            raise NotRunnableError(f"{argv[0]}: no such program") from None
        except PermissionError:
            raise NotRunnableError(f"{argv[0]}: not executable") from None
        except subprocess.TimeoutExpired:
            raise TemporaryError(f"{' '.join(argv)}: did not finish within {timeout:g}s") from None
        return Completed(tuple(argv), done.returncode, done.stdout, done.stderr)


# --------------------------------------------------------------------------- a host


class RemoteFiles:
    """The balancer's ``host`` (``[hosts.NAME]``): every operation is a command run through
    its transport. ``name`` is the host's name in the policy, for messages."""

    def __init__(self, name: str, transport: Transport, *, timeout: float = COMMAND_TIMEOUT):
        self.name = name
        self.transport = transport
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RemoteFiles({self.name!r}, {self.transport.where})"

    @property
    def host(self) -> str:
        return self.name

    def show(self, path: Path) -> str:
        return f"{path} on host {self.name}"

    def read(self, path: Path) -> str | None:
        try:
            done = self._command(["cat", "--", str(path)])
        except UnicodeDecodeError:
            raise PermanentError(f"{self.show(path)}: cannot read: not UTF-8 text") from None
        if done.returncode == 0:
            return done.stdout
        if self._command(["test", "-e", str(path)]).returncode != 0:
            return None
        raise PermanentError(f"{self.show(path)}: cannot read: {_last_line(done)}")

    def write_temp(self, path: Path, text: str) -> Path:
        made = self._command(["mktemp", "-p", str(path.parent), f"{_temp_prefix(path)}XXXXXXXXXX"])
        name = made.stdout.strip()
        if made.returncode != 0 or not name:
            raise PermanentError(
                f"cannot write in {path.parent} on host {self.name}: {_last_line(made)}"
            )
        tmp = Path(name)
        try:
            self._expect(
                ["dd", f"of={tmp}", "conv=fsync", "status=none"], path, "cannot write", stdin=text
            )
            ref = f"--reference={path}"
            mode = self._command(["chmod", ref, "--", str(tmp)])
            if mode.returncode == 0:
                # as os.chown without the right to: the temp file keeps our owner
                self._command(["chown", ref, "--", str(tmp)])
            elif self._command(["test", "-e", str(path)]).returncode != 0:
                self._expect(["chmod", f"{NEW_FILE_MODE:o}", "--", str(tmp)], path, "cannot write")
            else:
                raise PermanentError(
                    f"cannot copy the mode of {self.show(path)}: {_last_line(mode)}"
                )
        except BaseException:
            with contextlib.suppress(SenexError):
                self.remove(tmp)
            raise
        return tmp

    def backup(self, path: Path) -> Path:
        made = self._command(["mktemp", "-p", str(path.parent), f"{_temp_prefix(path)}XXXXXXXXXX"])
        name = made.stdout.strip()
        if made.returncode != 0 or not name:
            raise PermanentError(f"cannot keep {self.show(path)}: {_last_line(made)}")
        bak = Path(name)
        try:
            self._expect(["ln", "-f", "--", str(path), str(bak)], path, "cannot keep")
        except BaseException:
            with contextlib.suppress(SenexError):
                self.remove(bak)
            raise
        return bak

    def replace(self, tmp: Path, path: Path) -> None:
        self._expect(["mv", "-f", "--", str(tmp), str(path)], path, "cannot replace")

    def remove(self, path: Path) -> None:
        self._expect(["rm", "-f", "--", str(path)], path, "cannot remove")

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        try:
            done = run(self.transport, argv, timeout)
        except PermanentError as exc:
            if isinstance(exc.__cause__, FileNotFoundError) and isinstance(
                self.transport, LocalTransport
            ):
                raise NotRunnableError(f"{argv[0]}: no such program on host {self.name}") from None
            raise self._named(exc) from None
        except TemporaryError as exc:
            raise self._named(exc) from None
        # a POSIX shell (ssh) or env (nsenter): 127 not found, 126 not executable
        if done.returncode == 127:
            raise NotRunnableError(f"{argv[0]}: no such program on host {self.name}")
        if done.returncode == 126:
            raise NotRunnableError(f"{argv[0]}: not executable on host {self.name}")
        return done

    # ------------------------------------------------------------------ helpers

    def _command(self, argv: list[str], *, stdin: str | None = None) -> Completed:
        try:
            return run(self.transport, argv, self.timeout, stdin=stdin)
        except (TemporaryError, PermanentError) as exc:
            raise self._named(exc) from None

    def _expect(
        self, argv: list[str], path: Path, what: str, *, stdin: str | None = None
    ) -> Completed:
        done = self._command(argv, stdin=stdin)
        if done.returncode != 0:
            raise PermanentError(f"{what} {self.show(path)}: {_last_line(done)}")
        return done

    def _named(self, exc: SenexError) -> SenexError:
        """``exc`` (Temporary or Permanent) with this host's name in front."""
        cls = TemporaryError if isinstance(exc, TemporaryError) else PermanentError
        return cls(f"host {self.name}: {exc}")


def _last_line(done: Completed) -> str:
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


# --------------------------------------------------------------------------- choosing


def files_on(pool_name: str, host: str | None, hosts: Mapping[str, Host] | None) -> Files:
    """The files of a balancer whose ``host`` setting is ``host`` (None: this machine).

    A name that is not in ``hosts`` is a ``PolicyError`` naming ``pools.NAME.balancer.host``.
    """
    if host is None:
        return LocalFiles()
    entry = (hosts or {}).get(host)
    if entry is None:
        known = sorted(hosts or {})
        why = did_you_mean(host, known) if known else " (no [hosts] given)"
        where = f"pools.{pool_name}.balancer"
        raise PolicyError(where, [f'{where}.host: unknown host "{host}"{why}'])
    return RemoteFiles(host, transport_for(entry))
