"""senex_scale.lab: supervisord, nginx, HAProxy and Prometheus start, answer and stop."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from senex_scale.lab import HAProxy, LabError, Nginx, Prometheus, Supervisord, static_job
from senex_scale.testing import wait_until

pytestmark = pytest.mark.integration

SLEEPER = """\
[program:sleeper]
command={python} -c "import time; time.sleep(300)"
process_name=%(program_name)s-%(process_num)d
numprocs=2
numprocs_start=1
startsecs=0
"""


def test_supervisord(tmp_path: Path, tree: Callable[..., Any], gone: Callable[..., bool]) -> None:
    with Supervisord(tmp_path / "sv", programs=SLEEPER) as sv:
        wait_until(
            lambda: [p["statename"] for p in sv.call("getAllProcessInfo")] == ["RUNNING"] * 2,
            10,
            "both sleepers to run",
        )
        assert stat.S_IMODE(sv.conf.stat().st_mode) == 0o600
        auth = (sv.username, sv.password)
        assert httpx.get(sv.http_url, auth=auth).status_code == 200
        assert httpx.get(sv.http_url).status_code == 401
        processes = tree(sv)
        assert len(processes) == 3
    assert gone(processes)
    assert sv.forced == []


def test_supervisord_start_failure_has_the_output(tmp_path: Path) -> None:
    sv = Supervisord(tmp_path / "sv", programs="[program:bad]\nnumprocs=lots\n")
    with pytest.raises(LabError, match="exited") as raised:
        sv.start()
    assert "program:bad" in str(raised.value)


SERVER = """\
server {
    listen 127.0.0.1:{port};
    location / { return 200 "lab"; }
}
"""


def test_nginx(tmp_path: Path, tree: Callable[..., Any], gone: Callable[..., bool]) -> None:
    with Nginx(tmp_path / "nginx", http=SERVER) as nginx:
        assert httpx.get(nginx.url).text == "lab"
        nginx.test()
        before = nginx.workers()
        nginx.reload()
        assert nginx.workers().isdisjoint(before)
        assert httpx.get(nginx.url).text == "lab"
        processes = tree(nginx)
        nginx.kill()
        assert gone(processes)
        nginx.start()
        processes = tree(nginx)
    assert gone(processes)


def test_nginx_start_failure_has_the_log_tail(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="unknown directive") as raised:
        Nginx(tmp_path / "nginx", http="no_such_directive on;\n").start()
    assert "nginx.log" in str(raised.value)


FRONTEND = """\
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend web
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string lab
"""


def test_haproxy(tmp_path: Path, tree: Callable[..., Any], gone: Callable[..., bool]) -> None:
    with HAProxy(tmp_path / "haproxy", conf=FRONTEND) as haproxy:
        assert httpx.get(f"http://{haproxy.address}/").text == "lab"
        assert "Name: HAProxy" in haproxy.command("show info")
        assert stat.S_IMODE(haproxy.socket.stat().st_mode) == 0o600
        before = haproxy.worker_pid()
        haproxy.reload()
        assert haproxy.worker_pid() != before
        processes = tree(haproxy)
    assert gone(processes)


def test_haproxy_start_failure_has_the_log_tail(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="exited") as raised:
        HAProxy(tmp_path / "haproxy", conf="frontend web\n    no_such_keyword\n").start()
    assert "no_such_keyword" in str(raised.value)


def test_prometheus(tmp_path: Path, tree: Callable[..., Any], gone: Callable[..., bool]) -> None:
    prometheus = Prometheus(tmp_path / "prometheus")
    prometheus.scrape_configs.append(static_job("self", [prometheus.address]))
    with prometheus:
        wait_until(prometheus.targets_up, 15, "prometheus to scrape itself", ignore=(KeyError,))
        wait_until(lambda: bool(prometheus.query('up{job="self"}')), 15, "up{job=self}")
        assert prometheus.query('up{job="self"}')[0]["value"][1] == "1"
        with pytest.raises(LabError, match="parse error"):
            prometheus.query("up{")
        processes = tree(prometheus)
    assert gone(processes)


def test_prometheus_start_failure_has_the_log_tail(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="exited") as raised:
        Prometheus(tmp_path / "prometheus", scrape_interval="often").start()
    assert "often" in str(raised.value)
