"""VersionedCache on Django's in-memory cache backend (no server): versions and markers."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache

from senex_scale.contrib.django.cache import VersionedCache
from senex_scale.contrib.django.router import current_pin
from senex_scale.errors import InputError
from senex_scale.testing import FakeClock


def _cache(name: str, **kwargs: Any) -> VersionedCache:
    return VersionedCache("positions", cache=LocMemCache(name, {}), **kwargs)


def test_an_invalidation_retires_the_entry() -> None:
    """After invalidate_now the next read computes again, under the new version."""
    positions = _cache("retire")
    calls: list[int] = []

    def compute() -> list[int]:
        calls.append(1)
        return [len(calls)]

    assert positions.get_or_set(1, compute) == [1]
    assert positions.get_or_set(1, compute) == [1]
    version = positions.version(1)
    assert positions.invalidate_now(1) == version + 1
    assert positions.get(1) == (False, None)
    assert positions.get_or_set(1, compute) == [2]
    assert positions.get_or_set(2, compute) == [3]  # other ids are separate


def test_none_is_a_cacheable_value() -> None:
    """A computed None is stored, not mistaken for a miss."""
    positions = _cache("none")
    calls: list[int] = []
    positions.get_or_set(1, lambda: calls.append(1))
    positions.get_or_set(1, lambda: calls.append(1))
    assert calls == [1]
    assert positions.get(1) == (True, None)


def test_a_lost_counter_restarts_above_every_old_version() -> None:
    """Versions start from the clock in ms, so an evicted counter cannot revive old entries."""
    clock = FakeClock(now=1000.0)
    positions = _cache("evict", clock=clock)
    assert positions.version(1) == 1_000_000
    positions.invalidate_now(1)
    positions.cache.delete("senex:positions:1:v")
    clock.advance(1)
    assert positions.version(1) == 1_001_000


def test_a_refill_right_after_an_invalidation_is_pinned() -> None:
    """While the fresh marker lives, the compute runs with a pin (primary or caught-up
    replica); afterwards without one, and the caller's own pin is untouched."""
    clock = FakeClock()
    positions = _cache("fresh", fresh_seconds=10)
    seen: list[object] = []
    positions.get_or_set(1, lambda: seen.append(current_pin()))
    positions.invalidate_now(1)
    positions.get_or_set(1, lambda: seen.append(current_pin()))
    assert seen[0] is None
    assert seen[1] is not None
    assert current_pin() is None
    other = _cache("nofresh", fresh_seconds=0, clock=clock)
    other.invalidate_now(1)
    other.get_or_set(1, lambda: seen.append(current_pin()))
    assert seen[2] is None


def test_a_waiting_reader_gets_the_holders_result() -> None:
    """A reader that finds the lock taken waits for the entry instead of computing."""
    clock = FakeClock()
    positions = _cache("wait", clock=clock, sleep=clock.sleep, lock_timeout=1)
    version = positions.version(1)
    positions.cache.add(f"senex:positions:1:{version}:lock", "someone", 60)
    positions.cache.set(f"senex:positions:1:{version}:d", ["theirs"], 60)
    assert positions.get_or_set(1, lambda: "mine") == "theirs"


def test_a_reader_computes_itself_when_the_holder_never_finishes() -> None:
    """After lock_timeout the waiting reader computes (bounded wait)."""
    clock = FakeClock()
    positions = _cache("stuck", clock=clock, sleep=clock.sleep, lock_timeout=1)
    version = positions.version(1)
    positions.cache.add(f"senex:positions:1:{version}:lock", "someone", 60)
    start = clock.now
    assert positions.get_or_set(1, lambda: "mine") == "mine"
    assert clock.now - start == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"namespace": "a:b"}, "namespace: 'a:b' must be non-empty"),
        ({"namespace": "p", "timeout": 0}, "timeout: 0 must be a number of seconds above 0"),
        ({"namespace": "p", "lock_timeout": -1}, "lock_timeout: -1 must be"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], message: str) -> None:
    """Construction errors name the argument."""
    with pytest.raises(InputError, match=message):
        VersionedCache(**kwargs)
