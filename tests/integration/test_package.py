"""The package installs anywhere: ``python -m build`` makes a wheel and an sdist that hold
everything the commands read at run time, and the wheel, installed into a fresh virtual
environment outside the checkout, runs ``policy default``, ``validate``, ``simulate`` and
``render``, and with the ``django`` extra serves the Django app from a minimal settings module.

The build runs on a copy of the checkout without ``*.egg-info``: setuptools adds the files an
old ``SOURCES.txt`` lists to the sdist, so a stale one could hide a missing package-data glob.
The fresh environment gets its dependencies from the package index (on 2 cores about 40 s,
and 15-25 s more for the extra; the whole file about 1.5 min); the times are printed. The
base install comes first and its commands run without Django; the ``django`` extra is added
to the same environment for the last test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "senex_scale"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "*.egg-info",
    "__pycache__",
    ".hypothesis",
    ".import_linter_cache",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "dist",
    "out",
)
WARNING = re.compile(r"\bwarning\b|deprecat", re.IGNORECASE)
"""A warning line of the build: setuptools' deprecations, distutils' ``warning: ...``."""
SECRETS = {
    # examples/inventory.toml reads these from the environment (see its header)
    "SENEX_DB_PASSWORD": "dummy-db-secret",
    "SENEX_MONITOR_PASSWORD": "dummy-monitor-secret",
    "SENEX_REPLICATION_PASSWORD": "dummy-replication-secret",
    "SENEX_REDIS_PASSWORD": "dummy-redis-secret",
    "SENEX_SENTINEL_PASSWORD": "dummy-sentinel-secret",
}


def _data_files() -> set[str]:
    """What the commands read besides modules, relative to the package, from the checkout."""
    wanted = {"py.typed", "policy/default.toml", "web/templates/status.html"}
    for folder, pattern in (
        ("render/templates", "*"),
        ("web/templates", "*.html"),
        ("simulate/traces", "*.csv"),
        ("contrib/django", "*.py"),
    ):
        found = {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / folder).glob(pattern)}
        assert found, f"nothing matches {folder}/{pattern} in the checkout"
        wanted |= found
    return wanted


def _modules() -> set[str]:
    """Every module of the package in the checkout, relative to the package."""
    return {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def _say(config: pytest.Config, line: str) -> None:
    """Print past pytest's capture, so the timings are in CI's log."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(f"[package] {line}")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[package] {line}")


@dataclass
class Dist:
    wheel: Path
    sdist: Path
    output: str
    """What ``python -m build`` printed (stdout and stderr)."""


@dataclass
class Venv:
    root: Path
    work: Path
    """An empty directory outside the checkout: the commands' working directory."""
    wheel: Path

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a shell that activated this venv, and nothing of the checkout."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE"}
        }
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        return {**env, **(extra or {})}

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv[0]`` from the venv's bin in ``work``."""
        return subprocess.run(
            [str(self.root / "bin" / argv[0]), *argv[1:]],
            cwd=self.work,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pip_install(self, requirement: str, config: pytest.Config, what: str) -> None:
        started = time.monotonic()
        result = self.run("python", "-m", "pip", "install", "--quiet", requirement, timeout=900)
        took = time.monotonic() - started
        _say(config, f"pip install {what}: {took:.1f} s")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Dist:
    """The sdist and the wheel (built from the sdist) of a clean copy of the checkout."""
    base = tmp_path_factory.mktemp("package")
    source, out = base / "source", base / "dist"
    shutil.copytree(ROOT, source, symlinks=True, ignore=COPY_IGNORE)
    # PYTHONDONTWRITEBYTECODE makes distutils print "byte-compiling is disabled" warnings that
    # have nothing to do with the package; a user's build does not have it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    _say(
        pytestconfig,
        f"python -m build (sdist, then the wheel from it): {time.monotonic() - started:.1f} s",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist, output)


@pytest.fixture(scope="module")
def venv(
    dist: Dist, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Venv]:
    """A fresh venv outside the checkout with the wheel installed (no extras)."""
    base = tmp_path_factory.mktemp("fresh")
    assert not base.resolve().is_relative_to(ROOT)
    root, work = base / "venv", base / "work"
    work.mkdir()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    _say(pytestconfig, f"python -m venv: {time.monotonic() - started:.1f} s")
    env = Venv(root, work, dist.wheel)
    env.pip_install(str(dist.wheel), pytestconfig, "the wheel into the fresh venv")
    yield env
    shutil.rmtree(root, ignore_errors=True)


def test_build_prints_no_warning(dist: Dist) -> None:
    """python -m build prints no setuptools deprecation (license, ...) and no other warning."""
    warnings = [line for line in dist.output.splitlines() if WARNING.search(line)]
    assert not warnings, "\n".join(warnings)


def test_wheel_holds_every_module_and_data_file(dist: Dist) -> None:
    """The wheel has every module, the templates, default policy, traces and Django app."""
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"senex_scale-{VERSION}.dist-info/entry_points.txt").decode()
    missing = {f"senex_scale/{name}" for name in _modules() | _data_files()} - names
    assert not missing, sorted(missing)
    assert "senex-scale = senex_scale.cli:main" in entry_points


def test_sdist_holds_the_package_data_docs_and_examples(dist: Dist) -> None:
    """The sdist has the package with its data files, the docs and the example inventory."""
    prefix = f"senex_scale-{VERSION}"
    with tarfile.open(dist.sdist) as sdist:
        names = set(sdist.getnames())
    wanted = {f"{prefix}/src/senex_scale/{name}" for name in _modules() | _data_files()}
    wanted |= {f"{prefix}/{name}" for name in ("pyproject.toml", "README.md", "docs/render.md")}
    wanted.add(f"{prefix}/examples/inventory.toml")
    assert not wanted - names, sorted(wanted - names)


def test_installed_package_is_the_wheel_not_the_checkout(venv: Venv) -> None:
    """The fresh venv imports senex_scale from its own site-packages."""
    result = venv.run("python", "-c", "import senex_scale; print(senex_scale.__file__)")
    assert result.returncode == 0, result.stderr
    where = Path(result.stdout.strip()).resolve()
    assert where.is_relative_to(venv.root.resolve()), where


def test_base_install_has_no_django(venv: Venv) -> None:
    """Without the extra there is no Django: the commands' tests below run without it."""
    assert venv.run("python", "-c", "import django").returncode != 0


def test_policy_default_validates(venv: Venv) -> None:
    """policy default prints the built-in policy, and validate accepts it."""
    printed = venv.run("senex-scale", "policy", "default")
    assert printed.returncode == 0, printed.stderr
    (venv.work / "policy.toml").write_text(printed.stdout, encoding="utf-8")
    result = venv.run("senex-scale", "validate", "policy.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_simulate_replays_the_bundled_trading_day(venv: Venv) -> None:
    """simulate with no trace replays the bundled trading day against every baseline."""
    result = venv.run("senex-scale", "simulate", "--json", "scores.json")
    assert result.returncode == 0, result.stderr
    doc = json.loads((venv.work / "scores.json").read_text(encoding="utf-8"))
    assert doc["trace"] == "trading-day"
    assert set(doc["results"]) == {"policy", "seed-script", "hpa", "static", "oracle"}
    assert "seed-script" in result.stdout


def test_simulate_finds_a_bundled_trace_by_name(venv: Venv) -> None:
    """--trace news-day, with no such file, replays the bundled news day."""
    result = venv.run(
        "senex-scale", "simulate", "--trace", "news-day", "--compare", "none", "--json", "-"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trace"] == "news-day"


def test_render_writes_the_example_inventory(venv: Venv) -> None:
    """render --inventory examples/inventory.toml writes every host's files from the wheel."""
    shutil.copy(ROOT / "examples" / "inventory.toml", venv.work / "inventory.toml")
    result = venv.run(
        "senex-scale", "render", "--inventory", "inventory.toml", "--out", "out", env=SECRETS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = venv.work / "out"
    for name in (
        "web01/quadlet/django@.container",
        "web01/nginx/nginx.conf",
        "lb01/haproxy/haproxy.cfg",
        "lb01/prometheus/rules/senex-scale.yml",
        "cache01/redis/sentinel.conf",
        "db01/quadlet/postgres.container",
    ):
        assert (out / name).is_file(), name
    assert "PublishPort" in (out / "web01/quadlet/django@.container").read_text(encoding="utf-8")


DJANGO_SITE = '''\
"""A minimal project with Senex Scale's Django app, its router and middleware."""

from django.urls import path

from senex_scale.contrib.django.health import liveness
from senex_scale.contrib.django.metrics import metrics_view

SECRET_KEY = "test-only"
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "senex_scale.contrib.django",
]
MIDDLEWARE = [
    "senex_scale.contrib.django.metrics.MetricsMiddleware",
    "senex_scale.contrib.django.router.ReadYourWritesMiddleware",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DATABASE_ROUTERS = ["senex_scale.contrib.django.router.ReplicaRouter"]
ROOT_URLCONF = "pkgsite"
urlpatterns = [path("health/", liveness), path("metrics", metrics_view)]
'''

DJANGO_PROBE = """\
import django
from django.core.management import call_command
from django.db import router
from django.test import Client

django.setup()
call_command("check", fail_level="WARNING")
client = Client()
health = client.get("/health/")
assert health.status_code == 200 and health.content.startswith(b"ok pid="), health
metrics = client.get("/metrics")
assert metrics.status_code == 200, metrics
assert b'django_http_requests_total{method="GET",status="200"}' in metrics.content
assert router.db_for_read(None) == router.db_for_write(None) == "default"
print("django app ok")
"""


def test_django_extra_serves_the_app(venv: Venv, pytestconfig: pytest.Config) -> None:
    """senex-scale[django]: the app passes Django's checks and serves /health/ and /metrics."""
    venv.pip_install(f"{venv.wheel}[django]", pytestconfig, "the django extra on top")
    (venv.work / "pkgsite.py").write_text(DJANGO_SITE, encoding="utf-8")
    (venv.work / "probe.py").write_text(DJANGO_PROBE, encoding="utf-8")
    site = {"DJANGO_SETTINGS_MODULE": "pkgsite", "PYTHONPATH": str(venv.work)}
    check = venv.run("django-admin", "check", "--fail-level", "WARNING", env=site)
    assert check.returncode == 0, check.stdout + check.stderr
    result = venv.run("python", "probe.py", env=site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "django app ok" in result.stdout
