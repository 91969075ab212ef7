"""One test per fault: the controller (a real ``senex-scale run``) against real servers under
HTTP, WebSocket and Celery load while the fault happens. Each asserts what users see (failed
requests outside the fault's own window, WebSockets cut, tasks lost or run twice) and the
invariants (never above max, never fewer than min serving, nothing stopped while serving, the
journal closed); see conftest.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from senex_scale import lab
from senex_scale.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]


def test_baseline_scale_cycle_under_load(nginx_stack: Any, kit: Any) -> None:
    """No fault: web 1 -> 3 -> 1 and workers up and down under load, nothing lost."""
    s = nginx_stack
    s.run()
    run = kit.start_load(s)
    run.tasks.send(120)  # a burst: the queue rule scales the workers out
    kit.scale_cycle(run, web=3)
    run.finish()
    done = [r for r in s.history(outcome="done") if r.kind == "scale"]
    assert {(r.pool, r.direction) for r in done} >= {("web", "out"), ("web", "in")}


def _at(s: Any, web: int) -> bool:
    return len(s.serving()) == web and s.serving() == s.running("web")


def _two(s: Any, run: Any) -> int:
    """Load up until web serves 2 or more, hold the load between the thresholds, and wait
    until nothing moves; the number of instances then."""
    s.gauge.value = 95
    wait_until(lambda: len(s.serving()) >= 2, 60, "web at 2\n" + s.log_tail())
    s.gauge.value = 50
    last: list[set[int]] = []

    def still() -> bool:
        now = s.running("web")
        last.append(now)
        return len(last) > 20 and all(x == now for x in last[-20:]) and s.serving() == now

    wait_until(still, 60, "web to settle", interval=0.1)
    return len(last[-1])


def test_source_down_holds_then_resumes(nginx_stack: Any, kit: Any) -> None:
    """Prometheus stops while load is low: no scale-in on missing data; once it is back,
    the pool scales in."""
    s = nginx_stack
    proc = s.run()
    run = kit.start_load(s)
    n = _two(s, run)
    s.prometheus.stop()
    s.gauge.value = 10
    time.sleep(6)
    assert len(s.running("web")) == n, "scaled in on missing data"
    assert s.seen(proc, event="source failed")
    s.prometheus.start()
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    run.finish()


def test_source_returning_garbage_holds_and_a_spike_stays_within_max(
    nginx_stack: Any, kit: Any
) -> None:
    """NaN and an unparsable exposition are missing data (hold, no scale-in); an absurd
    value scales out no further than max."""
    s = nginx_stack
    s.run()
    run = kit.start_load(s)
    n = _two(s, run)
    s.gauge.raw = "# TYPE senex_test_load gauge\nsenex_test_load NaN\n"
    time.sleep(5)
    s.gauge.raw = "senex_test_load {{{ not a sample\n"
    time.sleep(5)
    assert len(s.running("web")) == n, "garbage must not scale in"
    s.gauge.raw = None
    s.gauge.value = 1e12
    wait_until(lambda: len(s.serving()) == 4, 60, "web at max\n" + s.log_tail())
    time.sleep(3)
    assert len(s.running("web")) == 4
    s.gauge.value = 10
    wait_until(lambda: _at(s, 1), 90, "web back at 1\n" + s.log_tail())
    run.finish()


def test_an_instance_that_cannot_start_is_stopped_and_another_number_is_used(
    nginx_stack: Any, kit: Any
) -> None:
    """Instances 2 and 3 exit at start: each is stopped and never added; the pool backs
    off and still gets its capacity with instance 4."""
    s = nginx_stack
    (s.root / "broken-2").touch()
    (s.root / "broken-3").touch()
    s.run()
    run = kit.start_load(s)
    s.gauge.value = 95
    wait_until(lambda: 4 in s.serving(), 90, "instance 4 serving\n" + s.log_tail())
    failed = [r for r in s.history(outcome="failed") if r.pool == "web"]
    assert failed, "the failed starts are in the audit log"
    assert {"2", "3"} <= {n for r in failed for n in r.detail.get("failed", {})}
    assert 2 not in s.serving()
    assert 3 not in s.serving()
    s.gauge.value = 10
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    run.finish()


def test_nginx_reload_failing_rolls_back_and_stops_the_new_instance(
    nginx_stack: Any, kit: Any
) -> None:
    """nginx -t fails (a broken nginx.conf): the add is rolled back, the new instance is
    stopped, traffic goes on; once the file is fixed the scale-out goes through."""
    s = nginx_stack
    s.run()
    run = kit.start_load(s)
    good = s.front.conf.read_text()
    s.front.conf.write_text(good + "\nthis is not a directive;\n")
    s.gauge.value = 95
    wait_until(
        lambda: any(r.pool == "web" for r in s.history(outcome="failed")),
        60,
        "a failed scale-out\n" + s.log_tail(),
    )
    assert s.running("web") == s.serving() == {1}
    row = next(r for r in s.history(outcome="failed") if r.pool == "web")
    assert "nginx" in str(row.detail), row.detail
    s.front.conf.write_text(good)
    wait_until(lambda: len(s.serving()) >= 2, 60, "web at 2 after the fix\n" + s.log_tail())
    s.gauge.value = 10
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    run.finish()


def test_haproxy_restarted_without_its_servers_is_repaired_live(
    haproxy_stack: Any, kit: Any
) -> None:
    """HAProxy restarted from a config without the server lines: the running leader adds
    every running, healthy instance back within a few intervals."""
    s = haproxy_stack
    proc = s.run()
    run = kit.start_load(s)
    n = _two(s, run)
    lost = time.time()
    with run.invariants.excuse(settle=1):
        s.front.stop()
        s.front.config.unlink()  # the next start writes the base config: no servers
        s.front.start()
        assert s.serving() == set()
        wait_until(lambda: _at(s, n), 15, "members back\n" + s.log_tail())
    back = time.time()
    assert back - lost < 15
    assert s.seen(proc, event="drift")

    def added() -> int:
        notes = [x for r in s.history() if r.kind == "reconcile" for x in r.reasons]
        return sum("running but not in the balancer: healthy: added" in x for x in notes)

    wait_until(lambda: added() == n, 10, "the repair's notes")  # written after the adds
    s.gauge.value = 10
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    run.finish(allowed=[(lost, back + 1)])


def test_members_lost_from_the_nginx_include_are_re_added(nginx_stack: Any, kit: Any) -> None:
    """The upstream include rewritten by hand to its placeholder and nginx reloaded: the
    leader re-adds the running instances at its next ticks (an outage until then)."""
    s = nginx_stack
    s.run()
    run = kit.start_load(s)
    n = _two(s, run)
    lost = time.time()
    with run.invariants.excuse(settle=1):
        (s.front.root / "upstream.conf").write_text(kit.empty_upstream)
        s.front.reload()
        wait_until(lambda: _at(s, n), 15, "members back\n" + s.log_tail())
    back = time.time()
    s.gauge.value = 10
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    run.finish(allowed=[(lost, back + 2)])


def test_sigkill_mid_scale_out_then_restart_adds_it_once(nginx_stack: Any, kit: Any) -> None:
    """The controller dies between start and add: the next one adds the started instance
    once (no second start), and closes the journal entry as interrupted."""
    s = nginx_stack
    first = s.run()
    run = kit.start_load(s)
    s.gauge.value = 95
    wait_until(
        lambda: s.seen(first, event="step", pool="web", what="start", n=2), 60, "web@2 starting"
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    s.gauge.value = 50
    s.run()
    wait_until(lambda: _at(s, 2), 60, "the started instance added\n" + s.log_tail())
    assert [r.outcome for r in s.history() if r.pool == "web" and r.kind == "scale"][:1] == [
        "interrupted"
    ]
    s.gauge.value = 10
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    run.finish()


def test_sigkill_mid_scale_in_then_restart_finishes_the_drain(nginx_stack: Any, kit: Any) -> None:
    """The controller dies while an instance drains: the next one finishes the scale-in
    (stop, remove); WebSockets on it are closed by the app (a close frame), not cut."""
    s = nginx_stack
    first = s.run(policy=s.policy(drain="6s"))
    run = kit.start_load(s, sockets=8)
    _two(s, run)
    s.gauge.value = 10
    wait_until(lambda: s.seen(first, event="step", pool="web", what="drain"), 60, "a drain")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert len(s.serving()) < len(s.running("web")), "an instance was left drained"
    second = s.run(policy=s.policy(drain="6s"))
    wait_until(lambda: _at(s, 1), 60, "the drain finished\n" + s.log_tail())
    wait_until(lambda: s.seen(second, event="reconciled"), 10, "the repair's log line")
    run.finish()


def test_takeover_mid_drain_and_the_paused_leader_is_fenced(nginx_stack: Any, kit: Any) -> None:
    """Two controllers on a Redis lock: the leader is paused (SIGSTOP) mid-drain; the standby
    takes over and finishes the scale-in; the old leader, resumed, takes no further step."""
    s = nginx_stack
    lock = lab.Redis(s.root / "lock")
    lock.start()
    try:
        policy = s.policy(drain="8s", leader=lock.url(0), leader_ttl="2s")
        a = s.run(policy=policy)
        wait_until(lambda: s.seen(a, event="leading"), 30, "a leads")
        b = s.run(policy=policy)
        run = kit.start_load(s)
        _two(s, run)
        s.gauge.value = 10
        wait_until(lambda: s.seen(a, event="step", pool="web", what="drain"), 60, "a drains")
        a.send_signal(signal.SIGSTOP)
        wait_until(lambda: s.seen(b, event="leading"), 30, "b takes over\n" + s.log_tail())
        wait_until(lambda: _at(s, 1), 60, "b finished the scale-in\n" + s.log_tail())
        resumed = time.time()
        a.send_signal(signal.SIGCONT)
        time.sleep(4)
        changes = ("start", "add", "drain", "disable", "stop", "remove")
        late = [
            e
            for e in s.events(a)
            if e.get("event") == "step" and e.get("what") in changes and _ts(e) > resumed - 0.5
        ]
        assert late == [], f"the deposed leader went on: {late}"
        assert any(
            e.get("event") in ("deposed mid-action: stopped", "stepping down") for e in s.events(a)
        ), s.log_tail()
        assert _at(s, 1)
        run.finish()
    finally:
        lock.stop()


def _ts(event: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def test_invalid_policy_on_sighup_keeps_the_old_one(nginx_stack: Any, kit: Any) -> None:
    """SIGHUP with a broken policy: refused with the reason, scaling goes on as before."""
    s = nginx_stack
    path = s.policy()
    proc = s.run(policy=path)
    run = kit.start_load(s)
    path.write_text(path.read_text().replace('above = 70, for = "2s"', 'above = 70, for = "2x"'))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: s.seen(proc, event="policy reload refused"), 30, "the refusal")
    kit.scale_cycle(run, web=2)
    assert proc.poll() is None
    run.finish()


def test_state_database_down_acts_on_nothing_and_resumes(pg_stack: Any, kit: Any) -> None:
    """The PostgreSQL state stops: the controller cannot journal, so it changes nothing
    (instances keep serving); once the database is back it leads again and scales in."""
    s, pg = pg_stack.stack, pg_stack.pg
    proc = s.run()
    run = kit.start_load(s)
    n = _two(s, run)
    pg.stop()
    s.gauge.value = 10
    time.sleep(6)
    assert len(s.running("web")) == n, "acted without a journal"
    assert s.seen(proc, event="tick failed")
    pg.start()
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    run.finish()


def test_full_disk_under_the_state_acts_on_nothing_and_resumes(
    tmp_path: Any, kit: Any, request: Any
) -> None:
    """The SQLite state's file system fills up: no action without a journal entry, the
    instances keep serving; once there is room again the pool scales in."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"cannot mount a small tmpfs (root needed): {mounted.stderr}"
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(state)], check=False))
    stacks = kit.make_stack(tmp_path, "nginx")
    s = next(stacks)
    try:
        s.run()
        run = kit.start_load(s)
        n = _two(s, run)
        filler = state / "filler"
        with filler.open("wb") as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
        s.gauge.value = 10
        time.sleep(6)
        assert len(s.running("web")) == n, "acted without a journal"
        filler.unlink()
        wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
        run.finish()
    finally:
        stacks.close()


def test_redis_lock_server_restart_steps_down_then_leads_with_a_new_fence(
    nginx_stack: Any, kit: Any
) -> None:
    """The Redis holding the leader lock restarts (empty): the leader steps down when it
    cannot renew, acts on nothing meanwhile, and leads again with a newer fencing token."""
    s = nginx_stack
    lock = lab.Redis(s.root / "lock")
    lock.start()
    try:
        proc = s.run(policy=s.policy(leader=lock.url(0), leader_ttl="2s"))
        run = kit.start_load(s)
        n = _two(s, run)
        fences = [e["fence"] for e in s.events(proc) if e.get("event") == "leading"]
        lock.stop()
        s.gauge.value = 10
        time.sleep(4)
        assert len(s.running("web")) == n, "acted without the lock"
        lock.start()
        wait_until(
            lambda: len([e for e in s.events(proc) if e.get("event") == "leading"]) > len(fences),
            30,
            "leading again\n" + s.log_tail(),
        )
        again = [e["fence"] for e in s.events(proc) if e.get("event") == "leading"]
        assert again[-1] > fences[-1]
        wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
        run.finish()
    finally:
        lock.stop()


def test_a_frozen_instance_is_taken_out_and_back(nginx_stack: Any, kit: Any) -> None:
    """SIGSTOP one web instance (alive, not answering): it is taken out of service after
    three failed probes; requests fail only on it until then; SIGCONT puts it back."""
    s = nginx_stack
    proc = s.run()
    run = kit.start_load(s, sockets=4)
    n = _two(s, run)
    frozen = max(s.serving())
    pid = s.pid("web", frozen)
    started = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: frozen not in s.serving(), 30, "taken out\n" + s.log_tail())
        out = time.time()
        assert frozen in s.running("web"), "alive: not stopped"
        # the drain is done before the repair writes its note and log line
        wait_until(lambda: s.seen(proc, event="reconciled"), 10, "the repair's log line")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: _at(s, n), 30, "back in service\n" + s.log_tail())

    def notes() -> list[str]:
        return [x for r in s.history() if r.kind == "reconcile" for x in r.reasons]

    assert any("failing its health probe" in x for x in notes())
    wait_until(lambda: any("passes its health probe again" in x for x in notes()), 10, "note")
    s.gauge.value = 10
    wait_until(lambda: _at(s, 1), 60, "web back at 1\n" + s.log_tail())
    # requests that reached the frozen instance before it was taken out time out (5 s)
    run.finish(allowed=[(started, out + 6)])
