"""The multi-host stack on lab machines (``lab.machines``): a web pool as Quadlet units on two
web hosts, HAProxy on a balancer host, a controller policy over ssh, and HTTP and WebSocket
load through HAProxy. Shared by ``tests/hostlab/test_multi_host.py`` and
``bench/bench_host_loss.py``.

::

    this host (root namespace)               lab bridge 10.77.0.0/24
      senex-scale run (policy below) --ssh--> web01 .11  senex-web@N (Quadlet, Podman)
        |           \\                        web02 .12  senex-web@N
        |            +--TCP runtime API-----> lb    .10  HAProxy :80 (backend "web"),
        |            +--ssh: haproxy.cfg                  stats socket 10.77.0.10:9999
      load: HTTP GET / and WebSockets /ws/ ---> 10.77.0.10:80

The instance app is the lab image's own Python with the standard library only: ``GET
/health/`` answers ok, ``GET /`` answers ``HOST n``, and ``/ws/`` is a WebSocket (RFC 6455
framing written out here: the image has no WebSocket library) that greets, echoes and answers
pings; on SIGTERM it sends every open WebSocket a close frame (1001, going away), as Daphne
does, and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from senex_scale.balancers.base import MemberState
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.lab.machines import Machine
from senex_scale.runtimes.base import probe_health
from senex_scale.testing import wait_until

BASE = 8100
"""Instance n listens on BASE + n of its host's address."""
IMAGE = "localhost/senex-hostlab:latest"
APP_DIR = "/srv/senex-web"
TEMPLATE = "senex-web"
BACKEND = "web"
ADMIN_PORT = 9999

APP = '''\
"""One instance of the multi-host lab pool (senex_scale.lab.multihost)."""
import base64
import hashlib
import signal
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

base, n = int(sys.argv[1]), int(sys.argv[2])
host = socket.gethostname()
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
open_sockets = set()
lock = threading.Lock()


def frame(opcode, payload):
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 65536:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


def read_frame(f):
    head = f.read(2)
    if len(head) < 2:
        return None, b""
    opcode, size = head[0] & 0x0F, head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", f.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", f.read(8))[0]
    mask = f.read(4) if head[1] & 0x80 else b""
    data = f.read(size)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return opcode, data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, opcode, payload):
        with self.wlock:
            self.wfile.write(frame(opcode, payload))
            self.wfile.flush()

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        body = b"ok" if self.path == "/health/" else f"{host} {n}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.wlock = threading.Lock()
        with lock:
            open_sockets.add(self)
        try:
            self.send(1, f"hello {host} {n}".encode())
            while True:
                opcode, data = read_frame(self.rfile)
                if opcode is None:
                    break
                if opcode == 8:
                    self.send(8, data[:2] or struct.pack("!H", 1000))
                    break
                if opcode == 9:
                    self.send(10, data)
                elif opcode == 1:
                    self.send(1, data)
        except OSError:
            pass
        finally:
            with lock:
                open_sockets.discard(self)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True


server = Server(("0.0.0.0", base + n), Handler)


def stop(*_):
    with lock:
        clients = list(open_sockets)
    for client in clients:
        try:
            client.send(8, struct.pack("!H", 1001) + b"going away")
        except OSError:
            pass
    threading.Thread(target=server.shutdown).start()


# PID 1 of its container: SIGTERM has no default action there
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
server.server_close()
'''

QUADLET = f"""\
[Unit]
Description=senex-scale multi-host lab web instance %i

[Container]
Image={IMAGE}
Network=host
Volume={APP_DIR}:{APP_DIR}:ro
Exec=python3 {APP_DIR}/app.py {BASE} %i
# cgroup v1 host: Podman cannot create the container's cgroups inside the lab's systemd
PodmanArgs=--cgroups=disabled
StopTimeout=10

[Service]
TimeoutStartSec=60
TimeoutStopSec=20
"""


def haproxy_cfg(address: str) -> str:
    """HAProxy on the balancer host: the runtime API on its private address, the backend
    that the controller fills (no server lines at first)."""
    return f"""\
global
    stats socket ipv4@{address}:{ADMIN_PORT} level admin
    stats timeout 30s

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option redispatch
    retries 3

frontend www
    bind {address}:80
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /health/
    default-server inter 500ms fall 2 rise 1
"""


def host_entry(machine: Machine, connect_timeout: float, *, multiplex: bool = False) -> str:
    """A ``[hosts.NAME]`` table for ``machine``: ssh as root with the lab's key, its host key
    pinned; ``multiplex``: one ssh connection reused for every command (``ControlMaster``:
    a balancer host gets several commands per change)."""
    options = [o for o in machine.ssh_options() if not o.startswith("UserKnownHostsFile=")]
    options = [o for o in options if not o.startswith("StrictHostKeyChecking=")]
    if multiplex:
        control = machine.net.dir / f"ssh-{machine.name}-%C"
        options += [
            "ControlMaster=auto",
            f"ControlPath={control}",
            "ControlPersist=120",
            "ServerAliveInterval=2",
            "ServerAliveCountMax=2",
        ]
    quoted = ", ".join(f'"{o}"' for o in options)
    return f"""
[hosts.{machine.name}]
address = "{machine.address}"
ssh_user = "root"
ssh_identity = "{machine.net.client_key}"
known_hosts = "{machine.net.known_hosts}"
ssh_options = [{quoted}]
connect_timeout = "{connect_timeout:g}s"
"""


def policy_text(
    lb: Machine,
    webs: list[Machine],
    *,
    state: str,
    min_: int,
    max_: int,
    interval: float = 2.0,
    connect_timeout: float = 2.0,
) -> str:
    """The controller's policy: the pool ``web`` over ``webs``, HAProxy on ``lb`` with its
    config persisted there; no rules (the count follows min and max, changed by reloads)."""
    hosts = host_entry(lb, connect_timeout, multiplex=True)
    hosts += "".join(host_entry(m, connect_timeout) for m in webs)
    names = ", ".join(f'"{m.name}"' for m in webs)
    return f"""\
[controller]
interval = "{interval:g}s"
state = "{state}"
{hosts}
[pools.web]
runtime = {{ type = "systemd", unit = "{TEMPLATE}@{{n}}.service", timeout = "20s" }}
balancer = {{ type = "haproxy", socket = "{lb.address}:{ADMIN_PORT}", backend = "{BACKEND}", config = "/etc/haproxy/haproxy.cfg", host = "{lb.name}", cookie = false }}
hosts = [{names}]
port = "{BASE} + n"
health = "/health/"
min = {min_}
max = {max_}
start_timeout = "60s"
drain_timeout = "5s"
warmup = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"
"""  # noqa: E501 - TOML inline tables are one line


def install(lb: Machine, webs: list[Machine]) -> None:
    """The app and its Quadlet template on each web host; HAProxy's config on the balancer
    host, HAProxy (re)started there. systemd learns the template at the runtime's first
    ``daemon-reload`` (``reload_units``)."""
    for web in webs:
        web.write_file(f"{APP_DIR}/app.py", APP)
        web.write_file(f"/etc/containers/systemd/{TEMPLATE}@.container", QUADLET)
        done = web.exec("systemctl", "daemon-reload")
        if done.returncode != 0:
            raise RuntimeError(f"{web.name}: daemon-reload: {done.stderr}")
    lb.write_file("/etc/haproxy/haproxy.cfg", haproxy_cfg(lb.address))
    done = lb.exec("systemctl", "restart", "haproxy")
    if done.returncode != 0:
        status = lb.exec("systemctl", "status", "--no-pager", "haproxy").stdout
        raise RuntimeError(f"{lb.name}: haproxy did not start: {done.stderr}\n{status}")


def running_units(machine: Machine) -> list[int]:
    """Instance numbers of the pool running on ``machine`` (asked inside it)."""
    done = machine.exec(
        "systemctl", "list-units", "--state=active,activating", "--plain", "--no-legend",
        f"{TEMPLATE}@*.service",
    )  # fmt: skip
    numbers = []
    for line in done.stdout.splitlines():
        unit = line.split()[0] if line.split() else ""
        if unit.startswith(f"{TEMPLATE}@") and unit.endswith(".service"):
            numbers.append(int(unit[len(TEMPLATE) + 1 : -len(".service")]))
    return sorted(numbers)


def measure_startup(web: Machine, haproxy: HAProxyBalancer) -> float:
    """Seconds to bring one instance into service, measured now on ``web`` the way the
    controller does it: ``systemctl start`` over ssh, its health check passing, added to
    HAProxy (runtime API and lb's config over ssh), HAProxy's own check passing (READY). The
    baseline the restore time is held against; the instance is taken out again."""
    n = 90
    address = f"{web.address}:{BASE + n}"
    started = time.monotonic()
    done = web.ssh("systemctl", "start", f"senex-web@{n}.service", timeout=90)
    if done.returncode != 0:
        raise RuntimeError(f"{web.name}: systemctl start failed: {done.stderr}")
    wait_until(lambda: probe_health(address, "/health/", timeout=1), 60, "up", interval=0.05)
    haproxy.add(n, address)
    wait_until(
        lambda: any(m.n == n and m.state is MemberState.READY for m in haproxy.members()),
        60,
        "READY in HAProxy",
        interval=0.05,
    )
    seconds = time.monotonic() - started
    haproxy.remove(n)
    web.ssh("systemctl", "stop", f"senex-web@{n}.service", timeout=90)
    return seconds


# --------------------------------------------------------------------------- the controller


@dataclass
class Controller:
    """``senex-scale run`` as a process on this host, its policy file rewritten by ``set``."""

    policy_file: Path
    log_file: Path
    render: Any
    """``(min_, max_) -> str``: the policy text for a count range."""
    proc: subprocess.Popen[bytes] | None = None

    def start(self, min_: int, max_: int) -> None:
        self.policy_file.write_text(self.render(min_, max_))
        argv = [sys.executable, "-m", "senex_scale", "run", "--policy", str(self.policy_file)]
        with self.log_file.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [*argv, "--no-web", "--log-format", "json"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def set(self, min_: int, max_: int) -> None:
        """New bounds: the policy file rewritten, SIGHUP (the daemon reloads it next tick)."""
        assert self.proc is not None
        self.policy_file.write_text(self.render(min_, max_))
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def timeline(self, since: float) -> list[tuple[float, str]]:
        """Controller log events after ``since`` (epoch seconds): (seconds after it, what)."""
        out = []
        for event in read_events(self.log_file):
            if event.at < since:
                continue
            what = event.event
            if what == "step":
                what = f"{event.what} {event.raw.get('n')}"
            elif what in ("drift", "reconciled"):
                what += f": {event.raw.get('drift') or event.raw.get('note')}"
            out.append((event.at - since, what))
        return out

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Event:
    """One line of the controller's JSON log."""

    at: float
    event: str
    n: int | None = None
    what: str = ""
    detail: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def read_events(log: Path) -> list[Event]:
    """The controller's JSON log lines as events (lines that are not JSON skipped)."""
    from datetime import datetime

    events = []
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        n = entry.get("n")
        events.append(
            Event(
                at,
                str(entry.get("event")),
                n if isinstance(n, int) else None,
                str(entry.get("what") or ""),
                str(entry.get("detail") or ""),
                entry,
            )
        )
    return events


# --------------------------------------------------------------------------- load


@dataclass
class Failure:
    at: float
    what: str


class _Clients:
    """Client threads that run ``_client`` until the block ends; failures with their time."""

    failed: list[Failure]
    _stop: threading.Event
    _workers: list[threading.Thread]
    _lock: threading.Lock

    def _threads(self) -> int:
        raise NotImplementedError

    def _client(self) -> None:
        raise NotImplementedError

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failed.append(Failure(time.time(), what))

    def __enter__(self) -> Self:
        self._workers = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self._threads())
        ]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def failed_outside(self, windows: list[tuple[float, float]]) -> list[Failure]:
        """Failures not inside any of ``windows`` (start, end)."""
        return [f for f in self.failed if not any(a <= f.at <= b for a, b in windows)]


@dataclass
class HttpLoad(_Clients):
    """``threads`` clients sending ``GET /`` through the balancer, each on its own
    connection pool; every failure (transport error or non-200) with its time."""

    url: str
    threads: int = 4
    ok: int = 0
    failed: list[Failure] = field(default_factory=list)
    served_by: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                    good = response.status_code == 200
                    what = f"HTTP {response.status_code}" if not good else response.text
                except httpx.HTTPError as exc:
                    good, what = False, repr(exc)
                with self._lock:
                    if good:
                        self.ok += 1
                        host = what.split()[0] if what else "?"
                        self.served_by[host] = self.served_by.get(host, 0) + 1
                    else:
                        self.failed.append(Failure(time.time(), what))
                time.sleep(0.02)

    def _threads(self) -> int:
        return self.threads


@dataclass
class SocketLoad(_Clients):
    """``count`` WebSocket clients through the balancer, each echoing a message every half
    second and reconnecting after a close. A close with a close frame from the server (1000,
    1001: a drained instance going away) is orderly; a connection that breaks without one, a
    handshake that fails or an echo that does not come back within 3 s is a failure."""

    url: str
    count: int = 4
    connects: int = 0
    echoes: int = 0
    orderly: int = 0
    failed: list[Failure] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
        from websockets.sync.client import connect

        while not self._stop.is_set():
            try:
                with connect(self.url, open_timeout=5, close_timeout=2, ping_interval=None) as ws:
                    with self._lock:
                        self.connects += 1
                    ws.recv(timeout=5)  # hello
                    while not self._stop.is_set():
                        ws.send("ping")
                        ws.recv(timeout=3)
                        with self._lock:
                            self.echoes += 1
                        self._stop.wait(0.5)
            except ConnectionClosedOK:
                with self._lock:
                    self.orderly += 1
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in (1000, 1001):
                    with self._lock:
                        self.orderly += 1
                else:
                    self._fail(f"closed without a frame: {exc}")
            except Exception as exc:  # every other failure counts too (timeouts, refusals)
                self._fail(repr(exc))
                self._stop.wait(0.2)

    def _threads(self) -> int:
        return self.count


@contextlib.contextmanager
def controller(directory: Path, render: Any, min_: int, max_: int) -> Iterator[Controller]:
    """A running ``senex-scale run``; stopped (SIGTERM, then SIGKILL) at the end."""
    ctl = Controller(directory / "policy.toml", directory / "controller.log", render)
    ctl.start(min_, max_)
    try:
        yield ctl
    finally:
        ctl.stop()
