"""The ``process`` source: real processes (psutil), cgroup v2 files, and ``podman stats``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Metric, Pool
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.process import (
    CpuMeter,
    ProcessSource,
    parse_go_duration,
    parse_podman_stats,
    parse_size,
)

pytestmark = pytest.mark.integration

BUSY = "while True: pass"
IDLE = "import time; time.sleep(120)"
PARENT = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"
MIB = 1024.0 * 1024.0


def request_for(query: str, pool: Pool | None) -> MetricRequest:
    """The request of rule "r" on pool "django" for ``query``."""
    return MetricRequest("r", Metric(source="proc", query=query), "django", pool)


def by_instance(samples: list[Sample]) -> dict[str | None, float]:
    return {s.instance: s.value for s in samples}


def pool_of(max_: int, **extra: Any) -> Pool:
    return Pool.model_validate({"min": 0, "max": max_, **extra})


class FakeClock:
    """A monotonic clock that only moves when told, and a ``sleep`` that runs a hook."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep: Callable[[], None] = lambda: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep()


@pytest.fixture
def spawn() -> Iterator[Callable[[str, str], subprocess.Popen[bytes]]]:
    """Start ``python -c CODE MARKER`` in its own session; the whole group is killed after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(code: str, marker: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, marker],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_for_children(pid: int, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(psutil.Process(pid).children(recursive=True)) < count:
        assert time.monotonic() < deadline, f"process {pid} never started its children"
        time.sleep(0.05)


# --------------------------------------------------------------------------- psutil


def test_psutil_busy_process_uses_far_more_cpu_than_idle(spawn: Any) -> None:
    """psutil mode: a busy loop ≫ a sleeper, children count, memory > 0, absent skipped."""
    marker = f"senex-proc-{uuid.uuid4().hex[:8]}"
    spawn(BUSY, f"{marker}-1")
    spawn(IDLE, f"{marker}-2")
    parent = spawn(PARENT, f"{marker}-3")  # the busy child's command line has no marker
    wait_for_children(parent.pid, 1)
    source = ProcessSource("proc", {"mode": "psutil", "match": f"{marker}-{{n}}"})
    pool = pool_of(4)  # instance 4 is not running: skipped

    now = time.time()
    first = source.query(request_for("cpu", pool), now)
    assert {s.at for s in first} == {now}
    cpu = by_instance(first)
    assert set(cpu) == {"1", "2", "3"}
    assert cpu["1"] > 20.0, cpu
    assert cpu["3"] > 20.0, cpu
    assert cpu["2"] < 5.0, cpu
    assert cpu["1"] > 5 * cpu["2"]

    time.sleep(0.6)  # the second query measures since the first one
    again = by_instance(source.query(request_for("cpu", pool), time.time()))
    assert again["1"] > 20.0, again
    assert again["2"] < 5.0, again

    memory = by_instance(source.query(request_for("memory", pool), time.time()))
    assert set(memory) == {"1", "2", "3"}
    assert all(1.0 < mib < 500.0 for mib in memory.values()), memory
    assert memory["3"] > memory["1"]  # parent + child


def test_psutil_pidfile(spawn: Any, tmp_path: Path) -> None:
    """pidfile mode: the pid in the file (and its tree); stale or missing pidfiles skipped."""
    busy = spawn(BUSY, "senex-pidfile-busy")
    gone = spawn("pass", "senex-pidfile-gone")
    gone.wait(10)
    (tmp_path / "app-1.pid").write_text(f"{busy.pid}\n")
    (tmp_path / "app-2.pid").write_text(f"{gone.pid}\n")
    source = ProcessSource("proc", {"mode": "psutil", "pidfile": f"{tmp_path}/app-{{n}}.pid"})
    pool = pool_of(3)
    assert set(by_instance(source.query(request_for("memory", pool), time.time()))) == {"1"}
    assert by_instance(source.query(request_for("cpu", pool), time.time()))["1"] > 20.0
    (tmp_path / "app-1.pid").write_text("12ab")
    with pytest.raises(SourceError) as info:
        source.query(request_for("memory", pool), time.time())
    assert info.value.temporary is True
    assert "not a process id" in str(info.value)


def test_nothing_running_is_temporary() -> None:
    """No matching process for any instance: a temporary SourceError."""
    source = ProcessSource("proc", {"mode": "psutil", "match": f"senex-none-{uuid.uuid4()}-{{n}}"})
    with pytest.raises(SourceError) as info:
        source.query(request_for("memory", pool_of(2)), time.time())
    assert info.value.temporary is True
    assert "no instance of pool django is running" in str(info.value)


# --------------------------------------------------------------------------- cgroup


def cgroup2_root() -> Path | None:
    """The cgroup v2 mount point (``/sys/fs/cgroup`` or a hybrid ``.../unified``), if any."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


@pytest.fixture
def cgroup_dir() -> Iterator[Path]:
    """A fresh directory in the cgroup v2 hierarchy (skips when there is none or it is r/o)."""
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted (/proc/self/mounts has no cgroup2)")
    path = root / f"senex-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {root}: {exc.strerror}")
    yield path
    for child in sorted(path.iterdir(), reverse=True):
        if child.is_dir():
            child.rmdir()
    path.rmdir()


def test_cgroup_mode_on_a_real_cgroup(cgroup_dir: Path, spawn: Any) -> None:
    """cgroup mode: usage_usec deltas of real cgroups; the unit comes from the pool runtime."""
    procs = {1: spawn(BUSY, "senex-cgroup-busy"), 2: spawn(IDLE, "senex-cgroup-idle")}
    for n, proc in procs.items():
        unit = cgroup_dir / f"app@{n}.service"
        unit.mkdir()
        (unit / "cgroup.procs").write_text(f"{proc.pid}\n")
    pool = pool_of(3, runtime={"type": "systemd", "unit": "app@{n}.service"})
    source = ProcessSource("proc", {"mode": "cgroup", "cgroup_path": f"{cgroup_dir}/{{unit}}"})
    try:
        cpu = by_instance(source.query(request_for("cpu", pool), time.time()))
        assert set(cpu) == {"1", "2"}  # app@3.service has no cgroup: not running
        assert cpu["1"] > 20.0, cpu
        assert cpu["2"] < 5.0, cpu
        if (cgroup_dir / "app@1.service" / "memory.current").exists():
            memory = by_instance(source.query(request_for("memory", pool), time.time()))
            assert memory["1"] > 0
        else:  # a hybrid hierarchy: the memory controller stays in cgroup v1
            with pytest.raises(SourceError) as info:
                source.query(request_for("memory", pool), time.time())
            assert info.value.temporary is False
            assert "memory controller is not enabled" in str(info.value)
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def write_cgroup(directory: Path, usage_usec: int, memory: int = 104857600) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.stat").write_text(
        f"usage_usec {usage_usec}\nuser_usec {usage_usec // 2}\nsystem_usec {usage_usec // 2}\n"
    )
    (directory / "memory.current").write_text(f"{memory}\n")


def test_cgroup_deltas_on_files(tmp_path: Path) -> None:
    """CPU % = Δusage_usec / Δwall; first call samples once; resets and restarts re-baseline."""
    unit = tmp_path / "django@1.service"
    write_cgroup(unit, 1_000_000)
    source = ProcessSource(
        "proc",
        {"mode": "cgroup", "unit": "django@{n}.service", "cgroup_path": f"{tmp_path}/{{unit}}"},
    )
    fake = FakeClock()
    source.meter = CpuMeter(0.5, clock=fake.clock, sleep=fake.sleep)
    request = request_for("cpu", pool_of(2))  # django@2 has no directory: skipped

    fake.on_sleep = lambda: write_cgroup(unit, 1_250_000)  # 0.25 s of CPU in 0.5 s
    assert source.query(request, 1.0) == [Sample(1.0, 50.0, "1")]
    fake.on_sleep = lambda: pytest.fail("no second reading once there is a baseline")
    fake.now += 10.0
    write_cgroup(unit, 2_250_000)  # 1 s of CPU in 10 s
    assert by_instance(source.query(request, 2.0)) == {"1": pytest.approx(10.0)}
    fake.now += 0.2  # sooner than sample_interval: the last value again
    write_cgroup(unit, 2_400_000)
    assert by_instance(source.query(request, 3.0)) == {"1": pytest.approx(10.0)}

    fake.now += 10.0
    write_cgroup(unit, 100)  # the counter went back: a new baseline, sampled again
    fake.on_sleep = lambda: write_cgroup(unit, 500_100)  # 0.5 s of CPU in 0.5 s
    assert by_instance(source.query(request, 4.0)) == {"1": pytest.approx(100.0)}

    unit.rename(tmp_path / "old")  # restarted: a new cgroup directory (another inode)
    write_cgroup(unit, 900_000)
    shutil.rmtree(tmp_path / "old")
    fake.now += 10.0
    fake.on_sleep = lambda: write_cgroup(unit, 950_000)
    assert by_instance(source.query(request, 5.0)) == {"1": pytest.approx(10.0)}

    memory = source.query(request_for("memory", pool_of(2)), 6.0)
    assert memory == [Sample(6.0, 100.0, "1")]


def test_cgroup_without_cpu_stat_is_permanent(tmp_path: Path) -> None:
    """A directory that is not a cgroup v2 one (no cpu.stat) is a configuration error."""
    (tmp_path / "x@1.service").mkdir()
    source = ProcessSource(
        "proc", {"mode": "cgroup", "unit": "x@{n}.service", "cgroup_path": f"{tmp_path}/{{unit}}"}
    )
    with pytest.raises(SourceError) as info:
        source.query(request_for("cpu", pool_of(1)), 1.0)
    assert info.value.temporary is False
    assert "cpu.stat is missing" in str(info.value)


def test_cgroup_mode_on_this_hosts_hierarchy() -> None:
    """The default ``cgroup_path`` on this host, for units that are not running: on a cgroup
    v2 host "no instance is running" (temporary); on a cgroup v1 or hybrid host (this
    project's CI machine: /sys/fs/cgroup is a tmpfs) a permanent error saying so instead."""
    unit = f"senex-absent-{uuid.uuid4().hex[:8]}@{{n}}.service"
    source = ProcessSource("proc", {"mode": "cgroup", "unit": unit})
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    kind = {fields[1]: fields[2] for fields in mounts}.get("/sys/fs/cgroup")
    with pytest.raises(SourceError) as info:
        source.query(request_for("cpu", pool_of(2)), 1.0)
    if kind == "cgroup2":
        assert info.value.temporary is True
        assert "no instance of pool django is running" in str(info.value)
        return
    assert info.value.temporary is False
    assert f"/sys/fs/cgroup is {kind}, not a cgroup v2 hierarchy" in str(info.value)
    assert 'mode = "psutil"' in str(info.value)


# --------------------------------------------------------------------------- podman

# `podman stats --no-stream --format json` of Podman 4/5 (cmd/podman/containers/stats.go,
# outputJSON): string fields; cpu_time is the Go Duration of the container's CPU time,
# mem_usage go-units HumanSize (powers of 1000) of usage / limit.
PODMAN_JSON = """[
 {
  "id": "3f0c1a9e2b7d",
  "name": "django-1",
  "cpu_time": "1m4.501238s",
  "cpu_percent": "12.34%",
  "avg_cpu": "3.21%",
  "mem_usage": "187.3MB / 4.101GB",
  "mem_percent": "4.57%",
  "net_io": "1.234MB / 987.6kB",
  "block_io": "12.29MB / 0B",
  "pids": "5"
 },
 {
  "id": "9a8b7c6d5e4f",
  "name": "django-2",
  "cpu_time": "812.004ms",
  "cpu_percent": "0.00%",
  "avg_cpu": "0.05%",
  "mem_usage": "95.42MB / 4.101GB",
  "mem_percent": "2.33%",
  "net_io": "-- / --",
  "block_io": "0B / 0B",
  "pids": "3"
 },
 {
  "id": "0123456789ab",
  "name": "redis",
  "cpu_time": "2h3m4.5s",
  "cpu_percent": "--",
  "avg_cpu": "--",
  "mem_usage": "-- / --",
  "mem_percent": "--",
  "net_io": "-- / --",
  "block_io": "-- / --",
  "pids": "--"
 }
]
"""

# `podman stats --no-stream --format '{{json .}}'`: one define.ContainerStats per line.
PODMAN_RAW = (
    '{"AvgCPU":0.41,"ContainerID":"3f0c1a9e2b7d5c4b","Name":"django-1","PerCPU":null,'
    '"CPU":12.5,"CPUNano":64501238000,"CPUSystemNano":1200000,"SystemNano":1718000000000000000,'
    '"MemUsage":196395008,"MemLimit":4101000000,"MemPerc":4.79,"Network":{},'
    '"BlockInput":0,"BlockOutput":0,"PIDs":5,"UpTime":64501238000,"Duration":64501238000}\n'
    '{"AvgCPU":0,"ContainerID":"9a8b7c6d5e4f3a2b","Name":"django-2","PerCPU":null,'
    '"CPU":0,"CPUNano":812004000,"CPUSystemNano":0,"SystemNano":1718000000000000000,'
    '"MemUsage":100052992,"MemLimit":4101000000,"MemPerc":2.44,"Network":{},'
    '"BlockInput":0,"BlockOutput":0,"PIDs":3,"UpTime":812004000,"Duration":812004000}\n'
)


def test_podman_json_parser() -> None:
    """Both JSON shapes of podman stats parse; "--" is missing, not zero."""
    parsed = {s.name: s for s in parse_podman_stats(PODMAN_JSON)}
    first = parsed["django-1"]
    assert (first.name, first.id, first.cpu_percent) == ("django-1", "3f0c1a9e2b7d", 12.34)
    assert first.cpu_seconds == pytest.approx(64.501238)
    assert first.memory_bytes == pytest.approx(187.3e6)
    assert parsed["django-2"].cpu_seconds == pytest.approx(0.812004)
    assert parsed["django-2"].cpu_percent == 0.0
    assert parsed["redis"].cpu_seconds == pytest.approx(7384.5)
    assert parsed["redis"].cpu_percent is None
    assert parsed["redis"].memory_bytes is None
    raw = {s.name: s for s in parse_podman_stats(PODMAN_RAW)}
    assert raw["django-1"].cpu_seconds == pytest.approx(64.501238)
    assert raw["django-1"].cpu_percent == 12.5
    assert raw["django-1"].memory_bytes == 196395008
    assert raw["django-2"].id == "9a8b7c6d5e4f3a2b"
    assert parse_podman_stats("[]") == parse_podman_stats("null") == parse_podman_stats("") == []
    with pytest.raises(ValueError, match="JSON object"):
        parse_podman_stats("[1, 2]")
    assert parse_go_duration("1h2m3.5s") == 3723.5
    assert parse_go_duration("4.933ms") == pytest.approx(0.004933)
    assert parse_go_duration("1.5µs") == pytest.approx(1.5e-6)
    assert parse_size("1.5GiB") == 1.5 * 1024**3
    assert parse_size("3.092kB") == pytest.approx(3092.0)


FAKE_PODMAN = """\
import json, pathlib, sys
state = pathlib.Path(sys.argv[0]).with_suffix(".count")
calls = int(state.read_text()) + 1 if state.exists() else 1
state.write_text(str(calls))
assert sys.argv[1:] == ["stats", "--no-stream", "--format", "json"], sys.argv
if "{fail}":
    print("Error: {fail}", file=sys.stderr)
    sys.exit(125)
print(json.dumps([
    {{"id": "aaaaaaaaaaaa", "name": "django-1", "cpu_time": f"{{calls * 0.25}}s",
      "cpu_percent": "99.00%", "avg_cpu": "99.00%", "mem_usage": "187.3MB / 4.101GB",
      "mem_percent": "4.57%", "net_io": "0B / 0B", "block_io": "0B / 0B", "pids": "2"}},
    {{"id": "bbbbbbbbbbbb", "name": "other", "cpu_time": "1s", "cpu_percent": "1.00%",
      "avg_cpu": "1.00%", "mem_usage": "1MB / 4.101GB", "mem_percent": "0.01%",
      "net_io": "0B / 0B", "block_io": "0B / 0B", "pids": "1"}},
]))
"""


def fake_podman(tmp_path: Path, fail: str = "") -> list[str]:
    script = tmp_path / f"podman{'-failing' if fail else ''}.py"
    script.write_text(textwrap.dedent(FAKE_PODMAN.format(fail=fail)))
    return [sys.executable, str(script)]


def test_podman_mode_with_a_stand_in_podman(tmp_path: Path) -> None:
    """podman mode runs `podman stats --no-stream --format json`; CPU from cpu_time deltas."""
    source = ProcessSource(
        "proc",
        {"mode": "podman", "container": "django-{n}", "podman_command": fake_podman(tmp_path)},
    )
    fake = FakeClock()
    source.meter = CpuMeter(0.5, clock=fake.clock, sleep=fake.sleep)
    pool = pool_of(2)  # django-2 is not listed: not running
    # 0.25 s more cpu_time on the second run, 0.5 s apart: 50 %, not podman's 99 % average
    assert source.query(request_for("cpu", pool), 1.0) == [Sample(1.0, 50.0, "1")]
    [memory] = source.query(request_for("memory", pool), 2.0)
    assert (memory.at, memory.instance) == (2.0, "1")
    assert memory.value == pytest.approx(187.3e6 / MIB)

    failing = ProcessSource(
        "proc",
        {
            "mode": "podman",
            "container": "django-{n}",
            "podman_command": fake_podman(tmp_path, fail="cannot connect to Podman"),
        },
    )
    with pytest.raises(SourceError) as info:
        failing.query(request_for("memory", pool), 1.0)
    assert info.value.temporary is True
    assert "podman stats failed: Error: cannot connect to Podman" in str(info.value)

    # rootless Podman on a cgroup v1 host (the host lab's): it will not pass by itself
    rootless = ProcessSource(
        "proc",
        {
            "mode": "podman",
            "container": "django-{n}",
            "podman_command": fake_podman(
                tmp_path, fail="stats is not supported in rootless mode without cgroups v2"
            ),
        },
    )
    with pytest.raises(SourceError) as info:
        rootless.query(request_for("cpu", pool), 1.0)
    assert info.value.temporary is False
    assert 'cgroup v2 (systemd.unified_cgroup_hierarchy=1) or use mode = "psutil"' in str(
        info.value
    )

    missing = ProcessSource(
        "proc",
        {"mode": "podman", "container": "django-{n}", "podman_command": [str(tmp_path / "no")]},
    )
    with pytest.raises(SourceError) as info:
        missing.query(request_for("memory", pool), 1.0)
    assert info.value.temporary is False
    assert "not found" in str(info.value)


# --------------------------------------------------------------------------- settings


def problems(options: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        ProcessSource("proc", options)
    return info.value.problems


def test_settings_errors_name_the_field() -> None:
    """Mode-specific settings are checked against the mode, each naming its field."""
    assert problems({}) == ["sources.proc.mode: required"]
    assert problems({"mode": "psutil"}) == [
        'sources.proc.pidfile: mode "psutil" needs match or pidfile'
    ]
    assert problems({"mode": "podman"}) == [
        'sources.proc.container: mode "podman" needs a container name (e.g. "django-{n}")'
    ]
    assert problems({"mode": "cgroup", "match": "x {n}"}) == [
        'sources.proc.match: is only used with mode = "psutil" (mode is "cgroup")'
    ]
    assert problems({"mode": "psutil", "match": "daphne -p {prot}"}) == [
        "sources.proc.match: unknown placeholder {prot}; use {n}, {pool}, {port}"
    ]
    assert problems({"mode": "psutil", "match": "daphne"}) == [
        "sources.proc.match: must contain {n} or {port}, or every instance reads the same thing"
    ]
    assert problems({"mode": "psutil", "match": "x-{n}", "pidfile": "/run/{n}.pid"}) == [
        "sources.proc.pidfile: give match or pidfile, not both"
    ]
    assert problems({"mode": "psutil", "match": "(x-{n}"})[0].startswith(
        "sources.proc.match: is not a regular expression"
    )


def test_unknown_query_and_port_without_scheme_are_permanent() -> None:
    """metric.query other than cpu/memory, or {port} in a pool without ports: permanent."""
    source = ProcessSource("proc", {"mode": "psutil", "match": "daphne .* -p {port}"})
    with pytest.raises(SourceError) as info:
        source.query(request_for("disk", pool_of(1)), 1.0)
    assert info.value.temporary is False
    assert 'use "cpu" or "memory"' in str(info.value)
    with pytest.raises(SourceError) as info:
        source.query(request_for("cpu", pool_of(1)), 1.0)
    assert info.value.temporary is False
    assert "{port} needs a pool with a port scheme" in str(info.value)
    target = source._targets(request_for("cpu", pool_of(12, port="8000 + n")))
    assert target["1"] == r"daphne .* -p (?<![0-9])8001(?![0-9])"


def test_json_fixture_is_valid() -> None:
    """The fixture above is well-formed JSON (guards edits to it)."""
    assert len(json.loads(PODMAN_JSON)) == 3
