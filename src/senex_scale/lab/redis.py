"""Redis on loopback: nothing saved to disk, an optional password, optionally a replica.

The config (with ``requirepass`` and ``masterauth``) is a file of mode 0600, so the password
is in neither argv nor the log. A replica is ready once its link to the master is up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import redis

from senex_scale.lab.base import HOST, Server, binary, write_secret


def quoted(value: object) -> str:
    """A value for a Redis or Sentinel config line (double quotes, backslash escapes)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


NOT_YET: tuple[type[BaseException], ...] = (OSError, redis.RedisError)
"""What a Redis or a Sentinel that is still starting raises."""


class Redis(Server):
    """One ``redis-server`` on ``127.0.0.1:port`` (``--save "" --appendonly no``)."""

    name = "redis"
    not_yet = NOT_YET

    def __init__(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        password: str | None = None,
        replica_of: Redis | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """``args``: more ``redis-server`` options, e.g. ``("--unixsocket", PATH)``."""
        super().__init__(root, port)
        self.password = password
        self.replica_of = replica_of
        self.args = list(args)
        self._clients: dict[int, redis.Redis] = {}

    @property
    def conf(self) -> Path:
        return self.root / f"{self.name}.conf"

    def url(self, db: int = 0) -> str:
        """``redis://[:PASSWORD@]127.0.0.1:PORT/DB``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """The lab's own client for ``db`` (one per db, closed when the server stops)."""
        if db not in self._clients:
            self._clients[db] = redis.Redis(
                host=HOST, port=self.port, db=db, password=self.password, socket_timeout=5
            )
        return self._clients[db]

    def _config(self) -> list[str]:
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            'save ""',
            "appendonly no",
            f"dir {quoted(self.root)}",
            "daemonize no",
        ]
        if self.password is not None:
            lines.append(f"requirepass {quoted(self.password)}")
        master = self.replica_of
        if master is not None:
            lines.append(f"replicaof {HOST} {master.port}")
            if master.password is not None:
                lines.append(f"masterauth {quoted(master.password)}")
        return lines

    def _prepare(self) -> None:
        write_secret(self.conf, "\n".join(self._config()) + "\n")

    def _argv(self) -> list[str]:
        return [binary("redis-server"), str(self.conf), *self.args]

    def _ready(self) -> bool:
        ping = redis.Redis(host=HOST, port=self.port, password=self.password, socket_timeout=1)
        try:
            if self.replica_of is None:
                return bool(ping.ping())
            return bool(ping.info("replication").get("master_link_status") == "up")
        finally:
            ping.close()

    def _closed(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
