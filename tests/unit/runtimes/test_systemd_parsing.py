"""systemctl output recorded in the host lab parses into the right instances and states."""

from __future__ import annotations

from pathlib import Path

import pytest

from senex_scale.runtimes.base import RuntimeInstance, UnitState
from senex_scale.runtimes.systemd import (
    PROPERTIES,
    map_state,
    parse_list_units,
    parse_show,
    record_instance,
)

GOLDEN = Path(__file__).parent / "golden"


def show_records() -> dict[str, dict[str, str]]:
    records = parse_show((GOLDEN / "systemctl-show.txt").read_text())
    return {r["Id"]: r for r in records}


def test_show_output_splits_into_one_record_per_unit() -> None:
    """Ten units asked for, ten records, each with every property asked for."""
    records = parse_show((GOLDEN / "systemctl-show.txt").read_text())
    assert [r["Id"] for r in records] == [
        "web@2.service",
        "web@3.service",
        "web@4.service",
        "slow@1.service",
        "slow@2.service",
        "web@5.service",
        "web@6.service",
        "nope@1.service",
        "slow@3.service",
        "web@99999.service",
    ]
    assert all(set(r) == set(PROPERTIES) for r in records)


def test_value_with_equals_sign_is_kept_whole() -> None:
    """Only the first "=" separates key and value (LoadError and ExecStart contain more)."""
    (record,) = parse_show('Id=a@1.service\nLoadError=x "y=z"\n')
    assert record["LoadError"] == 'x "y=z"'


def test_blank_lines_around_records_are_ignored() -> None:
    """Leading, trailing and repeated blank lines make no empty records."""
    records = parse_show("\n\nId=a@1.service\n\n\n\nId=a@2.service\n\n")
    assert [r["Id"] for r in records] == ["a@1.service", "a@2.service"]


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("web@2.service", RuntimeInstance(2, UnitState.RUNNING, 1795759060.0, 379)),
        ("slow@1.service", RuntimeInstance(1, UnitState.RUNNING, 1795759065.0, 427)),
        ("slow@2.service", RuntimeInstance(2, UnitState.STOPPING, 1795759065.0, 429)),
        ("slow@3.service", RuntimeInstance(3, UnitState.STARTING, None, None)),
        ("web@5.service", RuntimeInstance(5, UnitState.FAILED, None, None)),
        ("web@6.service", RuntimeInstance(6, UnitState.STOPPED, None, None)),
        ("web@99999.service", RuntimeInstance(99999, UnitState.FAILED, None, None)),
    ],
)
def test_recorded_units_map_to_instances(unit: str, expected: RuntimeInstance) -> None:
    """Running, stopping (ExecStop), starting (ExecStartPre), masked, never started, failed."""
    n = int(unit.split("@")[1].split(".")[0])
    assert record_instance(n, show_records()[unit]) == expected


def test_failed_unit_keeps_no_pid_or_start_time() -> None:
    """A failed unit still reports when its last run started; that is not a live process."""
    record = show_records()["web@99999.service"]
    assert record["ExecMainStartTimestamp"] == "@1795759069"
    assert record_instance(99999, record).started_at is None


@pytest.mark.parametrize(
    ("active", "load", "state"),
    [
        ("active", "loaded", UnitState.RUNNING),
        ("reloading", "loaded", UnitState.RUNNING),
        ("refreshing", "loaded", UnitState.RUNNING),
        ("activating", "loaded", UnitState.STARTING),
        ("deactivating", "loaded", UnitState.STOPPING),
        ("inactive", "loaded", UnitState.STOPPED),
        ("maintenance", "loaded", UnitState.STOPPED),
        ("failed", "loaded", UnitState.FAILED),
        ("inactive", "masked", UnitState.FAILED),
        ("inactive", "bad-setting", UnitState.FAILED),
        ("something-new", "loaded", UnitState.FAILED),
    ],
)
def test_active_states_map_onto_unit_states(active: str, load: str, state: UnitState) -> None:
    """Every ActiveState systemd documents, and an unknown one (failed: never assume up)."""
    assert map_state(active, load) is state


def test_list_units_gives_the_unit_names() -> None:
    """The recorded list-units output (one failed unit among running ones)."""
    names = parse_list_units((GOLDEN / "list-units.txt").read_text())
    assert names == ["web@2.service", "web@3.service", "web@4.service", "web@99999.service"]


def test_list_units_skips_a_status_mark() -> None:
    """Some systemd versions print "●" before a failed unit even with --plain."""
    text = "● web@7.service loaded failed failed web 7\n  web@8.service loaded active running w\n"
    assert parse_list_units(text) == ["web@7.service", "web@8.service"]


def test_list_units_of_nothing_is_empty() -> None:
    """No matching unit: empty output (with --no-legend), no names."""
    assert parse_list_units("") == []
