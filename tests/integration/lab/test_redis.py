"""senex_scale.lab: Redis (with a password and a replica) and Sentinel start, answer and stop."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from senex_scale.lab import LabError, Redis, Sentinel

pytestmark = pytest.mark.integration

PASSWORD = 'lab-Secret 77a1 "q\\'
"""With a space, a quote and a backslash: the config must quote it."""


def test_redis_replica_and_sentinel(
    tmp_path: Path, tree: Callable[..., Any], gone: Callable[..., bool]
) -> None:
    with Redis(tmp_path / "master", password=PASSWORD) as master:
        assert master.client().set("k", "v")
        assert redis.Redis.from_url(master.url(1)).ping()
        assert PASSWORD not in " ".join(tree(master)[0].cmdline())
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=master.port).get("k")
        with Redis(tmp_path / "replica", replica_of=master) as replica:
            assert replica.client().info("replication")["role"] == "slave"
            with Sentinel(tmp_path / "sentinel", master=master, quorum=1) as sentinel:
                assert sentinel.master_address() == ("127.0.0.1", master.port)
                assert sentinel.client().ping()
                processes = tree(sentinel)
            assert gone(processes)
        processes = tree(master)
        master.kill()
        assert gone(processes)
        assert not master.alive
        master.start()
        assert master.client().ping()
        assert master.proc is not None
        master.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
    assert not master.alive  # a frozen server stops gracefully too, at once
    assert time.monotonic() - started < 5
    assert master.forced == []


def test_redis_start_failure_has_the_log_tail(tmp_path: Path) -> None:
    server = Redis(tmp_path / "bad", args=("--no-such-option", "1"))
    with pytest.raises(LabError, match="exited") as raised:
        server.start()
    assert "no-such-option" in str(raised.value)
    assert not server.alive
