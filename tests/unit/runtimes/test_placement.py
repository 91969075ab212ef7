"""Placement on several hosts: spread on scale-out, the fullest host first on scale-in."""

from __future__ import annotations

from senex_scale.runtimes.placement import choose_host, removal_order

ORDER = ["web01", "web02", "web03"]


def everyone(_host: str) -> bool:
    return True


def test_the_host_with_the_fewest_gets_the_new_instance() -> None:
    """Spread: the reachable host with the fewest instances."""
    assert choose_host(ORDER, {"web01": 2, "web02": 1, "web03": 2}, {}, everyone) == "web02"


def test_a_tie_goes_to_the_host_listed_first() -> None:
    """Equal counts: the order of the pool's hosts decides."""
    assert choose_host(ORDER, {"web01": 1, "web02": 1, "web03": 1}, {}, everyone) == "web01"


def test_a_host_at_its_maximum_is_skipped() -> None:
    """A per-host maximum is never exceeded."""
    maxima = {"web01": 1, "web02": 1, "web03": None}
    assert choose_host(ORDER, {"web01": 1, "web02": 1, "web03": 5}, maxima, everyone) == "web03"


def test_no_host_has_room() -> None:
    """Every host full or unreachable: None (the caller says why)."""
    maxima = {"web01": 1, "web02": 1, "web03": 1}
    counts = {"web01": 1, "web02": 0, "web03": 1}
    assert choose_host(ORDER, counts, maxima, lambda h: h != "web02") is None


def test_an_unreachable_host_gets_nothing() -> None:
    """Unreachable hosts are skipped even when emptiest."""
    assert choose_host(ORDER, {"web01": 3, "web02": 0}, {}, lambda h: h == "web01") == "web01"


def test_scale_in_takes_from_the_fullest_host_in_turn() -> None:
    """Two out of web01 (3) and web02 (2): one from web01, then the tie -> web02 (listed last)."""
    where = {1: "web01", 2: "web02", 3: "web01", 4: "web02", 5: "web01"}
    chosen = removal_order([5, 4, 3, 2, 1], where.get, {"web01": 3, "web02": 2}, ORDER, 2)
    assert chosen == [5, 4]


def test_scale_in_keeps_the_callers_order_within_a_host() -> None:
    """Within the fullest host, the caller's first candidate goes."""
    where = {1: "web01", 3: "web01", 2: "web02"}
    assert removal_order([3, 1, 2], where.get, {"web01": 2, "web02": 1}, ORDER, 1) == [3]


def test_scale_in_of_more_than_there_are() -> None:
    """Asking for more than the candidates gives them all."""
    where = {1: "web01", 2: "web02"}
    assert sorted(removal_order([1, 2], where.get, {"web01": 1, "web02": 1}, ORDER, 5)) == [1, 2]
