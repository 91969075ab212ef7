"""The status page refuses foreign Host names (DNS rebinding) and can require a read token.

A page in a browser on the operator's machine can resolve its own domain to the controller's
address (DNS rebinding) and read the JSON API as same-origin: the request then carries that
domain in ``Host``. Served by the real uvicorn thread ``senex-scale run`` uses, read with
httpx over TCP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from senex_scale.store import Store, open_store
from senex_scale.web.app import create_app

pytestmark = pytest.mark.integration

READ = "read-Secret-41c2"
WRITE = "write-Secret-9d0e"
GETS = ["/", "/api/status", "/api/history", "/api/series", "/metrics"]


class Paused:
    paused = False


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:{tmp_path / 'state.db'}")
    yield opened
    opened.close()


def test_a_foreign_host_name_is_refused(store: Store, serve: Any) -> None:
    """Host: evil.example (a rebound name) gets 400 on every path, GET and POST; an IP
    literal, localhost and this machine's own name are served."""
    import socket

    url = serve(create_app(store, control=Paused(), token=WRITE))
    with httpx.Client(base_url=url) as c:
        for path in [*GETS, "/healthz"]:
            answer = c.get(path, headers={"Host": "evil.example:9308"})
            assert answer.status_code == 400, path
            assert "Host" in answer.text
        post = c.post(
            "/api/pause",
            headers={"Host": "evil.example", "Authorization": f"Bearer {WRITE}"},
        )
        assert post.status_code == 400
        for host in ("127.0.0.1:9308", "localhost", "[::1]:9308", "10.1.2.3",
                     socket.gethostname()):  # fmt: skip
            assert c.get("/api/status", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_add_names(store: Store, serve: Any) -> None:
    """allowed_hosts: a name (and a "*." suffix) the operator serves the page under."""
    url = serve(create_app(store, allowed_hosts=("senex.internal", "*.ops.example")))
    with httpx.Client(base_url=url) as c:
        assert c.get("/api/status", headers={"Host": "senex.internal"}).status_code == 200
        assert c.get("/api/status", headers={"Host": "a.ops.example:80"}).status_code == 200
        assert c.get("/api/status", headers={"Host": "ops.example.evil"}).status_code == 400


def test_a_read_token_guards_every_read(store: Store, serve: Any) -> None:
    """read_token: every GET but /healthz needs it (or the write token) as a bearer token;
    a browser gets it once in ?token= and keeps it in a cookie."""
    url = serve(create_app(store, control=Paused(), token=WRITE, read_token=READ))
    with httpx.Client(base_url=url) as c:
        for path in GETS:
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
            assert c.get(path, headers={"Authorization": f"Bearer {READ}"}).status_code == 200
            assert c.get(path, headers={"Authorization": f"Bearer {WRITE}"}).status_code == 200
        assert c.get("/healthz").status_code in (200, 503)  # open: no token needed
        assert c.post("/api/pause", headers={"Authorization": f"Bearer {READ}"}).status_code == 401
    with httpx.Client(base_url=url, follow_redirects=False) as browser:
        first = browser.get("/", params={"token": READ})
        assert first.status_code == 303
        assert first.headers["location"] == "/"
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert browser.get("/").status_code == 200
        assert browser.get("/api/status").status_code == 200
        assert browser.get("/", params={"token": "nope"}).status_code == 401
