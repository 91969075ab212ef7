"""Secrets never reach the logs: the redaction processor on every structlog event."""

from __future__ import annotations

import io
import json

import structlog

from senex_scale.telemetry.logs import configure, redact_text


def test_url_and_libpq_passwords_are_masked() -> None:
    text = (
        "state postgresql://senex:s3cr3t@db:5432/senex failed; "
        "dsn host=db password=hunter2 user=x; redis://:r3d1s@127.0.0.1:6379/0"
    )
    masked = redact_text(text)
    for secret in ("s3cr3t", "hunter2", "r3d1s"):
        assert secret not in masked
    assert "postgresql://senex:***@db:5432/senex" in masked
    assert "password=***" in masked
    assert "redis://:***@127.0.0.1:6379/0" in masked


def test_every_event_is_redacted_in_json_logs(capsys: object) -> None:
    buffer = io.StringIO()
    configure("json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))
    try:
        log = structlog.get_logger("test")
        log.info(
            "connecting",
            url="postgresql://u:pw-1@h/db",
            password="pw-2",
            headers={"Authorization": "Bearer tok-3", "accept": "json"},
            argv=["ansible-playbook", "--extra-vars", "db_password=pw-4"],
            api_token="tok-5",
        )
    finally:
        structlog.reset_defaults()
    line = buffer.getvalue()
    for secret in ("pw-1", "pw-2", "tok-3", "pw-4", "tok-5"):
        assert secret not in line, line
    event = json.loads(line)
    assert event["password"] == "***"
    assert event["headers"] == {"Authorization": "***", "accept": "json"}
    assert event["event"] == "connecting"


def test_the_audit_log_keeps_no_secret(tmp_path: object) -> None:
    """Reasons, details and the status snapshot pass the same redaction before storage."""
    from pathlib import Path

    from senex_scale.store import open_store

    assert isinstance(tmp_path, Path)
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    try:
        decision = {
            "kind": "scale",
            "pool": "web",
            "priority": "high",
            "reasons": ["source redis://:r3d1s@10.0.0.5:6379/0 failed"],
        }
        did = store.record_decision(1.0, decision, "failed", {"error": "password=hunter2 x"})
        store.put("status", {"source_errors": {"pg": "postgresql://u:pw9@h/db: refused"}})
        store.set_outcome(did, "failed", {"error": "api_token=tok-7"})
    finally:
        store.close()
    raw = (tmp_path / "state.db").read_bytes()
    for secret in (b"r3d1s", b"hunter2", b"pw9", b"tok-7"):
        assert secret not in raw


def test_memory_keyed_by_a_rule_named_like_a_secret_survives(tmp_path: object) -> None:
    from pathlib import Path

    from senex_scale.core.state import Memory
    from senex_scale.store import open_store

    assert isinstance(tmp_path, Path)
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    try:
        memory = Memory().with_action("token-expiry", 5.0)
        store.save_memory(memory)
        assert store.load_memory() == memory
    finally:
        store.close()
