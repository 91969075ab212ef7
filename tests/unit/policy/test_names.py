"""Names that reach the HAProxy runtime API, nginx, ssh or a unit name have a grammar.

HAProxy's runtime API reads ``;`` as the end of a command and a newline as the end of a
request; nginx reads ``;`` as the end of a directive. A pool name becomes a server name
(``web-3``) and a unit's prefix; a host's address and a runtime's ``instance_host`` become the
address of every ``add server`` and ``server`` line. Each is refused at ``validate`` with its
dotted path when it is anything but a name or an address.
"""

from __future__ import annotations

import pytest

from senex_scale.errors import PolicyError
from senex_scale.policy import parse_policy
from senex_scale.settings import driver_problems

INJECTIONS = [
    "10.0.0.11;shutdown sessions server web/web-1",
    "10.0.0.11\nset server web/web-1 state maint",
    "10.0.0.11 backup",
    "web01.example.com:8000",
    "[10.0.0.11]",
    "web01..example.com",
    "-oProxyCommand=sh",
    "",
]


POOL = '[pools.web]\nport = "8000 + n"\nmin = 1\nmax = 2\n'


def problems(text: str) -> str:
    """What ``senex-scale validate`` says (the drivers' tables checked too)."""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, checks=(driver_problems,))
    return str(info.value)


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@pytest.mark.parametrize("bad", INJECTIONS)
def test_a_host_address_is_a_name_or_an_ip(bad: str) -> None:
    """[hosts.NAME] address (and ssh_host): refused unless a DNS name or an IP address."""
    for key in ("address", "ssh_host"):
        extra = 'address = "10.0.0.11"\n' if key == "ssh_host" else ""
        text = f"[hosts.web01]\n{extra}{key} = {toml_string(bad)}\n" + POOL
        assert f"hosts.web01.{key}:" in problems(text), (key, bad)


@pytest.mark.parametrize("good", ["10.0.0.11", "fd00::11", "web01", "web01.example.com.",
                                  "db_2.internal", "xn--bcher-kva.example"])  # fmt: skip
def test_names_and_addresses_pass(good: str) -> None:
    """Plain names, FQDNs (trailing dot too), IPv4 and IPv6 addresses are fine."""
    policy = parse_policy(f'[hosts.web01]\naddress = "{good}"\nssh_host = "{good}"\n' + POOL)
    assert policy.hosts["web01"].address == good


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("key", ["instance_host", "host"])
def test_a_runtimes_hosts_are_names_or_ips(bad: str, key: str) -> None:
    """systemd's instance_host (the balancer's address for the instances) and host (ssh)."""
    text = f"""
[pools.web]
runtime = {{ type = "systemd", unit = "web@{{n}}.service", {key} = {toml_string(bad)} }}
port = "8000 + n"
min = 1
max = 2
"""
    assert f"pools.web.runtime.{key}:" in problems(text), bad


@pytest.mark.parametrize("bad", ["web;shutdown", "web\nx", "web backend", "-web", "wéb"])
def test_a_pool_name_is_a_haproxy_and_unit_name(bad: str) -> None:
    """Pool names become HAProxy server names and unit prefixes: letters, digits, _ . -."""
    text = f'[pools.{toml_string(bad)}]\nport = "8000 + n"\nmin = 1\nmax = 2\n'
    assert "is not a name" in problems(text), bad


def test_the_status_pages_allowed_hosts_are_names() -> None:
    """controller.allowed_hosts: names or *.suffixes; read_token_env a variable name."""
    ok = parse_policy('[controller]\nallowed_hosts = ["senex.internal", "*.ops.example"]\n' + POOL)
    assert ok.controller.allowed_hosts == ("senex.internal", "*.ops.example")
    text = problems(
        '[controller]\nallowed_hosts = ["a b", "*"]\nread_token_env = "NOT A NAME"\n' + POOL
    )
    assert "controller.allowed_hosts[0]:" in text
    assert "controller.allowed_hosts[1]:" in text
    assert "controller.read_token_env:" in text
