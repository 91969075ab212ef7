"""Router configuration, health judgement and the monitor's caching (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from senex_scale.contrib.django.registry import ReplicaEntry
from senex_scale.contrib.django.router import (
    Probe,
    ReplicaMonitor,
    RouterConfig,
    RouterConfigError,
    judge,
)
from senex_scale.testing import FakeClock


def test_the_defaults_are_documented_ones() -> None:
    """No setting: primary 'default', no replicas, 5 s lag, 2 s TTL, 10 s pin."""
    config = RouterConfig.from_settings(None)
    assert (config.primary, config.replicas, config.registry) == ("default", (), None)
    assert (config.max_lag_seconds, config.health_ttl, config.pin_seconds) == (5.0, 2.0, 10.0)


def test_replicas_may_be_aliases_or_objects() -> None:
    """Strings are DATABASES aliases; objects are registry-style entries."""
    config = RouterConfig.from_settings(
        {"REPLICAS": ["replica", {"alias": "r2", "host": "h", "port": 6432}], "REGISTRY": "/x"}
    )
    assert config.replicas == ("replica", ReplicaEntry("r2", "h", 6432))
    assert config.registry == Path("/x")


def test_bad_settings_name_each_key() -> None:
    """Every problem in one error, each as SENEX_SCALE_ROUTER["KEY"]."""
    with pytest.raises(RouterConfigError) as err:
        RouterConfig.from_settings(
            {"MAX_LAG": 1, "HEALTH_TTL": 0, "PIN_SECONDS": "10", "COOKIE": "a b", "REPLICAS": 3}
        )
    text = str(err.value)
    assert text.startswith("SENEX_SCALE_ROUTER: 5 problem(s)")
    for key in ("MAX_LAG", "HEALTH_TTL", "PIN_SECONDS", "COOKIE", "REPLICAS"):
        assert f'SENEX_SCALE_ROUTER["{key}"]' in text


def test_a_dotted_path_is_a_replica_callable() -> None:
    """A string REPLICAS names a callable read at each refresh."""
    config = RouterConfig.from_settings({"REPLICAS": "myapp.replicas.current"})
    assert config.replicas_callable == "myapp.replicas.current"


@pytest.mark.parametrize(
    ("probe", "primary", "healthy", "reason"),
    [
        (Probe(True, 1000, 0.0), 1000, True, "ok"),
        (Probe(True, 1000, 600.0), 1000, True, "ok"),  # caught up; the primary is idle
        (Probe(True, 1000, 6.0), 1001, False, "lag 6.0s > 5s"),
        (Probe(True, 1000, 0.0), 1000 + 2048, False, "lag 2048 bytes > 1024"),
        (Probe(False, 1000, 0.0), 1000, False, "not in recovery (promoted?): not a replica"),
        (Probe(True, None, None), 1000, False, "has not replayed any WAL yet"),
        (OSError("connection refused\nmore"), 1000, False, "down: connection refused"),
        (Probe(True, 1000, 1.0), None, True, "ok"),
        (Probe(True, 1000, 6.0), None, False, "lag 6.0s > 5s"),
        (Probe(True, 1000, None), 1010, False, "lag unknown: behind by 10 bytes, no replayed"
         " transaction to date it"),
    ],
)  # fmt: skip
def test_judge(probe: Probe | Exception, primary: int | None, healthy: bool, reason: str) -> None:
    """Healthy only when in recovery, replaying, and within both lag bounds; always a reason."""
    state = judge("r", probe, primary, 0.0, 5.0, 1024)
    assert (state.healthy, state.reason) == (healthy, reason)


def test_a_replica_behind_the_primary_is_never_zero_seconds_behind() -> None:
    """Behind the primary (a stopped WAL receiver leaves received == replayed): the lag is
    the age of its last replayed commit, not 0."""
    state = judge("r", Probe(True, 1000, 8.0), 1000 + 64, 0.0, 5.0, 1 << 24)
    assert (state.healthy, state.lag_seconds) == (False, 8.0)


def test_the_lag_is_the_smallest_honest_bound() -> None:
    """Seen at or past the primary's position 1.5 s ago: lag 1.5 s, though the last replayed
    commit is older (an idle primary, then a write)."""
    state = judge("r", Probe(True, 1000, 60.0), 1100, 10.0, 5.0, 1 << 24, seen_current_at=8.5)
    assert (state.healthy, state.lag_seconds) == (True, 1.5)


class Probes:
    """A replica's answers, set by the test (a stand-in for the SQL round trip)."""

    def __init__(self) -> None:
        self.answers: dict[str, Probe | Exception] = {}
        self.calls: list[str] = []

    def __call__(self, alias: str) -> Probe:
        self.calls.append(alias)
        answer = self.answers[alias]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _monitor(clock: FakeClock, probes: Probes, **raw: object) -> ReplicaMonitor:
    return ReplicaMonitor(
        RouterConfig.from_settings({"REPLICAS": ["r1", "r2"], **raw}),
        clock=clock,
        probe=probes,
        read_primary_lsn=lambda alias: 5000,
    )


def test_health_is_probed_at_most_once_per_ttl() -> None:
    """Within HEALTH_TTL the cached states are returned; after it, probed again."""
    clock, probes = FakeClock(), Probes()
    probes.answers = {"r1": Probe(True, 5000, 0.0), "r2": Probe(True, 5000, 0.0)}
    monitor = _monitor(clock, probes, HEALTH_TTL=2)
    assert [s.healthy for s in monitor.states()] == [True, True]
    clock.advance(1.9)
    monitor.states()
    assert probes.calls == ["r1", "r2"]
    clock.advance(0.2)
    probes.answers["r2"] = ConnectionError("refused")
    assert [(s.alias, s.healthy) for s in monitor.states()] == [("r1", True), ("r2", False)]
    assert probes.calls == ["r1", "r2", "r1", "r2"]


def test_invalidate_forces_the_next_probe() -> None:
    """After invalidate() the next read probes even inside the TTL."""
    clock, probes = FakeClock(), Probes()
    probes.answers = {"r1": Probe(True, 5000, 0.0), "r2": Probe(True, 5000, 0.0)}
    monitor = _monitor(clock, probes, HEALTH_TTL=60)
    monitor.states()
    monitor.invalidate()
    monitor.states()
    assert len(probes.calls) == 4


def test_lag_bytes_are_measured_against_the_primary() -> None:
    """lag_bytes = the primary's position - the replica's replay position."""
    clock, probes = FakeClock(), Probes()
    probes.answers = {"r1": Probe(True, 4000, 0.0), "r2": Probe(True, 5000, 0.0)}
    states = _monitor(clock, probes, MAX_LAG_BYTES=500).states()
    assert [(s.lag_bytes, s.healthy) for s in states] == [(1000, False), (0, True)]


def test_a_failing_replica_callable_does_not_break_reads() -> None:
    """A callable that raises is logged; the monitor still answers (its last list: none)."""
    clock, probes = FakeClock(), Probes()
    monitor = ReplicaMonitor(
        # read_registry needs an argument: calling it bare raises TypeError.
        RouterConfig.from_settings(
            {"REPLICAS": "senex_scale.contrib.django.registry.read_registry"}
        ),
        clock=clock,
        probe=probes,
        read_primary_lsn=lambda alias: None,
    )
    assert monitor.states() == []
    assert probes.calls == []


def test_an_unknown_alias_is_down_not_an_exception() -> None:
    """A probe that raises for any reason marks the replica down with the reason."""
    clock, probes = FakeClock(), Probes()
    probes.answers = {"r1": KeyError("r1"), "r2": Probe(True, 5000, 0.0)}
    states = _monitor(clock, probes).states()
    assert [(s.alias, s.healthy, s.reason) for s in states] == [
        ("r1", False, "down: 'r1'"),
        ("r2", True, "ok"),
    ]


def test_the_monitor_remembers_when_each_replica_was_current() -> None:
    """A replica that stops replaying is dated by the last probe that found it current."""
    clock, probes = FakeClock(), Probes()
    positions = iter([5000, 6000, 7000])
    monitor = ReplicaMonitor(
        RouterConfig.from_settings({"REPLICAS": ["r1"], "HEALTH_TTL": 1}),
        clock=clock,
        probe=probes,
        read_primary_lsn=lambda alias: next(positions),
    )
    probes.answers = {"r1": Probe(True, 5000, None)}
    assert [s.lag_seconds for s in monitor.states()] == [0.0]
    clock.advance(2)
    assert [(s.lag_seconds, s.healthy) for s in monitor.states()] == [(2.0, True)]
    clock.advance(4)
    assert [(s.lag_seconds, s.healthy) for s in monitor.states()] == [(6.0, False)]


def test_a_pin_lasts_at_least_the_lag_bound_plus_two_ttls() -> None:
    """PIN_SECONDS shorter than MAX_LAG_SECONDS + 2 HEALTH_TTL (or a replica's own bound) is
    raised to it: after that, any replica the router may read holds the write."""
    from senex_scale.contrib.django.router import ReplicaRouter

    raw = {"MAX_LAG_SECONDS": 5, "HEALTH_TTL": 2, "PIN_SECONDS": 3}
    assert ReplicaRouter(RouterConfig.from_settings(raw)).pin_seconds() == 9.0
    raw["PIN_SECONDS"] = 30
    assert ReplicaRouter(RouterConfig.from_settings(raw)).pin_seconds() == 30.0
    raw["REPLICAS"] = [{"alias": "far", "host": "h", "max_lag_seconds": 40}]
    assert ReplicaRouter(RouterConfig.from_settings(raw)).pin_seconds() == 44.0
