"""The nginx balancer with ``balance = "least_conn"`` against a real nginx: the block it writes
passes ``nginx -t``, and a new request goes to the instance with fewer open connections."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from senex_scale.balancers.base import Member, MemberState

if TYPE_CHECKING:  # conftest is a plugin, not an importable module (--import-mode=importlib)
    from conftest import Nginx

pytestmark = pytest.mark.integration


def busy_and_free(nginx: Nginx, hits: int = 4) -> tuple[str, list[str]]:
    """While one ``/slow`` request holds a connection to one instance, ``hits`` quick requests
    through nginx: (the busy instance, the quick requests' instances)."""
    slow: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: slow.append(nginx.get("/slow")))
    thread.start()
    try:
        threading.Event().wait(0.3)  # the slow request is at its instance now
        quick = nginx.hits(hits)
        assert thread.is_alive(), "the slow request ended before the quick ones: inconclusive"
    finally:
        thread.join(10)
    assert len(slow) == 1
    assert slow[0].status_code == 200
    return slow[0].text, quick


def test_least_conn_block_passes_nginx_t(nginx: Nginx) -> None:
    """The written block (a shared zone, least_conn, servers, keepalive) is what nginx -t and
    the running nginx accept, and the balancer reads it back."""
    balancer = nginx.balancer(balance="least_conn")
    with nginx.reloaded():
        balancer.add(1, nginx.backend(1))
    with nginx.reloaded():
        balancer.add(2, nginx.backend(2))
    text = nginx.upstream_file.read_text()
    assert "    zone senex_web 64k;\n    least_conn;\n" in text
    assert text.index("least_conn;") < text.index("server ") < text.index("keepalive 32;")
    nginx.test()  # raises with nginx's message if the config is refused
    assert balancer.members() == [
        Member(1, nginx.backend(1), MemberState.READY),
        Member(2, nginx.backend(2), MemberState.READY),
    ]
    assert set(nginx.hits(6)) == {"1", "2"}


def test_least_conn_sends_new_requests_to_the_idle_instance(nginx: Nginx) -> None:
    """With one instance busy (a request in flight), every new request goes to the other."""
    balancer = nginx.balancer(balance="least_conn")
    balancer.add(1, nginx.backend(1))
    with nginx.reloaded():
        balancer.add(2, nginx.backend(2))
    busy, quick = busy_and_free(nginx)
    assert busy in {"1", "2"}
    assert set(quick) == {"2" if busy == "1" else "1"}


def test_round_robin_sends_new_requests_to_the_busy_instance_too(nginx: Nginx) -> None:
    """The control: round robin (ip_hash = false) alternates, busy instance or not."""
    balancer = nginx.balancer(ip_hash=False)
    balancer.add(1, nginx.backend(1))
    with nginx.reloaded():
        balancer.add(2, nginx.backend(2))
    busy, quick = busy_and_free(nginx)
    assert busy in quick
    assert set(quick) == {"1", "2"}
