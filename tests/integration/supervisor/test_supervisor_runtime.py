"""The ``supervisor`` runtime against a real supervisord (see conftest.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from senex_scale.errors import PermanentError, PolicyError, TemporaryError
from senex_scale.policy.models import Pool
from senex_scale.runtimes.base import RuntimeInstance, UnitState, instance_address, probe_health
from senex_scale.runtimes.supervisor import SupervisorRuntime, map_state
from senex_scale.testing import wait_until

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import Supervisord

pytestmark = pytest.mark.integration


def pool_with(base: int, options: dict[str, Any]) -> Pool:
    """Pool ``web`` (port ``BASE + n``, max 3) with ``runtime = {type = "supervisor", ...}``."""
    return Pool.model_validate(
        {"runtime": {"type": "supervisor", **options}, "port": f"{base} + n", "min": 0, "max": 3}
    )


def by_n(runtime: SupervisorRuntime) -> dict[int, RuntimeInstance]:
    """``list()`` keyed by instance number."""
    return {i.n: i for i in runtime.list()}


def healthy(sv: Supervisord, n: int) -> bool:
    """Whether instance ``n`` (port BASE + n) answers its health check."""
    address = instance_address("web", pool_with(sv.base, {"url": sv.url, "group": "web"}), n)
    return probe_health(address, "/health/", timeout=0.5)


# --------------------------------------------------------------------------- list/start/stop


def test_list_shows_every_declared_instance_stopped(sv: Supervisord) -> None:
    """Before anything starts, list() reports instances 1..3 stopped, without pid or start."""
    assert sv.runtime().list() == [
        RuntimeInstance(n, UnitState.STOPPED, started_at=None, pid=None) for n in (1, 2, 3)
    ]


def test_start_runs_the_instance_on_its_port_and_stop_stops_it(sv: Supervisord) -> None:
    """start(2) spawns web-2 on BASE+2 (healthy within seconds); stop(2) returns once stopped."""
    runtime = sv.runtime()
    before = time.time()
    runtime.start(2)
    state = by_n(runtime)[2]
    assert state.state in (UnitState.STARTING, UnitState.RUNNING)
    assert state.pid is not None
    assert state.started_at is not None
    assert before - 1 <= state.started_at <= time.time() + 1
    wait_until(lambda: healthy(sv, 2), 5, "web-2 healthy on BASE+2")
    wait_until(lambda: by_n(runtime)[2].state is UnitState.RUNNING, 5, "web-2 RUNNING")
    # exec: the pid supervisord reports is the server itself (not a shell), so TERM reaches it
    assert by_n(runtime)[2].pid == state.pid
    assert "server.py" in " ".join(psutil.Process(state.pid).cmdline())
    others = by_n(runtime)
    assert others[1].state is UnitState.STOPPED
    assert others[3].state is UnitState.STOPPED

    runtime.start(2)  # already started: not an error
    assert by_n(runtime)[2].pid == state.pid

    runtime.stop(2)
    stopped = by_n(runtime)[2]
    assert stopped == RuntimeInstance(2, UnitState.STOPPED, started_at=None, pid=None)
    assert not psutil.pid_exists(state.pid) or psutil.Process(state.pid).status() == "zombie"
    assert not healthy(sv, 2)

    runtime.stop(2)  # already stopped: not an error


def test_instances_past_numprocs_are_a_permanent_error(sv: Supervisord) -> None:
    """start(4)/stop(4) on a program with numprocs=3 say the program must declare numprocs."""
    runtime = sv.runtime()
    with pytest.raises(PermanentError, match=r"web:web-4.*numprocs >= "):
        runtime.start(4)
    with pytest.raises(PermanentError, match="numprocs"):
        runtime.stop(4)


def test_a_program_supervisord_does_not_know_is_a_permanent_error(sv: Supervisord) -> None:
    """A group with no processes fails list() and start() instead of looking like 0 running."""
    runtime = sv.runtime(group="nosuch")
    with pytest.raises(PermanentError, match=r"no process of \[program:nosuch\]"):
        runtime.list()
    with pytest.raises(PermanentError, match="numprocs"):
        runtime.start(1)


def test_custom_process_name_template(sv: Supervisord) -> None:
    """``process`` spells the names: a template that does not match finds no process."""
    assert [i.n for i in sv.runtime(process="{group}-{n}").list()] == [1, 2, 3]
    runtime = sv.runtime(process="{group}_{n}")
    assert runtime.process_name(2) == "web:web_2"
    with pytest.raises(PermanentError, match="web_2"):
        runtime.start(2)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("crash", UnitState.FAILED),  # exits before startsecs: BACKOFF, then FATAL
        ("fail", UnitState.FAILED),  # runs, then EXITED with status 3
        ("done", UnitState.STOPPED),  # runs, then EXITED with status 0
    ],
)
def test_programs_that_exit_are_reported(sv: Supervisord, group: str, expected: UnitState) -> None:
    """A process that exits at once is failed, or stopped when it exited with status 0."""
    runtime = sv.runtime(group=group)
    error: PermanentError | None = None
    try:
        runtime.start(1)
    except PermanentError as exc:  # supervisord may already have seen it die (SPAWN_ERROR)
        error = exc
    assert error is None or "SPAWN_ERROR" in str(error)
    wait_until(
        lambda: (
            by_n(runtime)[1].state is expected
            and sv.call("getProcessInfo", f"{group}:{group}-1")["statename"] in ("FATAL", "EXITED")
        ),
        5,
        f"{group}-1 {expected}",
    )
    assert by_n(runtime)[1].pid is None


@pytest.mark.parametrize(
    ("statename", "exitstatus", "expected"),
    [
        ("STOPPED", 0, UnitState.STOPPED),
        ("STARTING", 0, UnitState.STARTING),
        ("RUNNING", 0, UnitState.RUNNING),
        ("BACKOFF", 0, UnitState.FAILED),
        ("STOPPING", 0, UnitState.STOPPING),
        ("EXITED", 0, UnitState.STOPPED),
        ("EXITED", 1, UnitState.FAILED),
        ("FATAL", 0, UnitState.FAILED),
        ("UNKNOWN", 0, UnitState.FAILED),
    ],
)
def test_state_mapping(statename: str, exitstatus: int, expected: UnitState) -> None:
    """Every supervisord process state maps as docs/runtime-supervisor.md says."""
    assert map_state(statename, exitstatus) is expected


# --------------------------------------------------------------------------- http and auth


def test_http_url_with_credentials(sv: Supervisord, monkeypatch: pytest.MonkeyPatch) -> None:
    """http://HOST:PORT with username and password_env lists the same instances."""
    monkeypatch.setenv("SV_PASSWORD", sv.password)
    runtime = sv.runtime(url=sv.http_url, username=sv.username, password_env="SV_PASSWORD")
    assert [i.n for i in runtime.list()] == [1, 2, 3]


def test_wrong_password_is_a_permanent_error(
    sv: Supervisord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP 401 names the settings to check."""
    monkeypatch.setenv("SV_PASSWORD", "wrong")
    runtime = sv.runtime(url=sv.http_url, username=sv.username, password_env="SV_PASSWORD")
    with pytest.raises(PermanentError, match=r"401.*username and password_env"):
        runtime.list()


def test_unset_password_env_is_a_permanent_error(
    sv: Supervisord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password_env that is not set fails when the runtime is built."""
    monkeypatch.delenv("SV_MISSING", raising=False)
    with pytest.raises(PermanentError, match=r"pools\.web\.runtime\.password_env: .*SV_MISSING"):
        sv.runtime(url=sv.http_url, username=sv.username, password_env="SV_MISSING")


# --------------------------------------------------------------------------- not answering


@pytest.fixture
def short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a short path, for unix sockets."""
    return tmp_path_factory.mktemp("u")


@pytest.fixture
def silent_socket(short: Path) -> Iterator[Path]:
    """A unix socket that accepts connections and never answers (a hung supervisord)."""
    path = short / "hung.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen(8)
        yield path


def _dead_socket(short: Path) -> Path:
    """What a killed supervisord leaves: a socket file nobody listens on."""
    path = short / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("where", ["missing", "dead", "http"])
def test_supervisord_not_running_is_a_temporary_error(
    sv: Supervisord, short: Path, where: str
) -> None:
    """Socket missing, stale socket, refused port: TemporaryError at once, for every call."""
    url = {
        "missing": f"unix://{short}/nothing.sock",
        "dead": f"unix://{_dead_socket(short)}",
        "http": f"http://127.0.0.1:{_closed_port()}",
    }[where]
    options = {"url": url, "group": "web"}
    runtime = SupervisorRuntime("web", pool_with(sv.base, options), options)
    began = time.monotonic()
    for call in (runtime.list, lambda: runtime.start(1), lambda: runtime.stop(1)):
        with pytest.raises(TemporaryError, match="not answering"):
            call()
    assert time.monotonic() - began < 1.0


def test_hung_supervisord_times_out(sv: Supervisord, silent_socket: Path) -> None:
    """A supervisord that never answers is a TemporaryError after ``timeout``."""
    options = {"url": f"unix://{silent_socket}", "group": "web", "timeout": "0.3s"}
    runtime = SupervisorRuntime("web", pool_with(sv.base, options), options)
    began = time.monotonic()
    with pytest.raises(TemporaryError, match=r"timed out after 0\.3s"):
        runtime.list()
    assert 0.25 < time.monotonic() - began < 2.0


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"group": "web"}, "pools.web.runtime.url: "),
        ({"url": "unix:///x.sock"}, "pools.web.runtime.group: "),
        ({"url": "ftp://h", "group": "web"}, "pools.web.runtime.url: "),
        ({"url": "unix://rel.sock", "group": "web"}, "pools.web.runtime.url: "),
        ({"url": "http://u:p@h:9001", "group": "web"}, "pools.web.runtime.url: "),
        ({"url": "unix:///x.sock", "group": "a:b"}, "pools.web.runtime.group: "),
        ({"url": "unix:///x.sock", "group": "web", "process": "{group}"}, ".process: "),
        ({"url": "unix:///x.sock", "group": "web", "process": "{x}-{n}"}, ".process: "),
        ({"url": "unix:///x.sock", "group": "web", "timeout": 0}, "pools.web.runtime.timeout: "),
        ({"url": "unix:///x.sock", "group": "web", "stop_timeout": "-1s"}, ".stop_timeout: "),
        ({"url": "unix:///x.sock", "group": "web", "password_env": "1X"}, ".password_env: "),
        ({"url": "unix:///x.sock", "group": "web", "username": "u"}, "pools.web.runtime: "),
        ({"url": "unix:///x.sock", "group": "web", "tiemout": 1}, 'unknown key "tiemout"'),
    ],
)
def test_settings_errors_name_the_field(options: dict[str, object], problem: str) -> None:
    """Each invalid setting is a PolicyError naming ``pools.web.runtime.FIELD``."""
    pool = pool_with(8000, {"url": "unix:///x.sock", "group": "web"})
    with pytest.raises(PolicyError) as caught:
        SupervisorRuntime("web", pool, options)
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert all(p.startswith("pools.web.runtime") for p in caught.value.problems)
