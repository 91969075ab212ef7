"""The public test helpers: bounded waits and free ports."""

from __future__ import annotations

import socket

import pytest

from senex_scale.testing import free_port, wait_until


def test_wait_until_returns_once_true() -> None:
    """A check that turns true on its third call ends the wait."""
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), 5, "the third call", interval=0)


def test_wait_until_times_out_naming_what() -> None:
    """A check that never turns true fails with the thing waited for in the message."""
    with pytest.raises(AssertionError, match=r"timed out after 0\.05s waiting for the server"):
        wait_until(lambda: False, 0.05, "the server", interval=0.01)


def test_wait_until_ignores_only_the_listed_errors() -> None:
    """Listed exceptions mean "not yet"; others propagate."""
    attempts = iter([OSError(), True])

    def check() -> bool:
        value = next(attempts)
        if isinstance(value, Exception):
            raise value
        return bool(value)

    wait_until(check, 5, "a reachable server", ignore=(OSError,), interval=0)
    with pytest.raises(KeyError):
        wait_until(lambda: {}["x"], 5, "a key", ignore=(OSError,))


def test_free_port_can_be_bound() -> None:
    """The port returned is free to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
