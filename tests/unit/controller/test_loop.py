"""The controller loop on in-memory runtimes, balancers and sources, a fake clock and a real
SQLite store: scaling, holding on source errors, retries with backoff, dry-run, reloads,
fencing, reconciliation after a crash, and the leader lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from senex_scale.balancers.base import MemberState
from senex_scale.controller.leader import FileLeader, Leader, NoLeader
from senex_scale.controller.loop import ControllerLoop
from senex_scale.errors import FencedError, PermanentError, TemporaryError
from senex_scale.policy import parse_policy
from senex_scale.store import Store, open_store
from senex_scale.testing import FakeClock, MemorySource, RecordingBalancer, RecordingRuntime

POLICY = """
[controller]
interval = "15s"
backoff = "60s"

[sources.mem]
type = "prometheus"
url = "http://127.0.0.1:1"

[pools.web]
min = 1
max = 4
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


class Harness:
    """One controller over in-memory parts; ``crash()`` starts a new one on the same state."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        policy: str = POLICY,
        leader: Leader | None = None,
        running: set[int] | None = None,
        dry_run: bool = False,
        clock: FakeClock | None = None,
        runtime: RecordingRuntime | None = None,
        lb: RecordingBalancer | None = None,
        source: MemorySource | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.policy_text = policy
        self.clock = clock or FakeClock()
        self.source = source or MemorySource("mem")
        self.runtime = runtime or RecordingRuntime(pool="web", size=4, running=set(running or {1}))
        if lb is None:
            lb = RecordingBalancer()
            for n in self.runtime.running:
                lb.add(n, f"127.0.0.1:{8000 + n}")
            lb.calls.clear()
        self.lb = lb
        self.unhealthy: set[int] = set()
        self.store: Store = open_store(f"sqlite:{tmp_path / 'state.db'}")
        policy_file = tmp_path / "policy.toml"
        if not policy_file.exists():
            policy_file.write_text(policy)
        self.policy_file = policy_file
        self.loop = ControllerLoop(
            parse_policy(policy),
            self.store,
            leader or NoLeader(),
            policy_path=policy_file,
            dry_run=dry_run,
            clock=self.clock,
            sleep=self.clock.sleep,
            healthy=self._healthy,
            log=structlog.get_logger("test"),
            build_source=lambda name, spec: self.source,
            build_pool=lambda name, spec: (self.runtime, self.lb),
            controller_id=f"test-{id(self)}",
        )

    def _healthy(self, address: str, path: str) -> bool:
        return int(address.rsplit(":", 1)[1]) - 8000 not in self.unhealthy

    def ticks(self, count: int, cpu: float | None = None) -> list[Any]:
        """``count`` ticks 15 s apart with the CPU metric at ``cpu``."""
        if cpu is not None:
            self.source.values["cpu"] = cpu
        reports = []
        for _ in range(count):
            self.loop.prober.probe_all()  # the daemon does this on a thread of its own
            reports.append(self.loop.tick())
            assert self.loop.settle(30), "an action did not finish"
            self.clock.advance(15)
        return reports

    def reconciled(self) -> list[str]:
        """Every reason of every reconcile row of the audit log."""
        rows = self.store.history(limit=1000)
        return [reason for row in rows if row.kind == "reconcile" for reason in row.reasons]

    def members(self) -> dict[int, MemberState]:
        return {m.n: m.state for m in self.lb.members()}

    def restart(self, **kwargs: Any) -> Harness:
        """A new controller on the same state, clock, runtime and balancer (after a crash)."""
        self.store.close()
        return Harness(
            self.tmp_path,
            policy=self.policy_text,
            clock=self.clock,
            runtime=self.runtime,
            lb=self.lb,
            source=self.source,
            **kwargs,
        )


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_sustained_high_cpu_scales_out_and_records_why(h: Harness) -> None:
    """Above 70 for 30 s: one more instance, started, healthy, added; the audit log says why."""
    h.ticks(2, cpu=90)
    assert h.runtime.running == {1}, "30 s have not passed yet"
    h.ticks(1)
    assert h.runtime.running == {1, 2}
    assert h.members() == {1: MemberState.READY, 2: MemberState.READY}
    done = h.store.history(outcome="done")
    assert len(done) == 1
    row = done[0]
    assert (row.pool, row.current, row.desired) == ("web", 1, 2)
    assert any("cpu" in r and "> 70" in r for r in row.reasons), row.reasons
    assert [s["what"] for s in row.detail["steps"]] == ["start", "healthy", "add"]
    # the scale event is remembered in the store, for cooldowns after a restart
    assert h.store.load_memory().pool("web").last_scale("out") is not None


def test_low_cpu_scales_in_with_a_drain(h: Harness) -> None:
    """Below 30 for 60 s: the least-loaded instance is drained, stopped and removed."""
    h.ticks(3, cpu=90)
    assert h.runtime.running == {1, 2}
    h.lb.open = {1: 5, 2: 0}
    h.ticks(6, cpu=10)
    assert h.runtime.running == {1}
    assert h.members() == {1: MemberState.READY}
    last = h.store.history(outcome="done")[0]
    assert last.direction == "in"
    steps = [s["what"] for s in last.detail["steps"]]
    assert steps == ["drain", "idle", "disable", "stop", "remove"]
    assert h.lb.calls.index(("drain", 2)) < h.lb.calls.index(("remove", 2))
    assert ("drain", 1) not in h.lb.calls, "the busier instance stays"


def test_source_down_holds_and_is_reported(h: Harness) -> None:
    """A failed source never scales in; the status and the metric say it is down."""
    h.ticks(3, cpu=90)
    assert h.runtime.running == {1, 2}
    h.source.down = "connection refused"
    h.ticks(10, cpu=10)
    assert h.runtime.running == {1, 2}, "no scale-in on missing data"
    status = h.store.get("status")
    assert status["source_errors"] == {"mem": "sources.mem: connection refused"}
    errors = h.loop.metrics.source_errors.labels("mem")._value.get()
    assert errors == 10
    assert h.store.history(outcome="done")[0].direction == "out"


def test_failed_start_is_stopped_not_counted_and_retried_with_backoff(h: Harness) -> None:
    """An instance that never becomes healthy is stopped; the pool backs off, then retries
    with another instance number (the failed one is taken last for a while)."""
    h.unhealthy = {2}
    h.ticks(3, cpu=90)
    assert h.runtime.running == {1}, "the unhealthy instance was stopped again"
    assert 2 not in h.members(), "never added to the balancer"
    failed = h.store.history(outcome="failed")
    assert len(failed) == 1
    assert "not healthy" in failed[0].detail["failed"]["2"]
    # next ticks: backing off (60 s), then tried again
    h.ticks(3)
    assert [r.outcome for r in h.store.history(outcome="backoff")]
    assert h.runtime.calls.count(("start", 2)) == 1
    h.unhealthy = set()
    h.ticks(2)
    assert h.runtime.running == {1, 3}
    assert h.runtime.calls.count(("start", 2)) == 1
    assert h.store.get("backoff") == {}, "a success clears the backoff"


def test_a_start_that_always_fails_on_one_number_does_not_block_scale_out(h: Harness) -> None:
    """Instance 2 can never start (its port is taken): after one failure the next scale-out
    uses 3, so the pool still gets its capacity."""
    h.runtime.fail[("start", 2)] = PermanentError("port 8002 in use")
    h.ticks(3, cpu=90)
    assert h.runtime.running == {1}
    h.ticks(5)
    assert 3 in h.runtime.running
    assert h.runtime.calls.count(("start", 2)) == 1


def test_backoff_doubles_per_failure(h: Harness) -> None:
    """Consecutive failures wait 60 s, then 120 s."""
    for n in (2, 3, 4):
        h.runtime.fail[("start", n)] = TemporaryError("unit busy")
    h.ticks(3, cpu=90)
    first = h.store.get("backoff")["web"]
    assert first["failures"] == 1
    assert first["until"] - h.clock.now == pytest.approx(60 - 15)
    h.ticks(4)
    second = h.store.get("backoff")["web"]
    assert second["failures"] == 2
    assert second["until"] - h.clock.now == pytest.approx(120 - 15)
    assert [n for what, n in h.runtime.calls if what == "start"] == [2, 3]


def test_dry_run_decides_and_records_but_changes_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path, dry_run=True)
    h.ticks(4, cpu=95)
    assert h.runtime.running == {1}
    assert h.runtime.calls == []
    assert h.lb.calls == []
    rows = h.store.history(outcome="dry-run")
    assert rows
    assert rows[0].desired == 2
    assert rows[0].dry_run


def test_balancer_add_failure_stops_the_instance(h: Harness) -> None:
    """The balancer refuses the new member: the instance is stopped, nothing points at it."""
    h.lb.fail[("add", 2)] = PermanentError("nginx -t failed: rolled back")
    h.ticks(3, cpu=90)
    assert h.runtime.running == {1}
    assert h.members() == {1: MemberState.READY}
    row = h.store.history(outcome="failed")[0]
    assert "rolled back" in row.detail["failed"]["2"]


def test_invalid_policy_on_reload_keeps_the_old_one(h: Harness) -> None:
    """SIGHUP with a broken file: refused, said why, still scaling on the old policy."""
    h.policy_file.write_text(POLICY.replace('above = 70, for = "30s"', 'above = 70, for = "3x"'))
    h.loop.request_reload()
    h.loop._maybe_reload()
    assert h.loop.reload_error is not None
    assert "rules[0].scale_out.for" in h.loop.reload_error
    h.ticks(3, cpu=90)
    assert h.runtime.running == {1, 2}
    assert "rules[0].scale_out.for" in h.store.get("status")["reload_error"]


def test_valid_policy_on_reload_applies(h: Harness) -> None:
    h.policy_file.write_text(POLICY.replace("max = 4", "max = 1"))
    h.loop.request_reload()
    h.loop._maybe_reload()
    assert h.loop.reload_error is None
    h.ticks(4, cpu=95)
    assert h.runtime.running == {1}, "max is 1 now"


def test_restart_after_kill_mid_scale_out_adds_the_started_instance_once(h: Harness) -> None:
    """SIGKILL between start and add: the restart finds instance 2 running but not in the
    balancer, adds it once healthy, closes the action as interrupted, and does not start a
    third instance for the same decision."""
    h.source.values["cpu"] = 90
    h.ticks(2)
    # the crash: the journal says running, the runtime has 2, the balancer does not
    decision_id = h.store.record_decision(
        h.clock.now, {"kind": "scale", "pool": "web", "priority": "medium"}, "running"
    )
    h.store.begin_action(decision_id, "web", "out", 1, 2, h.loop.fence, h.clock.now)
    h.runtime.start(2)
    h2 = h.restart()
    h2.source.values["cpu"] = 50  # load is normal again after the restart
    report = h2.ticks(1)[0]
    assert any("was interrupted" in note for note in report.reconciled)
    assert any("running but not in the balancer: healthy: added" in n for n in h2.reconciled())
    assert h2.members() == {1: MemberState.READY, 2: MemberState.READY}
    assert h2.store.open_actions() == []
    interrupted = h2.store.history(outcome="interrupted")
    assert [r.id for r in interrupted] == [decision_id]
    assert interrupted[0].detail["after"] == 2
    assert h2.store.load_memory().pool("web").last_scale("out") is not None
    h2.ticks(4)
    assert h2.runtime.running == {1, 2}
    assert h2.runtime.calls.count(("start", 2)) == 1
    assert ("start", 3) not in h2.runtime.calls


def test_restart_after_kill_mid_drain_finishes_the_scale_in(h: Harness) -> None:
    """SIGKILL after drain: the restart stops and removes the drained instance."""
    h.runtime.start(2)
    h.lb.add(2, "127.0.0.1:8002")
    h.ticks(1, cpu=50)
    h.store.begin_action(None, "web", "in", 2, 1, h.loop.fence, h.clock.now)
    h.lb.drain(2)
    h2 = h.restart()
    h2.ticks(1)
    assert any("drained by an interrupted scale-in: stopped" in n for n in h2.reconciled())
    assert h2.runtime.running == {1}
    assert h2.members() == {1: MemberState.READY}


def test_reconcile_removes_members_whose_instance_is_stopped(tmp_path: Path) -> None:
    """Drift: the balancer points at a stopped instance; removed before deciding anything."""
    lb = RecordingBalancer()
    lb.add(1, "127.0.0.1:8001")
    lb.add(3, "127.0.0.1:8003")
    h = Harness(tmp_path, lb=lb)
    h.ticks(1, cpu=50)
    assert h.members() == {1: MemberState.READY}
    assert any("web@3: in the balancer but not running: removed" in n for n in h.reconciled())
    assert h.store.history(pool=None, limit=5)[-1].kind == "reconcile"


def test_a_fence_older_than_the_newest_issued_is_refused(h: Harness) -> None:
    """Fences 1 and 2 handed out, none used yet: an action with 1 is refused (the bar is the
    newest token issued, not the newest used), and pruning does not lower it."""
    h.ticks(1, cpu=50)
    mine = h.loop.fence
    newer = h.store.next_fence()  # a standby took over
    assert newer == mine + 1
    h.store.prune(h.clock.now + 10**6)
    with pytest.raises(FencedError, match="another controller leads"):
        h.store.begin_action(None, "web", "out", 1, 2, mine, h.clock.now)
    with pytest.raises(FencedError):
        h.store.record_decision(
            h.clock.now, {"kind": "scale", "priority": "low"}, "hold", fence=mine
        )
    h.store.begin_action(None, "web", "out", 1, 2, newer, h.clock.now)


def test_a_deposed_leader_stops_between_steps_and_leads_again_with_a_new_fence(
    h: Harness,
) -> None:
    """A newer fence is handed out while instance 2 is starting: the add never happens; the
    loop steps down and (the lock being free) leads again with a newer token, closes its own
    journal entry as interrupted and adds 2 by reconciling."""
    h.ticks(2, cpu=90)
    first = h.loop.fence

    def healthy_then_deposed(address: str, path: str) -> bool:
        h.store.next_fence()  # another controller took the lead meanwhile
        return True

    h.loop.ctx.healthy = healthy_then_deposed
    h.ticks(1)
    assert h.runtime.running == {1, 2}
    assert 2 not in h.members(), "the deposed leader added nothing"
    h.loop.ctx.healthy = h._healthy
    report = h.ticks(1)[0]
    assert report.leading
    assert h.loop.fence > first + 1
    assert any("was interrupted" in n for n in report.reconciled)
    assert h.members() == {1: MemberState.READY, 2: MemberState.READY}
    assert h.runtime.calls.count(("start", 2)) == 1


def test_members_lost_while_leading_are_re_added_within_a_tick(h: Harness) -> None:
    """The balancer loses every member while the leader runs (HAProxy reloaded without its
    state): the next tick re-adds the running, healthy instances; the audit log says so."""
    h.ticks(3, cpu=90)
    assert h.members() == {1: MemberState.READY, 2: MemberState.READY}
    h.lb.state.clear()
    h.ticks(2, cpu=50)
    assert h.members() == {1: MemberState.READY, 2: MemberState.READY}
    assert sum("running but not in the balancer: healthy: added" in n for n in h.reconciled()) == 2
    assert h.runtime.running == {1, 2}, "nothing was stopped"


def test_an_unhealthy_lost_instance_is_stopped_only_after_start_timeout(h: Harness) -> None:
    """A running instance missing from the balancer that fails its probe is kept running and
    probed again; only after start_timeout (30 s) of failures is it stopped, with a reason."""
    h.runtime.start(2)
    h.unhealthy = {2}
    h.ticks(2, cpu=50)
    assert h.runtime.running == {1, 2}
    assert 2 not in h.members()
    h.ticks(2)
    assert h.runtime.running == {1}
    assert any("not healthy for" in n and "stopped" in n for n in h.reconciled())


def test_a_frozen_member_is_taken_out_of_service_and_back_when_it_recovers(h: Harness) -> None:
    """A member whose process lives but fails its health probe three times in a row is
    drained (then not capacity: a replacement may start); once it passes again it is added
    back."""
    h.ticks(3, cpu=90)
    assert h.members() == {1: MemberState.READY, 2: MemberState.READY}
    h.unhealthy = {2}
    reports = h.ticks(4, cpu=50)
    assert h.members() == {1: MemberState.READY, 2: MemberState.DRAINING}
    assert h.runtime.running == {1, 2}, "alive, so not stopped"
    assert any("web@2: failing its health probe" in n for n in h.reconciled())
    plan = reports[-1].plan
    assert plan is not None
    assert plan.decisions[0].current == 1, "the frozen member is not capacity"
    h.unhealthy = set()
    h.ticks(2)
    assert h.members() == {1: MemberState.READY, 2: MemberState.READY}
    assert any("web@2: passes its health probe again" in n for n in h.reconciled())


def test_when_every_member_fails_its_probe_none_is_taken_out(h: Harness) -> None:
    """Every member failing at once is a shared cause (a database down): taking them all out
    would turn slow into down, so they stay in service."""
    h.ticks(3, cpu=90)
    h.unhealthy = {1, 2}
    h.ticks(4, cpu=50)
    assert h.members() == {1: MemberState.READY, 2: MemberState.READY}


def test_members_failing_probes_are_taken_out_one_at_a_time(tmp_path: Path) -> None:
    """Two of three members fail their probes (overload makes every probe slow): only one is
    taken out, so the load of both does not pile onto the last one."""
    h = Harness(tmp_path, running={1, 2, 3})
    h.ticks(1, cpu=50)
    h.unhealthy = {2, 3}
    h.ticks(4)
    states = h.members()
    assert sorted(states.values()).count(MemberState.DRAINING) == 1, states
    assert states[1] is MemberState.READY


def test_a_journal_entry_left_running_is_closed_live(h: Harness) -> None:
    """A journal entry "running" with no job in flight (a crashed job) is closed as
    interrupted at the next tick, not only at the next start."""
    h.ticks(1, cpu=50)
    h.store.begin_action(None, "web", "out", 1, 2, h.loop.fence, h.clock.now)
    h.ticks(1)
    assert h.store.open_actions() == []
    assert h.store.actions(1)[0].status == "interrupted"


def test_a_failed_runbook_waits_for_its_cooldown(tmp_path: Path) -> None:
    """A runbook that fails is not run again every tick: its cooldown starts when it fires."""
    policy = (
        POLICY
        + """
[[rules]]
name = "db-cpu"
metric = { source = "mem", query = "db" }
when = { above = 80, for = "30s" }
action = { type = "runbook", argv = ["false"] }
cooldown = "10m"
"""
    )
    h = Harness(tmp_path, policy=policy)
    h.source.values["db"] = 95
    h.ticks(20, cpu=50)
    runs = [r for r in h.store.history(limit=100) if r.rule == "db-cpu" and r.outcome != "hold"]
    assert [r.outcome for r in runs] == ["failed"]
    assert "exited 1" in runs[0].detail["error"]


def test_two_controllers_only_one_acts_and_the_standby_takes_over(tmp_path: Path) -> None:
    """Two controllers on one state with the file lock: the second stands by; when the
    first stops, the second leads at its next tick."""
    lock = tmp_path / "state.db.lock"
    a = Harness(tmp_path, leader=FileLeader(lock))
    b = Harness(
        tmp_path,
        leader=FileLeader(lock),
        clock=a.clock,
        runtime=a.runtime,
        lb=a.lb,
        source=a.source,
    )
    a.source.values["cpu"] = 90
    for _ in range(3):
        assert a.loop.tick().leading
        a.loop.settle(30)
        assert not b.loop.tick().leading
        a.clock.advance(15)
    assert a.runtime.calls.count(("start", 2)) == 1, "only the leader started an instance"
    assert b.store.get("status")["role"] == "leader", "the standby did not blank the page"
    statuses = b.store.statuses()
    assert {s["role"] for s in statuses.values()} == {"leader", "standby"}
    assert statuses[a.loop.controller_id]["pools"], "the leader's pools are there"
    a.loop.leader.release()  # the leader dies (the kernel drops its flock)
    report = b.loop.tick()
    assert report.leading
    assert b.loop.fence > a.loop.fence


def test_prune_drops_rows_older_than_retention(h: Harness) -> None:
    h.ticks(3, cpu=90)
    assert h.store.samples("cpu", 0)
    removed = h.store.prune(h.clock.now + 1)
    assert removed > 0
    assert h.store.samples("cpu", 0) == []
    assert h.store.history(limit=100) == []
