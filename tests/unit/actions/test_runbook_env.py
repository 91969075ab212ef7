"""A runbook's command gets an explicit environment, not the controller's.

The controller's environment holds its secrets (the status page's tokens, every ``*_env``
password of the sources). A runbook is a command the policy names; it gets ``PATH``, the
decision (``SENEX_*``) and the variables the policy lists in ``env``, nothing else. Run for
real: the command writes its environment to a file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from senex_scale.actions.base import ActionContext
from senex_scale.actions.runbook import RunbookAction
from senex_scale.errors import PolicyError
from senex_scale.policy import parse_policy
from senex_scale.policy.models import Runbook

CONTEXT = ActionContext("pg-cpu", "django", "high", ("cpu 91 > 80 for 10m", "second"), 1.0)


def environment_of(spec: Runbook, out: Path) -> dict[str, str]:
    RunbookAction(spec).run(CONTEXT)
    lines = out.read_bytes().split(b"\0")
    return dict(line.decode().split("=", 1) for line in lines if line)


def runbook(out: Path, **extra: object) -> Runbook:
    return Runbook.model_validate({"argv": ["sh", "-c", f'env -0 > "{out}"'], **extra})


def test_the_controllers_secrets_stay_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens and passwords in the controller's environment do not reach the command; PATH
    and the decision do."""
    monkeypatch.setenv("SENEX_STATUS_TOKEN", "tok-Secret-1")
    monkeypatch.setenv("PGPASSWORD", "pw-Secret-2")
    out = tmp_path / "env"
    env = environment_of(runbook(out), out)
    assert "SENEX_STATUS_TOKEN" not in env
    assert "PGPASSWORD" not in env
    assert env["PATH"]
    assert env["SENEX_RULE"] == "pg-cpu"
    assert env["SENEX_POOL"] == "django"
    assert env["SENEX_PRIORITY"] == "high"
    assert env["SENEX_REASONS"] == "cpu 91 > 80 for 10m\nsecond"
    assert set(env) <= {"PATH", "SENEX_RULE", "SENEX_POOL", "SENEX_PRIORITY", "SENEX_REASONS",
                        "PWD", "SHLVL", "_"}  # fmt: skip  # the last three: sh's own


def test_the_policy_names_what_else_is_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env = ["ANSIBLE_CONFIG", "HOME"]: those (when set) and nothing more."""
    monkeypatch.setenv("ANSIBLE_CONFIG", "/etc/ansible/senex.cfg")
    monkeypatch.setenv("HOME", "/var/lib/senex")
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    monkeypatch.setenv("OTHER_SECRET", "x")
    out = tmp_path / "env"
    env = environment_of(runbook(out, env=["ANSIBLE_CONFIG", "HOME", "NOT_SET_HERE"]), out)
    assert env["ANSIBLE_CONFIG"] == "/etc/ansible/senex.cfg"
    assert env["HOME"] == "/var/lib/senex"
    assert "NOT_SET_HERE" not in env
    assert "OTHER_SECRET" not in env


def test_env_names_are_checked_at_validate() -> None:
    """A name that is not a variable name is refused with its path."""
    text = """
[[rules]]
name = "r"
metric = { source = "s", query = "q" }
when = { above = 1 }
action = { type = "runbook", argv = ["true"], env = ["HOME", "BAD NAME"] }

[sources.s]
type = "disk"
"""
    with pytest.raises(PolicyError, match=r"rules\[0\]\.action\.env\[1\]"):
        parse_policy(text)
