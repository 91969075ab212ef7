"""Prometheus: one PromQL instant query per rule; vector series mapped to a pool's instances.

What is sent, for ``metric.query = Q`` at controller time ``now``::

    GET {url}/api/v1/query?query=Q&time=NOW&timeout=TIMEOUTs

``time`` pins the evaluation to the tick (not to whenever the request arrives) and ``timeout``
makes Prometheus give up the evaluation when this source stops waiting for it.

With ``push_down_window = true`` and a rule window ``W`` > 0 (the rule's longest ``for``),
the query becomes a subquery so Prometheus evaluates the window itself::

    min_over_time((Q)[Ws:])          push_down_resolution unset: Prometheus' evaluation_interval
    min_over_time((Q)[Ws:Rs])        push_down_resolution = R

Prometheus evaluates ``Q`` at every multiple of the resolution inside ``[now - W, now]`` and
returns, per series, the smallest of those values. The answer to "has Q stayed above X for
all of W" is then "min_over_time(...) > X", which is the shape of a ``scale_out = {above}``
condition; a ``below`` condition needs ``push_down_function = "max_over_time"`` (set up a
second source for it: a source cannot tell which side of a rule asks). ``Q`` must return an
instant vector (a subquery of a scalar is a Prometheus ``bad_data`` error).

Results: a ``vector`` gives one sample per series, its instance id taken from the series'
``instance_label`` (``127.0.0.1:8002`` in a pool with ``port = "8000 + n"`` is "2"); a single
series without that label is a pool-level sample. A ``scalar`` is one pool-level sample.
NaN and infinite values are skipped: missing, never zero.

The HTTP settings and error mapping here (``HttpSettings``, ``http_client``, ``read_bounded``,
``transport_error``) are shared with the ``scrape`` source.

Every read is bounded, because the server at the other end may be broken or hostile: a
request may take ``deadline`` seconds in all (connect, headers and body: a server that
trickles a byte just inside ``timeout`` is cut off there, not after every byte), and its body
may be ``max_bytes`` long (streamed and counted, never read whole first; compressed answers
are not asked for, so the count is what lands in memory).
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpcore
import httpx
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Duration
from senex_scale.settings import TlsVerify
from senex_scale.sources.base import (
    EnvName,
    MetricRequest,
    Settings,
    Timeout,
    instance_from_address,
    parse_settings,
)


def _secret_text(value: object) -> object:
    # Reject non-strings here, with a message that does not echo the value: the loader's
    # generic "Input should be a valid string" shows the input, which would leak a secret.
    if value is not None and not isinstance(value, str | SecretStr):
        raise ValueError("must be a string (the value is not shown)")
    return value


Secret = Annotated[SecretStr | None, BeforeValidator(_secret_text)]


class HttpSettings(Settings):
    """Timeout, authentication and TLS shared by the HTTP sources (prometheus, scrape)."""

    timeout: Timeout = 5.0
    """Seconds to wait for each phase (connect, send, each read) of a request."""
    deadline: Timeout | None = None
    """Seconds one request may take in all, connect to last byte; default twice ``timeout``.
    A server that keeps sending a byte just inside ``timeout`` is cut off here."""
    max_bytes: StrictInt = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest answer body read, in bytes (16 MiB: far above a query result or an instance's
    /metrics); a bigger answer fails the query instead of filling the controller's memory."""
    bearer_token: Secret = None
    token_env: EnvName | None = None
    """Name of an environment variable holding the bearer token (read when the source is built)."""
    password: Secret = None
    password_env: EnvName | None = None
    username: str | None = Field(default=None, validate_default=True)
    """Basic authentication: ``username`` with ``password`` or ``password_env``."""
    verify: TlsVerify = True
    """TLS certificate check: true (system CAs), false (no check) or the path of a CA bundle."""

    @property
    def total(self) -> float:
        """The effective ``deadline`` in seconds."""
        return self.deadline if self.deadline is not None else 2 * self.timeout

    @field_validator("token_env")
    @classmethod
    def _one_token(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("bearer_token") is not None:
            raise ValueError("give bearer_token or token_env, not both")
        return value

    @field_validator("password_env")
    @classmethod
    def _one_password(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("password") is not None:
            raise ValueError("give password or password_env, not both")
        return value

    @field_validator("username")
    @classmethod
    def _basic_pair(cls, value: str | None, info: ValidationInfo) -> str | None:
        has_password = (
            info.data.get("password") is not None or info.data.get("password_env") is not None
        )
        has_token = (
            info.data.get("bearer_token") is not None or info.data.get("token_env") is not None
        )
        if value is None:
            if has_password:
                raise ValueError("password or password_env is set: give the username too")
            return value
        if not has_password:
            raise ValueError("basic authentication needs password or password_env too")
        if has_token:
            raise ValueError("give a bearer token or a username/password, not both")
        return value


def _env_secret(source: str, field: str, variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise PolicyError(
            f"sources.{source}",
            [f'sources.{source}.{field}: environment variable "{variable}" is not set or empty'],
        )
    return value


# --------------------------------------------------------------------------- bounded reads

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "senex_http_deadline", default=None
)
"""``time.monotonic()`` by which the request running in this context must be done."""


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before the deadline; ``error`` once it passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write waits at most until the deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wrapped = self._stream.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(wrapped)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    """httpcore's socket backend, each connection wrapped in a ``_DeadlineStream``."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = super().connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over a pool that uses ``_DeadlineBackend``.

    httpx has per-phase timeouts only (a trickle of bytes, headers included, keeps a request
    alive indefinitely) and no option for httpcore's network backend, which is httpcore's
    public extension point; so the pool httpx built is replaced by the same kind of pool with
    that backend. The checks keep this honest should httpx rename its pool."""

    def __init__(self, verify: bool | ssl.SSLContext) -> None:
        super().__init__(verify=verify, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("httpx.HTTPTransport changed: cannot bound request deadlines")
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=20,
            max_keepalive_connections=10,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer read within the deadline and the byte cap."""

    status: int
    body: bytes


def read_bounded(
    client: httpx.Client,
    source: str,
    url: str,
    settings: HttpSettings,
    *,
    params: Mapping[str, str] | None = None,
    shown: str | None = None,
) -> Answer:
    """GET ``url`` with ``client`` (made by ``http_client``) in at most ``settings.total``
    seconds and ``settings.max_bytes`` of body, streamed.

    Over the deadline: a temporary ``SourceError`` (the server may be busy); over the cap or
    a compressed body: a permanent one. Other transport failures are ``httpx.HTTPError`` as
    usual (``transport_error`` maps them). ``shown``: the URL in messages (default ``url``).
    """
    shown = shown or url
    total = settings.total
    started = time.monotonic()
    token = _DEADLINE.set(started + total)
    try:
        with client.stream("GET", url, params=params) as response:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise SourceError(
                    f"sources.{source}: {shown}: answered with Content-Encoding {encoding} "
                    "although only identity was accepted",
                    temporary=False,
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > settings.max_bytes:
                raise _too_big(source, shown, settings.max_bytes)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > settings.max_bytes:
                    raise _too_big(source, shown, settings.max_bytes)
                chunks.append(chunk)
            return Answer(response.status_code, b"".join(chunks))
    except httpx.TimeoutException as exc:
        if time.monotonic() - started >= total - 0.01:
            raise SourceError(
                f"sources.{source}: {shown}: no complete answer within the {total:g}s deadline"
            ) from exc
        raise
    finally:
        _DEADLINE.reset(token)


def _too_big(source: str, url: str, limit: int) -> SourceError:
    return SourceError(
        f"sources.{source}: {url}: the answer is more than {limit} bytes (max_bytes)",
        temporary=False,
    )


def http_client(source: str, settings: HttpSettings, *, accept: str) -> httpx.Client:
    """A client with the settings' timeout, TLS and credentials (secrets resolved here),
    for ``read_bounded``.

    Environment proxies and ``.netrc`` are ignored (``trust_env=False``): these sources talk
    to servers next to the controller, and a proxy picked up from the environment would
    see the credentials. Redirects are not followed, for the same reason. Only an
    uncompressed answer is accepted (``Accept-Encoding: identity``), so the byte cap counts
    what is held in memory.
    """
    headers = {"Accept": accept, "Accept-Encoding": "identity"}
    token: str | None = None
    if settings.bearer_token is not None:
        token = settings.bearer_token.get_secret_value()
    elif settings.token_env is not None:
        token = _env_secret(source, "token_env", settings.token_env)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    auth: httpx.BasicAuth | None = None
    if settings.username is not None:
        if settings.password is not None:
            password = settings.password.get_secret_value()
        else:
            assert settings.password_env is not None
            password = _env_secret(source, "password_env", settings.password_env)
        auth = httpx.BasicAuth(settings.username, password)
    verify: bool | ssl.SSLContext = True
    if isinstance(settings.verify, str):
        try:
            verify = ssl.create_default_context(cafile=settings.verify)
        except (OSError, ssl.SSLError) as exc:
            problem = f'sources.{source}.verify: cannot load CA bundle "{settings.verify}": {exc}'
            raise PolicyError(f"sources.{source}", [problem]) from exc
    else:
        verify = settings.verify
    return httpx.Client(
        timeout=httpx.Timeout(settings.timeout),
        auth=auth,
        headers=headers,
        follow_redirects=False,
        trust_env=False,
        transport=_DeadlineTransport(verify),
    )


def connection_refused(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a refused TCP connection: nothing listens."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def transport_error(source: str, url: str, timeout: float, exc: httpx.HTTPError) -> SourceError:
    """The ``SourceError`` for a request that got no HTTP answer (all temporary)."""
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__.replace("Timeout", " timeout").lower()
        return SourceError(f"sources.{source}: {url}: no answer within {timeout:g}s ({kind})")
    if connection_refused(exc):
        return SourceError(f"sources.{source}: {url}: connection refused")
    detail = str(exc) or type(exc).__name__
    return SourceError(f"sources.{source}: {url}: {detail}")


def status_error(source: str, url: str, status: int) -> SourceError:
    """The ``SourceError`` for an HTTP error status without a more specific explanation."""
    if status in (401, 403):
        return SourceError(
            f"sources.{source}: {url}: HTTP {status}: authentication failed "
            "(check bearer_token/token_env or username/password)",
            temporary=False,
        )
    temporary = status >= 500 or status in (408, 429)
    return SourceError(f"sources.{source}: {url}: HTTP {status}", temporary=temporary)


def finite(value: float) -> bool:
    """False for NaN and +-Inf: such values are missing, never zero."""
    return not (math.isnan(value) or math.isinf(value))


def promql_duration(seconds: float) -> str:
    """A PromQL duration literal: whole seconds as "300s", anything else in milliseconds."""
    millis = round(seconds * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{max(millis, 1)}ms"


# --------------------------------------------------------------------------- the source


class PrometheusSettings(HttpSettings):
    """``[sources.NAME] type = "prometheus"``."""

    url: str
    """Base URL of Prometheus, e.g. ``http://127.0.0.1:9090`` (a path prefix is kept)."""
    instance_label: str = "instance"
    """The label whose ``host:port`` value names the instance (mapped by the pool's ports)."""
    push_down_window: StrictBool = False
    """Let Prometheus evaluate the rule's window: ``FUNCTION((Q)[W:])`` (see the module doc)."""
    push_down_function: Literal["min_over_time", "max_over_time", "avg_over_time"] = "min_over_time"
    push_down_resolution: Duration | None = None
    """Subquery step; unset uses Prometheus' global ``evaluation_interval``."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            raise ValueError('is not a URL (e.g. "http://127.0.0.1:9090")') from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError('must be an http:// or https:// URL (e.g. "http://127.0.0.1:9090")')
        if url.userinfo:
            raise ValueError("must not contain credentials: use username with password_env")
        if url.query or url.fragment:
            raise ValueError("must not have a query string or fragment")
        return value.rstrip("/")

    @field_validator("push_down_resolution")
    @classmethod
    def _positive_step(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be longer than 0s")
        return value


class PrometheusSource:
    """PromQL instant queries against a Prometheus HTTP API."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = parse_settings(PrometheusSettings, name, options)
        self.endpoint = f"{self.settings.url}/api/v1/query"
        self._client = http_client(name, self.settings, accept="application/json")

    def __repr__(self) -> str:
        return f"PrometheusSource(name={self.name!r}, url={self.settings.url!r})"

    def promql(self, request: MetricRequest) -> str:
        """The expression sent for ``request`` (wrapped in a subquery when pushing down)."""
        query = request.metric.query.strip()
        if not query:
            raise SourceError(
                f"sources.{self.name}: rule {request.rule}: metric.query is empty; "
                "give a PromQL expression",
                temporary=False,
            )
        settings = self.settings
        if not (settings.push_down_window and request.window > 0):
            return query
        step = settings.push_down_resolution
        resolution = "" if step is None else promql_duration(step)
        return (
            f"{settings.push_down_function}(({query})"
            f"[{promql_duration(request.window)}:{resolution}])"
        )

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """Samples of ``request``'s PromQL at ``now``; any failure is a ``SourceError``."""
        expression = self.promql(request)
        params = {
            "query": expression,
            "time": f"{now:.3f}",
            "timeout": promql_duration(self.settings.timeout),
        }
        try:
            answer = read_bounded(
                self._client,
                self.name,
                self.endpoint,
                self.settings,
                params=params,
                shown=self.settings.url,
            )
        except httpx.HTTPError as exc:
            raise transport_error(self.name, self.settings.url, self.settings.timeout, exc) from exc
        data = self._data(answer, request)
        return self._samples(data, request, now)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # ------------------------------------------------------------------ response handling

    def _fail(self, request: MetricRequest, message: str, *, temporary: bool) -> SourceError:
        return SourceError(
            f"sources.{self.name}: rule {request.rule}: {message}", temporary=temporary
        )

    def _data(self, response: Answer, request: MetricRequest) -> dict[str, Any]:
        url = self.settings.url
        try:
            body = json.loads(response.body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the stack
            if response.status != 200:
                raise status_error(self.name, url, response.status) from exc
            raise self._fail(
                request, f"{url} did not answer with Prometheus API JSON", temporary=False
            ) from exc
        if isinstance(body, dict) and body.get("status") == "error":
            kind = str(body.get("errorType", "")) or f"HTTP {response.status}"
            message = str(body.get("error", "")) or "no message"
            # bad_data (400: a PromQL syntax or type error), execution (422) and not_found
            # will fail the same way next time; timeout, canceled, unavailable and internal
            # (503/500) are Prometheus being busy or restarting.
            temporary = response.status >= 500 or kind in (
                "timeout",
                "canceled",
                "unavailable",
                "internal",
            )
            raise self._fail(request, f"Prometheus {kind}: {message}", temporary=temporary)
        if response.status != 200:
            raise status_error(self.name, url, response.status)
        data = body.get("data") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("status") != "success"
            or not isinstance(data, dict)
        ):
            raise self._fail(
                request, f"{url} did not answer with Prometheus API JSON", temporary=False
            )
        return data

    def _samples(self, data: dict[str, Any], request: MetricRequest, now: float) -> list[Sample]:
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar":
            value = self._value(result, request)
            return [Sample(now, value)] if finite(value) else []
        if kind != "vector" or not isinstance(result, list):
            hint = (
                "a range vector: use an instant expression, or an *_over_time function"
                if kind == "matrix"
                else "not a number"
            )
            raise self._fail(request, f"the query returned a {kind} ({hint})", temporary=False)
        return self._vector(result, request, now)

    def _vector(self, result: list[Any], request: MetricRequest, now: float) -> list[Sample]:
        label = self.settings.instance_label
        unlabelled = 0
        parsed: list[tuple[str | None, float]] = []
        for series in result:
            if not isinstance(series, dict):
                raise self._fail(request, "malformed vector result", temporary=False)
            labels = series.get("metric") or {}
            if "value" not in series and "histogram" in series:
                raise self._fail(
                    request,
                    "a series has a native histogram value; wrap the query in "
                    "histogram_quantile(), histogram_sum() or histogram_count()",
                    temporary=False,
                )
            address = labels.get(label) if isinstance(labels, dict) else None
            if address is None:
                unlabelled += 1
            parsed.append((address, self._value(series.get("value"), request)))
        if unlabelled and len(parsed) > 1:
            raise self._fail(
                request,
                f'{len(parsed)} series, {unlabelled} without an "{label}" label: keep the label '
                f'(e.g. "sum by ({label}) (...)"), set instance_label to the label that names '
                "the instance, or aggregate to a single series",
                temporary=False,
            )
        samples: list[Sample] = []
        seen: dict[str, str] = {}
        for address, value in parsed:
            instance = (
                None
                if address is None
                else instance_from_address(address, request.pool, request.hosts)
            )
            if instance is not None:
                if instance in seen:
                    raise self._fail(
                        request,
                        f'two series for instance "{instance}" ({seen[instance]} and '
                        f'{address}): aggregate with "by ({label})"',
                        temporary=False,
                    )
                seen[instance] = str(address)
            if finite(value):
                samples.append(Sample(now, value, instance))
        return samples

    def _value(self, pair: object, request: MetricRequest) -> float:
        """The float of a ``[timestamp, "value"]`` pair ("NaN" and "+Inf" parse as such)."""
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
            try:
                return float(pair[1])
            except ValueError:
                pass
        raise self._fail(request, f"malformed sample value {pair!r}", temporary=False)
