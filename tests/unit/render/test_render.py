"""Rendering: all files, secrets only in 0600 files, stable re-renders, ports right at n >= 10,
and an output directory that is never half-written."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from senex_scale.errors import InputError
from senex_scale.render.inventory import validate_inventory
from senex_scale.render.render import (
    MANIFEST,
    RenderedFile,
    RenderError,
    check_quadlet,
    diff,
    render,
)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mode."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def sections(unit: str) -> dict[str, list[str]]:
    """A unit's key=value lines by section (comments dropped)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in unit.splitlines():
        if line.startswith("["):
            current = found.setdefault(line.strip("[]"), [])
        elif line and not line.startswith("#"):
            current.append(line)
    return found


def test_renders_every_kind(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """The example yields the files the issue lists, each on the hosts of its role."""
    out = tmp_path / "out"
    result = render(validate_inventory(example), out, environ=environ)
    assert result.written
    paths = set(snapshot(out))
    for path in (
        "web01/quadlet/django@.container",
        "web01/quadlet/celery-worker@.container",
        "web01/quadlet/celery-worker-trading@.container",
        "web01/quadlet/celery-worker-accounts@.container",
        "web01/quadlet/celery-worker-general@.container",
        "web01/quadlet/celery-beat.container",
        "web01/quadlet/senex_net.network",
        "web01/nginx/nginx.conf",
        "web01/nginx/conf.d/django_backend.conf",
        "web01/nginx/conf.d/senex.conf",
        "web01/haproxy/haproxy-web.cfg",
        "web01/systemd/haproxy-web.service",
        "web02/haproxy/haproxy-web.cfg",
        "web01/systemd/senex-scale.service",
        "web01/systemd/senex-scale-market-open.timer",
        "web01/systemd/senex-scale-market-open.service",
        "db01/quadlet/postgres.container",
        "db01/postgresql/postgresql.conf",
        "db01/postgresql/pg_hba.conf",
        "db01/postgresql/roles.sql",
        "db01/pgbouncer/pgbouncer.ini",
        "db01/pgbouncer/userlist.txt",
        "db02/postgresql/postgresql.conf",
        "cache01/quadlet/redis.container",
        "cache01/redis/redis.conf",
        "cache02/redis/redis.conf",
        "cache03/redis/sentinel.conf",
        "lb01/haproxy/haproxy.cfg",
        "lb01/prometheus/prometheus.yml",
        "lb01/prometheus/rules/senex-scale.yml",
        "lb01/grafana/senex-scale.json",
        MANIFEST,
    ):
        assert path in paths, path
    assert "web02/quadlet/celery-beat.container" not in paths  # one beat, on its host only


def test_secrets_only_in_0600_files(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """Every file holding a secret value is mode 0600; no other file holds one."""
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    secret_files = set()
    for path, (data, mode) in snapshot(out).items():
        if any(value.encode() in data for value in environ.values()):
            assert mode == 0o600, path
            secret_files.add(path)
        if path.endswith(("userlist.txt", "roles.sql", "redis.conf", "sentinel.conf")):
            assert mode == 0o600, path
    assert "db02/postgresql/postgresql.conf" in secret_files  # primary_conninfo
    assert "cache01/redis/redis.conf" in secret_files
    userlist = (out / "db01/pgbouncer/userlist.txt").read_text()
    entry = r'"(senex_user|senex_monitor)" "SCRAM-SHA-256\$4096:[^"]+"\n'
    assert re.fullmatch(f"({entry}){{2}}", userlist)


def test_seed_mistakes_are_not_rendered(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """No Memory= or CPUQuota= in [Container], no 800%i, no md5 in PgBouncer."""
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    unit = (out / "web01/quadlet/django@.container").read_text()
    container, service = sections(unit)["Container"], sections(unit)["Service"]
    assert not [line for line in container if line.startswith(("Memory", "CPUQuota"))]
    assert "PodmanArgs=--memory=1536M" in container
    assert "CPUQuota=100%" in service
    assert not [line for line in container if "800%i" in line]
    assert "HealthCmd=curl -fsS --max-time 5 http://127.0.0.1:8000/health/ || exit 1" in unit
    ini = (out / "db01/pgbouncer/pgbouncer.ini").read_text()
    assert "auth_type = scram-sha-256" in ini
    assert not [line for line in ini.splitlines() if "md5" in line and line[0] not in ";#"]


@pytest.mark.parametrize(("setting", "expected"), [(None, "30"), ("2m", "120")])
def test_daphne_holds_a_handshake_for_the_app(
    example: dict[str, Any],
    environ: dict[str, str],
    tmp_path: Path,
    setting: str | None,
    expected: str,
) -> None:
    """The web unit's Daphne waits websocket_connect_timeout (default 30 s, not Daphne's 5 s)
    for the app to accept a WebSocket: a connect rush is not refused with 502s."""
    if setting is not None:
        example["pools"]["django"]["websocket_connect_timeout"] = setting
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    unit = (out / "web01/quadlet/django@.container").read_text()
    (exec_line,) = [line for line in sections(unit)["Container"] if line.startswith("Exec=")]
    words = exec_line.removeprefix("Exec=").split()
    assert words[0] == "daphne"
    assert words[words.index("--websocket_connect_timeout") + 1] == expected
    assert words[-1].endswith(".asgi:application")


def _exec_start_pre(unit: str) -> str:
    line = next(x for x in unit.splitlines() if x.startswith("ExecStartPre="))
    command = line.removeprefix("ExecStartPre=/bin/sh -c ")
    assert command.startswith("'")
    assert command.endswith("'")
    return command[1:-1]


def _as_systemd(command: str, instance: str, runtime: Path) -> str:
    """The shell text systemd would run: specifiers and "$$" resolved."""
    return command.replace("%i", instance).replace("%t", str(runtime)).replace("$$", "$")


@pytest.mark.parametrize(("instance", "port"), [("1", 8001), ("10", 8010), ("12", 8012)])
def test_instance_port_at_n_ge_10(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path, instance: str, port: int
) -> None:
    """The unit's ExecStartPre, run by a real shell, gives BASE + n (8010 for n = 10, not 80010)."""
    example["pools"]["django"]["max"] = 12
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    unit = (out / "web01/quadlet/django@.container").read_text()
    # two web hosts: on each host's own address, where the controller (on another host)
    # probes it and the policy's per-host balancer reaches it
    assert "PublishPort=10.0.0.11:${SENEX_PORT}:8000" in unit
    assert "EnvironmentFile=-%t/senex-scale/django@%i.env" in unit
    script = _as_systemd(_exec_start_pre(unit), instance, tmp_path / "run")
    subprocess.run(["/bin/sh", "-c", script], check=True, timeout=10)
    env = (tmp_path / "run" / "senex-scale" / f"django@{instance}.env").read_text()
    assert env == f"SENEX_PORT={port}\n"


def test_instance_name_must_be_a_number(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """django@abc fails before podman runs instead of publishing port BASE + 0."""
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    unit = (out / "web01/quadlet/django@.container").read_text()
    script = _as_systemd(_exec_start_pre(unit), "abc", tmp_path / "run")
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert "instance name abc is not a number" in result.stderr
    assert not (tmp_path / "run" / "senex-scale" / "django@abc.env").exists()


def test_upstream_is_the_nginx_balancers_format(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """Without the local HAProxy, the upstream lists the host's share of instances 1..min with
    the nginx balancer's marks, so it adopts the file."""
    example["web_haproxy"] = {"enabled": False}
    example["pools"]["django"]["min"] = 11
    example["pools"]["django"]["max"] = 12
    example["schedules"] = []
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    text = (out / "web01/nginx/conf.d/django_backend.conf").read_text()
    assert "    # senex-scale n=11\n    server 10.0.0.11:8011 max_fails=3 fail_timeout=30s;" in text
    assert "n=10" not in text  # web02's
    assert "ip_hash;" in text
    assert "keepalive 32;" in text
    assert not (out / "web01/haproxy").exists()
    assert not (out / "web01/systemd/haproxy-web.service").exists()


def test_rerender_changes_nothing(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """Same inventory, same secrets: identical files (the SCRAM salts are kept)."""
    inv = validate_inventory(example)
    out = tmp_path / "out"
    render(inv, out, environ=environ)
    before = snapshot(out)
    again = render(inv, out, environ=environ)
    assert again.changed == []
    assert snapshot(out) == before
    environ["SENEX_DB_PASSWORD"] = "a-new-db-password-1"
    changed = render(inv, out, environ=environ).changed
    assert changed == ["db01/postgresql/roles.sql", "db01/pgbouncer/userlist.txt"]


def test_failed_check_leaves_out_untouched(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """A secret that would land in a world-readable file fails the render; OUT keeps the old
    files byte for byte and no temporary directory is left behind."""
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    before = snapshot(out)
    environ["SENEX_REDIS_PASSWORD"] = "senextrader"  # the database name: in pgbouncer.ini
    example["pools"]["django"]["max"] = 12  # and a real change that must not be written
    with pytest.raises(RenderError) as info:
        render(validate_inventory(example), out, environ=environ)
    assert any(
        p.startswith("db01/pgbouncer/pgbouncer.ini: contains the value of redis.password")
        for p in info.value.problems
    )
    assert "senextrader" not in str(info.value).replace("pgbouncer.ini", "")
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_failed_validator_on_first_render_creates_nothing(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """A check that fails on a first render leaves no OUT and no temporary directory."""

    def refuse(files: Sequence[RenderedFile], secrets: Any) -> list[str]:
        return [f"{len(files)} files refused"]

    with pytest.raises(RenderError, match="files refused"):
        render(validate_inventory(example), tmp_path / "out", environ=environ, validators=[refuse])
    assert os.listdir(tmp_path) == []


def test_refuses_a_directory_it_did_not_make(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """A non-empty --out without MANIFEST.json (say, /etc) is never replaced."""
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not made by senex-scale render"):
        render(validate_inventory(example), tmp_path, environ=environ)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_check_and_diff_write_nothing(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """write=False renders and checks only; the diff shows changes but never a secret."""
    out = tmp_path / "out"
    inv = validate_inventory(example)
    render(inv, out, environ=environ)
    before = snapshot(out)
    environ["SENEX_REDIS_PASSWORD"] = "changed-redis-pw-9"
    example["nginx"]["keepalive"] = 64
    result = render(validate_inventory(example), out, environ=environ, write=False)
    assert not result.written
    assert snapshot(out) == before
    text = diff(result.files, out)
    assert "-    keepalive 32;\n+    keepalive 64;\n" in text
    assert "secret file cache01/redis/redis.conf differs (mode 0600; content not shown)" in text
    assert "changed-redis-pw-9" not in text
    assert environ["SENEX_REDIS_PASSWORD"] not in text


def test_quadlet_check_refuses_the_seeds_keys() -> None:
    """Memory= and CPUQuota= in [Container] are caught by the renderer's own check."""
    unit = "[Container]\nImage=x\nMemory=1536M\nCPUQuota=100%\n[Service]\nCPUQuota=100%\n"
    problems = check_quadlet([RenderedFile("h/quadlet/a.container", unit, "h", "quadlet", "")], {})
    assert problems == [
        "h/quadlet/a.container:3: Memory= is not a [Container] key",
        "h/quadlet/a.container:4: CPUQuota= is not a [Container] key",
    ]


@pytest.mark.parametrize("cookie", [None, "SERVERID"])
def test_the_balancer_host_is_leastconn_and_sticky_only_when_asked(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path, cookie: str | None
) -> None:
    """lb01's HAProxy picks the web host with the fewest connections; a cookie (and each
    server's cookie value) only when the inventory sets one."""
    example["haproxy"].pop("cookie", None)
    if cookie is not None:
        example["haproxy"]["cookie"] = cookie
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    text = (out / "lb01/haproxy/haproxy.cfg").read_text()
    assert "    balance leastconn\n" in text
    servers = re.findall(r"^    server (\S+) \S+ (.*)$", text, re.MULTILINE)
    assert [name for name, _ in servers] == ["web01", "web02"]
    if cookie is None:
        assert "cookie" not in text
        assert all(rest == "check" for _, rest in servers)
    else:
        assert f"    cookie {cookie} insert indirect nocache\n" in text
        assert [rest for _, rest in servers] == ["check cookie web01", "check cookie web02"]


def test_a_single_web_host_publishes_on_loopback(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """One web host: the instances answer on 127.0.0.1 only (nothing else needs them)."""
    example["hosts"]["web02"]["roles"] = ["worker"]
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    unit = (out / "web01/quadlet/django@.container").read_text()
    assert "PublishPort=127.0.0.1:${SENEX_PORT}:8000" in unit
    assert not (out / "web02/quadlet/django@.container").exists()


def test_the_controller_unit_reads_its_secrets_from_a_file(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """The policy names environment variables for its secrets; the unit reads them from the
    operator's 0600 file (docs/security.md), optional so a policy without secrets starts."""
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    unit = sections((out / "web01/systemd/senex-scale.service").read_text())
    assert "EnvironmentFile=-/etc/senex-scale/env" in unit["Service"]
    assert any(line.startswith("ExecStart=") for line in unit["Service"])
