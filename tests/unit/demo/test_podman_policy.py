"""The Podman demo's policy drives the units and the balancer that ``senex-scale render``
writes for the lab's inventory (``examples/hostlab-inventory.toml``), and is the default
policy at demo speed otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from senex_scale.demo.podman import CHANGES, DROPPED_RULES, podman_policy_doc
from senex_scale.demo.policy import Endpoints, demo_policy_doc
from senex_scale.lab.deployment import INVENTORY, random_secrets


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    argv = [sys.executable, "-m", "senex_scale", "render", "--inventory", str(INVENTORY)]
    done = subprocess.run(
        [*argv, "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **random_secrets()},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out / "lab"


def test_every_pool_runs_a_rendered_template_unit(rendered: Path) -> None:
    doc = podman_policy_doc("http://127.0.0.1:9090", speed=60)
    templates = {p.name for p in rendered.rglob("*@.container")}
    assert doc["pools"], doc
    for name, pool in doc["pools"].items():
        unit = pool["runtime"]["unit"]
        assert pool["runtime"]["type"] == "systemd"
        assert pool["runtime"]["scope"] == "user"
        assert unit.replace("{n}.service", ".container") in templates, (name, unit, templates)


def test_the_balancer_is_the_rendered_web_haproxy(rendered: Path) -> None:
    doc = podman_policy_doc("http://127.0.0.1:9090", speed=60)
    balancer = doc["pools"]["django"]["balancer"]
    config = next(rendered.rglob("haproxy-web.cfg")).read_text()
    assert balancer["type"] == "haproxy"
    assert f"backend {balancer['backend']}" in config
    assert f"stats socket {balancer['socket']}" in config


def test_otherwise_the_demo_policy_rule_for_rule() -> None:
    podman = podman_policy_doc("http://127.0.0.1:9090", speed=60)
    endpoints = Endpoints(
        state="sqlite:///tmp/x.db", listen="127.0.0.1:9308", prometheus="http://127.0.0.1:9090",
        redis="redis://127.0.0.1:6379/0", postgres_dsn="postgresql://m@127.0.0.1/db",
        disk="/tmp", supervisor="http://127.0.0.1:9001/RPC2", haproxy_socket="/tmp/s",
        haproxy_config="/tmp/c", django_base=8000, trading_base=9100, celery_base=9200,
        monitor_password_env="PW",
    )  # fmt: skip
    supervisord = demo_policy_doc(endpoints, speed=60)
    kept = [r for r in supervisord["rules"] if r["name"] not in DROPPED_RULES]
    assert [r["name"] for r in podman["rules"]] == [r["name"] for r in kept]
    for ours, theirs in zip(podman["rules"], kept, strict=True):
        assert ours["metric"]["query"] == theirs["metric"]["query"] or ours["name"] == "disk-usage"
        assert ours.get("scale_out") == theirs.get("scale_out")
        assert ours.get("scale_in") == theirs.get("scale_in")
    assert len(DROPPED_RULES) == len(supervisord["rules"]) - len(kept), "a dropped rule is gone"
    assert any("busy" in change for change in CHANGES)
    for source in ("broker", "redis"):
        assert podman["sources"][source]["password_env"] == "SENEX_REDIS_PASSWORD"
