"""Structured logs (structlog), JSON or console, with secrets redacted in every event.

Redaction runs as a processor on every event, so no call site can forget it: values of keys
that name a secret (password, token, secret, authorization, dsn passwords) become ``***``, and
passwords inside URLs and libpq connection strings in any string value are masked too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|api[_-]?key", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)", re.I)
KV_PASSWORD = re.compile(
    r"(?P<head>\b[\w.-]*(?:password|passwd|secret|token)\s*=\s*)(?P<pw>'[^']*'|[^\s'\"]+)",
    re.IGNORECASE,
)
"""``password=...``, ``db_password=...``, ``api_token=...`` in libpq strings and argv."""


def redact_text(text: str) -> str:
    """``text`` with passwords in URLs and ``...password=``/``...token=`` pairs masked."""
    text = URL_PASSWORD.sub(r"\g<head>***", text)
    return KV_PASSWORD.sub(r"\g<head>***", text)


def redact_value(value: Any) -> Any:
    """``value`` (str, dict, list) with secrets masked, recursively (for the audit log)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and SECRET_KEYS.search(k) else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every key and value of the event."""
    for key in list(event):
        if SECRET_KEYS.search(key):
            event[key] = "***"
        else:
            event[key] = redact_value(event[key])
    return event


def configure(fmt: Literal["console", "json"] = "console", level: str = "info") -> None:
    """Set up structlog for the daemon: to stderr, JSON lines or a console layout."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
