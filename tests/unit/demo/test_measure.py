"""How the demo's measurement tells WebSocket closes apart (drain, rebalance, early)."""

from __future__ import annotations

from typing import Any

from senex_scale.demo.measure import measure

BASE = 8000


def sock(port: int, closed: float, by: str = "server", detail: str = "code 1012") -> dict[str, Any]:
    return {"user": 1, "opened": 0.0, "port": port, "closed": closed, "by": by, "detail": detail}


def test_drain_rebalance_and_early_closes_are_told_apart() -> None:
    drained_at = 100.0
    decisions = [
        {
            "kind": "scale",
            "pool": "django",
            "direction": "in",
            "outcome": "done",
            "at": 99.0,
            "current": 3,
            "desired": 2,
            "detail": {"steps": [{"at": drained_at, "n": 3, "what": "drain", "detail": ""}]},
        }
    ]
    record = {
        "started": 0.0,
        "ended": 200.0,
        "requests": [],
        "queued": [],
        "sockets": [
            sock(BASE + 3, drained_at + 2, detail="code 1012 drain"),  # the drain's
            sock(BASE + 1, 50.0, detail="code 1012 rebalance"),  # asked by the controller
            sock(BASE + 2, 60.0, detail="code 1006"),  # cut: early
            sock(BASE + 1, 70.0, detail="code 1012"),  # 1012 without the reason: early
            sock(BASE + 1, 80.0, by="client", detail=""),  # the load ramping down
        ],
    }
    result = measure(record, decisions, {}, django_base=BASE)
    assert result["websockets_closed_by_drain"] == 1
    assert result["websockets_rebalanced"] == 1
    assert result["websockets_closed_early"] == 2


def test_the_instance_number_wins_over_the_port() -> None:
    """In containers every instance listens on 8000: the first message's instance number
    says which instance it was (a drain of instance 3 explains the close)."""
    decisions = [
        {
            "kind": "scale",
            "pool": "django",
            "direction": "in",
            "outcome": "done",
            "at": 9.0,
            "current": 3,
            "desired": 2,
            "detail": {"steps": [{"at": 10.0, "n": 3, "what": "drain", "detail": ""}]},
        }
    ]
    drained = {**sock(8000, 12.0, detail="code 1012 drain"), "instance": 3}
    record = {"started": 0.0, "ended": 20.0, "requests": [], "queued": [], "sockets": [drained]}
    result = measure(record, decisions, {}, django_base=BASE)
    assert result["websockets_closed_by_drain"] == 1
    assert result["websockets_closed_early"] == 0


def test_an_early_close_is_explained() -> None:
    """Each early close says its phase, when in it, how long it was held, and how it ended."""
    refused = {
        **sock(BASE + 1, 17.2, by="error", detail="InvalidStatus: HTTP 502"),
        "opened": 12.1,
        "port": None,
    }
    cut = {**sock(BASE + 2, 40.0, detail="code 1006"), "opened": 30.0}
    record = {
        "started": 0.0,
        "ended": 60.0,
        "requests": [],
        "queued": [],
        "sockets": [refused, cut],
        "phases": [["quiet", 0.0], ["rush", 10.0]],
    }
    result = measure(record, [], {}, django_base=BASE)
    assert result["websocket_error_examples"] == [
        "rush +2.1 s: error after 5.1 s (before its first message): InvalidStatus: HTTP 502",
        "rush +20.0 s: server after 10.0 s (after connecting): code 1006",
    ]
