"""Time from a host's loss to restored capacity, against start-up time measured in the same run
(issue 15, goal: back within start-up + two intervals).

Three lab machines (``senex_scale.lab.machines``: lb with HAProxy, web01 and web02 with the
pool as Quadlet units) and ``senex-scale run`` on this host over ssh
(``senex_scale.lab.multihost``), the pool held at ``--count`` instances spread over both web
hosts while HTTP clients go through HAProxy. Then, ``--rounds`` times: web02 is powered off
(its machine's cgroup killed: a power cut), and the bench measures until web01 runs
``--count`` instances, all in service in HAProxy (the lost host's members leave HAProxy's
configuration a little later: capacity comes first); web02 boots again and the pool is
spread back by scaling to half of ``count`` (the scale-in takes from web01) and back up.

Printed per round: the start-up time of one instance (``systemctl start`` over ssh, health
check passing, added to HAProxy, HAProxy's own check passing: ``measure_startup``, measured
right before), the time to restored capacity, their ratio,
the detection part (power-off to the first replacement starting, from the controller's
log), and the requests that failed during the loss. Needs root and the host lab
(``scripts/hostlab build``).

Run: .venv/bin/python bench/bench_host_loss.py [--rounds 3] [--count 4] [--interval 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from senex_scale.balancers.base import MemberState
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.errors import SenexError
from senex_scale.lab.machines import lab_machines
from senex_scale.lab.multihost import (
    HttpLoad,
    controller,
    install,
    measure_startup,
    policy_text,
    running_units,
)
from senex_scale.policy import parse_policy
from senex_scale.testing import wait_until


def first_replacement(log: Path, after: float) -> float | None:
    """Epoch seconds of the first "start" step logged after ``after`` (JSON log lines)."""
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "step" and entry.get("what") == "start":
            stamp = entry.get("timestamp")
            at = _epoch(stamp) if isinstance(stamp, str) else None
            if at is not None and at > after:
                return at
    return None


def _epoch(stamp: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--connect-timeout", type=float, default=1.0)
    parser.add_argument("--timeline", action="store_true", help="print each round's log")
    args = parser.parse_args()
    count = args.count
    with (
        tempfile.TemporaryDirectory(prefix="senex-bench-hosts-") as tmp,
        lab_machines({"lb": 10, "web01": 11, "web02": 12}, wait=600) as machines,
    ):
        lb, web01, web02 = machines["lb"], machines["web01"], machines["web02"]
        install(lb, [web01, web02])
        directory = Path(tmp)

        def render(low: int, high: int) -> str:
            return policy_text(
                lb, [web01, web02], state=f"sqlite:{directory / 'state.db'}",
                min_=low, max_=high, interval=args.interval,
                connect_timeout=args.connect_timeout,
            )  # fmt: skip

        pool = parse_policy(render(count, count)).pools["web"]
        assert pool.balancer is not None
        haproxy = HAProxyBalancer(
            "web", pool, dict(pool.balancer.options), hosts=parse_policy(render(1, 1)).hosts
        )

        def serving() -> set[int]:
            return {m.n for m in haproxy.members() if m.state is MemberState.READY}

        rows = []
        with controller(directory, render, count, count) as ctl:
            # the load starts once the pool serves (before, every request is a 503)
            wait_until(lambda: len(serving()) == count, 300, "up", interval=0.1,
                       ignore=(SenexError,))  # fmt: skip
            http = HttpLoad(f"http://{lb.address}/").__enter__()
            for round_ in range(1, args.rounds + 1):
                wait_until(
                    lambda: len(running_units(web01)) == len(running_units(web02)) == count // 2
                    and len(serving()) == count,
                    300, "spread", interval=0.1, ignore=(SenexError,),
                )  # fmt: skip
                startup = measure_startup(web01, haproxy)
                time.sleep(args.interval)
                failed = len(http.failed)
                lost = time.time()
                web02.power_off()
                wait_until(
                    lambda: len(units := running_units(web01)) == count
                    and set(units) <= serving(),
                    300, "restored", interval=0.1, ignore=(SenexError,),
                )  # fmt: skip
                restored = time.time() - lost
                time.sleep(args.interval)
                started = first_replacement(ctl.log_file, lost)
                if args.timeline:
                    for at, what in ctl.timeline(lost):
                        print(f"    {at:5.2f} s {what[:120]}")
                rows.append((startup, restored, (started - lost) if started else None,
                             len(http.failed) - failed))  # fmt: skip
                print(
                    f"round {round_}: start-up {startup:.2f} s, capacity back after "
                    f"{restored:.2f} s ({restored / startup:.2f}x start-up; bound start-up + "
                    f"2 intervals = {startup + 2 * args.interval:.2f} s), detection "
                    f"{rows[-1][2]:.2f} s, {rows[-1][3]} requests failed during the loss"
                    if rows[-1][2] is not None
                    else f"round {round_}: start-up {startup:.2f} s, back after {restored:.2f} s",
                    flush=True,
                )
                web02.boot_again()
                # spread again: half (taken from web01, the fullest), then back up (to web02)
                ctl.set(count // 2, count // 2)
                wait_until(
                    lambda: len(serving()) == count // 2,
                    300,
                    "half",
                    interval=0.1,
                    ignore=(SenexError,),
                )
                ctl.set(count, count)
            http.__exit__(None, None, None)
        startups = [r[0] for r in rows]
        restores = [r[1] for r in rows]
        print(
            f"summary over {len(rows)} rounds: start-up median "
            f"{statistics.median(startups):.2f} s, "
            f"capacity back median {statistics.median(restores):.2f} s "
            f"(ratio {statistics.median(restores) / statistics.median(startups):.2f}x; "
            f"interval {args.interval:g} s); {http.ok} requests ok, {len(http.failed)} failed"
        )
        reasons: dict[str, int] = {}
        for failure in http.failed:
            reasons[failure.what[:80]] = reasons.get(failure.what[:80], 0) + 1
        for what, times in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {times} x {what}")


if __name__ == "__main__":
    main()
