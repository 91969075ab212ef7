"""Process: CPU (% of one core) and memory (MiB) of each instance, read on this host.

``metric.query`` is ``cpu`` or ``memory``. Three ways to find an instance (``mode``):

``cgroup``
    The systemd unit's cgroup (v2) directory, from the ``cgroup_path`` template (default for
    user units: ``/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/app.slice/
    {unit}``; system units live under ``/sys/fs/cgroup/system.slice/{unit}``). CPU comes from
    ``usage_usec`` in ``cpu.stat`` (always present in cgroup v2), memory from
    ``memory.current`` (needs the memory controller on that cgroup; page cache included,
    as ``systemctl status`` shows it). ``unit`` defaults to the pool runtime's ``unit``
    (e.g. ``django@{n}.service``). A missing directory means the instance is not running,
    unless the path is under /sys/fs/cgroup on a file system that is not cgroup2 (the
    default path on a v1 or hybrid host): that is a permanent error (``_not_cgroup2``).

``psutil``
    Processes found by ``match`` (a regular expression searched in the command line joined
    by spaces, e.g. ``"daphne .* -p {port}"``) or by ``pidfile`` (e.g.
    ``/run/user/1000/celery-{n}.pid``), with all their descendants. CPU is the change of
    user + system time, including children that exited and were reaped (psutil's
    ``cpu_times()``: ``children_user``/``children_system``), so work done by short-lived
    children is not lost between ticks; memory is the sum of RSS over the tree (shared pages
    of forked workers count once per process, as ``ps`` shows them). No matching process
    (or a pidfile that is missing or names a dead process) means the instance is not running.

``podman``
    ``podman stats --no-stream --format json`` (all running containers), parsed by
    ``parse_podman_stats``; the instance is the container named by the ``container``
    template (e.g. ``django-{n}``). CPU is the change of ``cpu_time`` (cumulative CPU time,
    Podman 4+): ``cpu_percent`` of a ``--no-stream`` call is computed against the container's
    start, i.e. an average over its whole life, so it is only used when ``cpu_time`` is
    absent. Memory is the first half of ``mem_usage`` ("187.3MB / 4.1GB"). A container that
    is not listed is not running.

Templates take ``{n}`` (instance number), ``{port}`` (``pool.port + n``), ``{pool}`` (pool
name), ``{uid}`` (``uid`` setting, default the controller's uid) and, in ``cgroup_path``,
``{unit}``. In ``match``, substituted numbers only match as whole numbers (``{port}`` = 8001
does not match 80011) and names are matched literally.

CPU % of one core is measured between two readings of cumulative CPU time: the value a query
returns covers the time since the previous query of the same instance (one controller tick).
A first query, or one after the instance restarted (new cgroup, new process, new container
id), takes two readings ``sample_interval`` apart, once for all instances. A second query
sooner than ``sample_interval`` after the last reading repeats the last value.

Instances asked: ``instances = [1, 2, ...]`` when set, otherwise 1..``pool.max``; those not
running are skipped. When none runs, the query fails (temporary).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psutil
from pydantic import Field, StrictInt, ValidationInfo, field_validator, model_validator

from senex_scale.core.state import Sample
from senex_scale.errors import SourceError
from senex_scale.sources.base import MetricRequest, Settings, Timeout, parse_settings

DEFAULT_CGROUP_PATH = (
    "/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/app.slice/{unit}"
)
MIB = 1024.0 * 1024.0

_NEEDED = "\x00needed"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_INSTANCE_PLACEHOLDERS = {"n", "port"}


def placeholders(template: str) -> set[str]:
    """Names used as ``{name}`` in ``template`` (lower-case names: regex counts are digits)."""
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, values: Mapping[str, str], escape: Callable[[str], str] = str) -> str:
    """``template`` with each known ``{name}`` replaced by ``escape(values[name])``."""
    return _PLACEHOLDER.sub(
        lambda m: escape(values[m.group(1)]) if m.group(1) in values else m.group(0), template
    )


def _regex_literal(value: str) -> str:
    escaped = re.escape(value)
    return rf"(?<![0-9]){escaped}(?![0-9])" if value.isdigit() else escaped


def _check_template(value: str, allowed: set[str], *, needs_instance: bool) -> str:
    unknown = sorted(placeholders(value) - allowed)
    if unknown:
        known = ", ".join(f"{{{name}}}" for name in sorted(allowed))
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; use {known}")
    if needs_instance and not placeholders(value) & _INSTANCE_PLACEHOLDERS:
        raise ValueError("must contain {n} or {port}, or every instance reads the same thing")
    return value


class ProcessSettings(Settings):
    """``[sources.NAME] type = "process"``."""

    mode: Literal["cgroup", "psutil", "podman"]
    unit: str | None = None
    """cgroup: unit name template; default the pool runtime's ``unit``."""
    cgroup_path: str = DEFAULT_CGROUP_PATH
    uid: StrictInt | None = Field(default=None, ge=0)
    match: str | None = None
    pidfile: str | None = None
    container: str | None = None
    podman_command: tuple[str, ...] = Field(default=("podman",), min_length=1)
    """argv prefix, e.g. ["sudo", "-u", "senex", "podman"] or ["podman", "--remote"]."""
    instances: tuple[StrictInt, ...] | None = Field(default=None, min_length=1)
    sample_interval: Timeout = 0.5
    """Seconds between the two readings of a first CPU query."""
    timeout: Timeout = 10.0
    """Longest wait for one ``podman stats`` run."""

    @model_validator(mode="before")
    @classmethod
    def _mark_needed(cls, data: Any) -> Any:
        # A setting the mode needs but the table lacks gets a marker value, so that the
        # field's own validator reports it under its name (a model-level error has no path).
        if isinstance(data, dict):
            mode = data.get("mode")
            if mode == "psutil" and data.get("match") is None and data.get("pidfile") is None:
                data = {**data, "pidfile": _NEEDED}
            if mode == "podman" and data.get("container") is None:
                data = {**data, "container": _NEEDED}
        return data

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        _only_in(info, "unit", "cgroup")
        return _check_template(value, {"n", "port", "pool"}, needs_instance=True)

    @field_validator("cgroup_path")
    @classmethod
    def _cgroup_path(cls, value: str, info: ValidationInfo) -> str:
        if value != DEFAULT_CGROUP_PATH:
            _only_in(info, "cgroup_path", "cgroup")
        if not value.startswith("/"):
            raise ValueError(f'"{value}" is not an absolute path')
        value = _check_template(value, {"n", "port", "pool", "uid", "unit"}, needs_instance=False)
        if not placeholders(value) & {"n", "port", "unit"}:
            raise ValueError("must contain {unit}, {n} or {port}")
        return value

    @field_validator("match")
    @classmethod
    def _match(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        _only_in(info, "match", "psutil")
        _check_template(value, {"n", "port", "pool"}, needs_instance=True)
        try:
            re.compile(fill(value, {"n": "1", "port": "8001", "pool": "pool"}, _regex_literal))
        except re.error as exc:
            raise ValueError(f"is not a regular expression: {exc}") from None
        return value

    @field_validator("pidfile")
    @classmethod
    def _pidfile(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == _NEEDED:
            raise ValueError('mode "psutil" needs match or pidfile')
        if value is None:
            return value
        _only_in(info, "pidfile", "psutil")
        if info.data.get("match") is not None:
            raise ValueError("give match or pidfile, not both")
        return _check_template(value, {"n", "port", "pool", "uid"}, needs_instance=True)

    @field_validator("container")
    @classmethod
    def _container(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == _NEEDED:
            raise ValueError('mode "podman" needs a container name (e.g. "django-{n}")')
        if value is None:
            return value
        _only_in(info, "container", "podman")
        return _check_template(value, {"n", "port", "pool"}, needs_instance=True)

    @field_validator("instances")
    @classmethod
    def _numbers(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and any(n < 1 for n in value):
            raise ValueError("instance numbers start at 1")
        return value


def _only_in(info: ValidationInfo, field: str, mode: str) -> None:
    current = info.data.get("mode")
    if current is not None and current != mode:
        raise ValueError(f'is only used with mode = "{mode}" (mode is "{current}")')


# --------------------------------------------------------------------------- CPU deltas


class Reading(NamedTuple):
    """What one instance measured at one time."""

    key: Hashable
    """Identity of what was measured; a new key (a restart) starts a new baseline."""
    cpu_seconds: float | None = None
    """Cumulative CPU time."""
    memory_bytes: float | None = None
    cpu_percent: float | None = None
    """A ready-made CPU %, used only when ``cpu_seconds`` is unknown (old Podman)."""


class _Mark(NamedTuple):
    at: float
    cpu: float
    rate: float | None


class CpuMeter:
    """CPU % of one core from cumulative CPU seconds, per key, between calls.

    ``clock`` and ``sleep`` are injectable so the arithmetic can be tested with files and a
    fake clock.
    """

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        forget_after: float = 3600.0,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.forget_after = forget_after
        self._marks: dict[Hashable, _Mark] = {}

    def _advance(self, key: Hashable, at: float, cpu: float) -> float | None:
        prev = self._marks.get(key)
        if prev is None or cpu < prev.cpu:  # new, or the counter went back: a new baseline
            self._marks[key] = _Mark(at, cpu, None)
            return None
        elapsed = at - prev.at
        if elapsed >= self.interval:
            rate = (cpu - prev.cpu) / elapsed * 100.0
            self._marks[key] = _Mark(at, cpu, rate)
            return rate
        return prev.rate

    def percent(self, read: Callable[[], Mapping[str, Reading]]) -> dict[str, float]:
        """CPU % per instance of ``read()``'s readings (read twice when a baseline is new)."""
        start = self.clock()
        out: dict[str, float] = {}
        pending: dict[str, Reading] = {}
        for instance, reading in read().items():
            if reading.cpu_seconds is None:
                if reading.cpu_percent is not None:
                    out[instance] = reading.cpu_percent
                continue
            rate = self._advance(reading.key, start, reading.cpu_seconds)
            if rate is None:
                pending[instance] = reading
            else:
                out[instance] = rate
        if pending:
            youngest = min(start - self._marks[r.key].at for r in pending.values())
            self.sleep(max(0.0, self.interval - youngest))
            again_at = self.clock()
            again = read()
            for instance, first in pending.items():
                second = again.get(instance)
                if second is None or second.key != first.key or second.cpu_seconds is None:
                    continue
                rate = self._advance(second.key, again_at, second.cpu_seconds)
                if rate is not None:
                    out[instance] = rate
        for key, mark in list(self._marks.items()):
            if start - mark.at > self.forget_after:
                del self._marks[key]
        return out


def _not_cgroup2(directory: str) -> str | None:
    """Why ``directory`` (under /sys/fs/cgroup) cannot be a unit's cgroup v2 directory, when
    the file system that would hold it is not cgroup2 (a cgroup v1 or hybrid host, where
    /sys/fs/cgroup is a tmpfs of v1 controllers; or nothing mounted there: sysfs), else None:
    then a missing directory means the unit is not running. The mounts come from psutil
    (``disk_partitions(all=True)``)."""
    holder: tuple[str, str] | None = None
    for part in psutil.disk_partitions(all=True):
        point = part.mountpoint.rstrip("/") or "/"
        inside = directory == point or directory.startswith(point.rstrip("/") + "/")
        if inside and (holder is None or len(point) > len(holder[0])):
            holder = (point, part.fstype)
    if holder is None or holder[1] == "cgroup2" or not directory.startswith("/sys/fs/cgroup/"):
        return None  # (a cgroup_path elsewhere is taken as written: e.g. a test's files)
    point, kind = holder
    return (
        f"{directory} is missing and {point} is {kind}, not a cgroup v2 hierarchy: boot the "
        "host with cgroup v2 (systemd.unified_cgroup_hierarchy=1), point cgroup_path at a "
        'cgroup2 mount (a hybrid host has one at /sys/fs/cgroup/unified), or use mode = "psutil"'
    )


# --------------------------------------------------------------------------- podman stats

_NO_ROOTLESS_STATS = "not supported in rootless mode without cgroups v2"
"""Podman's answer to ``stats`` as a rootless user on a cgroup v1 host: permanent."""

# Go prints microseconds as "µs" (U+00B5); "μs" (U+03BC) and "us" are accepted too.
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SIZE = re.compile(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMGTPEZY]?i?B)?")
_SIZE_UNITS = {"": 1.0, "B": 1.0}
for _i, _p in enumerate("KMGTPEZY", start=1):
    _SIZE_UNITS[f"{_p}B"] = 1000.0**_i
    _SIZE_UNITS[f"{_p}iB"] = 1024.0**_i
_SIZE_UNITS["kB"] = 1000.0


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.Duration.String()`` ("1m4.5s", "4.933ms", "0s")."""
    text = text.strip()
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Go duration")
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def parse_size(text: str) -> float:
    """Bytes in a go-units size: "187.3MB" (HumanSize, powers of 1000) or "1.5GiB" (BytesSize)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size")
    return float(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]


def _percent(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        if text in ("", "--"):  # Podman prints "--" when it has no value (older: for 0 too)
            return None
        return float(text)
    return None


@dataclass(frozen=True, slots=True)
class PodmanStats:
    """One container of ``podman stats``: name, id and the numbers this source uses."""

    name: str
    id: str
    cpu_seconds: float | None
    cpu_percent: float | None
    memory_bytes: float | None


def _podman_entry(obj: Mapping[str, Any]) -> PodmanStats:
    name = str(obj.get("name") or obj.get("Name") or "").lstrip("/")
    ident = str(obj.get("id") or obj.get("ContainerID") or obj.get("ID") or name)
    cpu_seconds: float | None = None
    raw_time = obj.get("cpu_time")
    if isinstance(raw_time, str) and raw_time.strip() not in ("", "--"):
        cpu_seconds = parse_go_duration(raw_time)
    else:
        for field in ("CPUNano", "UpTime", "Duration"):  # nanoseconds in the raw struct
            raw = obj.get(field)
            if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
                cpu_seconds = float(raw) / 1e9
                break
    cpu_percent = None
    for field in ("cpu_percent", "CPU", "CPUPerc"):
        if field in obj:
            cpu_percent = _percent(obj[field])
            break
    memory: float | None = None
    raw_mem = obj.get("mem_usage", obj.get("MemUsage"))
    if isinstance(raw_mem, int | float) and not isinstance(raw_mem, bool):
        memory = float(raw_mem)
    elif isinstance(raw_mem, str):
        used = raw_mem.split("/")[0].strip()
        memory = None if used in ("", "--") else parse_size(used)
    return PodmanStats(name, ident, cpu_seconds, cpu_percent, memory)


def parse_podman_stats(text: str) -> list[PodmanStats]:
    """Containers in ``podman stats --no-stream`` output, in either JSON shape Podman prints.

    ``--format json`` prints one JSON array of objects with string fields (Podman 4 and 5)::

        [{"id": "3f0c1a9e2b7d", "name": "django-1", "cpu_time": "1m4.501238s",
          "cpu_percent": "12.34%", "avg_cpu": "3.21%", "mem_usage": "187.3MB / 4.101GB",
          "mem_percent": "4.57%", "net_io": "...", "block_io": "...", "pids": "5"}]

    ``--format '{{json .}}'`` prints one object per line with the Go struct's fields
    (``ContainerID``, ``Name``, ``CPU`` float %, ``CPUNano`` ns, ``MemUsage`` bytes,
    ``UpTime`` ns, ...). Raises ``ValueError`` on anything else.
    """
    text = text.strip()
    if not text or text == "null":
        return []
    try:
        documents: list[Any] = [json.loads(text)]
    except json.JSONDecodeError:
        documents = [json.loads(line) for line in text.splitlines() if line.strip()]
    entries: list[Any] = []
    for document in documents:
        if document is None:
            continue
        entries.extend(document if isinstance(document, list) else [document])
    out: list[PodmanStats] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"expected a JSON object per container, got {entry!r}")
        out.append(_podman_entry(entry))
    return out


# --------------------------------------------------------------------------- the source


class ProcessSource:
    """CPU % and memory MiB per instance from cgroups, psutil or ``podman stats``."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = parse_settings(ProcessSettings, name, options)
        self.meter = CpuMeter(self.settings.sample_interval)
        self.uid = self.settings.uid if self.settings.uid is not None else os.getuid()

    def __repr__(self) -> str:
        return f"ProcessSource(name={self.name!r}, mode={self.settings.mode!r})"

    def close(self) -> None:
        """Nothing to release (readings are kept for deltas)."""

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """CPU % of one core or memory MiB, one sample per running instance."""
        what = request.metric.query.strip().lower()
        if what not in ("cpu", "memory"):
            raise self._fail(
                request, f'metric.query "{request.metric.query}": use "cpu" or "memory"', False
            )
        targets = self._targets(request)

        def read() -> dict[str, Reading]:
            return self._read(targets, what, request)

        if what == "memory":
            values = {
                inst: r.memory_bytes / MIB
                for inst, r in read().items()
                if r.memory_bytes is not None
            }
        else:
            values = self.meter.percent(read)
        if not values:
            first = next(iter(targets.values()))
            raise self._fail(
                request,
                f"no instance of pool {request.pool_name or '(none)'} is running "
                f"(looked for {first!r} and {len(targets) - 1} more)",
                True,
            )
        return [Sample(now, value, inst) for inst, value in sorted(values.items(), key=_by_n)]

    # ------------------------------------------------------------------ targets

    def _fail(self, request: MetricRequest, message: str, temporary: bool) -> SourceError:
        return SourceError(
            f"sources.{self.name}: rule {request.rule}: {message}", temporary=temporary
        )

    def _targets(self, request: MetricRequest) -> dict[str, str]:
        """Instance id -> what identifies it (cgroup dir, regex, pidfile or container name)."""
        s = self.settings
        pool = request.pool
        if s.instances is not None:
            numbers: tuple[int, ...] = s.instances
        elif pool is not None:
            numbers = tuple(range(1, pool.max + 1))
        else:
            raise self._fail(request, "needs a pool, or instances = [1, 2, ...]", False)
        if s.mode == "cgroup":
            template = s.cgroup_path
        elif s.mode == "podman":
            assert s.container is not None
            template = s.container
        elif s.match is not None:
            template = s.match
        else:
            assert s.pidfile is not None
            template = s.pidfile
        used = placeholders(template)
        unit = s.unit
        if s.mode == "cgroup" and unit is None and "unit" in used:
            runtime = pool.runtime if pool is not None else None
            found = runtime.options.get("unit") if runtime is not None else None
            if not isinstance(found, str):
                raise self._fail(
                    request,
                    'set unit (e.g. "django@{n}.service"): the pool runtime names no unit',
                    False,
                )
            unit = found
        if (used | placeholders(unit or "")) & {"port"} and (pool is None or pool.port is None):
            raise self._fail(request, "{port} needs a pool with a port scheme", False)
        escape: Callable[[str], str] = _regex_literal if s.mode == "psutil" and s.match else str
        out: dict[str, str] = {}
        for n in numbers:
            values = {"n": str(n), "pool": request.pool_name or "", "uid": str(self.uid)}
            if pool is not None and pool.port is not None:
                values["port"] = str(pool.port + n)
            if unit is not None:
                values["unit"] = fill(unit, values)
            out[str(n)] = fill(template, values, escape)
        return out

    # ------------------------------------------------------------------ readings

    def _read(
        self, targets: Mapping[str, str], what: str, request: MetricRequest
    ) -> dict[str, Reading]:
        mode = self.settings.mode
        if mode == "cgroup":
            readings = {i: self._read_cgroup(t, what, request) for i, t in targets.items()}
            if targets and all(r is None for r in readings.values()):
                # none found: on a cgroup v1 host none can be (checked once, not per instance)
                wrong = _not_cgroup2(next(iter(targets.values())))
                if wrong is not None:
                    raise self._fail(request, wrong, False)
        elif mode == "podman":
            readings = self._read_podman(targets, request)
        elif self.settings.match is not None:
            readings = self._read_matches(targets)
        else:
            readings = {i: self._read_pidfile(t, request) for i, t in targets.items()}
        return {i: r for i, r in readings.items() if r is not None}

    def _read_cgroup(self, directory: str, what: str, request: MetricRequest) -> Reading | None:
        name = "cpu.stat" if what == "cpu" else "memory.current"
        try:
            inode = os.stat(directory).st_ino
            text = Path(directory, name).read_text()
        except FileNotFoundError as exc:
            if not os.path.isdir(directory):
                return None  # no cgroup: the unit is not running (see _read)
            hint = (
                "not a cgroup v2 directory?"
                if what == "cpu"
                else "the memory controller is not enabled for this cgroup "
                "(cgroup v1 or a hybrid hierarchy?)"
            )
            raise self._fail(request, f"{directory}/{name} is missing: {hint}", False) from exc
        except PermissionError as exc:
            raise self._fail(request, f"{directory}/{name}: permission denied", False) from exc
        except OSError as exc:
            raise self._fail(request, f"{directory}/{name}: {exc}", True) from exc
        key = ("cgroup", directory, inode)
        try:
            if what == "memory":
                return Reading(key, memory_bytes=float(int(text.strip())))
            fields = dict(line.split(None, 1) for line in text.splitlines() if line.strip())
            return Reading(key, cpu_seconds=int(fields["usage_usec"]) / 1e6)
        except (KeyError, ValueError) as exc:
            raise self._fail(request, f"{directory}/{name}: unexpected content", False) from exc

    @staticmethod
    def _tree_reading(roots: list[psutil.Process], key: Hashable) -> Reading | None:
        members: dict[int, psutil.Process] = {}
        for root in roots:
            members[root.pid] = root
            try:
                for child in root.children(recursive=True):
                    members.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                continue
        cpu = memory = 0.0
        alive = 0
        for proc in members.values():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            alive += 1
            cpu += times.user + times.system + times.children_user + times.children_system
            memory += rss
        return Reading(key, cpu_seconds=cpu, memory_bytes=memory) if alive else None

    def _read_matches(self, targets: Mapping[str, str]) -> dict[str, Reading | None]:
        me = os.getpid()
        table: dict[int, tuple[int, str, float]] = {}
        for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time"]):
            info = proc.info
            if info["pid"] == me or not info["cmdline"]:
                continue
            table[info["pid"]] = (info["ppid"], " ".join(info["cmdline"]), info["create_time"])
        out: dict[str, Reading | None] = {}
        for instance, pattern in targets.items():
            regex = re.compile(pattern)
            matched = {pid for pid, (_, cmd, _) in table.items() if regex.search(cmd)}
            roots = sorted(pid for pid in matched if not _has_ancestor_in(pid, matched, table))
            if not roots:
                out[instance] = None
                continue
            key = ("psutil", tuple((pid, table[pid][2]) for pid in roots))
            procs: list[psutil.Process] = []
            for pid in roots:
                try:
                    procs.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    continue
            out[instance] = self._tree_reading(procs, key)
        return out

    def _read_pidfile(self, pidfile: str, request: MetricRequest) -> Reading | None:
        try:
            text = Path(pidfile).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail(request, f"{pidfile}: {exc}", False) from exc
        try:
            proc = psutil.Process(int(text))
            created = proc.create_time()
        except ValueError as exc:  # being rewritten, or not a pidfile
            raise self._fail(request, f"{pidfile}: not a process id: {text[:20]!r}", True) from exc
        except psutil.NoSuchProcess:
            return None  # a stale pidfile: not running
        return self._tree_reading([proc], ("pidfile", proc.pid, created))

    def _read_podman(
        self, targets: Mapping[str, str], request: MetricRequest
    ) -> dict[str, Reading | None]:
        argv = [*self.settings.podman_command, "stats", "--no-stream", "--format", "json"]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.settings.timeout, check=False
            )
        except FileNotFoundError as exc:
            raise self._fail(
                request, f"{argv[0]} not found: install podman or set podman_command", False
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise self._fail(
                request, f"podman stats did not finish within {self.settings.timeout:g}s", True
            ) from exc
        except OSError as exc:
            raise self._fail(request, f"cannot run {argv[0]}: {exc}", False) from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            detail = lines[-1] if lines else f"exit status {done.returncode}"
            if _NO_ROOTLESS_STATS in detail:
                # It will not pass by itself: rootless containers have no cgroups of their own
                # on a cgroup v1 host (the host lab's, on this project's CI machine).
                raise self._fail(
                    request,
                    f"podman stats failed: {detail}; boot the host with cgroup v2 "
                    '(systemd.unified_cgroup_hierarchy=1) or use mode = "psutil"',
                    False,
                )
            raise self._fail(request, f"podman stats failed: {detail}", True)
        try:
            stats = {entry.name: entry for entry in parse_podman_stats(done.stdout)}
        except ValueError as exc:
            raise self._fail(request, f"cannot read podman stats output: {exc}", False) from exc
        out: dict[str, Reading | None] = {}
        for instance, container in targets.items():
            entry = stats.get(container)
            out[instance] = (
                None
                if entry is None
                else Reading(
                    ("podman", entry.id),
                    cpu_seconds=entry.cpu_seconds,
                    memory_bytes=entry.memory_bytes,
                    cpu_percent=entry.cpu_percent,
                )
            )
        return out


def _has_ancestor_in(
    pid: int, group: set[int], table: Mapping[int, tuple[int, str, float]]
) -> bool:
    seen: set[int] = set()
    parent = table[pid][0] if pid in table else 0
    while parent and parent not in seen:
        if parent in group:
            return True
        seen.add(parent)
        parent = table[parent][0] if parent in table else 0
    return False


def _by_n(item: tuple[str, float]) -> tuple[int, str]:
    return (int(item[0]), item[0]) if item[0].isdigit() else (1 << 30, item[0])
