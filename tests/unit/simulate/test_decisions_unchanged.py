"""Speed-ups keep every decision: whole-run digests of every plan, pinned before issue 16's.

The decide path was made faster (issue 16, "a month in under 10 s") without changing any
decision. This pins that: a frozen copy of the default policy as it was before the speed-up
(``tests/golden/policy-before-16.toml``) and the exact HPA baseline run over seeded suite
traces that exercise thresholds near their lines, a flash crash, dropouts and stuck
metrics; every tick's plan (each decision with its reasons, each rule's status and the
memory's scale events) is hashed, and the digests must equal those the code before the
speed-up produced (``tests/golden/decisions-16.json``). The predictive rules' forecaster got
the same treatment (issue 17: ``mape``, ``level``, the session lookup and the minutes ahead
kept between ticks): ``tests/golden/policy-predictive.toml``, the default of 2026-12-03 with
its recommended predictive rules on, over a seeded slow week (five sessions: the rules learn
three and act on two), hashed with every forecast, against the code before those caches.
After an intended change of
behaviour, regenerate the file and review why::

    SENEX_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/simulate/test_decisions_unchanged.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from senex_scale.core import Observation
from senex_scale.core.decide import Plan
from senex_scale.policy.loading import load_policy
from senex_scale.simulate.baselines import hpa_policy
from senex_scale.simulate.engine import PolicyController, run
from senex_scale.simulate.generate import family_trace
from senex_scale.simulate.model import SimModel

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "tests" / "golden" / "policy-before-16.toml"
GOLDEN = ROOT / "tests" / "golden" / "decisions-16.json"
PREDICTIVE = ROOT / "tests" / "golden" / "policy-predictive.toml"
CASES = ("plateau-4", "flash-crash-3", "dropouts-11", "stuck-12")
RUNS = [(case, name) for case in CASES for name in ("policy", "hpa")] + [
    ("slow-week-8", "predictive")
]


class _Hashing:
    """Wraps a Decider: every plan it returns goes into a running digest."""

    def __init__(self, decider: object) -> None:
        self.inner = decider
        self.digest = hashlib.sha256()
        self.ticks = 0

    def decide(self, observation: Observation, now: float) -> Plan:
        plan: Plan = self.inner.decide(observation, now)  # type: ignore[attr-defined]
        parts = [repr(now)]
        parts += [json.dumps(d.as_dict(), sort_keys=True) for d in plan.decisions]
        parts += [repr(tuple(s)) for s in plan.rules]
        parts += [repr(tuple(f)) for f in plan.forecasts]
        parts += [
            repr((name, m.events, sorted(m.recommendations.items())))
            for name, m in sorted(plan.memory.pools.items())
        ]
        self.digest.update("\n".join(parts).encode())
        self.ticks += 1
        return plan


def _digest(case: str, name: str) -> dict[str, object]:
    family, seed = case.rsplit("-", 1)
    trace, faults = family_trace(family, int(seed))
    base = load_policy(PREDICTIVE if name == "predictive" else POLICY)
    policy = hpa_policy(base) if name == "hpa" else base
    grid = trace.resample(policy.controller.interval)
    controller = PolicyController(name, policy, detail=True)
    hashing = _Hashing(controller.decider)
    controller.decider = hashing  # type: ignore[assignment]
    result = run(controller, grid, policy, SimModel(), faults=faults)
    return {
        "ticks": hashing.ticks,
        "events": len(result.events),
        "sha256": hashing.digest.hexdigest(),
    }


@pytest.fixture(scope="module")
def digests() -> tuple[dict[str, object], dict[str, object]]:
    """(expected from the golden file, actual from this run); writes the file on request."""
    actual = {f"{case} {name}": _digest(case, name) for case, name in RUNS}
    if os.environ.get("SENEX_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(actual, indent=2) + "\n", encoding="utf-8")
        pytest.skip(f"SENEX_UPDATE_GOLDEN=1: wrote {GOLDEN.relative_to(ROOT)}")
    return json.loads(GOLDEN.read_text(encoding="utf-8")), actual


@pytest.mark.parametrize(("case", "name"), RUNS)
def test_every_plan_as_before(
    digests: tuple[dict[str, object], dict[str, object]], case: str, name: str
) -> None:
    """Every tick's plan (decisions, reasons, statuses, memory) hashes as before the speed-up."""
    expected, actual = digests
    assert actual[f"{case} {name}"] == expected[f"{case} {name}"]


def test_the_cases_act() -> None:
    """The pinned runs are not trivial: each controller scales on every case."""
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert all(int(v["events"]) > 0 for v in expected.values()), expected
