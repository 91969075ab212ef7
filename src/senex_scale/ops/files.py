"""Files written as root in directories other users own, without following their links.

``replica add`` runs as root and writes where the ``postgres`` account (or whoever owns the
directory) can plant symbolic links: pg_hba.conf in the configuration directory, the replica's
data directory, the replica registry. A path-based ``write_text``/``chmod``/``chown`` follows
a link planted there and lands on any file of the machine. Every write here goes through a
directory *descriptor* instead::

    open_directory(dir)    walk from "/" one component at a time (openat, O_NOFOLLOW): a
                           symbolic link is followed only when root (or this user) owns it,
                           which nobody else can forge; anything else is refused
    read_file(path)        openat(dir, name, O_NOFOLLOW), fstat: a regular file with one link
    replace_file(path)     openat(dir, ".NAME.RANDOM.tmp", O_CREAT|O_EXCL|O_NOFOLLOW), write,
                           fchown + fchmod on that descriptor, fsync, renameat over NAME
                           (rename replaces the directory entry; it never follows a link);
                           NAME, when it exists, must be a regular file with one link (and the
                           file that was read, when the caller says which)
    make_directory(path)   mkdirat + openat(O_DIRECTORY|O_NOFOLLOW), empty, fchown + fchmod

A directory swapped for a link after it was opened changes nothing: the descriptor keeps
pointing at the directory that was checked. Errors are ``UnsafeFileError`` (permanent) and
name the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from senex_scale.errors import PermanentError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_LINKS = 40
"""Links followed on one path before giving up (the kernel's own limit)."""


class UnsafeFileError(PermanentError):
    """A path that cannot be written safely: a link someone else owns, a hard-linked file,
    not a regular file or directory, a directory that is not empty."""


def _trusted(uid: int) -> bool:
    """Owners whose links are followed: root and this process' user (no one else can make a
    link owned by them)."""
    return uid in (0, os.geteuid())


def open_directory(path: str | os.PathLike[str], *, create: bool = False) -> int:
    """A descriptor of directory ``path`` (the caller closes it).

    Reached from ``/`` one component at a time; a symbolic link on the way is followed only
    when root or this user owns it. ``create``: missing directories are made (mode 0755 less
    the umask, owned by this user)."""
    text = os.path.abspath(os.fspath(path))
    pending = [part for part in text.split("/") if part]
    walked: list[str] = []
    links = 0
    fd = os.open("/", _DIR)
    try:
        while pending:
            part = pending.pop(0)
            if part == ".":
                continue
            if part == "..":
                fd = _replace_fd(fd, os.open("..", _DIR, dir_fd=fd))
                if walked:
                    walked.pop()
                continue
            shown = "/" + "/".join([*walked, part])
            try:
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise UnsafeFileError(f"{shown}: no such directory") from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                if not _trusted(info.st_uid):
                    raise UnsafeFileError(
                        f"{shown}: a symbolic link owned by uid {info.st_uid}, not root: "
                        "not followed (replace it with the directory it points to)"
                    )
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafeFileError(f"{text}: too many levels of symbolic links")
                target = os.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    fd = _replace_fd(fd, os.open("/", _DIR))
                    walked = []
                pending[:0] = [p for p in target.split("/") if p]
                continue
            if not stat.S_ISDIR(info.st_mode):
                raise UnsafeFileError(f"{shown}: not a directory")
            try:
                fd = _replace_fd(fd, os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd))
            except OSError as exc:  # swapped for a link since the stat: ELOOP / ENOTDIR
                raise UnsafeFileError(
                    f"{shown}: changed while being opened ({exc.strerror})"
                ) from None
            walked.append(part)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _replace_fd(old: int, new: int) -> int:
    os.close(old)
    return new


@contextlib.contextmanager
def directory(path: str | os.PathLike[str], *, create: bool = False) -> Iterator[int]:
    """``open_directory`` as a context manager that closes the descriptor."""
    fd = open_directory(path, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def _check_target(info: os.stat_result, path: Path) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFileError(f"{path}: is a symbolic link; refusing to write through it")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFileError(f"{path}: not a regular file")
    if info.st_nlink != 1:
        raise UnsafeFileError(
            f"{path}: has {info.st_nlink} names (a hard link); refusing to change it"
        )


def read_file(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of regular file ``path`` and its ``fstat``; a link or a hard-linked file at
    ``path`` is refused (``UnsafeFileError``), a missing one is ``FileNotFoundError``."""
    target = Path(os.path.abspath(os.fspath(path)))
    with directory(target.parent) as dfd:
        try:
            fd = os.open(target.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFileError(f"{target}: is a symbolic link; not read") from None
            raise
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            _check_target(info, target)
            return handle.read(), info


def replace_file(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int,
    owner: tuple[int, int] | None = None,
    expect: os.stat_result | None = None,
    create_parents: bool = False,
) -> None:
    """Replace ``path`` with ``data`` atomically, as the module docstring draws it.

    ``mode`` and ``owner`` (uid, gid; default: this process') are set on the new file's
    descriptor before it is renamed into place. ``expect``: the ``stat`` of the file the
    caller read; the rename is refused when ``path`` is another file now."""
    target = Path(os.path.abspath(os.fspath(path)))
    with directory(target.parent, create=create_parents) as dfd:
        try:
            current: os.stat_result | None = os.stat(target.name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None:
            _check_target(current, target)
        if expect is not None and (
            current is None or (current.st_dev, current.st_ino) != (expect.st_dev, expect.st_ino)
        ):
            raise UnsafeFileError(f"{target}: was replaced by another file while being edited")
        tmp, fd = _create_temporary(dfd, target)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if owner is not None and owner != (os.geteuid(), os.getegid()):
                    os.fchown(handle.fileno(), *owner)
                os.fchmod(handle.fileno(), mode)  # after fchown, which clears set-id bits
                os.fsync(handle.fileno())
            os.replace(tmp, target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        with contextlib.suppress(OSError):  # not every file system can fsync a directory
            os.fsync(dfd)


def _create_temporary(dfd: int, target: Path) -> tuple[str, int]:
    """A new file ``.NAME.RANDOM.tmp`` (0600) in the directory: never an existing name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        name = f".{target.name}.{secrets.token_hex(8)}.tmp"
        try:
            return name, os.open(name, flags, 0o600, dir_fd=dfd)
        except FileExistsError:
            continue
    raise UnsafeFileError(f"{target.parent}: no free temporary name")  # pragma: no cover


def make_directory(
    path: str | os.PathLike[str], *, owner: tuple[int, int], mode: int = 0o700
) -> None:
    """Make directory ``path`` (or take it when it exists and is empty) and give it to
    ``owner`` with ``mode``, on its descriptor. Missing parents are made (this user's, 0755).
    A link at ``path`` or a directory that is not empty is refused."""
    target = Path(os.path.abspath(os.fspath(path)))
    with directory(target.parent, create=True) as parent:
        with contextlib.suppress(FileExistsError):
            os.mkdir(target.name, 0o700, dir_fd=parent)
        try:
            fd = os.open(target.name, _DIR | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                info = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
                what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
                raise UnsafeFileError(f"{target}: is {what}; refusing to use it") from None
            raise
        try:
            if os.listdir(fd):
                raise UnsafeFileError(f"{target}: is not empty")
            os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
