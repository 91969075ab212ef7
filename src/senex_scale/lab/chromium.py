"""Headless Chromium (Debian's) driven over the DevTools protocol: open a page, collect its
console errors and exceptions, evaluate JavaScript, take a screenshot.

For the status page test and the end-to-end test. Why not Playwright or Selenium: both would
add a driver (Node, chromedriver) to what CI installs, for four protocol calls; the protocol
itself is JSON over one WebSocket (``websockets``, already a dependency of the tests).
The flags are those that keep Chromium quiet on a machine without internet access.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from senex_scale.lab.base import HOST, LabError, free_port

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise LabError("chromium is not installed (scripts/services installs it)")
    return found


class Page:
    """One tab, over its DevTools WebSocket; ``events`` holds what the page reported."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise LabError(f"DevTools {method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return dict(event)
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                break
            self.events.append(message)
            if message.get("method") == method:
                return dict(message)
        raise LabError(f"DevTools: no {method} within {timeout:g}s")

    def open(self, url: str, settle: float = 2.0) -> None:
        """Navigate, wait for the load event, then let the page's own fetches run."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")
        self.drain(settle)

    def drain(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        """A PNG of the whole page, saved to ``path``."""
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        png = base64.b64decode(shot["data"])
        path.write_bytes(png)
        return png

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed loads."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
                found.append(f"console.{params['type']}: {params['args']}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                found.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        return found


class Chromium:
    """A headless Chromium with a DevTools port; ``page()`` opens a tab.

    ``with Chromium() as browser: page = browser.page(); page.open(url)``."""

    def __init__(self, port: int | None = None, width: int = 1400, height: int = 1300) -> None:
        self.port = free_port() if port is None else port
        self.size = f"{width},{height}"
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pages = contextlib.ExitStack()

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="senex-chromium-")
        argv = [
            chromium_binary(),
            *FLAGS,
            f"--user-data-dir={self._profile.name}",
            f"--remote-debugging-port={self.port}",
            f"--window-size={self.size}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://{HOST}:{self.port}/json/version", timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabError(f"chromium did not open its DevTools port {self.port}")
            time.sleep(0.1)

    def page(self) -> Page:
        target = httpx.put(f"http://{HOST}:{self.port}/json/new?about:blank", timeout=10).json()
        ws = self._pages.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None))
        return Page(ws)

    def stop(self) -> None:
        self._pages.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None
