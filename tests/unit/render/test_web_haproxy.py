"""Web hosts: nginx -> a local HAProxy on loopback -> the instances (issue 22).

nginx's upstream is static (the local HAProxy), so scaling never reloads nginx; the instances
are the local HAProxy's servers, written as the controller's ``haproxy`` balancer writes them;
``/senex/`` is refused by nginx and by HAProxy; the policies that describe the same deployment
(the built-in default, examples/policy-multi-host.toml) point their balancer at it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from senex_scale.balancers.base import MemberState
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.errors import PermanentError
from senex_scale.policy import load_default, load_policy
from senex_scale.policy.models import Pool
from senex_scale.render.inventory import InventoryError, load_inventory, validate_inventory
from senex_scale.render.render import render

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def rendered(example: dict[str, Any], environ: dict[str, str], tmp_path: Path) -> Path:
    """Render ``example`` into tmp_path/out."""
    out = tmp_path / "out"
    render(validate_inventory(example), out, environ=environ)
    return out


def servers(config: str) -> list[str]:
    """The ``server`` lines of a HAProxy config, stripped."""
    return [line.strip() for line in config.splitlines() if line.strip().startswith("server ")]


def single_host(example: dict[str, Any]) -> dict[str, Any]:
    """The example with web02 gone: one web host (a pool without ``hosts`` in the policy)."""
    del example["hosts"]["web02"]
    return example


# --------------------------------------------------------------------------- nginx


def test_nginx_upstream_is_the_local_haproxy_only(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """nginx's upstream has one server, the local HAProxy's loopback port (keepalive kept), and
    no instance: a scale action has nothing to change in nginx."""
    out = rendered(example, environ, tmp_path)
    text = (out / "web01/nginx/conf.d/django_backend.conf").read_text()
    body = [line.strip() for line in text.splitlines() if line and not line.startswith("#")]
    assert body == [
        "upstream django_backend {",
        "server 127.0.0.1:7999;",
        "keepalive 32;",
        "}",
    ]


def test_a_stale_nginx_balancer_policy_is_refused_on_it(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """A policy still saying balancer.type = "nginx" on that file fails loudly instead of
    replacing the local HAProxy by the instances (its server fits no instance number)."""
    out = rendered(example, environ, tmp_path)
    path = out / "web01/nginx/conf.d/django_backend.conf"
    pool = Pool.model_validate({"kind": "web", "min": 2, "max": 5, "port": "8000 + n"})
    balancer = NginxBalancer("django", pool, {"upstream": "django_backend", "file": str(path)})
    with pytest.raises(PermanentError, match=r"server 127\.0\.0\.1:7999 has no"):
        balancer.members()


def test_site_refuses_senex_paths(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """The site answers 404 itself for /senex/ (the instances' control endpoints), with /ready
    and /metrics, in one regex location nginx matches after normalising the path."""
    out = rendered(example, environ, tmp_path)
    site = (out / "web01/nginx/conf.d/senex.conf").read_text()
    block = re.search(r"location ~ \^/\(([a-z|]+)\)\(/\|\$\) \{\n\s+return 404;", site)
    assert block is not None, site
    assert set(block.group(1).split("|")) == {"ready", "metrics", "senex"}


# --------------------------------------------------------------------------- the local HAProxy


def test_local_haproxy_config(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """leastconn, no cookie, the pool's health check, a tunnel timeout, a bounded hard stop,
    a private admin socket (and the TCP one the example asks for) and the /senex/ deny."""
    out = rendered(example, environ, tmp_path)
    text = (out / "web01/haproxy/haproxy-web.cfg").read_text()
    for line in (
        "stats socket /var/lib/senex-scale/haproxy-web.sock mode 600 level admin "
        "expose-fd listeners",
        "stats socket ipv4@10.0.0.11:9999 level admin",
        "hard-stop-after 120s",
        "timeout tunnel 1h",
        "bind 127.0.0.1:7999",
        "http-request deny deny_status 404 if "
        "{ path,url_dec -m reg ^/+(ready|metrics|senex)(/|$) }",
        "default_backend django_backend",
        "backend django_backend",
        "balance leastconn",
        "option httpchk GET /health/ HTTP/1.1",
        "http-check send hdr Host your-domain.com",
        "http-check expect status 200",
    ):
        assert f"    {line}\n" in text or f"{line}\n" in text, line
    assert not re.search(r"^\s*cookie\s", text, re.MULTILINE)
    assert " cookie " not in "\n".join(servers(text))
    assert not re.search(r"^\s*option forwardfor", text, re.MULTILINE)  # nginx sets it


def test_instances_are_spread_over_the_web_hosts(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """With two web hosts, instance n of 1..min is on host (n - 1) mod 2, at that host's
    address: the controller's spread placement and its per-host balancers give the same."""
    example["pools"]["django"]["min"] = 3
    example["schedules"] = []
    out = rendered(example, environ, tmp_path)
    web01 = servers((out / "web01/haproxy/haproxy-web.cfg").read_text())
    web02 = servers((out / "web02/haproxy/haproxy-web.cfg").read_text())
    assert web01 == ["server django-1 10.0.0.11:8001 check", "server django-3 10.0.0.11:8003 check"]
    assert web02 == ["server django-2 10.0.0.12:8002 check"]


def test_one_web_host_has_every_instance_on_loopback(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """One web host: instances 1..min at 127.0.0.1:BASE+n (a pool without hosts), and no TCP
    admin socket unless asked for."""
    example = single_host(example)
    del example["web_haproxy"]["admin_port"]
    out = rendered(example, environ, tmp_path)
    text = (out / "web01/haproxy/haproxy-web.cfg").read_text()
    assert servers(text) == [
        "server django-1 127.0.0.1:8001 check",
        "server django-2 127.0.0.1:8002 check",
    ]
    assert "ipv4@" not in text


def test_unit_runs_haproxy_on_the_rendered_config(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """The systemd unit checks the config, runs HAProxy in master-worker mode with systemd
    notification, and reloads it with SIGUSR2 (a new process; the old keeps its connections
    for hard-stop-after); it is installed where the deployment's user units go."""
    out = rendered(example, environ, tmp_path)
    unit = (out / "web01/systemd/haproxy-web.service").read_text()
    config = "/var/lib/senex-scale/haproxy-web.cfg"
    for line in (
        "Type=notify",
        f"ExecStartPre=/usr/sbin/haproxy -c -f {config}",
        f"ExecStart=/usr/sbin/haproxy -Ws -f {config}",
        f"ExecReload=/usr/sbin/haproxy -c -f {config}",
        "ExecReload=/bin/kill -USR2 $MAINPID",
        "Restart=always",
        "WantedBy=default.target",
    ):
        assert f"{line}\n" in unit, line
    manifest = (out / "MANIFEST.json").read_text()
    assert '"install": "~/.config/systemd/user/haproxy-web.service"' in manifest
    assert f'"install": "{config}"' in manifest


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"listen": 8000}, "web_haproxy.listen: 8000 is also nginx.listen"),
        (
            {"listen": 8003},
            "web_haproxy.listen: 8003 is the port of pools.django instance 3 "
            "(BASE + n = 8000 + n, n up to 5)",
        ),
        ({"admin_port": 7999}, "web_haproxy.admin_port: 7999 is also web_haproxy.listen"),
        ({"config": "haproxy-web.cfg"}, 'web_haproxy.config: "haproxy-web.cfg" is not an absolute'),
        ({"enabeld": False}, 'web_haproxy: unknown key "enabeld" (did you mean "enabled"?)'),
    ],
)
def test_bad_settings_are_named(
    example: dict[str, Any], change: dict[str, Any], problem: str
) -> None:
    """A port shared with nginx or an instance, or a bad value, names its web_haproxy field."""
    example["web_haproxy"].update(change)
    with pytest.raises(InventoryError) as info:
        validate_inventory(example)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_disabled_checks_no_ports(example: dict[str, Any]) -> None:
    """enabled = false: the local HAProxy's ports are not checked (nothing listens on them)."""
    example["web_haproxy"] = {"enabled": False, "listen": 8000}
    assert validate_inventory(example).web_haproxy.enabled is False


# --------------------------------------------------------------------------- the policies


def _config_line(options: dict[str, Any], address: str) -> str:
    """The line the policy's haproxy balancer persists for ready instance 1 at ``address``."""
    settings = {k: v for k, v in options.items() if k not in ("per_host",)}
    balancer = HAProxyBalancer(
        "django", Pool.model_validate({"kind": "web", "min": 0, "max": 5}), settings
    )
    return balancer._config_line(balancer.server_name(1), address, MemberState.READY)


def test_default_policy_drives_the_rendered_local_haproxy(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """The built-in default's django pool (one host) uses the local HAProxy render writes:
    its admin socket, backend and config, no cookie, server lines in the rendered form, and
    a websockets table; its ports and health are the inventory's."""
    out = rendered(single_host(example), environ, tmp_path)
    inventory = validate_inventory(example)
    django = load_default().pools["django"]
    assert django.balancer is not None
    options = django.balancer.options
    assert django.balancer.type == "haproxy"
    assert options == {
        "socket": inventory.web_haproxy.admin_socket,
        "backend": inventory.nginx.upstream,
        "config": inventory.web_haproxy.config,
        "cookie": False,
    }
    web = inventory.pools["django"]
    assert (django.port, django.health) == (web.port, web.health)
    text = (out / "web01/haproxy/haproxy-web.cfg").read_text()
    assert servers(text)[0] == _config_line(options, "127.0.0.1:8001")
    assert django.websockets is not None
    assert django.websockets.control.startswith("/senex/")


def test_multi_host_policy_drives_each_hosts_local_haproxy(
    environ: dict[str, str], tmp_path: Path
) -> None:
    """examples/policy-multi-host.toml: one local HAProxy per web host (per_host), its TCP
    admin socket on the host's address at the inventory's admin_port, the same backend and
    config, server lines in the rendered form."""
    policy = load_policy(str(EXAMPLES / "policy-multi-host.toml"))
    inventory = load_inventory(EXAMPLES / "inventory.toml")
    out = tmp_path / "out"
    render(inventory, out, environ=environ)
    django = policy.pools["django"]
    assert django.balancer is not None
    assert django.balancer.type == "haproxy"
    options = django.balancer.options
    assert options == {
        "per_host": True,
        "socket": f"{{address}}:{inventory.web_haproxy.admin_port}",
        "backend": inventory.nginx.upstream,
        "config": inventory.web_haproxy.config,
        "cookie": False,
    }
    text = (out / "web01/haproxy/haproxy-web.cfg").read_text()
    address = policy.hosts["web01"].address
    assert f"stats socket ipv4@{address}:{inventory.web_haproxy.admin_port} level admin" in text
    line = _config_line(options | {"socket": f"{address}:9999"}, f"{address}:8001")
    assert servers(text)[0] == line
    assert django.websockets is not None
