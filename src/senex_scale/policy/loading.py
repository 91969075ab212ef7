"""Read a policy file and report every problem in it at once, each with its dotted path.

``rules[2].scale_out.for: "5x" is not a duration (e.g. "5m")`` is the shape of every message:
the path a user can find in the file, then what is wrong. TOML syntax errors carry the line
the parser gives. Unknown keys get a "did you mean". Cross references (a rule's pool or source,
a schedule's pools, duplicate names) are checked after the models, so one run lists them all.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ValidationError

from senex_scale.errors import PolicyError
from senex_scale.plugins import did_you_mean
from senex_scale.policy.models import RULE_TYPES, Policy

DEFAULT_NAME = "default.toml"
MAX_DEPTH = 32
"""Deepest nesting of tables and arrays an input file may have (a policy needs 5)."""

Check = Callable[[Mapping[str, Any]], list[str]]
"""An extra check on a parsed file: returns problems with their dotted paths (driver settings)."""


def read_input(path: Path, *, limit: int = 64 << 20) -> str:
    """The text of an input file (UTF-8, a byte-order mark dropped); ``ValueError`` says why not.

    Shared by every input kind (policy, inventory, observation, trace) so that a directory, a
    missing file, bytes that are not UTF-8 or an endless device (``/dev/zero``) get the same
    message, never a traceback or a hang. At most ``limit`` bytes are read.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except IsADirectoryError:
        raise ValueError("is a directory, not a file") from None
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ValueError(f"larger than {limit >> 20} MiB: not an input file of this kind")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, column {column})"
        ) from None


def load_toml(text: str) -> dict[str, Any]:
    """Parse TOML ``text``; ``ValueError`` with the parser's line, or for nesting too deep."""
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(f"not valid TOML: nested more than {MAX_DEPTH} levels deep") from None
    deep = too_deep(data)
    if deep is not None:
        raise ValueError(f"{deep or 'the file'}: nested more than {MAX_DEPTH} levels deep")
    return data


def too_deep(data: object, limit: int = MAX_DEPTH) -> str | None:
    """The path of a value nested deeper than ``limit``, or None (iterative: no recursion)."""
    stack: list[tuple[object, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        value, loc = stack.pop()
        if len(loc) > limit:
            return dotted(loc[:4]) + "..."
        if isinstance(value, dict):
            stack.extend((v, (*loc, str(k))) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(value))
    return None


def default_policy_text() -> str:
    """The built-in default policy (the seed's strategy), as the commented TOML file."""
    return (resources.files("senex_scale.policy") / DEFAULT_NAME).read_text(encoding="utf-8")


def load_default() -> Policy:
    """The built-in default policy, validated like any file."""
    return parse_policy(default_policy_text(), source="<default policy>")


def load_policy(path: str | Path | None, *, checks: Sequence[Check] = ()) -> Policy:
    """Load and validate the policy at ``path`` (None or "default": the built-in one).

    ``checks`` run on the parsed file too and their problems join the list (``validate``
    passes the drivers' settings check, ``senex_scale.settings.driver_problems``).
    """
    if path is None or str(path) == "default":
        return load_default()
    path = Path(path)
    try:
        text = read_input(path)
    except ValueError as exc:
        raise PolicyError(str(path), [str(exc)]) from None
    return parse_policy(text, source=str(path), checks=checks)


def parse_policy(text: str, *, source: str = "<policy>", checks: Sequence[Check] = ()) -> Policy:
    """Validate policy TOML ``text``; raise ``PolicyError`` listing every problem."""
    try:
        data = load_toml(text)
    except ValueError as exc:
        raise PolicyError(source, [str(exc)]) from None
    if not data:
        raise PolicyError(
            source,
            [
                "the file is empty: a policy needs at least one [pools.NAME] table "
                "(senex-scale policy default prints a complete one)"
            ],
        )
    return validate_policy(data, source=source, checks=checks)


def validate_policy(
    data: dict[str, Any], *, source: str = "<policy>", checks: Sequence[Check] = ()
) -> Policy:
    """Validate an already parsed policy mapping."""
    references = nothing_to_do(data) + cross_check(data)
    for check in checks:
        references += check(data)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, format_errors(exc) + references) from None
    if references:
        raise PolicyError(source, references)
    return policy


def nothing_to_do(data: Mapping[str, Any]) -> list[str]:
    """The problem of a policy that could never act: no pools to scale and no rules.

    Pools are what the controller scales (their bounds and schedules act even without rules);
    a policy without pools may still be useful with action rules (notify a person, run a
    runbook). With neither, ``run`` would tick forever doing nothing: most likely the wrong
    file, or every table misspelt (``[pool.web]``), which the unknown-key message names too.
    """
    pools, rules = data.get("pools"), data.get("rules")
    no_pools = pools is None or (isinstance(pools, dict) and not pools)
    no_rules = rules is None or (isinstance(rules, list) and not rules)
    if no_pools and no_rules:
        return [
            "nothing to do: the policy has no [pools.NAME] table to scale and no [[rules]] "
            "(senex-scale policy default prints a complete policy)"
        ]
    return []


# --------------------------------------------------------------------------- cross references


def cross_check(data: dict[str, Any]) -> list[str]:
    """Problems that span sections: references to pools and sources, duplicate names.

    Works on the parsed mapping, not the models, so these problems are reported in the same
    run as value errors; entries too malformed to read are skipped (the models report them).
    """
    problems: list[str] = []
    raw_pools = data.get("pools")
    raw_sources = data.get("sources")
    pools = set(raw_pools) if isinstance(raw_pools, dict) else set()
    sources = set(raw_sources) if isinstance(raw_sources, dict) else set()
    rules = data.get("rules")
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        where = f"rules[{i}]"
        name = rule.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f'{where}.name: "{name}" is already used by rules[{seen[name]}]')
            seen.setdefault(name, i)
        pool = rule.get("pool")
        if isinstance(pool, str) and pool not in pools:
            problems.append(
                f'{where}.pool: unknown pool "{pool}"{did_you_mean(pool, pools)}'
                + ("" if pools else " (no [pools] defined)")
            )
        metric = rule.get("metric")
        source = metric.get("source") if isinstance(metric, dict) else None
        if isinstance(source, str) and source not in sources:
            problems.append(
                f'{where}.metric.source: unknown source "{source}"{did_you_mean(source, sources)}'
                + ("" if sources else " (no [sources] defined)")
            )
        action = rule.get("action")
        argv = action.get("argv") if isinstance(action, dict) else None
        if isinstance(argv, list) and argv and argv[0] == "":
            problems.append(f"{where}.action.argv[0]: the program name is empty")
    problems += _host_references(data, raw_pools)
    names: dict[str, int] = {}
    schedules = data.get("schedules")
    for i, schedule in enumerate(schedules if isinstance(schedules, list) else []):
        if not isinstance(schedule, dict):
            continue
        name = schedule.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    f'schedules[{i}].name: "{name}" is already used by schedules[{names[name]}]'
                )
            names.setdefault(name, i)
        targets = schedule.get("pools")
        for j, pool in enumerate(targets if isinstance(targets, list) else []):
            if not isinstance(pool, str):
                continue
            if pool not in pools:
                problems.append(
                    f'schedules[{i}].pools[{j}]: unknown pool "{pool}"{did_you_mean(pool, pools)}'
                )
                continue
            raw_pool = (raw_pools or {}).get(pool)
            low = schedule.get("min")
            high = raw_pool.get("max") if isinstance(raw_pool, dict) else None
            if _integer(low) and _integer(high) and low > high and schedule.get("max") is None:
                problems.append(
                    f"schedules[{i}].min: {low} is above pool {pool}'s max "
                    f"({high}); raise max in the schedule too"
                )
    return problems


def _integer(value: object) -> TypeGuard[int]:
    """A TOML integer (``true`` is not 1 here: the model reports it)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _host_references(data: dict[str, Any], raw_pools: Any) -> list[str]:
    """A pool's ``hosts`` name entries of ``[hosts]``; its runtime can run on them."""
    problems: list[str] = []
    raw_hosts = data.get("hosts")
    hosts = set(raw_hosts) if isinstance(raw_hosts, dict) else set()
    for name, pool in (raw_pools or {}).items() if isinstance(raw_pools, dict) else ():
        if not isinstance(pool, dict):
            continue
        balancer = pool.get("balancer")
        host = balancer.get("host") if isinstance(balancer, dict) else None
        if isinstance(host, str) and host not in hosts:
            problems.append(
                f'pools.{name}.balancer.host: unknown host "{host}"{did_you_mean(host, hosts)}'
                + ("" if hosts else " (no [hosts] defined)")
            )
        if not isinstance(pool.get("hosts"), list):
            continue
        where = f"pools.{name}"
        for j, entry in enumerate(pool["hosts"]):
            host = entry.get("name") if isinstance(entry, dict) else entry
            if isinstance(host, str) and host not in hosts:
                problems.append(
                    f'{where}.hosts[{j}]: unknown host "{host}"{did_you_mean(host, hosts)}'
                    + ("" if hosts else " (no [hosts] defined)")
                )
        runtime = pool.get("runtime")
        if not pool["hosts"] or not isinstance(runtime, dict):
            continue
        kind = runtime.get("type")
        if isinstance(kind, str) and kind != "systemd":
            problems.append(
                f"{where}.hosts: the {kind} runtime runs on this machine only; a pool on "
                'several hosts needs runtime type "systemd"'
            )
        for key in ("host", "nsenter", "instance_host", "ssh_user", "ssh_port", "ssh_identity"):
            if key in runtime:
                problems.append(
                    f"{where}.runtime.{key}: the pool lists hosts; say where in [hosts] "
                    "instead (each host's address and transport)"
                )
    return problems


# --------------------------------------------------------------------------- error formatting


Language = Literal["toml", "json"]

_TABLE = {"toml": "a table", "json": "an object"}
_EXPECTED: dict[str, str] = {
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "iterable_type": "an array",
    "string_type": "a string",
    "string_sub_type": "a string",
    "finite_number": "a finite number (not nan or inf)",
    "path_type": "a path (a string)",
    "url_type": "a URL (a string)",
}
_SCALARS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}
"""Errors of the strict integer, number and boolean fields, and what each field wants."""
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOUNDS = {
    "greater_than": "more than",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "less_than_equal": "at most",
}


def format_errors(
    exc: ValidationError,
    root: type[BaseModel] = Policy,
    prefix: tuple[str, ...] = (),
    *,
    language: Language = "toml",
) -> list[str]:
    """One line per pydantic error: dotted path, then a message a person can act on.

    ``prefix`` is where ``root`` sits in the file (``("sources", "prom")`` for a driver's
    settings), so every path names the place a user finds in the file. Messages use the
    file's own words (``language``: a TOML table, a JSON object), never a Python type name.
    """
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        raw = tuple(err["loc"])
        key_error = "[key]" in raw
        loc = (*prefix, *_strip_tags(tuple(p for p in raw if p != "[key]")))
        path = dotted(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(root, raw[:-1])
            key = str(loc[-1])
            parent = dotted(loc[:-1])
            hint = did_you_mean(key, allowed) if allowed else ""
            msg = f'unknown key "{key}"{hint}'
            lines.append(f"{parent}: {msg}" if parent else msg)
            continue
        if kind in ("union_tag_invalid", "rule_type"):
            ctx = err.get("ctx") or {}
            given = err.get("input")
            tag = str(ctx.get("tag", given.get("type", "") if isinstance(given, dict) else ""))
            expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
            if kind == "rule_type":
                expected = list(RULE_TYPES)
            if not isinstance(given, dict):
                lines.append(f"{path}: {_show(given, language)}: expected {_TABLE[language]}")
                continue
            hint = did_you_mean(tag, expected)
            known = ", ".join(f'"{t}"' for t in expected if t)
            lines.append(f'{dotted((*loc, "type"))}: unknown type "{tag}"{hint}; known: {known}')
            continue
        if kind == "missing":
            lines.append(f"{path}: required")
            continue
        message = _one_line(_message(err, language))
        if key_error:
            message = f"the name {message}"
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _message(err: Any, language: Language) -> str:
    """The text after the path: what is wrong with the value, in the file's terms."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    given = err.get("input")
    shown = _show(given, language)
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        return f"{shown}: expected {_TABLE[language]}"
    if kind in _EXPECTED:
        return f"{shown}: expected {_EXPECTED[kind]}"
    if kind in _SCALARS:
        return _wrong_scalar(_SCALARS[kind], given, language)
    if kind in ("literal_error", "enum"):
        choices = [
            c.strip(" '") for c in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")
        ]
        choices = [c for c in choices if c]
        hint = did_you_mean(given, choices) if isinstance(given, str) else ""
        known = ", ".join(f'"{c}"' for c in choices)
        return f"{shown}: expected one of {known}{hint}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "")
        return f"{shown}: must be {_BOUNDS[kind]} {_show(bound, language)}"
    if kind == "string_too_short":
        size = int(ctx.get("min_length", 1))
        return "must not be empty" if size <= 1 else f"{shown}: give at least {size} characters"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "too_short":
        size = int(ctx.get("min_length", 1))
        return f"give at least {size} item{'' if size == 1 else 's'}"
    if kind == "too_long":
        return f"give at most {ctx.get('max_length')} items"
    if kind == "string_pattern_mismatch":
        if given == "":
            return "must not be empty"
        return f"{shown} does not have the expected form ({ctx.get('pattern')})"
    message = str(err["msg"]).removeprefix("Input should be ")
    return f"{shown}: expected {message}"


def _wrong_scalar(expected: str, given: object, language: Language) -> str:
    """``must be an integer, not the string "2" (write 2 without quotes)``.

    A number or boolean written in quotes, a float where an integer belongs, a boolean where a
    number belongs: the fields are strict, so the message says what was given and, when the
    fix is obvious, how to write it.
    """
    hint = ""
    if isinstance(given, str):
        text = given.strip()
        what = f"the string {_show(given, language)}"
        fits = {
            "an integer": _INTEGER.fullmatch(text),
            "a number": _NUMBER.fullmatch(text),
            "true or false": text in ("true", "false"),
        }[expected]
        if fits and len(text) <= 30:
            hint = f" (write {text} without quotes)"
    else:
        what = _show(given, language)
        if expected == "an integer" and isinstance(given, float) and given.is_integer():
            hint = f" (write {int(given)})" if abs(given) < 1e15 else ""
    return f"must be {expected}, not {what}{hint}"


def _one_line(message: str) -> str:
    """A message with control characters escaped, so every problem stays on its line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in message)


def dotted(loc: Sequence[int | str]) -> str:
    """('rules', 2, 'scale_out', 'for') -> 'rules[2].scale_out.for'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: object, language: Language = "toml") -> str:
    """A value as the file writes it: "text", 5, true, nan, a table (never a Python repr)."""
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null" if language == "json" else "nothing"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN" if language == "json" else "nan"
        if math.isinf(value):
            sign = "-" if value < 0 else ("" if language == "json" else "+")
            return f"{sign}Infinity" if language == "json" else f"{sign}inf"
        return repr(value)
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 30 else "a number too large"
    if isinstance(value, dict):
        return _TABLE[language]
    if isinstance(value, list | tuple):
        return "an array"
    return str(value)


def _strip_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop union tags pydantic puts in paths (rules.2.threshold.for -> rules[2].for)."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i >= 2 and loc[0] == "rules" and i == 2 and part in RULE_TYPES:
            continue
        if (
            isinstance(part, str)
            and part in ("notify", "runbook")
            and i > 0
            and loc[i - 1] == "action"
        ):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def _allowed_keys(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """Field names (TOML spelling) of the model found by walking the raw ``loc`` from ``model``."""
    target: Any = model
    for part in loc:
        target = _unwrap(target)
        if isinstance(target, tuple):  # a union: the part is a tag, or a field of one member
            tagged = [m for m in target if _tag_of(m) == part]
            if tagged:
                target = tagged[0]
                continue
            target = _pick_member(target, part)
            if target is None:
                return []
        if isinstance(target, type) and issubclass(target, BaseModel):
            target = _field_by_name(target, str(part))
            if target is None:
                return []
            continue
        origin = typing.get_origin(target)
        if origin in (list, tuple, dict):
            args = typing.get_args(target)
            target = args[-1] if origin is dict else args[0]
            continue
        return []
    target = _unwrap(target)
    members = target if isinstance(target, tuple) else (target,)
    keys: set[str] = set()
    for member in members:
        if isinstance(member, type) and issubclass(member, BaseModel):
            keys.update(_keys(member))
    return sorted(keys)


def _tag_of(model: Any) -> object:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        return model.model_fields["type"].default
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _field_by_name(model: type[BaseModel], name: str) -> Any:
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return field.annotation
    return None


def _pick_member(members: tuple[Any, ...], part: object) -> Any:
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    for m in models:
        if _field_by_name(m, str(part)) is not None:
            return m
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional; a union of several models becomes a tuple of them."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
            return tuple(_unwrap(m) for m in members)
        return annotation
