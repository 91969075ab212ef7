"""The example inventory rendered for loopback, and servers started on the rendered files.

``deployment`` takes examples/inventory.toml, points every host at 127.0.0.1 with ports of its
own (the per-host ``ports`` overrides), puts paths (PgBouncer's files, nginx's pid and logs,
HAProxy's socket and a throwaway certificate, the web hosts' local HAProxy's config and admin
socket) under a lab directory and gives Sentinel short timeouts; then renders it with
``senex_scale.render`` like ``senex-scale render`` does.

The servers run from the rendered files through small subclasses of the lab's ``Server``
(process tree, readiness, log tails and clean stops come from ``senex_scale.lab``): the lab's
own PostgreSQL, PgBouncer, Redis and Sentinel classes write their own configs and cannot be
started on a given config file. "Installing" a file copies it into the server's directory
(keeping its mode; handed to the ``postgres`` user where that user runs the server), as an
operator copies the rendered files to their hosts. Overrides on the command line are only
where a loopback test needs one: PostgreSQL's socket directory and each Redis's ``--dir``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
import redis

from senex_scale.lab import HAProxy, Server, free_port, free_port_range, lab_dir
from senex_scale.render.inventory import Inventory, validate_inventory
from senex_scale.render.render import render

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "inventory.toml"
SECRETS = {
    "SENEX_DB_PASSWORD": "db-Secret-5e1f7a",
    "SENEX_MONITOR_PASSWORD": "monitor-Secret-4b7e21",
    "SENEX_REPLICATION_PASSWORD": "repl-Secret-8c2d44",
    "SENEX_REDIS_PASSWORD": "redis-Secret-31b9c0",
    "SENEX_SENTINEL_PASSWORD": "sentinel-Secret-77aa02",
}


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found (run scripts/services)")
    return found[-1].parent


@dataclass
class Deployment:
    """The rendered example: where it is, its inventory, its secrets and its ports."""

    root: Path
    out: Path
    inv: Inventory
    secrets: dict[str, str]
    ports: dict[str, dict[str, int]]
    paths: dict[str, Path] = field(default_factory=dict)

    def file(self, host: str, rel: str) -> Path:
        """A rendered file: OUT/HOST/REL."""
        return self.out / host / rel


def _certificate(path: Path) -> None:
    key, cert = path.with_suffix(".key"), path.with_suffix(".crt")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    path.write_bytes(cert.read_bytes() + key.read_bytes())
    path.chmod(0o600)


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    """The example inventory, adapted to loopback, rendered into ROOT/out."""
    root = lab_dir("senex-render-")
    with EXAMPLE.open("rb") as handle:
        data: dict[str, Any] = tomllib.load(handle)
    ports: dict[str, dict[str, int]] = {}
    for name, host in data["hosts"].items():
        host["address"] = "127.0.0.1"
        roles = set(host["roles"])
        mine: dict[str, int] = {}
        if roles & {"postgres-primary", "postgres-replica"}:
            mine["postgres"] = free_port()
        if "pgbouncer" in roles:
            mine["pgbouncer"] = free_port()
        if roles & {"redis-primary", "redis-replica"}:
            mine["redis"] = free_port()
        if "sentinel" in roles:
            mine["sentinel"] = free_port()
        host["ports"] = mine
        ports[name] = mine
    paths = {
        "pgbouncer": root / "pgbouncer",
        "nginx": root / "nginx",
        "haproxy": root / "haproxy",
        "certificate": root / "haproxy" / "site.pem",
        "web_haproxy": root / "haproxy-web",
    }
    data["pools"]["django"]["port"] = f"{free_port_range(data['pools']['django']['max'])} + n"
    data["nginx"]["listen"] = free_port()
    data["postgres"]["listen_addresses"] = "127.0.0.1"
    data["pgbouncer"].update(
        listen_addr="127.0.0.1",
        unix_socket_dir=str(paths["pgbouncer"]),
        auth_file=str(paths["pgbouncer"] / "userlist.txt"),
        logfile=str(paths["pgbouncer"] / "pgbouncer-file.log"),
        pidfile=str(paths["pgbouncer"] / "pgbouncer.pid"),
    )
    data["redis"].update(bind="127.0.0.1", dir=str(root / "redis"))
    (root / "redis").mkdir()  # Redis checks "dir" while reading its config, before --dir
    (root / "sentinel").mkdir()
    data["sentinel"].update(
        bind="127.0.0.1",
        dir=str(root / "sentinel"),
        down_after_milliseconds=1000,
        failover_timeout=3000,
    )
    data["nginx"].update(
        pid=str(paths["nginx"] / "nginx.pid"),
        error_log=str(paths["nginx"] / "error.log"),
        access_log=str(paths["nginx"] / "access.log"),
    )
    data["haproxy"].update(
        bind=f"127.0.0.1:{free_port()}",
        admin_socket=str(paths["haproxy"] / "admin.sock"),
        tls_certificate=str(paths["certificate"]),
    )
    data["web_haproxy"].update(
        listen=free_port(),
        admin_port=free_port(),
        config=str(paths["web_haproxy"] / "haproxy-web.cfg"),
        admin_socket=str(paths["web_haproxy"] / "admin.sock"),
    )
    for path in paths.values():
        (path if not path.suffix else path.parent).mkdir(parents=True, exist_ok=True)
    _certificate(paths["certificate"])
    inv = validate_inventory(data, source="loopback inventory")
    out = root / "out"
    render(inv, out, source="loopback inventory", environ=SECRETS)
    yield Deployment(root, out, inv, dict(SECRETS), ports, paths)
    shutil.rmtree(root, ignore_errors=True)


def install(source: Path, directory: Path, *, user: str | None = None) -> Path:
    """Copy a rendered file into a server's directory, mode kept; owned by ``user`` if root."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / source.name
    shutil.copy2(source, target)
    if user is not None and os.geteuid() == 0:
        shutil.chown(target, user, user)
    return target


# --------------------------------------------------------------------------- servers


class RenderedPostgres(Server):
    """``postgres -c config_file=... -c hba_file=...`` on the rendered files, as the Quadlet
    unit runs it. A standby is first filled by ``pg_basebackup`` from ``primary`` and gets a
    ``standby.signal``."""

    name = "postgres"
    run_as = "postgres"
    stop_signal = signal.SIGINT
    ready_timeout = 60.0

    def __init__(
        self,
        root: Path,
        port: int,
        *,
        conf: Path,
        hba: Path,
        primary: RenderedPostgres | None = None,
        replication: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(root, port)
        self.conf, self.hba = conf, hba
        self.primary = primary
        self.replication = replication
        self.datadir = self.root / "data"

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.root),
            "PGPASSFILE": str(self.root / "pgpass"),
        }

    def _prepare(self) -> None:
        user = self._user()
        install(self.conf, self.root, user=user)
        install(self.hba, self.root, user=user)
        if self.datadir.exists():
            return
        if self.primary is None:
            self._run([str(_pg_bin() / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                       "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])  # fmt: skip
            return
        assert self.replication is not None
        user_name, password = self.replication
        pgpass = self.root / "pgpass"
        pgpass.write_text(f"127.0.0.1:{self.primary.port}:*:{user_name}:{password}\n")
        pgpass.chmod(0o600)
        if user is not None:
            shutil.chown(pgpass, user, user)
        self._run([str(_pg_bin() / "pg_basebackup"), "-h", "127.0.0.1",
                   "-p", str(self.primary.port), "-U", user_name, "-D", str(self.datadir),
                   "-X", "stream", "-c", "fast", "-w"])  # fmt: skip
        signal_file = self.datadir / "standby.signal"
        signal_file.touch()
        if user is not None:
            shutil.chown(signal_file, user, user)

    def _argv(self) -> list[str]:
        return [
            str(_pg_bin() / "postgres"),
            "-D", str(self.datadir),
            "-c", f"config_file={self.root / self.conf.name}",
            "-c", f"hba_file={self.root / self.hba.name}",
            "-c", f"unix_socket_directories={self.root}",
        ]  # fmt: skip

    def _ready(self) -> bool:
        done = subprocess.run(
            [str(_pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return done.returncode == 0

    def psql_file(self, path: Path) -> None:
        """Run a SQL file as the superuser (peer over the socket, as the rendered pg_hba says)."""
        installed = install(path, self.root, user=self._user())
        self._run(["psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
                   "-v", "ON_ERROR_STOP=1", "-X", "-q", "-f", str(installed)])  # fmt: skip


class RenderedPgBouncer(Server):
    """``pgbouncer pgbouncer.ini`` on the rendered ini and userlist (run as ``postgres``)."""

    name = "pgbouncer"
    run_as = "postgres"
    ready_timeout = 20.0

    def __init__(self, root: Path, port: int, *, ini: Path, userlist: Path) -> None:
        super().__init__(root, port)
        self.ini, self.userlist = ini, userlist

    def _prepare(self) -> None:
        install(self.ini, self.root, user=self._user())
        install(self.userlist, self.root, user=self._user())

    def _argv(self) -> list[str]:
        return ["pgbouncer", str(self.root / self.ini.name)]

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True


class RenderedRedis(Server):
    """``redis-server redis.conf`` (or ``redis-sentinel sentinel.conf``) on a rendered file;
    ``--dir`` is this server's own directory (the inventory has one ``dir`` for all hosts)."""

    name = "redis"
    ready_timeout = 20.0
    not_yet: ClassVar[tuple[type[BaseException], ...]] = (OSError, redis.RedisError)

    def __init__(self, root: Path, port: int, *, conf: Path, password: str | None) -> None:
        super().__init__(root, port)
        self.conf = conf
        self.password = password
        self.name = "sentinel" if conf.name == "sentinel.conf" else "redis"

    def _prepare(self) -> None:
        install(self.conf, self.root)

    def _argv(self) -> list[str]:
        program = "redis-sentinel" if self.name == "sentinel" else "redis-server"
        return [program, str(self.root / self.conf.name), "--dir", str(self.root)]

    def client(self) -> redis.Redis:
        """A client with this server's password (the caller closes it)."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2
        )

    def _ready(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        finally:
            client.close()


class RenderedNginx(Server):
    """``nginx -c nginx.conf`` on the rendered main config (its includes beside it), in the
    foreground; the prefix (temp files) under ``root``."""

    name = "nginx"
    stop_signal = signal.SIGQUIT

    def __init__(self, root: Path, port: int, *, conf: Path) -> None:
        super().__init__(root, port)
        self.conf = conf

    @property
    def output(self) -> Path:
        return self.root / "nginx.out"

    def _argv(self) -> list[str]:
        return ["nginx", "-c", str(self.conf), "-p", f"{self.root}/", "-g", "daemon off;"]

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True


class RenderedHAProxy(HAProxy):
    """The web host's local HAProxy: ``haproxy -W -f`` on the rendered ``haproxy-web.cfg``,
    installed (copied afresh at each start) where the inventory puts it, ``web_haproxy.config``,
    which the policy's ``balancer.config`` names and the balancer rewrites; its admin socket is
    the inventory's ``web_haproxy.admin_socket``. The lab's ``HAProxy`` gives the rest
    (``command``, ``reload``, readiness on the admin socket)."""

    def __init__(self, root: Path, port: int, *, rendered: Path, config: Path, socket: Path):
        super().__init__(root, port, conf="")
        self.rendered = rendered
        self._config = config
        self._socket = socket

    @property
    def config(self) -> Path:
        return self._config

    @property
    def socket(self) -> Path:
        return self._socket

    def _prepare(self) -> None:
        shutil.copy2(self.rendered, self._config)


class Backend:
    """One Daphne stand-in on 127.0.0.1:PORT: ``/health/`` answers 200, ``/ws/...`` echoes
    WebSocket messages prefixed with its port (so a test sees which instance answered), and
    the paths the site keeps internal (``/ready``, ``/metrics``, ``/senex/``) answer 200
    "inside PATH", as the app does on its own port: only the site's refusal keeps them out."""

    def __init__(self, port: int) -> None:
        from websockets.sync.server import serve

        def health(connection: Any, request: Any) -> Any:
            if request.path == "/health/":
                return connection.respond(200, "ok\n")
            if request.path.startswith(("/ready", "/metrics", "/api/", "/senex/")):
                return connection.respond(200, f"inside {request.path}\n")
            return None

        def echo(websocket: Any) -> None:
            for message in websocket:
                websocket.send(f"{port}:{message}")

        self.port = port
        self.server = serve(echo, "127.0.0.1", port, process_request=health)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@dataclass(frozen=True)
class Launchers:
    """The server classes, for test modules (which cannot import this conftest)."""

    postgres: type[RenderedPostgres] = RenderedPostgres
    pgbouncer: type[RenderedPgBouncer] = RenderedPgBouncer
    redis: type[RenderedRedis] = RenderedRedis
    nginx: type[RenderedNginx] = RenderedNginx
    haproxy: type[RenderedHAProxy] = RenderedHAProxy
    backend: type[Backend] = Backend


@dataclass
class WebHost:
    """web01 running from its rendered files: nginx -> the local HAProxy -> the instances."""

    nginx: RenderedNginx
    haproxy: RenderedHAProxy
    backends: dict[int, Backend]

    def nginx_pids(self) -> set[int]:
        """The nginx master's pid and its workers' (a reload replaces the workers)."""
        assert self.nginx.pid is not None
        master = psutil.Process(self.nginx.pid)
        return {master.pid} | {child.pid for child in master.children()}


@pytest.fixture
def web01(deployment: Deployment) -> Iterator[WebHost]:
    """web01's rendered nginx and local HAProxy running, in front of the instance the render
    gives web01 (instance 1: the example spreads 1..min over web01 and web02)."""
    pool = deployment.inv.pools["django"]
    wh = deployment.inv.web_haproxy
    backends = {1: Backend(pool.port_of(1))}
    haproxy = RenderedHAProxy(
        deployment.paths["web_haproxy"],
        wh.listen,
        rendered=deployment.file("web01", "haproxy/haproxy-web.cfg"),
        config=Path(wh.config),
        socket=Path(wh.admin_socket),
    )
    nginx = RenderedNginx(
        deployment.paths["nginx"],
        deployment.inv.nginx.listen,
        conf=deployment.file("web01", "nginx/nginx.conf"),
    )
    host = WebHost(nginx, haproxy, backends)
    try:
        haproxy.start()
        nginx.start()
        yield host
    finally:
        nginx.stop()
        haproxy.stop()
        for backend in host.backends.values():
            backend.close()


@pytest.fixture(scope="session")
def launchers() -> Launchers:
    """Start servers on rendered files: ``launchers.postgres(root, port, conf=..., hba=...)``."""
    return Launchers()
