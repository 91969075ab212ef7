"""``[hosts]`` and a pool's ``hosts``: every mistake named by its path."""

from __future__ import annotations

import pytest

from senex_scale.errors import PolicyError
from senex_scale.policy import parse_policy
from senex_scale.runtimes.transport import NsenterTransport, SshTransport, transport_for

HOSTS = """
[hosts.web01]
address = "10.0.0.11"
ssh_user = "deploy"
known_hosts = "/etc/senex-scale/known_hosts"

[hosts.web02]
address = "10.0.0.12"
"""


def pool(
    extra: str, runtime: str = 'runtime = { type = "systemd", unit = "web@{n}.service" }'
) -> str:
    return (
        HOSTS
        + f"""
[pools.web]
{runtime}
port = "8000 + n"
min = 2
max = 6
{extra}
"""
    )


def problems(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return str(info.value)


def test_a_valid_pool_on_two_hosts() -> None:
    """Names, per-host maxima and the default per-host maximum are read."""
    policy = parse_policy(pool('hosts = ["web01", { name = "web02", max = 2 }]\nmax_per_host = 4'))
    web = policy.pools["web"]
    assert [h.name for h in web.hosts] == ["web01", "web02"]
    assert (web.host_max("web01"), web.host_max("web02"), web.host_max("nope")) == (4, 2, None)


def test_an_unknown_host_is_named_with_a_suggestion() -> None:
    """pools.web.hosts[1]: unknown host, did you mean."""
    text = problems(pool('hosts = ["web01", "web2"]'))
    assert 'pools.web.hosts[1]: unknown host "web2" (did you mean "web02"?)' in text


def test_a_host_listed_twice() -> None:
    """The same host twice in one pool is refused."""
    assert '"web01" is listed twice' in problems(pool('hosts = ["web01", "web01"]'))


def test_maxima_that_cannot_hold_min() -> None:
    """Per-host maxima adding up to less than min."""
    text = problems(
        pool('hosts = ["web01", "web02"]\nmax_per_host = 1').replace("min = 2", "min = 3")
    )
    assert "add up to 2, below min (3)" in text


def test_ssh_settings_on_a_local_host() -> None:
    """ssh_user with transport local is a mistake, named on the host."""
    text = problems('[hosts.a]\naddress = "10.0.0.1"\ntransport = "local"\nssh_user = "x"\n')
    assert 'hosts.a: ssh_user needs transport = "ssh"' in text


def test_nsenter_needs_its_pid() -> None:
    """transport nsenter without nsenter."""
    text = problems('[hosts.a]\naddress = "127.0.0.1"\ntransport = "nsenter"\n')
    assert 'transport = "nsenter" needs nsenter' in text


def test_a_supervisor_pool_cannot_spread() -> None:
    """Only the systemd runtime runs on other hosts."""
    runtime = (
        'runtime = { type = "supervisor", url = "http://127.0.0.1:9001/RPC2", program = "web-{n}" }'
    )
    text = problems(pool('hosts = ["web01"]', runtime))
    assert "pools.web.hosts: the supervisor runtime runs on this machine only" in text


def test_the_runtime_does_not_say_where_when_the_pool_lists_hosts() -> None:
    """runtime.host beside hosts: say where in [hosts] instead."""
    runtime = 'runtime = { type = "systemd", unit = "web@{n}.service", host = "10.0.0.11" }'
    assert "pools.web.runtime.host: the pool lists hosts" in problems(
        pool('hosts = ["web01"]', runtime)
    )


def test_transports_of_hosts() -> None:
    """ssh with the host key pinned; nsenter by PID."""
    # a pool: a policy of hosts alone has nothing to do (refused as such)
    policy = parse_policy(
        pool("") + '[hosts.lab]\naddress = "127.0.0.1"\ntransport = "nsenter"\nnsenter = 42\n'
    )
    ssh = transport_for(policy.hosts["web01"])
    assert isinstance(ssh, SshTransport)
    argv = ssh.argv(["true"])
    assert argv[-2:] == ["10.0.0.11", "true"]
    assert "UserKnownHostsFile=/etc/senex-scale/known_hosts" in argv
    assert "StrictHostKeyChecking=yes" in argv
    assert transport_for(policy.hosts["lab"]) == NsenterTransport(42)
