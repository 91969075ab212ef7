"""Our code never draws from the process's global ``random`` generator.

The global generator belongs to whoever seeded it: a test's ``random.seed``, Hypothesis (which
checks that nothing changes its state while a strategy draws, and fails the test when a thread
does). CI failed so: a thread that drew from it ran while Hypothesis drew examples. Each user
holds its own ``random.Random()`` instead.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import senex_scale
from senex_scale.contrib.django.router import ReplicaRouter
from senex_scale.lab.base import free_port_range

SOURCE = Path(senex_scale.__file__).parent
ALLOWED = {"Random", "SystemRandom"}
"""The classes: an instance is its own generator."""


def _global_uses(path: Path, root: Path = SOURCE) -> list[str]:
    """``random.<name>`` (a call or a reference, such as a default argument) and
    ``from random import <name>`` for anything but the classes."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr not in ALLOWED
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno}: random.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            found += [
                f"{path.relative_to(root)}:{node.lineno}: from random import {a.name}"
                for a in node.names
                if a.name not in ALLOWED
            ]
    return found


def test_no_module_draws_from_the_global_generator() -> None:
    """Every module under senex_scale: no use of the global generator's functions."""
    uses = [use for path in sorted(SOURCE.rglob("*.py")) for use in _global_uses(path)]
    assert uses == []


def test_the_check_finds_a_use(tmp_path: Path) -> None:
    """The scan sees a call, a reference and an import (so an empty result means something)."""
    text = "import random\nx = random.random()\nf = random.choice\nfrom random import uniform\n"
    text += "own = random.Random(1)\n"
    (tmp_path / "m.py").write_text(text)
    found = sorted(_global_uses(tmp_path / "m.py", tmp_path))
    assert found == [
        "m.py:2: random.random",
        "m.py:3: random.choice",
        "m.py:4: from random import uniform",
    ]


def test_the_router_and_the_lab_leave_the_global_state_alone() -> None:
    """Choosing a replica and finding free ports: the global state is as it was."""
    before = random.getstate()
    router = ReplicaRouter()
    picks = {router._choose(["a", "b", "c"]) for _ in range(200)}
    free_port_range(2)
    unchanged = random.getstate() == before
    assert unchanged, "the global generator was drawn from"
    assert picks == {"a", "b", "c"}
