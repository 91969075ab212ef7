"""One exception root for everything Senex Scale raises on purpose.

The CLI catches ``SenexError`` and prints ``Error: <message>`` with the exit code the class
carries; anything else is a bug and keeps its traceback.

::

    SenexError                       exit 1
    ├── PolicyError                  exit 2  the policy file is unreadable or invalid (all problems)
    ├── InputError                   exit 2  another input file (observation, trace) is invalid
    ├── TemporaryError               exit 1  worth retrying: a source timed out, a unit is busy
    │   └── SourceError                      a metric source could not answer
    └── PermanentError               exit 1  retrying will not help: a unit does not exist
        └── FencedError                      another controller took the lead: stop acting

Temporary and permanent failures are separate classes so that retry logic can tell them apart
without parsing messages (the kopf ``TemporaryError``/``PermanentError`` split).
"""

from __future__ import annotations


class SenexError(Exception):
    """Root of all deliberate Senex Scale errors."""

    exit_code = 1


class PolicyError(SenexError):
    """A policy file could not be read or failed validation.

    ``problems`` holds every problem found, each already prefixed with its dotted path, so a
    user fixes the whole file in one pass instead of one error per run.
    """

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        body = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {count} {noun}\n{body}")


class InputError(SenexError):
    """An input file other than the policy (observation, trace) is invalid."""

    exit_code = 2


class TemporaryError(SenexError):
    """A failure that may go away on retry."""


class SourceError(TemporaryError):
    """A metric source could not answer; the core treats the metric as missing, never as zero."""

    def __init__(self, message: str, *, temporary: bool = True) -> None:
        super().__init__(message)
        self.temporary = temporary


class PermanentError(SenexError):
    """A failure that retrying will not fix."""


class FencedError(PermanentError):
    """This controller's fencing token is no longer the newest: another one leads. Whoever
    gets it stops acting at once (between two steps of a sequence) and stands by."""
