"""The ``scrape`` source reading each instance's own /metrics, without Prometheus."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from senex_scale.core.state import Sample
from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Metric, Pool
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.scrape import ScrapeSource, parse_selector

pytestmark = pytest.mark.integration

TOKEN = "tok-Secret-e40a19"


def running(pool: Pool | None, *numbers: int) -> tuple[tuple[str, str], ...]:
    """What the collector passes for a pool whose runtime reports ``numbers`` running."""
    assert pool is not None
    assert pool.port is not None
    return tuple((str(n), f"127.0.0.1:{pool.port + n}") for n in numbers)


def request_for(
    query: str, pool: Pool | None, numbers: tuple[int, ...] | None = (1, 2, 3)
) -> MetricRequest:
    """The request of rule "r" on pool "django" for ``query``, its runtime reporting
    ``numbers`` running (None: not listed)."""
    targets = (
        None if numbers is None or pool is None or pool.port is None else running(pool, *numbers)
    )
    return MetricRequest("r", Metric(source="scrape", query=query), "django", pool, targets=targets)


def by_instance(samples: list[Sample]) -> dict[str | None, float]:
    return {s.instance: s.value for s in samples}


def pool_at(base: int, max_: int = 5) -> Pool:
    return Pool.model_validate({"port": f"{base} + n", "min": 0, "max": max_})


def free_base(count: int) -> int:
    """A BASE with BASE+1 .. BASE+count free (bound one at a time, then released)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1] - 1
        socks = [socket.socket() for _ in range(count)]
        try:
            for n, sock in enumerate(socks, start=1):
                sock.bind(("127.0.0.1", base + n))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RuntimeError("no free ports")


@pytest.fixture
def make_source() -> Iterator[Callable[..., ScrapeSource]]:
    """Build sources named "scrape" from keyword settings; all closed at the end."""
    built: list[ScrapeSource] = []

    def make(**options: Any) -> ScrapeSource:
        source = ScrapeSource("scrape", options)
        built.append(source)
        return source

    yield make
    for source in built:
        source.close()


def test_one_sample_per_running_instance(targets: Any, make_source: Any) -> None:
    """Each running instance's own /metrics gives its value."""
    source = make_source()
    now = time.time()
    samples = source.query(request_for("senex_websocket_connections", targets.pool), now)
    assert by_instance(samples) == {"1": 10.0, "2": 20.0, "3": 30.0}
    assert {s.at for s in samples} == {now}
    memory = source.query(request_for("process_resident_memory_bytes", targets.pool), now)
    assert len(memory) == 3
    assert all(s.value > 0 for s in memory)


def test_labels_select_and_sum(targets: Any, make_source: Any) -> None:
    """Label matchers select samples; the matching samples of an instance are summed."""
    source = make_source()

    def values(query: str) -> dict[str | None, float]:
        return by_instance(source.query(request_for(query, targets.pool), time.time()))

    assert values('senex_queue_depth{queue="b"}') == {"1": 100.0, "2": 200.0, "3": 300.0}
    assert values("senex_queue_depth") == {"1": 101.0, "2": 202.0, "3": 303.0}
    assert values('senex_queue_depth{queue=~"a|b"}') == values("senex_queue_depth")
    assert values('senex_queue_depth{queue!="b"}') == {"1": 1.0, "2": 2.0, "3": 3.0}
    assert values('senex_queue_depth{queue="c"}') == {}


def test_nan_is_skipped(targets: Any, make_source: Any) -> None:
    """An instance whose value is NaN has no sample (missing, not zero)."""
    source = make_source()
    samples = source.query(request_for("senex_maybe_nan", targets.pool), time.time())
    assert by_instance(samples) == {"1": 1.0, "3": 3.0}


def test_instances_setting_narrows_the_running_ones(targets: Any, make_source: Any) -> None:
    """instances = [2, 3, 5] asks only 2 and 3 of the running 1..3 (5 is not running)."""
    source = make_source(instances=[2, 3, 5])
    samples = source.query(request_for("senex_websocket_connections", targets.pool), time.time())
    assert by_instance(samples) == {"2": 20.0, "3": 30.0}


def test_without_a_listing_only_the_instances_setting_is_read(
    targets: Any, make_source: Any
) -> None:
    """No runtime listing: instances = [...] names what to read (at host); nothing else is
    read, and without the setting the query is refused (permanent) instead of scanning."""
    request = request_for("senex_websocket_connections", targets.pool, None)
    samples = make_source(instances=[1, 3]).query(request, time.time())
    assert by_instance(samples) == {"1": 10.0, "3": 30.0}
    with pytest.raises(SourceError) as info:
        make_source().query(request, time.time())
    assert info.value.temporary is False
    assert "reads only running instances" in str(info.value)


def test_stopped_instance_is_skipped(targets: Any, make_source: Any, instance_factory: Any) -> None:
    """An instance that stops after it was listed (connection refused) drops out quietly."""
    source = make_source()
    fourth = instance_factory(4, targets.base + 4)
    request = request_for("senex_websocket_connections", targets.pool, (1, 2, 3, 4))
    assert by_instance(source.query(request, time.time()))["4"] == 40.0
    fourth.stop()
    assert by_instance(source.query(request, time.time())) == {"1": 10.0, "2": 20.0, "3": 30.0}


def test_a_port_no_running_instance_owns_is_never_asked(
    targets: Any, make_source: Any, recorder: Any
) -> None:
    """A listener another user bound on a port of the pool's range (instance 4's, not
    running) gets no request, so neither the bearer token nor a chance to inject 1e9."""
    pool = pool_at(recorder.port - 4, 5)
    recorder.answer(200, b"# TYPE senex_websocket_connections gauge\n"
                         b"senex_websocket_connections 1e9\n", "text/plain")  # fmt: skip
    source = make_source(bearer_token=TOKEN)
    request = MetricRequest(
        "r",
        Metric(source="scrape", query="senex_websocket_connections"),
        "django",
        pool,
        targets=tuple((str(n), i.address) for n, i in targets.instances.items()),
    )
    samples = source.query(request, time.time())
    assert by_instance(samples) == {"1": 10.0, "2": 20.0, "3": 30.0}
    assert recorder.seen == []


def test_hung_instance_fails_the_query(
    make_source: Any, instance_factory: Any, hung_factory: Any
) -> None:
    """An instance that accepts and never answers: SourceError (temporary) after the timeout."""
    base = free_base(3)
    instance_factory(1, base + 1)
    hung_factory(base + 2)
    source = make_source(timeout=0.5)
    started = time.monotonic()
    request = request_for("senex_websocket_connections", pool_at(base, 3), (1, 2))
    with pytest.raises(SourceError) as info:
        source.query(request, time.time())
    assert time.monotonic() - started < 2.0
    assert info.value.temporary is True
    message = str(info.value)
    assert f"http://127.0.0.1:{base + 2}/metrics: no answer within 0.5s (read timeout)" in message


def test_http_error_and_garbage_fail_the_query(recorder: Any, make_source: Any) -> None:
    """An HTTP 500 is a temporary error; a body that is not the text format a permanent one."""
    pool = pool_at(recorder.port - 1, 1)
    source = make_source()
    recorder.answer(500, b"oops", "text/plain")
    with pytest.raises(SourceError) as info:
        source.query(request_for("up", pool, (1,)), time.time())
    assert info.value.temporary is True
    assert "HTTP 500" in str(info.value)
    recorder.answer(200, b"<html>login</html>", "text/html")
    with pytest.raises(SourceError) as info:
        source.query(request_for("up", pool, (1,)), time.time())
    assert info.value.temporary is False
    assert "not in the Prometheus text format" in str(info.value)


def test_bearer_token_sent_to_instances(recorder: Any, make_source: Any) -> None:
    """Auth settings apply to every instance request; the token is not in the repr."""
    pool = pool_at(recorder.port - 1, 1)
    recorder.answer(200, b"# TYPE up gauge\nup 1\n", "text/plain; version=0.0.4")
    source = make_source(bearer_token=TOKEN)
    now = time.time()
    assert source.query(request_for("up", pool, (1,)), now) == [Sample(now, 1.0, "1")]
    assert recorder.seen[-1] == ("/metrics", f"Bearer {TOKEN}")
    assert TOKEN not in repr(source) + repr(source.settings)


def test_unknown_metric_name_is_permanent(targets: Any, make_source: Any) -> None:
    """A name no instance exposes is a configuration error, with a suggestion."""
    with pytest.raises(SourceError) as info:
        make_source().query(request_for("senex_websocket_connection", targets.pool), time.time())
    assert info.value.temporary is False
    assert '(did you mean "senex_websocket_connections"?)' in str(info.value)


def test_nothing_running_is_temporary(make_source: Any) -> None:
    """No instance running, or none of the listed ones answering: temporary (scaled to
    zero, or all restarting)."""
    base = free_base(2)
    with pytest.raises(SourceError) as info:
        make_source().query(request_for("up", pool_at(base, 2), ()), time.time())
    assert info.value.temporary is True
    assert "no instance of pool django is running" in str(info.value)
    with pytest.raises(SourceError) as info:
        make_source().query(request_for("up", pool_at(base, 2), (1, 2)), time.time())
    assert info.value.temporary is True
    assert "no instance answered" in str(info.value)


def test_configuration_errors_are_permanent(make_source: Any) -> None:
    """A pool without ports, or a malformed selector: permanent errors."""
    source = make_source(instances=[1])
    with pytest.raises(SourceError) as info:
        source.query(request_for("up", Pool(min=0, max=2), None), time.time())
    assert info.value.temporary is False
    assert "has no port scheme" in str(info.value)
    with pytest.raises(SourceError) as info:
        source.query(request_for('up{job="x"', pool_at(40000, 1)), time.time())
    assert info.value.temporary is False


def test_selector_parsing() -> None:
    """Names with PromQL-style matchers; escapes in values; errors as ValueError."""
    name, tests = parse_selector(r'http_requests{method=~"GET|POST", path!="/a\"b"}')
    assert name == "http_requests"
    assert [t({"method": "GET", "path": "/x"}) for t in tests] == [True, True]
    assert [t({"method": "PUT", "path": '/a"b'}) for t in tests] == [False, False]
    for bad in ("", "{a=1}", 'x{a="1"', 'x{a=~"("}', 'x{a="1" b="2"}'):
        with pytest.raises(ValueError):  # noqa: PT011 - each message is different
            parse_selector(bad)


def test_settings_errors_name_the_field() -> None:
    """Settings problems are reported as sources.scrape.FIELD."""
    with pytest.raises(PolicyError) as info:
        ScrapeSource("scrape", {"path": "metrics", "scheme": "ftp", "instances": [0]})
    assert info.value.problems == [
        'sources.scrape.scheme: "ftp": expected one of "http", "https"',
        'sources.scrape.path: "metrics" is not a path; it must start with "/"',
        "sources.scrape.instances: instance numbers start at 1",
    ]


def test_the_collector_reads_only_what_the_runtime_reports_running(
    instance_factory: Any, hung_factory: Any
) -> None:
    """Collector + RuntimeLister: a pool whose runtime reports 1..3 running (4, 5 stopped)
    is read on 1..3 at the runtime's addresses; a listener on instance 4's port gets not even
    a connection, and a runtime that cannot list is an error reading, not a scan."""
    from senex_scale.errors import TemporaryError
    from senex_scale.policy.models import Policy
    from senex_scale.sources.collect import Collector, RuntimeLister
    from senex_scale.testing import RecordingRuntime

    base = free_base(4)
    for n in (1, 2, 3):
        instance_factory(n, base + n)
    planted = hung_factory(base + 4)
    policy = Policy.model_validate(
        {
            "sources": {"scrape": {"type": "scrape", "bearer_token": TOKEN, "timeout": "1s"}},
            "pools": {
                "django": {
                    "port": f"{base} + n", "min": 1, "max": 5,
                    "runtime": {"type": "supervisor", "program": "django"},
                }
            },
            "rules": [{
                "name": "ws", "pool": "django",
                "metric": {"source": "scrape", "query": "senex_websocket_connections"},
                "scale_out": {"above": 100, "for": "1m"},
            }],
        }
    )  # fmt: skip

    class Unreachable(RecordingRuntime):
        def list(self) -> Any:
            raise TemporaryError("supervisord is down")

    runtime = RecordingRuntime(pool="django", size=5, running={1, 2, 3})
    for built, expect in ((runtime, None), (Unreachable(pool="django"), "supervisord is down")):
        collector = Collector(policy, lister=RuntimeLister(policy, build=lambda *_, r=built: r))
        try:
            (reading,) = collector.collect(time.time())
        finally:
            collector.close()
        if expect is None:
            assert reading.error is None, reading.error
            assert by_instance(reading.samples) == {"1": 10.0, "2": 20.0, "3": 30.0}
        else:
            assert reading.error == f"cannot list the running instances of pool django: {expect}"
            assert reading.temporary is True
        assert planted.conns == []
