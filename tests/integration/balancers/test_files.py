"""A balancer's files on a host: real commands through a real transport (local), no mocks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from senex_scale.balancers.files import (
    LocalFiles,
    NotRunnableError,
    RemoteFiles,
    files_on,
    write_checked,
)
from senex_scale.errors import PermanentError, PolicyError, TemporaryError
from senex_scale.policy.models import Host
from senex_scale.runtimes.transport import LocalTransport, PidFileTransport

pytestmark = pytest.mark.integration

NOBODY = 65534


def remote() -> RemoteFiles:
    return RemoteFiles("web01", LocalTransport())


def leftovers(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}."))


def test_read_gives_the_text_or_none_when_missing(tmp_path: Path) -> None:
    """cat: the file's text; a missing file is None, not an error."""
    path = tmp_path / "a.cfg"
    path.write_text("global\n    maxconn 10\n")
    assert remote().read(path) == "global\n    maxconn 10\n"
    assert remote().read(tmp_path / "missing.cfg") is None


def test_read_of_a_directory_names_host_and_file(tmp_path: Path) -> None:
    """A path that exists but cannot be read is permanent, naming the file and the host."""
    with pytest.raises(PermanentError, match=rf"{tmp_path} on host web01: cannot read: .*"):
        remote().read(tmp_path)


def test_read_refuses_text_that_is_not_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a PermanentError, not a traceback."""
    path = tmp_path / "latin1.cfg"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(PermanentError, match="not UTF-8"):
        remote().read(path)


def test_write_temp_copies_mode_and_owner_and_replace_swaps(
    tmp_path: Path, commands: Callable[[], list[list[str]]]
) -> None:
    """The temp file is beside the file with its mode and owner; mv puts it in place."""
    path = tmp_path / "haproxy.cfg"
    path.write_text("old\n")
    path.chmod(0o640)
    os.chown(path, NOBODY, NOBODY)
    files = remote()
    tmp = files.write_temp(path, "new\n")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".haproxy.cfg.")
    st = tmp.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, NOBODY, NOBODY)
    assert path.read_text() == "old\n"
    files.replace(tmp, path)
    assert path.read_text() == "new\n"
    assert leftovers(tmp_path, "haproxy.cfg") == []
    programs = [argv[0] for argv in commands()]
    assert programs[:2] == ["mktemp", "dd"]
    assert "chown" in programs
    assert ["mv", "-f", "--", str(tmp), str(path)] in commands()


def test_write_temp_of_a_new_file_is_readable(tmp_path: Path) -> None:
    """With no file yet the temp file gets mode 0644 (mktemp's 0600 would hide it from nginx)."""
    tmp = remote().write_temp(tmp_path / "new.conf", "x\n")
    assert tmp.stat().st_mode & 0o777 == 0o644


def test_backup_puts_the_old_file_back_byte_for_byte(tmp_path: Path) -> None:
    """A kept file (hard link) restores exactly, even line ends a text read would change."""
    path = tmp_path / "upstream.conf"
    original = b"upstream u {\r\n    server 10.0.0.1:80;\r\n}\r\n"
    path.write_bytes(original)
    path.chmod(0o600)
    files = remote()
    backup = files.backup(path)
    files.replace(files.write_temp(path, "changed\n"), path)
    assert path.read_text() == "changed\n"
    files.replace(backup, path)
    assert path.read_bytes() == original
    assert path.stat().st_mode & 0o777 == 0o600
    assert leftovers(tmp_path, "upstream.conf") == []


def test_failed_check_removes_the_temp_file(tmp_path: Path) -> None:
    """write_checked: a check that raises leaves neither a temp file nor a changed file."""
    path = tmp_path / "haproxy.cfg"
    path.write_text("old\n")

    def refuse(tmp: Path) -> None:
        assert tmp.read_text() == "new\n"
        raise PermanentError("refused")

    for files in (remote(), LocalFiles()):
        with pytest.raises(PermanentError, match="refused"):
            write_checked(files, path, "new\n", refuse)
        assert path.read_text() == "old\n"
        assert leftovers(tmp_path, "haproxy.cfg") == []


def test_missing_program_is_not_runnable_naming_the_host(tmp_path: Path) -> None:
    """A program that is not installed there is NotRunnableError (permanent)."""
    with pytest.raises(NotRunnableError, match="no such program on host web01"):
        remote().run([str(tmp_path / "no-haproxy"), "-c"], 5)
    done = remote().run(["sh", "-c", "echo hi; exit 3"], 5)
    assert (done.returncode, done.stdout) == (3, "hi\n")


def test_unreachable_host_is_temporary_naming_it(tmp_path: Path) -> None:
    """A host whose transport fails (no container PID) is a TemporaryError naming the host."""
    files = RemoteFiles("web03", PidFileTransport(str(tmp_path / "gone.pid")))
    with pytest.raises(TemporaryError, match="host web03: nsenter"):
        files.read(tmp_path / "x.cfg")


def test_files_on_an_unknown_host_names_the_setting() -> None:
    """balancer.host must be a name of [hosts]."""
    hosts = {"lb01": Host(address="10.0.0.10", transport="local")}
    with pytest.raises(PolicyError) as caught:
        files_on("web", "lb1", hosts)
    assert caught.value.problems == [
        'pools.web.balancer.host: unknown host "lb1" (did you mean "lb01"?)'
    ]
    assert isinstance(files_on("web", None, hosts), LocalFiles)
    assert files_on("web", "lb01", hosts).host == "lb01"
