"""Celery tasks of the reference app on a real worker: queues, and read-your-writes carried
from the publishing context into the task (the ``senex_pin`` header)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from senex_scale.lab import free_port

from .conftest import DEMO, Stack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_setup")]


@pytest.fixture(scope="module")
def worker(django_setup: Stack) -> Iterator[Any]:
    """One worker consuming all three queues (solo pool), configured by environment."""
    stack = django_setup
    metrics_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(DEMO),
        **stack.env(SENEX_MAX_LAG_SECONDS="3600", SENEX_CELERY_METRICS_PORT=str(metrics_port)),
    }
    log = stack.root / "celery-worker.log"
    celery = str(Path(sys.executable).parent / "celery")
    argv = [celery, "-A", "senextrader", "worker", "-Q", "trading,accounts,general",
            "--pool", "solo", "-n", "senex-test@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=DEMO, env=env, stdout=out, stderr=subprocess.STDOUT)
    before = os.environ.get("DJANGO_SETTINGS_MODULE")
    try:
        from senextrader.celery import app

        replies: list[Any] = []
        for _ in range(60):
            replies = app.control.ping(timeout=0.5)
            if replies:
                break
        assert replies, f"the worker did not answer (log: {log})"
        app.conf.senex_metrics_port = metrics_port
        yield app
    finally:
        # importing the demo's Celery app sets DJANGO_SETTINGS_MODULE for this process;
        # the tests after this one (and the workers they start) must not inherit it
        if before is None:
            os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_tasks_run_on_their_queues(worker: Any) -> None:
    """execute_trade goes to 'trading', recalculate_account to 'accounts'; both run."""
    from trading import tasks

    trade = tasks.execute_trade.delay(8801, "Q1", "buy", "2", "5")
    assert trade.get(timeout=30)["quantity"] == "2.0000"
    assert tasks.recalculate_account.delay(8801).get(timeout=30) == "10.00000000"
    inspect = worker.control.inspect(timeout=2)
    queues = {q["name"] for qs in (inspect.active_queues() or {}).values() for q in qs}
    assert {"trading", "accounts", "general"} <= queues


def test_a_task_reads_the_writes_of_the_context_that_queued_it(
    worker: Any, paused_replay: Stack, router_config: Any
) -> None:
    """Replay paused: a task queued after a write sees the write (pin in the header); a task
    queued from a context that did not write reads the stale replica."""
    from trading import tasks
    from trading.models import Position

    router_config(MAX_LAG_SECONDS=3600)
    Position.objects.create(
        user_id=8802, symbol="PIN", quantity=Decimal(3), avg_price=Decimal(2), status="open"
    )
    assert tasks.recalculate_account.delay(8802).get(timeout=30) == "6.00000000"

    paused_replay.primary_sql(
        "INSERT INTO trading_position (user_id, symbol, quantity, avg_price, status, updated_at)"
        " VALUES (8803, 'NOPIN', 3, 2, 'open', now())"
    )
    from senex_scale.contrib.django.router import pin_scope

    with pin_scope():
        assert tasks.recalculate_account.delay(8803).get(timeout=30) == "0"


def test_a_trade_queued_over_http_is_executed(worker: Any) -> None:
    """POST /api/trades/async/ answers 202 with a task id; the worker records the trade."""
    import json

    from celery.result import AsyncResult
    from django.test import Client

    trade = {"user_id": 8804, "symbol": "ASY", "side": "buy", "quantity": "1", "price": "4"}
    response = Client().post(
        "/api/trades/async/", json.dumps(trade), content_type="application/json"
    )
    assert response.status_code == 202
    result = AsyncResult(response.json()["task"], app=worker).get(timeout=30)
    assert result == {
        "symbol": "ASY",
        "quantity": "1.0000",
        "avg_price": "4.0000",
        "status": "open",
    }


def test_the_worker_serves_task_metrics(worker: Any) -> None:
    """After tasks ran, the worker's /metrics counts them by task and state."""
    from trading import tasks

    tasks.recalculate_account.delay(1).get(timeout=30)
    text = httpx.get(f"http://127.0.0.1:{worker.conf.senex_metrics_port}/metrics", timeout=10).text
    assert 'celery_tasks_total{state="SUCCESS",task="trading.tasks.recalculate_account"}' in text
    assert "celery_worker_concurrency 1.0" in text
    assert "celery_worker_tasks_active 0.0" in text
    assert 'celery_task_runtime_seconds_count{task="trading.tasks.recalculate_account"}' in text
