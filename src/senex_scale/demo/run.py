"""One demo run: the stack, the controller on the demo policy, the day's load, the numbers.

Used by ``senex-scale demo`` (which prints progress and the status page's URL and waits for
Ctrl-C at the end unless told otherwise) and by the end-to-end test (headless, the short
profile). The controller is ``senex-scale run`` in a process of its own, exactly as an
operator runs it; it is stopped with SIGTERM (finishing the action in flight) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from senex_scale.demo.load import PROFILES, LoadGenerator, Phase, Record
from senex_scale.demo.measure import instance_minutes, measure
from senex_scale.demo.stack import APP_NAME, MONITOR_ENV, DemoStack
from senex_scale.errors import PermanentError
from senex_scale.store import open_store

SETTLE_TIMEOUT = 120.0
"""Longest wait for the pools to reach their minimum (at start) or come back to it (end)."""


@dataclass
class Demo:
    """A running demo: the stack and its controller process."""

    stack: DemoStack
    speed: float = 60.0
    static: bool = False
    say: Callable[[str], None] = print
    controller: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def start_controller(self) -> None:
        policy = self.stack.write_policy(self.speed, static=self.static)
        self.log_path = self.stack.root / "logs" / "controller.log"
        env = {**os.environ, MONITOR_ENV: self.stack.monitor_password}
        argv = [
            str(Path(sys.executable).with_name("senex-scale")),
            "run",
            "--policy",
            str(policy),
            "--log-format",
            "json",
        ]
        with self.log_path.open("ab") as log:
            self.controller = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.say(f"controller started (policy {policy}); status page {self.stack.status_url}")

    def stop_controller(self) -> int | None:
        proc = self.controller
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def controller_alive(self) -> None:
        if self.controller is not None and self.controller.poll() is not None:
            tail = self.log_path.read_text()[-3000:] if self.log_path else ""
            raise PermanentError(f"the controller exited ({self.controller.returncode}):\n{tail}")

    # ------------------------------------------------------------------ observing

    def status(self) -> dict[str, Any]:
        try:
            reply = httpx.get(self.stack.status_url + "api/status", timeout=5)
            return dict(reply.json().get("status") or {})
        except (httpx.HTTPError, ValueError):
            return {}

    def counts(self) -> dict[str, int]:
        """Instances per pool by supervisord (running or starting)."""
        out: dict[str, int] = {}
        for info in self.stack.supervisord.call("getAllProcessInfo"):
            if info["statename"] in ("RUNNING", "STARTING"):
                out[info["group"]] = out.get(info["group"], 0) + 1
        return out

    def wait_for_minimum(self, timeout: float = SETTLE_TIMEOUT) -> dict[str, int]:
        """Until every pool runs its minimum and Django answers through the balancer."""
        wanted = {"django": 2, "celery-trading": 1, "celery": 2}
        deadline = time.monotonic() + timeout
        while True:
            self.controller_alive()
            counts = self.counts()
            if counts == wanted and self._front_ok():
                return counts
            if time.monotonic() > deadline:
                raise PermanentError(f"pools not at their minimum after {timeout:g}s: {counts}")
            time.sleep(0.5)

    def _front_ok(self) -> bool:
        try:
            return httpx.get(self.stack.front + "/health/", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_for_queue(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Until the Celery queues are empty and no task is running."""
        client = self.stack.redis.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(int(client.llen(q)) for q in ("trading", "accounts", "general")) == 0:
                unacked = int(client.hlen("unacked") or 0)
                if unacked == 0:
                    return
            time.sleep(0.5)

    def trade_rows(self) -> dict[str, int]:
        with psycopg.connect(self.stack.postgres.dsn(dbname=APP_NAME), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT symbol, count(*) FROM trading_trade WHERE symbol LIKE 'Q%' GROUP BY 1"
            ).fetchall()
        return {symbol: int(count) for symbol, count in rows}

    def decisions(self) -> list[dict[str, Any]]:
        store = open_store(self.stack.state)
        try:
            rows = [r.as_dict() for r in store.history(limit=5000)]
            self.extra["instance_minutes"] = instance_minutes(store.pool_series(0))
        finally:
            store.close()
        return list(reversed(rows))


def run_demo(
    profile: str = "day",
    *,
    speed: float = 60.0,
    say: Callable[[str], None] = print,
    on_phase: Callable[[Demo, Phase], None] | None = None,
    keep: bool = False,
    hold: Callable[[Demo], None] | None = None,
    static: bool = False,
) -> dict[str, Any]:
    """Bring everything up, play ``profile``, scale back in, measure, tear down.

    ``hold(demo)`` is called after the numbers are in and before the teardown (the demo
    command waits there for Ctrl-C so the page can still be looked at)."""
    if profile not in PROFILES:
        raise PermanentError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    stack = DemoStack(keep=keep)
    demo = Demo(stack, speed=speed, static=static, say=say)
    try:
        stack.start(progress=say)
        demo.start_controller()
        say("waiting for the controller to bring the pools to their minimum")
        demo.wait_for_minimum()
        record: Record

        def phase(p: Phase) -> None:
            demo.controller_alive()
            say(
                f"load: {p.name} ({p.seconds:g}s: {p.ws} WebSockets, {p.rps:g} reads/s, "
                f"{p.trades:g} queued trades/s); running {demo.counts()}"
            )
            if on_phase is not None:
                on_phase(demo, p)

        record = LoadGenerator(stack.front, PROFILES[profile], on_phase=phase).run()
        (stack.root / "load.json").write_text(json.dumps(record.as_json()))
        say("load done; waiting for the queues to drain and the pools to scale back in")
        demo.wait_for_queue()
        demo.wait_for_minimum()
        code = demo.stop_controller()
        say(f"controller stopped (exit {code})")
        decisions = demo.decisions()
        result = measure(
            record.as_json(),
            decisions,
            demo.trade_rows(),
            django_base=stack.django_base,
            pool_minutes=demo.extra.get("instance_minutes"),
        )
        result["controller_exit"] = code
        result["root"] = str(stack.root)
        (stack.root / "result.json").write_text(json.dumps(result, indent=2))
        if hold is not None:
            hold(demo)
        return result
    finally:
        demo.stop_controller()
        stack.stop()
