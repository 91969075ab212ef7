"""WebSocketControl on the ASGI protocol itself: an in-process server loop, no network.

The "server" here is a queue per connection: the middleware's close arrives in the
connection's outbox as the ASGI message a server would turn into a close frame (Daphne's own
path, autobahn's frame, is tested against a real Daphne in tests/integration/django).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from senex_scale.contrib.django.access import EndpointConfig
from senex_scale.contrib.django.websockets import WebSocketControl

LOOPBACK = ("127.0.0.1", 40000)


async def streamer(scope: Any, receive: Any, send: Any) -> None:
    """Accept, then send a message every 10 ms until the server says disconnect."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    pending = asyncio.ensure_future(receive())
    while True:
        done, _ = await asyncio.wait({pending}, timeout=0.01)
        if done:
            if pending.result()["type"] == "websocket.disconnect":
                return
            pending = asyncio.ensure_future(receive())
        await send({"type": "websocket.send", "text": "tick"})


class Client:
    """One WebSocket connection driven against the middleware."""

    def __init__(self, control: WebSocketControl) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.after_close = 0
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(
            control({"type": "websocket", "client": LOOPBACK}, self.inbox.get, self.send)
        )

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed.is_set():
            self.after_close += 1
        self.sent.append(message)
        if message["type"] == "websocket.close":
            self.closed.set()
            # the server completes the handshake and tells the application
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": message["code"]})

    def close_message(self) -> dict[str, Any] | None:
        return next((m for m in self.sent if m["type"] == "websocket.close"), None)


async def request(
    control: WebSocketControl,
    method: str,
    body: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = LOOPBACK,
) -> tuple[int, dict[str, Any]]:
    raw = b"" if body is None else json.dumps(body).encode()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "http.request", "body": raw, "more_body": False})
    out: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": control.path,
        "client": client,
        "headers": headers or [],
    }
    await control(scope, inbox.get, send)
    status = out[0]["status"]
    return status, json.loads(out[1]["body"] or b"{}")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


CONFIG = EndpointConfig.from_settings(None)


def test_counts_follow_open_websockets_and_requests() -> None:
    async def test() -> None:
        control = WebSocketControl(streamer, config=CONFIG)
        clients = [Client(control) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert (await request(control, "GET")) == (
            200,
            {"websockets": 3, "requests": 0, "closing": 0},
        )
        clients[0].inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await clients[0].task
        assert (await request(control, "GET"))[1]["websockets"] == 2
        for client in clients[1:]:
            client.inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await asyncio.gather(*(c.task for c in clients))
        assert control.counts() == {"websockets": 0, "requests": 0, "closing": 0}

    run(test)


def test_a_close_picks_the_oldest_and_is_paced() -> None:
    """count 2 of 4 over 0.4 s: the two oldest get 1012 with the reason, about 0.4 s apart;
    the application's sends after the close never reach the server."""

    async def test() -> None:
        control = WebSocketControl(streamer, config=CONFIG)
        clients = []
        for _ in range(4):
            clients.append(Client(control))
            await asyncio.sleep(0.01)
        assert control.websockets == 4
        loop = asyncio.get_running_loop()
        asked = loop.time()
        status, body = await request(control, "POST", {"count": 2, "over": 0.4, "reason": "x"})
        assert (status, body) == (202, {"closing": 2, "over": 0.4})
        await clients[0].closed.wait()
        first = loop.time() - asked
        await clients[0].task
        assert control.closing == 1  # the second, still to go
        await clients[1].closed.wait()
        second = loop.time() - asked
        assert first < 0.1, first
        assert 0.15 < second < 0.6, second
        await asyncio.gather(clients[0].task, clients[1].task)
        for client in clients[:2]:
            assert client.close_message() == {
                "type": "websocket.close",
                "code": 1012,
                "reason": "x",
            }
            assert client.after_close == 0
        assert not clients[2].closed.is_set()
        assert not clients[3].closed.is_set()
        assert control.counts() == {"websockets": 2, "requests": 0, "closing": 0}
        # a second ask takes only connections not closing already: the two left
        assert (await request(control, "POST", {"count": None, "over": 0}))[1]["closing"] == 2
        await asyncio.gather(*(c.task for c in clients))
        assert control.websockets == 0

    run(test)


def test_requests_in_progress_are_counted() -> None:
    release = asyncio.Event

    async def test() -> None:
        gate = release()

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        control = WebSocketControl(slow, config=CONFIG)
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def ignore(message: dict[str, Any]) -> None:
            return None

        scope = {"type": "http", "method": "GET", "path": "/api/", "client": LOOPBACK}
        task = asyncio.ensure_future(control(scope, inbox.get, ignore))
        await asyncio.sleep(0.01)
        assert (await request(control, "GET"))[1]["requests"] == 1
        gate.set()
        await task
        assert control.requests == 0

    run(test)


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        ([(b"x-forwarded-for", b"203.0.113.5")], LOOPBACK),
        ([(b"forwarded", b"for=203.0.113.5")], LOOPBACK),
        ([], ("203.0.113.5", 5555)),
    ],
)
def test_only_internal_callers(headers: list[tuple[bytes, bytes]], client: tuple[str, int]) -> None:
    """Through a proxy or from a public address: 403, nothing closed, no counts shown."""

    async def test() -> None:
        control = WebSocketControl(streamer, config=CONFIG)
        one = Client(control)
        await asyncio.sleep(0.02)
        status, body = await request(control, "POST", {"count": None}, headers, client)
        assert status == 403
        assert "websockets" not in body
        assert (await request(control, "GET", None, headers, client))[0] == 403
        await asyncio.sleep(0.02)
        assert not one.closed.is_set()
        one.inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await one.task

    run(test)


def test_a_bearer_token_opens_it_from_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_CONTROL_TOKEN", "s3cret-token")
    config = EndpointConfig.from_settings({"TOKEN_ENV": "WS_CONTROL_TOKEN", "ALLOW": []})

    async def test() -> None:
        control = WebSocketControl(streamer, config=config)
        assert (await request(control, "GET"))[0] == 403
        good = [(b"authorization", b"Bearer s3cret-token")]
        assert (await request(control, "GET", None, good, ("203.0.113.5", 1)))[0] == 200
        bad = [(b"authorization", b"Bearer s3cret-tokeX")]
        assert (await request(control, "GET", None, bad, ("203.0.113.5", 1)))[0] == 403

    run(test)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"count": -1}, "count"),
        ({"count": 1.5}, "count"),
        ({"count": True}, "count"),
        ({"over": -1}, "over"),
        ({"over": "5"}, "over"),
        ({"reason": "x" * 101}, "reason"),
        ({"reason": "a\nb"}, "reason"),
        ({"every": 1}, "every"),
        ([1, 2], "object"),
    ],
)
def test_bad_close_requests_name_the_key(body: Any, key: str) -> None:
    async def test() -> None:
        control = WebSocketControl(streamer, config=CONFIG)
        one = Client(control)
        await asyncio.sleep(0.02)
        status, answer = await request(control, "POST", body)
        assert status == 400, answer
        assert key in answer["error"], answer
        assert control.closing == 0
        assert not one.closed.is_set()
        one.inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await one.task

    run(test)


def test_other_paths_and_lifespan_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"] + ":" + scope.get("path", ""))

    async def test() -> None:
        control = WebSocketControl(app, config=CONFIG)
        await control({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
        await control({"type": "http", "path": "/senex/websockets"}, None, None)  # type: ignore[arg-type]
        assert seen == ["lifespan:", "http:/senex/websockets"]

    run(test)


def slow_teardown(release: asyncio.Event) -> Any:
    """An application that takes its time to end after the disconnect, as a Channels
    consumer does while its pending channel-layer receive is being cancelled."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        await release.wait()

    return app


def test_a_connection_is_uncounted_when_the_server_says_disconnect() -> None:
    """The server's disconnect ends the connection: it is no longer counted (nor closing)
    while the application still tidies up, and not uncounted twice when it returns."""

    async def test() -> None:
        release = asyncio.Event()
        control = WebSocketControl(slow_teardown(release), config=CONFIG)
        clients = [Client(control) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert control.websockets == 3
        clients[0].inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        while control.websockets != 2:  # the application takes the disconnect
            await asyncio.sleep(0.01)
        assert (await request(control, "POST", {"count": 1, "over": 0}))[1]["closing"] == 1
        await clients[1].closed.wait()
        await asyncio.sleep(0.05)
        assert not clients[0].task.done()
        assert not clients[1].task.done()
        assert control.counts() == {"websockets": 1, "requests": 0, "closing": 0}
        release.set()
        await asyncio.gather(clients[0].task, clients[1].task)
        assert control.counts() == {"websockets": 1, "requests": 0, "closing": 0}
        clients[2].inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await clients[2].task
        assert control.websockets == 0

    run(test)


def test_a_paced_close_skips_a_connection_that_left_meanwhile() -> None:
    """Chosen for a close, gone before its turn: nothing is sent to it after its disconnect."""

    async def test() -> None:
        control = WebSocketControl(streamer, config=CONFIG)
        clients = []
        for _ in range(2):
            clients.append(Client(control))
            await asyncio.sleep(0.01)
        assert (await request(control, "POST", {"count": 2, "over": 0.3}))[1]["closing"] == 2
        clients[1].inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await clients[0].closed.wait()
        await asyncio.sleep(0.4)  # past the second one's turn
        assert clients[1].close_message() is None
        await asyncio.gather(*(c.task for c in clients))
        assert control.counts() == {"websockets": 0, "requests": 0, "closing": 0}

    run(test)
