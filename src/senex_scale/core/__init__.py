"""The pure decision core: no I/O, no clock, no drivers. Time is always an argument.

``decide(policy, observation, now)`` turns what was observed (instances, samples, errors, the
controller's memory) into decisions that carry their reasons. The controller and the
simulator both call it; nothing else implements the rules.
"""

from senex_scale.core.decide import Decider, Decision, Plan, decide
from senex_scale.core.state import (
    Instance,
    InstanceState,
    Memory,
    Observation,
    PoolMemory,
    Sample,
    ScaleEvent,
)

__all__ = [
    "Decider",
    "Decision",
    "Instance",
    "InstanceState",
    "Memory",
    "Observation",
    "Plan",
    "PoolMemory",
    "Sample",
    "ScaleEvent",
    "decide",
]
