"""``senex-scale run``: the loop, the status page in a thread, and the signals.

SIGTERM and SIGINT end the loop; the actions in flight (on the pool workers) finish first;
SIGHUP reloads the policy file, keeping the old policy if the new one is invalid. The status
page and /metrics are served by uvicorn in a background thread (it installs no signal
handlers there), bound to ``controller.listen`` (loopback by default).
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from senex_scale.controller.leader import Leader, NoLeader, build_leader
from senex_scale.controller.loop import ControllerLoop
from senex_scale.errors import InputError, PermanentError
from senex_scale.policy import load_policy
from senex_scale.policy.models import Policy
from senex_scale.store.sql import Store, open_store, redact_url
from senex_scale.telemetry.metrics import Metrics


@dataclass
class DaemonOptions:
    """What ``senex-scale run`` was asked for."""

    policy: str | None
    dry_run: bool = False
    state: str | None = None
    listen: str | None = None
    web: bool = True
    once: bool = False
    leader: bool = True
    shadow: bool = False
    """Read and record what would be done; act on nothing, take no lock (shadow.py)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9308`` for IPv6) as a pair; an error naming the value."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"listen: {text!r} is not HOST:PORT (e.g. 127.0.0.1:9308)")
    return host.strip("[]") or "127.0.0.1", int(port)


class WebThread:
    """uvicorn serving the status app in a daemon thread."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="status-page", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        waited = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self.server.started or not self.thread.is_alive():
                break
            waited.wait(0.05)
        if not self.server.started:
            raise PermanentError(
                f"status page: cannot listen on {self.server.config.host}:"
                f"{self.server.config.port} (in use? see the log above)"
            )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def build(options: DaemonOptions) -> tuple[Policy, Store, Leader]:
    """The policy, store and leader lock for ``options`` (errors before anything starts)."""
    policy = load_policy(options.policy)
    state = options.state or policy.controller.state
    store = open_store(state)
    if not options.leader or options.shadow:  # a shadow never blocks a real controller
        return policy, store, NoLeader()
    ttl = policy.controller.leader_ttl or 1.5 * policy.controller.interval
    return policy, store, build_leader(policy.controller.leader, state, ttl)


def run(options: DaemonOptions) -> int:
    """Run the controller until a signal (or one tick with ``once``); the exit code."""
    log = structlog.get_logger("senex_scale.run")
    if options.listen is not None:
        parse_listen(options.listen)  # a bad --listen is refused before anything opens
    policy, store, leader = build(options)
    metrics = Metrics()
    loop = ControllerLoop(
        policy,
        store,
        leader,
        policy_path=options.policy,
        dry_run=options.dry_run,
        metrics=metrics,
        log=log,
        shadow=options.shadow,
    )
    token = None
    if policy.controller.token_env:
        token = os.environ.get(policy.controller.token_env) or None
    web = None
    if options.web and not options.once:
        from senex_scale.web.app import create_app

        read_token = None
        if policy.controller.read_token_env:
            read_token = os.environ.get(policy.controller.read_token_env) or None
            if read_token is None:  # a read token was asked for: never serve openly instead
                raise InputError(
                    f"controller.read_token_env: environment variable "
                    f"{policy.controller.read_token_env} is not set or empty"
                )

        host, port = parse_listen(options.listen or policy.controller.listen)
        app = create_app(
            store,
            metrics=metrics,
            control=loop,
            token=token,
            controller_id=loop.controller_id,
            read_token=read_token,
            allowed_hosts=policy.controller.allowed_hosts,
        )
        web = WebThread(app, host, port)
        web.start()
        log.info("status page", url=f"http://{host}:{port}/")

    # The handlers only set flags and wake the loop, which logs: a handler runs between two
    # bytecodes of the main thread, so taking a lock the main thread may hold (a threading
    # Event's, a log stream's) could wait forever.
    def on_stop(signum: int, _frame: FrameType | None) -> None:
        loop.stop(signal.Signals(signum).name)

    def on_reload(_signum: int, _frame: FrameType | None) -> None:
        loop.request_reload()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_reload)
    log.info(
        "controller starting",
        policy=str(options.policy or "default"),
        state=redact_url(options.state or policy.controller.state),
        lock=leader.kind,
        dry_run=loop.dry_run,
        shadow=options.shadow,
        interval=policy.controller.interval,
    )
    try:
        loop.run(ticks=1 if options.once else None)
    finally:
        if web is not None:
            web.stop()
        store.close()
    log.info("controller stopped")
    return 0


def default_policy_path(path: str | None) -> str | None:
    """``path`` checked to exist (a clear error rather than a traceback later)."""
    if path is not None and path != "default" and not Path(path).exists():
        raise InputError(f"{path}: policy file not found")
    return path
