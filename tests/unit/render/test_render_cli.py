"""``senex-scale render`` run for real: exit codes, messages and what it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from senex_scale.render.render import MANIFEST


def run(args: list[str], environ: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m senex_scale ARGS`` with only the given secrets in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENEX_")} | environ
    return subprocess.run(
        [sys.executable, "-m", "senex_scale", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_render_writes_and_reports(
    example_path: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    """Exit 0; every file listed in --json is there; the summary goes to stderr."""
    out = tmp_path / "out"
    result = run(
        ["render", "--inventory", str(example_path), "--out", str(out), "--json"],
        environ,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["written"] is True
    assert {f["path"] for f in doc["files"]} == {
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MANIFEST
    }
    again = run(["render", "--inventory", str(example_path), "--out", str(out)], environ, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 changed, 0 removed" in again.stderr


def test_bad_inventory_exits_2_naming_the_path(
    example_path: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    """An invalid inventory: exit 2, "Error:" with the dotted path, no traceback, no output."""
    bad = tmp_path / "inventory.toml"
    text = example_path.read_text()
    bad.write_text(text.replace('memory = "1536M", cpu = "100%"', 'memory = "1536M", cpu = "lots"'))
    out = tmp_path / "out"
    result = run(["render", "--inventory", str(bad), "--out", str(out)], environ, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {bad}: 1 problem\n")
    assert (
        'pools.django.limits.cpu: "lots" is not a CPU quota (e.g. "100%" = one core, "250%")'
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_secret_exits_2(
    example_path: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    """An unset secret variable: exit 2 naming the inventory path and the variable."""
    del environ["SENEX_DB_PASSWORD"]
    out = tmp_path / "out"
    result = run(["render", "--inventory", str(example_path), "--out", str(out)], environ, tmp_path)
    assert result.returncode == 2
    assert (
        "postgres.users.senex_user.password: environment variable SENEX_DB_PASSWORD is not set"
        in result.stderr
    )
    assert not out.exists()


def test_check_writes_nothing(example_path: Path, environ: dict[str, str], tmp_path: Path) -> None:
    """--check renders and checks, exit 0, and creates no directory."""
    out = tmp_path / "out"
    result = run(
        ["render", "--inventory", str(example_path), "--out", str(out), "--check"],
        environ,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("checked ")
    assert not out.exists()
