"""The scale sequence: start -> healthy -> add; drain -> idle -> disable -> stop -> remove;
and every failure path leaves the balancer sending requests only to running, healthy
instances."""

from __future__ import annotations

import pytest

from senex_scale.balancers.base import MemberState
from senex_scale.controller.sequence import ScaleSequence, Step
from senex_scale.errors import FencedError, PermanentError, TemporaryError
from senex_scale.policy import parse_policy
from senex_scale.testing import FakeClock, RecordingBalancer, RecordingRuntime

POOL = parse_policy(
    """
[pools.web]
min = 1
max = 5
port = "8000 + n"
start_timeout = "30s"
drain_timeout = "60s"
"""
).pools["web"]


def make(
    running: set[int] | None = None,
    unhealthy: set[int] | None = None,
    balancer: bool = True,
) -> tuple[ScaleSequence, RecordingRuntime, RecordingBalancer, FakeClock, list[Step]]:
    """A sequence over in-memory parts; instances in ``unhealthy`` never pass their check."""
    clock = FakeClock()
    runtime = RecordingRuntime(running=set(running or ()))
    lb = RecordingBalancer()
    for n in running or ():
        lb.add(n, f"127.0.0.1:{8000 + n}")
    lb.calls.clear()
    bad = unhealthy or set()
    steps: list[Step] = []

    def healthy(address: str, path: str) -> bool:
        return int(address.rsplit(":", 1)[1]) - 8000 not in bad

    seq = ScaleSequence(
        "web",
        POOL,
        runtime,
        lb if balancer else None,
        clock=clock,
        sleep=clock.sleep,
        healthy=healthy,
        on_step=steps.append,
    )
    return seq, runtime, lb, clock, steps


def test_scale_out_starts_lowest_free_numbers_then_adds() -> None:
    """New instances take the lowest free numbers and join the balancer once healthy."""
    seq, runtime, lb, _, steps = make(running={1, 3})
    outcome = seq.scale_out(2)
    assert (outcome.done, outcome.failed) == ([2, 4], {})
    assert runtime.calls == [("start", 2), ("start", 4)]
    assert [(s.n, s.what) for s in steps] == [
        (2, "start"),
        (2, "healthy"),
        (2, "add"),
        (4, "start"),
        (4, "healthy"),
        (4, "add"),
    ]
    assert {m.n: m.address for m in lb.members()}[4] == "127.0.0.1:8004"


def test_unhealthy_instance_is_stopped_and_never_added() -> None:
    """An instance that never passes its check is stopped after start_timeout, not added."""
    seq, runtime, lb, clock, _ = make(running={1}, unhealthy={2})
    started = clock.now
    outcome = seq.scale_out(1)
    assert outcome.failed == {2: "not healthy (GET 127.0.0.1:8002/health/) within 30s"}
    assert runtime.calls == [("start", 2), ("stop", 2)]
    assert ("add", 2) not in lb.calls
    assert 2 not in runtime.running
    assert clock.now - started >= 30


def test_add_failure_stops_the_instance() -> None:
    """If the balancer refuses the new member, the instance is stopped again."""
    seq, runtime, lb, _, _ = make(running={1})
    lb.fail[("add", 2)] = PermanentError("nginx -t failed")
    outcome = seq.scale_out(1)
    assert outcome.failed == {2: "nginx -t failed"}
    assert runtime.calls[-1] == ("stop", 2)
    assert 2 not in lb.state


def test_scale_in_drains_waits_disables_stops_removes_in_order() -> None:
    """Scale-in: drain, wait until idle, disable, stop, then remove, for the least loaded
    member (out of service before it stops: nothing that gets requests is ever stopped)."""
    seq, runtime, lb, _, steps = make(running={1, 2, 3})
    lb.open = {1: 5, 2: 0, 3: 9}
    outcome = seq.scale_in(1)
    assert outcome.done == [2]
    assert [s.what for s in steps] == ["drain", "idle", "disable", "stop", "remove"]
    assert lb.calls == [("drain", 2), ("disable", 2), ("remove", 2)]
    assert runtime.calls == [("stop", 2)]
    assert runtime.graces == [None], "a web instance's drain was the balancer's"


def test_worker_stop_gets_drain_timeout_as_its_grace() -> None:
    """A worker pool's stop is its drain: the runtime gets drain_timeout (60 s) to let the
    worker finish its tasks (Celery's warm shutdown)."""
    seq, runtime, _, _, _ = make(running={1, 2}, balancer=False)
    assert seq.scale_in(1).ok
    assert runtime.graces == [60.0]


def test_scale_in_waits_for_connections_then_the_timeout() -> None:
    """A member with open connections is stopped only after drain_timeout."""
    seq, runtime, lb, clock, steps = make(running={1, 2})
    lb.open = {1: 3, 2: 3}
    started = clock.now
    seq.scale_in(1)
    assert clock.now - started >= 60
    idle = next(s for s in steps if s.what == "idle")
    assert idle.detail == "drain_timeout 60s passed with 3 open"
    assert runtime.calls == [("stop", 2)]  # equal load: the newest goes


def test_failed_drain_stops_nothing() -> None:
    """If the drain fails, the instance keeps running and stays in the balancer as it was."""
    seq, runtime, lb, _, _ = make(running={1, 2})
    lb.fail[("drain", 2)] = TemporaryError("socket timeout")
    lb.fail[("drain", 1)] = TemporaryError("socket timeout")
    outcome = seq.scale_in(1)
    assert outcome.failed == {2: "socket timeout"}
    assert runtime.calls == []
    assert lb.state[2][1] is MemberState.READY


def test_failed_stop_leaves_it_running_out_of_service() -> None:
    """A stop that fails leaves a running instance that gets no requests (disabled)."""
    seq, runtime, lb, _, _ = make(running={1, 2})
    runtime.fail[("stop", 2)] = TemporaryError("unit busy")
    outcome = seq.scale_in(1)
    assert outcome.failed == {2: "unit busy"}
    assert 2 in runtime.running
    assert lb.state[2][1] is MemberState.DOWN
    assert ("remove", 2) not in lb.calls


def test_failed_disable_stops_nothing() -> None:
    """A disable that fails leaves the instance running (drained): never stopped in service."""
    seq, runtime, lb, _, _ = make(running={1, 2})
    lb.fail[("disable", 2)] = PermanentError("haproxy: no such server")
    outcome = seq.scale_in(1)
    assert "no such server" in outcome.failed[2]
    assert runtime.calls == []
    assert lb.state[2][1] is MemberState.DRAINING


def test_failed_remove_after_the_stop_leaves_a_member_out_of_service() -> None:
    """The stop worked, the remove did not: the member stays disabled (no request reaches
    it) for live reconcile to remove."""
    seq, runtime, lb, _, _ = make(running={1, 2})
    lb.fail[("remove", 2)] = TemporaryError("socket timeout")
    outcome = seq.scale_in(1)
    assert "not removed" in outcome.failed[2]
    assert 2 not in runtime.running
    assert lb.state[2][1] is MemberState.DOWN


def test_scale_in_of_several_drains_them_together() -> None:
    """Three instances with open connections drain at the same time: one drain_timeout in
    all, not one per instance; all are stopped."""
    seq, runtime, lb, clock, steps = make(running={1, 2, 3, 4})
    lb.open = {1: 1, 2: 1, 3: 1, 4: 1}
    started = clock.now
    outcome = seq.scale_in(3)
    assert sorted(outcome.done) == [2, 3, 4]
    assert 60 <= clock.now - started < 61
    assert [s.what for s in steps[:3]] == ["drain", "drain", "drain"]
    assert sorted(n for what, n in runtime.calls if what == "stop") == [2, 3, 4]
    assert runtime.running == {1}


def test_a_guard_that_refuses_stops_the_sequence_between_steps() -> None:
    """A controller that lost the lead (its guard raises FencedError) takes no further step:
    the started instance is neither added nor stopped, for the new leader to reconcile."""
    seq, runtime, lb, _, steps = make(running={1})
    allowed = iter([True])  # the start may happen, the add not

    def guard() -> None:
        if not next(allowed, False):
            raise FencedError("fencing token 1 is not the newest (2)")

    seq.guard = guard
    with pytest.raises(FencedError):
        seq.scale_out(2)
    assert runtime.calls == [("start", 2)]
    assert lb.calls == []
    assert [s.what for s in steps] == ["start", "healthy"]


@pytest.mark.parametrize(("desired", "running"), [(3, {1, 2, 3}), (1, {1}), (2, {1, 2})])
def test_scale_to(desired: int, running: set[int]) -> None:
    """scale_to reaches the desired count from 2 running instances."""
    seq, runtime, _, _, _ = make(running={1, 2})
    assert seq.scale_to(desired).ok
    assert runtime.running == running


def test_worker_pool_waits_for_running_not_http() -> None:
    """Without a balancer, a start is done when the runtime reports the process running."""
    seq, runtime, _, _, steps = make(running=set(), balancer=False)
    outcome = seq.scale_out(2)
    assert outcome.done == [1, 2]
    assert [s.what for s in steps] == ["start", "healthy", "start", "healthy"]
    assert seq.scale_in(1).done == [2]
    assert runtime.running == {1}
