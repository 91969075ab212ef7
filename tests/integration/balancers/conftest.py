"""Real HAProxys and nginxes on "hosts" that are loopback addresses of this machine.

Loopback is all of 127.0.0.0/8, so ``Host(address="127.0.0.2", transport="local")`` is a
second host for the balancers: its instances answer on 127.0.0.2 and every file operation and
command for it goes through the transport code path (``balancers.files.RemoteFiles``), on
this machine. Backends are ``ThreadingHTTPServer``s answering their instance number, instance
n of host ADDRESS on ``ADDRESS:BASE+n`` (the pool's port scheme). Each server's directory is
named after its host (``ROOT/web01``), so one setting with ``{host}`` fits every host.

``commands`` puts a directory of recording shims first on PATH (``cat``, ``mktemp``, ``mv``,
...: each logs its argv and runs the real program): what a test sees there went through
commands, not Python file I/O.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from senex_scale import lab
from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.lab.haproxy import haproxy_binary, http_proxy
from senex_scale.lab.nginx import nginx_binary, proxy_http
from senex_scale.policy.models import Host, Pool

UPSTREAM = "senex_web"
BACKEND = "django_backend"
HOSTS = {
    "web01": Host(address="127.0.0.1", transport="local"),
    "web02": Host(address="127.0.0.2", transport="local"),
}
PLACED = {1: "web01", 2: "web02", 3: "web01", 4: "web02"}
"""Instance -> the host it runs on (numbers unique across the pool's hosts)."""
SHIMMED = ("cat", "test", "mktemp", "dd", "chmod", "chown", "ln", "mv", "rm")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok" if self.path == "/health/" else str(self.server.instance).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: HAProxy's health checks close their connections with a reset."""


class Backends:
    """Instances 1..4 placed on the hosts as ``PLACED`` says."""

    def __init__(self, base: int) -> None:
        self.base = base

    def address(self, n: int) -> str:
        return f"{HOSTS[PLACED[n]].address}:{self.base + n}"


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    """The session's backends, each in its own thread."""
    for _ in range(20):
        base = lab.free_port_range(len(PLACED))
        servers: list[_Server] = []
        try:
            for n, host in PLACED.items():
                server = _Server((HOSTS[host].address, base + n), _Handler)
                server.instance = n  # type: ignore[attr-defined]
                servers.append(server)
        except OSError:
            for server in servers:
                server.server_close()
            continue
        threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
        for thread in threads:
            thread.start()
        try:
            yield Backends(base)
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
        return
    pytest.fail("no free run of loopback ports for the backends")


def pool(balancer: dict[str, Any], base: int, hosts: tuple[str, ...] = ("web01", "web02")) -> Pool:
    """Pool "web" on ``hosts`` with ``balancer`` and port ``base + n``."""
    data: dict[str, Any] = {"min": 0, "max": 8, "port": base, "hosts": list(hosts)}
    return Pool.model_validate(data | {"balancer": balancer})


# --------------------------------------------------------------------------- nginx


class Nginx(lab.Nginx):
    """One host's nginx, its upstream file under its root."""

    @property
    def upstream_file(self) -> Path:
        return self.root / "upstream.conf"

    def bodies(self, count: int = 8) -> list[str]:
        """Bodies (or "STATUS") of ``count`` requests through this nginx."""
        out = []
        for _ in range(count):
            response = httpx.get(self.url, timeout=5)
            out.append(response.text if response.status_code == 200 else str(response.status_code))
        return out

    def reset(self) -> None:
        """The empty upstream (the placeholder), reloaded."""
        self.upstream_file.write_text(EMPTY_UPSTREAM)
        self.reload()


EMPTY_UPSTREAM = NginxBalancer(
    "web", Pool(min=0, max=1), {"upstream": UPSTREAM, "file": "/x"}
).render([])


def nginx_options(root: Path, **more: Any) -> dict[str, Any]:
    """nginx balancer settings for the nginx of ``root/{host}`` (fast reloads)."""
    options: dict[str, Any] = {
        "type": "nginx",
        "upstream": UPSTREAM,
        "file": str(root / "{host}" / "upstream.conf"),
        "conf": str(root / "{host}" / "nginx.conf"),
        "prefix": str(root / "{host}"),
        "nginx": nginx_binary(),
        "reload_timeout": "5s",
        "ip_hash": False,  # every test client is 127.0.0.1: one hash
    }
    return options | more


@pytest.fixture(scope="session")
def nginx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nginx-hosts")


@pytest.fixture(scope="session")
def nginx_servers(nginx_root: Path) -> Iterator[dict[str, Nginx]]:
    """An nginx per host, ``ROOT/web01`` and ``ROOT/web02``."""
    servers: dict[str, Nginx] = {}
    try:
        for name in HOSTS:
            root = nginx_root / name
            root.mkdir()
            (root / "upstream.conf").write_text(EMPTY_UPSTREAM)
            servers[name] = Nginx(root, http=proxy_http(UPSTREAM)).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def nginxes(nginx_servers: dict[str, Nginx]) -> dict[str, Nginx]:
    """Both hosts' nginx with empty upstreams."""
    for server in nginx_servers.values():
        server.reset()
    return nginx_servers


# --------------------------------------------------------------------------- HAProxy


class HAProxy(lab.HAProxy):
    """One host's HAProxy."""

    def bodies(self, count: int = 8) -> list[str]:
        out = []
        for _ in range(count):
            response = httpx.get(f"http://127.0.0.1:{self.port}/", timeout=5)
            out.append(response.text if response.status_code == 200 else str(response.status_code))
        return out

    def server_lines(self) -> list[str]:
        return [
            line.strip()
            for line in self.config.read_text().splitlines()
            if line.strip().startswith("server ")
        ]


def haproxy_options(root: Path, **more: Any) -> dict[str, Any]:
    """HAProxy balancer settings for the HAProxy of ``root/{host}`` (fast checks)."""
    options: dict[str, Any] = {
        "type": "haproxy",
        "socket": str(root / "{host}" / "admin.sock"),
        "backend": BACKEND,
        "config": str(root / "{host}" / "haproxy.cfg"),
        "haproxy": haproxy_binary(),
        "server_options": "inter 200ms rise 1 fall 1",
    }
    return options | more


@pytest.fixture(scope="session")
def haproxy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("haproxy-hosts")


@pytest.fixture(scope="session")
def haproxy_servers(haproxy_root: Path) -> Iterator[dict[str, HAProxy]]:
    """A HAProxy per host, ``ROOT/web01`` and ``ROOT/web02``."""
    servers: dict[str, HAProxy] = {}
    try:
        for name in HOSTS:
            root = haproxy_root / name
            root.mkdir()
            conf = http_proxy(BACKEND, client_timeout="10s", server_timeout="10s")
            servers[name] = HAProxy(root, conf=conf).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def haproxies(haproxy_servers: dict[str, HAProxy]) -> Iterator[dict[str, HAProxy]]:
    """Both hosts' HAProxy; the servers a test added are gone afterwards (config too)."""
    before = {name: s.config.read_bytes() for name, s in haproxy_servers.items()}
    yield haproxy_servers
    for name, server in haproxy_servers.items():
        server.config.write_bytes(before[name])
        server.stop()
        server.start()


# --------------------------------------------------------------------------- commands


@pytest.fixture
def commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[list[str]]]:
    """Recording shims first on PATH; the call returns the argvs run so far."""
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "commands.log"
    log.touch()
    for name in SHIMMED:
        real = shutil.which(name)
        assert real is not None, name
        shim = shims / name
        shim.write_text(
            f'#!/bin/sh\nprintf "%s\\0" {name} "$@" >> {log}\nprintf "\\n" >> {log}\n'
            f'exec {real} "$@"\n'
        )
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ.get('PATH', '')}")

    def read() -> list[list[str]]:
        return [
            line.rstrip("\0").split("\0")
            for line in log.read_text().split("\n")
            if line.strip("\0")
        ]

    return read


# --------------------------------------------------------------------------- the site


class Site:
    """What a test builds balancers from: the hosts, the backends, the servers' roots."""

    hosts = HOSTS

    def __init__(self, backends: Backends, nginx_root: Path, haproxy_root: Path) -> None:
        self.backends = backends
        self.nginx_root = nginx_root
        self.haproxy_root = haproxy_root

    def address(self, n: int) -> str:
        return self.backends.address(n)

    def pool(self, balancer: dict[str, Any], hosts: tuple[str, ...] = ("web01", "web02")) -> Pool:
        return pool(balancer, self.backends.base, hosts)

    def nginx_options(self, **more: Any) -> dict[str, Any]:
        return nginx_options(self.nginx_root, **more)

    def haproxy_options(self, **more: Any) -> dict[str, Any]:
        return haproxy_options(self.haproxy_root, **more)


@pytest.fixture
def site(backends: Backends, nginx_root: Path, haproxy_root: Path) -> Site:
    return Site(backends, nginx_root, haproxy_root)
