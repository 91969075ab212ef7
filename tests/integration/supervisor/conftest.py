"""A real supervisord for the ``supervisor`` runtime tests.

Once per session: ``supervisord -n`` (the venv's) with its socket, pid file, logs and a small
HTTP server script in a temporary directory, also on a loopback HTTP port with a username and
password. ``[program:web]`` declares instances 1..3 exactly as docs/runtime-supervisor.md
tells operators to (``/bin/sh -c 'exec ... $((BASE + %(process_num)d))'``); ``crash``,
``fail`` and ``done`` exit at once, with an error after running, and cleanly. Every test ends
with every process stopped; the session ends with ``supervisor.shutdown()``, and no process of
it is left.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from supervisor.xmlrpc import SupervisorTransport

from senex_scale.policy.models import Pool
from senex_scale.runtimes.base import build_runtime
from senex_scale.runtimes.supervisor import SupervisorRuntime

USERNAME = "senex"
PASSWORD = "sv-Secret-51d0"
READY_TIMEOUT = 15.0

SERVER = '''\
"""Instance of the test pool: answers GET /health/ with 200 on 127.0.0.1:PORT."""
import http.server
import sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health/"
        body = b"ok" if ok else b"no"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

port = int(sys.argv[sys.argv.index("--port") + 1])
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base(count: int) -> int:
    """A BASE with BASE+1..BASE+count free on loopback."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        if all(_port_free(base + n) for n in range(1, count + 1)):
            return base
    raise RuntimeError("no free port range")


def rpc(url: str, method: str, *args: Any) -> Any:
    """``supervisor.METHOD(*args)`` over supervisord's XML-RPC API, for the tests' own calls."""
    transport = SupervisorTransport(None, None, url)
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1/RPC2", transport=transport)
    try:
        return getattr(proxy.supervisor, method)(*args)
    finally:
        transport.close()


@dataclass
class Supervisord:
    """The session's supervisord and what it was configured with."""

    root: Path
    proc: subprocess.Popen[bytes]
    base: int
    http_port: int
    username: str = USERNAME
    password: str = PASSWORD

    @property
    def socket(self) -> Path:
        return self.root / "s.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def call(self, method: str, *args: Any) -> Any:
        """``supervisor.METHOD(*args)`` on this supervisord."""
        return rpc(self.url, method, *args)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "supervisord.log").read_text(errors="replace")[-3000:]
        return ""

    def runtime(self, group: str = "web", **options: Any) -> SupervisorRuntime:
        """The runtime of pool ``web`` (port ``BASE + n``, max 3) for ``group``."""
        pool = pool_with(self.base, {"url": self.url, "group": group, **options})
        runtime = build_runtime("web", pool)
        assert isinstance(runtime, SupervisorRuntime)
        return runtime


def pool_with(base: int, options: dict[str, Any]) -> Pool:
    """Pool ``web`` with ``runtime = {type = "supervisor", **options}``."""
    return Pool.model_validate(
        {"runtime": {"type": "supervisor", **options}, "port": f"{base} + n", "min": 0, "max": 3}
    )


def _config(root: Path, base: int, http_port: int) -> str:
    python = sys.executable
    server = root / "server.py"
    server.write_text(SERVER)
    quick = "autostart=false\nautorestart=false\nstartretries=0\nstopwaitsecs=2\n"
    return f"""\
[unix_http_server]
file={root}/s.sock
chmod=0700

[inet_http_server]
port=127.0.0.1:{http_port}
username={USERNAME}
password={PASSWORD}

[supervisord]
nodaemon=true
pidfile={root}/supervisord.pid
logfile={root}/supervisord.log
childlogdir={root}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{root}/s.sock

[program:web]
command=/bin/sh -c 'exec {python} {server} --port $(({base} + %(process_num)d))'
process_name=%(program_name)s-%(process_num)d
numprocs=3
numprocs_start=1
autostart=false
autorestart=unexpected
startsecs=1
stopsignal=TERM
stopwaitsecs=5

[program:crash]
command=/bin/sh -c 'exit 3'
process_name=%(program_name)s-%(process_num)d
numprocs=1
numprocs_start=1
startsecs=1
{quick}
[program:fail]
command=/bin/sh -c 'sleep 0.2; exit 3'
process_name=%(program_name)s-%(process_num)d
numprocs=1
numprocs_start=1
startsecs=0
{quick}
[program:done]
command=/bin/sh -c 'sleep 0.2; exit 0'
process_name=%(program_name)s-%(process_num)d
numprocs=1
numprocs_start=1
startsecs=0
{quick}"""


@pytest.fixture(scope="session")
def supervisord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisord]:
    """``supervisord -n`` answering on its socket; shut down (children too) at the end."""
    root = tmp_path_factory.mktemp("sv")
    base, http_port = free_base(3), free_base(1) + 1
    conf = root / "supervisord.conf"
    conf.write_text(_config(root, base, http_port))
    binary = Path(sys.executable).with_name("supervisord")
    proc = subprocess.Popen(
        [str(binary), "-n", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sv = Supervisord(root, proc, base, http_port)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"supervisord exited ({proc.returncode}):\n{sv.log()}")
            with contextlib.suppress(OSError):
                if sv.call("getState")["statename"] == "RUNNING":
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"supervisord does not answer on {sv.socket}:\n{sv.log()}")
            time.sleep(0.05)
        yield sv
    finally:
        if proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                sv.call("shutdown")
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        left = [pid for pid in children if psutil.pid_exists(pid)]
        for pid in left:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        assert not left, f"processes left after supervisord shut down: {left}"


@pytest.fixture
def sv(supervisord: Supervisord) -> Iterator[Supervisord]:
    """The session's supervisord; every process is stopped again after the test."""
    yield supervisord
    if supervisord.proc.poll() is None:
        supervisord.call("stopAllProcesses", True)
