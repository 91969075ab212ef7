"""Transports build argv lists (never shell strings) and bound every command by a timeout."""

from __future__ import annotations

import shlex
import shutil
import sys
import time

import pytest

from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.runtimes.transport import (
    Completed,
    Failure,
    LocalTransport,
    NsenterTransport,
    SshTransport,
    run,
)

NASTY = ["systemctl", "start", "web@1.service; rm -rf /", "$(id)", "a b", "it's"]


def test_ssh_argv_quotes_the_remote_command_as_one_argument() -> None:
    """Options first, "--", the host, then the whole command as ONE shlex-quoted argument."""
    ssh = SshTransport(
        "app1.internal",
        user="deploy",
        port=2222,
        identity="/etc/senex/id_ed25519",
        options=("StrictHostKeyChecking=yes",),
        connect_timeout=5,
    )
    argv = ssh.argv(NASTY)
    assert argv == [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-p",
        "2222",
        "-i",
        "/etc/senex/id_ed25519",
        "-l",
        "deploy",
        "-o",
        "StrictHostKeyChecking=yes",
        "--",
        "app1.internal",
        shlex.join(NASTY),
    ]
    # The remote POSIX shell splits the last argument back into exactly the same argv.
    assert shlex.split(argv[-1]) == NASTY


def test_ssh_argv_without_optional_settings() -> None:
    """Only BatchMode and ConnectTimeout are always there."""
    argv = SshTransport("h").argv(["systemctl", "daemon-reload"])
    assert argv == [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "--",
        "h",
        "systemctl daemon-reload",
    ]


def test_ssh_exit_255_is_its_own_failure() -> None:
    """255 is ssh's (could not connect); any other status is the remote command's."""
    ssh = SshTransport("h")
    refused = Completed((), 255, "", "ssh: connect to host h port 22: Connection refused\n")
    assert ssh.failed(refused) == Failure("ssh: connect to host h port 22: Connection refused")
    assert ssh.failed(Completed((), 5, "", "Unit x not found.")) is None


@pytest.mark.parametrize(
    "stderr",
    [
        "deploy@h: Permission denied (publickey).\n",
        "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        "Host key verification failed.\n",
        "command-line: line 0: Bad configuration option: stricthostkeychecking2\n",
    ],
)
def test_ssh_refusals_are_permanent(stderr: str) -> None:
    """A rejected key or host key will be rejected again: permanent; the last line is why."""
    failure = SshTransport("h").failed(Completed((), 255, "", stderr))
    assert failure is not None
    assert failure.permanent
    assert failure.reason == stderr.strip().splitlines()[-1]


def test_nsenter_argv_enters_every_namespace_with_a_clean_environment() -> None:
    """nsenter -t PID -a, then env -i: the host's variables stay out of the container."""
    argv = NsenterTransport(4242).argv(NASTY)
    assert argv[:5] == ["nsenter", "-t", "4242", "-a", "--"]
    assert argv[5:7] == ["env", "-i"]
    assert argv[-len(NASTY) :] == NASTY


def test_nsenter_failure_is_told_from_the_command_failing() -> None:
    """nsenter's own message (no such process) is a transport failure."""
    nsenter = NsenterTransport(1)
    gone = Completed((), 1, "", "nsenter: stat of /proc/9/ns/user failed: No such file\n")
    assert nsenter.failed(gone) == Failure("nsenter: stat of /proc/9/ns/user failed: No such file")
    assert nsenter.failed(Completed((), 1, "", "Failed to start x: Unit x is masked.")) is None


def test_local_run_returns_the_exit_status_and_output() -> None:
    """A command that fails is returned, not raised: the runtime interprets its status."""
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    done = run(LocalTransport(), [sys.executable, "-c", code], timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_timeout_kills_the_command_and_is_temporary() -> None:
    """A command over its timeout is killed (with its children) and is a TemporaryError."""
    started = time.monotonic()
    with pytest.raises(TemporaryError, match=r"did not finish within 0\.5s"):
        run(LocalTransport(), ["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10


def test_missing_program_is_permanent_and_named() -> None:
    """No such program (no ssh, no nsenter here): retrying will not help; the message names it."""
    with pytest.raises(PermanentError, match="cannot run /nonexistent/systemctl: not installed"):
        run(LocalTransport(), ["/nonexistent/systemctl", "show"], timeout=5)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client installed")
def test_ssh_that_cannot_connect_is_temporary() -> None:
    """A real ssh to a closed loopback port: exit 255, a TemporaryError with ssh's message."""
    ssh = SshTransport("127.0.0.1", port=9, connect_timeout=5)
    with pytest.raises(TemporaryError, match=r"ssh 127\.0\.0\.1: unreachable \(.*refused"):
        run(ssh, ["systemctl", "show"], timeout=30)
