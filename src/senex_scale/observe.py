"""The observation file: what ``senex-scale plan --observe`` reads and the daemon records.

::

    {
      "now": "2026-11-24T15:00:00Z",                     # optional; default: newest sample
      "pools": {
        "django": {
          "instances": [{"id": "1", "state": "ready", "started_at": "2026-11-24T13:00:00Z"}],
          "events": [{"at": "2026-11-24T14:50:00Z", "before": 2, "after": 3}],
          "recommendations": {"django-cpu-target": [["2026-11-24T14:59:45Z", 3]]}
        }
      },
      "samples": {"django-cpu": [{"at": "2026-11-24T14:59:45Z", "value": 78.2, "instance": "1"}]},
      "errors": {"postgres-cpu": "prometheus: connection refused"},
      "actions": {"postgres-cpu": "2026-11-24T12:00:00Z"}
    }

Times are ISO 8601 with an offset, or epoch seconds. ``state`` is starting, ready or draining.
Samples are keyed by rule name; ``instance`` is omitted for pool-level values. ``events`` are
completed scale changes (for cooldowns and rate limits); ``actions`` the last firing of each
notify/runbook rule. Errors name the dotted path, like policy errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from senex_scale.core.state import (
    Instance,
    InstanceState,
    Memory,
    Observation,
    PoolMemory,
    Sample,
    ScaleEvent,
)
from senex_scale.errors import InputError
from senex_scale.plugins import did_you_mean
from senex_scale.policy.loading import dotted, format_errors, read_input, too_deep

if TYPE_CHECKING:
    from senex_scale.policy.models import Policy

LATEST = 253402300799.0
"""9999-12-31T23:59:59Z, the last instant a date can show: later epoch seconds are refused."""


def parse_time(value: object) -> float:
    """Epoch seconds from an ISO 8601 string with an offset, or from a number.

    Only instants from 1970 to the year 9999 are times: anything else (NaN, infinities,
    milliseconds mistaken for seconds) is an error here, not a crash when it is shown.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f'{_shown(value)} is not a time (e.g. "2026-11-24T15:00:00Z")')
    if isinstance(value, int | float):
        epoch = float(value) if -1e300 < value < 1e300 else math.inf
        if not math.isfinite(epoch):
            raise ValueError(f"{_shown(value)} is not a time: give epoch seconds or ISO 8601")
        return _in_range(epoch, _shown(value), numeric=True)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f'{_shown(value)} is not an ISO 8601 time (e.g. "2026-11-24T15:00:00Z")'
            ) from None
        if parsed.tzinfo is None:
            raise ValueError(f'{_shown(value)} has no UTC offset (add "Z" or "+00:00")')
        try:
            epoch = parsed.timestamp()
        except (OverflowError, ValueError):
            raise ValueError(f"{_shown(value)} is out of range (1970 to 9999)") from None
        return _in_range(epoch, _shown(value))
    raise ValueError(f'{_shown(value)} is not a time (e.g. "2026-11-24T15:00:00Z")')


def _in_range(epoch: float, shown: str, *, numeric: bool = False) -> float:
    if not 0 <= epoch <= LATEST:
        far = numeric and epoch > LATEST
        hint = " (milliseconds? epoch seconds are about 1.8e9 today)" if far else ""
        raise ValueError(f"{shown} is out of range: epoch seconds 0..{LATEST:.0f}{hint}")
    return epoch


def _shown(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 30 else "a number too large"


def _value(value: object) -> float:
    """A sample value: a finite, non-negative JSON number (never a string, a boolean or null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{_shown(value)} is not a number (e.g. 78.2)")
    number = float(value) if -1e300 < value < 1e300 else math.inf
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{_shown(value)} is not a finite number of 0 or more")
    return number


MAX_COUNT = 1_000_000
"""Most instances a count in an observation may say (more is a typo, not a pool)."""


def _count(value: object) -> int:
    """An instance count: a whole JSON number from 0 to ``MAX_COUNT``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{_shown(value)} is not a count (a whole number from 0 to {MAX_COUNT})")
    return value


def format_time(epoch: float) -> str:
    """ISO 8601 in UTC with a Z, seconds precision unless fractional."""
    dt = datetime.fromtimestamp(epoch, UTC)
    text = dt.isoformat(timespec="milliseconds" if epoch % 1 else "seconds")
    return text.replace("+00:00", "Z")


Time = Annotated[float, BeforeValidator(parse_time)]
Value = Annotated[float, BeforeValidator(_value)]
Count = Annotated[int, BeforeValidator(_count)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Instance(_M):
    id: str = Field(min_length=1)
    state: InstanceState = InstanceState.READY
    started_at: Time | None = None


class _Event(_M):
    at: Time
    before: Count
    after: Count


class _Pool(_M):
    instances: list[_Instance] = []
    events: list[_Event] = []
    recommendations: dict[str, list[tuple[Time, Count]]] = {}

    @field_validator("instances")
    @classmethod
    def _unique(cls, value: list[_Instance]) -> list[_Instance]:
        seen: dict[str, int] = {}
        for i, instance in enumerate(value):
            if instance.id in seen:
                raise ValueError(
                    f'id "{instance.id}" appears twice ([{seen[instance.id]}] and [{i}]): '
                    "every instance of a pool has its own id"
                )
            seen[instance.id] = i
        return value


class _Sample(_M):
    at: Time
    value: Value
    instance: str | None = Field(default=None, min_length=1)


class ObservationFile(_M):
    """The observation file, validated."""

    now: Time | None = None
    pools: dict[str, _Pool] = {}
    samples: dict[str, list[_Sample]] = {}
    errors: dict[str, str] = {}
    actions: dict[str, Time] = {}


def _problems(source: str, problems: list[str]) -> InputError:
    """One error listing every problem, shaped like a policy's (file, count, one per line)."""
    if len(problems) == 1:
        return InputError(f"{source}: {problems[0]}")
    body = "\n".join(f"  {p}" for p in problems)
    return InputError(f"{source}: {len(problems)} problems\n{body}")


def parse_observation(
    data: Any, source: str = "<observation>", policy: Policy | None = None
) -> tuple[Observation, float | None]:
    """A core ``Observation`` and the file's ``now`` (None if absent) from parsed JSON.

    With ``policy``, every pool and rule the file names must exist in it.
    """
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: {_shown(data)} at the top level: expected a JSON object "
            '(e.g. {"pools": {...}, "samples": {...}})'
        )
    try:
        doc = ObservationFile.model_validate(data)
    except ValidationError as exc:
        problems = format_errors(exc, ObservationFile, language="json")
        raise _problems(source, problems) from None
    if policy is not None:
        unknown = references(doc, policy)
        if unknown:
            raise _problems(source, unknown)
    instances = {
        name: tuple(Instance(i.id, i.state, i.started_at) for i in pool.instances)
        for name, pool in doc.pools.items()
    }
    samples = {
        rule: tuple(sorted((Sample(s.at, s.value, s.instance) for s in items), key=lambda s: s.at))
        for rule, items in doc.samples.items()
    }
    memory = Memory(
        pools={
            name: PoolMemory(
                events=tuple(
                    sorted(
                        (ScaleEvent(e.at, e.before, e.after) for e in pool.events),
                        key=lambda e: e.at,
                    )
                ),
                recommendations={r: tuple(sorted(v)) for r, v in pool.recommendations.items()},
            )
            for name, pool in doc.pools.items()
        },
        actions=dict(doc.actions),
    )
    now = doc.now
    if now is None:
        newest = [s[-1].at for s in samples.values() if s]
        now = max(newest) if newest else None
    return Observation(instances, samples, dict(doc.errors), memory), now


def references(doc: ObservationFile, policy: Policy) -> list[str]:
    """Pools and rules the observation names that the policy does not have."""
    problems: list[str] = []
    pools = list(policy.pools)
    rules = [r.name for r in policy.rules]

    def check(names: Iterable[str], known: list[str], what: str, where: tuple[str, ...]) -> None:
        for name in names:
            if name not in known:
                hint = did_you_mean(name, known)
                problems.append(f'{dotted((*where, name))}: unknown {what} "{name}"{hint}')

    check(doc.pools, pools, "pool", ("pools",))
    for name, pool in doc.pools.items():
        check(pool.recommendations, rules, "rule", ("pools", name, "recommendations"))
    check(doc.samples, rules, "rule", ("samples",))
    check(doc.errors, rules, "rule", ("errors",))
    check(doc.actions, rules, "rule", ("actions",))
    return problems


def load_observation(
    path: str | Path, policy: Policy | None = None
) -> tuple[Observation, float | None]:
    """Read and validate an observation JSON file (against ``policy``'s names, when given)."""
    path = Path(path)
    try:
        text = read_input(path)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not text.strip():
        raise InputError(
            f'{path}: the file is empty: expected a JSON object (e.g. {{"pools": {{}}}})'
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: not valid JSON: nested too deeply") from None
    deep = too_deep(data)
    if deep is not None:
        raise InputError(f"{path}: {deep or 'the file'}: nested too deeply")
    return parse_observation(data, str(path), policy)


def observation_to_json(observation: Observation, now: float | None = None) -> dict[str, Any]:
    """The JSON document for ``observation`` (inverse of ``parse_observation``)."""
    pools: dict[str, Any] = {}
    names = set(observation.instances) | set(observation.memory.pools)
    for name in sorted(names):
        mem = observation.memory.pool(name)
        pools[name] = {
            "instances": [
                {"id": i.id, "state": i.state.value}
                | ({"started_at": format_time(i.started_at)} if i.started_at is not None else {})
                for i in observation.instances.get(name, ())
            ],
            "events": [
                {"at": format_time(e.at), "before": e.before, "after": e.after} for e in mem.events
            ],
            "recommendations": {
                r: [[format_time(at), n] for at, n in v] for r, v in mem.recommendations.items()
            },
        }
    doc: dict[str, Any] = {}
    if now is not None:
        doc["now"] = format_time(now)
    doc["pools"] = pools
    doc["samples"] = {
        rule: [
            {"at": format_time(s.at), "value": s.value}
            | ({"instance": s.instance} if s.instance else {})
            for s in items
        ]
        for rule, items in observation.samples.items()
    }
    doc["errors"] = dict(observation.errors)
    doc["actions"] = {r: format_time(at) for r, at in observation.memory.actions.items()}
    return doc
