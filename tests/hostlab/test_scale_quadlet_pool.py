"""A Quadlet pool under the lab's systemd scales 1 -> 3 -> 1 behind a balancer, no failure."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest

from senex_scale.balancers.base import Balancer, MemberState, build_balancer
from senex_scale.controller.sequence import ScaleSequence, Step
from senex_scale.policy import load_policy
from senex_scale.runtimes.base import Runtime, UnitState, build_runtime
from senex_scale.testing import wait_until

if TYPE_CHECKING:
    from conftest import Front, WebTemplate

pytestmark = [pytest.mark.hostlab, pytest.mark.integration]

CYCLES = 3
"""Scale 1 -> 3 -> 1 this many times; the second scale-out goes through the CLI."""
REQUEST_TIMEOUT = 10.0
PAUSE = 0.005
"""Between two requests: load without taking a core of a 2-core machine."""
SETTLE_TIMEOUT = 15.0


@dataclass
class Load:
    """One thread sending GET / through the balancer until stopped; never retries."""

    url: str
    ok: int = 0
    failed: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(
            base_url=self.url,
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
            headers={"Connection": "close"},
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            while not self._stop.is_set():
                try:
                    response = client.get("/")
                    error = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if error is None:
                    self.ok += 1
                    self.served_by[response.text] += 1
                else:
                    self.failed += 1
                    self.errors.append((time.time(), error))
                time.sleep(PAUSE)


def settled(runtime: Runtime, balancer: Balancer, want: int, label: str) -> list[int]:
    """The running instances once systemd and the balancer agree; exactly ``want`` of them."""

    def agree() -> bool:
        running = sorted(i.n for i in runtime.list() if i.state is UnitState.RUNNING)
        members = balancer.members()
        return [m.n for m in members] == running and all(
            m.state is MemberState.READY for m in members
        )

    wait_until(agree, SETTLE_TIMEOUT, f"{label}: systemd and the balancer to agree")
    running = sorted(i.n for i in runtime.list() if i.state is UnitState.RUNNING)
    assert len(running) == want, f"{label}: {running} running"
    return running


def scale_with_cli(front: Front, count: int, timeline: list[tuple[float, str]]) -> list[int]:
    """``python -m senex_scale scale web COUNT --policy P --json``: its ``after`` list."""
    argv = [sys.executable, "-m", "senex_scale", "scale", "web", str(count)]
    argv += ["--policy", str(front.policy), "--json"]
    argv += ["--state", f"sqlite:{front.policy.parent / 'state.db'}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr}"
    doc = json.loads(done.stdout)
    for step in doc["steps"]:
        timeline.append((step["at"], f"(cli) {step['what']} web@{step['n']} {step['detail']}"))
    assert doc["failed"] == {}, doc
    after: list[int] = doc["after"]
    return after


def test_quadlet_pool_scales_under_traffic(web_template: WebTemplate, front: Front) -> None:
    """1 -> 3 -> 1, CYCLES times, Podman containers as systemd units behind HAProxy or nginx:
    every request through the balancer answered, its members always the running units."""
    spec = load_policy(front.policy).pools["web"]
    runtime = build_runtime("web", spec)
    balancer = build_balancer("web", spec)
    timeline: list[tuple[float, str]] = []

    def record(step: Step) -> None:
        timeline.append((step.at, f"{step.what} web@{step.n} {step.detail}".strip()))

    sequence = ScaleSequence("web", spec, runtime, balancer, on_step=record)
    with front.reloaded():
        first = sequence.scale_to(1)
    assert first.ok, f"scale to 1: {first.failed}\n{web_template.journal()}"
    settled(runtime, balancer, 1, "initial scale to 1")

    load = Load(front.url)
    thread = threading.Thread(target=load.run, name="hostlab-load", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        wait_until(lambda: load.ok >= 20 or load.failed > 0, 15, f"traffic through {front.kind}")
        for cycle in range(CYCLES):
            for count in (3, 1):
                label = f"cycle {cycle + 1}: scale to {count}"
                timeline.append((time.time(), label))
                if cycle == 1 and count == 3:
                    after = scale_with_cli(front, count, timeline)
                else:
                    outcome = sequence.scale_to(count)
                    assert outcome.ok, f"{label}: {outcome.failed}\n{web_template.journal()}"
                    after = sequence.running()
                assert settled(runtime, balancer, count, label) == after
    finally:
        load._stop.set()
        thread.join(REQUEST_TIMEOUT * 2)
    seconds = time.monotonic() - started
    total = load.ok + load.failed
    print(
        f"\n[hostlab {front.kind}] {seconds:.1f}s of load: {total} requests "
        f"({total / seconds:.0f}/s), "
        f"{load.failed} failed, served by {dict(sorted(load.served_by.items()))}"
    )

    def during(at: float) -> str:
        before = [what for when, what in sorted(timeline) if when <= at]
        return before[-1] if before else "before the first step"

    failures = "\n".join(f"  {error} [after: {during(at)}]" for at, error in load.errors[:20])
    assert load.failed == 0, f"{load.failed} failed requests:\n{failures}"
    assert len(load.served_by) >= 3, f"requests did not spread: {load.served_by}"
    assert load.ok >= 200, f"only {load.ok} requests went through"
