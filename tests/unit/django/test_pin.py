"""LSNs and read-your-writes pins: parsing, tokens, scopes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from senex_scale.contrib.django.router import (
    Pin,
    adopt_pin,
    apin_scope,
    current_pin,
    format_lsn,
    parse_lsn,
    pin_scope,
    pin_to_primary,
    pin_token,
    with_pin_scope,
)


def test_lsns_parse_as_64_bit_positions() -> None:
    """'16/B374D848' is 0x16 << 32 | 0xB374D848, and back."""
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn("0/0") == 0
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")


@pytest.mark.parametrize("text", ["", "16", "x/1", "1/2/3", "123456789/0"])
def test_malformed_lsns_are_rejected(text: str) -> None:
    """Anything but two hex halves is a ValueError naming the input."""
    with pytest.raises(ValueError, match="is not a PostgreSQL LSN"):
        parse_lsn(text)


def test_pin_tokens_round_trip() -> None:
    """Resolved and pending pins survive a token (cookie, header, message)."""
    for pin in (Pin(lsn=12345, until=100.5), Pin(lsn=None, until=7.0)):
        assert Pin.from_token(pin.token()) == pin


@pytest.mark.parametrize("token", [None, "", "garbage", "zz/1@5", "-@nan", "-@", "1/2"])
def test_bad_tokens_are_no_pin(token: str | None) -> None:
    """A forged or broken token never raises: it is no pin."""
    assert Pin.from_token(token) is None


def test_a_pin_is_alive_until_its_time() -> None:
    """Pending and resolved pins alike end at `until` (the router makes that long enough for
    every replica within the lag bound to hold the write), never when replicas catch up."""
    assert Pin(None, until=10).alive(9.9)
    assert not Pin(None, until=10).alive(10)
    assert Pin(5, until=10).alive(9.9)
    assert not Pin(5, until=10).alive(10)


def test_pin_scope_isolates_and_restores() -> None:
    """Inside a scope the outer pin is invisible; afterwards it is back."""
    with pin_scope():
        pin_to_primary(5, clock=lambda: 100.0)
        outer = current_pin()
        with pin_scope():
            assert current_pin() is None
            pin_to_primary(1, clock=lambda: 0.0)
        assert current_pin() == outer


def test_adopting_keeps_the_stricter_pin() -> None:
    """A handed-over pin merges: the larger LSN, the later deadline; pending beats resolved."""
    with pin_scope(Pin(lsn=10, until=50).token()):
        adopt_pin(Pin(lsn=20, until=40).token(), clock=lambda: 0.0)
        assert current_pin() == Pin(lsn=20, until=50)
        adopt_pin(Pin(lsn=None, until=60).token(), clock=lambda: 0.0)
        assert current_pin() == Pin(lsn=None, until=60)
        adopt_pin("junk", clock=lambda: 0.0)
        assert pin_token() == Pin(lsn=None, until=60).token()


def test_an_expired_token_is_not_adopted() -> None:
    """A pending pin past its time is ignored."""
    with pin_scope():
        adopt_pin(Pin(lsn=None, until=5).token(), clock=lambda: 6.0)
        assert current_pin() is None


def test_threads_do_not_share_pins() -> None:
    """A pin set in one thread is not seen by another (context variables)."""
    seen: list[object] = []
    with pin_scope():
        pin_to_primary(60)
        thread = threading.Thread(target=lambda: seen.append(current_pin()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_with_pin_scope_wraps_sync_and_async_functions() -> None:
    """Each call starts without a pin and leaves none behind."""

    @with_pin_scope
    def task() -> object:
        before = current_pin()
        pin_to_primary(60)
        return before

    @with_pin_scope
    async def handler() -> object:
        before = current_pin()
        pin_to_primary(60)
        return before

    with pin_scope():
        pin_to_primary(60)
        outer = current_pin()
        assert task() is None
        assert asyncio.run(handler()) is None
        assert current_pin() == outer


def test_apin_scope_isolates_tasks() -> None:
    """``async with apin_scope()`` restores the outer pin."""

    async def main() -> tuple[object, object]:
        async with apin_scope(Pin(lsn=1, until=0).token()):
            inner = current_pin()
        return inner, current_pin()

    with pin_scope():
        assert asyncio.run(main()) == (Pin(lsn=1, until=0), None)
