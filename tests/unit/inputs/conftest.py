"""Running ``senex-scale`` in this process on generated input files, and judging the outcome.

Property tests make thousands of command runs affordable only in-process (a fresh interpreter
per run costs about a second); ``senex_scale.cli.main`` is called exactly as the console script
calls it, with stdout and stderr captured.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from senex_scale import cli

# What a message in the user's terms never contains: a Python class, type or traceback.
LEAKS = re.compile(
    r"Traceback|File \"|_SecretRef|ObservationFile|valid dictionary|instance of [A-Z_]|"
    r"a valid tuple|\bNone\b|pydantic|\bdict\b|\btuple\b|\bstr\b|\bfloat\b|ValueError"
)


@dataclass(frozen=True)
class Run:
    """One command run: its exit code and output."""

    code: int
    stdout: str
    stderr: str

    def assert_refused(self, *names: str) -> None:
        """Exit 2 with one ``Error:`` message naming every one of ``names``, in user terms."""
        assert self.code == 2, (self.code, self.stderr)
        text = "".join(
            line
            for line in self.stderr.splitlines(keepends=True)
            if not line.startswith("Warning: ")
        )
        assert text.startswith("Error: "), text
        assert text.endswith("\n"), text
        assert text.count("Error: ") == 1, text
        assert not LEAKS.search(text), text
        for name in names:
            assert name in text, (name, text)


def invoke(argv: Sequence[str]) -> Run:
    """``senex-scale ARGV`` in this process; an exception that escapes fails the test."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    old = sys.argv
    sys.argv = ["senex-scale", *argv]
    try:
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("always")
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = old
    return Run(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def run() -> Callable[[Sequence[str]], Run]:
    """Run the command line in this process (session scope: property tests reuse it)."""
    return invoke
