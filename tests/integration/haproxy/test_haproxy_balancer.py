"""The ``haproxy`` balancer against a real HAProxy: runtime API, drain, persistence, errors."""

from __future__ import annotations

import http.client
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from senex_scale.balancers.base import MemberState
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.errors import PermanentError, PolicyError, TemporaryError
from senex_scale.policy.models import Pool
from senex_scale.testing import free_port

pytestmark = pytest.mark.integration

HAPROXY = "/usr/sbin/haproxy"


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` every 50 ms; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def states(lb: HAProxyBalancer) -> dict[int, MemberState]:
    """Member number -> state."""
    return {m.n: m.state for m in lb.members()}


def add_ready(lb: HAProxyBalancer, backends: dict[int, Any], *ns: int) -> None:
    """Add backends ``ns`` and wait until HAProxy's checks have them READY."""
    for n in ns:
        lb.add(n, backends[n].address)
    wait_for(lambda: all(states(lb).get(n) is MemberState.READY for n in ns), 5, f"{ns} ready")


def server_lines(config: Path) -> list[str]:
    """The ``server`` lines of the config, stripped."""
    return [
        line.strip()
        for line in config.read_text().splitlines()
        if line.strip().startswith("server ")
    ]


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    """``haproxy -c -f config``."""
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )


def test_add_two_servers_both_receive_requests(
    balancer: HAProxyBalancer, haproxy: Any, backends: dict[int, Any]
) -> None:
    """Two added servers are READY at their addresses and share fresh-connection requests."""
    add_ready(balancer, backends, 1, 2)
    members = {m.n: m for m in balancer.members()}
    assert members[1].address == backends[1].address
    assert members[2].address == backends[2].address
    assert set(haproxy.bodies(8)) == {"1", "2"}
    assert balancer.connections(1) == 0
    assert balancer.connections(9) is None


def test_add_is_idempotent_but_not_to_another_address(
    balancer: HAProxyBalancer, backends: dict[int, Any]
) -> None:
    """Adding the same server twice is fine; the same name at another address is refused."""
    add_ready(balancer, backends, 1)
    balancer.add(1, backends[1].address)
    assert states(balancer) == {1: MemberState.READY}
    with pytest.raises(PermanentError, match="already exists at"):
        balancer.add(1, backends[2].address)


def test_drain_keeps_open_connections_and_sends_new_ones_elsewhere(
    balancer: HAProxyBalancer, haproxy: Any, backends: dict[int, Any]
) -> None:
    """A drained server finishes in-flight requests and gets no new ones; keep-alive survives."""
    add_ready(balancer, backends, 1, 2)
    keepalive = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=10)
    keepalive.request("GET", "/")
    assert keepalive.getresponse().read() in (b"1", b"2")

    results: list[tuple[int, bytes]] = []

    def slow() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=10)
        conn.request("GET", "/slow?s=1.5")
        response = conn.getresponse()
        results.append((response.status, response.read()))
        conn.close()

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: (balancer.connections(1) or 0) > 0, 3, "a session on web-1")

    balancer.drain(1)
    members = {m.n: m for m in balancer.members()}
    assert members[1].state is MemberState.DRAINING
    assert members[2].state is MemberState.READY
    assert (members[1].connections or 0) > 0
    assert set(haproxy.bodies(6)) == {"2"}

    keepalive.request("GET", "/")
    response = keepalive.getresponse()
    assert (response.status, response.read()) == (200, b"2")
    keepalive.close()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [(200, b"1"), (200, b"2")]
    assert "server web-1 " in " ".join(server_lines(haproxy.config))
    assert any(line.endswith("weight 0") for line in server_lines(haproxy.config))


def test_remove_deletes_the_server_and_its_config_line(
    balancer: HAProxyBalancer, haproxy: Any, backends: dict[int, Any]
) -> None:
    """remove() deletes the server at runtime and from the config, which passes haproxy -c."""
    add_ready(balancer, backends, 1, 2)
    assert [line.split()[1] for line in server_lines(haproxy.config)] == ["web-1", "web-2"]
    balancer.drain(2)
    balancer.remove(2)
    assert set(states(balancer)) == {1}
    assert [line.split()[1] for line in server_lines(haproxy.config)] == ["web-1"]
    assert haproxy_check(haproxy.config).returncode == 0
    balancer.remove(2)  # idempotent
    assert set(haproxy.bodies(4)) == {"1"}


def test_restarted_haproxy_keeps_the_persisted_servers(
    balancer: HAProxyBalancer, haproxy: Any, backends: dict[int, Any]
) -> None:
    """After kill and start with the persisted config, servers, drain and cookies are there."""
    add_ready(balancer, backends, 1, 2, 3)
    balancer.drain(3)
    assert haproxy_check(haproxy.config).returncode == 0
    haproxy.stop()
    haproxy.start()
    wait_for(
        lambda: (
            states(balancer)
            == {1: MemberState.READY, 2: MemberState.READY, 3: MemberState.DRAINING}
        ),
        5,
        "persisted servers up",
    )
    assert {m.n: m.address for m in balancer.members()} == {
        n: backends[n].address for n in (1, 2, 3)
    }
    assert set(haproxy.bodies(6)) == {"1", "2"}
    # From the config the cookie applies (HAProxy 2.6 refuses it for dynamic servers).
    conn = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    cookie = response.getheader("Set-Cookie") or ""
    assert cookie.startswith(f"SERVERID=web-{response.read().decode()}")
    conn.close()
    # Static servers from the config can be put back into service and removed too.
    balancer.add(3, backends[3].address)
    wait_for(lambda: states(balancer).get(3) is MemberState.READY, 5, "web-3 ready again")
    balancer.remove(3)
    assert set(states(balancer)) == {1, 2}


def test_failed_config_check_changes_nothing(
    make: Callable[..., HAProxyBalancer], haproxy: Any, backends: dict[int, Any]
) -> None:
    """When the new config fails haproxy -c, neither HAProxy nor the config file change."""
    before = haproxy.config.read_text()
    lb = make(server_options="no-such-keyword 1")
    with pytest.raises(PermanentError, match="fails haproxy -c"):
        lb.add(1, backends[1].address)
    assert lb.members() == []
    assert haproxy.config.read_text() == before
    assert not list(haproxy.config.parent.glob(".haproxy.cfg.*"))


def test_missing_socket_is_temporary(make: Callable[..., HAProxyBalancer], tmp_path: Path) -> None:
    """A socket that does not exist, or a refused TCP socket, is a TemporaryError."""
    with pytest.raises(TemporaryError, match="No such file"):
        make(socket=str(tmp_path / "gone.sock")).members()
    with pytest.raises(TemporaryError, match="refused"):
        make(socket=f"127.0.0.1:{free_port()}").add(1, "127.0.0.1:1")


def test_unknown_backend_is_permanent_with_haproxys_message(
    make: Callable[..., HAProxyBalancer],
) -> None:
    """An unknown backend is a PermanentError carrying HAProxy's answer."""
    lb = make(backend="nope", config=None)
    with pytest.raises(PermanentError, match="Can't find backend"):
        lb.members()
    with pytest.raises(PermanentError, match="No such proxy"):
        lb.connections(1)


def test_settings_errors_name_the_field(haproxy: Any) -> None:
    """Invalid settings raise PolicyError naming pools.web.balancer.FIELD."""
    with pytest.raises(PolicyError) as info:
        HAProxyBalancer("web", _pool(), {"sockett": "x", "timeout": "0s", "check": "maybe"})
    problems = "\n".join(info.value.problems)
    assert 'pools.web.balancer: unknown key "sockett" (did you mean "socket"?)' in problems
    assert "pools.web.balancer.socket: required" in problems
    assert "pools.web.balancer.backend: required" in problems
    assert "pools.web.balancer.timeout: must be longer than 0s" in problems
    assert "pools.web.balancer.check:" in problems


def test_admin_socket_is_private(haproxy: Any) -> None:
    """The admin socket file has mode 0600."""
    mode = haproxy.socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def _pool() -> Pool:
    return Pool(min=1, max=4)


def test_remove_with_open_connections_is_temporary(
    make: Callable[..., HAProxyBalancer], haproxy: Any, backends: dict[int, Any]
) -> None:
    """del server refused while a request is in flight: TemporaryError, left in maintenance."""
    lb = make(timeout=0.3)
    add_ready(lb, backends, 1)
    done: list[int] = []

    def slow() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=10)
        conn.request("GET", "/slow?s=1.5")
        done.append(conn.getresponse().status)
        conn.close()

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: (lb.connections(1) or 0) > 0, 3, "a session on web-1")
    with pytest.raises(TemporaryError, match="connections"):
        lb.remove(1)
    assert states(lb) == {1: MemberState.DOWN}
    assert server_lines(haproxy.config)[-1].endswith("disabled")
    thread.join(10)
    assert done == [200]
    wait_for(lambda: lb.connections(1) == 0, 3, "the session to end")
    lb.remove(1)
    assert lb.members() == []
    assert server_lines(haproxy.config) == []


def test_silent_socket_times_out_as_temporary(make: Callable[..., HAProxyBalancer]) -> None:
    """A socket that accepts but never answers is a TemporaryError after ``timeout``."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(TemporaryError, match="no answer"):
            make(socket=f"127.0.0.1:{port}", timeout="200ms").members()
