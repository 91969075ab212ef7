"""Read a policy file and report every problem in it at once, each with its dotted path.

``rules[2].scale_out.for: "5x" is not a duration (e.g. "5m")`` is the shape of every message:
the path a user can find in the file, then what is wrong. TOML syntax errors carry the line
the parser gives. Unknown keys get a "did you mean". Cross references (a rule's pool or source,
a schedule's pools, duplicate names) are checked after the models, so one run lists them all.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from senex_scale.errors import PolicyError
from senex_scale.plugins import did_you_mean
from senex_scale.policy.models import RULE_TYPES, Policy

DEFAULT_NAME = "default.toml"


def default_policy_text() -> str:
    """The built-in default policy (the seed's strategy), as the commented TOML file."""
    return (resources.files("senex_scale.policy") / DEFAULT_NAME).read_text(encoding="utf-8")


def load_default() -> Policy:
    """The built-in default policy, validated like any file."""
    return parse_policy(default_policy_text(), source="<default policy>")


def load_policy(path: str | Path | None) -> Policy:
    """Load and validate the policy at ``path`` (None or "default": the built-in one)."""
    if path is None or str(path) == "default":
        return load_default()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), [f"cannot read: {exc}"]) from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Validate policy TOML ``text``; raise ``PolicyError`` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [f"not valid TOML: {exc}"]) from None
    return validate_policy(data, source=source)


def validate_policy(data: dict[str, Any], *, source: str = "<policy>") -> Policy:
    """Validate an already parsed policy mapping."""
    references = cross_check(data)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, format_errors(exc) + references) from None
    if references:
        raise PolicyError(source, references)
    return policy


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
            low, high = schedule.get("min"), (raw_pools or {}).get(pool, {}).get("max")
            if (
                isinstance(low, int)
                and isinstance(high, int)
                and low > high
                and schedule.get("max") is None
            ):
                problems.append(
                    f"schedules[{i}].min: {low} is above pool {pool}'s max "
                    f"({high}); raise max in the schedule too"
                )
    return problems


# --------------------------------------------------------------------------- error formatting


def format_errors(
    exc: ValidationError, root: type[BaseModel] = Policy, prefix: tuple[str, ...] = ()
) -> list[str]:
    """One line per pydantic error: dotted path, then a message a person can act on.

    ``prefix`` is where ``root`` sits in the file (``("sources", "prom")`` for a driver's
    settings), so every path names the place a user finds in the file.
    """
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *_strip_tags(tuple(err["loc"])))
        path = dotted(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(root, tuple(err["loc"])[:-1])
            key = str(loc[-1])
            parent = dotted(loc[:-1])
            hint = did_you_mean(key, allowed) if allowed else ""
            msg = f'unknown key "{key}"{hint}'
            lines.append(f"{parent}: {msg}" if parent else msg)
            continue
        if kind in ("union_tag_invalid", "rule_type"):
            ctx = err.get("ctx") or {}
            tag = str(ctx.get("tag", err.get("input", {}).get("type", "")))
            expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
            if kind == "rule_type":
                expected = list(RULE_TYPES)
            hint = did_you_mean(tag, expected)
            known = ", ".join(f'"{t}"' for t in expected if t)
            lines.append(f'{dotted((*loc, "type"))}: unknown type "{tag}"{hint}; known: {known}')
            continue
        if kind == "missing":
            lines.append(f"{path}: required")
            continue
        message = str(err["msg"])
        if kind in ("value_error", "assertion_error"):
            message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        elif "input" in err and not isinstance(err["input"], dict | list):
            message = f"{_show(err['input'])}: {message}"
        lines.append(f"{path}: {message}" if path else message)
    return lines


def dotted(loc: Sequence[int | str]) -> str:
    """('rules', 2, 'scale_out', 'for') -> 'rules[2].scale_out.for'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


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
