"""HAProxy and nginx with ``host``: their files changed and checked on that host through its
transport (a local-transport host: real commands, real servers)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from senex_scale.balancers.base import MemberState, build_balancer
from senex_scale.balancers.files import RemoteFiles
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.testing import wait_until

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import HAProxy, Nginx, Site

pytestmark = pytest.mark.integration

NOBODY = 65534


def on_web01(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for web01 alone: ``host = "web01"``, the placeholders filled in."""
    filled = {
        k: v.replace("{host}", "web01") if isinstance(v, str) else v for k, v in options.items()
    }
    return filled | {"host": "web01"}


def leftovers(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}."))


def programs(commands: Callable[[], list[list[str]]]) -> set[str]:
    return {argv[0] for argv in commands()}


# --------------------------------------------------------------------------- HAProxy


def haproxy_on_web01(site: Site, **more: Any) -> HAProxyBalancer:
    spec = site.pool(on_web01(site.haproxy_options(**more)))
    balancer = build_balancer("web", spec, site.hosts)
    assert isinstance(balancer, HAProxyBalancer)
    return balancer


def test_haproxy_changes_are_persisted_through_the_transport(
    haproxies: dict[str, HAProxy],
    site: Site,
    commands: Callable[[], list[list[str]]],
) -> None:
    """add, drain, remove: each server line written on the host with cat/mktemp/mv."""
    proxy = haproxies["web01"]
    proxy.config.chmod(0o640)
    os.chown(proxy.config, NOBODY, NOBODY)
    lb = haproxy_on_web01(site)
    assert isinstance(lb.files, RemoteFiles)
    lb.add(1, site.address(1))
    lb.add(3, site.address(3))
    wait_until(
        lambda: {m.state for m in lb.members()} == {MemberState.READY}, 5, "web-1, web-3 ready"
    )
    assert set(proxy.bodies(6)) == {"1", "3"}
    assert [line.split()[1:3] for line in proxy.server_lines()] == [
        ["web-1", site.address(1)],
        ["web-3", site.address(3)],
    ]
    lb.drain(1)
    assert proxy.server_lines()[0].endswith("weight 0")
    lb.remove(1)
    assert [line.split()[1] for line in proxy.server_lines()] == ["web-3"]
    st = proxy.config.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, NOBODY, NOBODY)
    assert leftovers(proxy.root, "haproxy.cfg") == []
    assert {"cat", "mktemp", "dd", "chmod", "chown", "mv"} <= programs(commands)
    assert any(argv[:2] == ["mv", "-f"] and argv[-1] == str(proxy.config) for argv in commands())


def test_haproxy_check_failing_on_the_host_changes_nothing(
    haproxies: dict[str, HAProxy], site: Site
) -> None:
    """haproxy -c refuses the new file: PermanentError naming host and file, file byte-identical,
    no temp file, HAProxy unchanged."""
    proxy = haproxies["web01"]
    before = proxy.config.read_bytes()
    lb = haproxy_on_web01(site, server_options="no-such-keyword 1")
    with pytest.raises(PermanentError) as caught:
        lb.add(1, site.address(1))
    message = str(caught.value)
    assert f"{proxy.config} on host web01: the new config fails haproxy -c" in message
    assert "no-such-keyword" in message
    assert proxy.config.read_bytes() == before
    assert leftovers(proxy.root, "haproxy.cfg") == []
    assert lb.members() == []


def test_haproxy_missing_on_the_host_is_permanent(
    haproxies: dict[str, HAProxy], site: Site, tmp_path: Path
) -> None:
    """A haproxy binary that is not there names the setting; nothing changes."""
    proxy = haproxies["web01"]
    before = proxy.config.read_bytes()
    lb = haproxy_on_web01(site, haproxy=str(tmp_path / "no-haproxy"))
    with pytest.raises(PermanentError, match=r"no such program on host web01 \(balancer.haproxy\)"):
        lb.add(1, site.address(1))
    assert proxy.config.read_bytes() == before
    assert lb.members() == []


# --------------------------------------------------------------------------- nginx


def nginx_on_web01(site: Site, **more: Any) -> NginxBalancer:
    spec = site.pool(on_web01(site.nginx_options(**more)))
    balancer = build_balancer("web", spec, site.hosts)
    assert isinstance(balancer, NginxBalancer)
    return balancer


def test_nginx_changes_are_written_and_reloaded_through_the_transport(
    nginxes: dict[str, Nginx],
    site: Site,
    commands: Callable[[], list[list[str]]],
) -> None:
    """add, drain, remove: the upstream file written on the host, nginx -t and reload there."""
    nginx = nginxes["web01"]
    lb = nginx_on_web01(site)
    assert isinstance(lb.files, RemoteFiles)
    with nginx.reloaded():
        lb.add(1, site.address(1))
    with nginx.reloaded():
        lb.add(3, site.address(3))
    assert set(nginx.bodies(8)) == {"1", "3"}
    with nginx.reloaded():
        lb.drain(1)
    assert {m.n: m.state for m in lb.members()} == {
        1: MemberState.DRAINING,
        3: MemberState.READY,
    }
    assert set(nginx.bodies(6)) == {"3"}
    with nginx.reloaded():
        lb.remove(1)
    assert [m.n for m in lb.members()] == [3]
    assert f"server {site.address(3)} " in nginx.upstream_file.read_text()
    assert leftovers(nginx.root, "upstream.conf") == []
    assert {"cat", "mktemp", "dd", "ln", "mv", "rm"} <= programs(commands)


def test_nginx_t_failing_on_the_host_rolls_back(nginxes: dict[str, Nginx], site: Site) -> None:
    """An address nginx -t rejects: PermanentError naming the host, the previous file back
    byte for byte (mode too), no temp file, nginx still serving the old upstream."""
    nginx = nginxes["web01"]
    lb = nginx_on_web01(site)
    with nginx.reloaded():
        lb.add(1, site.address(1))
    nginx.upstream_file.chmod(0o640)
    before = nginx.upstream_file.read_bytes()
    inode = nginx.upstream_file.stat().st_ino
    with pytest.raises(PermanentError) as caught:
        lb.add(2, "999.1.1.1:99999")
    message = str(caught.value)
    assert "nginx -t failed for upstream senex_web on host web01" in message
    assert "restored" in message
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.upstream_file.stat().st_ino == inode
    assert nginx.upstream_file.stat().st_mode & 0o777 == 0o640
    assert leftovers(nginx.root, "upstream.conf") == []
    assert set(nginx.bodies(4)) == {"1"}


def test_nginx_reload_failing_on_the_host_rolls_back(
    nginxes: dict[str, Nginx], site: Site, tmp_path: Path
) -> None:
    """nginx not running for that config: TemporaryError, the previous file is back."""
    nginx = nginxes["web01"]
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx.config(tmp_path, pid=tmp_path / "none.pid"))
    lb = nginx_on_web01(
        site, conf=str(conf), file=str(tmp_path / "upstream.conf"), prefix=str(tmp_path)
    )
    with pytest.raises(TemporaryError, match="reload failed") as caught:
        lb.add(1, site.address(1))
    assert "on host web01" in str(caught.value)
    assert not (tmp_path / "upstream.conf").exists()
    assert leftovers(tmp_path, "upstream.conf") == []
