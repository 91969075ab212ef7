"""A pool on several hosts, on in-memory hosts and a fake clock: placement, addresses, a
host that dies and one that returns (the real thing: tests/hostlab/test_multi_host.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from senex_scale.balancers.base import MemberState
from senex_scale.controller.leader import NoLeader
from senex_scale.controller.loop import ControllerLoop
from senex_scale.controller.sequence import ScaleSequence
from senex_scale.errors import TemporaryError
from senex_scale.policy import parse_policy
from senex_scale.runtimes.spread import SpreadRuntime
from senex_scale.store import open_store
from senex_scale.testing import FakeClock, MemorySource, RecordingBalancer, RecordingHost

POLICY = """
[controller]
interval = "15s"

[hosts.web01]
address = "10.9.0.11"

[hosts.web02]
address = "10.9.0.12"

[sources.mem]
type = "prometheus"
url = "http://127.0.0.1:1"

[pools.web]
runtime = { type = "systemd", unit = "web@{n}.service" }
hosts = ["web01", { name = "web02", max = 3 }]
min = 2
max = 8
port = "8000 + n"
start_timeout = "30s"
drain_timeout = "30s"
warmup = "0s"
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"

[[rules]]
name = "cpu"
pool = "web"
metric = { source = "mem", query = "cpu" }
scale_out = { above = 70, for = "30s" }
scale_in = { below = 30, for = "60s" }
"""


class Lab:
    """Two in-memory hosts under one SpreadRuntime, a controller over them."""

    def __init__(self, tmp_path: Path) -> None:
        self.policy = parse_policy(POLICY)
        self.clock = FakeClock()
        self.hosts = {
            name: RecordingHost(pool="web", size=20, host=name) for name in ("web01", "web02")
        }
        self.runtime = SpreadRuntime(
            "web",
            self.policy.pools["web"],
            self.policy.hosts,
            runtimes=self.hosts,
            clock=self.clock,
        )
        self.lb = RecordingBalancer()
        self.source = MemorySource("mem")
        self.source.values["cpu"] = 50.0
        self.loop = ControllerLoop(
            self.policy,
            open_store(f"sqlite:{tmp_path / 'state.db'}"),
            NoLeader(),
            clock=self.clock,
            sleep=self.clock.sleep,
            healthy=self.healthy,
            log=structlog.get_logger("test"),
            build_source=lambda name, spec: self.source,
            build_pool=lambda name, spec: (self.runtime, self.lb),
            controller_id="test-hosts",
        )

    def healthy(self, address: str, path: str) -> bool:
        host, port = address.rsplit(":", 1)
        for name, spec in self.policy.hosts.items():
            if spec.address == host:
                runtime = self.hosts[name]
                return not runtime.down and int(port) - 8000 in runtime.running
        return False

    def sequence(self) -> ScaleSequence:
        return ScaleSequence(
            "web",
            self.policy.pools["web"],
            self.runtime,
            self.lb,
            clock=self.clock,
            sleep=self.clock.sleep,
            healthy=self.healthy,
        )

    def ticks(self, count: int) -> None:
        for _ in range(count):
            self.loop.prober.probe_all()
            self.loop.tick()
            assert self.loop.settle(30), "an action did not finish"
            self.clock.advance(15)

    def placed(self) -> dict[str, list[int]]:
        return {name: sorted(rt.running) for name, rt in self.hosts.items()}

    def reconciled(self) -> list[str]:
        rows = self.loop.store.history(limit=1000)
        return [reason for row in rows if row.kind == "reconcile" for reason in row.reasons]


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def test_scale_out_spreads_and_registers_each_instance_at_its_hosts_address(lab: Lab) -> None:
    """2 -> 6: three per host, each member at HOSTADDRESS:8000+n (never 127.0.0.1)."""
    outcome = lab.sequence().scale_out(6)
    assert outcome.ok, outcome.failed
    assert lab.placed() == {"web01": [1, 3, 5], "web02": [2, 4, 6]}
    addresses = {m.n: m.address for m in lab.lb.members()}
    assert addresses == {
        1: "10.9.0.11:8001",
        2: "10.9.0.12:8002",
        3: "10.9.0.11:8003",
        4: "10.9.0.12:8004",
        5: "10.9.0.11:8005",
        6: "10.9.0.12:8006",
    }


def test_a_per_host_maximum_sends_the_rest_to_the_other_host(lab: Lab) -> None:
    """web02 (fewer, but at its maximum of 3) is skipped: the new instance goes to web01."""
    lab.hosts["web01"].running |= {1, 2, 3, 4}
    lab.hosts["web02"].running |= {5, 6, 7}
    lab.runtime.list()
    outcome = lab.sequence().scale_out(1)
    assert outcome.ok
    assert lab.placed() == {"web01": [1, 2, 3, 4, 8], "web02": [5, 6, 7]}


def test_scale_in_takes_from_the_fullest_host(lab: Lab) -> None:
    """Hosts at 3 and 1: a scale-in of 2 takes both from the host with 3."""
    seq = lab.sequence()
    lab.hosts["web01"].running |= {1, 2, 3}
    lab.hosts["web02"].running |= {4}
    for n, host in ((1, "10.9.0.11"), (2, "10.9.0.11"), (3, "10.9.0.11"), (4, "10.9.0.12")):
        lab.lb.add(n, f"{host}:{8000 + n}")
    lab.runtime.list()
    outcome = seq.scale_in(2)
    assert outcome.ok
    assert lab.placed() == {"web01": [1], "web02": [4]}


def test_an_unreachable_host_keeps_its_last_listing_and_no_host_means_an_error(lab: Lab) -> None:
    """One host down: its instances still count (an ssh outage is not a dead host); both down:
    the pool cannot be listed."""
    lab.sequence().scale_out(4)
    lab.hosts["web02"].down = True
    lab.clock.advance(10)
    assert [i.n for i in lab.runtime.list()] == [1, 2, 3, 4]
    assert lab.runtime.unreachable() == ["web02"]
    lab.hosts["web01"].down = True
    lab.clock.advance(10)
    with pytest.raises(TemporaryError, match="no host answers"):
        lab.runtime.list()


def test_a_dead_host_is_replaced_on_the_survivor_without_reusing_its_numbers(lab: Lab) -> None:
    """web02 stops answering and its instances fail their probes: its members leave the
    balancer and three replacements start on web01 under new numbers."""
    lab.sequence().scale_out(6)
    lab.ticks(1)
    lab.hosts["web02"].down = True
    lab.ticks(3)
    assert lab.placed()["web01"] == [1, 3, 5, 7, 8, 9]
    assert sorted(m.n for m in lab.lb.members()) == [1, 3, 5, 7, 8, 9]
    assert all(m.address.startswith("10.9.0.11:") for m in lab.lb.members())
    notes = " ".join(lab.reconciled())
    assert "host web02 does not answer" in notes
    assert "replacements started" in notes


def test_a_host_that_only_lost_ssh_is_left_serving(lab: Lab) -> None:
    """Transport down but instances answering: nothing is replaced or removed."""
    lab.sequence().scale_out(4)
    lab.ticks(1)
    web02 = lab.hosts["web02"]
    web02.down = True
    lab.healthy = lambda address, path: True  # type: ignore[method-assign]
    lab.loop.ctx.healthy = lab.healthy
    lab.loop.prober.probe = lab.healthy
    lab.ticks(3)
    assert sorted(m.n for m in lab.lb.members()) == [1, 2, 3, 4]
    assert lab.placed()["web01"] == [1, 3]


def test_a_returned_host_has_its_replaced_instances_stopped(lab: Lab) -> None:
    """A partition, not a power loss: web02 comes back still running 2, 4, 6, which were
    replaced meanwhile: they are stopped, never added, and the pool stays at 6."""
    lab.sequence().scale_out(6)
    lab.ticks(1)
    lab.hosts["web02"].down = True
    lab.ticks(3)
    lab.hosts["web02"].down = False
    lab.ticks(3)
    assert lab.placed() == {"web01": [1, 3, 5, 7, 8, 9], "web02": []}
    assert len(lab.lb.members()) == 6
    assert any("an extra" in note for note in lab.reconciled())
    # the numbers are free again
    assert lab.runtime.reserved() == set()


def test_members_the_balancer_already_put_down_are_replaced_too(lab: Lab) -> None:
    """HAProxy's own checks mark a dead host's servers down before the controller notices:
    they counted as capacity, so all three are replaced (without probing them again)."""
    lab.sequence().scale_out(6)
    lab.ticks(1)
    lab.hosts["web02"].down = True
    for n in (2, 4, 6):
        address, _ = lab.lb.state[n]
        lab.lb.state[n] = (address, MemberState.DOWN)
    lab.ticks(3)
    assert lab.placed()["web01"] == [1, 3, 5, 7, 8, 9]


WORKERS = """
[controller]
interval = "15s"

[hosts.web01]
address = "10.9.0.11"

[hosts.web02]
address = "10.9.0.12"

[pools.worker]
kind = "worker"
runtime = { type = "systemd", unit = "worker@{n}.service" }
hosts = ["web01", "web02"]
min = 4
max = 6
start_timeout = "30s"
"""


def test_a_worker_pool_replaces_a_silent_hosts_workers_after_three_intervals(
    tmp_path: Path,
) -> None:
    """No members to probe: a host silent for three intervals is lost, its workers started
    on the other host; not before (one missed listing is not a dead host)."""
    policy = parse_policy(WORKERS)
    clock = FakeClock()
    hosts = {name: RecordingHost(pool="worker", size=20, host=name) for name in ("web01", "web02")}
    runtime = SpreadRuntime(
        "worker", policy.pools["worker"], policy.hosts, runtimes=hosts, clock=clock
    )
    loop = ControllerLoop(
        policy,
        open_store(f"sqlite:{tmp_path / 'state.db'}"),
        NoLeader(),
        clock=clock,
        sleep=clock.sleep,
        log=structlog.get_logger("test"),
        build_pool=lambda name, spec: (runtime, None),
    )

    def tick() -> None:
        loop.tick()
        assert loop.settle(30)
        clock.advance(15)

    for _ in range(3):
        tick()
    assert {h: sorted(r.running) for h, r in hosts.items()} == {"web01": [1, 3], "web02": [2, 4]}
    hosts["web02"].down = True
    tick()
    tick()
    assert sorted(hosts["web01"].running) == [1, 3], "not lost after one or two intervals"
    for _ in range(3):
        tick()
    assert sorted(hosts["web01"].running) == [1, 3, 5, 6]


def test_a_number_whose_member_is_still_in_the_balancer_is_not_reused(lab: Lab) -> None:
    """web02 loses instance 4 as it dies (its last listing lacks 4, the member is still
    there): the replacements take new numbers, not 4 (which could not be added)."""
    lab.sequence().scale_out(6)
    lab.ticks(1)
    lab.hosts["web02"].running.discard(4)
    lab.runtime.list()
    lab.hosts["web02"].down = True
    lab.ticks(3)
    assert 4 not in lab.placed()["web01"]
    assert len(lab.placed()["web01"]) == 6, "4 was capacity the loss took: replaced too"
    notes = " ".join(lab.reconciled())
    assert "already exists" not in notes
    assert sorted(m.n for m in lab.lb.members()) == sorted(lab.placed()["web01"])
