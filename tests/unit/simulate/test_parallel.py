"""Pools run apart: a policy's pools in separate tasks give exactly the whole run's result."""

from __future__ import annotations

import numpy as np
import pytest

from senex_scale.policy import load_default
from senex_scale.simulate.engine import RunResult
from senex_scale.simulate.generate import generate
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.runner import _merge, _run_one


def _same(a: RunResult, b: RunResult) -> None:
    assert list(a.pools) == list(b.pools)
    assert a.events == b.events
    for pool in a.pools:
        x, y = a.pools[pool], b.pools[pool]
        assert x.actions == y.actions, pool
        for field in ("demand", "supply", "running", "violation"):
            assert np.array_equal(getattr(x, field), getattr(y, field)), (pool, field)


@pytest.mark.parametrize("name", ["policy", "hpa"])
def test_pools_apart_equal_the_whole_run(name: str) -> None:
    """Per-pool tasks, merged, equal one run over every pool (events, supply, actions)."""
    policy = load_default()
    grid = generate("news-day", days=1, step=15).resample(15)
    model = SimModel()
    whole = _run_one(0, name, grid, policy, model, "America/New_York")
    parts = [
        _run_one(0, name, grid, policy, model, "America/New_York", pool) for pool in policy.pools
    ]
    assert whole.events, "the day must make the controller act"
    _same(whole, _merge(name, parts))
