"""What an action is given and how it is run: one call, a result line for the audit log.

An action raises ``TemporaryError`` (worth retrying at the next tick) or ``PermanentError``;
its result string goes into the decision's detail, redacted like every log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Why the action runs: its rule, pool, reasons, and when."""

    rule: str
    pool: str | None
    priority: str
    reasons: tuple[str, ...]
    at: float


class Action(Protocol):
    """Runs one kind of action (the spec's model is given to the constructor)."""

    def run(self, context: ActionContext) -> str:
        """Do it; a one-line result for the audit log."""
        ...
