"""A web host as rendered: nginx -> the local HAProxy -> the instances, scaled without a reload.

The rendered ``haproxy-web.cfg`` passes ``haproxy -c``; then web01's rendered nginx and local
HAProxy run on loopback in front of stand-in instances, and the controller's own ``haproxy``
balancer (with the settings of the policies that describe this deployment) adds an instance
through the runtime API: the new instance gets the next WebSocket (leastconn), nginx's master
and workers stay the same processes (no reload), and a WebSocket opened before goes on. The
control endpoint's paths (``/senex/``) are 404 through nginx and through HAProxy alone.
"""

from __future__ import annotations

import http.client
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from senex_scale.balancers.base import Member, MemberState
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.lab.haproxy import haproxy_binary
from senex_scale.policy.models import Pool
from senex_scale.testing import wait_until

pytestmark = pytest.mark.integration


def balancer_for(deployment: Any) -> HAProxyBalancer:
    """The django pool's balancer as the default policy sets it (``type = "haproxy"``, no
    cookie), pointed at the inventory's admin socket and installed config."""
    wh = deployment.inv.web_haproxy
    pool = deployment.inv.pools["django"]
    spec = Pool.model_validate(
        {"kind": "web", "min": pool.min, "max": pool.max, "port": pool.port, "health": "/health/"}
    )
    options = {
        "socket": wh.admin_socket,
        "backend": deployment.inv.nginx.upstream,
        "config": wh.config,
        "cookie": False,
        "haproxy": haproxy_binary(),
    }
    return HAProxyBalancer("django", spec, options)


def echo_port(ws: Any, text: str) -> int:
    """Send ``text`` on a WebSocket; the port of the instance that echoed it."""
    ws.send(text)
    port, _, echoed = str(ws.recv(timeout=5)).partition(":")
    assert echoed == text
    return int(port)


def raw_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """A request with ``path`` sent as it is (no client-side normalisation of ``..`` or %XX)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize("host", ["web01", "web02"])
def test_haproxy_accepts_the_rendered_local_config(deployment: Any, host: str) -> None:
    """``haproxy -c`` passes on each web host's haproxy-web.cfg."""
    cfg = deployment.file(host, "haproxy/haproxy-web.cfg")
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_haproxy_rejects_a_broken_local_config(deployment: Any, tmp_path: Any) -> None:
    """The check can fail: a copy with an unknown balance algorithm is refused."""
    cfg = deployment.file("web01", "haproxy/haproxy-web.cfg").read_text()
    broken = tmp_path / "haproxy-web.cfg"
    broken.write_text(cfg.replace("balance leastconn", "balance nosuchalgorithm"))
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode != 0
    assert "balance only supports" in checked.stdout + checked.stderr


def test_a_new_instance_gets_new_websockets_without_an_nginx_reload(
    web01: Any, deployment: Any, launchers: Any
) -> None:
    """Adding an instance through HAProxy's runtime API: the next WebSocket through nginx goes
    to it (leastconn: the old instance holds one), nginx's processes are the same ones (no
    reload), the WebSocket opened before still echoes, and the change is in the config file
    in the rendered servers' form."""
    from websockets.sync.client import connect

    pool = deployment.inv.pools["django"]
    balancer = balancer_for(deployment)
    first = Member(1, f"127.0.0.1:{pool.port_of(1)}", MemberState.READY, 0)
    wait_until(lambda: balancer.members() == [first], 15, "instance 1 in service in HAProxy")
    ws_url = f"ws://127.0.0.1:{web01.nginx.port}/ws/echo"
    pids = web01.nginx_pids()
    with connect(ws_url, open_timeout=5) as before:
        assert echo_port(before, "first") == pool.port_of(1)
        web01.backends[3] = launchers.backend(pool.port_of(3))
        balancer.add(3, f"127.0.0.1:{pool.port_of(3)}")
        assert [(m.n, m.state) for m in balancer.members()] == [
            (1, MemberState.READY),
            (3, MemberState.READY),
        ]
        with connect(ws_url, open_timeout=5) as after:
            assert echo_port(after, "second") == pool.port_of(3)
            assert balancer.connections(1) == 1
            assert balancer.connections(3) == 1
        assert echo_port(before, "still there") == pool.port_of(1)
        assert web01.nginx_pids() == pids
    installed = Path(deployment.inv.web_haproxy.config).read_text(encoding="utf-8")
    servers = [
        line.strip() for line in installed.splitlines() if line.strip().startswith("server ")
    ]
    assert servers == [
        f"server django-1 127.0.0.1:{pool.port_of(1)} check",
        f"server django-3 127.0.0.1:{pool.port_of(3)} check",
    ]


def test_a_drained_instance_gets_no_new_websockets(
    web01: Any, deployment: Any, launchers: Any
) -> None:
    """A drain through the runtime API: new WebSockets go elsewhere, the open one goes on, and
    again nginx is not reloaded."""
    from websockets.sync.client import connect

    pool = deployment.inv.pools["django"]
    balancer = balancer_for(deployment)
    web01.backends[2] = launchers.backend(pool.port_of(2))
    balancer.add(2, f"127.0.0.1:{pool.port_of(2)}")
    ws_url = f"ws://127.0.0.1:{web01.nginx.port}/ws/echo"
    pids = web01.nginx_pids()
    with connect(ws_url, open_timeout=5) as held:
        port = echo_port(held, "held")
        n = port - pool.port_of(0)
        other = 2 if n == 1 else 1
        balancer.drain(n)
        for i in range(3):
            with connect(ws_url, open_timeout=5) as fresh:
                assert echo_port(fresh, f"fresh {i}") == pool.port_of(other)
        assert echo_port(held, "held still") == port
    assert web01.nginx_pids() == pids


PATHS = (
    "/senex/websockets/",
    "/senex/websockets",
    "/senex/",
    "//senex/websockets/",
    "/%73enex/websockets/",
    "/api/../senex/websockets/",
)


def test_the_control_endpoint_is_never_reachable_through_the_site(
    web01: Any, deployment: Any
) -> None:
    """GET and POST of /senex/... (any spelling) are 404 through nginx, and 404 from the local
    HAProxy alone too; the instance itself serves the path, the app's other paths pass."""
    first = deployment.inv.pools["django"].port_of(1)
    assert raw_get(first, "/senex/websockets/") == (200, "inside /senex/websockets/\n")
    for method in ("GET", "POST"):
        for path in PATHS:
            status, body = raw_get(web01.nginx.port, path, method)
            assert status == 404, (method, path)
            assert "inside" not in body, (method, path)
    for path in PATHS[:-1]:  # HAProxy does not resolve "..": nginx does, in front of it
        status, body = raw_get(web01.haproxy.port, path)
        assert status == 404, path
        assert "inside" not in body, path
    url = f"http://127.0.0.1:{web01.nginx.port}"
    assert httpx.get(f"{url}/api/positions/1/", timeout=5).text == "inside /api/positions/1/\n"
    assert raw_get(web01.haproxy.port, "/api/x")[0] == 200
