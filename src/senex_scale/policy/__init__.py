"""The policy file: validated, frozen models and the loader that reports every problem."""

from senex_scale.policy.loading import (
    default_policy_text,
    load_default,
    load_policy,
    parse_policy,
)
from senex_scale.policy.models import (
    ActionRule,
    Condition,
    Policy,
    Pool,
    PredictiveRule,
    Priority,
    Rule,
    Schedule,
    TargetRule,
    ThresholdRule,
)

__all__ = [
    "ActionRule",
    "Condition",
    "Policy",
    "Pool",
    "PredictiveRule",
    "Priority",
    "Rule",
    "Schedule",
    "TargetRule",
    "ThresholdRule",
    "default_policy_text",
    "load_default",
    "load_policy",
    "parse_policy",
]
