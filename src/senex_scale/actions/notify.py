"""Tell a person: a JSON POST to a webhook, or an alert to Alertmanager's v2 API.

A URL ending in ``/api/v2/alerts`` gets Alertmanager's format (a list of alerts with labels
and annotations, ``endsAt`` one hour on so it resolves itself); any other URL gets a plain JSON
document. Without a URL the message goes to the audit log only. Redirects are not followed,
the environment's proxy variables and ``.netrc`` are ignored (a proxy set for something else
would see every alert, ``.netrc`` would add credentials nobody asked for), and no reply body
is read (only its status: the body may be endless, or echo credentials).
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
            with (
                httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client,
                client.stream("POST", self.spec.url, json=self.payload(context)) as reply,
            ):
                status = reply.status_code  # the body is never read
        except httpx.HTTPError as exc:
            raise TemporaryError(f"notify {context.rule}: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status == 429:
            raise TemporaryError(f"notify {context.rule}: HTTP {status}")
        if status >= 300:
            raise PermanentError(f"notify {context.rule}: HTTP {status}")
        return f"sent: HTTP {status}"
