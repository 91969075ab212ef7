"""A real supervisord for the ``supervisor`` runtime tests.

Once per session: a ``senex_scale.lab`` ``Supervisord`` (the venv's ``supervisord -n``, its
socket, logs and a small HTTP server script in a temporary directory, also on a loopback HTTP
port with a username and password). ``[program:web]`` declares instances 1..3 exactly as
docs/runtime-supervisor.md tells operators to (``/bin/sh -c 'exec ... $((BASE +
%(process_num)d))'``); ``crash``, ``fail`` and ``done`` exit at once, with an error after
running, and cleanly. Every test ends with every process stopped; the session ends with
supervisord's own shutdown (SIGTERM), and no process of it is left.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from senex_scale import lab
from senex_scale.policy.models import Pool
from senex_scale.runtimes.base import build_runtime
from senex_scale.runtimes.supervisor import SupervisorRuntime

USERNAME = "senex"
PASSWORD = "sv-Secret-51d0"

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


class Supervisord(lab.Supervisord):
    """The lab's supervisord with the test pool ``web`` (port ``BASE + n``, max 3)."""

    def __init__(self, root: Path, base: int) -> None:
        (root / "server.py").write_text(SERVER)
        super().__init__(root, programs=_programs(root, base), username=USERNAME, password=PASSWORD)
        self.base = base

    def runtime(self, group: str = "web", **options: Any) -> SupervisorRuntime:
        """The runtime of pool ``web`` for ``group``."""
        pool = pool_with(self.base, {"url": self.url, "group": group, **options})
        runtime = build_runtime("web", pool)
        assert isinstance(runtime, SupervisorRuntime)
        return runtime


def pool_with(base: int, options: dict[str, Any]) -> Pool:
    """Pool ``web`` with ``runtime = {type = "supervisor", **options}``."""
    return Pool.model_validate(
        {"runtime": {"type": "supervisor", **options}, "port": f"{base} + n", "min": 0, "max": 3}
    )


def _programs(root: Path, base: int) -> str:
    quick = "autostart=false\nautorestart=false\nstartretries=0\nstopwaitsecs=2\n"
    return f"""\
[program:web]
command=/bin/sh -c 'exec {sys.executable} {root}/server.py --port $(({base} + %(process_num)d))'
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
    """supervisord answering on its socket; shut down (children too) at the end."""
    server = Supervisord(tmp_path_factory.mktemp("sv"), lab.free_port_range(3))
    with server:
        yield server
    assert not server.forced, f"processes left after supervisord shut down: {server.forced}"


@pytest.fixture
def sv(supervisord: Supervisord) -> Iterator[Supervisord]:
    """The session's supervisord; every process is stopped again after the test."""
    yield supervisord
    if supervisord.alive:
        supervisord.call("stopAllProcesses", True)
