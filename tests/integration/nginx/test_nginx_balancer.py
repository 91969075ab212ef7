"""The nginx balancer against a real nginx: add, drain, remove, rollback, settings."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from senex_scale.balancers.base import Member, MemberState, build_balancer
from senex_scale.balancers.nginx import NginxBalancer
from senex_scale.errors import PermanentError, PolicyError, TemporaryError
from senex_scale.policy.models import Pool
from senex_scale.testing import wait_until

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import Nginx

pytestmark = pytest.mark.integration

INSTANCES = (1, 2, 3)
READY = MemberState.READY
DRAINING = MemberState.DRAINING


def leftovers(directory: Path) -> list[str]:
    """Temp files of an atomic write that were not cleaned up."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".upstream.conf."))


def test_add_two_members_serves_both(nginx: Nginx) -> None:
    """Two added members both get requests through nginx (round robin)."""
    balancer = nginx.balancer(ip_hash=False)
    with nginx.reloaded():
        balancer.add(1, nginx.backend(1))
    with nginx.reloaded():
        balancer.add(2, nginx.backend(2))
    assert balancer.members() == [
        Member(1, nginx.backend(1), READY),
        Member(2, nginx.backend(2), READY),
    ]
    assert set(nginx.hits()) == {"1", "2"}
    text = nginx.upstream_file.read_text()
    assert "ip_hash" not in text
    assert "placeholder" not in text


def test_ip_hash_block_as_in_the_seed(nginx: Nginx) -> None:
    """Defaults render the seed's block (ip_hash, max_fails, keepalive) and nginx serves it."""
    balancer = nginx.balancer()
    with nginx.reloaded():
        balancer.add(2, nginx.backend(2))
    with nginx.reloaded():
        balancer.add(1, nginx.backend(1))
    assert nginx.upstream_file.read_text() == (
        "# Written by senex-scale for pool web: changes by hand are overwritten.\n"
        "upstream senex_web {\n"
        "    ip_hash;\n"
        "    # senex-scale n=1\n"
        f"    server {nginx.backend(1)} max_fails=3 fail_timeout=30s;\n"
        "    # senex-scale n=2\n"
        f"    server {nginx.backend(2)} max_fails=3 fail_timeout=30s;\n"
        "    keepalive 32;\n"
        "}\n"
    )
    assert len(set(nginx.hits(6))) == 1  # one client address: always the same member
    assert set(nginx.hits(1)) <= {"1", "2"}


def test_drain_stops_new_requests_then_remove(nginx: Nginx) -> None:
    """A drained member is written down and gets no new requests; remove deletes its line."""
    balancer = nginx.balancer(ip_hash=False)
    for n in INSTANCES:
        balancer.add(n, nginx.backend(n))
    with nginx.reloaded():
        balancer.drain(2)
    assert f"server {nginx.backend(2)} down max_fails" in nginx.upstream_file.read_text()
    assert [m.state for m in balancer.members()] == [READY, DRAINING, READY]
    assert set(nginx.hits()) == {"1", "3"}
    with nginx.reloaded():
        balancer.remove(2)
    assert nginx.backend(2) not in nginx.upstream_file.read_text()
    assert [m.n for m in balancer.members()] == [1, 3]
    assert set(nginx.hits()) == {"1", "3"}


def test_drain_lets_a_running_request_finish(nginx: Nginx) -> None:
    """A request in flight when its member is drained still completes (old worker)."""
    balancer = nginx.balancer(ip_hash=False)
    with nginx.reloaded():
        balancer.add(1, nginx.backend(1))
    result: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: result.append(nginx.get("/slow")))
    slow.start()
    try:
        threading.Event().wait(0.3)  # the request is now at the backend
        with nginx.reloaded():
            balancer.drain(1)
        assert not result  # still running on the old worker
    finally:
        slow.join(10)
    assert len(result) == 1
    assert result[0].status_code == 200
    assert result[0].text == "1"
    assert nginx.get().status_code == 502  # every server is down now: no new requests


def test_add_undrains_and_is_idempotent(nginx: Nginx) -> None:
    """add() of a drained member makes it ready; a repeated add() does not rewrite the file."""
    balancer = nginx.balancer()
    balancer.add(1, nginx.backend(1))
    balancer.drain(1)
    balancer.add(1, nginx.backend(1))
    assert balancer.members() == [Member(1, nginx.backend(1), READY)]
    inode = nginx.upstream_file.stat().st_ino
    balancer.add(1, nginx.backend(1))
    assert nginx.upstream_file.stat().st_ino == inode
    balancer.drain(7)  # not a member: nothing to do
    balancer.remove(7)
    assert nginx.upstream_file.stat().st_ino == inode


def test_empty_upstream_keeps_a_placeholder(nginx: Nginx) -> None:
    """Removing the last member writes the down placeholder, which nginx accepts (502s)."""
    balancer = nginx.balancer()
    balancer.add(1, nginx.backend(1))
    with nginx.reloaded():
        balancer.remove(1)
    text = nginx.upstream_file.read_text()
    assert "server 127.0.0.1:9 down;" in text
    assert balancer.members() == []
    # an old worker can still take a request in the moment after the reload: wait (bounded)
    wait_until(lambda: nginx.get().status_code == 502, 8, "nginx to answer 502 with no servers")


def test_nginx_t_failure_restores_the_file(nginx: Nginx) -> None:
    """An address nginx -t rejects: PermanentError with nginx's message, file byte-identical."""
    balancer = nginx.balancer(ip_hash=False)
    with nginx.reloaded():
        balancer.add(1, nginx.backend(1))
    before = nginx.upstream_file.read_bytes()
    nginx.upstream_file.chmod(0o640)
    with pytest.raises(PermanentError) as caught:
        balancer.add(2, "999.1.1.1:99999")
    message = str(caught.value)
    assert "nginx -t failed" in message
    assert "invalid port" in message or "host not found" in message
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.upstream_file.stat().st_mode & 0o777 == 0o640
    assert leftovers(nginx.tmp) == []
    assert set(nginx.hits(4)) == {"1"}
    assert [m.n for m in balancer.members()] == [1]


def test_reload_failure_restores_the_file(nginx: Nginx, tmp_path: Path) -> None:
    """nginx not running: the reload fails, TemporaryError, the previous file is back."""
    upstream_file = tmp_path / "upstream.conf"
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx.config(tmp_path, pid=tmp_path / "none.pid"))
    balancer = NginxBalancer(
        "web", nginx.pool(), nginx.options(file=str(upstream_file), conf=str(conf))
    )
    upstream_file.write_text(balancer.render([Member(1, nginx.backend(1), READY)]))
    before = upstream_file.read_bytes()
    with pytest.raises(TemporaryError) as caught:
        balancer.add(2, nginx.backend(2))
    assert "reload failed" in str(caught.value)
    assert "none.pid" in str(caught.value)
    assert upstream_file.read_bytes() == before
    assert [m.n for m in balancer.members()] == [1]


def test_first_write_failure_leaves_no_file(nginx: Nginx, tmp_path: Path) -> None:
    """With no file before, a failed change removes the new one again."""
    upstream_file = tmp_path / "upstream.conf"
    balancer = NginxBalancer(
        "web", nginx.pool(), nginx.options(file=str(upstream_file), conf=str(tmp_path / "x"))
    )
    with pytest.raises(PermanentError, match="nginx -t failed"):
        balancer.add(1, nginx.backend(1))
    assert not upstream_file.exists()


def test_members_round_trip(nginx: Nginx, tmp_path: Path) -> None:
    """A new balancer reads back what another rendered, down lines as DRAINING."""
    balancer = nginx.balancer()
    members = [
        Member(1, nginx.backend(1), READY),
        Member(3, nginx.backend(3), DRAINING),
        Member(12, "unix:/run/app-12.sock", READY),
    ]
    path = tmp_path / "upstream.conf"
    path.write_text(balancer.render(members))
    other = NginxBalancer("web", nginx.pool(), nginx.options(file=str(path)))
    assert other.members() == members
    assert other.connections(1) is None
    assert NginxBalancer("web", nginx.pool(), nginx.options(file=str(path) + ".x")).members() == []


def test_seed_file_is_adopted_by_port(nginx: Nginx, tmp_path: Path) -> None:
    """A hand-written seed block without comments maps servers to n by the port scheme."""
    path = tmp_path / "upstream.conf"
    path.write_text(
        "upstream senex_web {\n    # Use ip_hash for sticky sessions\n    ip_hash;\n    \n"
        f"    server 127.0.0.1:{nginx.base + 1} max_fails=3 fail_timeout=30s;\n"
        f"    server 127.0.0.1:{nginx.base + 2} down;\n    \n    keepalive 32;\n}}\n"
    )
    balancer = NginxBalancer("web", nginx.pool(), nginx.options(file=str(path)))
    assert balancer.members() == [
        Member(1, nginx.backend(1), READY),
        Member(2, nginx.backend(2), DRAINING),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("upstream senex_web {\n    hash $remote_addr;\n    server 127.0.0.1:1;\n}\n", "hash"),
        ("upstream other {\n    server 127.0.0.1:1;\n}\n", "expected only upstream"),
        ("upstream senex_web {\n    server 10.0.0.1:80;\n}\n", "has no"),
        ("upstream senex_web {\n    # senex-scale n=1\n    server h:1 weight=2;\n}\n", "weight"),
    ],
)
def test_foreign_file_is_refused(nginx: Nginx, tmp_path: Path, text: str, problem: str) -> None:
    """A file with directives the balancer does not write is refused, never overwritten."""
    path = tmp_path / "upstream.conf"
    path.write_text(text)
    balancer = NginxBalancer("web", nginx.pool(), nginx.options(file=str(path)))
    with pytest.raises(PermanentError, match=problem):
        balancer.members()
    with pytest.raises(PermanentError, match=problem):
        balancer.add(1, nginx.backend(1))
    assert path.read_text() == text


def test_bad_addresses_are_refused_before_writing(nginx: Nginx) -> None:
    """Addresses that would inject nginx syntax, or reuse a member's, are refused."""
    balancer = nginx.balancer()
    balancer.add(1, nginx.backend(1))
    before = nginx.upstream_file.read_bytes()
    for address in ("127.0.0.1:1; }", "", "a b", "127.0.0.1:2#x"):
        with pytest.raises(PermanentError, match="not a server address"):
            balancer.add(2, address)
    with pytest.raises(PermanentError, match="already instance 1's address"):
        balancer.add(2, nginx.backend(1))
    assert nginx.upstream_file.read_bytes() == before


def test_lock_held_elsewhere_is_temporary(nginx: Nginx) -> None:
    """While another process holds FILE.lock a change waits, then fails as temporary."""
    balancer = nginx.balancer(reload_timeout="0.3s")
    before = nginx.upstream_file.read_bytes()
    fd = os.open(balancer.lock_file, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(TemporaryError, match="held by another process"):
            balancer.add(1, nginx.backend(1))
    finally:
        os.close(fd)
    assert nginx.upstream_file.read_bytes() == before


def test_settings_errors_name_the_pool(tmp_path: Path) -> None:
    """Every settings problem is reported at once as pools.web.balancer.FIELD."""
    pool = Pool.model_validate({"min": 0, "max": 3})
    options = {"file": str(tmp_path / "u.conf"), "ip_hsh": True, "max_fails": -1}
    options |= {"fail_timeout": "soon", "upstream": "bad name", "reload_timeout": "0s"}
    with pytest.raises(PolicyError) as caught:
        NginxBalancer("web", pool, options)
    problems = caught.value.problems
    assert 'pools.web.balancer: unknown key "ip_hsh" (did you mean "ip_hash"?)' in problems
    assert any(p.startswith("pools.web.balancer.max_fails:") for p in problems)
    assert any(p.startswith("pools.web.balancer.fail_timeout:") for p in problems)
    assert any(p.startswith("pools.web.balancer.upstream:") for p in problems)
    assert any(p.startswith("pools.web.balancer.reload_timeout:") for p in problems)
    with pytest.raises(PolicyError) as missing:
        NginxBalancer("web", pool, {})
    assert "pools.web.balancer.upstream: required" in missing.value.problems
    assert "pools.web.balancer.file: required" in missing.value.problems


def test_built_from_the_policy(tmp_path: Path) -> None:
    """build_balancer resolves type "nginx" with the pool's options."""
    pool = Pool.model_validate(
        {
            "min": 0,
            "max": 3,
            "balancer": {"type": "nginx", "upstream": "u", "file": str(tmp_path / "u.conf")},
        }
    )
    balancer = build_balancer("web", pool)
    assert isinstance(balancer, NginxBalancer)
    assert balancer.pool == "web"
    assert balancer.members() == []


def test_nginx_missing_is_permanent(nginx: Nginx, tmp_path: Path) -> None:
    """A binary that does not exist fails the test step; no file is left."""
    upstream_file = tmp_path / "upstream.conf"
    balancer = NginxBalancer(
        "web",
        nginx.pool(),
        nginx.options(file=str(upstream_file), nginx=str(tmp_path / "no-nginx")),
    )
    with pytest.raises(PermanentError, match="no such program"):
        balancer.add(1, nginx.backend(1))
    assert not upstream_file.exists()
