"""Balancer settings that depend on the pool and [hosts]: host, per_host, placeholders."""

from __future__ import annotations

from typing import Any

import pytest

from senex_scale.balancers.base import balancer_problems, build_balancer
from senex_scale.balancers.files import LocalFiles, RemoteFiles
from senex_scale.balancers.haproxy import HAProxyBalancer
from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.balancers.perhost import PerHostBalancer
from senex_scale.errors import PermanentError, PolicyError
from senex_scale.policy.models import Host, Pool
from senex_scale.runtimes.transport import SshTransport

HOSTS = {
    "web01": Host(address="10.0.0.11", ssh_user="deploy"),
    "web02": Host(address="10.0.0.12", ssh_user="deploy"),
    "lb01": Host(address="10.0.0.10", ssh_user="deploy"),
}
NGINX = {"type": "nginx", "upstream": "django_backend", "file": "/etc/nginx/conf.d/django.conf"}
HAPROXY = {
    "type": "haproxy",
    "socket": "10.0.0.10:9999",
    "backend": "django_backend",
    "config": "/etc/haproxy/haproxy.cfg",
}


def pool(balancer: dict[str, Any], hosts: list[str] | None = None) -> Pool:
    data: dict[str, Any] = {"min": 0, "max": 6, "port": 8000, "balancer": balancer}
    if hosts is not None:
        data["hosts"] = hosts
    return Pool.model_validate(data)


def problems_of(balancer: dict[str, Any], hosts: list[str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        build_balancer("web", pool(balancer, hosts), HOSTS)
    return caught.value.problems


def test_per_host_without_pool_hosts_names_the_field() -> None:
    """per_host needs the pool's hosts: the error names pools.web.balancer.per_host."""
    assert problems_of(NGINX | {"per_host": True}) == [
        "pools.web.balancer.per_host: needs the pool to list its hosts (pools.web.hosts), "
        "one balancer on each"
    ]


def test_per_host_with_a_host_names_host() -> None:
    """per_host and host together: host is the one to leave out."""
    problems = problems_of(NGINX | {"per_host": True, "host": "lb01"}, ["web01", "web02"])
    assert problems == [
        "pools.web.balancer.host: per_host puts a balancer on each of the pool's hosts; "
        "leave host out"
    ]


def test_per_host_haproxy_needs_a_socket_per_host() -> None:
    """One socket for every host's HAProxy is refused, naming socket."""
    problems = problems_of(HAPROXY | {"per_host": True}, ["web01", "web02"])
    assert len(problems) == 1
    assert problems[0].startswith('pools.web.balancer.socket: "10.0.0.10:9999" would be every')


def test_placeholders_only_with_per_host() -> None:
    """{host} in a setting of a balancer that is not per host is a mistake, named."""
    problems = problems_of(NGINX | {"file": "/etc/nginx/{host}.conf"})
    assert problems == [
        "pools.web.balancer.file: {host} and {address} are filled in only with per_host = true"
    ]


def test_hosts_sharing_an_address_cannot_be_told_apart() -> None:
    """per_host routes by address: two hosts with one address are refused."""
    hosts = HOSTS | {"web03": Host(address="10.0.0.11", ssh_user="deploy")}
    spec = pool(NGINX | {"per_host": True}, ["web01", "web03"])
    assert balancer_problems("web", spec, hosts) == [
        "pools.web.hosts: web01 and web03 have the same address (10.0.0.11); per_host tells "
        "hosts' instances apart by address"
    ]


def test_unknown_balancer_host_names_the_field() -> None:
    """balancer.host must name an entry of [hosts] (with a did-you-mean)."""
    assert problems_of(NGINX | {"host": "lb1"}) == [
        'pools.web.balancer.host: unknown host "lb1" (did you mean "lb01"?)'
    ]
    with pytest.raises(PolicyError, match=r"no \[hosts\] given"):
        build_balancer("web", pool(HAPROXY | {"host": "lb01"}))


@pytest.mark.parametrize(
    ("balancer", "field"),
    [
        (HAPROXY | {"host": "lb01", "config": "haproxy.cfg"}, "config"),
        (NGINX | {"host": "lb01", "file": "conf.d/django.conf"}, "file"),
        (NGINX | {"host": "lb01", "conf": "nginx.conf"}, "conf"),
    ],
)
def test_paths_on_a_host_must_be_absolute(balancer: dict[str, Any], field: str) -> None:
    """A relative path would be relative to the ssh user's home there: refused, named."""
    problems = problems_of(balancer)
    assert len(problems) == 1
    assert problems[0].startswith(f"pools.web.balancer.{field}: ")
    assert "must be an absolute path (it is on host lb01)" in problems[0]


def test_balancer_classes_refuse_per_host_built_directly() -> None:
    """per_host is build_balancer's to expand; a class given it says so."""
    options = {k: v for k, v in NGINX.items() if k != "type"} | {"per_host": True}
    with pytest.raises(PolicyError, match=r"pools\.web\.balancer\.per_host: a balancer per host"):
        NginxBalancer("web", pool(NGINX), options)


def test_old_call_forms_still_work() -> None:
    """Without hosts and host, a balancer is on this machine as before."""
    options = {k: v for k, v in HAPROXY.items() if k != "type"}
    assert isinstance(HAProxyBalancer("web", pool(HAPROXY), options).files, LocalFiles)
    assert isinstance(build_balancer("web", pool(NGINX)).files, LocalFiles)  # type: ignore[attr-defined]


def test_a_host_gives_its_transport() -> None:
    """host = "lb01": the files go through lb01's ssh transport."""
    balancer = build_balancer("web", pool(HAPROXY | {"host": "lb01"}), HOSTS)
    assert isinstance(balancer, HAProxyBalancer)
    assert isinstance(balancer.files, RemoteFiles)
    assert balancer.files.transport == SshTransport("10.0.0.10", user="deploy", connect_timeout=5)


def test_per_host_fills_in_each_host() -> None:
    """Each inner balancer gets host = NAME and its {host} and {address} filled in."""
    spec = pool(
        HAPROXY | {"per_host": True, "socket": "{address}:9999", "config": "/etc/{host}.cfg"},
        ["web01", "web02"],
    )
    lb = build_balancer("web", spec, HOSTS)
    assert isinstance(lb, PerHostBalancer)
    sockets = {}
    for name, inner in lb.inner.items():
        assert isinstance(inner, HAProxyBalancer)
        assert inner.settings.host == name
        assert str(inner.settings.config) == f"/etc/{name}.cfg"
        sockets[name] = inner.settings.socket
    assert sockets == {"web01": "10.0.0.11:9999", "web02": "10.0.0.12:9999"}


def test_per_host_routes_by_the_address_host_part() -> None:
    """host_of: the host whose address the instance's address has."""
    lb = build_balancer("web", pool(NGINX | {"per_host": True}, ["web01", "web02"]), HOSTS)
    assert isinstance(lb, PerHostBalancer)
    assert lb.host_of("10.0.0.12:8002") == "web02"
    assert lb.host_of("10.0.0.11:8001") == "web01"
    with pytest.raises(PermanentError, match=r"10\.0\.0\.10:8003 is on none of the pool's hosts"):
        lb.host_of("10.0.0.10:8003")
    with pytest.raises(PermanentError, match="on none of the pool's hosts"):
        lb.host_of("unix:/run/web.sock")
