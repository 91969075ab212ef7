"""The fault suite's stack: the controller as a real process against real servers, under
HTTP, WebSocket and Celery load, with every invariant checked while faults are injected.

Servers (``senex_scale.lab``): supervisord running pool ``web`` (uvicorn + Starlette:
``/health/``, ``/`` answering its instance number, ``/ws`` streaming a message every 200 ms)
and pool ``worker`` (real Celery workers, ``acks_late``, on queue ``trading``; the threads
pool: two threads a worker, one process, which is light on a 2-core machine), nginx or
HAProxy in front of ``web``, Redis (broker, results, optionally the leader lock), Prometheus
scraping a load gauge the test sets. ``senex-scale run`` runs as a process with its state in
SQLite (or PostgreSQL) under the test's directory.

What users see is counted by the load: failed HTTP requests (with the time), WebSocket closes
without a close frame (1006) or on an instance that was not being taken out, and Celery tasks
lost or run twice. ``Invariants`` samples the stack every 100 ms: never more instances than
max; never fewer than min serving (outside the moments a test says a fault takes members away
on purpose); nothing stopped while the balancer still sends it requests; and at the end the
journal has nothing left "running".

An instance refuses to start when ``ROOT/broken-N`` exists (a failed action).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets.exceptions
from websockets.sync.client import connect as ws_connect

from senex_scale import lab
from senex_scale.lab.gauge import LoadGauge
from senex_scale.lab.haproxy import haproxy_binary, http_proxy
from senex_scale.lab.load import HttpLoad
from senex_scale.lab.nginx import nginx_binary, proxy_http
from senex_scale.store import open_store
from senex_scale.testing import wait_until

MAX = 4
"""numprocs of both programs = the pools' max."""

APP = '''\
"""An instance of pool web: /health/, / (its number), /ws (a message every 200 ms)."""
import asyncio, os, pathlib, sys

INSTANCE = os.environ["SENEX_INSTANCE"]
if (pathlib.Path(os.environ["ROOT"]) / f"broken-{INSTANCE}").exists():
    sys.exit(3)

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect


async def health(request):
    return PlainTextResponse("ok")


async def index(request):
    return PlainTextResponse(INSTANCE)


async def stream(websocket):
    await websocket.accept()
    n = 0
    try:
        while True:
            await websocket.send_text(f"{INSTANCE} {n}")
            n += 1
            await asyncio.sleep(0.2)
    except (WebSocketDisconnect, RuntimeError):
        pass


app = Starlette(
    routes=[Route("/health/", health), Route("/", index), WebSocketRoute("/ws", stream)]
)
'''

TASKS = '''\
"""The Celery app of pool worker: task ``work`` counts each run of each id in Redis."""
import os, time

import redis
from celery import Celery

app = Celery("faults", broker=os.environ["BROKER"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="trading",
    broker_transport_options={"visibility_timeout": 15},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
results = redis.Redis.from_url(os.environ["RESULTS"])


@app.task(name="work")
def work(i):
    time.sleep(0.2)
    results.hincrby("done", str(i), 1)
'''

PROGRAMS = """
[program:web]
directory={root}
command=/bin/sh -c 'exec {python} -m uvicorn app:app --port $(({base} + %(process_num)d)) \
--host 127.0.0.1 --timeout-graceful-shutdown 5 --timeout-keep-alive 120 --ws websockets-sansio \
--lifespan off --no-access-log --log-level warning'
process_name=%(program_name)s-%(process_num)d
numprocs={max}
numprocs_start=1
environment=SENEX_INSTANCE="%(process_num)d",ROOT="{root}"
autostart=false
autorestart=false
startsecs=1
stopsignal=TERM
stopwaitsecs=8
redirect_stderr=true
stdout_logfile={root}/web-%(process_num)d.log

[program:worker]
directory={root}
command={python} -m celery -A tasks worker -Q trading -P threads -c 2 -n w%(process_num)d@faults \
--without-gossip --without-mingle --without-heartbeat --loglevel INFO
process_name=%(program_name)s-%(process_num)d
numprocs={max}
numprocs_start=1
environment=BROKER="{broker}",RESULTS="{results}"
autostart=false
autorestart=unexpected
startsecs=1
stopsignal=TERM
stopwaitsecs=10
redirect_stderr=true
stdout_logfile={root}/worker-%(process_num)d.log
"""

EMPTY_UPSTREAM = """\
upstream senex_web {
    # senex-scale placeholder: nginx needs a server in an upstream
    server 127.0.0.1:9 down;
}
"""


# --------------------------------------------------------------------------- load


@dataclass
class Close:
    at: float
    instance: str
    code: int | None
    frame: bool


class Sockets:
    """``count`` WebSocket clients through the balancer, each reconnecting after a close."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count
        self.closes: list[Close] = []
        self.messages = 0
        self.connects = 0
        self.refused: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(count)]

    def _client(self) -> None:
        while not self._stop.is_set():
            try:
                with ws_connect(self.url, open_timeout=5, close_timeout=2) as ws:
                    self.connects += 1
                    instance = "?"
                    while not self._stop.is_set():
                        try:
                            text = ws.recv(timeout=1)
                        except TimeoutError:
                            continue
                        except websockets.exceptions.ConnectionClosed as exc:
                            self.closes.append(
                                Close(
                                    time.time(),
                                    instance,
                                    exc.rcvd.code if exc.rcvd else None,
                                    exc.rcvd is not None,
                                )
                            )
                            break
                        instance = str(text).split()[0]
                        self.messages += 1
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                self.refused.append((time.time(), repr(exc)))
                self._stop.wait(0.2)

    def cut(self) -> list[Close]:
        """Closes without a close frame (1006): the connection was cut, not closed."""
        return [c for c in self.closes if not c.frame]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


class Tasks:
    """Celery tasks sent at a rate; at the end each must have run exactly once."""

    def __init__(self, broker: str, results: Any, rate: float = 5.0) -> None:
        from celery import Celery

        self.app = Celery("faults-client", broker=broker)
        self.app.conf.update(task_default_queue="trading", broker_connection_retry=False)
        self.results = results
        self.rate = rate
        self.sent = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def send(self, count: int) -> None:
        for _ in range(count):
            with self._lock:  # the load thread and a test's burst share the ids
                self.app.send_task("work", args=[self.sent], queue="trading", retry=False)
                self.sent += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.send(1)
            except Exception as exc:  # the broker restarting: a task not sent is not lost
                self.errors.append(repr(exc))
            self._stop.wait(1 / self.rate)

    def done(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.results.hgetall("done").items()}

    def lost_and_twice(self) -> tuple[list[int], list[int]]:
        done = self.done()
        lost = [i for i in range(self.sent) if i not in done]
        twice = [i for i, runs in done.items() if runs > 1]
        return lost, twice


# --------------------------------------------------------------------------- invariants


@dataclass
class Invariants:
    """Samples the stack every 100 ms and keeps every violation with its time."""

    stack: Stack
    violations: list[str] = field(default_factory=list)
    samples: int = 0
    excused: list[tuple[float, float]] = field(default_factory=list)
    """Windows in which a fault takes members away on purpose: "min serving" is not checked."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _armed: bool = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @contextlib.contextmanager
    def excuse(self, settle: float = 0.0) -> Iterator[None]:
        """Members may be missing while the block runs (and ``settle`` seconds after)."""
        started = time.time()
        self.excused.append((started, float("inf")))
        try:
            yield
        finally:
            self.excused[-1] = (started, time.time() + settle)

    def _excused(self, at: float) -> bool:
        return any(a <= at <= b for a, b in self.excused)

    def _run(self) -> None:
        s = self.stack
        while not self._stop.is_set():
            try:
                before = s.serving()
                web = s.running("web")
                workers = s.running("worker")
                after = s.serving()
            except Exception:  # a server being restarted by the test: next sample
                self._stop.wait(0.1)
                continue
            now = time.time()
            self.samples += 1
            both = before & after
            if both - web:
                self.violations.append(f"{now:.1f}: stopped while serving: {sorted(both - web)}")
            if len(web) > MAX or len(workers) > MAX:
                self.violations.append(f"{now:.1f}: above max: web {web}, workers {workers}")
            serving = len(both & web)
            if serving >= 1:
                self._armed = True
            elif self._armed and not self._excused(now):
                self.violations.append(f"{now:.1f}: fewer than min (1) serving: {sorted(both)}")
            self._stop.wait(0.1)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The servers, the policy, the controller processes and the load of one test."""

    root: Path
    sv: lab.Supervisord
    front: Any
    kind: str
    redis: lab.Redis
    prometheus: lab.Prometheus
    gauge: LoadGauge
    base: int
    state_url: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    # ---------------------------------------------------------------- policy and processes

    def policy(self, path: Path | None = None, **overrides: Any) -> Path:
        """Write the policy (interval 1 s, short windows) and return its path."""
        v = {
            "interval": "1s",
            "out_for": "2s",
            "in_for": "3s",
            "drain": "3s",
            "leader": None,
            "leader_ttl": None,
        } | overrides
        leader = f'leader = "{v["leader"]}"\n' if v["leader"] else ""
        if v["leader_ttl"]:
            leader += f'leader_ttl = "{v["leader_ttl"]}"\n'
        if self.kind == "nginx":
            balancer = f"""
[pools.web.balancer]
type = "nginx"
upstream = "senex_web"
file = "{self.front.root / "upstream.conf"}"
conf = "{self.front.conf}"
prefix = "{self.front.root}"
nginx = "{nginx_binary()}"
ip_hash = false
"""
        else:
            balancer = f"""
[pools.web.balancer]
type = "haproxy"
socket = "{self.front.socket}"
backend = "web_backend"
config = "{self.front.config}"
haproxy = "{haproxy_binary()}"
cookie = false
server_options = "inter 500ms rise 1 fall 2"
"""
        text = f"""
[controller]
interval = "{v["interval"]}"
state = "{self.state_url}"
backoff = "2s"
{leader}
[sources.prom]
type = "prometheus"
url = "{self.prometheus.url}"

[sources.broker]
type = "celery-redis"
url = "{self.redis.url(0)}"

[pools.web]
min = 1
max = {MAX}
port = "{self.base} + n"
start_timeout = "20s"
drain_timeout = "{v["drain"]}"
warmup = "0s"
scale_out_cooldown = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"
runtime = {{ type = "supervisor", url = "{self.sv.url}", group = "web" }}
{balancer}
[pools.worker]
kind = "worker"
min = 1
max = {MAX}
warmup = "0s"
start_timeout = "30s"
drain_timeout = "10s"
scale_out_cooldown = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"
runtime = {{ type = "supervisor", url = "{self.sv.url}", group = "worker" }}

[[rules]]
name = "web-load"
pool = "web"
metric = {{ source = "prom", query = "max(senex_test_load)" }}
scale_out = {{ above = 70, for = "{v["out_for"]}" }}
scale_in = {{ below = 30, for = "{v["in_for"]}" }}

[[rules]]
name = "trading-queue"
pool = "worker"
metric = {{ source = "broker", query = "trading", signal = "queue" }}
scale_out = {{ above = 20, for = "{v["out_for"]}" }}
scale_in = {{ below = 2, for = "{v["in_for"]}" }}
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
            "--no-web",
            *args,
        ]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log_path = Path(log.name)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def events(self, proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
        out = []
        for line in Path(proc.log_path).read_text().splitlines():  # type: ignore[attr-defined]
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def seen(self, proc: subprocess.Popen[str], **match: Any) -> bool:
        return any(all(e.get(k) == v for k, v in match.items()) for e in self.events(proc))

    def stop_controllers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
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
            parts.append(f"--- {path.name}\n" + path.read_text()[-4000:])
        return "\n".join(parts)

    # ---------------------------------------------------------------- what is there

    def running(self, group: str) -> set[int]:
        infos = self.sv.call("getAllProcessInfo")
        return {
            int(i["name"].rsplit("-", 1)[1])
            for i in infos
            if i["group"] == group and i["statename"] in ("RUNNING", "STARTING", "STOPPING")
        }

    def pid(self, group: str, n: int) -> int:
        info = self.sv.call("getProcessInfo", f"{group}:{group}-{n}")
        return int(info["pid"])

    def serving(self) -> set[int]:
        """Members the balancer sends new requests to."""
        if self.kind == "nginx":
            text = (self.front.root / "upstream.conf").read_text()
            found = set()
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("server 127.0.0.1:") and " down" not in line:
                    port = int(line.split(":")[1].split()[0].rstrip(";"))
                    found.add(port - self.base)
            return found
        answer = self.front.command("show servers state web_backend")
        found = set()
        for line in answer.splitlines():
            parts = line.split()
            if len(parts) > 6 and parts[1] == "web_backend" and parts[3].startswith("web-"):
                admin = int(parts[6])  # srv_admin_state: 0 = not in maint/drain
                if admin == 0:
                    found.add(int(parts[3].split("-", 1)[1]))
        return found

    def at_rest(self, web: int = 1, workers: int = 1) -> bool:
        return (
            len(self.running("web")) == web
            and len(self.running("worker")) == workers
            and self.serving() == self.running("web")
        )

    def journal_open(self) -> list[Any]:
        """Journal entries still "running" (there must be none once controllers stopped)."""
        store = open_store(self.state_url)
        try:
            return store.open_actions()
        finally:
            store.close()

    def history(self, **filters: Any) -> list[Any]:
        store = open_store(self.state_url)
        try:
            return store.history(limit=1000, **filters)
        finally:
            store.close()


@dataclass
class Run:
    """One fault test's stack, load and invariants."""

    stack: Stack
    http: HttpLoad
    sockets: Sockets
    tasks: Tasks
    invariants: Invariants

    def stop_load(self) -> None:
        self.sockets.stop()
        self.tasks._stop.set()
        self.http.stop()
        self.tasks.thread.join(timeout=10)
        self.invariants.stop()

    def finish(self, *, allowed: list[tuple[float, float]] | None = None) -> None:
        """Stop the load and the controllers; assert what users saw and the invariants."""
        s = self.stack
        self.stop_load()
        broker = s.redis.client()
        deadline = time.monotonic() + 60
        while len(self.tasks.done()) < self.tasks.sent and time.monotonic() < deadline:
            time.sleep(0.2)
        lost, _ = self.tasks.lost_and_twice()
        assert lost == [], (
            f"{len(lost)} of {self.tasks.sent} tasks never ran: {lost[:10]}; broker: trading "
            f"{broker.llen('trading')}, unacked {broker.hlen('unacked')}, keys "
            f"{sorted(k.decode() for k in broker.keys('*'))}; workers {s.running('worker')}"
        )
        s.stop_controllers()
        self.invariants.stop()
        windows = allowed or []
        failed = self.http.failed_outside(windows)
        assert self.http.ok > 20, f"too little traffic: {self.http.ok}"
        print(
            f"\nrequests: {self.http.ok} ok, {len(self.http.failed)} failed "
            f"({len(failed)} outside the faults' windows), {len(self.http.retried)} retried "
            f"once on a new connection; WebSockets: {self.sockets.connects} connects, "
            f"{self.sockets.messages} messages, {len(self.sockets.closes)} closes "
            f"({len(self.sockets.cut())} cut); tasks: {self.tasks.sent} sent"
        )
        assert failed == [], f"{len(failed)} failed requests: {failed[:5]}\n{s.log_tail()}"
        cut = [c for c in self.sockets.cut() if not any(a <= c.at <= b for a, b in windows)]
        assert cut == [], f"WebSockets cut without a close frame: {cut[:5]}"
        lost, twice = self.tasks.lost_and_twice()
        assert lost == [], f"{len(lost)} tasks lost: {lost[:10]}"
        assert twice == [], f"{len(twice)} tasks ran twice: {twice[:10]}"
        assert self.invariants.samples > 10
        assert self.invariants.violations == [], self.invariants.violations[:5]
        assert s.journal_open() == [], "a journal entry was left running"


def make_stack(root: Path, kind: str, state_url: str | None = None) -> Iterator[Stack]:
    """The servers of one test (``kind``: nginx or haproxy in front of web)."""
    base = lab.free_port_range(MAX)
    gauge = LoadGauge()
    (root / "app.py").write_text(APP)
    (root / "tasks.py").write_text(TASKS)
    with contextlib.ExitStack() as servers:
        redis = servers.enter_context(lab.Redis(root / "redis"))
        programs = PROGRAMS.format(
            python=sys.executable,
            root=root,
            base=base,
            max=MAX,
            broker=redis.url(0),
            results=redis.url(1),
        )
        sv = servers.enter_context(lab.Supervisord(root / "sv", programs=programs))
        if kind == "nginx":
            (root / "nginx").mkdir()
            (root / "nginx" / "upstream.conf").write_text(EMPTY_UPSTREAM)
            front: Any = servers.enter_context(
                lab.Nginx(
                    root / "nginx",
                    http=proxy_http(next_upstream="off", websocket="/ws"),
                    worker_shutdown_timeout="60s",
                    worker_connections=1024,
                )
            )
        else:
            front = servers.enter_context(lab.HAProxy(root / "haproxy", conf=http_proxy(retries=0)))
        prometheus = servers.enter_context(
            lab.Prometheus(
                root / "prom",
                scrape_configs=[lab.static_job("load", [f"127.0.0.1:{gauge.port}"])],
            )
        )
        wait_until(lambda: prometheus.query("senex_test_load") != [], 30, "the first scrape")
        s = Stack(
            root,
            sv,
            front,
            kind,
            redis,
            prometheus,
            gauge,
            base,
            state_url or f"sqlite:{root / 'state' / 'state.db'}",
        )
        try:
            yield s
        finally:
            for stop in s.cleanup:
                with contextlib.suppress(Exception):
                    stop()
            s.stop_controllers()
            with contextlib.suppress(Exception):
                sv.call("stopAllProcesses", True)
            gauge.close()


def start_load(s: Stack, *, sockets: int = 6, rate: float = 4.0) -> Run:
    """Wait for the controller to bring both pools to 1 behind the balancer, then start the
    load and the invariants."""
    wait_until(lambda: s.at_rest(1, 1), 60, "both pools at 1\n" + s.log_tail())
    if s.kind == "nginx":
        # the first add reloads nginx away from the placeholder; let the old worker go
        time.sleep(1.0)
    url = f"http://127.0.0.1:{s.front.port}"
    http = HttpLoad(url + "/")
    ws = Sockets(f"ws://127.0.0.1:{s.front.port}/ws", sockets)
    tasks = Tasks(s.redis.url(0), s.redis.client(1), rate=rate)
    invariants = Invariants(s)
    invariants.start()
    http.start()
    ws.start()
    tasks.thread.start()
    run = Run(s, http, ws, tasks, invariants)
    s.cleanup.append(run.stop_load)
    return run


@pytest.fixture
def nginx_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from make_stack(tmp_path, "nginx")


@pytest.fixture
def haproxy_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from make_stack(tmp_path, "haproxy")


def scale_cycle(run: Run, *, web: int = 3, low: Callable[[], None] | None = None) -> None:
    """Load up until web reaches ``web`` instances, then down until it is back at 1."""
    s = run.stack
    s.gauge.value = 95
    wait_until(lambda: len(s.serving()) >= web, 60, f"web at {web}\n" + s.log_tail())
    s.gauge.value = 10
    if low is not None:
        low()
    wait_until(lambda: s.at_rest(1, len(s.running("worker"))), 90, "web back at 1\n" + s.log_tail())


@dataclass(frozen=True)
class Kit:
    """The helpers of this suite, as a fixture (conftest modules are not importable)."""

    start_load: Callable[..., Run] = start_load
    scale_cycle: Callable[..., None] = scale_cycle
    make_stack: Callable[..., Iterator[Stack]] = make_stack
    empty_upstream: str = EMPTY_UPSTREAM


@pytest.fixture
def kit() -> Kit:
    return Kit()


@dataclass
class WithPostgres:
    """A stack whose state lives in PostgreSQL (``pg``: the server, to stop and start)."""

    stack: Stack
    pg: lab.Postgres


@pytest.fixture
def pg_stack(tmp_path: Path) -> Iterator[WithPostgres]:
    import shutil

    root = lab.lab_dir("senex-faults-pg-")  # PostgreSQL runs as postgres: not under tmp_path
    try:
        with lab.Postgres(root) as pg:
            pg.create_role("senex", "faults-Secret-9")
            pg.create_database("senex", owner="senex")
            url = pg.url(user="senex", password="faults-Secret-9", dbname="senex")
            for stack in make_stack(tmp_path, "nginx", state_url=url):
                yield WithPostgres(stack, pg)
    finally:
        shutil.rmtree(root, ignore_errors=True)
