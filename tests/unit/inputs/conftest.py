"""Running ``senex-scale`` in this process on generated input files, and judging the outcome.

Property tests make thousands of command runs affordable only in-process (a fresh interpreter
per run costs about a second). The runner and the judge are ``senex_scale.testing_inputs``'s,
shared with the fuzz run (``bench/fuzz_inputs.py``), so both hold messages to one standard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from senex_scale import testing_inputs


@dataclass(frozen=True)
class Run:
    """One command run: its exit code and output."""

    code: int
    stdout: str
    stderr: str

    def assert_refused(self, *names: str) -> None:
        """Exit 2 with one ``Error:`` message naming every one of ``names``, in user terms."""
        assert self.code == 2, (self.code, self.stderr)
        problem = testing_inputs.message_problem(self.stderr, names)
        assert not problem, (problem, self.stderr)


def invoke(argv: Sequence[str]) -> Run:
    """``senex-scale ARGV`` in this process; an exception that escapes fails the test."""
    result = testing_inputs.invoke(argv)
    if result.escaped is not None:
        raise result.escaped
    assert result.code is not None
    return Run(result.code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def run() -> Callable[[Sequence[str]], Run]:
    """Run the command line in this process (session scope: property tests reuse it)."""
    return invoke
