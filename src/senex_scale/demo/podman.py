"""``senex-scale demo --runtime podman``: the demo on the rendered deployment, in the host lab.

The same day of load and the same numbers as the supervisord demo (``demo.run``), but the
reference app runs as an operator would run it: ``senex-scale render`` of
``examples/hostlab-inventory.toml``, installed in the host lab (``scripts/hostlab``: Debian,
systemd, Podman and Quadlet) by ``lab.deployment``, the pools as the rendered Quadlet
templates rootless under the service user, and the controller as the rendered
``senex-scale.service`` of that user, on the default policy at demo speed. The lab shares
this machine's network, so the load, the status page (``127.0.0.1:9308``) and the numbers are
read from here.

::

    this machine                         the host lab (systemd-nspawn, same network)
    LoadGenerator --> nginx :8000 ------> web HAProxy :7999 --> django@N (Podman, rootless)
    Prometheus (lab.Prometheus) <-------- /metrics of django@N :8001..8012
                                          senex-scale.service (user senex): the policy below
    measure() <-- state.db (read through the lab's root filesystem), PgBouncer :6432

What differs from the supervisord demo's policy, and why (printed at the start, ``CHANGES``):
the runtime and the balancer are the default policy's own (``systemctl --user`` of the
rendered units, the rendered web HAProxy's admin socket) instead of supervisord's; the
Celery "busy" target rules are dropped, because the rendered workers publish no ``/metrics``
port for Prometheus to scrape; start timeouts are 90 s (an image's first start in the lab).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import tomli_w

from senex_scale.demo.load import PROFILES, LoadGenerator, Phase
from senex_scale.demo.measure import instance_minutes, measure
from senex_scale.demo.policy import Endpoints, demo_policy_doc
from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.lab import Prometheus, static_job
from senex_scale.lab.deployment import (
    INVENTORY,
    STATE,
    Deployment,
    Lab,
    build_images,
    busy_ports,
    pools_running,
    random_secrets,
    render,
)
from senex_scale.lab.hostlab import running
from senex_scale.policy import default_policy_text
from senex_scale.store import open_store

FRONT = "http://127.0.0.1:8000"
STATUS = "http://127.0.0.1:9308/"
DJANGO_BASE = 8000
MAX_DJANGO = 5
DROPPED_RULES = ("celery-busy", "celery-trading-busy")
START_TIMEOUT = "90s"
SETTLE_TIMEOUT = 240.0
CHANGES = (
    "runtime and balancer: the default policy's own (systemctl --user of the rendered units, "
    "the rendered web HAProxy's admin socket)",
    "the Celery busy rules are dropped: the rendered workers publish no /metrics port",
    f"start_timeout {START_TIMEOUT} (an image's first start in the lab)",
)


def podman_policy_doc(prometheus: str, *, speed: float) -> dict[str, Any]:
    """The demo policy (``demo_policy_doc``: the default at ``speed``) for the rendered
    deployment in the lab: see ``CHANGES``."""
    import tomllib

    endpoints = Endpoints(
        state=f"sqlite://{STATE}/state.db",
        listen=STATUS.removeprefix("http://").rstrip("/"),
        prometheus=prometheus,
        redis="redis://127.0.0.1:6379/0",
        postgres_dsn="postgresql://senex_monitor@127.0.0.1:5432/senextrader",
        disk=STATE,
        supervisor="http://127.0.0.1:9/RPC2",  # replaced below by the default's runtimes
        haproxy_socket=f"{STATE}/haproxy-web.sock",
        haproxy_config=f"{STATE}/haproxy-web.cfg",
        django_base=DJANGO_BASE,
        trading_base=9100,  # dropped below: the workers publish no port
        celery_base=9200,
        monitor_password_env="SENEX_MONITOR_PASSWORD",
        max_django=MAX_DJANGO,
    )
    doc = demo_policy_doc(endpoints, speed=speed)
    default = tomllib.loads(default_policy_text())
    for name, pool in doc["pools"].items():
        pool["runtime"] = {**default["pools"][name]["runtime"], "start_timeout": START_TIMEOUT}
        pool["start_timeout"] = START_TIMEOUT
        if pool.get("kind") == "worker":
            pool.pop("port", None)
        else:
            pool["balancer"] = {**default["pools"][name]["balancer"]}
    for source in ("broker", "redis"):
        doc["sources"][source]["password_env"] = "SENEX_REDIS_PASSWORD"
    doc["rules"] = [r for r in doc["rules"] if r["name"] not in DROPPED_RULES]
    from senex_scale.policy.loading import validate_policy

    validate_policy(doc, source="<podman demo policy>")
    return doc


def _minimums(doc: dict[str, Any]) -> dict[str, int]:
    return {name: int(pool["min"]) for name, pool in doc["pools"].items()}


class PodmanDemo:
    """The deployment in the lab, Prometheus here, and the controller's unit there."""

    def __init__(self, deployment: Deployment, root: Path, say: Callable[[str], None]) -> None:
        self.deployment = deployment
        self.root = root
        self.say = say
        self.prometheus: Prometheus | None = None
        self.policy: dict[str, Any] = {}

    # ------------------------------------------------------------------ observing

    def counts(self) -> dict[str, int]:
        """Instances per pool of the policy: its units the service user's manager has active."""
        return {
            name: len(pools_running(self.deployment, _unit(pool)))
            for name, pool in self.policy["pools"].items()
        }

    def controller_alive(self) -> None:
        state = self.deployment.lab.as_user(
            self.deployment.user, "systemctl", "--user", "is-active", "senex-scale.service"
        ).stdout.strip()
        if state not in ("active", "activating", "deactivating"):
            journal = self.deployment.journal("senex-scale.service", user=True, lines=40)
            raise PermanentError(f"the controller's unit is {state or 'gone'}:\n{journal}")

    def wait_for_minimum(self, timeout: float = SETTLE_TIMEOUT) -> dict[str, int]:
        wanted = _minimums(self.policy)
        deadline = time.monotonic() + timeout
        while True:
            self.controller_alive()
            counts = self.counts()
            if counts == wanted and _ok(FRONT + "/health/"):
                return counts
            if time.monotonic() > deadline:
                raise PermanentError(f"pools not at their minimum after {timeout:g}s: {counts}")
            time.sleep(1)

    def wait_for_queues(self, timeout: float = SETTLE_TIMEOUT) -> None:
        client = redis.Redis(
            host="127.0.0.1", port=6379, password=self.deployment.env["SENEX_REDIS_PASSWORD"]
        )
        deadline = time.monotonic() + timeout
        with contextlib.closing(client):
            while time.monotonic() < deadline:
                queued = sum(int(client.llen(q)) for q in ("trading", "accounts", "general"))
                if queued == 0 and int(client.hlen("unacked") or 0) == 0:
                    return
                time.sleep(1)

    def trade_rows(self, since: float) -> dict[str, int]:
        """Rows per queued symbol made since ``since`` (the load's start): a deployment used
        before holds the same symbols (the load numbers its trades from 1 every run)."""
        dsn = "host=127.0.0.1 port=6432 dbname=senextrader user=senex_user"
        password = self.deployment.env["SENEX_DB_PASSWORD"]
        with psycopg.connect(dsn, password=password, autocommit=True) as db:
            rows = db.execute(
                "SELECT symbol, count(*) FROM trading_trade WHERE symbol LIKE 'Q%%' "
                "AND created_at >= to_timestamp(%s) GROUP BY 1",
                (since,),
            ).fetchall()
        return {str(symbol): int(count) for symbol, count in rows}

    def decisions(self) -> tuple[list[dict[str, Any]], dict[str, float]]:
        path = self.deployment.lab.path(f"{STATE}/state.db")
        store = open_store(f"sqlite:{path}")
        try:
            rows = [r.as_dict() for r in store.history(limit=5000)]
            minutes = instance_minutes(store.pool_series(0))
        finally:
            store.close()
        return list(reversed(rows)), minutes

    # ------------------------------------------------------------------ the controller

    def start(self, speed: float) -> None:
        ports = [f"127.0.0.1:{DJANGO_BASE + n}" for n in range(1, 13)]
        self.prometheus = Prometheus(
            self.root / "prometheus", scrape_configs=[static_job("django", ports)]
        )
        self.prometheus.start()
        for suffix in ("", "-wal", "-shm"):  # a fresh state: the numbers are this run's
            self.deployment.lab.path(f"{STATE}/state.db{suffix}").unlink(missing_ok=True)
        self.policy = podman_policy_doc(self.prometheus.url, speed=speed)
        self._workers_to_minimum()
        text = "".join(f"# {c}\n" for c in CHANGES) + tomli_w.dumps(self.policy)
        (self.root / "policy.toml").write_text(text)
        self.deployment.install_controller(text)
        self.deployment.user_systemctl("start", "senex-scale.service")
        self.say(f"controller started in the lab (senex-scale.service); status page {STATUS}")

    def _workers_to_minimum(self) -> None:
        """Worker instances above their pool's minimum (a deployment used before) are
        stopped before the controller starts: no rule scales a pool in without load, and the
        day starts at the minimum. Django's are left to the controller (they are behind the
        balancer: only a drain takes them out)."""
        for name, pool in self.policy["pools"].items():
            if pool.get("kind") != "worker":
                continue
            unit = _unit(pool)
            extra = pools_running(self.deployment, unit)[int(pool["min"]) :]
            if extra:
                self.say(f"stopping {unit}@{extra} (above {name}'s minimum)")
                self.deployment.user_systemctl(
                    "stop", *(f"{unit}@{n}.service" for n in extra), timeout=180
                )

    def stop(self) -> str:
        """Stop the controller's unit (it finishes the action in flight); its result."""
        with contextlib.suppress(PermanentError, TemporaryError):
            self.deployment.user_systemctl("stop", "senex-scale.service", timeout=180)
        shown = self.deployment.lab.as_user(
            self.deployment.user, "systemctl", "--user", "show", "-p", "Result", "--value",
            "senex-scale.service",
        ).stdout.strip()  # fmt: skip
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        return shown or "unknown"


def _unit(pool: dict[str, Any]) -> str:
    """The template's name of a pool's unit (``django`` of ``django@{n}.service``)."""
    return str(pool["runtime"]["unit"]).removesuffix("@{n}.service")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def play(
    deployment: Deployment,
    root: Path,
    profile: str = "e2e",
    *,
    speed: float = 60.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """On a started deployment (``Deployment.start``): the controller's unit on the demo
    policy (a fresh state), ``profile``'s load, back to the minimum, the numbers. The
    controller is stopped at the end; the deployment is left as it is (the caller's)."""
    if profile not in PROFILES:
        raise PermanentError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    demo = PodmanDemo(deployment, root, say)
    try:
        demo.start(speed)
        say("waiting for the controller to bring the pools to their minimum")
        demo.wait_for_minimum()

        def phase(p: Phase) -> None:
            demo.controller_alive()
            say(
                f"load: {p.name} ({p.seconds:g}s: {p.ws} WebSockets, {p.rps:g} reads/s, "
                f"{p.trades:g} queued trades/s); running {demo.counts()}"
            )

        record = LoadGenerator(FRONT, PROFILES[profile], on_phase=phase).run()
        (root / "load.json").write_text(json.dumps(record.as_json()))
        say("load done; waiting for the queues to drain and the pools to scale back in")
        demo.wait_for_queues()
        demo.wait_for_minimum()
        outcome = demo.stop()
        say(f"controller stopped ({outcome})")
        decisions, minutes = demo.decisions()
        result = measure(
            record.as_json(),
            decisions,
            demo.trade_rows(record.started - 1.0),
            django_base=DJANGO_BASE,
            pool_minutes=minutes,
        )
        result["controller_exit"] = 0 if outcome == "success" else 1
        result["runtime"] = "podman"
        result["root"] = str(root)
        (root / "result.json").write_text(json.dumps(result, indent=2))
        return result
    finally:
        demo.stop()


def run_podman_demo(
    profile: str = "day",
    *,
    speed: float = 60.0,
    say: Callable[[str], None] = print,
    keep: bool = False,
) -> dict[str, Any]:
    """Boot the lab (or use it), build or find the images, install and start the rendered
    deployment, ``play`` ``profile`` on it, remove it all (``keep``: the rendered files,
    policy, load record and numbers stay in the directory)."""
    if profile not in PROFILES:
        raise PermanentError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    busy = busy_ports()
    if busy:
        raise PermanentError(
            f"the lab inventory's ports are in use on this machine: {busy} "
            f"({INVENTORY.name}; the lab shares this machine's network)"
        )
    root = Path(tempfile.mkdtemp(prefix="senex-demo-podman-"))
    try:
        with running(say=say) as pid_file:
            lab = Lab(pid_file.parents[1] / "rootfs", pid_file)
            images = build_images(lab, log=say)
            env = random_secrets()
            render(INVENTORY, root / "rendered", env)
            deployment = Deployment(lab, root / "rendered", images, env)
            try:
                say("installing the rendered deployment in the lab")
                deployment.install()
                deployment.start(log=say)
                return play(deployment, root, profile, speed=speed, say=say)
            finally:
                say("removing the deployment from the lab")
                deployment.remove()
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
