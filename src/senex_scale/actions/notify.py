"""Tell a person: a JSON POST to a webhook, or an alert to Alertmanager's v2 API.

A URL ending in ``/api/v2/alerts`` gets Alertmanager's format (a list of alerts with labels
and annotations, ``endsAt`` one hour on so it resolves itself); any other URL gets a plain JSON
document. Without a URL the message goes to the audit log only. Redirects are not followed
and the body of an error reply is not logged (it may echo credentials).
"""

from __future__ import annotations

import datetime as dt

import httpx

from senex_scale.actions.base import ActionContext
from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.policy.models import Notify

TIMEOUT = 10.0


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


class NotifyAction:
    """The ``notify`` action."""

    def __init__(self, spec: Notify) -> None:
        self.spec = spec

    def payload(self, context: ActionContext) -> object:
        """What is POSTed to the URL."""
        if self.spec.url and self.spec.url.rstrip("/").endswith("/api/v2/alerts"):
            return [
                {
                    "labels": {
                        "alertname": context.rule,
                        "pool": context.pool or "",
                        "severity": context.priority,
                        "source": "senex-scale",
                    },
                    "annotations": {
                        "summary": self.spec.message,
                        "description": "; ".join(context.reasons),
                    },
                    "startsAt": _iso(context.at),
                    "endsAt": _iso(context.at + 3600),
                }
            ]
        return {
            "source": "senex-scale",
            "rule": context.rule,
            "pool": context.pool,
            "priority": context.priority,
            "message": self.spec.message,
            "reasons": list(context.reasons),
            "at": _iso(context.at),
        }

    def run(self, context: ActionContext) -> str:
        if not self.spec.url:
            return f"noted: {self.spec.message}"
        try:
            reply = httpx.post(
                self.spec.url, json=self.payload(context), timeout=TIMEOUT, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise TemporaryError(f"notify {context.rule}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code >= 500 or reply.status_code == 429:
            raise TemporaryError(f"notify {context.rule}: HTTP {reply.status_code}")
        if reply.status_code >= 300:
            raise PermanentError(f"notify {context.rule}: HTTP {reply.status_code}")
        return f"sent: HTTP {reply.status_code}"
