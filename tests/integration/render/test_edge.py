"""nginx and HAProxy read the rendered files: ``nginx -t`` and ``haproxy -c``; web01's nginx
and local HAProxy serve the site (the scaling through that HAProxy: ``test_web_haproxy.py``)."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest

from senex_scale.testing import wait_until

pytestmark = pytest.mark.integration


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a checker; its output in the assertion message when it fails."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("host", ["web01", "web02"])
def test_nginx_accepts_the_rendered_config(deployment: Any, host: str) -> None:
    """``nginx -t`` passes, and ``nginx -T`` shows the upstream, WebSocket and shutdown settings
    (the includes resolve next to nginx.conf, as in /etc/nginx)."""
    conf = deployment.file(host, "nginx/nginx.conf")
    prefix = str(deployment.paths["nginx"]) + "/"
    checked = run(["nginx", "-t", "-c", str(conf), "-p", prefix])
    assert checked.returncode == 0, checked.stderr
    dumped = run(["nginx", "-T", "-c", str(conf), "-p", prefix])
    assert dumped.returncode == 0, dumped.stderr
    text = dumped.stdout
    assert "worker_shutdown_timeout 120s;" in text
    assert "upstream django_backend {" in text
    assert f"    server 127.0.0.1:{deployment.inv.web_haproxy.listen};\n" in text
    assert "ip_hash;" not in text
    first = deployment.inv.pools["django"].port_of(1)
    assert f":{first}" not in text  # no instance: nginx's one server is the local HAProxy
    assert "keepalive 32;" in text
    assert "location ~ ^/(ready|metrics|senex)(/|$) {" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text


def test_nginx_rejects_a_broken_upstream(deployment: Any, tmp_path: Any) -> None:
    """The check can fail: a copy with a bad upstream line is refused by ``nginx -t``."""
    import shutil

    copy = tmp_path / "nginx"
    shutil.copytree(deployment.file("web01", "nginx"), copy)
    upstream = copy / "conf.d" / "django_backend.conf"
    port = deployment.inv.web_haproxy.listen
    text = upstream.read_text()
    upstream.write_text(text.replace(f":{port};", f":{port} max_fails=three;"))
    assert upstream.read_text() != text
    checked = run(["nginx", "-t", "-c", str(copy / "nginx.conf"), "-p", str(tmp_path) + "/"])
    assert checked.returncode != 0
    assert "max_fails" in checked.stderr


def test_haproxy_accepts_the_rendered_config(deployment: Any) -> None:
    """``haproxy -c`` passes on the rendered config, with its TLS certificate in place."""
    cfg = deployment.file("lb01", "haproxy/haproxy.cfg")
    checked = run(["haproxy", "-c", "-f", str(cfg)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = cfg.read_text()
    assert f"stats socket {deployment.paths['haproxy'] / 'admin.sock'} mode 600 level admin" in text
    for line in (
        "balance leastconn",
        "option httpchk GET /health/ HTTP/1.1",
        "http-check send hdr Host your-domain.com",
        "http-check expect status 200",
        f"server web01 127.0.0.1:{deployment.inv.nginx.listen} check",
        f"server web02 127.0.0.1:{deployment.inv.nginx.listen} check",
    ):
        assert f"    {line}\n" in text, line
    assert "cookie" not in text  # a sticky client would come back to the host that asked it to go


def test_nginx_proxies_http_and_websockets(web01: Any, deployment: Any) -> None:
    """Through the rendered nginx and local HAProxy: /health/ answers 200 and a WebSocket on
    the websocket path is upgraded and echoes, from web01's instance."""
    from websockets.sync.client import connect

    pool = deployment.inv.pools["django"]
    url = f"http://127.0.0.1:{web01.nginx.port}"
    wait_until(lambda: httpx.get(f"{url}/health/", timeout=5).status_code == 200, 15, "health")
    response = httpx.get(f"{url}/health/", timeout=5)
    assert response.text == "ok\n"
    with connect(f"ws://127.0.0.1:{web01.nginx.port}/ws/echo", open_timeout=5) as ws:
        ws.send("hello")
        port, _, text = str(ws.recv(timeout=5)).partition(":")
    assert text == "hello"
    assert int(port) == pool.port_of(1)


def test_nginx_keeps_ready_and_metrics_internal(web01: Any, deployment: Any) -> None:
    """Through the rendered site /ready/ and /metrics (any spelling nginx normalises to them)
    are 404 from nginx itself; the instances still serve them on their own ports, and the
    application's other paths pass through."""
    url = f"http://127.0.0.1:{web01.nginx.port}"
    wait_until(lambda: httpx.get(f"{url}/health/", timeout=5).status_code == 200, 15, "health")
    for path in ("/ready/", "/ready", "/metrics", "/metrics/", "/%6detrics", "//ready/",
                 "/api/../metrics"):  # fmt: skip
        response = httpx.get(url + path, timeout=5)
        assert response.status_code == 404, path
        assert "inside" not in response.text, path
    assert httpx.get(f"{url}/api/positions/1/", timeout=5).text == "inside /api/positions/1/\n"
    first = deployment.inv.pools["django"].port_of(1)
    assert httpx.get(f"http://127.0.0.1:{first}/metrics", timeout=5).status_code == 200
