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
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

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
from senex_scale.policy.loading import format_errors


def parse_time(value: object) -> float:
    """Epoch seconds from an ISO 8601 string with an offset, or from a number."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f'"{value}" is not an ISO 8601 time (e.g. "2026-11-24T15:00:00Z")'
            ) from None
        if parsed.tzinfo is None:
            raise ValueError(f'"{value}" has no UTC offset (add "Z" or "+00:00")')
        return parsed.timestamp()
    raise ValueError(f"{value!r} is not a time")


def format_time(epoch: float) -> str:
    """ISO 8601 in UTC with a Z, seconds precision unless fractional."""
    dt = datetime.fromtimestamp(epoch, UTC)
    text = dt.isoformat(timespec="milliseconds" if epoch % 1 else "seconds")
    return text.replace("+00:00", "Z")


Time = Annotated[float, BeforeValidator(parse_time)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Instance(_M):
    id: str = Field(min_length=1)
    state: InstanceState = InstanceState.READY
    started_at: Time | None = None


class _Event(_M):
    at: Time
    before: int = Field(ge=0)
    after: int = Field(ge=0)


class _Pool(_M):
    instances: list[_Instance] = []
    events: list[_Event] = []
    recommendations: dict[str, list[tuple[Time, int]]] = {}


class _Sample(_M):
    at: Time
    value: float
    instance: str | None = None


class ObservationFile(_M):
    """The observation file, validated."""

    now: Time | None = None
    pools: dict[str, _Pool] = {}
    samples: dict[str, list[_Sample]] = {}
    errors: dict[str, str] = {}
    actions: dict[str, Time] = {}


def parse_observation(data: Any, source: str = "<observation>") -> tuple[Observation, float | None]:
    """A core ``Observation`` and the file's ``now`` (None if absent) from parsed JSON."""
    try:
        doc = ObservationFile.model_validate(data)
    except ValidationError as exc:
        problems = format_errors(exc, ObservationFile)
        raise InputError(f"{source}: " + "; ".join(problems)) from None
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


def load_observation(path: str | Path) -> tuple[Observation, float | None]:
    """Read and validate an observation JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return parse_observation(data, str(path))


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
