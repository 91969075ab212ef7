"""Every driver declares its settings model: ``validate`` checks its table without building it."""

from __future__ import annotations

import pytest

from senex_scale.plugins import REGISTRY
from senex_scale.settings import SETTINGS, Settings, driver_problems, settings_model

DRIVERS = [
    (kind, name)
    for kind in ("source", "runtime", "balancer")
    for name in REGISTRY[kind]
    if name != "simulated"  # fed by the simulator from the trace: no settings
]


@pytest.mark.parametrize(("kind", "name"), DRIVERS)
def test_every_driver_has_a_settings_model(kind: str, name: str) -> None:
    """Each registered driver names a Settings model in the driver's own module."""
    model = settings_model(kind, name)  # type: ignore[arg-type]
    assert model is not None
    assert issubclass(model, Settings)
    assert SETTINGS[kind][name].split(":")[0] == REGISTRY[kind][name].split(":")[0]  # type: ignore[index]


def test_problems_carry_the_path_in_the_file() -> None:
    """Problems of sources, runtimes and balancers are named where the user finds them."""
    data = {
        "sources": {"prom": {"type": "prometheus", "url": 5}, "q": {"type": "celery-redis"}},
        "pools": {
            "web": {
                "runtime": {"type": "systemd", "unit": "web@{n}.service", "scope": "usr"},
                "balancer": {"type": "haproxy", "socket": "/run/h.sock"},
            },
            "odd": "not a table",
        },
    }
    assert driver_problems(data) == [
        "sources.prom.url: 5: expected a string",
        'pools.web.runtime.scope: "usr": expected one of "system", "user" (did you mean "user"?)',
        "pools.web.balancer.backend: required",
    ]


def test_unknown_types_and_malformed_tables_are_left_to_the_policy() -> None:
    """A table of an unknown type (the policy says "did you mean") is not checked twice."""
    data = {"sources": {"p": {"type": "prometeus", "x": 1}, "n": 5}, "pools": []}
    assert driver_problems(data) == []
