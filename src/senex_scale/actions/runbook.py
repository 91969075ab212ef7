"""Run a runbook command: an argv list (never a shell string), bounded by its timeout.

The command's environment is explicit, never the controller's (which holds the status
page's tokens and the sources' passwords): ``PATH`` (the controller's, or a standard one),
``SENEX_RULE``, ``SENEX_POOL``, ``SENEX_PRIORITY``, ``SENEX_REASONS`` (one reason per line),
and the variables the policy names in the runbook's ``env`` (when set). A non-zero exit is a
``PermanentError`` carrying the last lines of its stderr (redacted by the log processor like
everything else); a timeout kills it and is a ``TemporaryError``.
"""

from __future__ import annotations

import os
import subprocess

from senex_scale.actions.base import ActionContext
from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.policy.models import Runbook
from senex_scale.telemetry.logs import redact_text

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` when the controller has none."""


def runbook_environment(spec: Runbook, context: ActionContext) -> dict[str, str]:
    """What the command's environment holds (see the module docstring)."""
    env = {name: os.environ[name] for name in spec.env if name in os.environ}
    env["PATH"] = os.environ.get("PATH") or DEFAULT_PATH
    env |= {
        "SENEX_RULE": context.rule,
        "SENEX_POOL": context.pool or "",
        "SENEX_PRIORITY": context.priority,
        "SENEX_REASONS": "\n".join(context.reasons),
    }
    return env


class RunbookAction:
    """The ``runbook`` action."""

    def __init__(self, spec: Runbook) -> None:
        self.spec = spec

    def run(self, context: ActionContext) -> str:
        env = runbook_environment(self.spec, context)
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
