"""Plugin names resolve lazily to classes; anything else is a clear PermanentError."""

from __future__ import annotations

import pytest

from senex_scale.errors import PermanentError
from senex_scale.plugins import resolve


def test_known_name_resolves_to_its_class() -> None:
    """A registered name imports its module and returns the class."""
    cls = resolve("balancer", "haproxy")
    assert cls.__name__ == "HAProxyBalancer"


def test_unknown_name_suggests_the_closest() -> None:
    """A typo gets a did-you-mean and the list of known names."""
    with pytest.raises(
        PermanentError, match=r'unknown source type "promethus" \(did you mean "prometheus"\?\)'
    ):
        resolve("source", "promethus")


def test_simulator_only_source_is_refused_outside_the_simulator() -> None:
    """The simulated source names no real class: a PermanentError, not an AttributeError."""
    with pytest.raises(PermanentError, match="exists only inside senex-scale simulate"):
        resolve("source", "simulated")
