"""Redis Sentinel on loopback, watching a lab ``Redis`` master.

Sentinel rewrites its config as it learns (replicas, other sentinels, failovers), so the file
is written once, on the first start; a restarted sentinel goes on from what it knew.
"""

from __future__ import annotations

from pathlib import Path

import redis

from senex_scale.lab.base import HOST, LabError, Server, binary, write_secret
from senex_scale.lab.redis import NOT_YET, Redis, quoted


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Sentinel(Server):
    """One ``redis-sentinel`` watching ``master`` under ``name``."""

    name = "sentinel"
    not_yet = NOT_YET

    def __init__(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        master: Redis,
        name: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        super().__init__(root, port)
        self.master = master
        self.master_name = name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._client: redis.Redis | None = None

    @property
    def conf(self) -> Path:
        return self.root / "sentinel.conf"

    def client(self) -> redis.Redis:
        """The lab's own client of this sentinel (closed when it stops)."""
        if self._client is None:
            self._client = redis.Redis(host=HOST, port=self.port, socket_timeout=5)
        return self._client

    def master_address(self) -> tuple[str, int]:
        """(host, port) of the master this sentinel names now."""
        reply = self.client().sentinel_get_master_addr_by_name(self.master_name)
        if not isinstance(reply, (list, tuple)) or not reply:
            raise LabError(f"sentinel {self.address} knows no master {self.master_name}")
        return _text(reply[0]), int(reply[1])

    def _prepare(self) -> None:
        if self.conf.exists():
            return
        name = self.master_name
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {quoted(self.root)}",
            f"sentinel monitor {name} {HOST} {self.master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
        ]
        if self.master.password is not None:
            lines.append(f"sentinel auth-pass {name} {quoted(self.master.password)}")
        write_secret(self.conf, "\n".join(lines) + "\n")

    def _argv(self) -> list[str]:
        return [binary("redis-sentinel"), str(self.conf)]

    def _ready(self) -> bool:
        return bool(self.client().ping())

    def _closed(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
