"""per_host: one real nginx (or HAProxy) per host of the pool, each with its host's instances."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from senex_scale.balancers.base import Member, MemberState, build_balancer
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.balancers.perhost import PerHostBalancer
from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.policy.models import Host
from senex_scale.testing import wait_until

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import HAProxy, Nginx, Site

pytestmark = pytest.mark.integration

READY = MemberState.READY


def per_host_nginx(site: Site) -> PerHostBalancer:
    balancer = build_balancer("web", site.pool(site.nginx_options(per_host=True)), site.hosts)
    assert isinstance(balancer, PerHostBalancer)
    return balancer


def add_all(lb: PerHostBalancer, nginxes: dict[str, Nginx], site: Site) -> None:
    """Instances 1..4: 1 and 3 on web01, 2 and 4 on web02 (each add reloads one nginx)."""
    for n, host in ((1, "web01"), (2, "web02"), (3, "web01"), (4, "web02")):
        with nginxes[host].reloaded():
            lb.add(n, site.address(n))


def test_build_makes_one_balancer_per_host(site: Site) -> None:
    """Each inner balancer is on its host, with {host} filled in; none is built with per_host."""
    lb = per_host_nginx(site)
    assert list(lb.inner) == ["web01", "web02"]
    for name, inner in lb.inner.items():
        assert isinstance(inner, NginxBalancer)
        assert inner.settings.host == name
        assert inner.settings.file == site.nginx_root / name / "upstream.conf"
        assert inner.files.host == name
    assert lb.addresses == {"web01": "127.0.0.1", "web02": "127.0.0.2"}


def test_nginx_per_host_routes_members_to_their_hosts(
    nginxes: dict[str, Nginx], site: Site
) -> None:
    """add goes to the nginx of the address's host; each serves only its own instances."""
    lb = per_host_nginx(site)
    add_all(lb, nginxes, site)
    assert set(nginxes["web01"].bodies(8)) == {"1", "3"}
    assert set(nginxes["web02"].bodies(8)) == {"2", "4"}
    assert "127.0.0.2" not in nginxes["web01"].upstream_file.read_text()
    assert "127.0.0.1:" not in nginxes["web02"].upstream_file.read_text().replace(
        "127.0.0.1:9 ", ""
    )
    assert lb.members() == [Member(n, site.address(n), READY) for n in (1, 2, 3, 4)]
    assert lb.connections(2) is None


def test_nginx_per_host_drain_and_remove_touch_only_the_owner(
    nginxes: dict[str, Nginx], site: Site
) -> None:
    """drain and remove of n change the upstream of n's host only; repeating them is a no-op."""
    lb = per_host_nginx(site)
    add_all(lb, nginxes, site)
    web01 = nginxes["web01"].upstream_file.read_bytes()
    with nginxes["web02"].reloaded():
        lb.drain(2)
    assert {m.n: m.state for m in lb.members()}[2] is MemberState.DRAINING
    assert set(nginxes["web02"].bodies(6)) == {"4"}
    with nginxes["web02"].reloaded():
        lb.remove(2)
    with nginxes["web02"].reloaded():
        lb.remove(4)
    assert [m.n for m in lb.members()] == [1, 3]
    assert nginxes["web01"].upstream_file.read_bytes() == web01
    assert "server 127.0.0.1:9 down;" in nginxes["web02"].upstream_file.read_text()
    web02 = nginxes["web02"].upstream_file.read_bytes()
    lb.remove(2)  # on no host: nothing to do
    lb.drain(4)
    assert nginxes["web02"].upstream_file.read_bytes() == web02
    assert set(nginxes["web01"].bodies(6)) == {"1", "3"}


def test_address_on_no_host_is_refused(nginxes: dict[str, Nginx], site: Site) -> None:
    """An instance address that is none of the pool's hosts is a PermanentError naming it."""
    lb = per_host_nginx(site)
    before = {h: n.upstream_file.read_bytes() for h, n in nginxes.items()}
    with pytest.raises(PermanentError, match=r"127\.0\.0\.9:8001 is on none of the pool's hosts"):
        lb.add(1, "127.0.0.9:8001")
    assert {h: n.upstream_file.read_bytes() for h, n in nginxes.items()} == before


def test_an_unreachable_host_is_left_out_and_the_others_go_on(
    nginxes: dict[str, Nginx], site: Site, tmp_path: Path
) -> None:
    """A host whose transport fails: members() lists the reachable host's members and names
    the other in ``unreachable``; instances on the reachable host are still drained; an
    instance found nowhere names the lost host."""
    hosts = dict(site.hosts) | {
        "web03": Host(address="127.0.0.3", transport="nsenter", nsenter=str(tmp_path / "x.pid"))
    }
    spec = site.pool(site.nginx_options(per_host=True), hosts=("web01", "web03"))
    lb = build_balancer("web", spec, hosts)
    with nginxes["web01"].reloaded():
        lb.add(1, site.address(1))
    assert [m.n for m in lb.members()] == [1]
    assert isinstance(lb, PerHostBalancer)
    assert list(lb.unreachable) == ["web03"]
    assert "host web03" in lb.unreachable["web03"]
    with nginxes["web01"].reloaded():
        lb.drain(1)
    assert "server 127.0.0.1:" in nginxes["web01"].upstream_file.read_text()
    with pytest.raises(TemporaryError, match=r"instance 9 is on no reachable host.*host web03"):
        lb.remove(9)
    with pytest.raises(TemporaryError, match="host web03"):
        lb.add(3, "127.0.0.3:8003")


def test_haproxy_per_host(haproxies: dict[str, HAProxy], site: Site) -> None:
    """Two HAProxys, one per host: each gets its host's servers, at runtime and in its config."""
    spec = site.pool(site.haproxy_options(per_host=True))
    lb = build_balancer("web", spec, site.hosts)
    assert isinstance(lb, PerHostBalancer)
    assert all(isinstance(inner, HAProxyBalancer) for inner in lb.inner.values())
    for n in (1, 2, 3):
        lb.add(n, site.address(n))
    wait_until(
        lambda: [(m.n, m.state) for m in lb.members()] == [(n, READY) for n in (1, 2, 3)],
        5,
        "1, 2, 3 ready",
    )
    assert [m.address for m in lb.members()] == [site.address(n) for n in (1, 2, 3)]
    assert set(haproxies["web01"].bodies(6)) == {"1", "3"}
    assert set(haproxies["web02"].bodies(4)) == {"2"}
    assert [line.split()[1] for line in haproxies["web01"].server_lines()] == ["web-1", "web-3"]
    assert [line.split()[1] for line in haproxies["web02"].server_lines()] == ["web-2"]
    assert lb.connections(2) == 0
    lb.drain(3)
    lb.remove(3)
    lb.remove(2)
    assert [m.n for m in lb.members()] == [1]
    assert haproxies["web02"].server_lines() == []
    assert set(haproxies["web01"].bodies(4)) == {"1"}
