"""The systemd runtime's settings: names, transports, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from senex_scale.errors import PolicyError, TemporaryError
from senex_scale.policy.models import Pool
from senex_scale.runtimes.systemd import SystemdRuntime
from senex_scale.runtimes.transport import LocalTransport, NsenterTransport, SshTransport

POOL = Pool.model_validate({"min": 1, "max": 20, "port": "8100 + n"})


def runtime(**options: Any) -> SystemdRuntime:
    return SystemdRuntime("django", POOL, {"unit": "django@{n}.service", **options})


def problems(**options: Any) -> str:
    with pytest.raises(PolicyError) as info:
        SystemdRuntime("django", POOL, options)
    return str(info.value)


def test_unit_names_and_numbers_round_trip() -> None:
    """Instance 12 is django@12.service, and back; other units are not the pool's."""
    rt = runtime()
    assert rt.unit_name(12) == "django@12.service"
    assert rt.instance_of("django@12.service") == 12
    assert rt.instance_of("django@0.service") is None
    assert rt.instance_of("django@x.service") is None
    assert rt.instance_of("celery@1.service") is None
    assert rt.glob == "django@*.service"
    assert rt.template == "django@.service"


def test_instance_string_may_carry_more_than_the_number() -> None:
    """ "celery-worker-trading@q{n}.service" matches only its own instances."""
    rt = runtime(unit="celery-worker-trading@q{n}.service")
    assert rt.glob == "celery-worker-trading@q*.service"
    assert rt.instance_of("celery-worker-trading@q3.service") == 3
    assert rt.template == "celery-worker-trading@.service"


def test_address_follows_the_port_scheme_past_nine() -> None:
    """port = "8100 + n": instance 10 is 8110 (the seed's 800%i gave 80010)."""
    assert runtime().address(10) == "127.0.0.1:8110"
    assert runtime(host="app1.internal").address(10) == "app1.internal:8110"
    assert runtime(host="app1", instance_host="10.0.0.5").address(3) == "10.0.0.5:8103"


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("django.service", "must contain {n} exactly once"),
        ("django@{n}{n}.service", "must contain {n} exactly once"),
        ("django@{i}.service", "unknown placeholder {i}"),
        ("django@{n}", "is not a template instance name"),
        ("django@{n}.timer", "is not a template instance name"),
        ("dj ango@{n}.service", "is not a template instance name"),
        ("{n}@x.service", 'must come after the "@"'),
        ("django@{n", "is not a unit name template"),
    ],
)
def test_bad_unit_template_names_the_field(unit: str, message: str) -> None:
    """pools.django.runtime.unit and why."""
    text = problems(unit=unit)
    assert "pools.django.runtime.unit" in text
    assert message in text


def test_unknown_key_is_rejected_with_a_suggestion() -> None:
    """A typo in a key: did you mean."""
    text = problems(unit="django@{n}.service", scoep="user")
    assert "pools.django.runtime" in text
    assert "scope" in text


def test_scope_is_system_or_user() -> None:
    """Anything else is refused."""
    assert "pools.django.runtime.scope" in problems(unit="d@{n}.service", scope="global")


def test_ssh_and_nsenter_together_are_refused() -> None:
    """One transport only."""
    assert "not both" in problems(unit="d@{n}.service", host="a", nsenter=1)


def test_ssh_options_need_a_host() -> None:
    """ssh_user without host would silently run locally: refused."""
    assert "need host" in problems(unit="d@{n}.service", ssh_user="deploy")


@pytest.mark.parametrize("host", ["-oProxyCommand=x", "a b", ""])
def test_host_cannot_be_an_option_or_contain_spaces(host: str) -> None:
    """A host that ssh would read as an option is refused at load."""
    assert "pools.django.runtime.host" in problems(unit="d@{n}.service", host=host)


def test_ssh_option_must_be_key_value() -> None:
    """ssh_options entries are passed with -o; "-v" is not one."""
    text = problems(unit="d@{n}.service", host="a", ssh_options=["-v"])
    assert "pools.django.runtime.ssh_options" in text


@pytest.mark.parametrize("value", [0, -4, "relative/pid"])
def test_nsenter_is_a_pid_or_absolute_path(value: int | str) -> None:
    """A PID must be positive; a PID file must be an absolute path."""
    assert "pools.django.runtime.nsenter" in problems(unit="d@{n}.service", nsenter=value)


def test_timeouts_must_be_positive_durations() -> None:
    """start_timeout = "0s" would never wait."""
    text = problems(unit="d@{n}.service", start_timeout="0s")
    assert "pools.django.runtime.start_timeout" in text


def test_transport_follows_the_settings(tmp_path: Any) -> None:
    """Local by default; ssh with host; nsenter with a PID or a PID file read per command."""
    assert isinstance(runtime().transport(), LocalTransport)
    ssh = runtime(host="app1", ssh_user="deploy", ssh_port=2222).transport()
    assert ssh == SshTransport("app1", user="deploy", port=2222, connect_timeout=15.0)
    assert runtime(nsenter=42).transport() == NsenterTransport(42)
    pid_file = tmp_path / "systemd.pid"
    pid_file.write_text("4242\n")
    rt = runtime(nsenter=str(pid_file))
    assert rt.transport() == NsenterTransport(4242)
    pid_file.write_text("4343\n")
    assert rt.transport() == NsenterTransport(4343)


def test_missing_pid_file_is_temporary(tmp_path: Any) -> None:
    """The container is not up (yet): worth a retry, and the message says which file."""
    rt = runtime(nsenter=str(tmp_path / "systemd.pid"))
    assert "nsenter -t /" in repr(rt)  # repr reads nothing
    with pytest.raises(TemporaryError, match=r"systemd\.pid"):
        rt.list()
