"""Shared by the status page tests: serving an app the way ``senex-scale run`` does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from senex_scale.controller.daemon import WebThread
from senex_scale.lab import free_port


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(app)``: the app on a free loopback port (uvicorn thread); its base URL."""
    threads: list[WebThread] = []

    def start(app: Any) -> str:
        port = free_port()
        web = WebThread(app, "127.0.0.1", port)
        web.start()
        threads.append(web)
        return f"http://127.0.0.1:{port}"

    yield start
    for web in threads:
        web.stop()
