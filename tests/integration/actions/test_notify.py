"""The notify action's POST: straight to its URL, without the environment's proxies or
``.netrc`` credentials, and without reading a reply body of any size.

Against real HTTP servers on 127.0.0.1: the webhook, a "proxy" that records whatever
reaches it, and a webhook that answers with an endless body.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from senex_scale.actions.base import ActionContext
from senex_scale.actions.notify import NotifyAction
from senex_scale.policy.models import Notify

pytestmark = pytest.mark.integration

CONTEXT = ActionContext("pg-cpu", "django", "high", ("cpu 91 > 80 for 10m",), 1.0)


class Server:
    """A loopback HTTP server recording (path, Authorization) of every request."""

    def __init__(self, endless: bool = False) -> None:
        self.seen: list[tuple[str, str | None]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                if not endless:
                    self.send_header("Content-Length", "3")
                    self.end_headers()
                    self.wfile.write(b"ok\n")
                    return
                self.send_header("Content-Length", str(1 << 40))
                self.end_headers()
                deadline = time.monotonic() + 10
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(b"x" * 65536)
                except OSError:
                    pass

            def do_POST(self) -> None:
                self._answer()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.stop()


def test_proxies_and_netrc_from_the_environment_are_ignored(
    servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY points at a recorder and ~/.netrc has a login for the webhook's host: the
    POST goes straight to the webhook, with no Authorization header."""
    hook, proxy = Server(), Server()
    servers += [hook, proxy]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login admin password netrc-Secret-1\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    spec = Notify(message="add a replica", url=f"http://127.0.0.1:{hook.port}/hook")
    assert NotifyAction(spec).run(CONTEXT) == "sent: HTTP 200"
    assert proxy.seen == []
    assert hook.seen == [("/hook", None)]


def test_a_reply_body_is_not_read(servers: list[Server]) -> None:
    """A webhook answering with a terabyte body: the action returns on the status line."""
    hook = Server(endless=True)
    servers.append(hook)
    spec = Notify(message="x", url=f"http://127.0.0.1:{hook.port}/hook")
    started = time.monotonic()
    assert NotifyAction(spec).run(CONTEXT) == "sent: HTTP 200"
    assert time.monotonic() - started < 5
