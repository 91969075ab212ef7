"""Run a runbook command: an argv list (never a shell string), bounded by its timeout.

The command gets ``SENEX_RULE``, ``SENEX_POOL``, ``SENEX_PRIORITY`` and ``SENEX_REASONS`` (one
reason per line) in its environment. A non-zero exit is a ``PermanentError`` carrying the last
lines of its stderr (redacted by the log processor like everything else); a timeout kills it
and is a ``TemporaryError``.
"""

from __future__ import annotations

import os
import subprocess

from senex_scale.actions.base import ActionContext
from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.policy.models import Runbook
from senex_scale.telemetry.logs import redact_text


class RunbookAction:
    """The ``runbook`` action."""

    def __init__(self, spec: Runbook) -> None:
        self.spec = spec

    def run(self, context: ActionContext) -> str:
        env = os.environ | {
            "SENEX_RULE": context.rule,
            "SENEX_POOL": context.pool or "",
            "SENEX_PRIORITY": context.priority,
            "SENEX_REASONS": "\n".join(context.reasons),
        }
        argv = list(self.spec.argv)
        try:
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.spec.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise PermanentError(f"runbook {context.rule}: {argv[0]}: not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise TemporaryError(
                f"runbook {context.rule}: {argv[0]} timed out after {self.spec.timeout:g}s"
            ) from exc
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise PermanentError(
                f"runbook {context.rule}: {argv[0]} exited {done.returncode}: {redact_text(tail)}"
            )
        last = done.stdout.strip().splitlines()[-1:] or ["(no output)"]
        return f"{argv[0]} exited 0: {redact_text(last[0])[:200]}"
