"""A real stack for the controller: supervisord (pools ``web`` and ``worker``), nginx in
front of ``web``, Redis holding the ``trading`` queue, and Prometheus scraping a load gauge
the test sets. ``senex-scale run`` runs as a real process (``Stack.run``), with its state in
SQLite under the test's directory.

Instances of ``web`` answer ``/health/`` and ``/``; an instance waits ``slow`` seconds
(the content of ROOT/slow, read at start) before it listens, so a test can catch the
controller between "start" and "add". Everything is stopped at the end; nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from senex_scale.lab import Nginx, Prometheus, Redis, Supervisord, free_port_range, static_job
from senex_scale.lab.gauge import LoadGauge
from senex_scale.lab.load import HttpLoad
from senex_scale.lab.nginx import proxy_http
from senex_scale.testing import wait_until

INSTANCES = 4

SERVER = '''\
"""An instance of pool web: waits ROOT/slow seconds, then answers on 127.0.0.1:PORT."""
import http.server, pathlib, sys, time

root = pathlib.Path(sys.argv[1])
port = int(sys.argv[2])
try:
    time.sleep(float((root / "slow").read_text()))
except (OSError, ValueError):
    pass

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"instance {port}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

WORKER = '''\
"""An instance of pool worker: idles until stopped."""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
'''

PROGRAMS = """
[program:web]
command=/bin/sh -c 'exec {python} {root}/server.py {root} $(({base} + %(process_num)d))'
process_name=%(program_name)s-%(process_num)d
numprocs={instances}
numprocs_start=1
autostart=false
autorestart=unexpected
startsecs=0
stopsignal=TERM
stopwaitsecs=5

[program:worker]
command={python} {root}/worker.py
process_name=%(program_name)s-%(process_num)d
numprocs={instances}
numprocs_start=1
autostart=false
autorestart=unexpected
startsecs=1
stopsignal=TERM
stopwaitsecs=5
"""

EMPTY_UPSTREAM = """\
upstream senex_web {
    # senex-scale placeholder: nginx needs a server in an upstream
    server 127.0.0.1:9 down;
}
"""


@dataclass
class Stack:
    """The servers, the policy, and the controller processes a test starts."""

    root: Path
    sv: Supervisord
    nginx: Nginx
    redis: Redis
    prometheus: Prometheus
    gauge: LoadGauge
    base: int
    first_workers: set[int] = field(default_factory=set)
    """nginx's workers before the controller ran (serving the empty upstream)."""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)

    @property
    def state(self) -> str:
        return f"sqlite:{self.root / 'state.db'}"

    def policy(self, path: Path | None = None, **overrides: Any) -> Path:
        """Write the policy (interval 1 s, short windows) and return its path."""
        values = {
            "interval": "1s",
            "out_for": "3s",
            "in_for": "4s",
            "drain": "3s",
            "start_timeout": "20s",
        } | overrides
        text = f"""
[controller]
interval = "{values["interval"]}"
state = "{self.state}"
backoff = "2s"

[sources.prom]
type = "prometheus"
url = "{self.prometheus.url}"

[sources.broker]
type = "celery-redis"
url = "{self.redis.url()}"

[pools.web]
min = 1
max = {INSTANCES}
port = "{self.base} + n"
start_timeout = "{values["start_timeout"]}"
drain_timeout = "{values["drain"]}"
warmup = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"
runtime = {{ type = "supervisor", url = "{self.sv.url}", group = "web" }}

[pools.web.balancer]
type = "nginx"
upstream = "senex_web"
file = "{self.nginx.root / "upstream.conf"}"
conf = "{self.nginx.conf}"
prefix = "{self.nginx.root}"
ip_hash = false

[pools.worker]
kind = "worker"
min = 1
max = {INSTANCES}
warmup = "0s"
start_timeout = "20s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"
runtime = {{ type = "supervisor", url = "{self.sv.url}", group = "worker" }}

[[rules]]
name = "web-load"
pool = "web"
metric = {{ source = "prom", query = "max(senex_test_load)" }}
scale_out = {{ above = 70, for = "{values["out_for"]}" }}
scale_in = {{ below = 30, for = "{values["in_for"]}" }}

[[rules]]
name = "trading-queue"
pool = "worker"
metric = {{ source = "broker", query = "trading", signal = "queue" }}
scale_out = {{ above = 50, for = "{values["out_for"]}" }}
scale_in = {{ below = 5, for = "{values["in_for"]}" }}
"""
        path = path or self.root / "policy.toml"
        path.write_text(text)
        return path

    def run(self, *args: str, policy: Path | None = None) -> subprocess.Popen[str]:
        """``senex-scale run`` as a process (JSON logs to ROOT/controller-N.log)."""
        log = (self.root / f"controller-{len(self.procs)}.log").open("w")
        self.files.append(log)
        argv = [
            str(Path(sys.executable).with_name("senex-scale")),
            "run",
            "--policy",
            str(policy or self.policy()),
            "--log-format",
            "json",
            *args,
        ]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log_path = Path(log.name)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def events(self, proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
        """The JSON log lines of a controller process."""
        out = []
        for line in Path(proc.log_path).read_text().splitlines():  # type: ignore[attr-defined]
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def cli(self, *args: str) -> Any:
        """``senex-scale ARGS --state STATE --json`` parsed."""
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("senex-scale")),
                *args,
                "--state",
                self.state,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def running(self, group: str) -> set[int]:
        infos = self.sv.call("getAllProcessInfo")
        return {
            int(i["name"].rsplit("-", 1)[1])
            for i in infos
            if i["group"] == group and i["statename"] in ("RUNNING", "STARTING")
        }

    def upstream(self) -> set[int]:
        """Instance numbers in nginx's upstream file that are not marked down."""
        text = (self.nginx.root / "upstream.conf").read_text()
        found = set()
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("server 127.0.0.1:") and " down" not in line:
                port = int(line.split(":")[1].split()[0].rstrip(";"))
                found.add(port - self.base)
        return found

    def nginx_settled(self) -> bool:
        """nginx was reloaded since the stack started (the first add) and runs one worker
        only: no worker of the empty upstream is left to answer 502."""
        assert self.nginx.pid is not None
        workers = {c.pid for c in psutil.Process(self.nginx.pid).children()}
        return len(workers) == 1 and not workers & self.first_workers

    def stop_controllers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for file in self.files:
            file.close()

    def log_tail(self) -> str:
        parts = []
        for proc in self.procs:
            path = Path(proc.log_path)  # type: ignore[attr-defined]
            parts.append(f"--- {path.name}\n" + path.read_text()[-3000:])
        return "\n".join(parts)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    root = tmp_path
    (root / "server.py").write_text(SERVER)
    (root / "worker.py").write_text(WORKER)
    base = free_port_range(INSTANCES)
    gauge = LoadGauge()
    programs = PROGRAMS.format(python=sys.executable, root=root, base=base, instances=INSTANCES)
    (root / "nginx").mkdir()
    (root / "nginx" / "upstream.conf").write_text(EMPTY_UPSTREAM)
    with contextlib.ExitStack() as servers:
        sv = servers.enter_context(Supervisord(root / "sv", programs=programs))
        http = proxy_http(next_upstream="error timeout http_502")
        nginx = servers.enter_context(Nginx(root / "nginx", http=http))
        redis = servers.enter_context(Redis(root / "redis"))
        prometheus = servers.enter_context(
            Prometheus(
                root / "prom", scrape_configs=[static_job("load", [f"127.0.0.1:{gauge.port}"])]
            )
        )
        wait_until(
            lambda: prometheus.query("senex_test_load") != [], 30, "Prometheus's first scrape"
        )
        s = Stack(root, sv, nginx, redis, prometheus, gauge, base)
        assert nginx.pid is not None
        s.first_workers = {c.pid for c in psutil.Process(nginx.pid).children()}
        try:
            yield s
        finally:
            s.stop_controllers()
            with contextlib.suppress(Exception):
                sv.call("stopAllProcesses", True)
            gauge.close()


@pytest.fixture
def traffic_for() -> Any:
    """Requests through nginx every 20 ms (``senex_scale.lab.load.HttpLoad``: a kept-alive
    connection nginx closes at a reload is retried once on a new one, as a browser does)."""
    return lambda url: HttpLoad(url, pause=0.02)
