"""The nginx balancer's ``balance`` setting: ip_hash, least_conn (with a shared zone) or round
robin; the older ``ip_hash`` switch still works, and the two given at odds are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from senex_scale.balancers.base import Member, MemberState
from senex_scale.balancers.nginx import NginxBalancer, parse_balancer_settings
from senex_scale.errors import PermanentError, PolicyError
from senex_scale.policy.models import Pool

POOL = Pool.model_validate({"min": 0, "max": 5, "port": "8000 + n"})
MEMBERS = [
    Member(1, "127.0.0.1:8001", MemberState.READY),
    Member(2, "127.0.0.1:8002", MemberState.DRAINING),
]


def balancer(path: Path, **options: Any) -> NginxBalancer:
    """An nginx balancer of pool web on ``path`` (upstream senex_web)."""
    return NginxBalancer("web", POOL, {"upstream": "senex_web", "file": str(path), **options})


def block(text: str) -> list[str]:
    """The lines of the upstream block, stripped, without comments."""
    return [line.strip() for line in text.splitlines() if line.strip() and "#" not in line]


@pytest.mark.parametrize(
    ("options", "method"),
    [
        ({}, "ip_hash"),
        ({"ip_hash": True}, "ip_hash"),
        ({"ip_hash": False}, "round_robin"),
        ({"balance": "least_conn"}, "least_conn"),
        ({"balance": "round_robin"}, "round_robin"),
        ({"balance": "least_conn", "ip_hash": False}, "least_conn"),
        ({"balance": "ip_hash", "ip_hash": True}, "ip_hash"),
    ],
)
def test_method_from_balance_or_ip_hash(options: dict[str, Any], method: str) -> None:
    """``balance`` wins; without it ``ip_hash`` decides, true by default (the seed's)."""
    settings = parse_balancer_settings("web", {"upstream": "u", "file": "/f", **options})
    assert settings.method == method


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"balance": "least_conn", "ip_hash": True},
            'pools.web.balancer.ip_hash: ip_hash = true contradicts balance = "least_conn"; '
            "give only balance",
        ),
        (
            {"balance": "ip_hash", "ip_hash": False},
            'pools.web.balancer.ip_hash: ip_hash = false contradicts balance = "ip_hash"; '
            "give only balance",
        ),
        (
            {"balance": "leastconn"},
            'pools.web.balancer.balance: "leastconn": expected one of "ip_hash", "least_conn", '
            '"round_robin" (did you mean "least_conn"?)',
        ),
        (
            {"balance": True},
            "pools.web.balancer.balance: true: expected one of",
        ),
    ],
)
def test_contradiction_and_bad_values_name_the_field(options: dict[str, Any], problem: str) -> None:
    """ip_hash at odds with balance names ip_hash; an unknown method names balance."""
    with pytest.raises(PolicyError) as caught:
        parse_balancer_settings("web", {"upstream": "u", "file": "/f", **options})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem), caught.value.problems


def test_least_conn_writes_a_shared_zone(tmp_path: Path) -> None:
    """least_conn comes with ``zone NAME 64k`` (all workers share the counts), both before the
    servers and keepalive (nginx wants the method before keepalive)."""
    text = balancer(tmp_path / "u.conf", balance="least_conn").render(MEMBERS)
    assert block(text) == [
        "upstream senex_web {",
        "zone senex_web 64k;",
        "least_conn;",
        "server 127.0.0.1:8001 max_fails=3 fail_timeout=30s;",
        "server 127.0.0.1:8002 down max_fails=3 fail_timeout=30s;",
        "keepalive 32;",
        "}",
    ]


@pytest.mark.parametrize(
    ("options", "first"),
    [({}, "ip_hash;"), ({"ip_hash": False}, None), ({"balance": "round_robin"}, None)],
)
def test_ip_hash_and_round_robin_as_before(
    tmp_path: Path, options: dict[str, Any], first: str | None
) -> None:
    """ip_hash writes ``ip_hash;`` and no zone; round robin writes no method line at all."""
    lines = block(balancer(tmp_path / "u.conf", **options).render(MEMBERS))
    assert not [line for line in lines if line.startswith(("zone", "least_conn"))]
    assert lines[1] == (first or "server 127.0.0.1:8001 max_fails=3 fail_timeout=30s;")


@pytest.mark.parametrize(
    "header",
    [
        "    least_conn;\n",
        "    zone senex_web 64k;\n    least_conn;\n",
        "    zone senex_web;\n    least_conn;\n",
        "    ip_hash;\n",
    ],
)
def test_hand_written_method_lines_are_adopted(tmp_path: Path, header: str) -> None:
    """A hand-written block with least_conn (with or without a zone) is read, whatever the
    settings ask for; the next change writes the settings' own method."""
    path = tmp_path / "u.conf"
    path.write_text(
        f"upstream senex_web {{\n{header}"
        "    server 127.0.0.1:8001;\n    server 127.0.0.1:8002 down;\n    keepalive 16;\n}\n"
    )
    assert balancer(path, ip_hash=False).members() == MEMBERS


def test_a_round_trip_through_each_method(tmp_path: Path) -> None:
    """What one balancer renders with least_conn, another with ip_hash reads back."""
    path = tmp_path / "u.conf"
    path.write_text(balancer(path, balance="least_conn").render(MEMBERS))
    assert balancer(path).members() == MEMBERS


@pytest.mark.parametrize(
    "line", ["hash $remote_addr consistent;", "random two least_conn;", "zone a b c;"]
)
def test_other_methods_are_still_refused(tmp_path: Path, line: str) -> None:
    """A method the balancer never writes (hash, random) is refused, not overwritten."""
    path = tmp_path / "u.conf"
    text = f"upstream senex_web {{\n    {line}\n    server 127.0.0.1:8001;\n}}\n"
    path.write_text(text)
    with pytest.raises(PermanentError, match="not something senex-scale writes"):
        balancer(path).members()
    assert path.read_text() == text
