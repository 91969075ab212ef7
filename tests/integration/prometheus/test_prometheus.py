"""The ``prometheus`` source against a real Prometheus scraping real /metrics endpoints."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Metric, Pool
from senex_scale.sources.base import MetricRequest, instance_from_address
from senex_scale.sources.prometheus import PrometheusSource

pytestmark = pytest.mark.integration

TOKEN = "tok-Secret-5b2e81"
PASSWORD = "pw-Secret-77c0d4"


def request_for(query: str, pool: Pool | None = None, *, window: float = 0.0) -> MetricRequest:
    """The request of rule "r" on pool "django" for ``query``."""
    return MetricRequest("r", Metric(source="prom", query=query), "django", pool, window)


def by_instance(samples: list[Sample]) -> dict[str | None, float]:
    return {s.instance: s.value for s in samples}


@pytest.fixture
def make_source() -> Iterator[Callable[..., PrometheusSource]]:
    """Build sources named "prom" from keyword settings; all closed at the end."""
    built: list[PrometheusSource] = []

    def make(**options: Any) -> PrometheusSource:
        source = PrometheusSource("prom", options)
        built.append(source)
        return source

    yield make
    for source in built:
        source.close()


def vector_body(address: str, value: str) -> bytes:
    return json.dumps(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"instance": address}, "value": [1.0, value]}],
            },
        }
    ).encode()


# --------------------------------------------------------------------------- results


def test_vector_series_map_to_instances_by_port(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """A vector's instance labels become instance ids through the pool's port scheme."""
    source = make_source(url=prometheus.url)
    now = time.time()
    samples = source.query(
        request_for('senex_websocket_connections{job="django"}', targets.pool), now
    )
    assert by_instance(samples) == {"1": 10.0, "2": 20.0, "3": 30.0}
    assert {s.at for s in samples} == {now}
    assert instance_from_address(f"127.0.0.1:{targets.base + 2}", targets.pool) == "2"


def test_on_several_hosts_a_series_names_an_instance_by_host_and_port(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """A pool on several hosts: instance 3's series from a machine that is not one of the
    pool's hosts (same port) names no instance; from one of its hosts it does."""
    source = make_source(url=prometheus.url)
    port3 = targets.base + 3
    query = (
        'label_replace(senex_websocket_connections{job="django"}, "instance", '
        f'"127.0.0.9:{port3}", "instance", ".*:{port3}")'
    )
    metric = Metric(source="prom", query=query)
    one_host = MetricRequest("r", metric, "django", targets.pool, 0.0, ("127.0.0.1",))
    both = MetricRequest("r", metric, "django", targets.pool, 0.0, ("127.0.0.1", "127.0.0.9"))
    assert by_instance(source.query(one_host, time.time())) == {
        "1": 10.0,
        "2": 20.0,
        f"127.0.0.9:{port3}": 30.0,
    }
    assert by_instance(source.query(both, time.time())) == {"1": 10.0, "2": 20.0, "3": 30.0}


def test_instance_label_setting_names_the_label(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """instance_label picks another label holding host:port."""
    source = make_source(url=prometheus.url, instance_label="addr")
    query = (
        'sum by (addr) (label_replace(senex_websocket_connections{job="django"}, '
        '"addr", "$1", "instance", "(.*)"))'
    )
    samples = source.query(request_for(query, targets.pool), time.time())
    assert by_instance(samples) == {"1": 10.0, "2": 20.0, "3": 30.0}


def test_scalar_is_one_pool_sample(prometheus: Any, targets: Any, make_source: Any) -> None:
    """A scalar result is one pool-level sample."""
    source = make_source(url=prometheus.url)
    now = time.time()
    query = 'scalar(sum(senex_websocket_connections{job="django"}))'
    assert source.query(request_for(query, targets.pool), now) == [Sample(now, 60.0, None)]


def test_single_series_without_instance_label_is_pool_level(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """One series without the instance label is a pool-level sample."""
    source = make_source(url=prometheus.url)
    now = time.time()
    query = 'sum(senex_websocket_connections{job="django"})'
    assert source.query(request_for(query, targets.pool), now) == [Sample(now, 60.0, None)]


def test_several_series_without_instance_label_are_refused(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """Several series without the label: a permanent error naming the label to keep or set."""
    source = make_source(url=prometheus.url)
    with pytest.raises(SourceError) as info:
        source.query(request_for("sum by (queue) (senex_queue_depth)", targets.pool), time.time())
    assert info.value.temporary is False
    assert '2 series, 2 without an "instance" label' in str(info.value)
    assert "instance_label" in str(info.value)


def test_two_series_for_one_instance_are_refused(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """Two series mapping to the same instance: aggregate by instance (permanent)."""
    source = make_source(url=prometheus.url)
    with pytest.raises(SourceError) as info:
        source.query(request_for("senex_queue_depth", targets.pool), time.time())
    assert info.value.temporary is False
    assert 'two series for instance "1"' in str(info.value)


def test_range_vector_is_refused(prometheus: Any, targets: Any, make_source: Any) -> None:
    """A matrix result is a permanent error that says what to do."""
    source = make_source(url=prometheus.url)
    with pytest.raises(SourceError) as info:
        source.query(request_for("senex_websocket_connections[1m]", targets.pool), time.time())
    assert info.value.temporary is False
    assert "matrix" in str(info.value)


def test_nan_and_inf_are_skipped_not_zero(prometheus: Any, targets: Any, make_source: Any) -> None:
    """NaN and +Inf series are left out (missing), never reported as 0."""
    source = make_source(url=prometheus.url)
    now = time.time()
    nan = "(senex_websocket_connections - 20) / (senex_websocket_connections - 20)"
    inf = "senex_websocket_connections / (senex_websocket_connections - 20)"
    assert by_instance(source.query(request_for(nan, targets.pool), now)) == {"1": 1.0, "3": 1.0}
    assert set(by_instance(source.query(request_for(inf, targets.pool), now))) == {"1", "3"}
    scraped = source.query(request_for("senex_maybe_nan", targets.pool), now)
    assert by_instance(scraped) == {"1": 1.0, "3": 3.0}
    assert source.query(request_for("0/0", targets.pool), now) == []


def test_bad_promql_is_permanent_with_prometheus_message(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """A PromQL syntax error is bad_data: permanent, with Prometheus' own message."""
    source = make_source(url=prometheus.url)
    with pytest.raises(SourceError) as info:
        source.query(request_for("sum(senex_websocket_connections", targets.pool), time.time())
    assert info.value.temporary is False
    assert "Prometheus bad_data:" in str(info.value)
    assert "parse error" in str(info.value)
    assert str(info.value).startswith("sources.prom: rule r: ")


# --------------------------------------------------------------------------- push-down


def test_push_down_window_returns_the_window_minimum(
    prometheus: Any, targets: Any, make_source: Any
) -> None:
    """push_down_window sends min_over_time((Q)[Ws:Rs]) and gets the window's minimum."""
    plain = make_source(url=prometheus.url)
    pushed = make_source(url=prometheus.url, push_down_window=True, push_down_resolution="1s")
    query = 'senex_changing_value{job="django"}'
    gauge = targets.instances[1].gauges["changing"]

    def instance_1() -> float | None:
        return by_instance(plain.query(request_for(query, targets.pool), time.time())).get("1")

    def wait_for(value: float) -> None:
        deadline = time.monotonic() + 15
        while instance_1() != value:
            assert time.monotonic() < deadline, f"prometheus never scraped {value}"
            time.sleep(0.2)

    gauge.set(5.0)
    try:
        wait_for(5.0)
        time.sleep(1.5)  # stays low over at least one 1 s subquery step
    finally:
        gauge.set(50.0)
    wait_for(50.0)

    windowed = request_for(query, targets.pool, window=120.0)
    assert pushed.promql(windowed) == f"min_over_time(({query})[120s:1s])"
    now = time.time()
    assert by_instance(pushed.query(windowed, now)) == {"1": 5.0, "2": 50.0, "3": 50.0}
    # Without a window nothing is pushed down: the current value.
    assert pushed.promql(request_for(query, targets.pool)) == query
    assert by_instance(pushed.query(request_for(query, targets.pool), now))["1"] == 50.0


def test_push_down_without_resolution_uses_prometheus_default(make_source: Any) -> None:
    """Without push_down_resolution the subquery leaves the step to Prometheus."""
    source = make_source(
        url="http://127.0.0.1:9", push_down_window=True, push_down_function="max_over_time"
    )
    assert source.promql(request_for("up", window=90.5)) == "max_over_time((up)[90500ms:])"


# --------------------------------------------------------------------------- auth


def test_bearer_token_is_sent_and_never_shown(recorder: Any, make_source: Any) -> None:
    """The bearer token goes in the Authorization header and in no message or repr."""
    pool = Pool.model_validate({"port": "8000 + n", "min": 1, "max": 3})
    recorder.answer(200, vector_body("127.0.0.1:8002", "7"))
    source = make_source(url=recorder.url, bearer_token=TOKEN)
    now = time.time()
    assert source.query(request_for("up", pool), now) == [Sample(now, 7.0, "2")]
    path, header = recorder.seen[-1]
    assert header == f"Bearer {TOKEN}"
    assert path.startswith("/api/v1/query?query=up&time=")

    recorder.answer(401, b"Unauthorized", "text/plain")
    with pytest.raises(SourceError) as info:
        source.query(request_for("up", pool), now)
    assert info.value.temporary is False
    assert "HTTP 401" in str(info.value)
    for text in (str(info.value), repr(source), repr(source.settings), str(source.settings)):
        assert TOKEN not in text


def test_token_env_and_basic_password_env(
    recorder: Any, make_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """token_env and password_env read the secrets from the environment."""
    monkeypatch.setenv("SENEX_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("SENEX_TEST_PASSWORD", PASSWORD)
    recorder.answer(200, vector_body("127.0.0.1:8001", "1"))
    make_source(url=recorder.url, token_env="SENEX_TEST_TOKEN").query(request_for("up"), 1.0)
    assert recorder.seen[-1][1] == f"Bearer {TOKEN}"
    basic = make_source(url=recorder.url, username="senex", password_env="SENEX_TEST_PASSWORD")
    basic.query(request_for("up"), 1.0)
    expected = base64.b64encode(f"senex:{PASSWORD}".encode()).decode()
    assert recorder.seen[-1][1] == f"Basic {expected}"
    assert PASSWORD not in repr(basic.settings)


def test_unset_token_env_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token_env naming an unset variable fails when the source is built, naming the field."""
    monkeypatch.delenv("SENEX_TEST_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(PolicyError) as info:
        PrometheusSource(
            "prom", {"url": "http://127.0.0.1:9", "token_env": "SENEX_TEST_NO_SUCH_TOKEN"}
        )
    assert info.value.problems == [
        'sources.prom.token_env: environment variable "SENEX_TEST_NO_SUCH_TOKEN" '
        "is not set or empty"
    ]


# --------------------------------------------------------------------------- outages


def test_stopped_prometheus_is_temporary_within_the_timeout(
    prometheus_factory: Any, make_source: Any
) -> None:
    """Prometheus stopped: a temporary SourceError, well within the timeout."""
    server = prometheus_factory()
    source = make_source(url=server.url, timeout="2s")
    now = time.time()
    assert source.query(request_for("vector(1)"), now) == [Sample(now, 1.0, None)]
    server.stop()
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        source.query(request_for("vector(1)"), now)
    assert time.monotonic() - started < 2.0
    assert info.value.temporary is True
    assert "connection refused" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)


def test_hung_prometheus_times_out_as_temporary(hung_factory: Any, make_source: Any) -> None:
    """A server that accepts and never answers: a temporary SourceError after the timeout."""
    hung = hung_factory(free_loopback_port())
    source = make_source(url=f"http://127.0.0.1:{hung.port}", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        source.query(request_for("up"), time.time())
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.0
    assert info.value.temporary is True
    assert "no answer within 0.5s (read timeout)" in str(info.value)


def test_server_error_is_temporary(recorder: Any, make_source: Any) -> None:
    """A 503 from a proxy in front of Prometheus is temporary."""
    recorder.answer(503, b"<html>busy</html>", "text/html")
    with pytest.raises(SourceError) as info:
        make_source(url=recorder.url).query(request_for("up"), 1.0)
    assert info.value.temporary is True
    assert "HTTP 503" in str(info.value)


# --------------------------------------------------------------------------- settings


def free_loopback_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_problems(options: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        PrometheusSource("prom", options)
    assert str(info.value).startswith("sources.prom: ")
    return info.value.problems


def test_settings_errors_name_the_field() -> None:
    """Each settings problem is reported as sources.prom.FIELD: message, all at once."""
    assert settings_problems({"url": "ftp://x", "timeout": "5x", "push_down_resolution": 0}) == [
        'sources.prom.timeout: "5x" is not a duration (e.g. "5m")',
        'sources.prom.url: must be an http:// or https:// URL (e.g. "http://127.0.0.1:9090")',
        "sources.prom.push_down_resolution: must be longer than 0s",
    ]
    assert settings_problems({}) == ["sources.prom.url: required"]
    assert settings_problems({"url": "http://u:p@127.0.0.1:9090"}) == [
        "sources.prom.url: must not contain credentials: use username with password_env"
    ]


def test_settings_errors_on_auth_combinations() -> None:
    """Conflicting or incomplete credentials are refused, without echoing secrets."""
    url = "http://127.0.0.1:9090"
    assert settings_problems({"url": url, "bearer_token": TOKEN, "token_env": "X"}) == [
        "sources.prom.token_env: give bearer_token or token_env, not both"
    ]
    assert settings_problems({"url": url, "username": "senex"}) == [
        "sources.prom.username: basic authentication needs password or password_env too"
    ]
    assert settings_problems({"url": url, "password": PASSWORD}) == [
        "sources.prom.username: password or password_env is set: give the username too"
    ]
    problems = settings_problems({"url": url, "bearer_token": 918273645})
    assert problems == ["sources.prom.bearer_token: must be a string (the value is not shown)"]


def test_unknown_key_gets_did_you_mean() -> None:
    """A misspelt key is named, with a suggestion, in the loader's exact words."""
    assert settings_problems({"url": "http://127.0.0.1:9090", "ur": "x"}) == [
        'sources.prom: unknown key "ur" (did you mean "url"?)'
    ]
    assert settings_problems({"ur": "http://127.0.0.1:9090"}) == [
        "sources.prom.url: required",
        'sources.prom: unknown key "ur" (did you mean "url"?)',
    ]
