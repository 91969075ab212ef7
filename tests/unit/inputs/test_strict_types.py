"""Numbers and booleans are what the file says they are: ``"2"`` is not 2, ``"yes"`` not true.

Pydantic's lax mode turns ``min = "2"`` into 2, ``2.0`` into 2, ``true`` into 1 and ``"yes"`` or
``1`` into True. A quoted number in a policy is usually a mistake (a templating tool that
quoted everything, a value pasted from an environment variable), and accepting it hides the
mistake until the same file is read by something stricter. Every integer, number and boolean
field of every model that reads user input is strict, and the message names the field and
says what was wrong: ``pools.web.min: must be an integer, not the string "2"``.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import BaseModel

from senex_scale.observe import ObservationFile
from senex_scale.policy.models import Policy
from senex_scale.render.inventory import Inventory
from senex_scale.settings import SETTINGS, settings_model
from senex_scale.simulate.model import SimModel
from senex_scale.testing_inputs import (
    POLICY,
    SECRETS,
    inventory_seed,
    observation_seed,
    policy_seed,
    set_path,
    trace_seed,
)


def _user_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = [Policy, Inventory, ObservationFile, SimModel]
    for kind, names in SETTINGS.items():
        for name in names:
            model = settings_model(kind, name)
            assert model is not None
            models.append(model)
    return models


def _lax(node: Any, where: str, guarded: bool = False) -> Iterator[str]:
    """Paths of int, float and bool schemas that coerce (not strict) in a core schema.

    A number directly behind a before-validator is guarded: the validator decides which
    inputs get there (durations, port schemes, steps, observation counts and times).
    """
    if isinstance(node, list | tuple):
        for item in node:
            yield from _lax(item, where, guarded)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in ("int", "float", "bool"):
        if not node.get("strict") and not guarded:
            yield f"{where} ({kind})"
        return
    if kind == "model":
        where = node["cls"].__name__
    keep = kind in ("nullable", "default", "union", "function-after", "definition-ref")
    for key, value in node.items():
        if key == "fields" and kind == "model-fields":
            for name, field in value.items():
                yield from _lax(field, f"{where}.{name}", False)
        elif key in ("schema", "choices", "items_schema", "keys_schema", "values_schema"):
            inner = kind == "function-before" or (guarded and keep)
            yield from _lax(value, where, inner)
        elif key == "definitions":
            yield from _lax(value, where, False)


@pytest.mark.parametrize("model", _user_models(), ids=lambda m: m.__name__)
def test_no_field_coerces_numbers_or_booleans(model: type[BaseModel]) -> None:
    """No integer, number or boolean field of a user-facing model takes "2", 2.0 or "yes"."""
    assert sorted(set(_lax(model.__pydantic_core_schema__, model.__name__))) == []


def _scalar_unions(node: Any, where: str, guarded: bool = False) -> Iterator[str]:
    """Paths of unions with a scalar member (``str | int``) that no before-validator guards.

    Pydantic reports a value that fits no member once per member, under the member's Python
    type name (``fail_timeout.str: ...``, ``fail_timeout.int: ...``): such a field takes its
    value through a before-validator that says in one message what it accepts.
    """
    if isinstance(node, list | tuple):
        for item in node:
            yield from _scalar_unions(item, where, guarded)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "model":
        where = node["cls"].__name__
    if kind == "union" and not guarded:
        members = [c[0] if isinstance(c, tuple) else c for c in node["choices"]]
        while any(m.get("type") == "function-after" for m in members):
            members = [m["schema"] if m.get("type") == "function-after" else m for m in members]
        if any(m.get("type") in ("str", "int", "float", "bool") for m in members):
            yield where
    keep = kind in ("nullable", "default", "union", "function-after", "definition-ref")
    for key, value in node.items():
        if key == "fields" and kind == "model-fields":
            for name, field in value.items():
                yield from _scalar_unions(field, f"{where}.{name}", False)
        elif key in ("schema", "choices", "items_schema", "keys_schema", "values_schema"):
            inner = kind == "function-before" or (guarded and keep)
            yield from _scalar_unions(value, where, inner)
        elif key == "definitions":
            yield from _scalar_unions(value, where, False)


@pytest.mark.parametrize("model", _user_models(), ids=lambda m: m.__name__)
def test_no_scalar_union_reports_python_type_names(model: type[BaseModel]) -> None:
    """A field taking a string or a number (``fail_timeout``, ``nsenter``, ``verify``) checks
    its value first, so a bad one is one message, not one per Python type tried."""
    assert sorted(set(_scalar_unions(model.__pydantic_core_schema__, model.__name__))) == []


# --------------------------------------------------------------------------- the messages


def _policy_problems(run: Any, doc: dict[str, Any]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        result = run(["validate", str(path)])
    result.assert_refused("policy.toml")
    text: str = result.stderr
    return text


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("pools", "web", "min"),
            "2",
            'pools.web.min: must be an integer, not the string "2" (write 2 without quotes)',
        ),
        (("pools", "web", "max"), 4.0, "pools.web.max: must be an integer, not 4.0 (write 4)"),
        (("pools", "web", "max"), True, "pools.web.max: must be an integer, not true"),
        (("pools", "web", "min"), [1], "pools.web.min: must be an integer, not an array"),
        (
            ("schedules", 0, "min"),
            "2",
            'schedules[0].min: must be an integer, not the string "2" (write 2 without quotes)',
        ),
        (
            ("rules", 0, "scale_out", "above"),
            "70",
            'rules[0].scale_out.above: must be a number, not the string "70" '
            "(write 70 without quotes)",
        ),
        (("rules", 1, "target"), True, "rules[1].target: must be a number, not true"),
        (
            ("rules", 1, "tolerance"),
            "0.1",
            "rules[1].tolerance: must be a number (e.g. 0.1) or a table of scale_out and "
            'scale_in, not the string "0.1"',
        ),
        (
            ("controller", "dry_run"),
            "true",
            'controller.dry_run: must be true or false, not the string "true" '
            "(write true without quotes)",
        ),
        (("rules", 0, "enabled"), 1, "rules[0].enabled: must be true or false, not 1"),
        (
            ("pools", "web", "fallback"),
            {"count": "2"},
            'pools.web.fallback.count: must be an integer, not the string "2"',
        ),
        (
            ("pools", "web", "scale_out_limits"),
            [{"instances": "2"}],
            'pools.web.scale_out_limits[0].instances: must be an integer, not the string "2"',
        ),
        (
            ("pools", "web", "balancer", "max_fails"),
            "3",
            'pools.web.balancer.max_fails: must be an integer, not the string "3"',
        ),
        (
            ("pools", "web", "balancer", "max_fails"),
            True,
            "pools.web.balancer.max_fails: must be an integer, not true",
        ),
        (
            ("pools", "web", "port"),
            True,
            'pools.web.port: true is not a port scheme (e.g. "8000 + n"',
        ),
        (
            ("pools", "web", "port"),
            "8000",
            "pools.web.port: '8000' is not a port scheme (e.g. \"8000 + n\"",
        ),
        (
            ("controller", "interval"),
            True,
            'controller.interval: true is not a duration (e.g. "5m")',
        ),
        (
            ("rules", 0, "scale_out", "step"),
            True,
            'rules[0].scale_out.step: true is not a step: use a count >= 1 or a percent like "50%"',
        ),
    ],
)
def test_policy_numbers_and_booleans_are_strict(
    run: Any, path: tuple[Any, ...], value: Any, message: str
) -> None:
    """A quoted number, a float for an integer, a number for a boolean: refused by its path."""
    doc = policy_seed()
    set_path(doc, path, value)
    assert message in _policy_problems(run, doc)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            {"address": "h", "ssh_port": "22"},
            'hosts.h.ssh_port: must be an integer, not the string "22"',
        ),
        (
            {"address": "h", "transport": "nsenter", "nsenter": True},
            "hosts.h.nsenter: must be a PID (an integer) or the absolute path of a PID "
            "file, not true",
        ),
    ],
)
def test_host_numbers_are_strict(run: Any, host: dict[str, Any], message: str) -> None:
    """``[hosts]``: an ssh port in quotes, ``nsenter = true`` (not PID 1): refused."""
    doc = policy_seed()
    doc["hosts"] = {"h": host}
    assert message in _policy_problems(run, doc)


DRIVER_FIELDS = [
    (
        ("pools", "web", "balancer", "fail_timeout"),
        True,
        'pools.web.balancer.fail_timeout: must be an nginx time (e.g. "30s") or whole seconds, '
        "not true",
    ),
    (("sources", "prom", "timeout"), True, "sources.prom.timeout: true is not a duration"),
    (
        ("pools", "web", "balancer", "ip_hash"),
        "yes",
        'pools.web.balancer.ip_hash: must be true or false, not the string "yes"',
    ),
    (
        ("pools", "worker", "runtime", "ssh_port"),
        "22",
        'pools.worker.runtime.ssh_port: must be an integer, not the string "22"',
    ),
    (
        ("sources", "prom", "verify"),
        1,
        "sources.prom.verify: must be true, false or the path of a CA bundle, not 1",
    ),
    (
        ("sources", "prom", "verify"),
        "true",
        "sources.prom.verify: must be true, false or the path of a CA bundle, not the string "
        '"true" (write true or false without quotes)',
    ),
    (
        ("sources", "broker", "count_unacked"),
        0,
        "sources.broker.count_unacked: must be true or false, not 0",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), DRIVER_FIELDS)
def test_driver_settings_are_strict(
    run: Any, path: tuple[Any, ...], value: Any, message: str
) -> None:
    """A driver's table is as strict as the policy's own: its booleans and integers too."""
    doc = policy_seed()
    set_path(doc, path, value)
    assert message in _policy_problems(run, doc)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("sentinel", "quorum"),
            "2",
            'sentinel.quorum: must be an integer, not the string "2" (write 2 without quotes)',
        ),
        (
            ("pgbouncer", "default_pool_size"),
            25.0,
            "pgbouncer.default_pool_size: must be an integer, not 25.0",
        ),
        (("pools", "django", "max"), "5", "pools.django.max: must be an integer, not the string"),
        (("nginx", "ip_hash"), "yes", 'nginx.ip_hash: must be true or false, not the string "yes"'),
        (("beat", "enabled"), 1, "beat.enabled: must be true or false, not 1"),
        (("schedules", 0, "count"), "3", "schedules[0].count: must be an integer, not the string"),
    ],
)
def test_inventory_numbers_and_booleans_are_strict(
    run: Any, path: tuple[Any, ...], value: Any, message: str
) -> None:
    """The inventory: ``quorum = "2"`` is refused by its path, and nothing is written."""
    doc = inventory_seed()
    set_path(doc, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.toml"
        inventory.write_text(tomli_w.dumps(doc), encoding="utf-8")
        out = Path(tmp) / "out"
        with pytest.MonkeyPatch.context() as patch:
            for name, secret in SECRETS.items():
                patch.setenv(name, secret)
            result = run(["render", "-i", str(inventory), "-o", str(out)])
        assert not out.exists()
    result.assert_refused("inventory.toml", message)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("pools", "web", "events", 0, "before"),
            "1",
            'pools.web.events[0].before: "1" is not a count',
        ),
        (("samples", "cpu", 0, "value"), "75", 'samples.cpu[0].value: "75" is not a number'),
        (("now",), True, "now: true is not a time"),
    ],
)
def test_observation_numbers_are_strict(
    run: Any, path: tuple[Any, ...], value: Any, message: str
) -> None:
    """An observation's counts, values and times are JSON numbers, never strings or booleans."""
    doc = observation_seed()
    set_path(doc, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p.toml").write_text(POLICY)
        (Path(tmp) / "obs.json").write_text(json.dumps(doc))
        result = run(["plan", "-o", f"{tmp}/obs.json", "-p", f"{tmp}/p.toml", "--json"])
    result.assert_refused("obs.json", message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('seed = "7"\n', 'seed: must be an integer, not the string "7" (write 7 without quotes)'),
        ("seed = 7.0\n", "seed: must be an integer, not 7.0 (write 7)"),
        (
            '[pools.web]\nrps_per_instance = "60"\n',
            'pools.web.rps_per_instance: must be a number, not the string "60"',
        ),
        ("[pools.web]\ncpu_noise = true\n", "pools.web.cpu_noise: must be a number, not true"),
        ("[pools.web]\ncpu_noise = inf\n", "pools.web.cpu_noise: +inf: expected a finite number"),
    ],
)
def test_capacity_model_numbers_are_strict(run: Any, body: str, message: str) -> None:
    """``simulate --model``: the capacity model's numbers are strict and finite, named."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p.toml").write_text(POLICY)
        (Path(tmp) / "t.csv").write_text(trace_seed())
        (Path(tmp) / "model.toml").write_text(body)
        result = run(
            [
                "simulate",
                "-t",
                f"{tmp}/t.csv",
                "-p",
                f"{tmp}/p.toml",
                "--model",
                f"{tmp}/model.toml",
                "--compare",
                "none",
                "-q",
            ]
        )
    result.assert_refused("model.toml", message)


def test_the_seeds_are_valid(run: Any) -> None:
    """The files these tests break are valid as they are (so each refusal is the change's)."""
    doc = copy.deepcopy(policy_seed())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        assert run(["validate", str(path)]).code == 0
