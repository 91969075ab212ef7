"""A pool over two real hosts behind HAProxy on a third, scaled by ``senex-scale run`` over ssh,
and one host powered off under load (issue 15).

Three booted Debian 13 machines (``senex_scale.lab.machines``: systemd, sshd, Podman, each in
its own network namespace on a bridge this test creates; no traffic leaves loopback and the
bridge): web01 and web02 run the pool as Quadlet units, lb runs HAProxy. The controller runs
on this host with a policy whose ``[hosts]`` reach the machines over ssh (host keys pinned)
and whose HAProxy balancer has its runtime API on lb's private address and its config on lb.
HTTP and WebSocket clients go through HAProxy the whole time. The numbers are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from senex_scale.balancers.base import MemberState
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.errors import SenexError
from senex_scale.lab.multihost import (
    HttpLoad,
    SocketLoad,
    controller,
    install,
    measure_startup,
    policy_text,
    running_units,
)
from senex_scale.policy import parse_policy
from senex_scale.testing import wait_until

if TYPE_CHECKING:
    from senex_scale.lab.machines import Machine

pytestmark = [pytest.mark.hostlab, pytest.mark.integration, pytest.mark.slow]

INTERVAL = 2.0
CONNECT_TIMEOUT = 1.0


def test_a_pool_over_two_hosts_scales_and_survives_losing_one(
    machines: dict[str, Machine], tmp_path: Path, report: list[str]
) -> None:
    """2 -> 6 -> 2 spread over web01 and web02 with no failed request; web02 powered off at 4:
    capacity back on web01 within start-up + two intervals; web02 back: 4 instances, no number
    twice, HAProxy's config on lb matching its runtime state."""
    lb, web01, web02 = machines["lb"], machines["web01"], machines["web02"]
    install(lb, [web01, web02])
    state = f"sqlite:{tmp_path / 'state.db'}"

    def render(low: int, high: int) -> str:
        return policy_text(
            lb, [web01, web02], state=state, min_=low, max_=high,
            interval=INTERVAL, connect_timeout=CONNECT_TIMEOUT,
        )  # fmt: skip

    policy = parse_policy(render(2, 8))
    haproxy = HAProxyBalancer(
        "web", policy.pools["web"], dict(policy.pools["web"].balancer.options),  # type: ignore[union-attr]
        hosts=policy.hosts,
    )  # fmt: skip

    def placed() -> dict[str, list[int]]:
        return {"web01": running_units(web01), "web02": running_units(web02)}

    def serving() -> dict[int, str]:
        return {m.n: m.address for m in haproxy.members() if m.state is MemberState.READY}

    def at(counts: dict[str, int]) -> bool:
        """The pool at the total of ``counts``, every instance serving, spread over both
        hosts: each within one of its even share (a host that missed a listing under load
        is passed over for that placement, as it should be)."""
        now = placed()
        ready = serving()
        numbers = sorted(n for ns in now.values() for n in ns)
        spread = all(len(now[h]) >= max(1, c - 1) for h, c in counts.items())
        return len(numbers) == sum(counts.values()) and spread and sorted(ready) == numbers

    startup = measure_startup(web01, haproxy)
    report.append(f"one instance into service (start, healthy, added, READY): {startup:.1f} s")
    url = f"http://{lb.address}/"
    quiet: list[tuple[float, float]] = []

    def scenario(ctl: Any, http: HttpLoad, sockets: SocketLoad) -> list[int]:
        """2 -> 6 -> 2 -> 4, web02 lost and back; the numbers at the end."""
        for low, high, counts in (
            (6, 8, {"web01": 3, "web02": 3}),
            (2, 2, {"web01": 1, "web02": 1}),
        ):
            started = time.monotonic()
            ctl.set(low, high)
            wait_until(lambda c=counts: at(c), 240, f"{counts}", interval=0.5, ignore=(SenexError,))  # type: ignore[misc]
            report.append(
                f"-> {sum(counts.values())} {counts} in {time.monotonic() - started:.1f} s"
            )
        ctl.set(4, 8)
        wait_until(
            lambda: at({"web01": 2, "web02": 2}),
            240,
            "4, two per host",
            interval=0.5,
            ignore=(SenexError,),
        )
        assert {address.split(":")[0] for address in serving().values()} == {
            web01.address, web02.address,
        }  # fmt: skip
        failed_before = (len(http.failed), len(sockets.failed))
        assert http.failed == [], f"failed while scaling: {http.failed[:5]}"
        assert sockets.failed == [], f"WebSockets failed while scaling: {sockets.failed[:5]}"

        lost_at = time.time()
        web02.power_off()
        wait_until(
            lambda: len(units := running_units(web01)) == 4 and set(units) <= set(serving()),
            120,
            "capacity back on web01",
            interval=0.2,
            ignore=(SenexError,),
        )
        restored = time.time() - lost_at
        report.extend(f"  {at:5.2f} s {what[:150]}" for at, what in ctl.timeline(lost_at))
        wait_until(
            lambda: set(serving()) == set(running_units(web01)),
            60,
            "the lost members out of HAProxy",
            interval=0.5,
            ignore=(SenexError,),
        )
        time.sleep(2 * INTERVAL)  # what fails right after the restore still counts
        window = (lost_at, time.time())
        report.append(
            f"web02 powered off: 4 serving on web01 after {restored:.1f} s "
            f"(start-up {startup:.1f} s + two intervals {2 * INTERVAL:g} s = "
            f"{startup + 2 * INTERVAL:.1f} s); failed meanwhile: "
            f"{len(http.failed) - failed_before[0]} requests, "
            f"{len(sockets.failed) - failed_before[1]} WebSockets"
        )
        assert restored <= startup + 2 * INTERVAL, (
            f"capacity back after {restored:.1f} s\n" + ctl.log_tail()
        )

        down = hosts_command(ctl.policy_file)
        assert down.returncode == 1, down.stderr
        rows = {row["host"]: row for row in json.loads(down.stdout)["hosts"]}
        assert rows["web02"]["reachable"] is False
        assert rows["web02"]["error"]
        assert sorted(rows["web01"]["pools"]["web"]) == sorted(serving())

        web02.boot_again()
        wait_until(
            lambda: not running_units(web02),
            60,
            "web02 up, empty",
            interval=0.5,
            ignore=(SenexError,),
        )
        time.sleep(3 * INTERVAL)  # a few ticks with web02 answering again
        quiet.append(window)
        units = placed()
        numbers = [n for ns in units.values() for n in ns]
        assert len(numbers) == len(set(numbers)) == 4, units
        assert sorted(serving()) == sorted(numbers)
        report.append(f"web02 back: {units}")
        up = hosts_command(ctl.policy_file)
        assert up.returncode == 0, up.stdout + up.stderr
        rows = {row["host"]: row for row in json.loads(up.stdout)["hosts"]}
        assert {h: sorted(r["pools"].get("web", [])) for h, r in rows.items()} == {
            "lb": [], "web01": units["web01"], "web02": units["web02"],
        }  # fmt: skip
        assert http.failed_outside(quiet) == []
        assert sockets.failed_outside(quiet) == []
        report.append(
            f"load: {http.ok} requests ok, {len(http.failed)} failed (all while web02 was "
            f"going); WebSockets: {sockets.connects} opened, {sockets.echoes} echoes, "
            f"{sockets.orderly} closed by a draining instance, {len(sockets.failed)} failed"
        )
        return numbers

    with controller(tmp_path, render, 2, 8) as ctl:
        try:
            wait_until(
                lambda: at({"web01": 1, "web02": 1}),
                180,
                "2, one per host",
                interval=0.5,
                ignore=(SenexError,),
            )
            with (
                HttpLoad(url, threads=4) as http,
                SocketLoad(f"ws://{lb.address}/ws/", count=4) as sockets,
            ):
                numbers = scenario(ctl, http, sockets)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- controller log ---\n{ctl.log_tail(80)}") from None

    persisted = lb.exec("cat", "/etc/haproxy/haproxy.cfg").stdout
    lines = sorted(
        line.split()[1] for line in persisted.splitlines() if line.strip().startswith("server ")
    )
    assert lines == sorted(f"web-{n}" for n in numbers), persisted


def hosts_command(policy: Path) -> subprocess.CompletedProcess[str]:
    """``senex-scale hosts --json`` on the controller's policy, as an operator runs it."""
    argv = [sys.executable, "-m", "senex_scale", "hosts", "--policy", str(policy), "--json"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def report(terminal: Callable[[str], None]) -> Iterator[list[str]]:
    """Lines printed on the terminal at the end of the test (its numbers)."""
    lines: list[str] = []
    yield lines
    terminal("\nmulti-host: " + "\n  ".join(lines))
