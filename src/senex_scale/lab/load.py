"""HTTP requests through a balancer in a thread, counting what a user would see: the
controller's integration stack and the fault suite."""

from __future__ import annotations

import threading
import time

import httpx


class HttpLoad:
    """GET ``url`` every ``pause`` seconds until stopped, counting failures with their time.

    Like a browser, it sends an idempotent GET again, once, on a new connection when a
    kept-alive connection was closed under it before any byte of the answer (RFC 9112,
    9.3.1): nginx closes its idle client connections at every reload. Those retries are
    counted (``retried``), not hidden; a second failure is a failure. Any answer but 200 is
    a failure."""

    def __init__(self, url: str, *, pause: float = 0.03) -> None:
        self.url = url
        self.pause = pause
        self.ok = 0
        self.failed: list[tuple[float, str]] = []
        self.retried: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    try:
                        reply = client.get(self.url)
                    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                        self.retried.append((time.time(), repr(exc)))
                        reply = client.get(self.url)
                    if reply.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append((time.time(), f"{reply.status_code}"))
                except httpx.HTTPError as exc:
                    self.failed.append((time.time(), repr(exc)))
                self._stop.wait(self.pause)

    def failed_outside(self, windows: list[tuple[float, float]]) -> list[tuple[float, str]]:
        """Failures not inside any of ``windows`` (the moments a fault itself causes)."""
        return [f for f in self.failed if not any(a <= f[0] <= b for a, b in windows)]

    def start(self) -> HttpLoad:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)

    def __enter__(self) -> HttpLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
