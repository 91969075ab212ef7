"""Scrape: read a metric from each instance's own ``/metrics``, without a Prometheus server.

For a pool with ``port = "BASE + n"``, instance ``n`` is read at::

    GET {scheme}://{host}:{BASE + n}{path}      Accept: text/plain;version=0.0.4

and the body is parsed with ``prometheus_client.parser.text_string_to_metric_families``.
``metric.query`` is a sample name, optionally with label matchers in PromQL syntax
(``=``, ``!=``, ``=~``, ``!~``)::

    senex_websocket_connections
    celery_tasks_active{queue="trading"}
    http_requests_in_progress{method=~"GET|POST"}

The value of an instance is the sum of its matching samples (label sets that match).

Which instances are asked: only those the pool's runtime reports *running*, at the address
the runtime gives (the one the balancer and the health probe use): the request's
``targets``, filled by the collector from the runtime. A port of the pool's range that no
running instance owns is never asked: whoever listens there (another user's process) would
get the bearer token and could inject a sample. ``instances = [1, 2, ...]`` narrows the
running ones further; without a runtime listing (a pool without a runtime, a caller that did
not list) it is the only way to name instances (at ``host``), and nothing is read without it.

The answers are read like this:

* connection refused: the instance stopped since it was listed: skipped;
* an answer that parses: one sample (none when no sample matches the labels, or the value
  is NaN or infinite: missing, never zero);
* a timeout, another connection error, an HTTP error, a body over ``max_bytes`` or one that
  does not parse: the whole query fails with ``SourceError``, because a partial average over
  the instances that did answer would hide the sick one.

When no instance runs, or none answers, the query fails too (temporary). Every request is
bounded by ``deadline`` and ``max_bytes`` (``prometheus.read_bounded``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field, StrictInt, field_validator

from senex_scale.core.state import Sample
from senex_scale.errors import SourceError
from senex_scale.plugins import did_you_mean
from senex_scale.sources.base import MetricRequest, parse_settings
from senex_scale.sources.prometheus import (
    HttpSettings,
    connection_refused,
    finite,
    http_client,
    read_bounded,
    status_error,
    transport_error,
)

ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"


class ScrapeSettings(HttpSettings):
    """``[sources.NAME] type = "scrape"``."""

    host: str = "127.0.0.1"
    scheme: Literal["http", "https"] = "http"
    path: str = "/metrics"
    instances: tuple[StrictInt, ...] | None = Field(default=None, min_length=1)
    """Instance numbers to read, of those the runtime reports running; without a runtime
    listing, the instances read at ``host`` (unset: the running ones only)."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'"{value}" is not a path; it must start with "/"')
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip().removeprefix("[").removesuffix("]")
        if not value or any(c in value for c in "/@?# "):
            raise ValueError('must be a host name or address (e.g. "127.0.0.1")')
        return value

    @field_validator("instances")
    @classmethod
    def _numbers(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and any(n < 1 for n in value):
            raise ValueError("instance numbers start at 1")
        return value


# --------------------------------------------------------------------------- selectors

_NAME = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def parse_selector(text: str) -> tuple[str, list[Callable[[dict[str, str]], bool]]]:
    """``name{label="x", other=~"a|b"}`` -> (name, label tests); ValueError when malformed."""
    match = _NAME.match(text)
    if not match:
        raise ValueError("must start with a metric name")
    name, pos = match.group(1), match.end()
    tests: list[Callable[[dict[str, str]], bool]] = []
    if pos < len(text):
        if text[pos] != "{" or not text.rstrip().endswith("}"):
            raise ValueError('labels go in braces after the name: name{label="value"}')
        body, pos = text.rstrip()[pos + 1 : -1], 0
        while pos < len(body):
            found = _MATCHER.match(body, pos)
            if not found:
                raise ValueError(f'cannot read the label matcher at "{body[pos:]}"')
            label, op, raw = found.groups()
            tests.append(_label_test(label, op, _unescape(raw)))
            pos = found.end()
            if pos < len(body):
                if body[pos] != ",":
                    raise ValueError(f'expected "," at "{body[pos:]}"')
                pos += 1
    return name, tests


def _label_test(label: str, op: str, value: str) -> Callable[[dict[str, str]], bool]:
    if op in ("=", "!="):
        want = op == "="
        return lambda labels: (labels.get(label, "") == value) is want
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise ValueError(f'label {label}: "{value}" is not a regular expression: {exc}') from None
    want = op == "=~"
    return lambda labels: (pattern.fullmatch(labels.get(label, "")) is not None) is want


# --------------------------------------------------------------------------- the source


class ScrapeSource:
    """Reads one metric from each running instance's ``/metrics`` (Prometheus text format)."""

    needs_targets: ClassVar[bool] = True
    """Tells the collector to fill ``MetricRequest.targets`` from the pool's runtime."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = parse_settings(ScrapeSettings, name, options)
        self._client = http_client(name, self.settings, accept=ACCEPT)

    def __repr__(self) -> str:
        s = self.settings
        return f"ScrapeSource(name={self.name!r}, url='{s.scheme}://{s.host}:PORT{s.path}')"

    def url(self, port: int) -> str:
        """The URL read for the instance listening on ``port`` of ``host``."""
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        return f"{s.scheme}://{host}:{port}{s.path}"

    def url_at(self, address: str) -> str:
        """The URL read for the instance at ``address`` ("host:port", "[v6]:port")."""
        return f"{self.settings.scheme}://{address}{self.settings.path}"

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """One sample per running instance of ``request.pool``."""
        try:
            name, tests = parse_selector(request.metric.query.strip())
        except ValueError as exc:
            raise self._fail(
                request, f'metric.query "{request.metric.query}": {exc}', temporary=False
            ) from exc
        targets = self._targets(request)
        if not targets:
            raise self._fail(
                request,
                f"no instance of pool {request.pool_name} is running (as its runtime reports)",
                temporary=True,
            )
        samples: list[Sample] = []
        answered = 0
        names: set[str] = set()
        for instance, url in targets:
            text = self._fetch(url)
            if text is None:
                continue
            answered += 1
            value = self._value(text, name, tests, url, request, names)
            if value is not None and finite(value):
                samples.append(Sample(now, value, instance))
        if not answered:
            raise self._fail(
                request,
                f"no instance answered on {', '.join(url for _, url in targets)} "
                "(all refused connections: stopped since they were listed?)",
                temporary=True,
            )
        if name not in names:
            raise self._fail(
                request,
                f'no sample named "{name}" in /metrics{did_you_mean(name, names)}',
                temporary=False,
            )
        return samples

    def _targets(self, request: MetricRequest) -> list[tuple[str, str]]:
        """``(instance, url)`` to read: the running instances (narrowed by ``instances``),
        or without a runtime listing the ``instances`` setting at ``host``."""
        wanted = self.settings.instances
        if request.targets is not None:
            return [
                (instance, self.url_at(address))
                for instance, address in request.targets
                if wanted is None or (instance.isdigit() and int(instance) in wanted)
            ]
        if wanted is None:
            raise self._fail(
                request,
                f"pool {request.pool_name or '(none)'}: the running instances are not known "
                "(the pool has no runtime to list them): the scrape source reads only "
                "running instances; give the pool a runtime, or list instances = [...]",
                temporary=False,
            )
        base = self._port_base(request)
        if base + max(wanted) > 65535:
            raise self._fail(
                request,
                f"instance {max(wanted)} would listen on port {base + max(wanted)}",
                temporary=False,
            )
        return [(str(n), self.url(base + n)) for n in wanted]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # ------------------------------------------------------------------ helpers

    def _fail(self, request: MetricRequest, message: str, *, temporary: bool) -> SourceError:
        return SourceError(
            f"sources.{self.name}: rule {request.rule}: {message}", temporary=temporary
        )

    def _port_base(self, request: MetricRequest) -> int:
        pool = request.pool
        if pool is None or pool.port is None:
            raise self._fail(
                request,
                f"pool {request.pool_name or '(none)'} has no port scheme "
                '(port = "BASE + n"): the scrape source cannot find its instances',
                temporary=False,
            )
        return pool.port

    def _fetch(self, url: str) -> str | None:
        """The /metrics text at ``url``; None when nothing listens there."""
        try:
            answer = read_bounded(self._client, self.name, url, self.settings)
        except httpx.ConnectError as exc:
            if connection_refused(exc):
                return None
            raise transport_error(self.name, url, self.settings.timeout, exc) from exc
        except httpx.HTTPError as exc:
            raise transport_error(self.name, url, self.settings.timeout, exc) from exc
        if answer.status != 200:
            raise status_error(self.name, url, answer.status)
        return answer.body.decode("utf-8", errors="replace")

    def _value(
        self,
        text: str,
        name: str,
        tests: list[Callable[[dict[str, str]], bool]],
        url: str,
        request: MetricRequest,
        names: set[str],
    ) -> float | None:
        """Sum of the samples named ``name`` whose labels pass ``tests``; None when none do."""
        total: float | None = None
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    names.add(sample.name)
                    if sample.name != name or not all(t(sample.labels) for t in tests):
                        continue
                    total = (total or 0.0) + float(sample.value)
        except ValueError as exc:
            raise self._fail(
                request,
                f"{url}: the body is not in the Prometheus text format: {exc}",
                temporary=False,
            ) from exc
        return total
